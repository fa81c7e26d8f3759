"""The Codex backend over HTTP/SSE (guide section 6a): answers, reasoning, failures, usage limits,
the CLI's headers and analytics, MCP over streamable HTTP, and the reads around them.

In-process tests feed hand-written streams and headers (values worked out by hand); the live tests
send real requests through a real mitmdump to the local origin (tests/origin/codex.py) and check
the rows against the origin's send log, then import the same traffic from ``mitmdump -w`` and from
a HAR and expect the same rows.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
import zstandard

from analyzer import recognise
from analyzer.extract import extract_flow
from analyzer.extract.codex import rate_limits_from_event, rate_limits_from_headers
from analyzer.importer import import_sources
from analyzer.store import load_capture
from tests.flows_factory import make_flow

ROOT = Path(__file__).resolve().parent.parent
ADDON = ROOT / "addons" / "chatgpt_capture.py"
CODEX = "/backend-api/codex/responses"


def read_stream(client: httpx.Client, method: str, url: str, **kwargs) -> tuple[httpx.Response, bytes, list[float]]:
    """The response, its raw body, and when each SSE event was complete at the client (a zstd body
    decoded as it arrives, as the Codex CLI does)."""
    times: list[float] = []
    raw, text = b"", b""
    with client.stream(method, url, **kwargs) as response:
        zstd = response.headers.get("content-encoding") == "zstd"
        decoder = zstandard.ZstdDecompressor().decompressobj() if zstd else None
        for chunk in response.iter_raw():
            now = time.time()
            raw += chunk
            before = text.count(b"\n\n")
            text += decoder.decompress(chunk) if decoder else chunk
            times.extend([now] * (text.count(b"\n\n") - before))
    return response, raw, times


def sse(obj: dict) -> str:
    return f"event: {obj['type']}\ndata: {json.dumps(obj)}\n\n"


def codex_flow(events: list[dict], *, headers: dict | None = None, request_headers: dict | None = None,
               content_type: str = "text/event-stream"):
    """A Codex answer whose i-th event arrived (i + 1) * 100 ms after the request."""
    body = "".join(sse(e) for e in events)
    flow = make_flow("POST", CODEX, body={"model": "gpt-5.6-codex", "input": "hi", "stream": True},
                     request_headers={"accept": "text/event-stream", **(request_headers or {})},
                     response_body=body, content_type=content_type, response_headers=headers, start=1_800_000_000.0,
                     chunk_times=[0.1 * (i + 1) for i in range(len(events))])
    # one chunk per event, exactly: the factory splits evenly, so re-cut on the event boundaries
    sizes = [len(sse(e).encode()) for e in events]
    flow.metadata["chatwire"]["chunks"] = [[1_800_000_000.0 + 0.1 * (i + 1), n] for i, n in enumerate(sizes)]
    return flow


# ------------------------------------------------------------------ rate limits: the pure parser

def test_headers_of_the_usage_limit_sample():
    # guide real-samples/2026 codex_responses_stream_events_2026.txt, block 1 (header names as sent)
    headers = {"X-Codex-Primary-Window-Minutes": "300", "X-Codex-Primary-Used-Percent": "100",
               "X-Codex-Primary-Reset-After-Seconds": "9569", "X-Codex-Primary-Reset-At": "1788879438",
               "X-Codex-Secondary-Window-Minutes": "10080", "X-Codex-Secondary-Reset-After-Seconds": "596369"}
    rows = rate_limits_from_headers(headers, at=1788869869.0)
    # the secondary window has no used-percent: no observation (as the CLI's own parser decides)
    assert [(r["limit"], r["used_percent"], r["window_minutes"], r["reset_at"]) for r in rows] == [
        ("primary", 100.0, 300, 1788879438.0)]


def test_header_families_credits_and_reset_after():
    headers = {"x-codex-primary-used-percent": "12.5", "x-codex-primary-window-minutes": "60",
               "x-codex-secondary-used-percent": "3", "x-codex-secondary-reset-after-seconds": "100",
               "x-codex-bengalfox-primary-used-percent": "80", "x-codex-bengalfox-limit-name": "gpt-5.2-codex-sonic",
               "x-codex-credits-has-credits": "true", "x-codex-credits-unlimited": "0",
               "x-codex-credits-balance": " 4.20 ", "x-codex-other-primary-used-percent": "0"}
    rows = rate_limits_from_headers(headers, at=1000.0)
    got = [(r["limit"], r["limit_id"], r["window"], r["used_percent"], r["window_minutes"], r["reset_at"],
            r.get("limit_name")) for r in rows]
    assert got == [
        ("primary", "codex", "primary", 12.5, 60, None, None),
        ("secondary", "codex", "secondary", 3.0, None, 1100.0, None),  # at + reset-after-seconds
        ("codex_bengalfox", "codex_bengalfox", "primary", 80.0, None, None, "gpt-5.2-codex-sonic"),
    ]  # x-codex-other: 0 % with nothing else is no observation
    assert json.loads(rows[0]["credits"]) == {"has_credits": True, "unlimited": False, "balance": "4.20"}
    assert rows[2]["credits"] is None
    assert rate_limits_from_headers({"x-codex-primary-used-percent": "NaN"}) == []
    assert rate_limits_from_headers({"x-codex-primary-used-percent": "bad"}) == []


def test_rate_limit_event_shapes():
    # the three shapes of the samples' block 3
    plain = {"type": "codex.rate_limits", "plan_type": "plus",
             "rate_limits": {"primary": {"used_percent": 7, "window_minutes": 300, "reset_at": 9000},
                             "secondary": None}}
    assert [(r["limit"], r["used_percent"], r["window_minutes"], r["reset_at"], r["plan_type"])
            for r in rate_limits_from_event(plain)] == [("primary", 7.0, 300, 9000.0, "plus")]
    metered = {"type": "codex.rate_limits", "metered_limit_name": "codex_bengalfox",
               "rate_limits": {"secondary": {"used_percent": 1, "window_minutes": 10080, "reset_at": 1800000001}},
               "additional_rate_limits": {"Spark": {"primary": {"used_percent": 0, "window_minutes": 10080,
                                                                "reset_at": 1800000000}}}}
    assert [(r["limit"], r["limit_id"], r["window"], r["used_percent"]) for r in rate_limits_from_event(metered)] == [
        ("codex_bengalfox.secondary", "codex_bengalfox", "secondary", 1.0), ("spark", "spark", "primary", 0.0)]
    assert rate_limits_from_event({"type": "codex.rate_limits", "plan_type": "plus",
                                   "rate_limits": {"allowed": True}}) == []
    named = {"type": "codex.rate_limits", "limit_name": "Codex-Other", "credits": {"has_credits": False}}
    assert [(r["limit"], r["limit_id"]) for r in rate_limits_from_event(named)] == [("credits", "codex_other")]


# ------------------------------------------------------------------ one answer, in process

def test_reasoning_text_and_no_double_count():
    events = [
        {"type": "response.created", "response": {"id": "r1", "model": "gpt-5.6-codex", "status": "in_progress"}},
        {"type": "response.reasoning_summary_text.delta", "item_id": "rs", "summary_index": 0, "delta": "Think "},
        {"type": "response.reasoning_summary_text.delta", "item_id": "rs", "summary_index": 0, "delta": "hard."},
        {"type": "response.reasoning_text.delta", "item_id": "rs", "content_index": 0, "delta": "raw"},
        {"type": "response.output_item.done", "item": {"id": "rs", "type": "reasoning",
                                                       "summary": [{"type": "summary_text", "text": "Think hard."}]}},
        {"type": "response.output_text.delta", "item_id": "m1", "output_index": 1, "delta": "Hel"},
        {"type": "response.output_text.delta", "item_id": "m1", "output_index": 1, "delta": "lo"},
        {"type": "response.output_text.done", "item_id": "m1", "output_index": 1, "text": "Hello"},
        {"type": "response.output_item.done", "output_index": 1, "item": {
            "id": "m1", "type": "message", "content": [{"type": "output_text", "text": "Hello"}]}},
        # a second item that came without deltas: its text is taken once, from output_item.done
        {"type": "response.output_item.done", "output_index": 2, "item": {
            "id": "m2", "type": "message", "content": [{"type": "output_text", "text": " world"}]}},
        {"type": "codex.response.metadata", "etag": 'W/"7"'},
        {"type": "responsesapi.websocket_timing", "timing": {"duration_ms": 100}},
        {"type": "response.completed", "response": {"id": "r1", "status": "completed", "output": [],
                                                    "usage": {"input_tokens": 3, "output_tokens": 2}}},
    ]
    rows = extract_flow(codex_flow(events, headers={"openai-model": "gpt-5.6-codex", "x-reasoning-included": "true"}),
                        source="proxy")
    call = rows["api_calls"][0]
    assert call["response_text"] == "Hello world"
    assert call["reasoning_text"] == "Think hard.\n\nraw"
    assert call["n_reasoning_events"] == 3
    assert call["first_reasoning_ms"] == pytest.approx(200.0, abs=0.01)  # event 2 arrived at 200 ms
    assert call["reasoning_ms"] == pytest.approx(200.0, abs=0.01)  # from 200 ms to 400 ms
    assert call["ttft_ms"] == pytest.approx(600.0, abs=0.01)  # first visible text: event 6
    assert call["n_text_events"] == 3 and call["e2e_ms"] == pytest.approx(1300.0, abs=0.01)
    assert (call["finish_reason"], call["prompt_tokens"], call["completion_tokens"]) == ("completed", 3, 2)
    assert call.get("error") is None and rows["errors"] == []
    assert json.loads(call["extra"]) == {"openai-model": "gpt-5.6-codex", "x-reasoning-included": "true",
                                         "response_metadata": {"etag": 'W/"7"'},
                                         "websocket_timing": {"duration_ms": 100}}
    types = [e["type"] for e in rows["stream_events"]]
    assert "codex.response.metadata" in types and "responsesapi.websocket_timing" in types
    # reasoning never shows as visible text in stream_events
    assert [e["text"] for e in rows["stream_events"] if e["text"]] == ["Hel", "lo", " world"]


def test_completed_output_is_the_text_only_when_nothing_else_came():
    done = {"type": "response.completed", "response": {"id": "r2", "status": "completed", "output": [
        {"id": "m1", "type": "message", "content": [{"type": "output_text", "text": "Whole"}]}]}}
    only = extract_flow(codex_flow([{"type": "response.created", "response": {"id": "r2"}}, done]), source="proxy")
    assert only["api_calls"][0]["response_text"] == "Whole"
    both = extract_flow(codex_flow([{"type": "response.output_text.delta", "item_id": "m1", "delta": "Whole"}, done]),
                        source="proxy")
    assert both["api_calls"][0]["response_text"] == "Whole"


def test_wrapped_error_event_is_a_failed_call_with_its_limits():
    error = {"type": "error", "status_code": 429,
             "error": {"type": "usage_limit_reached", "message": "The usage limit has been reached",
                       "plan_type": "plus", "resets_at": 1788879437, "resets_in_seconds": 9568},
             "headers": {"X-Codex-Primary-Window-Minutes": "300", "X-Codex-Primary-Used-Percent": "100",
                         "X-Codex-Primary-Reset-At": "1788879438"}}
    rows = extract_flow(codex_flow([{"type": "response.created", "response": {"id": "r3"}}, error]), source="proxy")
    call = rows["api_calls"][0]
    assert (call["status_code"], call["error_status_code"], call["error_code"]) == (200, 429, "usage_limit_reached")
    assert call["error"] == "usage_limit_reached: The usage limit has been reached"
    assert call["finish_reason"] == "failed"
    assert [(r["source"], r["limit"], r["used_percent"], r["plan_type"], r["at"]) for r in rows["rate_limits"]] == [
        ("header", "primary", 100.0, "plus", 1_800_000_000.2)]  # at = the error event's arrival


def test_response_failed_is_a_failed_call():
    events = [{"type": "response.created", "response": {"id": "r0", "status": "in_progress"}},
              {"type": "codex.rate_limits", "plan_type": "plus", "rate_limits": {"allowed": True}},
              {"type": "response.failed", "response": {"id": "r0", "status": "failed", "error": {
                  "code": "server_is_overloaded", "message": "Our servers are currently overloaded."}}}]
    call = extract_flow(codex_flow(events), source="proxy")["api_calls"][0]
    assert (call["error_code"], call["finish_reason"], call["error_status_code"]) == (
        "server_is_overloaded", "failed", None)
    assert call["error"] == "server_is_overloaded: Our servers are currently overloaded."


def test_codex_request_headers_become_columns():
    meta = {"turn_id": "turn-7", "session_id": "sess-1", "window_number": 0}
    flow = codex_flow([{"type": "response.completed", "response": {"id": "r", "output": []}}], request_headers={
        "session-id": "sess-1", "thread-id": "thr-1", "x-client-request-id": "req-1", "x-codex-window-id": "sess-1:0",
        "x-codex-turn-metadata": json.dumps(meta), "x-codex-beta-features": "remote_compaction_v2",
        "originator": "codex_cli_rs", "chatgpt-account-id": "acct-1"})
    call = extract_flow(flow, source="proxy")["api_calls"][0]
    assert {k: call[k] for k in ("codex_session_id", "codex_thread_id", "codex_turn_id", "codex_window_id",
                                 "client_request_id", "originator", "chatgpt_account_id", "codex_beta_features")} == {
        "codex_session_id": "sess-1", "codex_thread_id": "thr-1", "codex_turn_id": "turn-7",
        "codex_window_id": "sess-1:0", "client_request_id": "req-1", "originator": "codex_cli_rs",
        "chatgpt_account_id": "acct-1", "codex_beta_features": "remote_compaction_v2"}
    assert json.loads(call["codex_turn_metadata"]) == meta
    secret = codex_flow([{"type": "response.completed"}], request_headers={
        "x-codex-turn-metadata": json.dumps({"turn_id": "t", "resume_token": "opaque-secret-value"})})
    stored = json.loads(extract_flow(secret, source="proxy")["api_calls"][0]["codex_turn_metadata"])
    assert stored == {"turn_id": "t", "resume_token": "[REDACTED]"}  # credential-shaped keys redacted
    odd = codex_flow([{"type": "response.completed"}], request_headers={"x-codex-turn-metadata": "not json"})
    assert extract_flow(odd, source="proxy")["api_calls"][0]["codex_turn_metadata"] == "not json"


def test_analytics_events_in_process():
    body = {"events": [
        {"event_type": "codex_thread_initialized", "event_params": {"thread_id": "thr-1", "model": "gpt-5.6-codex"}},
        {"event_type": "codex_turn_event", "event_params": {
            "thread_id": "thr-1", "session_id": "sess-1", "turn_id": "turn-7", "model": "gpt-5.6-codex",
            "runtime": "cli", "critical_path_duration_ms": 2400, "critical_path_inference_ms": 1900.5,
            "critical_path_tools_ms": 300, "tool_calls": 2}},
        "not an event"]}
    flow = make_flow("POST", "/backend-api/codex/analytics-events/events", body=body)
    rows = extract_flow(flow, source="proxy")["codex_analytics_events"]
    assert [(r["seq"], r["event_type"], r["turn_id"]) for r in rows] == [
        (0, "codex_thread_initialized", None), (1, "codex_turn_event", "turn-7")]
    turn = rows[1]
    assert (turn["critical_path_duration_ms"], turn["critical_path_inference_ms"], turn["critical_path_tools_ms"],
            turn["runtime"]) == (2400.0, 1900.5, 300.0, "cli")
    assert json.loads(turn["params"])["tool_calls"] == 2
    bad = make_flow("POST", "/backend-api/codex/analytics-events/events", body={"nope": 1})
    errors = extract_flow(bad, source="proxy")["errors"]
    assert [e["error"] for e in errors] == ["analytics body has no events list"]


@pytest.mark.parametrize(("method", "path", "kind"), [
    ("GET", "/backend-api/codex/models?client_version=0.171.0", recognise.CODEX_READ),
    ("GET", "/backend-api/wham/usage", recognise.CODEX_READ),
    ("GET", "/backend-api/wham/tasks/list", recognise.CODEX_READ),
    ("GET", "/backend-api/ps/plugins/list", recognise.CODEX_READ),
    ("POST", "/backend-api/ps/mcp", recognise.MCP),
    ("POST", "/backend-api/codex/analytics-events/events", recognise.CODEX_ANALYTICS),
    ("POST", "/backend-api/codex/responses", recognise.API),
    ("GET", "/backend-api/wham", None),
    ("GET", "/backend-api/ps/mcp", None),
])
def test_codex_kinds(method, path, kind):
    assert recognise.recognise(method, path) == kind


def test_codex_read_is_a_flow_of_its_kind():
    flow = make_flow("GET", "/backend-api/wham/usage", response_body=b'{"plan_type":"plus"}')
    rows = extract_flow(flow, source="proxy")
    assert [r["kind"] for r in rows["flows"]] == ["codex_read"] and rows["errors"] == []


# ------------------------------------------------------------------ live: through mitmdump

PROMPT = "Explain the flux capacitor"


def _events_of(origin, since: int, rid: str) -> list[dict]:
    return sorted((r for r in origin.log(since) if r["kind"] == "event" and r["rid"] == rid), key=lambda r: r["index"])


def _request_of(origin, since: int, rid: str) -> dict:
    return next(r for r in origin.log(since) if r["kind"] == "request" and r["rid"] == rid)


@pytest.fixture(scope="module")
def codex_session(tmp_path_factory, origin, mitm_confdir):
    """Codex calls, analytics and MCP through one mitmdump with the addon, flows saved with ``-w``."""
    from tests.origin.mitm import run_mitmdump

    work = tmp_path_factory.mktemp("codex")
    capture, flows_path = work / "live.parquet", work / "codex.mitm"
    proxy = run_mitmdump(work, script=ADDON, options={"capture_path": capture, "capture_flush_ms": 200},
                         confdir=mitm_confdir, flow_file=flows_path)
    since = len(origin.log())
    verify = ssl.create_default_context(cafile=str(proxy.ca_path))
    common = {"accept": "text/event-stream", "x-origin-delays-ms": "150,80", "session-id": "sess-1",
              "thread-id": "thr-1", "originator": "codex_cli_rs", "chatgpt-account-id": "acct-1"}
    cases = {
        # reasoning, a zstd request body, a zstd answer decoded incrementally
        "reasoning": {"x-origin-reasoning": "1", "x-origin-encoding": "zstd", "content-encoding": "zstd",
                      "x-codex-turn-metadata": json.dumps({"turn_id": "turn-1", "session_id": "sess-1"})},
        # no Content-Type, and the text only in the done events
        "no-deltas": {"x-origin-content-type": "none", "x-origin-codex": "no-deltas",
                      "x-codex-turn-metadata": json.dumps({"turn_id": "turn-2"})},
        "usage_limit": {"x-origin-codex-fail": "usage_limit"},
        "overloaded": {"x-origin-codex-fail": "overloaded"},
        "http429": {"x-origin-codex-fail": "http429"},
    }
    out: dict = {"since": since, "rids": {}, "times": {}, "raw": {}}
    try:
        with httpx.Client(proxy=proxy.proxy_url, verify=verify, timeout=30) as client:
            for name, headers in cases.items():
                body = json.dumps({"model": "gpt-5.6-codex", "stream": True,
                                   "input": [{"type": "message", "role": "user",
                                              "content": [{"type": "input_text", "text": PROMPT}]}]}).encode()
                if headers.get("content-encoding") == "zstd":
                    body = zstandard.ZstdCompressor().compress(body)
                response, raw, times = read_stream(client, "POST", origin.url + CODEX, content=body,
                                                   headers={**common, "content-type": "application/json", **headers})
                out["rids"][name], out["times"][name], out["raw"][name] = response.headers["x-request-id"], times, raw
            analytics = {"events": [
                {"event_type": "codex_thread_initialized", "event_params": {"thread_id": "thr-1"}},
                {"event_type": "codex_turn_event", "event_params": {
                    "thread_id": "thr-1", "session_id": "sess-1", "turn_id": "turn-1", "model": "gpt-5.6-codex",
                    "critical_path_duration_ms": 900, "critical_path_inference_ms": 700,
                    "critical_path_tools_ms": 0}}]}
            assert client.post(origin.url + "/backend-api/codex/analytics-events/events",
                               json=analytics).status_code == 200
            mcp = {"accept": "text/event-stream, application/json", "x-origin-delays-ms": "150,300"}
            init = client.post(origin.url + "/backend-api/ps/mcp", headers=mcp,
                               json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}})
            assert init.status_code == 200 and init.json()["result"]["serverInfo"]["name"] == "origin-mcp"
            response, raw, times = read_stream(client, "POST", origin.url + "/backend-api/ps/mcp", headers=mcp,
                                               json={"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                                     "params": {"name": "echo", "arguments": {}}})
            out["rids"]["mcp"], out["times"]["mcp"], out["raw"]["mcp"] = response.headers["x-request-id"], times, raw
            client.get(origin.url + "/backend-api/wham/usage")  # whatever the origin answers, a codex_read flow
    finally:
        assert proxy.stop() == 0
    assert "Traceback" not in proxy.log_text()
    out.update(capture=load_capture(capture), flows_path=flows_path, work=work)
    return out


def _calls_by_case(session, origin) -> dict:
    """api_calls rows keyed by case, matched through the flows' response x-request-id."""
    flows = session["capture"].table("flows")
    calls = session["capture"].table("api_calls").set_index("flow_id")
    out = {}
    for name, rid in session["rids"].items():
        flow_id = flows[flows["response_headers"].str.contains(rid, regex=False)]["flow_id"].iloc[0]
        out[name] = calls.loc[flow_id] if flow_id in calls.index else flow_id
    return out


