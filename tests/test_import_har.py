"""HAR import: entry conversion (timings, quirks, ids), detection, fixtures in three browsers' shapes, bad input."""

from __future__ import annotations

import base64
import gzip
import json
import os
import zlib
from datetime import datetime
from pathlib import Path

import pytest
from mitmproxy import http

from analyzer.importer import ImportFailed, import_sources
from analyzer.sources import find_sources
from analyzer.sources.detect import sniff_compression, sniff_kind
from analyzer.sources.har import EntryError, entry_to_flow, har_flow_id, har_timings, http_version
from analyzer.store import load_capture

FIXTURES = Path(__file__).parent / "fixtures" / "har"
# Exporters whose fixture holds the same ChatGPT session (insomnia.har holds API calls instead).
BROWSERS = ("chrome", "firefox", "safari", "charles", "fiddler")
# What every fixture holds (see tests/fixtures/har/make_fixtures.py, which wrote them).
V1_TEXT = "Here are three famous people."
LEGACY_TEXT = "Hello! How can I help?"


def minimal_entry(**over) -> dict:
    entry = {
        "startedDateTime": "2026-01-24T15:03:20.000Z",
        "time": 100.0,
        "request": {"method": "POST", "url": "https://chatgpt.com/backend-api/lat/r", "httpVersion": "h3",
                    "headers": [{"name": "content-type", "value": "application/json"}],
                    "postData": {"mimeType": "application/json", "text": '{"model": "x"}'}},
        "response": {"status": 200, "httpVersion": "h3", "headers": [], "content": {"text": "{}"}},
        "timings": {"blocked": 2, "dns": -1, "connect": 10, "ssl": 5, "send": 1, "wait": 50, "receive": 37},
    }
    entry.update(over)
    return entry


# ---------------------------------------------------------------- timings and versions


def test_ttfb_is_the_non_negative_phases_before_receive_and_duration_is_time():
    t = har_timings(minimal_entry())
    assert t["ttfb_ms"] == 2 + 10 + 1 + 50  # dns -1 left out; ssl is inside connect
    assert t["duration_ms"] == 100.0
    assert t["started_at"] == 1769267000.0


def test_timings_without_time_or_phases():
    no_time = minimal_entry()
    del no_time["time"]
    assert har_timings(no_time)["duration_ms"] == 2 + 10 + 1 + 50 + 37
    bare = minimal_entry(timings={"blocked": -1, "wait": -1})
    del bare["time"]
    assert har_timings(bare) == {"started_at": 1769267000.0, "ttfb_ms": None, "duration_ms": None}


def test_started_with_offset():
    t = har_timings(minimal_entry(startedDateTime="2026-01-24T17:03:20.500+02:00"))
    assert t["started_at"] == 1769267000.5


@pytest.mark.parametrize("raw,want", [("h3", "HTTP/3"), ("http/2.0", "HTTP/2"), ("HTTP/2", "HTTP/2"),
                                      ("h2", "HTTP/2"), ("HTTP/1.1", "HTTP/1.1"), ("http/1.0", "HTTP/1.0"),
                                      ("", "HTTP/1.1"), ("unknown", "HTTP/1.1"), (None, "HTTP/1.1")])
def test_http_version_spellings(raw, want):
    assert http_version(raw) == want


# ---------------------------------------------------------------- entry -> flow


def test_entry_becomes_a_flow_with_har_timings_and_spread_timestamps():
    f = entry_to_flow(minimal_entry(), "id-1")
    assert f.id == "id-1"
    assert f.request.method == "POST" and f.request.host == "chatgpt.com" and f.request.port == 443
    assert f.request.http_version == "HTTP/3"
    assert f.request.content == b'{"model": "x"}'
    assert f.metadata["chatwire"]["har_timings"]["ttfb_ms"] == 63
    assert (f.response.timestamp_start - f.request.timestamp_start) * 1000 == pytest.approx(63)
    assert (f.response.timestamp_end - f.request.timestamp_start) * 1000 == pytest.approx(100)


