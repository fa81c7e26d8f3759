"""Real mitmproxy HTTPFlow objects for extractor tests (built with mitmproxy's own test helpers)."""

from __future__ import annotations

import json
import time

from mitmproxy import http
from mitmproxy.test import tflow


def make_flow(method: str, path: str, *, body=None, host: str = "chatgpt.com", request_headers=None,
              status: int = 200, response_body: bytes | str | None = b"", content_type: str = "application/json",
              response_headers=None, chunk_times: list[float] | None = None, start: float | None = None) -> http.HTTPFlow:
    """A finished flow. With ``chunk_times``, the response body is split into that many equal
    chunks recorded as the addon would (arrival times as offsets in seconds from ``start``)."""
    flow = tflow.tflow(resp=True)
    start = time.time() if start is None else start
    flow.request.method = method
    flow.request.path = path
    flow.request.host = host
    flow.request.headers["host"] = host
    flow.request.timestamp_start = start
    flow.request.timestamp_end = start + 0.001
    for k, v in (request_headers or {}).items():
        flow.request.headers[k] = v
    if body is not None:
        flow.request.content = body if isinstance(body, bytes) else json.dumps(body).encode()
    flow.response.status_code = status
    flow.response.headers.clear()
    flow.response.headers["content-type"] = content_type
    for k, v in (response_headers or {}).items():
        flow.response.headers[k] = v
    raw = response_body.encode() if isinstance(response_body, str) else response_body
    flow.response.raw_content = raw
    flow.response.timestamp_start = start + 0.05
    flow.response.timestamp_end = start + (chunk_times[-1] if chunk_times else 0.1)
    if chunk_times:
        n = len(chunk_times)
        size, extra = divmod(len(raw), n)
        sizes = [size + (1 if i < extra else 0) for i in range(n)]
        flow.metadata["chatwire"] = {"chunks": [[start + t, s] for t, s in zip(chunk_times, sizes, strict=True)]}
    return flow