def test_codex_answers_through_mitmdump(codex_session, origin):
    s = codex_session
    since = s["since"]
    calls = _calls_by_case(s, origin)
    events = s["capture"].table("stream_events")
    # never held back: each event reached the client soon after the origin sent it. Held back, the
    # first event would wait for the last (~600 ms later in each of these streams); the bound
    # leaves room for a loaded machine. (The Content-Type-less answer: tests/test_stream_passthrough.py.)
    for name in ("reasoning", "mcp"):
        sent = _events_of(origin, since, s["rids"][name])
        assert len(sent) == len(s["times"][name])
        assert sent[-1]["t"] - sent[0]["t"] >= 0.55
        lags = [(at - r["t"]) * 1000 for r, at in zip(sent, s["times"][name], strict=True)]
        assert max(lags) < 300, (name, lags)

    for name in ("reasoning", "no-deltas"):
        call, sent = calls[name], _events_of(origin, since, s["rids"][name])
        assert call.endpoint == CODEX and call.status_code == 200 and pd.isna(call.error)
        assert call.response_text == "".join(r["text"] for r in sent)  # the origin's visible text, once
        assert call.n_events == len(sent)
        mine = events[events.flow_id == call.name].sort_values("seq")
        # every event timed: the proxy's arrival before the client had it, and not before the origin
        # sent it (the origin logs just after its hand-off, late on a loaded machine: 250 ms of room)
        assert all(r["t"] - 0.25 < a.timestamp() < got + 0.01
                   for a, r, got in zip(mine["at"], sent, s["times"][name], strict=True))
        assert (call.codex_session_id, call.codex_thread_id, call.originator, call.chatgpt_account_id) == (
            "sess-1", "thr-1", "codex_cli_rs", "acct-1")
    reasoning = calls["reasoning"]
    assert reasoning.codex_turn_id == "turn-1" and calls["no-deltas"].codex_turn_id == "turn-2"
    assert reasoning.reasoning_text == "**Planning** Reading the question, then answering it."
    sent = _events_of(origin, since, s["rids"]["reasoning"])
    got = s["times"]["reasoning"]
    # (origin send, client receipt) of the first/last reasoning event and of the first text event: the
    # proxy's arrival of each lies between the two, so the differences of arrivals are bracketed
    thought = [(r["t"], at) for r, at in zip(sent, got, strict=True) if r["event_kind"] == "thought"]
    text = [(r["t"], at) for r, at in zip(sent, got, strict=True) if r["text"]]
    assert len(thought) == 3 and reasoning.n_reasoning_events == 3

    def between(value_ms, first, second):  # value = arrival(second) - arrival(first); the origin logs late
        return (second[0] - first[1]) * 1000 - 250 <= value_ms <= (second[1] - first[0]) * 1000 + 250

    assert between(reasoning.ttft_ms - reasoning.first_reasoning_ms, thought[0], text[0])
    assert between(reasoning.reasoning_ms, thought[0], thought[-1])
    assert reasoning.reasoning_ms > 100  # the origin spaced the three reasoning deltas 80 ms apart
    assert _request_of(origin, since, s["rids"]["reasoning"])["encoding"] == "zstd"
    assert json.loads(reasoning.extra)["x-reasoning-included"] == "true"

    usage, overloaded, http429 = calls["usage_limit"], calls["overloaded"], calls["http429"]
    assert (usage.status_code, usage.error_status_code, usage.error_code) == (200, 429, "usage_limit_reached")
    assert (overloaded.error_code, overloaded.finish_reason) == ("server_is_overloaded", "failed")
    assert (http429.status_code, http429.error_code) == (429, "usage_limit_reached")
    http429_limits = s["capture"].table("rate_limits").query("flow_id == @http429.name")
    assert set(http429_limits.plan_type) == {"plus"}  # named by the 429's body

    # usage limits: what the origin says it sent, per call
    limits = s["capture"].table("rate_limits")
    for name, call in (("reasoning", reasoning), ("no-deltas", calls["no-deltas"]), ("http429", http429)):
        sent_limits = _request_of(origin, since, s["rids"][name])["limits"]
        mine = limits[limits.flow_id == call.name]
        header = mine[mine.source == "header"].set_index("limit")
        assert header.loc["primary", "used_percent"] == sent_limits["primary"]["used_percent"]
        assert header.loc["secondary", "window_minutes"] == sent_limits["secondary"]["window_minutes"]
        assert header.loc["primary", "reset_at"].timestamp() == sent_limits["primary"]["reset_at"]
        assert header.loc["codex_bengalfox", "limit_name"] == sent_limits["metered"]["label"]
        assert json.loads(header.loc["primary", "credits"])["balance"] == "12.50"
        if name != "http429":
            event = mine[mine.source == "event"].set_index("limit")
            assert set(event.index) == {"primary", "secondary", "codex_bengalfox"}
            assert event.loc["secondary", "used_percent"] == sent_limits["secondary"]["used_percent"]
            assert (event["plan_type"] == "plus").all()
    wrapped = limits[(limits.flow_id == usage.name)]
    assert set(wrapped.source) == {"header"} and (wrapped[wrapped.plan_type.notna()].limit == "primary").any()

    analytics = s["capture"].table("codex_analytics_events").sort_values("seq")
    assert list(analytics.event_type) == ["codex_thread_initialized", "codex_turn_event"]
    assert analytics.iloc[1].critical_path_inference_ms == 700.0

    flows = s["capture"].table("flows")
    mcp_flow = flows[flows["response_headers"].str.contains(s["rids"]["mcp"], regex=False)].iloc[0]
    assert mcp_flow.kind == "mcp" and mcp_flow.streamed
    mcp_events = events[events.flow_id == mcp_flow.flow_id].sort_values("seq")
    assert list(mcp_events.type) == ["jsonrpc.notifications/progress"] * 2 + ["jsonrpc.result"]
    mcp_sent = _events_of(origin, since, s["rids"]["mcp"])
    assert all(r["t"] - 0.25 < a.timestamp() < got + 0.01
               for a, r, got in zip(mcp_events["at"], mcp_sent, s["times"]["mcp"], strict=True))
    assert s["raw"]["mcp"] == "".join(r["data"] for r in mcp_sent).encode()  # byte-identical
    assert "codex_read" in set(flows.kind)