def test_pseudo_headers_dropped_and_authority_kept():
    e = minimal_entry()
    e["request"]["headers"] = [{"name": ":authority", "value": "chatgpt.com"}, {"name": ":path", "value": "/x"},
                               {"name": "accept", "value": "*/*"}]
    f = entry_to_flow(e, "x")
    assert list(f.request.headers.keys()) == ["accept"]
    assert f.request.authority == "chatgpt.com"


def test_post_data_params_become_a_form_body():
    e = minimal_entry()
    e["request"]["postData"] = {"mimeType": "application/x-www-form-urlencoded",
                                "params": [{"name": "a", "value": "1 2"}, {"name": "b", "value": "&"}]}
    assert entry_to_flow(e, "x").request.content == b"a=1+2&b=%26"


def test_binary_post_bodies_base64_and_byte_per_character():
    raw = gzip.compress(b'{"events": []}', mtime=0)
    e = minimal_entry()
    e["request"]["postData"] = {"mimeType": "text/plain", "text": base64.b64encode(raw).decode(), "encoding": "base64"}
    assert entry_to_flow(e, "x").request.content == raw
    e["request"]["postData"] = {"mimeType": "text/plain", "text": raw.decode("latin-1")}
    assert entry_to_flow(e, "x").request.content == raw


def test_decoded_body_under_content_encoding_header_loses_the_header():
    e = minimal_entry()
    e["response"]["headers"] = [{"name": "content-encoding", "value": "br"}]
    e["response"]["content"] = {"text": "data: {}\n\n"}
    f = entry_to_flow(e, "x")
    assert "content-encoding" not in f.response.headers
    assert f.response.raw_content == b"data: {}\n\n"
    assert f.metadata["chatwire"]["har_content_encoding"] == "br"


def test_still_encoded_body_keeps_its_header():
    e = minimal_entry()
    body = gzip.compress(b"data: {}\n\n")
    e["response"]["headers"] = [{"name": "content-encoding", "value": "gzip"}]
    e["response"]["content"] = {"text": base64.b64encode(body).decode(), "encoding": "base64"}
    f = entry_to_flow(e, "x")
    assert f.response.headers["content-encoding"] == "gzip"
    assert f.response.content == b"data: {}\n\n"


def test_status_zero_is_a_flow_without_response():
    e = minimal_entry()
    e["response"] = {"status": 0, "httpVersion": "", "headers": [], "content": {}, "_error": "net::ERR_ABORTED"}
    f = entry_to_flow(e, "x")
    assert f.response is None and f.error.msg == "net::ERR_ABORTED"


def test_missing_body_is_empty():
    e = minimal_entry()
    e["response"]["content"] = {"size": 5120, "mimeType": "image/png"}
    assert entry_to_flow(e, "x").response.raw_content == b""


def test_websocket_messages_keep_their_times():
    e = minimal_entry()
    e["response"]["status"] = 101
    e["_webSocketMessages"] = [
        {"type": "send", "time": 1769267001.25, "opcode": 1, "data": "hi"},
        {"type": "receive", "time": 1769267001.5, "opcode": 2, "data": base64.b64encode(b"\x00\x01").decode()},
        {"type": "receive", "time": 1769267001.6, "opcode": 9, "data": ""},  # ping: no stream item
    ]
    ws = entry_to_flow(e, "x").websocket
    assert [(m.from_client, m.content, m.timestamp, m.is_text) for m in ws.messages] == [
        (True, b"hi", 1769267001.25, True), (False, b"\x00\x01", 1769267001.5, False)]


