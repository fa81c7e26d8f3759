"""``analyze export otel``: GenAI spans and metrics, checked against hand-worked numbers.

The capture (built with tests/capture_factory.py) and its numbers, worked out by hand:

conversation C1 (web, gpt-4o):
    turn F1 at T0: text events at 800, 840, 900, 1000 ms, [DONE] at 1300 ms; stored ttft 800,
        e2e 1300 → span T0 … T0+1.3 s, time_to_first_chunk 0.8 s, 5 span events, chunk gaps
        0.04, 0.06, 0.10 s; duration 1.3 s → bucket (1.28, 2.56] (index 8).
    turn F2 at T0+10 s: text at 500, 700 ms, [DONE] 900 ms; ttft 500, e2e 900 → gap 0.2 s.
conversation C2: turn F3 at T0+30 s answered HTTP 500 (error.type "500"), no events.
API calls (api.openai.com, gpt-4o-mini):
    A1 at T0+20 s streamed: text at 300, 350, 450 ms, [DONE] 700 ms; usage 12 in / 5 out,
        response id chatcmpl-1, finish stop → its own trace; tokens 12 and 5 → bucket (4, 16].
    A2 at T0+40 s not streamed, no usage: no usage attributes, no chunk metrics, own trace.
    K1, K2 (chatgpt.com Codex, prompt_cache_key "thread-7"): one trace together.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from analyzer.cli import main
from analyzer.export import otel
from tests.capture_factory import T0, flow_row, make_capture, merge, turn
from tests.otlp_receiver import OTLPReceiver

C1, C2 = "c1000000-0000-4000-8000-000000000001", "c2000000-0000-4000-8000-000000000002"
SECRET_USER, SECRET_ANSWER = "my private question", "the private answer"


def _events(flow_id: str, start: float, spec: list[tuple[float, str, str | None]]) -> list[dict]:
    return [{"flow_id": flow_id, "seq": seq, "at": start + off / 1000, "offset_ms": off, "type": typ,
             "event": None, "text": text, "data": "{}", "n_bytes": 20 + len(text or "")}
            for seq, (off, typ, text) in enumerate(spec)]


def _api(flow_id: str, at: float, *, stream: bool, model: str = "gpt-4o-mini", host: str = "api.openai.com",
         usage: tuple[int, int] | None = None, ttft: float | None = None, e2e: float = 700.0,
         request: dict | None = None, response_id: str | None = None, endpoint: str = "chat.completions") -> dict:
    return {
        "flows": [flow_row(flow_id, at=at, kind="api", host=host, path="/v1/chat/completions",
                           duration_ms=e2e)],
        "api_calls": [{
            "flow_id": flow_id, "host": host, "endpoint": endpoint, "model": model, "stream": stream,
            "n_messages": 1, "last_user_text": SECRET_USER, "response_text": SECRET_ANSWER,
            "prompt_tokens": usage[0] if usage else None, "completion_tokens": usage[1] if usage else None,
            "total_tokens": sum(usage) if usage else None, "finish_reason": "stop", "response_id": response_id,
            "status_code": 200, "started_at": at, "ttft_ms": ttft, "e2e_ms": e2e,
            "request_json": json.dumps(request or {"model": model}),
        }],
    }


def _rows() -> dict:
    f1 = turn(C1, flow_id="F1", at=T0, assistant_id="m-a1", assistant_text=SECRET_ANSWER, user_id="m-u1",
              user_text=SECRET_USER, parent_id="client-created-root", ttft_ms=800.0, with_events=False)
    f1["conversation_turns"][0].update(e2e_ms=1300.0, finish_type="stop")
    f2 = turn(C1, flow_id="F2", at=T0 + 10, assistant_id="m-a2", assistant_text="two", user_id="m-u2",
              user_text="again", parent_id="m-a1", ttft_ms=500.0, with_events=False)
    f2["conversation_turns"][0].update(e2e_ms=900.0)
    f3 = turn(C2, flow_id="F3", at=T0 + 30, assistant_id="m-a3", assistant_text="", user_id="m-u3",
              user_text="x", parent_id="client-created-root", with_events=False)
    f3["flows"][0]["status_code"] = 500
    f3["conversation_turns"][0].update(ttft_ms=None, e2e_ms=None, error="HTTP 500")
    events = {"stream_events": (
        _events("F1", T0, [(800, "delta", "the "), (840, "delta", "private "), (900, "delta", "ans"),
                           (1000, "delta", "wer"), (1300, "done", None)])
        + _events("F2", T0 + 10, [(500, "delta", "tw"), (700, "delta", "o"), (900, "done", None)])
        + _events("A1", T0 + 20, [(300, "chunk", "a"), (350, "chunk", "b"), (450, "chunk", "c"),
                                  (700, "done", None)])
    )}
    a1 = _api("A1", T0 + 20, stream=True, usage=(12, 5), ttft=300.0, response_id="chatcmpl-1")
    a2 = _api("A2", T0 + 40, stream=False, e2e=400.0)
    k1 = _api("K1", T0 + 50, stream=True, host="chatgpt.com", model="gpt-5-codex", endpoint="responses",
              request={"model": "gpt-5-codex", "prompt_cache_key": "thread-7"}, ttft=100.0, e2e=200.0)
    k2 = _api("K2", T0 + 60, stream=True, host="chatgpt.com", model="gpt-5-codex", endpoint="responses",
              request={"model": "gpt-5-codex", "prompt_cache_key": "thread-7"}, ttft=100.0, e2e=200.0)
    return merge(f1, f2, f3, events, a1, a2, k1, k2)


@pytest.fixture
def capture_path(tmp_path):
    return make_capture(tmp_path / "cap.parquet", _rows())


def _export_file(capture_path, tmp_path, *extra: str, name: str = "traces.jsonl") -> list[dict]:
    out = tmp_path / name
    result = CliRunner().invoke(main, ["export", "otel", str(capture_path), "-o", str(out), *extra])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in out.read_text().splitlines()]


def _b64_ids(node):
    """The Collector reads OTLP/JSON ids as hex; proto3 JSON (json_format) wants base64."""
    if isinstance(node, dict):
        return {k: base64.b64encode(bytes.fromhex(v)).decode() if k in ("traceId", "spanId", "parentSpanId")
                else _b64_ids(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_b64_ids(v) for v in node]
    return node


def _parse(lines: list[dict]) -> tuple[list[ExportTraceServiceRequest], list[ExportMetricsServiceRequest]]:
    traces, metrics = [], []
    for obj in lines:
        if "resourceSpans" in obj:
            traces.append(json_format.ParseDict(_b64_ids(obj), ExportTraceServiceRequest()))
        else:
            assert "resourceMetrics" in obj, obj.keys()
            metrics.append(json_format.ParseDict(_b64_ids(obj), ExportMetricsServiceRequest()))
    return traces, metrics


def _attrs(kvs) -> dict:
    out = {}
    for kv in kvs:
        which = kv.value.WhichOneof("value")
        value = getattr(kv.value, which)
        if which == "array_value":
            value = [getattr(v, v.WhichOneof("value")) for v in value.values]
        out[kv.key] = value
    return out


def _spans(traces) -> dict[str, tuple[bytes, object]]:
    spans = {}
    for req in traces:
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    spans[_attrs(span.attributes)["chatwire.flow_id"]] = span
    return spans


def _near_ns(actual: int, epoch_s: float) -> bool:
    """Equal up to the float precision of an epoch in seconds (~0.25 µs)."""
    return abs(actual - epoch_s * 1e9) < 2_000


def test_jsonl_is_otlp_json_and_spans_carry_hand_worked_values(capture_path, tmp_path):
    lines = _export_file(capture_path, tmp_path)
    raw_span = lines[0]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    # OTLP/JSON rules: hex ids, lowerCamelCase, enum as integer, int64 as decimal string.
    assert len(raw_span["traceId"]) == 32 and int(raw_span["traceId"], 16)
    assert len(raw_span["spanId"]) == 16 and int(raw_span["spanId"], 16)
    assert raw_span["kind"] == 3  # SPAN_KIND_CLIENT
    assert isinstance(raw_span["startTimeUnixNano"], str) and "start_time_unix_nano" not in raw_span

    traces, metrics = _parse(lines)
    spans = _spans(traces)
    assert set(spans) == {"F1", "F2", "F3", "A1", "A2", "K1", "K2"}
    f1 = spans["F1"]
    a = _attrs(f1.attributes)
    assert f1.name == "chat gpt-4o" and f1.kind == 3
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.conversation.id"] == C1
    assert a["gen_ai.request.model"] == "gpt-4o" and a["gen_ai.response.model"] == "gpt-4o"
    assert a["gen_ai.response.id"] == "m-a1"
    assert a["gen_ai.request.stream"] is True
    assert a["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.8)
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["server.address"] == "chatgpt.com" and a["server.port"] == 443
    assert "gen_ai.usage.input_tokens" not in a  # the web app reports no usage
    assert "error.type" not in a and f1.status.code == 0
    assert _near_ns(f1.start_time_unix_nano, T0) and _near_ns(f1.end_time_unix_nano, T0 + 1.3)
    assert [e.name for e in f1.events] == ["chatwire.stream_event"] * 5
    for event, offset_ms in zip(f1.events, (800, 840, 900, 1000, 1300), strict=True):
        assert _near_ns(event.time_unix_nano, T0 + offset_ms / 1000)
    assert _attrs(f1.events[4].attributes)["chatwire.event.type"] == "done"

    f3 = _attrs(spans["F3"].attributes)
    assert f3["error.type"] == "500" and spans["F3"].status.code == 2  # STATUS_CODE_ERROR
    assert f3["http.response.status_code"] == 500

    a1 = _attrs(spans["A1"].attributes)
    assert spans["A1"].name == "chat gpt-4o-mini"
    assert a1["gen_ai.usage.input_tokens"] == 12 and a1["gen_ai.usage.output_tokens"] == 5
    assert a1["gen_ai.response.id"] == "chatcmpl-1" and a1["gen_ai.response.finish_reasons"] == ["stop"]
    assert a1["server.address"] == "api.openai.com"
    assert a1["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.3)
    assert "gen_ai.conversation.id" not in a1
    a2 = _attrs(spans["A2"].attributes)
    assert a2["gen_ai.request.stream"] is False
    assert not {"gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens",
                "gen_ai.response.time_to_first_chunk"} & set(a2)
    assert _near_ns(spans["A2"].end_time_unix_nano, T0 + 40.4)

    # One trace per conversation; API calls one each unless they share a Codex thread.
    assert spans["F1"].trace_id == spans["F2"].trace_id != spans["F3"].trace_id
    assert len({spans[k].trace_id for k in ("F1", "F3", "A1", "A2", "K1")}) == 5
    assert spans["K1"].trace_id == spans["K2"].trace_id
    assert _attrs(spans["K1"].attributes)["gen_ai.conversation.id"] == "thread-7"
    assert spans["F1"].trace_id == otel.trace_id_for(f"conversation:{C1}").to_bytes(16, "big")
    assert spans["F1"].span_id == otel.span_id_for("F1").to_bytes(8, "big")
    assert len(traces) == 5  # one ExportTraceServiceRequest line per trace
    assert len(metrics) == 1


def _histograms(metrics_req: ExportMetricsServiceRequest) -> dict[str, list]:
    out = {}
    for rm in metrics_req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[m.name] = (m.unit, list(m.histogram.data_points), m.histogram.aggregation_temporality)
    return out


def _point(points, **want):
    found = [p for p in points if all(_attrs(p.attributes).get(k) == v for k, v in want.items())]
    assert len(found) == 1, [(_attrs(p.attributes)) for p in points]
    return found[0]


def test_metrics_use_the_conventions_buckets_and_hand_worked_values(capture_path, tmp_path):
    _, metrics = _parse(_export_file(capture_path, tmp_path))
    hists = _histograms(metrics[0])
    assert set(hists) == {"gen_ai.client.operation.duration", "gen_ai.client.token.usage",
                          "gen_ai.client.operation.time_to_first_chunk",
                          "gen_ai.client.operation.time_per_output_chunk"}
    unit, points, temporality = hists["gen_ai.client.operation.duration"]
    assert unit == "s" and temporality == 2  # CUMULATIVE
    web_ok = _point(points, **{"gen_ai.request.model": "gpt-4o", "error.type": None})
    assert list(web_ok.explicit_bounds) == [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12,
                                            10.24, 20.48, 40.96, 81.92]
    # F1 1.3 s, F2 0.9 s; F3 (failed) has its own point with error.type.
    assert web_ok.count == 2 and web_ok.sum == pytest.approx(2.2)
    assert web_ok.bucket_counts[8] == 1 and web_ok.bucket_counts[7] == 1  # (1.28,2.56] and (0.64,1.28]
    failed = _point(points, **{"error.type": "500"})
    assert failed.count == 1

    _, ttfc, _ = hists["gen_ai.client.operation.time_to_first_chunk"]
    web = _point(ttfc, **{"gen_ai.request.model": "gpt-4o", "error.type": None})
    assert list(web.explicit_bounds) == list(web_ok.explicit_bounds)  # the conventions: same as duration
    assert web.bucket_counts[6] == 1 and web.bucket_counts[7] == 1  # 0.5 in (0.32,0.64], 0.8 in (0.64,1.28]
    assert web.count == 2 and web.sum == pytest.approx(1.3) and web.min == pytest.approx(0.5)
    assert not [p for p in ttfc if "error.type" in _attrs(p.attributes)]  # failures are not recorded
    assert not [p for p in ttfc if _attrs(p.attributes).get("server.address") == "api.openai.com"
                and p.count != 1]  # A1 only: A2 was not streamed

    _, tpoc, _ = hists["gen_ai.client.operation.time_per_output_chunk"]
    web = _point(tpoc, **{"gen_ai.request.model": "gpt-4o", "error.type": None})
    assert web.count == 4 and web.sum == pytest.approx(0.04 + 0.06 + 0.10 + 0.20)
    # 0.04 in (0.02,0.04]; 0.06 in (0.04,0.08]; 0.10 in (0.08,0.16]; 0.20 in (0.16,0.32]
    assert list(web.bucket_counts[:6]) == [0, 0, 1, 1, 1, 1]
    api = _point(tpoc, **{"gen_ai.request.model": "gpt-4o-mini"})
    assert api.count == 2 and api.sum == pytest.approx(0.05 + 0.10)

    unit, tokens, _ = hists["gen_ai.client.token.usage"]
    assert unit == "{token}"
    inp = _point(tokens, **{"gen_ai.token.type": "input"})
    out = _point(tokens, **{"gen_ai.token.type": "output"})
    assert (inp.count, inp.sum, out.count, out.sum) == (1, 12, 1, 5)
    assert inp.bucket_counts[2] == 1 and out.bucket_counts[2] == 1  # both in (4, 16]


def test_two_exports_give_the_same_ids_and_bytes(capture_path, tmp_path):
    """The second export runs in a process of its own: nothing random per process leaks in."""
    first = _export_file(capture_path, tmp_path, name="one.jsonl")
    second = tmp_path / "two.jsonl"
    subprocess.run([sys.executable, "-c", "from analyzer.cli import main; main()", "export", "otel",
                    str(capture_path), "-o", str(second)], check=True, capture_output=True, timeout=120)
    assert [json.loads(line) for line in second.read_text().splitlines()] == first
    ids = {(s["traceId"], s["spanId"]) for line in first for rs in line.get("resourceSpans", [])
           for ss in rs["scopeSpans"] for s in ss["spans"]}
    assert len(ids) == 7


def test_no_message_text_without_content_and_text_with_it(capture_path, tmp_path):
    plain = (tmp_path / "plain.jsonl")
    CliRunner().invoke(main, ["export", "otel", str(capture_path), "-o", str(plain)], catch_exceptions=False)
    text = plain.read_text()
    assert "private" not in text and "gen_ai.input.messages" not in text

    traces, _ = _parse(_export_file(capture_path, tmp_path, "--content", name="content.jsonl"))
    spans = _spans(traces)
    a = _attrs(spans["F1"].attributes)
    assert json.loads(a["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": SECRET_USER}]}]
    assert json.loads(a["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": SECRET_ANSWER}], "finish_reason": "stop"}]
    deltas = [_attrs(e.attributes).get("gen_ai.output.text_delta") for e in spans["F1"].events]
    assert deltas == ["the ", "private ", "ans", "wer", None]


def test_endpoint_sends_otlp_http_protobuf_to_a_real_receiver(capture_path, tmp_path):
    with OTLPReceiver() as receiver:
        result = CliRunner().invoke(main, ["export", "otel", str(capture_path), "--endpoint", receiver.endpoint])
        assert result.exit_code == 0, result.output
    assert receiver.traces and receiver.metrics
    assert all(ct == "application/x-protobuf" for ct in receiver.content_types)
    spans = _spans(receiver.traces)
    file_spans = _spans(_parse(_export_file(capture_path, tmp_path))[0])
    assert set(spans) == set(file_spans)
    for flow_id, span in spans.items():  # the same spans as the file, field for field
        assert span == file_spans[flow_id], flow_id
    f1 = spans["F1"]
    assert _near_ns(f1.start_time_unix_nano, T0) and _near_ns(f1.end_time_unix_nano, T0 + 1.3)
    assert _attrs(f1.attributes)["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.8)
    hists = _histograms(receiver.metrics[0])
    assert _point(hists["gen_ai.client.token.usage"][1], **{"gen_ai.token.type": "input"}).sum == 12


def test_refused_or_unreachable_endpoint_is_one_clear_error(capture_path, tmp_path):
    with OTLPReceiver() as receiver:
        dead = receiver.endpoint
    result = CliRunner().invoke(main, ["export", "otel", str(capture_path), "--endpoint", dead, "--timeout", "2"])
    assert result.exit_code != 0
    assert "did not accept" in result.output and dead in result.output


def test_bad_arguments_and_bad_capture(capture_path, tmp_path):
    runner = CliRunner()
    neither = runner.invoke(main, ["export", "otel", str(capture_path)])
    assert neither.exit_code == 2 and "exactly one of" in neither.output
    both = runner.invoke(main, ["export", "otel", str(capture_path), "-o", str(tmp_path / "x"),
                                "--endpoint", "http://127.0.0.1:1"])
    assert both.exit_code == 2
    missing = runner.invoke(main, ["export", "otel", str(tmp_path / "nope"), "-o", str(tmp_path / "y.jsonl")])
    assert missing.exit_code == 1 and "nope" in missing.output
    assert not (tmp_path / "y.jsonl").exists()


def test_empty_capture_exports_nothing(tmp_path):
    path = make_capture(tmp_path / "empty.parquet", {})
    assert _export_file(path, tmp_path) == []


def test_websocket_turn_takes_host_and_port_from_its_socket_flow(tmp_path):
    rows = turn(C2, flow_id="W1#0", at=T0, assistant_id="m-w", assistant_text="hi", user_id="m-u",
                user_text="q", parent_id="client-created-root", with_events=False)
    rows["flows"] = [flow_row("W1", at=T0 - 5, kind="websocket", method="GET", path="/ws",
                              status_code=101, host="ws.chatgpt.com", port=8443)]
    traces, _ = _parse(_export_file(make_capture(tmp_path / "ws.parquet", rows), tmp_path))
    a = _attrs(_spans(traces)["W1#0"].attributes)
    assert a["server.address"] == "ws.chatgpt.com" and a["server.port"] == 8443
    assert "http.response.status_code" not in a and "error.type" not in a


def test_live_capture_through_mitmdump_exports_with_the_origins_timing(tmp_path, origin, mitmdump_factory):
    """A real session through a real mitmdump, exported to a real receiver: span events sit at the
    origin's own send times (its send log is the oracle), one trace per conversation."""
    import ssl
    from pathlib import Path

    from analyzer.store import load_capture
    from tests.origin.session import run_session

    addon = Path(__file__).resolve().parent.parent / "addons" / "chatgpt_capture.py"
    capture_path = tmp_path / "live.parquet"
    proxy = mitmdump_factory(script=addon, options={"capture_path": capture_path, "capture_flush_ms": 200})
    since = len(origin.log())
    record = run_session(origin.url, proxy=proxy.proxy_url, verify=ssl.create_default_context(cafile=str(proxy.ca_path)),
                         formats=("v1",), n_turns=2, delays=(120, 15), analytics=False, api=True)
    assert proxy.stop() == 0
    with OTLPReceiver() as receiver:
        result = CliRunner().invoke(main, ["export", "otel", str(capture_path), "--endpoint", receiver.endpoint])
        assert result.exit_code == 0, result.output
    spans = _spans(receiver.traces)
    flow_ray = load_capture(capture_path).table("flows").set_index("flow_id")["cf_ray"]
    sent = {(r["cf_ray"], r["index"]): r["t"] for r in origin.log(since) if r["kind"] == "event"}

    posted = record.conversation_streams
    turn_spans = {fid: s for fid, s in spans.items() if _attrs(s.attributes)["chatwire.answer"] == "conversation_turn"}
    assert len(turn_spans) == len(posted) >= 2
    conv = {s.conversation_id for s in posted}
    assert {_attrs(s.attributes)["gen_ai.conversation.id"] for s in turn_spans.values()} == conv
    assert len({s.trace_id for s in turn_spans.values()}) == len(conv)
    lags = []
    for flow_id, span in turn_spans.items():
        ray = flow_ray.loc[flow_id]
        times = [sent[(ray, i)] for i in range(len(span.events)) if (ray, i) in sent]
        assert times, flow_id
        # The span covers what the origin sent: it starts before the first event left the origin
        # and ends at the last event's arrival, which is after that event was sent.
        assert span.start_time_unix_nano < min(times) * 1e9
        assert span.end_time_unix_nano >= max(times) * 1e9 - 10e6
        for i, event in enumerate(span.events):
            if (ray, i) in sent:
                lags.append(event.time_unix_nano / 1e6 - sent[(ray, i)] * 1000)
        ttfc = _attrs(span.attributes)["gen_ai.response.time_to_first_chunk"]
        assert 0.1 <= ttfc <= 1.5  # the origin waits 120 ms before the first token
    # The origin stamps an event just after handing it over, so under load an arrival can precede
    # the stamp by a little; generous bounds that still catch a wrong clock or offset.
    assert min(lags) > -100 and max(lags) < 1000

    api_spans = [s for s in spans.values() if _attrs(s.attributes)["chatwire.answer"] == "api_call"]
    assert len(api_spans) == 4
    streamed = [_attrs(s.attributes) for s in api_spans if _attrs(s.attributes)["gen_ai.request.stream"]]
    assert len(streamed) == 2 and all("gen_ai.response.time_to_first_chunk" in a for a in streamed)
    assert all(_attrs(s.attributes)["gen_ai.usage.output_tokens"] > 0 for s in api_spans)
    assert len({s.trace_id for s in api_spans}) == 4


