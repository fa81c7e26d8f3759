"""Extractors on real mitmproxy flows: every kind, errors, redaction."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import pytest
from mitmproxy import websocket

from analyzer.extract import extract_flow
from analyzer.recognise import recognise
from analyzer.redact import PLACEHOLDER, redact_rows, redact_string
from tests.flows_factory import make_flow

STREAMS = Path(__file__).parent / "fixtures" / "streams"
SECRET_JWT = "eyJhbGciOiJFUzI1NiJ9.eyJjb25kdWl0IjoidGVzdCJ9.c2lnbmF0dXJlLWZvci10ZXN0cw"


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [
        ("POST", "/backend-api/conversation", "conversation"),
        ("POST", "/backend-anon/conversation", "conversation"),
        ("POST", "/backend-api/f/conversation?x=1", "conversation"),
        ("POST", "/backend-anon/f/conversation", "conversation"),
        ("POST", "/backend-api/f/conversation/resume", "conversation"),
        ("POST", "/backend-api/f/conversation/prepare", None),
        ("GET", "/backend-api/conversation/6974e0a3-b684-8321-a73a-bf4e7b6dfafe", "conversation_read"),
        ("GET", "/backend-api/conversations?offset=0&limit=28", None),
        ("POST", "/backend-api/lat/r", "latency_beacon"),
        ("POST", "/ces/v1/b", "segment"),
        ("POST", "/ces/v1/t", "segment"),
        ("POST", "/ces/statsc/flush", "statsc"),  # counters and histograms (guide 6f)
        ("POST", "/ces/v1/telemetry/intake", None),
        ("POST", "/v1/rgstr?k=client-x&gz=1", "statsig"),
        ("POST", "/v1/initialize", None),
        ("POST", "/v1/chat/completions", "api"),
        ("POST", "/openai/deployments/gpt4/chat/completions?api-version=2024-02-01", "api"),
        ("POST", "/v1/responses", "api"),
        ("GET", "/", None),
    ],
)
def test_recognise(method, path, kind):
    assert recognise(method, path) == kind


def conversation_flow(fixture: str, **kw):
    body = (STREAMS / fixture).read_bytes()
    request = {"action": "next", "model": "auto", "parent_message_id": "client-created-root",
               "arkose_token": "arkose-secret-value", "messages": [
                   {"id": "user-1", "author": {"role": "user"}, "content": {"content_type": "text", "parts": ["name three rivers"]}}]}
    return make_flow("POST", "/backend-api/f/conversation", body=request, response_body=body,
                     content_type="text/event-stream; charset=utf-8",
                     request_headers={"authorization": f"Bearer {SECRET_JWT}", "cookie": "__Secure-next-auth.session-token=abcdef123456; oai-did=x",
                                      "openai-sentinel-proof-token": "gAAAAproof"},
                     response_headers={"cf-ray": "847dbf366a92408c-SIN"}, **kw)


def arrival_of(flow, marker: bytes) -> float:
    """Seconds after the request start at which the chunk holding the end of ``marker`` arrived: byte
    arithmetic on the body and the recorded chunk sizes, independent of the SSE parser."""
    raw = flow.response.raw_content
    end = raw.index(marker) + len(marker)
    pos = 0
    for at, size in flow.metadata["chatwire"]["chunks"]:
        pos += size
        if pos >= end:
            return at - flow.request.timestamp_start
    raise AssertionError("marker past the last chunk")


def test_v1_turn_with_timing_and_redaction():
    flow = conversation_flow("v1_answer.sse", chunk_times=[0.1 * (i + 1) for i in range(10)], start=1000.0)
    rows = extract_flow(flow, source="proxy")
    turn = rows["conversation_turns"][0]
    assert turn["stream_format"] == "v1" and turn["status"] == "finished_successfully"
    assert turn["assistant_text"] == "Nile, Amazon and Danube." and turn["user_text"] == "name three rivers"
    assert turn["model_slug"] == "gpt-5-2" and turn["server_model_slug"] == "i-mini" and turn["finish_type"] == "stop"
    assert turn["cf_ray"] == "847dbf366a92408c-SIN" and turn["n_text_events"] == 4 and turn["title"] == "Three rivers"
    events = rows["stream_events"]
    assert len(events) == turn["n_events"] == 15 and events[-1]["type"] == "done" and events[-1]["data"] == "[DONE]"
    text_events = [e for e in events if e["text"]]
    # Hand-worked: the first text event ("Nile") is complete at the blank line after it; the body was cut
    # into 10 chunks arriving at 0.1, 0.2, … 1.0 s, so TTFT is the arrival of the chunk holding that byte.
    assert turn["ttft_ms"] == pytest.approx(1000 * arrival_of(flow, b'"append", "v": "Nile"}\n\n'), abs=1e-6)
    assert turn["ttft_ms"] == pytest.approx(800.0, abs=1e-6)  # byte 2,2xx of 2,823: the 8th chunk
    assert text_events[0]["text"] == "Nile" and turn["ttft_ms"] < turn["e2e_ms"]
    assert turn["e2e_ms"] == pytest.approx(1000.0, abs=1e-6)  # the last chunk, 1.0 s after the request
    assert all(e["at"] is not None for e in events)
    # every written string is free of the secrets
    blob = json.dumps(rows, default=str)
    for secret in (SECRET_JWT, "arkose-secret-value", "abcdef123456", "gAAAAproof"):
        assert secret not in blob
    assert "__Secure-next-auth.session-token=" + PLACEHOLDER in rows["flows"][0]["request_headers"]
    # messages: request sighting plus stream sightings, parents inferred in stream order
    by = {(m["message_id"], m["source"]): m for m in rows["messages"]}
    assert by[("asst-1", "stream")]["parent_id"] == "user-1"
    assert by[("user-1", "request")]["parent_id"] == "client-created-root"
    assert by[("sys-1", "stream")]["hidden"] is True


def test_legacy_turn_and_untimed_flow():
    flow = conversation_flow("legacy_answer.sse")
    rows = extract_flow(flow, source="flowfile")
    turn = rows["conversation_turns"][0]
    assert turn["stream_format"] == "legacy" and turn["assistant_text"] == "Hello! It is nice to meet you."
    assert turn["n_text_events"] == 4 and turn["ttft_ms"] is None  # no per-chunk record: no invented times
    assert all(e["at"] is None for e in rows["stream_events"])


def test_truncated_stream_is_kept_with_an_error():
    body = (STREAMS / "v1_answer.sse").read_bytes()
    flow = conversation_flow("v1_answer.sse")
    cut = body.index(b"Amazon")  # mid-answer: the assistant message has begun, not finished
    flow.response.raw_content = body[:cut]
    rows = extract_flow(flow, source="proxy")
    turn = rows["conversation_turns"][0]
    assert turn["status"] == "in_progress" and "without [DONE]" in turn["error"]
    assert turn["assistant_text"] == "Nile"
    flow.response.raw_content = body[: body.index(b"asst-1")]  # before any answer
    turn = extract_flow(flow, source="proxy")["conversation_turns"][0]
    assert turn["status"] == "incomplete" and turn["assistant_message_id"] is None


@pytest.mark.parametrize("garbage", [b"\x00\xff\xfe" * 1000, b"{not json", b""])
def test_garbage_bodies_become_error_rows(garbage):
    flow = make_flow("POST", "/backend-api/lat/r", body=garbage)
    rows = extract_flow(flow, source="proxy")
    assert rows["flows"] and rows["errors"] and rows["errors"][0]["stage"] == "request"
    assert not rows["latency_beacons"]


def test_bad_gzip_stream_and_huge_body():
    flow = conversation_flow("v1_answer.sse")
    flow.response.headers["content-encoding"] = "gzip"
    rows = extract_flow(flow, source="proxy")
    assert any("gzip" in e["error"] or "zlib" in e["error"] for e in rows["errors"])
    big = make_flow("POST", "/backend-api/lat/r", body=b"{" + b" " * (65 * 1024 * 1024) + b"}")
    rows = extract_flow(big, source="proxy")
    assert "too large" in rows["errors"][0]["error"]


def test_beacon_keeps_unknown_fields():
    beacon = {"server_request_id": "9b64e14fadf27496-MIA", "model": "gpt-5-2", "preflight_time_ms": 14.5,
              "search_source": "composer_auto", "count_tokens": 49, "ts_first_token_ms": 847.5,
              "ts_total_request_ms": 3890.1}
    rows = extract_flow(make_flow("POST", "/backend-api/lat/r", body=beacon), source="proxy")
    row = rows["latency_beacons"][0]
    assert row["count_tokens"] == 49.0 and row["ts_first_token_ms"] == 847.5
    assert json.loads(row["extra"]) == {"search_source": "composer_auto"}
    assert row["ts_p99_token_without_first_ms"] is None


def test_segment_batch_exploded():
    batch = {"batch": [
        {"type": "track", "event": "Message Sent", "userId": "user-abc", "anonymousId": "anon-1", "messageId": "m1",
         "timestamp": "2026-01-24T15:09:22.839Z", "properties": {"model": "auto"},
         "context": {"page": {"path": "/c/6974e0a3-b684-8321-a73a-bf4e7b6dfafe", "url": "https://chatgpt.com/c/6974e0a3-b684-8321-a73a-bf4e7b6dfafe"}}},
        {"type": "page", "name": "Chat", "anonymousId": "anon-1", "messageId": "m2", "timestamp": "2026-01-24T15:09:23Z",
         "context": {"page": {"path": "/"}}},
    ], "sentAt": "2026-01-24T15:09:24Z", "writeKey": "wk"}
    rows = extract_flow(make_flow("POST", "/ces/v1/b", body=batch, content_type="text/plain"), source="proxy")
    events = rows["segment_events"]
    assert [e["event"] for e in events] == ["Message Sent", "Chat"] and [e["type"] for e in events] == ["track", "page"]
    assert events[0]["conversation_id"] == "6974e0a3-b684-8321-a73a-bf4e7b6dfafe" and events[1]["conversation_id"] is None
    assert events[0]["user_id"] == "user-abc" and events[0]["endpoint"] == "b" and events[0]["host"] == "chatgpt.com"
    assert events[0]["timestamp"] == pytest.approx(1769267362.839)


STATSIG_BODY = {"events": [{"eventName": "chatgpt_prompt_sent", "user": {"userID": "user-abc", "customIDs": {"stableID": "st-1", "workspaceID": "ws-9"}},
                            "value": None, "metadata": {"k": "v"}, "time": 1769267362839,
                            "statsigMetadata": {"currentPage": "https://chatgpt.com/c/6974e0a3-b684-8321-a73a-bf4e7b6dfafe"}}],
                "statsigMetadata": {"sdkType": "js-client", "sdkVersion": "3.1.0", "stableID": "st-1"}}


@pytest.mark.parametrize("variant", ["plain", "gz", "se", "gz+se"])
def test_statsig_encodings(variant):
    raw = json.dumps(STATSIG_BODY).encode()
    query = "?k=client-key&st=js-client&sv=3.1.0&t=1&sid=s&ec=1"
    if "gz" in variant:
        raw = gzip.compress(raw)
        query += "&gz=1"
    if "se" in variant:
        raw = base64.b64encode(raw)[::-1]
        query += "&se=1"
    rows = extract_flow(make_flow("POST", "/v1/rgstr" + query, body=raw, host="ab.chatgpt.com",
                                  content_type="text/plain"), source="proxy")
    assert not rows["errors"], rows["errors"]
    event = rows["statsig_events"][0]
    assert event["event_name"] == "chatgpt_prompt_sent" and event["stable_id"] == "st-1"
    assert event["conversation_id"] == "6974e0a3-b684-8321-a73a-bf4e7b6dfafe" and event["host"] == "ab.chatgpt.com"
    assert event["sdk_type"] == "js-client" and json.loads(event["custom_ids"])["workspaceID"] == "ws-9"


def test_api_stream_and_json():
    chunks = [
        {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o-2024", "system_fingerprint": "fp_1",
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o-2024", "choices": [{"index": 0, "delta": {"content": "Hel"}}]},
        {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o-2024", "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]},
        {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o-2024", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}},
    ]
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    request = {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True},
               "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}
    flow = make_flow("POST", "/v1/chat/completions", body=request, host="api.openai.com", response_body=body,
                     content_type="text/event-stream", request_headers={"authorization": "Bearer sk-proj-abcdefghijklmnopqrstuvwxyz"},
                     chunk_times=[0.2, 0.3, 0.4, 0.5, 0.6], start=50.0)
    rows = extract_flow(flow, source="proxy")
    call = rows["api_calls"][0]
    assert call["response_text"] == "Hello" and call["n_text_events"] == 2 and call["total_tokens"] == 11
    assert call["model"] == "gpt-4o-2024" and call["finish_reason"] == "stop" and call["last_user_text"] == "hi"
    events = rows["stream_events"]
    first_text = next(e for e in events if e["text"])
    # Hand-worked: "Hel" is the second event; five equal chunks at 0.2 … 0.6 s after the request start
    assert first_text["text"] == "Hel"
    assert call["ttft_ms"] == pytest.approx(1000 * arrival_of(flow, b'"Hel"}}]}\n\n'), abs=1e-6)
    assert call["e2e_ms"] == pytest.approx(600.0)
    assert events[-1]["type"] == "done" and events[-2]["type"] == "usage"
    assert json.loads(call["request_json"])["messages"][1]["content"] == "hi"
    assert "sk-proj-abcdefghijklmnopqrstuvwxyz" not in json.dumps(rows)

    answer = {"id": "resp_1", "object": "response", "model": "gpt-4.1", "status": "completed",
              "output": [{"type": "message", "content": [{"type": "output_text", "text": "Yes."}]}],
              "usage": {"input_tokens": 4, "output_tokens": 2, "total_tokens": 6}}
    flow = make_flow("POST", "/v1/responses", body={"model": "gpt-4.1", "input": "ok?"}, response_body=json.dumps(answer))
    call = extract_flow(flow, source="proxy")["api_calls"][0]
    assert call["response_text"] == "Yes." and call["prompt_tokens"] == 4 and call["finish_reason"] == "completed"
    assert call["stream"] is False and call["last_user_text"] == "ok?"


def test_conversation_read_mapping():
    mapping = {
        "root": {"id": "root", "message": None, "parent": None, "children": ["u"]},
        "u": {"id": "u", "message": {"id": "u", "author": {"role": "user"}, "content": {"content_type": "text", "parts": ["q"]}}, "parent": "root", "children": ["a1", "a2"]},
        "a1": {"id": "a1", "message": {"id": "a1", "author": {"role": "assistant"}, "content": {"content_type": "text", "parts": ["x"]}, "metadata": {"model_slug": "gpt-4"}}, "parent": "u", "children": []},
        "a2": {"id": "a2", "message": {"id": "a2", "author": {"role": "assistant"}, "content": {"content_type": "text", "parts": ["y"]}}, "parent": "u", "children": []},
    }
    body = {"title": "T", "create_time": 1700000000.0, "update_time": 1700000100.0, "mapping": mapping, "current_node": "a2",
            "conversation_id": "c-123456789"}
    rows = extract_flow(make_flow("GET", "/backend-api/conversation/c-123456789", response_body=json.dumps(body)), source="proxy")
    read = rows["conversation_reads"][0]
    assert read["current_node"] == "a2" and read["n_nodes"] == 4 and read["title"] == "T"
    assert sorted((m["message_id"], m["parent_id"]) for m in rows["messages"]) == [("a1", "u"), ("a2", "u"), ("u", "root")]


def test_websocket_flow_turns():
    flow = make_flow("GET", "/celsius/ws/user", status=101, response_body=b"", start=10.0)
    flow.websocket = websocket.WebSocketData()
    sse_lines = (STREAMS / "v1_answer.sse").read_text().split("\n\n")
    flow.websocket.messages.append(websocket.WebSocketMessage(1, True, b'{"type":"subscribe"}', 10.5))
    t = 11.0
    for item in sse_lines:
        if not item.strip():
            continue
        frame = {"type": "message", "payload": {"type": "conversation-turn-stream",
                                                "payload": {"type": "stream-item", "encoded_item": item + "\n\n"}}}
        flow.websocket.messages.append(websocket.WebSocketMessage(1, False, json.dumps(frame).encode(), t))
        t += 0.1
    rows = extract_flow(flow, source="proxy")
    assert rows["flows"][0]["kind"] == "conversation_websocket"
    turn = rows["conversation_turns"][0]
    assert turn["flow_id"] == f"{flow.id}#0" and turn["stream_format"] == "websocket"
    assert turn["assistant_text"] == "Nile, Amazon and Danube." and turn["ttft_ms"] == pytest.approx(1200.0, abs=1e-3)


def test_unrecognised_flows_only_with_all_flows():
    flow = make_flow("GET", "/favicon.ico", content_type="image/x-icon")
    assert not any(extract_flow(flow, source="proxy").values())
    rows = extract_flow(flow, source="proxy", all_flows=True)
    assert rows["flows"][0]["kind"] == "other" and not rows["errors"]


def test_redact_rows_scrubs_the_one_cell_with_a_token_in_any_row_shape():
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl"
    rows = {
        "stream_events": [{"data": "plain", "n": 1}] * 500 + [{"data": f"x {jwt} y", "n": 2}, {"other": "sk-" + "a" * 20}],
        "flows": [{"url": "https://a/b", "n": None}, {"url": "Bearer abcdefghijk", "extra": 3}],
        "errors": [],
        "messages": [{"text": "lone \udc80 surrogate, Bearer abcdefghijk"}],  # orjson cannot write it
    }
    expected = {t: [{k: redact_string(v) if isinstance(v, str) else v for k, v in r.items()} for r in rs]
                for t, rs in rows.items()}
    rows = {t: [dict(r) for r in rs] for t, rs in rows.items()}
    redact_rows(rows)
    assert rows == expected
    assert rows["stream_events"][500]["data"] == f"x {PLACEHOLDER} y"
    assert rows["stream_events"][501]["other"] == PLACEHOLDER
    assert rows["flows"][1]["url"] == f"Bearer {PLACEHOLDER}"
    assert rows["stream_events"][0]["data"] == "plain"
    assert rows["messages"][0]["text"] == f"lone \udc80 surrogate, Bearer {PLACEHOLDER}"


@pytest.mark.parametrize("key", [
    "token", "Token", "arkose_token", "accessToken", "REFRESH_TOKEN", "api_key", "apiKey", "password",
    "Password", "secret", "client_secret", "authorization", "Authorization", "private_key", "access_key",
    "x_conduit_token", "to\\u006ben",
])
def test_event_data_redacts_every_secret_key_spelling(key):
    from analyzer.extract.common import event_data

    data = '{"type": "x", "' + key + '" : "s3cr3t-value", "text": "tokens and keys are words"}'
    out = json.loads(event_data(data, redact=True))
    assert "s3cr3t-value" not in json.dumps(out)
    assert out["text"] == "tokens and keys are words"


def test_event_data_leaves_text_mentioning_tokens_byte_for_byte():
    from analyzer.extract.common import event_data

    data = '{"v": " tokens, keys: a password \\"secret\\""}'
    assert event_data(data, redact=True) == data