@pytest.mark.parametrize("mutate,message", [
    (lambda e: e.pop("startedDateTime"), "bad field 'startedDateTime': None is not an ISO 8601 time"),
    (lambda e: e.update(startedDateTime="yesterday"), "bad field 'startedDateTime': 'yesterday' is not an ISO 8601 time"),
    (lambda e: e["request"].pop("url"), "missing field 'request.url'"),
    (lambda e: e["request"].pop("method"), "missing field 'request.method'"),
    (lambda e: e.pop("response"), "missing field 'response'"),
    (lambda e: e["response"].pop("status"), "missing field 'response.status'"),
    (lambda e: e["request"].update(url="not a url"), "bad field 'request.url': 'not a url'"),
])
def test_entry_errors_name_the_field(mutate, message):
    e = minimal_entry()
    mutate(e)
    with pytest.raises(EntryError) as info:
        entry_to_flow(e, "x")
    assert str(info.value).startswith(message)


def test_flow_ids_are_stable_and_depend_on_file_and_index():
    assert har_flow_id("ab" * 32, 3) == har_flow_id("ab" * 32, 3)
    assert len({har_flow_id("ab" * 32, 3), har_flow_id("ab" * 32, 4), har_flow_id("cd" * 32, 3)}) == 3


# ---------------------------------------------------------------- detection


def test_detection_by_content():
    assert sniff_kind(b'\xef\xbb\xbf  {"log"') == "har"
    assert sniff_kind(b'\n{"log"') == "har"
    assert sniff_kind(b"1234:{") == "flowfile"
    assert sniff_kind(b"") == "flowfile"
    assert sniff_kind(b"<html>") is None
    assert sniff_compression(zlib.compress(b"{}")) == "zlib"
    assert sniff_compression(gzip.compress(b"{}")) == "gzip"
    assert sniff_compression(b'{"log"') is None


def test_kind_is_told_by_content_not_name(tmp_path):
    data = (FIXTURES / "chrome.har").read_bytes()
    (tmp_path / "capture.flows").write_bytes(data)  # a HAR with a flow-file name
    (tmp_path / "notes.har").write_text("not traffic")
    (tmp_path / "export.zhar").write_bytes(zlib.compress(data, 9))  # what mitmproxy's save.har writes
    (tmp_path / "bom.har").write_bytes(b"\xef\xbb\xbf" + data)
    (tmp_path / "gz.har.gz").write_bytes(gzip.compress(data))
    sources, errors, skipped = find_sources([tmp_path])
    kinds = {s.path.name: (s.kind, s.compression) for s in sources}
    assert kinds == {"capture.flows": ("har", None), "export.zhar": ("har", "zlib"), "bom.har": ("har", None),
                     "gz.har.gz": ("har", "gzip")}
    assert [p.name for p in skipped] == ["notes.har"] and errors == []


@pytest.mark.parametrize("browser", [*BROWSERS, "insomnia"])
def test_flows_pass_mitmproxys_own_type_check(browser):
    """entry_to_flow skips mitmproxy's per-field type check for speed: every field must still pass it."""
    from dataclasses import fields

    from mitmproxy.utils.typecheck import check_option_type

    entries = json.loads((FIXTURES / f"{browser}.har").read_text())["log"]["entries"]
    checked = 0
    for i, entry in enumerate(entries):
        f = entry_to_flow(entry, f"flow-{i}")
        for message in (f.request, f.response):
            if message is None:
                continue
            assert type(message.data) is (http.RequestData if message is f.request else http.ResponseData)
            for field in fields(message.data):
                check_option_type(field.name, getattr(message.data, field.name), field.type)
                checked += 1
        assert f.request.get_state() == http.Request.from_state(f.request.get_state()).get_state()
    assert checked > 20 * len(entries) // 2


# ---------------------------------------------------------------- whole files