def test_control_characters_from_traffic_are_escaped_not_altered(tmp_path):
    """Text from traffic stays inert in the file (raw C1/bidi characters become JSON escapes) and
    reads back as the same value."""
    hostile = "evil\u202etxt\x85\x1b[31m"
    rows = turn(C1, flow_id="H1", at=T0, assistant_id="m-h", assistant_text=hostile, user_id="m-u",
                user_text="q", parent_id="client-created-root", with_events=False)
    out = tmp_path / "hostile.jsonl"
    result = CliRunner().invoke(main, ["export", "otel", str(make_capture(tmp_path / "h.parquet", rows)),
                                       "-o", str(out), "--content"])
    assert result.exit_code == 0, result.output
    raw = out.read_text()
    assert "\u202e" not in raw and "\x85" not in raw and "\x1b" not in raw
    traces, _ = _parse([json.loads(line) for line in raw.splitlines()])
    output = json.loads(_attrs(_spans(traces)["H1"].attributes)["gen_ai.output.messages"])
    assert output[0]["parts"][0]["content"] == hostile


def test_a_traces_url_gets_the_spans_only(capture_path, tmp_path):
    """``--endpoint …/v1/traces`` is used as it is (as OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is):
    spans there, no metrics anywhere."""
    with OTLPReceiver() as receiver:
        result = CliRunner().invoke(main, ["export", "otel", str(capture_path), "--endpoint",
                                           f"{receiver.endpoint}/v1/traces"])
        assert result.exit_code == 0, result.output
    assert "spans only" in result.output
    assert len(_spans(receiver.traces)) == 7 and receiver.metrics == []
