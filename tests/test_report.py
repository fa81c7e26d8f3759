"""The whole report object: exact top-level keys, capture/conversation counts by hand, JSON safety,
and plain words (never NaN) for empty or nearly empty captures."""

from __future__ import annotations

import json
import shutil

import pytest

from analyzer.analysis import render_report
from analyzer.analysis.report import TOP_LEVEL_KEYS, build_report, report_columns
from analyzer.schema import TABLES
from analyzer.store import load_capture
from tests.test_latency import LEGACY, known_rows, write_capture
from tests.test_telemetry import telemetry_rows


@pytest.fixture(scope="module")
def full_path(tmp_path_factory):
    return write_capture(tmp_path_factory.mktemp("rep") / "full.parquet", known_rows() | telemetry_rows())


@pytest.fixture(scope="module")
def report(full_path):
    return build_report(load_capture(full_path))


def test_top_level_keys_are_exactly_the_four(report):
    assert tuple(report) == TOP_LEVEL_KEYS == ("capture", "conversations", "latency", "telemetry", "codex")
    assert set(report["latency"]) >= {"observed", "client_reported", "matched", "by_model", "api"}
    assert set(report["telemetry"]) >= {"segment", "statsig", "identifiers", "events_in_conversations"}
    # JSON for programs: no NaN anywhere, and it round-trips.
    assert json.loads(json.dumps(report, allow_nan=False)) == report


def test_capture_block_by_hand(report):
    cap = report["capture"]
    assert cap["flows"] == 10
    assert cap["by_kind"] == {"conversation": 4, "latency_beacon": 4, "api_chat_completions": 2}
    assert cap["first_at"] == "2025-01-02T10:00:00+00:00"
    # The last flow starts at T0 + 400 s and lasts 3 s.
    assert cap["last_at"] == "2025-01-02T10:06:43+00:00"
    assert cap["errors"] == 1 and cap["flows_with_error"] == 1


def test_conversations_block_by_hand(report):
    conv = report["conversations"]
    # A, B and the one seen only as a request message started from the placeholder root.
    assert conv["count"] == 3
    assert conv["turns"] == 4
    # sa0 ua1 aa1 ua2 aa2 ub1 ab1 ub2 ab2 uc1: sightings counted once.
    assert conv["messages"] == 10
    # ua1 has two children (aa1 and the edit ua2); client-created-root is not a message.
    assert conv["branch_points"] == 1
    assert conv["by_model"] == {"gpt-4o": 3, LEGACY: 1}


def test_report_reads_only_declared_columns(full_path):
    cols = report_columns()
    assert set(cols) <= set(TABLES)
    assert "text" in cols["stream_events"] and "data" not in cols["stream_events"]
    capture = load_capture(full_path)
    build_report(capture)
    for table, columns in capture._cache:  # every read went through a declared column list
        assert columns is not None and set(columns) <= set(cols[table]), table


def test_empty_capture_says_so(tmp_path):
    cap = load_capture(write_capture(tmp_path / "empty.parquet", {}))
    report = build_report(cap)
    assert report["capture"]["flows"] == 0 and report["capture"]["first_at"] is None
    assert report["latency"]["observed"]["ttft_ms"] == {"n": 0, "mean": None, "min": None, "p50": None,
                                                         "p90": None, "p95": None, "p99": None, "max": None}
    json.dumps(report, allow_nan=False)
    for fmt in ("text", "markdown"):
        out = render_report.render(report, fmt)
        assert "This capture is empty" in out
        assert "nan" not in out.lower()


def test_nearly_empty_capture_without_timing_says_so(tmp_path):
    rows = known_rows()
    har_only = {
        "flows": [f for f in rows["flows"] if f["flow_id"] == "fd"],
        "conversation_turns": [t for t in rows["conversation_turns"] if t["flow_id"] == "fd"],
        "stream_events": [e for e in rows["stream_events"] if e["flow_id"] == "fd"],
    }
    report = build_report(load_capture(write_capture(tmp_path / "har.parquet", har_only)))
    obs = report["latency"]["observed"]
    assert (obs["turns"], obs["turns_without_timing"], obs["itl_ms"]["n"]) == (1, 1, 0)
    text = render_report.render(report, "text")
    assert "1 conversation turn, none with per-event timing" in text
    assert "No latency beacons" in text
    assert "nan" not in text.lower()


def test_text_fits_80_columns_and_puts_latency_first(report):
    text = render_report.render(report, "text")
    assert max(len(line) for line in text.splitlines()) <= 80
    assert text.index("LATENCY") < text.index("CONVERSATIONS") < text.index("TELEMETRY")
    md = render_report.render(report, "markdown")
    assert md.index("## Latency") < md.index("## Conversations")


def test_combined_captures_are_one_report(tmp_path, full_path):
    copy = tmp_path / "again.parquet"
    shutil.copytree(full_path, copy)
    both = build_report(load_capture([full_path, copy]))
    one = build_report(load_capture(full_path))
    assert both["latency"] == one["latency"]
    assert both["conversations"] == one["conversations"]
    assert both["capture"]["flows"] == one["capture"]["flows"]
    assert both["telemetry"]["identifiers"] == one["telemetry"]["identifiers"]


def test_unknown_format_is_an_error(report):
    with pytest.raises(ValueError, match="unknown report format"):
        render_report.render(report, "html")