CHECKED = {
    "api_calls": ["endpoint", "model", "response_text", "reasoning_text", "error", "error_code", "error_status_code",
                  "codex_turn_id", "codex_session_id", "prompt_tokens", "completion_tokens", "n_events"],
    "rate_limits": ["source", "limit", "used_percent", "window_minutes", "reset_at", "plan_type", "limit_name"],
    "codex_analytics_events": ["event_type", "turn_id", "critical_path_duration_ms", "params"],
}


def _rows(capture, name):
    frame = capture.table(name)[CHECKED[name]]
    return frame.astype(str).sort_values(CHECKED[name]).reset_index(drop=True)


def test_flow_file_and_har_give_the_same_rows(codex_session, tmp_path):
    s = codex_session
    live = s["capture"]
    imported = tmp_path / "from_flows.parquet"
    summary = import_sources([s["flows_path"]], imported)
    assert summary.errors == []
    flow_cap = load_capture(imported)
    for name in CHECKED:
        pd.testing.assert_frame_equal(_rows(live, name), _rows(flow_cap, name), obj=name)
    # the flow file keeps the per-event timing: same arrival times and TTFT
    cols = ["flow_id", "ttft_ms", "first_reasoning_ms", "e2e_ms"]
    pd.testing.assert_frame_equal(live.table("api_calls")[cols].sort_values("flow_id").reset_index(drop=True),
                                  flow_cap.table("api_calls")[cols].sort_values("flow_id").reset_index(drop=True))

    har = tmp_path / "codex.har"
    mitmdump = str(Path(sys.executable).parent / "mitmdump")
    subprocess.run([mitmdump, "-q", "-nr", str(s["flows_path"]), "--set", f"hardump={har}"], check=True, timeout=120,
                   stdout=subprocess.DEVNULL)
    har_summary = import_sources([har], tmp_path / "from_har.parquet")
    assert har_summary.errors == []
    har_cap = load_capture(tmp_path / "from_har.parquet")
    for name in CHECKED:
        pd.testing.assert_frame_equal(_rows(live, name), _rows(har_cap, name), obj=name)
    assert har_cap.table("api_calls")["ttft_ms"].isna().all()  # a HAR has no per-event timing