def expected_timings(browser: str) -> dict[tuple[str, int], tuple[float | None, float | None]]:
    """(url without query, start in ms) -> (ttfb, duration), from the fixture's own `timings` and `time`."""
    out = {}
    for e in json.loads((FIXTURES / f"{browser}.har").read_text())["log"]["entries"]:
        phases = [e["timings"].get(p, -1) for p in ("blocked", "dns", "connect", "send", "wait")]
        known = [p for p in phases if p >= 0]
        ttfb = sum(known) if known else None
        duration = e.get("time", (ttfb or 0) + max(e["timings"].get("receive", -1), 0))
        start_ms = round(datetime.fromisoformat(e["startedDateTime"]).timestamp() * 1000)
        out[(e["request"]["url"].split("?")[0], start_ms)] = (ttfb, duration)
    return out


@pytest.fixture(scope="module", params=BROWSERS)
def imported(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param) / "capture.parquet"
    summary = import_sources([FIXTURES / f"{request.param}.har"], out)
    return request.param, summary, load_capture(out)


def test_fixture_conversations_in_both_stream_generations(imported):
    browser, summary, capture = imported
    turns = capture.table("conversation_turns")
    by_format = {fmt: set(group["assistant_text"]) for fmt, group in turns.groupby("stream_format")}
    assert V1_TEXT in by_format["v1"] and LEGACY_TEXT in by_format["legacy"]
    finished = turns[turns["status"] == "finished_successfully"]
    assert set(finished["stream_format"]) >= {"v1", "legacy"}
    flows = capture.table("flows")
    assert set(flows["source"]) == {"har"}
    assert summary.recognised["conversation"] == len(turns[turns["stream_format"] != "websocket"])


def test_fixture_beacon_segment_statsig(imported):
    _, _, capture = imported
    beacons = capture.table("latency_beacons")
    assert list(beacons["ts_first_token_ms"]) == [1548.7]
    assert list(beacons["server_request_id"]) == ["847dbf366a92408c-SIN"]
    assert list(capture.table("segment_events")["event"]) == ["Prompt Sent", "Message Streamed", "Copy Clicked"]
    assert sorted(capture.table("statsig_events")["event_name"]) == ["chatgpt_prompt_sent", "chatgpt_response_done"]


def test_fixture_timings_from_har_and_null_event_times(imported):
    browser, _, capture = imported
    want = expected_timings(browser)
    flows = capture.table("flows")
    for row in flows.itertuples():
        key = (f"{row.scheme}://{row.host}{row.path}", round(row.started_at.timestamp() * 1000))
        ttfb, duration = want[key]
        assert row.ttfb_ms == pytest.approx(ttfb)
        assert row.duration_ms == pytest.approx(duration)
    events = capture.table("stream_events")
    ws_ids = set(flows.loc[flows["kind"] == "conversation_websocket", "flow_id"])
    sse = events[~events["flow_id"].str.split("#").str[0].isin(ws_ids)]
    assert len(sse) > 0 and sse["at"].isna().all()  # HAR has no per-event timing: none invented


def test_api_client_export_gives_api_calls_with_usage_and_no_key(tmp_path):
    out = tmp_path / "c"
    summary = import_sources([FIXTURES / "insomnia.har"], out)
    assert summary.recognised == {"api": 2} and summary.errors == []
    capture = load_capture(out)
    calls = capture.table("api_calls").sort_values("started_at")
    assert list(calls["endpoint"]) == ["/v1/chat/completions", "/v1/responses"]
    assert list(calls["response_text"]) == ["Hi there", "Hello world"]
    assert list(calls["model"]) == ["gpt-4o-mini-2024-07-18", "gpt-4.1-mini"]  # the model that answered
    assert list(calls["total_tokens"]) == [11, 7]
    assert list(calls["finish_reason"])[0] == "stop"
    assert calls["ttft_ms"].isna().all()  # HAR: no per-event times, so no TTFT invented
    flows = capture.table("flows")
    assert list(flows["ttfb_ms"]) == [0.0, 0.0] and list(flows["duration_ms"]) == [0.0, 0.0]
    key = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
    for path in out.rglob("*.parquet"):
        assert key.encode() not in path.read_bytes()
    assert key not in capture.table("flows")["request_headers"].str.cat()


