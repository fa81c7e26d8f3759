"""The Codex backend's WebSocket transport through a real mitmdump (guide section 6a).

A real WebSocket client (aiohttp, permessage-deflate offered) talks to the local origin through
``mitmdump -s addons/chatgpt_capture.py``; the oracle is the origin's send log (each frame's send
time and content) and what the client itself sent and received.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from pathlib import Path

import aiohttp
import httpx
import pandas as pd
import pytest
from mitmproxy import websocket

from analyzer.extract import extract_flow
from analyzer.store import load_capture
from tests.flows_factory import make_flow
from tests.test_capture_e2e import all_strings

ROOT = Path(__file__).resolve().parent.parent
ADDON = ROOT / "addons" / "chatgpt_capture.py"
PATH = "/backend-api/codex/responses"
BEARER = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJjb2RleC13cy10ZXN0In0.c2VjcmV0LWNvZGV4LXdzLXNpZ25hdHVyZQ"
BETA = "responses_websockets=2026-02-06"
FIRST_MS, GAP_MS = 150, 40


def _headers(**extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {BEARER}", "openai-beta": BETA, "chatgpt-account-id": "acct-ws-test",
            "originator": "codex_exec", "x-origin-delays-ms": f"{FIRST_MS},{GAP_MS}", **extra}


def _create(text: str, **extra) -> dict:
    return {"type": "response.create", "model": "gpt-5.6-codex", "stream": True, "store": False,
            "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}],
            **extra}


async def _until_terminal(ws: aiohttp.ClientWebSocketResponse) -> list[tuple[float, dict]]:
    got = []
    while True:
        msg = await asyncio.wait_for(ws.receive(), 20)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        obj = json.loads(msg.data)
        got.append((time.time(), obj))
        if obj["type"] in ("response.completed", "response.failed", "error"):
            return got


def _live_calls(capture_path: Path, n: int, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if capture_path.exists():
            calls = load_capture(capture_path).table("api_calls")
            if len(calls) >= n:
                return calls
        time.sleep(0.2)
    raise AssertionError(f"fewer than {n} api_calls rows on disk after {timeout} s")


def _mitm_ssl(proxy) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(proxy.ca_path))


def test_each_response_create_is_an_api_call_written_while_the_socket_stays_open(tmp_path, origin,
                                                                                mitmdump_factory):
    capture_path = tmp_path / "codex-ws.parquet"
    proxy = mitmdump_factory(script=ADDON, options={"capture_path": capture_path, "capture_flush_ms": 200})
    since = len(origin.log())
    sent: list[float] = []
    received: list[list[tuple[float, dict]]] = []
    on_disk_while_open = None

    async def session() -> int:
        nonlocal on_disk_while_open
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(origin.url.replace("https", "wss") + PATH, proxy=proxy.proxy_url,
                                       ssl=_mitm_ssl(proxy), headers=_headers(), compress=15) as ws:
                sent.append(time.time())
                await ws.send_str(json.dumps(_create("warm up", generate=False)))
                received.append(await _until_terminal(ws))
                warm_id = received[0][-1][1]["response"]["id"]
                await ws.send_str(json.dumps({"type": "response.processed", "response_id": warm_id}))
                sent.append(time.time())
                await ws.send_str(json.dumps(_create("tell me about sockets", previous_response_id=warm_id)))
                received.append(await _until_terminal(ws))
                # Both answers are on disk while the socket is still open.
                on_disk_while_open = await asyncio.to_thread(_live_calls, capture_path, 2)
                return ws.compress

    compress = asyncio.run(session())
    assert compress == 15  # permessage-deflate was negotiated end to end, through the proxy
    assert proxy.stop() == 0
    assert "Traceback" not in proxy.log_text()

    log = origin.log(since)
    frames = [r for r in log if r["kind"] == "ws_frame"]
    creates = [r for r in log if r["kind"] == "ws_client" and r["type"] == "response.create"]
    assert [r["type"] for r in log if r["kind"] == "ws_client"] == [
        "response.create", "response.processed", "response.create"]
    capture = load_capture(capture_path)
    calls = capture.table("api_calls").sort_values("flow_id").reset_index(drop=True)
    assert len(on_disk_while_open) == 2
    socket_flow = capture.table("flows").set_index("kind").loc["codex_websocket"]
    assert socket_flow.status_code == 101 and socket_flow.path == PATH
    assert list(calls.flow_id) == [f"{socket_flow.flow_id}#0", f"{socket_flow.flow_id}#1"]
    assert set(calls.endpoint) == {PATH}

    for n, call in calls.iterrows():
        mine = [r for r in frames if r["call"] == n]
        assert call.response_id == mine[0]["key"] == received[n][-1][1]["response"]["id"]
        assert call.response_text == "".join(r["text"] for r in mine) == "".join(
            o.get("delta", "") for _, o in received[n] if o["type"] == "response.output_text.delta")
        assert call.finish_reason == "completed" and call.stream and call.model == "gpt-5.6-codex"
        assert not isinstance(call.error, str)
        events = capture.table("stream_events")
        events = events[events.flow_id == call.flow_id].sort_values("seq")
        assert list(events.type) == [r["event_kind"] for r in mine]  # one row per server frame, in order
        assert [json.loads(d) for d in events.data] == [json.loads(r["data"]) for r in mine]
        assert list(events.n_bytes) == [r["n_bytes"] for r in mine] and events.event.isna().all()
        assert pd.isna(call.status_code)
        # Each frame's own time: before this client had read it, and not before the origin's send
        # (whose log entry is written once the send returned, hence the slack below it).
        for at, r, (client_at, _) in zip(events["at"], mine, received[n], strict=True):
            t = at.timestamp()
            assert r["t"] - 0.05 <= t <= client_at + 0.005, (r["t"], t, client_at)
        # Offsets count from the response.create frame (as mitmproxy saw it: after our send,
        # before the origin's receipt).
        start = call.started_at.timestamp()
        assert sent[n] - 0.005 <= start <= creates[n]["t"] + 0.005

    warm, answer = calls.iloc[0], calls.iloc[1]
    assert warm.response_text == "" and warm.completion_tokens == 0 and warm.n_text_events == 0
    assert json.loads(warm.request_json)["generate"] is False
    assert json.loads(answer.request_json)["previous_response_id"] == warm.response_id
    assert answer.last_user_text == "tell me about sockets"
    # TTFT from the create frame: the origin waited FIRST_MS after receiving it before the first delta.
    first_text = next(r for r in frames if r["call"] == 1 and r["text"])
    origin_ttft = (first_text["t"] - creates[1]["t"]) * 1000
    assert FIRST_MS * 0.9 <= origin_ttft
    assert origin_ttft - 5 <= answer.ttft_ms <= origin_ttft + 100
    last = [r for r in frames if r["call"] == 1][-1]
    assert answer.e2e_ms >= (last["t"] - creates[1]["t"]) * 1000 - 5
    assert answer.n_text_events == sum(1 for r in frames if r["call"] == 1 and r["text"])
    assert BEARER not in all_strings(capture_path) and BEARER.split(".")[-1] not in all_strings(capture_path)


def test_a_426_handshake_then_the_http_fallback(tmp_path, origin, mitmdump_factory):
    capture_path = tmp_path / "codex-426.parquet"
    proxy = mitmdump_factory(script=ADDON, options={"capture_path": capture_path, "capture_flush_ms": 200})

    async def refused() -> int:
        async with aiohttp.ClientSession() as http:
            try:
                await http.ws_connect(origin.url.replace("https", "wss") + PATH, proxy=proxy.proxy_url,
                                      ssl=_mitm_ssl(proxy), headers=_headers(**{"x-origin-ws": "426"}))
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status
        return 0

    assert asyncio.run(refused()) == 426
    body = {k: v for k, v in _create("fall back to http").items() if k != "type"}
    with httpx.Client(proxy=proxy.proxy_url, verify=_mitm_ssl(proxy), timeout=30) as client:
        with client.stream("POST", origin.url + PATH, json=body,
                           headers={**_headers(), "accept": "text/event-stream"}) as response:
            raw = b"".join(response.iter_raw())
    assert response.status_code == 200 and b"response.completed" in raw
    assert proxy.stop() == 0
    capture = load_capture(capture_path)
    flows = capture.table("flows").set_index("kind")
    assert flows.loc["codex_websocket"].status_code == 426 and flows.loc["codex_websocket"].method == "GET"
    assert flows.loc["api"].method == "POST"
    calls = capture.table("api_calls")
    assert list(calls.flow_id) == [flows.loc["api"].flow_id]  # the refused handshake asked for nothing
    assert calls.iloc[0].endpoint == PATH and calls.iloc[0].status_code == 200
    assert calls.iloc[0].last_user_text == "fall back to http" and calls.iloc[0].response_text
    assert BEARER not in all_strings(capture_path) and BEARER.split(".")[-1] not in all_strings(capture_path)


def test_the_wrapped_usage_limit_error_is_a_failed_call(tmp_path, origin, mitmdump_factory):
    capture_path = tmp_path / "codex-429.parquet"
    proxy = mitmdump_factory(script=ADDON, options={"capture_path": capture_path, "capture_flush_ms": 200})

    async def session() -> list[tuple[float, dict]]:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(origin.url.replace("https", "wss") + PATH, proxy=proxy.proxy_url,
                                       ssl=_mitm_ssl(proxy), headers=_headers(**{"x-origin-fail": "usage-limit"}),
                                       compress=15) as ws:
                await ws.send_str(json.dumps(_create("one more please")))
                return await _until_terminal(ws)

    got = asyncio.run(session())
    assert got[-1][1]["error"]["type"] == "usage_limit_reached"
    assert proxy.stop() == 0
    calls = load_capture(capture_path).table("api_calls")
    assert len(calls) == 1
    call = calls.iloc[0]
    assert pd.isna(call.status_code)  # no HTTP status per call; the 429 is in the frame, and the error
    assert "usage_limit_reached: The usage limit has been reached" in call.error
    # the frame's status: in the error text, or in a column of its own where the HTTP extractor has one
    assert call.error.startswith("429: ") or getattr(call, "error_status_code", None) == 429
    assert call.n_text_events == 0 and call.response_text == ""


def _socket_flow(frames: list[tuple[bool, float, dict | bytes]], *, start: float = 1000.0):
    flow = make_flow("GET", PATH, host="chatgpt.com", status=101, response_body=b"", start=start)
    flow.websocket = websocket.WebSocketData()
    for from_client, t, content in frames:
        data = content if isinstance(content, bytes) else json.dumps(content).encode()
        flow.websocket.messages.append(websocket.WebSocketMessage(1, from_client, data, t))
    return flow


def test_late_frames_join_their_answer_and_a_cut_answer_is_kept():
    delta = {"type": "response.output_text.delta", "delta": "Hi"}
    done = {"type": "response.completed", "response": {"id": "resp_1", "status": "completed", "output": []}}
    flow = _socket_flow([
        (True, 1000.0, _create("hello")),
        (False, 1000.2, {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}}),
        (False, 1000.3, delta),
        (False, 1000.4, done),
        (False, 1000.5, {"type": "responsesapi.websocket_timing", "timing": {"duration_ms": 100}}),
        (True, 1001.0, _create("again")),
        (False, 1001.25, delta),  # the socket closes before this answer ends
    ])
    rows = extract_flow(flow, source="test")
    first, second = rows["api_calls"]
    assert first["flow_id"] == f"{flow.id}#0" and second["flow_id"] == f"{flow.id}#1"
    assert first["ttft_ms"] == pytest.approx(300.0) and first["response_text"] == "Hi"
    assert first["e2e_ms"] == pytest.approx(400.0)  # the timing note after the end is not part of the answer
    assert second["ttft_ms"] == pytest.approx(250.0) and second["error"] == "socket closed before the answer ended"
    events = [(r["flow_id"][-1], r["seq"], r["type"]) for r in rows["stream_events"]]
    assert events == [("0", 0, "response.created"), ("0", 1, "response.output_text.delta"),
                      ("0", 2, "response.completed"), ("0", 3, "responsesapi.websocket_timing"),
                      ("1", 0, "response.output_text.delta")]
    assert rows["flows"][0]["kind"] == "codex_websocket"


def test_a_har_with_the_socket_frames_gives_the_same_calls(tmp_path):
    """Chrome exports a WebSocket's frames in ``_webSocketMessages`` (epoch times of their own)."""
    from click.testing import CliRunner

    from analyzer.cli import main

    t0 = 1796000000.0
    frames = [("send", 0.0, _create("from a har")),
              ("receive", 0.05, {"type": "response.created", "response": {"id": "resp_h", "status": "in_progress"}}),
              ("receive", 0.4, {"type": "response.output_text.delta", "delta": "Hello"}),
              ("receive", 0.45, {"type": "response.output_text.delta", "delta": " there"}),
              ("receive", 0.5, {"type": "response.completed", "response": {
                  "id": "resp_h", "status": "completed", "output": [],
                  "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}}})]
    entry = {"startedDateTime": "2026-11-29T10:13:20.000Z",
             "request": {"method": "GET", "url": "https://chatgpt.com" + PATH, "httpVersion": "http/1.1",
                         "headers": [{"name": "upgrade", "value": "websocket"},
                                     {"name": "authorization", "value": f"Bearer {BEARER}"},
                                     {"name": "openai-beta", "value": BETA}],
                         "queryString": [], "cookies": [], "headersSize": -1, "bodySize": 0},
             "response": {"status": 101, "statusText": "", "httpVersion": "http/1.1", "headers": [],
                          "cookies": [], "content": {"size": 0, "mimeType": "x-unknown"}, "redirectURL": "",
                          "headersSize": -1, "bodySize": -1},
             "cache": {}, "timings": {"send": 0.2, "wait": 30.0, "receive": 600.0}, "time": 630.2,
             "_resourceType": "websocket",
             "_webSocketMessages": [{"type": kind, "time": t0 + dt, "opcode": 1, "data": json.dumps(obj)}
                                    for kind, dt, obj in frames]}
    har = tmp_path / "codex.har"
    har.write_text(json.dumps({"log": {"version": "1.2", "creator": {"name": "test", "version": "1"},
                                       "entries": [entry]}}))
    capture_path = tmp_path / "har.parquet"
    result = CliRunner().invoke(main, ["import", str(har), "-o", str(capture_path)])
    assert result.exit_code == 0, result.output
    capture = load_capture(capture_path)
    (call,) = capture.table("api_calls").itertuples()
    assert call.flow_id.endswith("#0") and call.endpoint == PATH and call.response_text == "Hello there"
    assert call.ttft_ms == pytest.approx(400.0, abs=0.01) and call.e2e_ms == pytest.approx(500.0, abs=0.01)
    assert call.completion_tokens == 2 and call.last_user_text == "from a har"
    events = capture.table("stream_events")
    assert list(events.sort_values("seq").offset_ms.round(3)) == [50.0, 400.0, 450.0, 500.0]
    assert BEARER not in all_strings(capture_path)


def test_a_socket_call_has_the_columns_its_http_twin_has():
    """The same request and events over HTTP/SSE and over the socket: the same row, but for ids and status."""
    request = _create("twins", reasoning={"summary": "auto"})
    answer = [{"type": "response.created", "response": {"id": "resp_t", "status": "in_progress"}},
              {"type": "response.output_text.delta", "delta": "Same"},
              {"type": "response.output_text.delta", "delta": " rows"},
              {"type": "response.completed", "response": {"id": "resp_t", "status": "completed", "model": "m-1",
                                                          "output": [], "usage": {"input_tokens": 4,
                                                                                  "output_tokens": 2}}}]
    times = [0.1, 0.3, 0.35, 0.4]
    socket = _socket_flow([(True, 1000.0, request)] + [(False, 1000.0 + t, o) for t, o in zip(times, answer,
                                                                                             strict=True)])
    body = "".join(f"event: {o['type']}\ndata: {json.dumps(o)}\n\n" for o in answer)
    post = make_flow("POST", PATH, body={k: v for k, v in request.items() if k != "type"}, start=1000.0,
                     content_type="text/event-stream", response_body=body, chunk_times=times)
    post.metadata["chatwire"]["chunks"] = [[1000.0 + t, len(f"event: {o['type']}\ndata: {json.dumps(o)}\n\n")]
                                           for t, o in zip(times, answer, strict=True)]
    over_ws, over_http = extract_flow(socket, source="t"), extract_flow(post, source="t")
    (ws_call,), (http_call,) = over_ws["api_calls"], over_http["api_calls"]
    differ = {"flow_id", "status_code"}
    assert {k: v for k, v in ws_call.items() if k not in differ} == {
        k: v for k, v in http_call.items() if k not in differ}
    assert ws_call["status_code"] is None and http_call["status_code"] == 200
    keep = ("seq", "at", "offset_ms", "type", "text", "data")
    assert [{k: r[k] for k in keep} for r in over_ws["stream_events"]] == [
        {k: r[k] for k in keep} for r in over_http["stream_events"]]


def test_each_call_stands_for_its_post_with_its_own_turn_headers():
    """The CLI sends one handshake per socket but each create names its own turn in client_metadata."""
    from analyzer.extract.codex_websocket import CodexSocketCalls

    warm_meta = json.dumps({"turn_id": "", "request_kind": "prewarm"})
    turn_meta = json.dumps({"turn_id": "turn-2", "request_kind": "turn"})
    flow = _socket_flow([
        (True, 1000.0, _create("warm", generate=False, client_metadata={"x-codex-turn-metadata": warm_meta})),
        (False, 1000.1, {"type": "response.completed", "response": {"id": "r0", "status": "completed", "output": []}}),
        (True, 1001.0, _create("go", client_metadata={"x-codex-turn-metadata": turn_meta, "turn_id": "turn-2",
                                                      "thread_id": "th-1", "x-codex-window-id": "th-1:0"})),
        (False, 1001.2, {"type": "response.completed", "response": {"id": "r1", "status": "completed", "output": []}}),
    ])
    flow.request.headers["x-codex-turn-metadata"] = warm_meta  # the handshake's: the warm-up's turn
    flow.request.headers["authorization"] = f"Bearer {BEARER}"
    calls = CodexSocketCalls(flow)
    calls.feed()
    posts = [calls._call_flow(c) for c in calls._calls]
    assert [p.request.headers["x-codex-turn-metadata"] for p in posts] == [warm_meta, turn_meta]
    assert posts[1].request.headers["thread-id"] == "th-1" and posts[1].request.headers["x-codex-window-id"] == "th-1:0"
    assert [p.request.timestamp_start for p in posts] == [1000.0, 1001.0]
    assert json.loads(posts[1].request.content)["input"][0]["content"][0]["text"] == "go"
    assert "type" not in json.loads(posts[1].request.content)
    assert flow.request.headers["x-codex-turn-metadata"] == warm_meta  # the socket's own flow is untouched


def test_the_handshake_limit_headers_go_with_the_first_call_only():
    from analyzer.extract.codex_websocket import CodexSocketCalls

    done = {"type": "response.completed", "response": {"id": "r", "status": "completed", "output": []}}
    flow = _socket_flow([(True, 1000.0, _create("a")), (False, 1000.1, done),
                         (True, 1001.0, _create("b")), (False, 1001.1, done)])
    for name, value in (("x-codex-primary-used-percent", "7"), ("x-codex-bengalfox-primary-reset-at", "9"),
                        ("x-codex-bengalfox-limit-name", "Spark"), ("x-codex-credits-balance", "1.5"),
                        ("x-models-etag", 'W/"1"')):
        flow.response.headers[name] = value
    calls = CodexSocketCalls(flow)
    calls.feed()
    first, second = (calls._call_flow(c).response.headers for c in calls._calls)
    assert first["x-codex-primary-used-percent"] == "7" and first["x-codex-credits-balance"] == "1.5"
    assert not any(n.lower().startswith(("x-codex-primary", "x-codex-bengalfox", "x-codex-credits")) for n in second)
    assert second["x-models-etag"] == 'W/"1"'


def test_a_call_that_cannot_be_rebuilt_is_an_errors_row_and_the_others_stay(monkeypatch):
    from analyzer.extract import codex_websocket

    done = {"type": "response.completed", "response": {"id": "r", "status": "completed", "output": []}}
    flow = _socket_flow([(True, 1000.0, _create("a")), (False, 1000.1, done),
                         (True, 1001.0, _create("b")), (False, 1001.1, done)])
    real = codex_websocket.CodexSocketCalls._call_flow

    def broken_second(self, call):
        if call["n"] == 1:
            raise RuntimeError("boom")
        return real(self, call)

    monkeypatch.setattr(codex_websocket.CodexSocketCalls, "_call_flow", broken_second)
    rows = extract_flow(flow, source="test")
    assert [c["flow_id"] for c in rows["api_calls"]] == [f"{flow.id}#0"]
    assert [(e["flow_id"], e["stage"], e["error"]) for e in rows["errors"]] == [
        (f"{flow.id}#1", "codex_websocket", "RuntimeError: boom")]
    assert rows["errors"][0]["at"] == 1001.0