# ------------------------------------------------------------------ the report's Codex section

def test_report_codex_section(codex_session, origin, tmp_path):
    from click.testing import CliRunner

    from analyzer.analysis.report import build_report
    from analyzer.cli import main as cli

    s = codex_session
    calls = _calls_by_case(s, origin)
    cx = build_report(s["capture"])["codex"]
    assert cx["calls"] == 5 and cx["failed"] == 3
    assert cx["errors_by_code"] == {"server_is_overloaded": 1, "usage_limit_reached": 2}
    model = cx["by_model"]["gpt-5.6-codex"]
    assert model["ttft_ms"]["n"] == 2 and model["first_reasoning_ms"]["n"] == 1
    assert model["reasoning_ms"]["p50"] == pytest.approx(calls["reasoning"].reasoning_ms)
    assert model["itl_ms"]["n"] > 0
    # usage limits: every primary-window value the origin sent, per call, is in the series
    sent = [_request_of(origin, s["since"], s["rids"][n])["limits"] for n in ("reasoning", "no-deltas", "usage_limit",
                                                                               "http429")]
    primary = cx["rate_limits"]["by_limit"]["primary"]
    assert primary["max_used_percent"] == max(x["primary"]["used_percent"] for x in sent)
    assert primary["first_used_percent"] == sent[0]["primary"]["used_percent"]
    assert primary["window_minutes"] == 300
    # the CLI's turn-1 timing beside the wire timing of its one call
    turns = {t["turn_id"]: t for t in cx["turn_events"]["turns"]}
    assert cx["turn_events"] == {**cx["turn_events"], "events": 1, "joined": 1}
    turn = turns["turn-1"]
    assert turn["n_calls"] == 1 and turn["critical_path_inference_ms"] == 700.0
    assert turn["wire_inference_ms"] == pytest.approx(calls["reasoning"].e2e_ms)
    assert turn["inference_gap_ms"] == pytest.approx(700.0 - calls["reasoning"].e2e_ms)
    assert turn["wire_span_ms"] == pytest.approx(calls["reasoning"].e2e_ms, abs=0.01)  # one call: its own span

    capture_path = s["work"] / "live.parquet"
    runner = CliRunner()
    text = runner.invoke(cli, ["report", str(capture_path)])
    assert text.exit_code == 0, text.output
    assert "Codex" in text.output and "Usage limits" in text.output and "turn-1" in text.output
    md = runner.invoke(cli, ["report", str(capture_path), "--format", "markdown"])
    assert md.exit_code == 0 and "## Codex" in md.output
    out = tmp_path / "report.html"
    html = runner.invoke(cli, ["report", str(capture_path), "--format", "html", "-o", str(out)])
    assert html.exit_code == 0, html.output
    page = out.read_text()
    section = page[page.index('<section id="codex"'):]
    section = section[:section.index("</section>")]
    assert 'data-chart="yes"' in section and section.count("<svg") == 1
    assert "usage limits over time" in section and "<code>turn-1</code>" in section
    assert "codex_bengalfox (n=" in section  # one line per limit