def test_chrome_websocket_frames_keep_their_times(tmp_path):
    out = tmp_path / "c"
    import_sources([FIXTURES / "chrome.har"], out)
    capture = load_capture(out)
    turns = capture.table("conversation_turns")
    ws = turns[turns["stream_format"] == "websocket"]
    assert list(ws["assistant_text"]) == ["Socket streamed answer"]
    events = capture.table("stream_events")
    ws_events = events[events["flow_id"].isin(ws["flow_id"])]
    frames = [m for m in json.loads((FIXTURES / "chrome.har").read_text())["log"]["entries"][-1]["_webSocketMessages"]
              if m["type"] == "receive"]
    assert [t.timestamp() for t in ws_events["at"]] == pytest.approx([m["time"] for m in frames])
    aborted = capture.table("flows").query("kind == 'conversation_read'")
    assert list(aborted["error"]) == ["net::ERR_ABORTED"] and aborted["status_code"].isna().all()


def test_safari_truncated_body_is_kept_with_an_error_row(tmp_path):
    out = tmp_path / "s"
    summary = import_sources([FIXTURES / "safari.har"], out)
    capture = load_capture(out)
    turns = capture.table("conversation_turns")
    cut = turns[turns["assistant_text"] == "Cut off"]
    assert len(cut) == 1 and cut["status"].iloc[0] != "finished_successfully"
    assert summary.errors == []  # a truncated body is the extractor's error row, not an import error
    assert len(capture.table("errors")) >= 1


def test_redaction_on_by_default_and_off_on_request(tmp_path):
    secret = "secret-token.value"
    import_sources([FIXTURES / "chrome.har"], tmp_path / "red")
    import_sources([FIXTURES / "chrome.har"], tmp_path / "raw", redact=False)

    def dump(path: Path) -> str:
        capture = load_capture(path)
        return "".join(capture.table(n).to_json(date_format="iso") for n in ("flows", "conversation_turns"))

    assert secret not in dump(tmp_path / "red")
    assert secret in dump(tmp_path / "raw")


def test_import_twice_and_bom_and_zhar(tmp_path):
    out = tmp_path / "cap"
    data = (FIXTURES / "firefox.har").read_bytes()
    (tmp_path / "ff.zhar").write_bytes(zlib.compress(data, 9))
    first = import_sources([FIXTURES / "firefox.har"], out)
    counts = load_capture(out).counts()
    again = import_sources([FIXTURES / "firefox.har"], out)
    assert load_capture(out).counts() == counts
    assert again.n_recognised == 0 and again.already_present == first.n_recognised
    other = tmp_path / "other"
    import_sources([tmp_path / "ff.zhar"], other)
    assert load_capture(other).counts() == counts


def test_good_entries_kept_bad_ones_reported(tmp_path):
    har = json.loads((FIXTURES / "firefox.har").read_text())
    del har["log"]["entries"][2]["request"]["url"]
    har["log"]["entries"][3] = "garbage"
    src = tmp_path / "mixed.har"
    src.write_text(json.dumps(har))
    out = tmp_path / "cap"
    summary = import_sources([src], out)
    assert summary.errors == [f"{src}: entry 2: missing field 'request.url'", f"{src}: entry 3: not an object"]
    capture = load_capture(out)
    assert set(capture.table("flows")["kind"]) == {"conversation", "statsig"}
    errors = capture.table("errors")
    assert sorted(errors.loc[errors["stage"] == "import", "error"]) == summary.errors
    import_sources([src], out)  # again: the failures are not recorded twice
    assert len(load_capture(out).table("errors").query("stage == 'import'")) == 2


