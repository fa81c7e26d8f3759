"""Ollama's native NDJSON streams (guide 6g) through a real mitmdump: passed line by line as the
origin sent them, one ``api_calls`` row per call with per-line timing, ``thinking`` apart from the
visible text, the server's nanosecond timings in milliseconds; the same rows from ``mitmdump -w``
and from mitmproxy's HAR export.

Oracles: the origin's send log (the time each line went to the transport, the lines themselves,
the final line's counters), never the capture read back against itself.
"""

from __future__ import annotations

import json
import ssl
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from analyzer.importer import import_sources
from analyzer.recognise import OLLAMA, is_ndjson_stream, recognise
from analyzer.schema import TABLES
from analyzer.store import load_capture
from tests.frames import rows_in_order
from tests.origin.mitm import export_har

ROOT = Path(__file__).resolve().parent.parent
ADDON = ROOT / "addons" / "chatgpt_capture.py"
DELAYS = "150,60"

CALLS = {
    "chat-think": ("/api/chat", {"model": "qwen3:0.6b", "think": True,
                                 "messages": [{"role": "system", "content": "be brief"},
                                              {"role": "user", "content": "Why is the sky blue?"}]}),
    "generate": ("/api/generate", {"model": "llama3.2", "prompt": "Name three rivers"}),
    "chat-whole": ("/api/chat", {"model": "llama3.2", "stream": False,
                                 "messages": [{"role": "user", "content": "One word please"}]}),
    "missing-model": ("/api/chat", {"model": "missing-model", "messages": [{"role": "user", "content": "hi"}]}),
}


def test_recognised_paths_and_the_stream_predicate():
    assert recognise("POST", "/api/chat") == OLLAMA and recognise("POST", "/api/generate?x=1") == OLLAMA
    assert recognise("GET", "/api/chat") is None and recognise("POST", "/api/tags") is None
    assert is_ndjson_stream("POST", "/api/chat", "application/x-ndjson")
    assert is_ndjson_stream("POST", "/api/generate", "application/x-ndjson; charset=utf-8")
    assert not is_ndjson_stream("POST", "/api/chat", "application/json")
    assert not is_ndjson_stream("POST", "/export/data", "application/x-ndjson")  # not ours: not timed


def read_lines(client: httpx.Client, path: str, url: str, body: dict) -> tuple[httpx.Response, bytes, list[float]]:
    """The response, its raw body and the time each NDJSON line was complete at the client."""
    times: list[float] = []
    raw = b""
    with client.stream("POST", url + path, json=body, headers={"x-origin-delays-ms": DELAYS}) as response:
        for chunk in response.iter_raw():
            now = time.time()
            before = raw.count(b"\n")
            raw += chunk
            times.extend([now] * (raw.count(b"\n") - before))
    return response, raw, times


