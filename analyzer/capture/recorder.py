"""Recording a streamed response chunk by chunk without holding it back.

mitmproxy buffers a response body until it is complete unless ``flow.response.stream`` is set.
``ChunkRecorder`` is the callable we set: it notes each chunk's arrival time and size and returns
the chunk unchanged at once, so the client sees every event when it would have without us. The
record lives in ``flow.metadata["chatwire"]["chunks"]`` (it survives ``mitmdump -w``) and at the
end of the stream the raw bytes become the response body, so the flow can be extracted (now, or
later from a flow file) exactly like a buffered one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from mitmproxy import http

from analyzer.extract.common import METADATA_KEY

StreamHook = Callable[[bytes], bytes | Iterable[bytes]]


class ChunkRecorder:
    __slots__ = ("flow", "parts", "timing", "finished", "downstream", "watch")

    def __init__(self, flow: http.HTTPFlow, downstream: StreamHook | None = None, watch=None) -> None:
        self.flow = flow
        self.parts: list[bytes] = []
        self.timing: list[list] = []  # [[epoch seconds, n bytes], ...]; a list so it serialises
        self.finished = False
        self.downstream = downstream  # another addon's stream callable, still honoured
        self.watch = watch  # a WatchPublisher (analyzer/capture/watch.py) or None: appends only
        if watch is not None:
            watch.stream_started(flow)
        flow.metadata.setdefault(METADATA_KEY, {})["chunks"] = self.timing

    def __call__(self, data: bytes) -> bytes | Iterable[bytes]:
        if data:
            at = time.time()
            self.timing.append([at, len(data)])
            self.parts.append(data)
            if self.watch is not None:
                self.watch.chunk(self.flow, at, data)
        else:
            self.finish()
        return self.downstream(data) if self.downstream is not None else data

    def finish(self) -> None:
        """End of stream (or of the connection): the raw bytes become the recorded body."""
        if self.finished or self.flow.response is None:
            return
        self.finished = True
        self.flow.response.raw_content = b"".join(self.parts)
        self.parts = []
        if self.watch is not None:
            self.watch.stream_ended(self.flow)
