"""Segment/Statsig counts, the identifiers table and the conversation links, checked by hand.

The fixture (``telemetry_rows``, shared with test_report.py) sends:

* Segment to chatgpt.com: a track "Message Sent" inside conversation A (conversation_id column)
  with userId u-1, anonymousId anon-1 and ``context.traits.workspace_id`` ws-1; a page event on
  ``/c/<conversation B>`` (conversation only in page_path) with the same two ids; a track
  "Model Switched" from a second anonymous id anon-2 and no user.
* Statsig to ab.chatgpt.com: "chatgpt_conversation_turn" with userID u-1, stableID st-1 and
  custom ids {workspaceID: ws-1, deviceID: dev-1}, currentPage ``/c/<conversation B>``.
* Statsig to events.statsigapi.net: "statsig::diagnostics" with u-1, st-1, deviceID dev-1, on a
  page naming a conversation that is not in the capture.
"""

from __future__ import annotations

import json

import pytest

from analyzer.analysis import telemetry
from analyzer.store import load_capture
from tests.test_latency import CONV_A, CONV_B, T0, known_rows, write_capture

UNKNOWN_CONV = "c0ffee00-0000-4000-8000-0000000000ff"


def telemetry_rows() -> dict[str, list[dict]]:
    seg = [
        {"flow_id": "s1", "sent_at": T0 + 1, "host": "chatgpt.com", "endpoint": "t", "type": "track",
         "event": "Message Sent", "user_id": "u-1", "anonymous_id": "anon-1", "message_id": "m-1",
         "page_path": f"/c/{CONV_A}", "conversation_id": CONV_A, "properties": json.dumps({"model": "gpt-4o"}),
         "context": json.dumps({"page": {"path": f"/c/{CONV_A}"}, "traits": {"workspace_id": "ws-1"}})},
        {"flow_id": "s2", "sent_at": T0 + 2, "host": "chatgpt.com", "endpoint": "p", "type": "page",
         "event": None, "user_id": "u-1", "anonymous_id": "anon-1", "message_id": "m-2",
         "page_path": f"/c/{CONV_B}", "conversation_id": None, "properties": "{}", "context": "{}"},
        {"flow_id": "s3", "sent_at": T0 + 3, "host": "chatgpt.com", "endpoint": "b", "type": "track",
         "event": "Model Switched", "user_id": None, "anonymous_id": "anon-2", "message_id": "m-3",
         "page_path": "/", "properties": json.dumps({"to": "gpt-4o"}), "context": None},
    ]
    st = [
        {"flow_id": "g1", "sent_at": T0 + 4, "host": "ab.chatgpt.com", "event_name": "chatgpt_conversation_turn",
         "user_id": "u-1", "stable_id": "st-1", "custom_ids": json.dumps({"workspaceID": "ws-1", "deviceID": "dev-1"}),
         "current_page": f"https://chatgpt.com/c/{CONV_B}", "conversation_id": CONV_B},
        {"flow_id": "g2", "sent_at": T0 + 5, "host": "events.statsigapi.net", "event_name": "statsig::diagnostics",
         "user_id": "u-1", "stable_id": "st-1", "custom_ids": json.dumps({"deviceID": "dev-1"}),
         "current_page": f"https://chatgpt.com/c/{UNKNOWN_CONV}", "conversation_id": None},
    ]
    return {"segment_events": seg, "statsig_events": st}


@pytest.fixture
def capture(tmp_path):
    rows = known_rows() | telemetry_rows()
    return load_capture(write_capture(tmp_path / "tel.parquet", rows))


def test_identifiers_table_by_hand(capture):
    ids = telemetry.identifiers(capture)
    table = {(r.kind, r.host): (r.distinct_values, r.events, r.hosts) for r in ids.itertuples()}
    both_statsig = ["ab.chatgpt.com", "events.statsigapi.net"]
    assert table == {
        ("user_id", "chatgpt.com"): (1, 2, ["ab.chatgpt.com", "chatgpt.com", "events.statsigapi.net"]),
        ("user_id", "ab.chatgpt.com"): (1, 1, ["ab.chatgpt.com", "chatgpt.com", "events.statsigapi.net"]),
        ("user_id", "events.statsigapi.net"): (1, 1, ["ab.chatgpt.com", "chatgpt.com", "events.statsigapi.net"]),
        ("anonymous_id", "chatgpt.com"): (2, 3, ["chatgpt.com"]),
        ("stable_id", "ab.chatgpt.com"): (1, 1, both_statsig),
        ("stable_id", "events.statsigapi.net"): (1, 1, both_statsig),
        ("workspace_id", "chatgpt.com"): (1, 1, ["ab.chatgpt.com", "chatgpt.com"]),
        ("workspace_id", "ab.chatgpt.com"): (1, 1, ["ab.chatgpt.com", "chatgpt.com"]),
        ("device_id", "ab.chatgpt.com"): (1, 1, both_statsig),
        ("device_id", "events.statsigapi.net"): (1, 1, both_statsig),
    }
    # Report order: kinds in a fixed order, then hosts alphabetically.
    assert list(ids["kind"]) == ["user_id"] * 3 + ["anonymous_id"] + ["stable_id"] * 2 + ["workspace_id"] * 2 + [
        "device_id"] * 2


def test_conversation_links_from_columns_and_paths(capture):
    links = telemetry.conversation_links(capture)
    named = {(r.source, r.conversation_id, bool(r.captured)) for r in links.itertuples()}
    assert named == {("segment", CONV_A, True), ("segment", CONV_B, True), ("statsig", CONV_B, True),
                     ("statsig", UNKNOWN_CONV, False)}


def test_captured_conversations_is_the_set_links_are_looked_up_in(capture):
    """The captured set: the conversations of the turns, messages and history reads, each once,
    sorted; a link is ``captured`` exactly when its conversation is in it."""
    ids = telemetry.captured_conversations(capture)
    by_hand = {c for name in ("conversation_turns", "messages", "conversation_reads")
               for c in capture.arrow(name, ["conversation_id"])["conversation_id"].to_pylist() if c is not None}
    assert {CONV_A, CONV_B} <= by_hand
    assert list(ids) == sorted(by_hand)
    links = telemetry.conversation_links(capture)
    assert all(bool(r.captured) == (r.conversation_id in set(ids)) for r in links.itertuples())


def test_telemetry_report_counts(capture):
    tel = telemetry.telemetry_report(capture)
    assert tel["segment"] == {
        "events": 3,
        "by_event": {"(page)": 1, "Message Sent": 1, "Model Switched": 1},
        "by_type": {"track": 2, "page": 1},
        "by_host": {"chatgpt.com": 3},
    }
    assert tel["statsig"]["events"] == 2
    assert tel["statsig"]["by_event"] == {"chatgpt_conversation_turn": 1, "statsig::diagnostics": 1}
    assert tel["events_in_conversations"] == 3
    assert tel["events_naming_a_conversation"] == 4
    assert tel["conversations_linked"] == 2
    assert len(tel["identifiers"]) == 10
    json.dumps(tel, allow_nan=False)


def test_no_analytics_gives_empty_blocks(tmp_path):
    cap = load_capture(write_capture(tmp_path / "quiet.parquet", known_rows()))
    tel = telemetry.telemetry_report(cap)
    assert tel["segment"]["events"] == 0 and tel["statsig"]["events"] == 0
    assert tel["identifiers"] == [] and tel["events_in_conversations"] == 0
