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

from analyzer.extract import CodexSocketCalls, WebSocketAnswers, extract_finished_answers, extract_flow
from analyzer.extract.codex_websocket import is_codex_websocket
from analyzer.inert import inert
from analyzer.store.writer import CaptureWriter
from analyzer.streams.websocket import is_conversation_frame

log = logging.getLogger(__name__)

_STOP = object()


class CapturePipeline:
    def __init__(self, path: str | Path, *, flush_ms: int = 1000, redact: bool = True,
                 all_flows: bool = False, source: str = "proxy", mode: int | None = None,
                 max_held_rows: int | None = None, label: str | None = None, partition: str = "none") -> None:
        """``mode``: of the capture's files (default 0600); ``max_held_rows``: how many rows wait in
        memory while writing fails (a full disk) before further ones are dropped and counted;
        ``label``: the run's ``captures.label``; ``partition``: ``none`` or ``date``."""
        self.writer = CaptureWriter(path, flush_ms=flush_ms, mode=mode, max_held_rows=max_held_rows,
                                    label=label, source="live", partition=partition)
        self.redact = redact
        self.all_flows = all_flows
        self.source = source
        self.flows_seen = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._sockets: dict[str, WebSocketAnswers | CodexSocketCalls] = {}  # open sockets that carry answers (worker only)
        self._thread = threading.Thread(target=self._run, name="chatwire-extract", daemon=True)
        self._thread.start()

    @property
    def path(self) -> Path:
        return self.writer.path

    def submit(self, flow: http.HTTPFlow) -> None:
        """A finished flow (a WebSocket: closed)."""
        self._queue.put((False, flow))

    def submit_frame(self, flow: http.HTTPFlow) -> None:
        """A WebSocket frame arrived: answers it finishes are written without waiting for the close."""
        self._queue.put((True, flow))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            is_frame, flow = item
            try:
                if is_frame:
                    rows = self._socket_progress(flow)
                else:
                    answers = self._sockets.pop(flow.id, None)
                    rows = extract_flow(flow, source=self.source, redact=self.redact, all_flows=self.all_flows,
                                        websocket_answers=answers)
                    self.flows_seen += 1
                if any(rows.values()):
                    # Partitioned by the flow's start: all of a flow's rows (a socket's too) share a date.
                    self.writer.add(rows, at=_flow_start(flow))
            except Exception:  # extract_flow does not raise; this guards the thread regardless
                log.exception("chatwire: extraction of flow %s failed", inert(getattr(flow, "id", "?")))

    def _socket_progress(self, flow: http.HTTPFlow) -> dict:
        answers = self._sockets.get(flow.id)
        if answers is None and is_codex_websocket(flow):
            answers = self._sockets[flow.id] = CodexSocketCalls(flow)
        if answers is None:
            last = flow.websocket.messages[-1] if flow.websocket and flow.websocket.messages else None
            if last is None or last.from_client or not is_conversation_frame(last.content):
                return {}  # not (yet) a socket that carries answers
            answers = self._sockets[flow.id] = WebSocketAnswers(flow)
        return extract_finished_answers(answers, redact=self.redact)

    def close(self) -> None:
        """Extract what is queued, then write everything: called on a clean stop."""
        self._queue.put(_STOP)
        self._thread.join(timeout=60)
        self.writer.close(compact=True)


def _flow_start(flow: http.HTTPFlow) -> float | None:
    """When the flow's request started (None: now)."""
    request = getattr(flow, "request", None)
    return getattr(request, "timestamp_start", None) or getattr(flow, "timestamp_created", None)
