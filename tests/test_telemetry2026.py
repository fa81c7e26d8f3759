"""The 2026 telemetry (guide 6f): Statsig on /ces/v1/rgstr, Segment's /v1/m series, statsc
counters and histograms, OTLP/HTTP metrics (JSON and protobuf), Datadog logs; the identifiers
report covers them and the identifier request headers.

Extractor tests use real mitmproxy flows with bodies the origin module's builders make and check
hand-worked values; the end-to-end test goes through a real mitmdump, then through ``-w`` and
mitmproxy's HAR export.
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import httpx
import pandas as pd
import pytest

from analyzer import recognise as kinds
from analyzer.analysis import telemetry
from analyzer.analysis.html_report import render_html
from analyzer.analysis.privacy import privacy_audit
from analyzer.analysis.render_report import render_markdown
from analyzer.analysis.report import build_report
from analyzer.extract import extract_flow
from analyzer.importer import import_sources
from analyzer.store import load_capture
from tests.flows_factory import make_flow
from tests.frames import rows_in_order
from tests.origin import telemetry2026 as T
from tests.origin.mitm import export_har

ROOT = Path(__file__).resolve().parent.parent
ADDON = ROOT / "addons" / "chatgpt_capture.py"
AT = 1_790_000_000.0
CONV = "68e1a2b3-0c4d-8005-9e6f-7a8b9c0d1e2f"


def rows_of(flow, table):
    return extract_flow(flow, source="test")[table]


def test_recognised_kinds():
    r = kinds.recognise
    assert r("POST", "/ces/v1/m") == kinds.SEGMENT_METRICS
    assert r("POST", "/ces/statsc/flush") == kinds.STATSC
    assert r("POST", "/otlp/v1/metrics") == kinds.OTLP_METRICS
    assert r("POST", "/ces/v1/rgstr?k=client-x&sv=3.33.1&gz=1") == kinds.STATSIG
    assert r("POST", T.datadog_intake_path()) == kinds.DATADOG_LOGS
    assert r("POST", "/api/v2/logs?ddsource=browser") == kinds.DATADOG_LOGS
    assert r("POST", "/ces/v1/telemetry/intake?ddforward=%2Fapi%2Fv2%2Frum%3Fddsource%3Dbrowser") is None  # RUM
    assert r("POST", "/ces/v1/telemetry/intake") is None


def test_statsig_first_party_gzip_keeps_session_and_sdk():
    path, body = T.statsig_rgstr([T.statsig_event("chatgpt_prompt_submitted", 1, f"/c/{CONV}", at_ms=1_790_000_000_500)])
    flow = make_flow("POST", path, body=body, content_type="application/json", start=AT)
    (row,) = rows_of(flow, "statsig_events")
    assert (row["event_name"], row["sdk_version"], row["session_id"]) == ("chatgpt_prompt_submitted", "3.33.1",
                                                                          T.STATSIG_SID)
    assert row["stable_id"] == T.STABLE_ID and row["conversation_id"] == CONV and row["time"] == 1_790_000_000.5


def test_segment_series_rows():
    flow = make_flow("POST", "/ces/v1/m", body=T.segment_series(), start=AT)
    rows = rows_of(flow, "telemetry_metrics")
    assert [(r["source"], r["name"], r["metric_type"], r["value"]) for r in rows] == [
        ("segment", "analytics_js.invoke", "counter", 1.0), ("segment", "analytics_js.integration.invoke", "counter", 2.0)]
    assert json.loads(rows[1]["attributes"])["integration_name"] == "Segment.io"
    assert rows[0]["endpoint"] == "/ces/v1/m" and rows[0]["sent_at"] == AT


def test_statsc_lists_and_maps():
    flow = make_flow("POST", "/ces/statsc/flush", body=T.statsc_flush(), start=AT)
    rows = rows_of(flow, "telemetry_metrics")
    assert [(r["name"], r["metric_type"], r.get("value"), r.get("count")) for r in rows] == [
        ("composer.submit", "counter", 3.0, None), ("sse.reconnect", "counter", 1.0, None),
        ("ttft_client_ms", "histogram", None, 3)]
    hist = rows[2]
    assert (hist["sum"], hist["min"], hist["max"]) == (812.5 + 640.0 + 1210.25, 640.0, 1210.25)
    assert json.loads(hist["extra"])["values"] == [812.5, 640.0, 1210.25]
    assert json.loads(rows[1]["attributes"]) == {"reason": "network", "transport": "fetch"}  # statsd "k:v" tags
    assert json.loads(rows[0]["resource"]) == {"client_type": "web"}
    # the same numbers when the sections are maps of name -> value / samples
    mapped = {"counters": {"composer.submit": 3}, "histograms": {"ttft_client_ms": [812.5, 640.0, 1210.25]}}
    rows = rows_of(make_flow("POST", "/ces/statsc/flush", body=mapped, start=AT), "telemetry_metrics")
    assert [(r["name"], r.get("value"), r.get("count"), r.get("sum")) for r in rows] == [
        ("composer.submit", 3.0, None, None), ("ttft_client_ms", None, 3, 2662.75)]


def _otlp_rows(content_type: str):
    message = T.otlp_request(AT)
    body = message.SerializeToString() if content_type == T.PROTOBUF else T.otlp_json(message).encode()
    flow = make_flow("POST", "/otlp/v1/metrics", body=body, host="ab.chatgpt.com", start=AT + 1,
                     request_headers={"content-type": content_type})
    return extract_flow(flow, source="test")


def test_otlp_protobuf_and_json_give_the_same_rows():
    proto, js = _otlp_rows(T.PROTOBUF), _otlp_rows("application/json")
    assert proto["errors"] == [] and js["errors"] == []
    strip = [{k: v for k, v in r.items() if k != "flow_id"} for r in proto["telemetry_metrics"]]
    assert strip == [{k: v for k, v in r.items() if k != "flow_id"} for r in js["telemetry_metrics"]]
    rows = {r["name"]: r for r in proto["telemetry_metrics"]}
    total = rows["ui.composer.submits"]
    assert (total["metric_type"], total["value"], total["unit"]) == ("sum", 4.0, "1")
    assert total["time"] == pytest.approx(AT) and total["start_time"] == pytest.approx(AT - 60)
    assert json.loads(total["extra"]) == {"aggregationTemporality": 1, "isMonotonic": True}  # 1 = DELTA
    assert rows["memory.js_heap_used"]["value"] == 48_500_000.5
    hist = rows["web_vitals.inp"]
    assert (hist["count"], hist["sum"], hist["min"], hist["max"]) == (5, 640.0, 48.0, 250.0)
    assert json.loads(hist["extra"])["explicitBounds"] == [50.0, 200.0]
    assert json.loads(hist["attributes"]) == {"interaction": "click", "account_id": T.ACCOUNT_ID}
    resource = json.loads(hist["resource"])
    assert resource["attributes"]["session.id"] == T.SESSION_ID and resource["scope"]["name"] == "chatgpt-web-vitals"


def test_otlp_garbage_is_an_errors_row():
    flow = make_flow("POST", "/otlp/v1/metrics", body=b"\xff\xff\xff not protobuf", start=AT,
                     request_headers={"content-type": T.PROTOBUF})
    rows = extract_flow(flow, source="test")
    assert rows["telemetry_metrics"] == [] and len(rows["flows"]) == 1
    assert rows["errors"][0]["error"].startswith("OTLP metrics body is not a valid protobuf message")


def test_datadog_logs_ndjson_with_a_bad_line():
    records = T.datadog_logs(f"https://chatgpt.com/c/{CONV}", AT)
    body = T.ndjson(records[:1]) + b"{not json\n" + T.ndjson(records[1:])
    flow = make_flow("POST", T.datadog_intake_path(), body=body, content_type="text/plain", start=AT)
    rows = extract_flow(flow, source="test")
    logs = rows["telemetry_logs"]
    assert [(r["status"], r["origin"], r["message"]) for r in logs] == [
        ("info", "logger", "stream resumed"), ("error", "network", "Fetch error POST /backend-api/f/conversation")]
    first = logs[0]
    assert first["time"] == AT and first["logger"] == "conversation" and first["service"] == "chatgpt-web"
    assert (first["session_id"], first["user_id"], first["conversation_id"]) == (T.DD_SESSION_ID,
                                                                               "user-OriginTestUser0001", CONV)
    extra = json.loads(first["attributes"])
    assert extra["resume"] == {"offset": 12} and extra["usr"] == {"anonymous_id": "dd-anon-01"}
    assert [e["error"] for e in rows["errors"]] == ["Datadog logs line 2 is not JSON: "
                                                    + rows["errors"][0]["error"].split(": ", 1)[1]]
    assert rows["errors"][0]["error"].startswith("Datadog logs line 2 is not JSON")


def send_all(client: httpx.Client, base: str) -> None:
    """What the page sends in one minute of 2026 telemetry, plus a conversation POST's id headers."""
    path, body = T.statsig_rgstr([T.statsig_event("chatgpt_prompt_submitted", 1, f"/c/{CONV}", at_ms=1_790_000_000_500),
                                  T.statsig_event("composer_opened", None, "/", at_ms=1_790_000_001_000)])
    assert client.post(base + path, content=body, headers={"content-type": "text/plain"}).status_code == 202
    assert client.post(base + "/ces/v1/m", content=json.dumps(T.segment_series()),
                       headers={"content-type": "text/plain"}).json() == {"success": True}
    assert client.post(base + "/ces/statsc/flush", json=T.statsc_flush()).json() == {"success": True}
    message = T.otlp_request(AT)
    answer = client.post(base + "/otlp/v1/metrics", content=message.SerializeToString(),
                         headers={"content-type": T.PROTOBUF})
    assert answer.status_code == 200 and answer.headers["content-type"] == T.PROTOBUF
    assert client.post(base + "/otlp/v1/metrics", content=T.otlp_json(message),
                       headers={"content-type": "application/json"}).json() == {}
    logs = T.datadog_logs(f"https://chatgpt.com/c/{CONV}", AT)
    assert client.post(base + T.datadog_intake_path(), content=T.ndjson(logs),
                       headers={"content-type": "text/plain;charset=UTF-8"}).status_code == 202
    client.post(base + "/backend-api/f/conversation", json={"action": "next", "messages": [], "model": "auto"},
                headers={"accept": "text/event-stream", "oai-device-id": T.DEVICE_ID,
                         "chatgpt-account-id": T.ACCOUNT_ID, "oai-session-id": T.SESSION_ID,
                         "x-origin-delays-ms": "5,1"})