def test_zstd_body_of_several_frames_decodes_whole_at_any_cut():
    from analyzer.streams.decoding import BodyDecoder, decode_body_bytes

    frames = b"".join(zstandard.ZstdCompressor().compress(p) for p in (b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"))
    assert decode_body_bytes(frames, "zstd") == b"data: 1\n\ndata: 2\n\ndata: 3\n\n"
    for cut in range(len(frames)):
        decoder = BodyDecoder("zstd")
        text = decoder.decode(frames[:cut]) + decoder.decode(frames[cut:]) + decoder.finish()
        assert text == "data: 1\n\ndata: 2\n\ndata: 3\n\n", cut


def test_client_metadata_fills_in_missing_headers():
    meta = json.dumps({"turn_id": "turn-9", "thread_id": "thr-9"})
    flow = make_flow("POST", CODEX, body={"model": "m", "input": "hi", "client_metadata": {
        "session_id": "sess-9", "x-codex-turn-metadata": meta, "x-codex-window-id": "sess-9:1"}},
        request_headers={"thread-id": "thr-header"}, response_body=b'{"id": "r", "status": "completed", "output": []}')
    call = extract_flow(flow, source="proxy")["api_calls"][0]
    assert (call["codex_session_id"], call["codex_thread_id"], call["codex_turn_id"], call["codex_window_id"]) == (
        "sess-9", "thr-header", "turn-9", "sess-9:1")  # a header wins over the body


def test_wham_usage_limits():
    body = {"plan_type": "plus", "credits": {"has_credits": True, "unlimited": False, "balance": 5.39},
            "rate_limit": {"primary_window": {"used_percent": 6, "reset_at": 1738300000, "limit_window_seconds": 18000},
                           "secondary_window": {"used_percent": 24, "reset_after_seconds": 100,
                                                "limit_window_seconds": 604800}},
            "additional_rate_limits": [{"limit_name": "GPT-5.6-Codex-Spark", "rate_limit": {
                "primary_window": {"used_percent": 1.5, "limit_window_seconds": 604800, "reset_at": 1738900000}}}]}
    flow = make_flow("GET", "/backend-api/wham/usage", response_body=json.dumps(body), start=1_738_000_000.0)
    rows = extract_flow(flow, source="proxy")["rate_limits"]
    assert [(r["source"], r["limit"], r["used_percent"], r["window_minutes"], r["reset_at"], r["plan_type"])
            for r in rows] == [
        ("usage", "primary", 6.0, 300, 1738300000.0, "plus"),
        ("usage", "secondary", 24.0, 10080, 1_738_000_000.05 + 100, "plus"),  # headers at + reset-after
        ("usage", "gpt_5.6_codex_spark", 1.5, 10080, 1738900000.0, "plus")]
    assert rows[2]["limit_name"] == "GPT-5.6-Codex-Spark"
    broken = make_flow("GET", "/backend-api/wham/usage", response_body=b"<html>")
    out = extract_flow(broken, source="proxy")
    assert out["rate_limits"] == [] and [e["stage"] for e in out["errors"]] == ["response"]


def test_turn_join_hand_worked(tmp_path):
    from analyzer.analysis.codex import turn_join
    from analyzer.store import load_capture as load
    from tests.capture_factory import T0, make_capture

    def call(flow_id, turn, start, ttft, e2e):
        return {"flow_id": flow_id, "endpoint": CODEX, "model": "gpt-5.6-codex", "started_at": start, "ttft_ms": ttft,
                "e2e_ms": e2e, "codex_session_id": "s", "codex_turn_id": turn}

    def event(seq, turn, duration, inference, tools):
        return {"flow_id": "an", "sent_at": T0 + 10, "seq": seq, "event_type": "codex_turn_event", "turn_id": turn,
                "critical_path_duration_ms": duration, "critical_path_inference_ms": inference,
                "critical_path_tools_ms": tools}

    rows = {"api_calls": [call("c1", "t1", T0, 400.0, 1000.0), call("c2", "t1", T0 + 3, 300.0, 500.0),
                          call("c3", "t2", T0 + 5, 200.0, 800.0)],
            "codex_analytics_events": [event(0, "t1", 4000.0, 1800.0, 1500.0), event(1, "t9", 100.0, 50.0, 0.0),
                                       {"flow_id": "an", "sent_at": T0, "seq": 2, "event_type": "codex_thread_initialized"}]}
    joined = turn_join(load(make_capture(tmp_path / "cap.parquet", rows))).set_index("turn_id")
    assert list(joined.index) == ["t1", "t9"]  # turn events only; t2 has calls but no event
    t1 = joined.loc["t1"]
    # two calls: E2E 1000 + 500 = 1500 on the wire; the first call's TTFT; T0 to T0 + 3 s + 500 ms
    assert (t1.n_calls, t1.wire_ttft_ms, t1.wire_inference_ms, t1.wire_span_ms) == (2, 400.0, 1500.0, 3500.0)
    assert t1.inference_gap_ms == 1800.0 - 1500.0
    t9 = joined.loc["t9"]
    assert t9.n_calls == 0 and pd.isna(t9.wire_inference_ms) and pd.isna(t9.inference_gap_ms)
