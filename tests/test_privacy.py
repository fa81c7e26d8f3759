"""The privacy audit (``analyze privacy``): parties, identifiers, sharing, fingerprint, and a diff.

Flows are built as a browser on chatgpt.com sends them (first-party Segment proxy, Statsig on
ab.chatgpt.com and on a third-party domain, Datadog logs), written to a real ``mitmdump -w`` flow
file, imported with ``analyze import``, and audited through the CLI. The expected values are worked
out here by hand (hosts by eTLD+1, hashes with hashlib), independent of the code under test.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from click.testing import CliRunner
from mitmproxy.io import FlowWriter

from analyzer.analysis.privacy import registrable_domain
from analyzer.cli import main
from tests.flows_factory import make_flow

SALT = "test-salt"
USER = "user-5c2b1e0f"
ANON = "anon-77e1d0"
STABLE = "stable-9f8e7d"
DEVICE = "device-0a1b2c3d"
SESSION_COOKIE = "SessionCookieSecret.do-not-leak-0001"
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/142.0 Safari/537.36"


def expected_hash(kind: str, value: str) -> str:
    return hashlib.sha256(f"{SALT}\0{kind}\0{value}".encode()).hexdigest()[:16]


def browser_flows(*, with_segment: bool = True) -> list:
    web = {"user-agent": UA, "oai-device-id": DEVICE, "accept-language": "de-DE,de;q=0.9",
           "cookie": f"__Secure-next-auth.session-token={SESSION_COOKIE}; oai-did={DEVICE}"}
    conversation = make_flow(
        "POST", "/backend-api/f/conversation", host="chatgpt.com", request_headers=web,
        body={"action": "next", "model": "auto", "parent_message_id": "client-created-root",
              "messages": [{"id": "u1", "author": {"role": "user"}, "content": {"content_type": "text",
                                                                                "parts": ["hi"]}}],
              "timezone_offset_min": -60, "timezone": "Europe/Berlin",
              "client_contextual_info": {"is_dark_mode": True, "page_height": 1021, "page_width": 1512,
                                         "pixel_ratio": 2, "screen_height": 982, "screen_width": 1512}},
        content_type="text/event-stream", response_body="data: [DONE]\n\n")
    flows = [conversation]
    if with_segment:
        flows.append(make_flow("POST", "/ces/v1/b", host="chatgpt.com", request_headers=web, body={
            "batch": [{"type": "track", "event": "Sent message", "userId": USER, "anonymousId": ANON,
                       "messageId": "m1", "timestamp": "2026-11-30T10:00:00Z",
                       "context": {"userAgent": UA, "locale": "de-DE", "screen": {"width": 1512, "height": 982},
                                   "page": {"path": "/c/abc"}}}], "sentAt": "2026-11-30T10:00:01Z"}))
    statsig = {"events": [{"eventName": "chatgpt_prompt_sent", "user": {"userID": USER, "customIDs": {
        "stableID": STABLE}}, "time": 1764496800000}], "statsigMetadata": {"stableID": STABLE}}
    flows.append(make_flow("POST", "/v1/rgstr?k=client-key&sid=s-1", host="ab.chatgpt.com", body=statsig,
                           request_headers={"user-agent": UA}))
    flows.append(make_flow("POST", "/v1/rgstr", host="featuregates.org", body=statsig,
                           request_headers={"user-agent": UA}))
    flows.append(make_flow("POST", "/api/v2/logs?dd-api-key=pub&ddsource=browser", host="browser-intake-datadoghq.com",
                           body=b'{"message":"x"}\n', request_headers={"user-agent": UA, "oai-device-id": DEVICE},
                           response_headers={"set-cookie": "_dd_s=rum=1; Path=/"}))
    return flows


def import_capture(tmp_path: Path, name: str, flows: list) -> Path:
    flow_file = tmp_path / f"{name}.mitm"
    with flow_file.open("wb") as fh:
        writer = FlowWriter(fh)
        for flow in flows:
            writer.add(flow)
    out = tmp_path / f"{name}.parquet"
    result = CliRunner().invoke(main, ["import", str(flow_file), "-o", str(out), "--all-flows"])
    assert result.exit_code == 0, result.output
    return out


def audit_json(*args: str) -> dict:
    result = CliRunner().invoke(main, ["privacy", *args, "--salt", SALT, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_registrable_domains_from_the_bundled_suffix_list():
    assert registrable_domain("ab.chatgpt.com") == "chatgpt.com"
    assert registrable_domain("browser-intake-datadoghq.com") == "browser-intake-datadoghq.com"
    assert registrable_domain("foo.bar.co.uk") == "bar.co.uk"
    assert registrable_domain("127.0.0.1") == "127.0.0.1"


def test_audit_of_a_browser_session(tmp_path):
    capture = import_capture(tmp_path, "web", browser_flows())
    audit = audit_json(str(capture))
    assert audit["site"] == "chatgpt.com"

    hosts = {h["host"]: h for h in audit["hosts"]}
    assert set(hosts) == {"chatgpt.com", "ab.chatgpt.com", "featuregates.org", "browser-intake-datadoghq.com"}
    assert hosts["chatgpt.com"]["party"] == "first" and hosts["chatgpt.com"]["owner"] == "OpenAI"
    assert hosts["chatgpt.com"]["processors"] == ["Segment"]  # the first-party /ces/ proxy
    assert hosts["ab.chatgpt.com"]["party"] == "first" and hosts["ab.chatgpt.com"]["processors"] == ["Statsig"]
    assert hosts["featuregates.org"]["party"] == "third" and hosts["featuregates.org"]["owner"] == "Statsig"
    assert hosts["browser-intake-datadoghq.com"]["party"] == "third"
    assert hosts["browser-intake-datadoghq.com"]["owner"] == "Datadog"

    ids = audit["identifiers"]
    by_field = {(i["field"], i["host"]): i for i in ids}
    device = by_field[("header:oai-device-id", "chatgpt.com")]
    assert device["kind"] == "device_id" and device["value_hash"] == expected_hash("device_id", DEVICE)
    assert sorted(device["endpoints"]) == ["/backend-api/f/conversation", "/ces/v1/b"] and device["n"] == 2
    assert by_field[("header:oai-device-id", "browser-intake-datadoghq.com")]["party"] == "third"
    # cookie names are kept, their values were redacted before they reached disk: no hash
    session = by_field[("cookie:__Secure-next-auth.session-token", "chatgpt.com")]
    assert session["kind"] == "session_cookie" and session["value_hash"] is None
    assert by_field[("cookie:oai-did", "chatgpt.com")]["kind"] == "device_id"
    assert by_field[("set-cookie:_dd_s", "browser-intake-datadoghq.com")]["kind"] == "session_id"
    assert by_field[("query:sid", "ab.chatgpt.com")]["value_hash"] == expected_hash("session_id", "s-1")
    assert by_field[("segment_events.user_id", "chatgpt.com")]["recipient"] == "Segment"
    assert by_field[("segment_events.anonymous_id", "chatgpt.com")]["value_hash"] == expected_hash(
        "anonymous_id", ANON)
    assert by_field[("statsig_events.stable_id", "featuregates.org")]["value_hash"] == expected_hash(
        "stable_id", STABLE)

    links = {(link["kind"], link["value_hash"]): link for link in audit["links"]}
    user = links[("user_id", expected_hash("user_id", USER))]
    assert user["recipients"] == ["Segment", "Statsig"] and user["cross_party"] is True
    stable = links[("stable_id", expected_hash("stable_id", STABLE))]
    assert stable["hosts"] == ["ab.chatgpt.com", "featuregates.org"] and stable["n_domains"] == 2
    device_link = links[("device_id", expected_hash("device_id", DEVICE))]
    assert "browser-intake-datadoghq.com" in device_link["hosts"] and device_link["cross_party"] is True

    fingerprint = {(f["attribute"], f["value"]) for f in audit["fingerprint"]}
    assert {("user_agent", UA), ("screen_width", "1512"), ("screen_height", "982"), ("pixel_ratio", "2"),
            ("page_width", "1512"), ("dark_mode", "true"), ("timezone", "Europe/Berlin"),
            ("timezone_offset_min", "-60"), ("locale", "de-DE"),
            ("accept_language", "de-DE,de;q=0.9")} <= fingerprint


def test_no_raw_identifier_or_secret_in_any_format(tmp_path):
    capture = import_capture(tmp_path, "web", browser_flows())
    for fmt in ("text", "markdown", "json"):
        result = CliRunner().invoke(main, ["privacy", str(capture), "--format", fmt])
        assert result.exit_code == 0, result.output
        for raw in (USER, ANON, STABLE, DEVICE, SESSION_COOKIE, "s-1&"):
            assert raw not in result.output, (fmt, raw)


def test_diff_of_two_captures(tmp_path):
    remember = import_capture(tmp_path, "remember", browser_flows())
    forget = import_capture(tmp_path, "forget", browser_flows(with_segment=False))
    audit = audit_json(str(remember), "--against", str(forget))
    diff = audit["diff"]
    only_a = {(i["kind"], i["field"], i["host"]) for i in diff["identifiers"]["only_a"]}
    assert ("user_id", "segment_events.user_id", "chatgpt.com") in only_a
    assert ("anonymous_id", "segment_events.anonymous_id", "chatgpt.com") in only_a
    assert not diff["identifiers"]["only_b"]
    assert {(f["attribute"], f["value"]) for f in diff["fingerprint"]["only_a"]} == {("locale", "de-DE")}
    assert not diff["hosts"]["only_a"] and not diff["hosts"]["only_b"]  # the same hosts either way
    # the text format says it too
    text = CliRunner().invoke(main, ["privacy", str(remember), "--against", str(forget)]).output
    assert "Difference to the other capture".upper() in text


def test_bad_capture_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["privacy", str(tmp_path / "missing.parquet")])
    assert result.exit_code != 0 and "missing.parquet" in result.output
    assert "Traceback" not in result.output
