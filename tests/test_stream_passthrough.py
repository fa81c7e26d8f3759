"""No stream is ever held back: every event-stream answer passes the proxy chunk by chunk, and
flows chatwire does not recognise reach the client byte for byte as the origin sent them.

The oracle is the origin's own send log: each event's arrival at the client is compared with the
moment the origin handed it to its transport. A control run through plain mitmdump (which buffers
a whole body, mitmproxy issue #4469) shows the check would catch a proxy that held the stream.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import httpx
import pytest

from analyzer.store import load_capture

ROOT = Path(__file__).resolve().parent.parent
ADDON = ROOT / "addons" / "chatgpt_capture.py"
DELAYS = "150,80"  # first event after 150 ms, then one every 80 ms
N_EVENTS = 8


def read_stream(client: httpx.Client, method: str, url: str, **kwargs) -> tuple[httpx.Response, bytes, list[float]]:
    """The response, its raw body, and the time each SSE event (``\\n\\n``-terminated) was complete."""
    times: list[float] = []
    body = b""
    with client.stream(method, url, **kwargs) as response:
        for chunk in response.iter_raw():
            now = time.time()
            before = body.count(b"\n\n")
            body += chunk
            times.extend([now] * (body.count(b"\n\n") - before))
    return response, body, times


def lags_ms(origin, since: int, rid: str, times: list[float]) -> list[float]:
    sent = sorted((r["index"], r["t"]) for r in origin.log(since) if r["kind"] == "event" and r["rid"] == rid)
    assert len(sent) == len(times)
    return [(at - t) * 1000 for (_, t), at in zip(sent, times, strict=True)]


def origin_bytes(origin, since: int, rid: str) -> bytes:
    sent = sorted((r["index"], r["data"]) for r in origin.log(since) if r["kind"] == "event" and r["rid"] == rid)
    return "".join(data for _, data in sent).encode()


CASES = {
    # (method, path, headers, json body): unrecognised streams with and without a Content-Type,
    # and the Codex backend's answer without one (guide section 6a).
    "unrecognised-no-content-type": ("GET", "/_origin/sse?n=8&content_type=none", {}, None),
    "unrecognised-event-stream": ("GET", "/_origin/sse?n=8", {}, None),
    "codex-no-content-type": ("POST", "/backend-api/codex/responses", {"x-origin-content-type": "none"},
                              {"model": "gpt-5.6-codex", "input": "stream me", "stream": True}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_event_streams_pass_chunk_by_chunk(tmp_path, origin, mitmdump_factory, case):
    method, path, headers, body = CASES[case]
    capture_path = tmp_path / "cap.parquet"
    proxy = mitmdump_factory(script=ADDON, options={"capture_path": capture_path, "capture_flush_ms": 200})
    since = len(origin.log())
    verify = ssl.create_default_context(cafile=str(proxy.ca_path))
    with httpx.Client(proxy=proxy.proxy_url, verify=verify, timeout=30) as client:
        response, raw, times = read_stream(
            client, method, origin.url + path, json=body,
            headers={"accept": "text/event-stream", "x-origin-delays-ms": DELAYS, **headers})
    assert proxy.stop() == 0
    assert "Traceback" not in proxy.log_text()
    rid = response.headers["x-request-id"]
    lags = lags_ms(origin, since, rid, times)
    # Held back, the first event would arrive with the last (~150 + 7 * 80 ms after it was sent).
    assert max(lags) < 100, lags
    assert raw == origin_bytes(origin, since, rid)  # byte-identical
    if case == "codex-no-content-type":
        assert "content-type" not in response.headers
        capture = load_capture(capture_path)
        calls = capture.table("api_calls")
        assert list(calls.endpoint) == ["/backend-api/codex/responses"]
        call = calls.iloc[0]
        events = capture.table("stream_events")
        assert len(events) == call.n_events > 0
        # every event timed, and the proxy's arrival is at or just after the origin's send
        sent = sorted(r["t"] for r in origin.log(since) if r["kind"] == "event" and r["rid"] == rid)
        at = [t.timestamp() for t in events.sort_values("seq")["at"]]
        assert all(-0.01 < a - s < 0.1 for a, s in zip(at, sent, strict=True))
        assert call.response_text and call.ttft_ms is not None


def test_plain_mitmdump_holds_a_stream_back(origin, mitmdump_factory):
    """The control: without the addon the same stream arrives as one late burst."""
    proxy = mitmdump_factory()
    since = len(origin.log())
    verify = ssl.create_default_context(cafile=str(proxy.ca_path))
    with httpx.Client(proxy=proxy.proxy_url, verify=verify, timeout=30) as client:
        response, _, times = read_stream(client, "GET", origin.url + "/_origin/sse?n=8&content_type=none",
                                         headers={"accept": "text/event-stream", "x-origin-delays-ms": DELAYS})
    lags = lags_ms(origin, since, response.headers["x-request-id"], times)
    assert lags[0] > 400  # the first event waited for the last