@pytest.mark.slow
def test_telemetry_through_mitmdump_flow_file_and_har(tmp_path, origin, mitmdump_factory, mitm_confdir):
    capture_path, flows_path = tmp_path / "live.parquet", tmp_path / "tel.mitm"
    proxy = mitmdump_factory(script=ADDON, options={"capture_path": capture_path, "capture_flush_ms": 200},
                             flow_file=flows_path)
    since = len(origin.log())
    with httpx.Client(proxy=proxy.proxy_url, verify=ssl.create_default_context(cafile=str(proxy.ca_path)),
                      timeout=30) as client:
        send_all(client, origin.url)
    assert proxy.stop() == 0 and "Traceback" not in proxy.log_text()
    received = {r["path"]: r for r in origin.log(since) if r["kind"] == "request"}
    assert received["/otlp/v1/metrics"]["n_points"] == 3 and received["/ces/v1/telemetry/intake"]["n_lines"] == 2
    capture = load_capture(capture_path)
    assert capture.table("errors").empty, capture.table("errors").to_dict("records")
    statsig = capture.table("statsig_events")
    assert list(statsig.event_name) == ["chatgpt_prompt_submitted", "composer_opened"]
    assert set(statsig.session_id) == {T.STATSIG_SID} and set(statsig.host) == {"127.0.0.1"}
    metrics = capture.table("telemetry_metrics")
    # 2 Segment + 3 statsc + 3 OTLP points twice (protobuf and JSON)
    assert metrics.groupby("source").size().to_dict() == {"otlp": 6, "segment": 2, "statsc": 3}
    logs = capture.table("telemetry_logs")
    assert list(logs.status) == ["info", "error"] and set(logs.conversation_id) == {CONV}

    # identifiers by host: headers, OTel resource, statsc tags, Datadog columns, Statsig's sid
    ids = {(r.kind, r.host): r for r in telemetry.identifiers(capture).itertuples()}
    host = "127.0.0.1"
    assert ids[("device_id", host)].distinct_values == 1 and "headers" in ids[("device_id", host)].sources
    assert "metrics" in ids[("device_id", host)].sources  # OTel device.id, the same value as the header
    assert ids[("account_id", host)].distinct_values == 1
    assert set(ids[("account_id", host)].sources) == {"headers", "metrics", "statsig"}
    sessions = ids[("session_id", host)]
    assert sessions.distinct_values == 3  # Oai-Session-Id (= OTel session.id), Statsig sid, Datadog session
    assert set(sessions.sources) == {"headers", "metrics", "statsig", "logs"}
    report = build_report(capture)
    tel = report["telemetry"]
    assert tel["metrics"]["points"] == 11 and tel["metrics"]["by_source"] == {"otlp": 6, "statsc": 3, "segment": 2}
    assert tel["logs"]["by_status"] == {"error": 1, "info": 1}
    # the Statsig event on /c/CONV and both log records logged on that page name it (not captured here)
    assert (tel["events_naming_a_conversation"], tel["events_in_conversations"]) == (3, 0)
    text = render_markdown(report)
    assert "### Metrics" in text and "### Logs" in text and "web_vitals.inp" in text
    audit = privacy_audit(capture, salt="s")
    fields = set(audit.identifiers["field"])
    assert {"statsig_events.session_id", "telemetry_logs.session_id", "telemetry_metrics.resource:session.id",
            "telemetry_metrics.attributes:account_id"} <= fields
    assert {"Datadog", "OpenTelemetry", "Segment", "Statsig"} <= set(audit.hosts.iloc[0]["processors"])
    page = render_html(capture)
    assert "<h3>Metrics and logs</h3>" in page and "<code>otlp</code></td><td class=\"num\">6<" in page

    # mitmdump -w: the same rows
    assert import_sources([flows_path], tmp_path / "ff.parquet").errors == []
    flow_cap = load_capture(tmp_path / "ff.parquet")
    for name in ("statsig_events", "telemetry_metrics", "telemetry_logs"):
        pd.testing.assert_frame_equal(rows_in_order(capture.table(name).drop(columns=["capture_id"])),
                                      rows_in_order(flow_cap.table(name).drop(columns=["capture_id"])), obj=name)

    # HAR (mitmproxy's export): the JSON and NDJSON bodies give the same rows. A HAR's postData has
    # no encoding field, so the gzip and protobuf bodies do not survive it: errors rows, not wrong rows.
    har = tmp_path / "tel.har"
    export_har(flows_path, har, mitm_confdir)
    import_sources([har], tmp_path / "har.parquet")
    har_cap = load_capture(tmp_path / "har.parquet")
    cols = ["source", "name", "metric_type", "value", "count", "sum", "unit", "time", "attributes"]
    live_json = metrics[~((metrics.source == "otlp") & metrics.flow_id.isin(
        capture.table("flows").query("request_headers.str.contains('protobuf')").flow_id))]
    pd.testing.assert_frame_equal(rows_in_order(live_json[cols]), rows_in_order(har_cap.table("telemetry_metrics")[cols]))
    # (sent_at is left out: a HAR's startedDateTime keeps milliseconds, not the proxy's microseconds)
    pd.testing.assert_frame_equal(rows_in_order(logs.drop(columns=["flow_id", "sent_at", "capture_id"])),
                                  rows_in_order(har_cap.table("telemetry_logs").drop(columns=["flow_id", "sent_at", "capture_id"])))
    assert set(har_cap.table("errors").stage) <= {"request"}


