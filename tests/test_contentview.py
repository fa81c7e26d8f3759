"""The ``chatwire`` content view, through mitmproxy's own content-view API and a real mitmdump."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mitmproxy import contentviews, io, websocket
from mitmproxy.test import taddons, tflow

from analyzer.capture import contentview
from tests.flows_factory import make_flow

ROOT = Path(__file__).resolve().parent.parent
START = 1_700_000_000.0


def sse(data, event: str | None = None) -> str:
    text = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {event}\n" if event else "") + f"data: {text}\n\n"


V1_BODY = "".join([
    sse('"v1"', "delta_encoding"),
    sse({"p": "", "o": "add", "c": 0, "v": {"conversation_id": "c1", "message": {
        "id": "m1", "author": {"role": "assistant"}, "content": {"content_type": "text", "parts": [""]},
        "status": "in_progress", "metadata": {"model_slug": "gpt-5-test"}}}}, "delta"),
    sse({"p": "/message/content/parts/0", "o": "append", "v": "Hel"}, "delta"),
    sse({"v": "lo \x1b[31mred"}, "delta"),  # an escape sequence in the answer must stay inert
    sse("[DONE]"),
])
CHAT_BODY = "".join([
    sse({"id": "cc1", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Par"}}]}),
    sse({"id": "cc1", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
         "choices": [{"index": 0, "delta": {"content": "is"}, "finish_reason": "stop"}]}),
    sse({"id": "cc1", "object": "chat.completion.chunk", "choices": [],
         "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}}),
    sse("[DONE]"),
])
RESPONSES_BODY = "".join([
    sse({"type": "response.created", "response": {"id": "r1", "model": "gpt-5-codex", "status": "in_progress"}},
        "response.created"),
    sse({"type": "response.output_text.delta", "delta": "ls -la"}, "response.output_text.delta"),
    sse({"type": "response.completed", "response": {"id": "r1", "model": "gpt-5-codex", "status": "completed",
                                                    "usage": {"input_tokens": 5, "output_tokens": 3}}},
        "response.completed"),
])
LEGACY_BODY = "".join([
    sse({"conversation_id": "c2", "message": {"id": "a1", "author": {"role": "assistant"},
         "content": {"content_type": "text", "parts": ["Hi"]}, "status": "in_progress",
         "metadata": {"model_slug": "text-davinci-002-render-sha"}}}),
    sse({"conversation_id": "c2", "message": {"id": "a1", "author": {"role": "assistant"},
         "content": {"content_type": "text", "parts": ["Hi there"]}, "status": "finished_successfully",
         "metadata": {"model_slug": "text-davinci-002-render-sha"}}}),
    sse("[DONE]"),
])


def stream_flow(path: str, body: str, chunk_times: list[float], host: str = "chatgpt.com"):
    return make_flow("POST", path, body={"model": "x"}, host=host, response_body=body,
                     content_type="text/event-stream; charset=utf-8", chunk_times=chunk_times, start=START)


def auto_view(flow, message):
    """What mitmproxy itself shows for a message when no view is chosen (view_name "auto")."""
    with taddons.context():
        contentview.register()
        return contentviews.prettify_message(message, flow)


def event_lines(text: str) -> list[str]:
    return text.split("── events ──\n", 1)[1].splitlines()


def test_v1_conversation_stream_answer_then_events_with_chunk_offsets():
    # 5 events, one per chunk; the chunk that completes an event gives its offset from the request.
    flow = stream_flow("/backend-api/f/conversation", V1_BODY, [0.1])
    times = [0.100, 0.250, 0.400, 0.650, 0.700]
    events = [part + "\n\n" for part in V1_BODY.split("\n\n")[:-1]]
    flow.metadata["chatwire"]["chunks"] = [[START + t, len(e.encode())] for t, e in zip(times, events, strict=True)]
    result = auto_view(flow, flow.response)
    assert result.view_name == "chatwire"
    text = result.text
    assert "\x1b" not in text
    assert "── answer ──\nHello \\x1b[31mred\n" in text
    assert "model gpt-5-test" in text and "5 events" in text and "format v1" in text
    assert "TTFT 400.0 ms" in text  # the first event that added text ("Hel") completed at +400 ms
    lines = event_lines(text)
    assert [line.split()[0] for line in lines] == ["+100.0", "+250.0", "+400.0", "+650.0", "+700.0"]
    assert lines[2].endswith("'Hel'") and lines[4].split()[-1] == "done"


def test_v1_stream_that_hands_off_to_a_websocket():
    head = V1_BODY.split("\n\n")[:3]  # delta_encoding, the add, the first append
    body = "\n\n".join(head) + "\n\n" + sse({
        "type": "stream_handoff", "conversation_id": "c1", "turn_exchange_id": "te1",
        "options": [{"type": "subscribe_ws_topic", "topic_id": "t1", "url": "wss://ws.chatgpt.com/celsius"}]})
    flow = stream_flow("/backend-api/f/conversation", body, [0.1, 0.2])
    text = auto_view(flow, flow.response).text
    assert "handed off to a WebSocket" in text and "── answer ──\nHel\n" in text
    assert event_lines(text)[-1].split()[-1] == "stream_handoff"


def test_legacy_stream_shows_the_final_snapshot():
    flow = stream_flow("/backend-api/conversation", LEGACY_BODY, [0.2, 0.3])
    text = auto_view(flow, flow.response).text
    assert "── answer ──\nHi there\n" in text and "format legacy" in text
    assert "model text-davinci-002-render-sha" in text


def test_chat_completions_and_codex_responses_streams():
    flow = stream_flow("/v1/chat/completions", CHAT_BODY, [0.5], host="api.openai.com")
    text = auto_view(flow, flow.response).text
    assert text.startswith("chatwire · OpenAI API chat.completions")
    assert "── answer ──\nParis\n" in text
    assert "model gpt-4o-mini" in text and "7 prompt + 2 completion tokens" in text
    assert "TTFT 500.0 ms" in text  # one chunk: every event arrived with it

    flow = stream_flow("/backend-api/codex/responses", RESPONSES_BODY, [0.1, 0.2])
    text = auto_view(flow, flow.response).text
    assert text.startswith("chatwire · Codex responses") and "── answer ──\nls -la\n" in text
    kinds = [line.split()[2] for line in event_lines(text)]
    assert kinds == ["response.created", "response.output_text.delta", "response.completed"]


def test_a_flow_file_without_chunk_timing_still_renders():
    flow = stream_flow("/backend-api/conversation", LEGACY_BODY, [0.2])
    del flow.metadata["chatwire"]
    text = auto_view(flow, flow.response).text
    assert "no per-chunk timing" in text and all(line.split()[0] == "—" for line in event_lines(text))


def test_stays_out_of_the_way_for_other_flows():
    meta = contentviews.Metadata
    plain = make_flow("GET", "/backend-api/models", response_body=b'{"models": []}')
    sse_elsewhere = make_flow("GET", "/events", response_body=b"data: {}\n\n", content_type="text/event-stream")
    turn = stream_flow("/backend-api/conversation", LEGACY_BODY, [0.2])
    for flow, message in ((plain, plain.response), (sse_elsewhere, sse_elsewhere.response), (turn, turn.request)):
        assert contentview.view.render_priority(b"", meta(flow=flow, http_message=message)) < 0
        assert auto_view(flow, message).view_name != "chatwire"
    assert contentview.view.render_priority(b"", meta(flow=turn, http_message=turn.response)) > 1


def celsius_frame(events: str) -> bytes:
    return json.dumps({"type": "message", "topic_id": "t1", "payload": {
        "type": "conversation-turn-stream", "payload": {"type": "stream-item", "encoded_item": events}}}).encode()


def test_websocket_frame_with_stream_items():
    flow = tflow.twebsocketflow(messages=False)
    flow.websocket.messages = [
        websocket.WebSocketMessage(1, True, b'{"type":"subscribe"}', timestamp=START),
        websocket.WebSocketMessage(1, False, celsius_frame(V1_BODY), timestamp=START + 0.320),
        websocket.WebSocketMessage(1, False, b'{"type":"ping"}', timestamp=START + 0.5),
    ]
    item = auto_view(flow, flow.websocket.messages[1])
    assert item.view_name == "chatwire"
    assert "── answer ──\nHello \\x1b[31mred\n" in item.text
    assert all(line.split()[0] == "+320.0" for line in event_lines(item.text))
    assert auto_view(flow, flow.websocket.messages[2]).view_name != "chatwire"
    assert auto_view(flow, flow.websocket.messages[0]).view_name != "chatwire"


@pytest.mark.timeout(120)
def test_mitmdump_reading_a_flow_file_shows_the_assembled_answer(tmp_path: Path):
    flow = stream_flow("/backend-api/f/conversation", V1_BODY, [0.1, 0.2, 0.3])
    flow.request.host = "chatgpt.com"
    path = tmp_path / "flows.mitm"
    with path.open("wb") as f:
        io.FlowWriter(f).add(flow)
    mitmdump = Path(sys.executable).with_name("mitmdump")
    started = time.time()
    proc = subprocess.run(
        [str(mitmdump), "-nr", str(path), "--flow-detail", "4", "-s", str(ROOT / "addons/chatgpt_capture.py"),
         "--set", f"capture_path={tmp_path / 'cap.parquet'}", "--set", f"confdir={tmp_path / 'conf'}"],
        capture_output=True, timeout=100, cwd=tmp_path,
    )
    out = proc.stdout.decode("utf-8", "replace")
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert "chatwire" in out and "Hello \\x1b[31mred" in out, out[-3000:]
    assert "\x1b[31m" not in out
    # Offsets from the flow's recorded chunks (+100, +200, +300 ms): the first event is complete in
    # the first chunk, [DONE] only with the last.
    assert "+100.0 ms  delta_encoding" in out and "+300.0 ms  done" in out, out[-3000:]
    assert "per-chunk timing" in out and "model gpt-5-test" in out
    assert time.time() - started < 100