@pytest.mark.parametrize("content,message", [
    (b"hello, world", "{path}: not a HAR file or a mitmproxy flow file"),
    (b'{"a": 1}', "{path}: JSON but not a HAR file (no log.entries list)"),
    (b'{"log": {"entries": [}', "{path}: invalid JSON after 0 complete entries (parse error: unallowed token"),
    (b'{"log": {"entries": [{"startedDateTime": "2026-', "{path}: truncated file: the JSON ends after 0 complete entries"),
    (b'\x78\x9c{"log"', "{path}: looks zlib-compressed but cannot be decompressed"),
])
def test_bad_files_fail_with_one_line_and_leave_nothing(tmp_path, content, message):
    src = tmp_path / "input.har"
    src.write_bytes(content)
    out = tmp_path / "cap"
    with pytest.raises(ImportFailed) as info:
        import_sources([src], out)
    text = str(info.value)
    assert text.startswith("nothing imported: " + message.format(path=src)) and "\n" not in text
    assert sorted(os.listdir(tmp_path)) == ["input.har"]  # no capture, no hidden temp dir


def test_truncated_file_keeps_its_whole_entries(tmp_path):
    data = (FIXTURES / "firefox.har").read_text()
    src = tmp_path / "cut.har"
    src.write_text(data[: data.index('"https://chatgpt.com/ces/v1/b"')])  # inside entry 3
    summary = import_sources([src], tmp_path / "cap")
    size = src.stat().st_size
    line = f"{src}: truncated file: the JSON ends after 3 complete entries (in entry 3, at byte {size}, the end of the file)"
    assert summary.errors == [line] and summary.damaged_files == [src]
    assert summary.flows_read == 3
    capture = load_capture(tmp_path / "cap")
    assert list(capture.table("flows")["kind"]) == ["conversation", "conversation", "latency_beacon"]
    errors = capture.table("errors")
    assert list(errors["stage"]) == ["import"] and list(errors["error"]) == [line]
    again = import_sources([src], tmp_path / "cap")  # the damage is recorded once, not per import
    assert again.damaged_files == [src] and len(load_capture(tmp_path / "cap").table("errors")) == 1


def test_every_entry_bad_is_nothing_read(tmp_path):
    src = tmp_path / "bad.har"
    src.write_text(json.dumps({"log": {"entries": [{"request": {}}]}}))
    with pytest.raises(ImportFailed, match=r"^nothing imported: .*bad.har: entry 0: bad field 'startedDateTime'"):
        import_sources([src], tmp_path / "cap")
    assert not (tmp_path / "cap").exists()


def test_empty_har_is_not_an_error(tmp_path):
    src = tmp_path / "empty.har"
    src.write_text('{"log": {"version": "1.2", "entries": []}}')
    summary = import_sources([src], tmp_path / "cap")
    assert summary.n_recognised == 0 and summary.errors == [] and "0 recognised" in summary.line()
    assert load_capture(tmp_path / "cap").counts()["flows"] == 0


def test_failed_append_leaves_the_capture_as_it_was(tmp_path):
    out = tmp_path / "cap"
    import_sources([FIXTURES / "safari.har"], out)
    bad = tmp_path / "bad.har"
    bad.write_text("{")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    with pytest.raises(ImportFailed):
        import_sources([bad], out)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


def test_appending_a_different_file_adds_to_the_capture(tmp_path):
    out = tmp_path / "cap"
    import_sources([FIXTURES / "safari.har"], out)
    n_safari = load_capture(out).counts()["flows"]
    import_sources([FIXTURES / "firefox.har"], out)
    flows = load_capture(out).table("flows")
    assert len(flows) == n_safari + 5 and flows["flow_id"].is_unique


def test_progress_reports_bytes_up_to_the_total(tmp_path):
    seen: list[tuple[int, int]] = []
    import_sources([FIXTURES / "chrome.har", FIXTURES / "firefox.har"], tmp_path / "c",
                   progress=lambda done, total: seen.append((done, total)))
    total = sum((FIXTURES / f"{b}.har").stat().st_size for b in ("chrome", "firefox"))
    assert seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_entry_flow_is_a_real_http_flow():
    assert isinstance(entry_to_flow(minimal_entry(), "x"), http.HTTPFlow)