def test_origin_speaks_the_receivers_answers(origin):
    """The origin's receivers answer as the real ones do, and refuse what they would refuse."""
    with httpx.Client(verify=origin.verify, timeout=30) as client:
        base = origin.url
        path, body = T.statsig_rgstr([T.statsig_event("e", 1, "/", at_ms=1)])
        assert client.post(base + path, content=body).status_code == 202
        assert client.post(base + path, content=b"\x1f\x8bnot gzip").status_code == 400
        assert client.post(base + "/ces/statsc/flush", json=T.statsc_flush()).json() == {"success": True}
        message = T.otlp_request(AT)
        ok = client.post(base + "/otlp/v1/metrics", content=message.SerializeToString(),
                         headers={"content-type": T.PROTOBUF})
        assert ok.status_code == 200 and ok.content == b""  # an empty ExportMetricsServiceResponse
        bad = client.post(base + "/otlp/v1/metrics", content=b"\xff\xff\xff", headers={"content-type": T.PROTOBUF})
        assert bad.status_code == 400
        assert client.post(base + "/otlp/v1/metrics", content=b"x",
                           headers={"content-type": "text/plain"}).status_code == 415
        assert client.post(base + T.datadog_intake_path(), content=T.ndjson(T.datadog_logs("/", AT))).status_code == 202
    received = [r for r in origin.log() if r["kind"] == "request" and r["path"] == "/otlp/v1/metrics"]
    assert received[-3]["n_points"] == 3
