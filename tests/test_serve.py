"""``analyze serve``: captured streams played back over real HTTP with their captured timing.

The server runs as a real subprocess (``analyze serve … --port 0``); clients are the official
``openai`` client and plain httpx with ``accept: text/event-stream`` (what a browser sends).
Timing checks compare gaps between events (not absolute times) with a tolerance that a shared,
busy 2-core machine can keep.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest

from analyzer.replay.matching import ApiCall, Matcher, WebTurn, api_rules, spread_offsets, web_rules
from analyzer.replay.sse_writer import (
    Answer,
    ServedEvent,
    TextPiece,
    adapt_chat_stream,
    encode_event,
    is_usage_chunk,
)
from analyzer.streams.sse import SSEParser, parse_sse
from tests.capture_factory import T0, make_capture, merge, message_row

TOLERANCE_MS = 30.0  # median lateness; the server aims at ~1 ms, the slack is for a loaded CI machine
EARLY_MS = 2.0  # an event may not arrive earlier than its captured offset (the timer's granularity)

# ---------------------------------------------------------------- fixture capture


def _flow(flow_id: str, at: float, path: str, *, ttfb: float | None, duration: float, source: str = "proxy",
          cf_ray: str | None = None, content_type: str = "text/event-stream", headers: list | None = None) -> dict:
    return {
        "flow_id": flow_id, "kind": "api" if path.startswith("/v1") else "conversation", "source": source,
        "method": "POST", "scheme": "https", "host": "chatgpt.com", "port": 443, "path": path,
        "status_code": 200, "started_at": at, "ended_at": at + duration / 1000, "ttfb_ms": ttfb,
        "duration_ms": duration, "content_type": content_type, "cf_ray": cf_ray, "streamed": True,
        "response_headers": json.dumps(headers or []),
    }


def _events(flow_id: str, at: float, items: list[tuple[float | None, str | None, str, str | None, str]]) -> list[dict]:
    """Rows from (offset_ms, event, data, text, type); offset None = no timing (HAR)."""
    return [
        {"flow_id": flow_id, "seq": seq, "at": None if off is None else at + off / 1000, "offset_ms": off,
         "event": event, "type": kind, "text": text, "data": data, "n_bytes": len(data) + 8}
        for seq, (off, event, data, text, kind) in enumerate(items)
    ]


def _delta(v: object, p: str | None = None, o: str | None = None) -> str:
    d = {"p": p, "o": o, "v": v} if p is not None else {"v": v}
    return json.dumps(d)


V1_AT, LEGACY_AT, HAR_AT, CHAT_AT, RESP_AT, PLAIN_AT, WS_AT = (T0 + k * 60 for k in range(7))
V1_EVENTS = [
    (5.0, "delta_encoding", '"v1"', None, "delta_encoding"),
    (5.0, None, json.dumps({"type": "resume_conversation_token", "token": "[REDACTED]", "conversation_id": "conv-1"}),
     None, "resume_conversation_token"),
    (300.0, "delta", _delta({"message": {"id": "msg-a2", "author": {"role": "assistant"},
                                         "content": {"content_type": "text", "parts": [""]}, "status": "in_progress"}},
                            "", "add"), None, "delta"),
    (320.0, "delta", _delta("Bon", "/message/content/parts/0", "append"), "Bon", "delta"),
    (420.0, "delta", _delta("jour"), "jour", "delta"),
    (520.0, "delta", _delta(" !"), " !", "delta"),
    (560.0, None, json.dumps({"type": "message_stream_complete", "conversation_id": "conv-1"}), None,
     "message_stream_complete"),
    (560.0, None, "[DONE]", None, "done"),
]


def _legacy(text: str, status: str = "in_progress") -> str:
    return json.dumps({"message": {"id": "msg-l1", "author": {"role": "assistant"},
                                   "content": {"content_type": "text", "parts": [text]}, "status": status},
                       "conversation_id": "conv-l", "error": None})


LEGACY_EVENTS = [
    (200.0, None, _legacy("Hello"), "Hello", "message"),
    (260.0, None, _legacy("Hello there"), " there", "message"),
    (380.0, None, _legacy("Hello there!", "finished_successfully"), "!", "message"),
    (390.0, None, "[DONE]", None, "done"),
]
WS_EVENTS = [(100.0, None, _legacy("Hi"), "Hi", "message"), (150.0, None, _legacy("Hi you"), " you", "message"),
             (210.0, None, "[DONE]", None, "done")]  # on the socket: offsets from the answer's start
HAR_EVENTS = [(None, None, _legacy(t), t, "message") for t in ("a", "ab", "abc")] + [(None, None, "[DONE]", None, "done")]


def _chunk(delta: dict | None, finish: str | None = None, usage: dict | None = None) -> str:
    return json.dumps({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": int(CHAT_AT),
                       "model": "gpt-4o-mini", "system_fingerprint": "fp_1",
                       "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}],
                       "usage": usage})


USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
CHAT_EVENTS = [
    (250.0, None, _chunk({"role": "assistant", "content": ""}), None, "chat.completion.chunk"),
    (250.0, None, _chunk({"content": "Hi"}), "Hi", "chat.completion.chunk"),
    (330.0, None, _chunk({"content": ","}), ",", "chat.completion.chunk"),
    (460.0, None, _chunk({"content": " there"}), " there", "chat.completion.chunk"),
    (520.0, None, _chunk({}, "stop"), None, "chat.completion.chunk"),
    (520.0, None, _chunk(None, usage=USAGE), None, "usage"),
    (520.0, None, "[DONE]", None, "done"),
]


def _resp(kind: str, **extra) -> tuple[str, str]:
    return kind, json.dumps({"type": kind, **extra})


_RESPONSE = {"id": "resp_1", "object": "response", "created_at": int(RESP_AT), "status": "in_progress",
             "model": "gpt-4o-mini", "output": [], "usage": None}
_DONE_RESPONSE = {**_RESPONSE, "status": "completed",
                  "output": [{"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
                              "content": [{"type": "output_text", "text": "Greetings!", "annotations": []}]}],
                  "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}}
_PART = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
RESP_EVENTS = [
    (100.0, *_resp("response.created", sequence_number=0, response=_RESPONSE), None, "response.created"),
    (100.0, *_resp("response.in_progress", sequence_number=1, response=_RESPONSE), None, "response.in_progress"),
    (150.0, *_resp("response.output_item.added", sequence_number=2, output_index=0,
                   item={"id": "msg_1", "type": "message", "status": "in_progress", "content": [], "role": "assistant"}),
     None, "response.output_item.added"),
    (150.0, *_resp("response.content_part.added", sequence_number=3, **_PART,
                   part={"type": "output_text", "text": "", "annotations": []}), None, "response.content_part.added"),
    (200.0, *_resp("response.output_text.delta", sequence_number=4, **_PART, delta="Greetings"), "Greetings",
     "response.output_text.delta"),
    (290.0, *_resp("response.output_text.delta", sequence_number=5, **_PART, delta="!"), "!",
     "response.output_text.delta"),
    (330.0, *_resp("response.output_text.done", sequence_number=6, **_PART, text="Greetings!"), None,
     "response.output_text.done"),
    (330.0, *_resp("response.completed", sequence_number=7, response=_DONE_RESPONSE), None, "response.completed"),
]


def serve_rows() -> dict[str, list[dict]]:
    """One capture with every kind of recording ``serve`` answers from."""
    web_headers = [["content-type", "text/event-stream; charset=utf-8"], ["content-encoding", "br"],
                   ["x-request-id", "req-123"], ["set-cookie", "__cf_bm=[REDACTED]"]]
    turns = [
        {"flow_id": "web-v1", "conversation_id": "conv-1", "action": "next", "parent_message_id": "msg-a1",
         "user_message_id": "msg-u2", "user_text": "and in French?", "assistant_message_id": "msg-a2",
         "assistant_text": "Bonjour !", "stream_format": "v1", "model_slug": "gpt-4o", "started_at": V1_AT,
         "ttft_ms": 320.0, "e2e_ms": 560.0, "path": "/backend-api/f/conversation", "cf_ray": "8f00aa11bb22cc33-AMS"},
        {"flow_id": "web-legacy", "conversation_id": "conv-l", "action": "next", "parent_message_id": "p-l0",
         "user_message_id": "msg-lu", "user_text": "Say hello", "assistant_message_id": "msg-l1",
         "assistant_text": "Hello there!", "stream_format": "legacy", "model_slug": "text-davinci-002-render-sha",
         "started_at": LEGACY_AT, "ttft_ms": 200.0, "e2e_ms": 390.0, "path": "/backend-api/conversation",
         "cf_ray": "7d00aa11bb22cc33-SIN"},
        {"flow_id": "web-har", "conversation_id": "conv-h", "action": "next", "parent_message_id": "p-h0",
         "user_text": "from a har", "stream_format": "legacy", "started_at": HAR_AT,
         "path": "/backend-api/conversation"},
    ]
    turns += [
        # 2024: the POST answers JSON {wss_url…}; the answer arrives on a WebSocket 0.2 s later.
        {"flow_id": "web-ws", "conversation_id": "conv-w", "action": "next", "parent_message_id": "p-w0",
         "user_message_id": "u-ws", "user_text": "over a socket", "stream_format": "websocket",
         "status": "handed_off", "started_at": WS_AT, "path": "/backend-api/conversation"},
        {"flow_id": "wsflow#0", "conversation_id": "conv-w", "user_message_id": "u-ws", "stream_format": "websocket",
         "assistant_text": "Hi you", "started_at": WS_AT + 0.2, "path": "/client/hubs/conversations"},
    ]
    api = [
        {"flow_id": "api-chat", "host": "api.openai.com", "endpoint": "/v1/chat/completions", "model": "gpt-4o-mini",
         "stream": True, "n_messages": 1, "last_user_text": "Say hi", "response_text": "Hi, there",
         "prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12, "finish_reason": "stop",
         "response_id": "chatcmpl-1", "status_code": 200, "started_at": CHAT_AT, "ttft_ms": 250.0, "e2e_ms": 520.0},
        {"flow_id": "api-resp", "host": "api.openai.com", "endpoint": "/v1/responses", "model": "gpt-4o-mini",
         "stream": True, "n_messages": 1, "last_user_text": "Say some greetings", "response_text": "Greetings!",
         "prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7, "finish_reason": "completed",
         "response_id": "resp_1", "status_code": 200, "started_at": RESP_AT, "ttft_ms": 200.0, "e2e_ms": 330.0},
        {"flow_id": "api-plain", "host": "api.openai.com", "endpoint": "/v1/chat/completions", "model": "gpt-4o",
         "stream": False, "n_messages": 1, "last_user_text": "Answer plainly", "response_text": "Plain answer.",
         "prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7, "finish_reason": "stop",
         "response_id": "chatcmpl-2", "status_code": 200, "started_at": PLAIN_AT, "e2e_ms": 400.0},
    ]
    messages = [
        message_row("conv-1", "msg-u1", None, "user", "Say hello in English", source="mapping", flow_id="read",
                    seen_at=V1_AT - 30, create_time=V1_AT - 40),
        message_row("conv-1", "msg-a1", "msg-u1", "assistant", "Hello!", source="mapping", flow_id="read",
                    seen_at=V1_AT - 30, create_time=V1_AT - 39, model_slug="gpt-4o"),
        message_row("conv-1", "msg-u2", "msg-a1", "user", "and in French?", source="request", flow_id="web-v1",
                    seen_at=V1_AT, create_time=V1_AT),
        message_row("conv-1", "msg-a2", "msg-u2", "assistant", "Bonjour !", source="stream", flow_id="web-v1",
                    seen_at=V1_AT + 0.6, create_time=V1_AT + 0.3, model_slug="gpt-4o"),
    ]
    return merge(
        {"flows": [
            _flow("web-v1", V1_AT, "/backend-api/f/conversation", ttfb=5.0, duration=560.0,
                  cf_ray="8f00aa11bb22cc33-AMS", headers=web_headers),
            _flow("web-legacy", LEGACY_AT, "/backend-api/conversation", ttfb=180.0, duration=390.0,
                  cf_ray="7d00aa11bb22cc33-SIN"),
            _flow("web-har", HAR_AT, "/backend-api/conversation", ttfb=100.0, duration=700.0, source="har"),
            _flow("api-chat", CHAT_AT, "/v1/chat/completions", ttfb=240.0, duration=520.0),
            _flow("api-resp", RESP_AT, "/v1/responses", ttfb=90.0, duration=330.0),
            _flow("web-ws", WS_AT, "/backend-api/conversation", ttfb=80.0, duration=90.0,
                  content_type="application/json"),
            _flow("api-plain", PLAIN_AT, "/v1/chat/completions", ttfb=400.0, duration=400.0,
                  content_type="application/json"),
        ]},
        {"conversation_turns": turns, "api_calls": api, "messages": messages},
        {"stream_events": _events("web-v1", V1_AT, V1_EVENTS) + _events("web-legacy", LEGACY_AT, LEGACY_EVENTS)
         + _events("web-har", HAR_AT, HAR_EVENTS) + _events("api-chat", CHAT_AT, CHAT_EVENTS)
         + _events("api-resp", RESP_AT, RESP_EVENTS) + _events("wsflow#0", WS_AT + 0.2, WS_EVENTS)},
    )


# ---------------------------------------------------------------- the server in a subprocess


def analyze_cmd() -> list[str]:
    return [sys.executable, "-c", "from analyzer.cli import main; main()"]


@contextmanager
def running_server(capture: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """``analyze serve CAPTURE --port 0 ARGS`` in a subprocess; yields its base URL."""
    proc = subprocess.Popen(
        [*analyze_cmd(), "serve", str(capture), "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://[\d.]+:\d+", line)
        if not match:
            proc.kill()
            raise AssertionError(f"serve did not start: {line!r} {proc.stderr.read()}")
        yield match.group(0), proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    return make_capture(tmp_path_factory.mktemp("serve") / "cap.parquet", serve_rows())


@pytest.fixture(scope="module")
def server(capture) -> Iterator[tuple[str, subprocess.Popen]]:
    with running_server(capture) as srv:
        yield srv


def assert_same_gaps(got: list[float], want: list[float], tolerance: float = TOLERANCE_MS) -> None:
    """The served events keep the captured pacing. ``got``: arrival offsets from before the request
    was sent; ``want``: the captured offsets from the request. No event arrives before its captured
    offset (the server cannot be early: a compressed schedule fails here), and the median of the
    events' lateness, less the smallest (the request's own time), is within ``tolerance``: a
    stretched schedule moves it, a load spike that delays an event or two does not. Nothing is ever
    held back by more than ten times the tolerance."""
    assert len(got) == len(want)
    late = [g - w for g, w in zip(got, want, strict=True)]
    detail = f"arrivals {[round(g, 1) for g in got]} vs captured {want}"
    assert min(late) >= -EARLY_MS, f"an event came early: {detail}"
    spread = sorted(x - min(late) for x in late)
    assert spread[len(spread) // 2] <= tolerance, f"the pacing drifted: {detail}"
    assert spread[-1] <= 10 * tolerance, f"an event was held back: {detail}"


def openai_stream(base: str, question: str, include_usage: bool = True) -> tuple[list, list[float], float]:
    """Chunks, their arrival offsets (ms from the call) and the time to the first chunk."""
    client = openai.OpenAI(base_url=base + "/v1", api_key="not-needed", max_retries=0)
    t0 = time.perf_counter()
    kwargs = {"stream_options": {"include_usage": True}} if include_usage else {}
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": question}],
                                            stream=True, **kwargs)
    chunks, offsets = [], []
    for chunk in stream:
        chunks.append(chunk)
        offsets.append((time.perf_counter() - t0) * 1000)
    return chunks, offsets, offsets[0] if offsets else 0.0


def sse_stream(url: str, body: dict) -> tuple[httpx.Response, list, list[float]]:
    """A browser-style POST: events (with arrival offsets) parsed as they arrive."""
    parser = SSEParser()
    events, offsets = [], []
    t0 = time.perf_counter()
    with httpx.stream("POST", url, json=body, headers={"accept": "text/event-stream"}, timeout=30) as response:
        for text in response.iter_text():
            now = (time.perf_counter() - t0) * 1000
            for ev in parser.feed(text):
                events.append(ev)
                offsets.append(now)
    return response, events, offsets


# ---------------------------------------------------------------- API clients


def test_openai_client_gets_captured_chunks_gaps_and_usage(server):
    base, _ = server
    chunks, offsets, first = openai_stream(base, "Say hi")
    assert [c.choices[0].delta.content if c.choices else None for c in chunks] == ["", "Hi", ",", " there", None, None]
    assert chunks[-1].usage.prompt_tokens == 9 and chunks[-1].usage.total_tokens == 12
    assert chunks[0].id == "chatcmpl-1"
    # [DONE] is consumed by the client: six chunks, captured at 250, 250, 330, 460, 520, 520 ms.
    assert_same_gaps(offsets, [250, 250, 330, 460, 520, 520])
    assert first >= 250 * 0.95  # the slow first token is kept


def test_usage_chunk_only_when_asked(server):
    base, _ = server
    chunks, _, _ = openai_stream(base, "Say hi", include_usage=False)
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hi, there"


def test_non_streamed_answer_is_built_from_a_streamed_capture(server):
    base, _ = server
    client = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
    t0 = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "Say hi"}])
    elapsed = (time.perf_counter() - t0) * 1000
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hi, there"
    assert completion.usage.total_tokens == 12 and completion.choices[0].finish_reason == "stop"
    assert "synthesised" not in raw.headers.get("x-chatwire-match", "")
    assert raw.headers["x-chatwire-flow-id"] == "api-chat"
    assert "built" in raw.headers["x-chatwire-synthesised"]
    assert elapsed >= 520 * 0.95  # the body comes when the captured stream ended


def test_streamed_answer_is_built_from_a_non_streamed_capture(server):
    base, _ = server
    chunks, offsets, first = openai_stream(base, "Answer plainly")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Plain answer."
    assert chunks[-1].usage.total_tokens == 7
    assert first >= 400 * 0.95  # a non-streamed answer existed only at its end


def test_responses_api_stream_and_body(server):
    base, _ = server
    client = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
    # The client builds its event models on first use (hundreds of ms): warm it up, then time.
    list(client.responses.create(model="m", input="Say some greetings", stream=True))
    t0 = time.perf_counter()
    events, offsets = [], []
    for event in client.responses.create(model="m", input="Say some greetings", stream=True):
        events.append(event)
        offsets.append((time.perf_counter() - t0) * 1000)
    assert [e.type for e in events] == [row[1] for row in RESP_EVENTS]
    assert events[-1].response.usage.total_tokens == 7
    assert_same_gaps(offsets, [row[0] for row in RESP_EVENTS])
    response = client.responses.create(model="m", input="Say some greetings")
    assert response.output_text == "Greetings!" and response.usage.output_tokens == 2


def test_responses_request_answered_from_a_chat_capture(server):
    base, _ = server
    client = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
    deltas = [e.delta for e in client.responses.create(model="m", input="Say hi", stream=True)
              if e.type == "response.output_text.delta"]
    assert "".join(deltas) == "Hi, there"


def test_many_clients_at_once_each_keep_the_timing(server):
    base, _ = server
    n = 6
    openai_stream(base, "Say hi")  # the client's models are built on first use: not part of the timing
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        results = list(pool.map(lambda _: openai_stream(base, "Say hi"), range(n)))
    wall = (time.perf_counter() - t0) * 1000
    for chunks, offsets, _ in results:
        assert len(chunks) == 6
        # Six client threads share one interpreter lock here: their own parsing adds a little noise.
        assert_same_gaps(offsets, [250, 250, 330, 460, 520, 520], tolerance=2 * TOLERANCE_MS)
    assert wall < 520 * 3  # served side by side, not one after the other (6 × 520 ms)


def test_twenty_browser_streams_at_once_keep_their_gaps(server):
    import asyncio

    base, _ = server
    body = {"conversation_id": "conv-1", "parent_message_id": "msg-a1", "messages": []}

    async def one(client: httpx.AsyncClient) -> list[float]:
        parser, offsets = SSEParser(), []
        t0 = time.perf_counter()
        async with client.stream("POST", base + "/backend-api/f/conversation", json=body,
                                 headers={"accept": "text/event-stream"}) as response:
            async for text in response.aiter_text():
                now = (time.perf_counter() - t0) * 1000
                offsets += [now] * len(parser.feed(text))
        return offsets

    async def main() -> list[list[float]]:
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            return await asyncio.gather(*(one(client) for _ in range(20)))

    for offsets in asyncio.run(main()):
        assert_same_gaps(offsets, [row[0] for row in V1_EVENTS])


def test_models_lists_the_captured_models(server):
    base, _ = server
    ids = [m.id for m in openai.OpenAI(base_url=base + "/v1", api_key="x").models.list()]
    assert {"gpt-4o-mini", "gpt-4o", "text-davinci-002-render-sha"} <= set(ids)


# ---------------------------------------------------------------- browser-style clients


def test_browser_gets_the_v1_stream_with_its_headers_and_gaps(server):
    base, _ = server
    body = {"action": "next", "conversation_id": "conv-1", "parent_message_id": "msg-a1", "model": "auto",
            "messages": [{"id": "x", "author": {"role": "user"}, "content": {"content_type": "text", "parts": ["whatever"]}}]}
    response, events, offsets = sse_stream(base + "/backend-api/f/conversation", body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cf-ray"] == "8f00aa11bb22cc33-AMS"
    assert response.headers["x-request-id"] == "req-123"
    assert "content-encoding" not in response.headers and "set-cookie" not in response.headers
    assert response.headers["x-chatwire-match"] == "by conversation_id + parent_message_id"
    assert response.headers["x-chatwire-timing"] == "captured"
    assert [(e.event, e.data) for e in events] == [(row[1], row[2]) for row in V1_EVENTS]
    assert '"token": "[REDACTED]"' in events[1].data  # redacted stays redacted
    assert_same_gaps(offsets, [row[0] for row in V1_EVENTS])


def test_browser_gets_the_legacy_stream_matched_by_user_text(server):
    base, _ = server
    body = {"action": "next", "parent_message_id": "some-other-id",
            "messages": [{"author": {"role": "user"}, "content": {"content_type": "text", "parts": ["  Say   hello "]}}]}
    response, events, offsets = sse_stream(base + "/backend-api/conversation", body)
    assert response.headers["x-chatwire-match"] == "by user text"
    assert response.headers["cf-ray"] == "7d00aa11bb22cc33-SIN"
    assert [e.data for e in events] == [row[2] for row in LEGACY_EVENTS]
    assert events[-1].data == "[DONE]"
    assert_same_gaps(offsets, [row[0] for row in LEGACY_EVENTS])


def test_websocket_answer_is_served_after_its_post_as_sse(server):
    base, _ = server
    body = {"conversation_id": "conv-w", "parent_message_id": "p-w0", "messages": []}
    response, events, offsets = sse_stream(base + "/backend-api/conversation", body)
    assert response.headers["x-chatwire-flow-id"] == "web-ws"
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "WebSocket wsflow#0" in response.headers["x-chatwire-note"]
    assert [e.data for e in events] == [row[2] for row in WS_EVENTS]
    assert_same_gaps(offsets, [row[0] + 200 for row in WS_EVENTS])
    assert offsets[0] >= 300 * 0.95  # 0.2 s to the socket's answer start + 0.1 s to its first event


def test_har_turn_is_spread_between_ttfb_and_total_and_says_so(server):
    base, _ = server
    body = {"messages": [{"author": {"role": "user"}, "content": {"parts": ["from a har"]}}]}
    response, events, offsets = sse_stream(base + "/backend-api/conversation", body)
    assert response.headers["x-chatwire-timing"].startswith("spread")
    assert "ttfb 100 ms" in response.headers["x-chatwire-timing"]
    assert len(events) == 4
    assert_same_gaps(offsets, spread_offsets(4, 100.0, 700.0))


def test_conversation_mapping_is_rebuilt_from_the_capture(server):
    base, _ = server
    data = httpx.get(base + "/backend-api/conversation/conv-1", timeout=10).json()
    assert data["conversation_id"] == "conv-1"
    mapping = data["mapping"]
    assert mapping["msg-u2"]["parent"] == "msg-a1" and mapping["msg-a1"]["children"] == ["msg-u2"]
    assert mapping["msg-a2"]["message"]["content"]["parts"] == ["Bonjour !"]
    root = mapping[mapping["msg-u1"]["parent"]]
    assert root["message"] is None and root["children"] == ["msg-u1"]
    assert data["current_node"] == "msg-a2"
    missing = httpx.get(base + "/backend-api/conversation/nope-nope-nope", timeout=10)
    assert missing.status_code == 404 and "not in the capture" in missing.json()["error"]["message"]


def test_server_logs_one_line_per_request(capture):
    with running_server(capture, "--speed", "0") as (base, proc):
        httpx.post(base + "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "Say hi"}],
                                                        "stream": True}, timeout=10)
        httpx.get(base + "/v1/models", timeout=10)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    lines = [line for line in err.splitlines() if " -> " in line]  # the usage chunk was not asked for: 6 events
    assert len(lines) == 2
    assert "POST /v1/chat/completions -> 200 api-chat (by last user message), 6 events" in lines[0]
    assert "GET /v1/models -> 200" in lines[1]


# ---------------------------------------------------------------- matching order, 404, --loop, --speed


@pytest.fixture(scope="module")
def small_capture(tmp_path_factory) -> Path:
    rows = serve_rows()
    keep = {"web-legacy"}
    small = {name: [r for r in table if r.get("flow_id") in keep] for name, table in rows.items()}
    return make_capture(tmp_path_factory.mktemp("small") / "cap.parquet", small)


def _post_unknown(base: str) -> tuple[httpx.Response, list, list[float]]:
    body = {"messages": [{"author": {"role": "user"}, "content": {"parts": ["never asked"]}}]}
    return sse_stream(base + "/backend-api/conversation", body)


def test_next_unserved_then_404_that_says_why_and_speed_halves_the_gaps(small_capture):
    with running_server(small_capture, "--speed", "2") as (base, _):
        response, events, offsets = _post_unknown(base)
        assert response.headers["x-chatwire-match"] == "next in capture order"
        assert len(events) == 4
        assert_same_gaps(offsets, [row[0] / 2 for row in LEGACY_EVENTS])
        second = httpx.post(base + "/backend-api/conversation", json={"messages": []}, timeout=10)
        assert second.status_code == 404
        message = second.json()["error"]["message"]
        assert "all 1 have been served" in message and "--loop" in message


def test_loop_starts_over(small_capture):
    with running_server(small_capture, "--speed", "0", "--loop") as (base, _):
        first = _post_unknown(base)
        again = _post_unknown(base)
        assert [e.data for e in first[1]] == [e.data for e in again[1]]
        assert again[0].headers["x-chatwire-match"].startswith("next in capture order (loop")


def test_serve_rejects_a_missing_capture(tmp_path):
    result = subprocess.run([*analyze_cmd(), "serve", str(tmp_path / "nope"), "--port", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "does not exist" in result.stderr


# ---------------------------------------------------------------- pure parts


def test_encode_event_keeps_multiline_data_and_event_name():
    raw = encode_event("delta", "line one\nline two")
    assert raw == b"event: delta\ndata: line one\ndata: line two\n\n"
    (event,) = parse_sse(raw.decode())
    assert event.event == "delta" and event.data == "line one\nline two"


def test_matcher_prefers_ids_then_text_then_unserved_in_order():
    def t(i: int, cid: str | None, pid: str | None, text: str) -> WebTurn:
        return WebTurn(flow_id=f"f{i}", order=i, status_code=200, headers={}, headers_ms=None, end_ms=None,
                       events=[], timing="captured", conversation_id=cid, parent_message_id=pid, user_text=text)

    turns = [t(0, "c", "p0", "hi"), t(1, "c", "p1", "again"), t(2, "c", "p1", "again (regenerated)")]
    m = Matcher(turns)
    assert m.match(web_rules("c", "p1", "x"))[0].flow_id == "f1"
    assert m.match(web_rules("c", "p1", "x"))[0].flow_id == "f2"  # same parent: the next unserved sibling
    assert m.match(web_rules(None, None, "HI "))[0].flow_id == "f0"
    assert m.match(web_rules(None, None, "nothing")) == (None, m.match(web_rules(None, None, "nothing"))[1])
    assert "--loop" in m.match(web_rules(None, None, "nothing"))[1]


def test_api_matching_prefers_the_endpoint_then_the_stream_mode_asked_for():
    def c(i: int, endpoint: str, stream: bool) -> ApiCall:
        return ApiCall(flow_id=f"c{i}", order=i, status_code=200, headers={}, headers_ms=None, end_ms=None,
                       events=[], timing="captured", endpoint=endpoint, stream=stream, last_user_text="q")

    calls = [c(0, "/v1/responses", True), c(1, "/v1/chat/completions", False), c(2, "/v1/chat/completions", True)]
    m = Matcher(calls)

    def score(endpoint: str, stream: bool):
        return lambda x: 2 * (x.endpoint == endpoint) + (x.stream == stream)

    assert m.match(api_rules("q"), score("/v1/chat/completions", True))[0].flow_id == "c2"
    assert m.match(api_rules("q"), score("/v1/chat/completions", True))[0].flow_id == "c1"  # unserved first
    assert m.match(api_rules(" q "), score("/v1/chat/completions", True))[0].flow_id == "c0"
    assert m.match(api_rules("other"), score("/v1/responses", True))[0] is None


def test_usage_chunk_added_or_dropped_as_the_request_asks():
    answer = Answer("chatcmpl-x", "m", 0, (TextPiece(10, "a"),), 20, prompt_tokens=1, completion_tokens=1)
    events = [ServedEvent(10, None, json.dumps({"choices": [{"delta": {"content": "a"}}]})),
              ServedEvent(20, None, "[DONE]")]
    with_usage = adapt_chat_stream(events, answer, include_usage=True)
    assert [is_usage_chunk(e.data) for e in with_usage] == [False, True, False]
    assert with_usage[1].offset_ms == 10
    assert adapt_chat_stream(with_usage, answer, include_usage=False) == events


def test_spread_offsets_cover_ttfb_to_total():
    assert spread_offsets(3, 100, 300) == [100, 200, 300]
    assert spread_offsets(1, 50, 80) == [50]
    assert spread_offsets(2, None, None) == [0, 0]




# ---------------------------------------------------------------- round trip through the addon

ADDON = Path(__file__).resolve().parent.parent / "addons" / "chatgpt_capture.py"


def _served_flow_id(headers_json: str | None) -> str | None:
    for name, value in json.loads(headers_json or "[]"):
        if name.lower() == "x-chatwire-flow-id":
            return value
    return None


@pytest.mark.slow
def test_round_trip_capture_serve_capture_keeps_events_and_gaps(origin_plain, mitmdump_factory, tmp_path):
    """A scripted session captured by the addon, served, and captured again: same events, same gaps."""
    from analyzer.store import load_capture
    from tests.origin.session import run_session

    live = tmp_path / "live.parquet"
    proxy = mitmdump_factory(script=ADDON, options={"capture_path": str(live), "capture_flush_ms": 200})
    run_session(origin_plain.url, proxy=proxy.proxy_url, verify=False, formats=("legacy", "v1"),
                delays=(150, 40), n_turns=2, analytics=False, api=True)
    assert proxy.stop() == 0
    first = load_capture(live)
    turns = first.table("conversation_turns")
    turns = turns[turns["n_events"].fillna(0) > 0]
    calls = first.table("api_calls")
    assert len(turns) >= 4 and set(turns["stream_format"]) >= {"legacy", "v1"}

    again = tmp_path / "again.parquet"
    with running_server(live) as (base, _):
        proxy2 = mitmdump_factory(script=ADDON, options={"capture_path": str(again), "capture_flush_ms": 200})
        with httpx.Client(proxy=proxy2.proxy_url, timeout=30) as client:
            for row in turns.sort_values("started_at").to_dict("records"):
                body = {"action": row["action"], "conversation_id": row["conversation_id"],
                        "parent_message_id": row["parent_message_id"],
                        "messages": [{"author": {"role": "user"},
                                      "content": {"content_type": "text", "parts": [row["user_text"] or ""]}}]}
                with client.stream("POST", base + row["path"], json=body,
                                   headers={"accept": "text/event-stream"}) as r:
                    assert r.status_code == 200 and r.headers["x-chatwire-flow-id"] == row["flow_id"]
                    r.read()
            for row in calls[calls["stream"]].to_dict("records"):
                request = json.loads(row["request_json"])
                with client.stream("POST", base + row["endpoint"], json=request) as r:
                    assert r.headers["x-chatwire-flow-id"] == row["flow_id"]
                    r.read()
        assert proxy2.stop() == 0

    second = load_capture(again)
    served_of = {f: _served_flow_id(h) for f, h in zip(second.table("flows")["flow_id"],
                                                       second.table("flows")["response_headers"], strict=True)}
    ev1, ev2 = first.table("stream_events"), second.table("stream_events")
    compared = 0
    for new_flow, old_flow in served_of.items():
        if old_flow is None:
            continue
        a = ev1[ev1["flow_id"] == old_flow].sort_values("seq")
        b = ev2[ev2["flow_id"] == new_flow].sort_values("seq")
        assert list(b["event"].fillna("")) == list(a["event"].fillna("")), old_flow
        assert list(b["data"]) == list(a["data"]), old_flow
        assert list(b["text"].fillna("")) == list(a["text"].fillna("")), old_flow
        # served (offsets from the proxy's request start) against captured: the same pacing
        assert_same_gaps(list(b["offset_ms"]), list(a["offset_ms"]))
        compared += 1
    assert compared == len(turns) + int(calls["stream"].sum())