@pytest.mark.slow
def test_ollama_streams_pass_line_by_line_and_become_api_calls(tmp_path, origin, mitmdump_factory, mitm_confdir):
    capture_path = tmp_path / "live.parquet"
    flows_path = tmp_path / "ollama.mitm"
    proxy = mitmdump_factory(script=ADDON, options={"capture_path": capture_path, "capture_flush_ms": 200},
                             flow_file=flows_path)
    since = len(origin.log())
    verify = ssl.create_default_context(cafile=str(proxy.ca_path))
    seen: dict[str, tuple[httpx.Response, bytes, list[float]]] = {}
    with httpx.Client(proxy=proxy.proxy_url, verify=verify, timeout=30) as client:
        for name, (path, body) in CALLS.items():
            seen[name] = read_lines(client, path, origin.url, body)
    assert proxy.stop() == 0
    assert "Traceback" not in proxy.log_text()
    log = origin.log(since)

    def sent(name: str) -> list[dict]:
        rid = seen[name][0].headers["x-request-id"]
        return sorted((r for r in log if r["kind"] == "event" and r["rid"] == rid), key=lambda r: r["index"])

    # 1. Passed through as sent: byte for byte, and each line within a few ms of the origin's send
    #    (held back, the first line would wait for the last: 150 + ~12 * 60 ms).
    for name in ("chat-think", "generate"):
        response, raw, times = seen[name]
        assert response.headers["content-type"] == "application/x-ndjson"
        lines = sent(name)
        assert raw == "".join(r["data"] for r in lines).encode()
        lags = [(t - r["t"]) * 1000 for t, r in zip(times, lines, strict=True)]
        assert max(lags) < 100, lags

    capture = load_capture(capture_path)
    calls = capture.table("api_calls").set_index("flow_id")
    events = capture.table("stream_events")
    flows = capture.table("flows").set_index("flow_id")
    assert capture.table("errors").empty, capture.table("errors").to_dict("records")
    assert sorted(flows.kind) == [OLLAMA] * 4
    by_name = {}
    for name, (_path, body) in CALLS.items():
        rid = seen[name][0].headers.get("x-request-id")
        match = [fid for fid in calls.index if calls.loc[fid, "request_json"] == json.dumps(body, separators=(",", ":"))]
        assert len(match) == 1, name
        by_name[name] = (match[0], calls.loc[match[0]], rid)

    # 2. The streamed chat with thinking: text, reasoning and the server's own timings, from the log.
    fid, call, _ = by_name["chat-think"]
    lines = sent("chat-think")
    objs = [json.loads(r["data"]) for r in lines]
    assert call.endpoint == "/api/chat" and call.stream and call.n_messages == 2
    assert call.last_user_text == "Why is the sky blue?"
    assert call.response_text == "".join(o["message"]["content"] for o in objs)
    assert call.reasoning_text == "".join(o["message"].get("thinking", "") for o in objs) != ""
    final = objs[-1]
    assert final["done"] is True and call.finish_reason == final["done_reason"] == "stop"
    assert call.server_eval_ms == pytest.approx(final["eval_duration"] / 1e6)
    assert call.server_prompt_eval_ms == pytest.approx(final["prompt_eval_duration"] / 1e6)
    assert call.server_load_ms == pytest.approx(final["load_duration"] / 1e6)
    assert call.server_total_ms == pytest.approx(final["total_duration"] / 1e6)
    assert (call.server_eval_count, call.server_prompt_eval_count) == (final["eval_count"], final["prompt_eval_count"])
    assert (call.prompt_tokens, call.completion_tokens, call.total_tokens) == (
        final["prompt_eval_count"], final["eval_count"], final["prompt_eval_count"] + final["eval_count"])
    n_thoughts = sum(1 for o in objs if o["message"].get("thinking"))
    n_text = sum(1 for o in objs if o["message"]["content"])
    assert (call.n_events, call.n_text_events, call.n_reasoning_events) == (len(objs), n_text, n_thoughts)
    # per-line arrival: at or just after the origin's send; TTFT at the first visible line
    rows = events[events.flow_id == fid].sort_values("seq")
    at = [t.timestamp() for t in rows["at"]]
    assert all(-0.01 < a - r["t"] < 0.1 for a, r in zip(at, lines, strict=True))
    assert list(rows["type"]) == ["thinking"] * n_thoughts + ["content"] * n_text + ["done"]
    start = flows.loc[fid, "started_at"].timestamp()
    first_text = next(r["t"] for r, o in zip(lines, objs, strict=True) if o["message"]["content"])
    first_thought = lines[0]["t"]
    assert -10 < call.ttft_ms - (first_text - start) * 1000 < 100
    assert -10 < call.first_reasoning_ms - (first_thought - start) * 1000 < 100
    assert call.ttft_ms > call.first_reasoning_ms + 50 * (n_thoughts - 1)  # thoughts come first, 60 ms apart

    # 3. /api/generate: "response" lines; the unstreamed chat and the 404 are rows too.
    fid, call, _ = by_name["generate"]
    objs = [json.loads(r["data"]) for r in sent("generate")]
    assert call.response_text == "".join(o["response"] for o in objs) and pd.isna(call.reasoning_text)
    assert call.server_eval_count == objs[-1]["eval_count"] and call.last_user_text == "Name three rivers"
    fid, call, _ = by_name["chat-whole"]
    whole = next(r for r in log if r["kind"] == "request" and r.get("api") == "ollama" and "body" in r)["body"]
    assert not call.stream and call.response_text == whole["message"]["content"]
    assert call.server_eval_ms == pytest.approx(whole["eval_duration"] / 1e6) and call.e2e_ms > 0
    assert events[events.flow_id == fid].empty
    fid, call, _ = by_name["missing-model"]
    assert call.status_code == 404 and call.error == "HTTP 404: model 'missing-model' not found"

    # 4. mitmdump -w: the same rows, timing included.
    imported = import_sources([flows_path], tmp_path / "flowfile.parquet")
    assert imported.errors == []
    flow_cap = load_capture(tmp_path / "flowfile.parquet")
    for name in TABLES:
        if name == "captures":
            continue  # each capture run is its own
        a = capture.table(name).drop(columns=["capture_id", *(["source"] if name == "flows" else [])])
        b = flow_cap.table(name).drop(columns=["capture_id", *(["source"] if name == "flows" else [])])
        pd.testing.assert_frame_equal(rows_in_order(a), rows_in_order(b), check_like=True, obj=name)

    # 5. mitmproxy's HAR export of that file: the same calls (a HAR has no per-chunk timing).
    har = tmp_path / "ollama.har"
    export_har(flows_path, har, mitm_confdir)
    assert import_sources([har], tmp_path / "har.parquet").errors == []
    har_cap = load_capture(tmp_path / "har.parquet")
    columns = ["endpoint", "model", "stream", "response_text", "reasoning_text", "finish_reason", "prompt_tokens",
               "completion_tokens", "server_eval_ms", "server_total_ms", "n_events", "n_reasoning_events",
               "status_code", "error"]
    pd.testing.assert_frame_equal(rows_in_order(capture.table("api_calls")[columns]),
                                  rows_in_order(har_cap.table("api_calls")[columns]))
    har_events = har_cap.table("stream_events")
    assert len(har_events) == len(events) and har_events["at"].isna().all()
    assert sorted(har_events["text"].dropna()) == sorted(events["text"].dropna())


