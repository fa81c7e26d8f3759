"""Extraction and writing off the proxy's event loop.

The addon hands finished flows to ``CapturePipeline.submit`` (a queue put, nothing more). One
worker thread extracts rows and gives them to the ``CaptureWriter``, whose own timer flushes them
to Parquet. Extraction runs in the worker so that a long answer's parsing never delays the chunks
of other streams still flowing through the proxy.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path

from mitmproxy import http

from analyzer.extract import extract_flow
from analyzer.store.writer import CaptureWriter

log = logging.getLogger(__name__)

_STOP = object()


class CapturePipeline:
    def __init__(self, path: str | Path, *, flush_ms: int = 1000, redact: bool = True,
                 all_flows: bool = False, source: str = "proxy") -> None:
        self.writer = CaptureWriter(path, flush_ms=flush_ms)
        self.redact = redact
        self.all_flows = all_flows
        self.source = source
        self.flows_seen = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="chatwire-extract", daemon=True)
        self._thread.start()

    @property
    def path(self) -> Path:
        return self.writer.path

    def submit(self, flow: http.HTTPFlow) -> None:
        self._queue.put(flow)

    def _run(self) -> None:
        while True:
            flow = self._queue.get()
            if flow is _STOP:
                return
            try:
                rows = extract_flow(flow, source=self.source, redact=self.redact, all_flows=self.all_flows)
                if any(rows.values()):
                    self.writer.add(rows)
                    self.flows_seen += 1
            except Exception:  # extract_flow does not raise; this guards the thread regardless
                log.exception("chatwire: extraction of flow %s failed", getattr(flow, "id", "?"))

    def close(self) -> None:
        """Extract what is queued, then write everything: called on a clean stop."""
        self._queue.put(_STOP)
        self._thread.join(timeout=60)
        self.writer.close()