def test_an_ollama_capture_replays_as_openai_chat_chunks(tmp_path):
    """``analyze serve`` of an Ollama capture: an OpenAI client gets chat chunks built from the
    captured text and times, never the raw NDJSON lines."""
    import openai

    from analyzer.extract import extract_flow
    from tests.capture_factory import make_capture
    from tests.flows_factory import make_flow
    from tests.test_serve import running_server

    tokens = ["Rayleigh", " scattering", " mostly", "."]
    lines = [{"model": "llama3.2", "created_at": "2026-12-01T08:00:00.1Z",
              "message": {"role": "assistant", "content": t}, "done": False} for t in tokens]
    lines.append({"model": "llama3.2", "created_at": "2026-12-01T08:00:00.5Z", "message": {"role": "assistant",
                  "content": ""}, "done": True, "done_reason": "stop", "prompt_eval_count": 9, "eval_count": 4,
                  "eval_duration": 300_000_000})
    body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    flow = make_flow("POST", "/api/chat", body={"model": "llama3.2", "messages": [{"role": "user",
                                                                                   "content": "Why blue?"}]},
                     response_body=body, content_type="application/x-ndjson",
                     chunk_times=[0.1, 0.15, 0.2, 0.25, 0.3])
    rows = extract_flow(flow, source="proxy")
    assert rows["errors"] == []
    capture = make_capture(tmp_path / "ollama.parquet", rows)
    with running_server(capture) as (base, _):
        client = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
        stream = client.chat.completions.create(model="llama3.2", stream=True,
                                                messages=[{"role": "user", "content": "Why blue?"}])
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "".join(tokens)


def test_local_models_block_by_hand(tmp_path):
    """Two Ollama calls with known timings and one OpenAI call without: the block covers the two."""
    from analyzer.analysis.render_report import render_text
    from analyzer.analysis.report import build_report
    from tests.capture_factory import T0, make_capture

    calls = [
        {"flow_id": "o1", "endpoint": "/api/chat", "model": "llama3.2", "started_at": T0, "ttft_ms": 300.0,
         "server_total_ms": 900.0, "server_load_ms": 100.0, "server_prompt_eval_ms": 150.0,
         "server_eval_ms": 500.0, "server_eval_count": 20, "server_prompt_eval_count": 12},
        {"flow_id": "o2", "endpoint": "/api/generate", "model": "llama3.2", "started_at": T0 + 5, "ttft_ms": 120.0,
         "server_total_ms": 400.0, "server_load_ms": 0.0, "server_prompt_eval_ms": 50.0,
         "server_eval_ms": 250.0, "server_eval_count": 5},
        {"flow_id": "a1", "endpoint": "/v1/chat/completions", "model": "gpt-4o", "started_at": T0, "ttft_ms": 200.0},
    ]
    capture = make_capture(tmp_path / "cap.parquet", {"api_calls": calls})
    from analyzer.store import load_capture

    server = build_report(load_capture(capture))["latency"]["local_models"]
    assert server["calls"] == 2 and list(server["by_model"]) == ["llama3.2"]
    # decode rates 20 / 0.5 s = 40 and 5 / 0.25 s = 20 tokens/s; TTFT − (load + prefill) = 50 and 70 ms
    assert (server["eval_tokens_per_s"]["min"], server["eval_tokens_per_s"]["max"]) == (20.0, 40.0)
    assert server["ttft_minus_server_prefill_ms"]["mean"] == 60.0
    assert server["server_total_ms"]["mean"] == 650.0 and server["server_load_ms"]["max"] == 100.0
    text = render_text(build_report(load_capture(capture)))
    assert "Reported by the server: local models (Ollama)" in text and "eval tokens/s" in text


def test_origin_speaks_ollama(origin):
    """The origin's Ollama: NDJSON lines as the real server writes them, errors as it answers them."""
    with httpx.Client(verify=origin.verify, timeout=30) as client:
        base = origin.url
        streamed = client.post(base + "/api/generate", json={"model": "llama3.2", "prompt": "echo: a b c"},
                               headers={"x-origin-delays-ms": "5,1"})
        assert streamed.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in streamed.text.splitlines()]
        assert "".join(x["response"] for x in lines) == "a b c" and [x["done"] for x in lines] == [False] * 3 + [True]
        last = lines[-1]
        assert last["done_reason"] == "stop" and last["eval_count"] == 3 and isinstance(last["context"], list)
        assert all(isinstance(last[k], int) for k in ("total_duration", "load_duration", "prompt_eval_duration",
                                                      "eval_duration"))
        assert last["created_at"].endswith("Z")
        whole = client.post(base + "/api/chat", json={"model": "llama3.2", "stream": False,
                                                      "messages": [{"role": "user", "content": "echo: hi"}]}).json()
        assert whole["message"] == {"role": "assistant", "content": "hi"} and whole["done"] is True
        assert client.post(base + "/api/chat", json={"messages": []}).json() == {"error": "model is required"}
        missing = client.post(base + "/api/chat", json={"model": "missing-x", "messages": []})
        assert missing.status_code == 404 and missing.json() == {"error": "model 'missing-x' not found"}
