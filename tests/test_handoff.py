"""Hand-off POSTs folded into the WebSocket answers they started."""

from __future__ import annotations

import pandas as pd
import pytest

from analyzer.analysis.handoff import merge_handoffs


def ts(seconds: float) -> pd.Timestamp:
    return pd.Timestamp(1_700_000_000 + seconds, unit="s", tz="UTC")


def test_regeneration_pairs_in_order_and_timing_counts_from_the_post():
    turns = pd.DataFrame([
        # two POSTs for the same user message (the second is a regeneration), each handed off
        {"flow_id": "p1", "stream_format": "websocket", "conversation_id": "c", "user_message_id": "u",
         "started_at": ts(0.0), "ttft_ms": None, "e2e_ms": 4.0, "cf_ray": "ray-1", "requested_model": "auto"},
        {"flow_id": "p2", "stream_format": "websocket", "conversation_id": "c", "user_message_id": "u",
         "started_at": ts(10.0), "ttft_ms": None, "e2e_ms": 3.0, "cf_ray": "ray-2", "requested_model": "auto"},
        # their answers on one socket; offsets count from the subscribe frame 50 ms after each POST
        {"flow_id": "ws#0", "stream_format": "websocket", "conversation_id": "c", "user_message_id": "u",
         "started_at": ts(0.05), "ttft_ms": 600.0, "e2e_ms": 900.0, "cf_ray": None, "requested_model": None},
        {"flow_id": "ws#1", "stream_format": "websocket", "conversation_id": "c", "user_message_id": "u",
         "started_at": ts(10.05), "ttft_ms": 700.0, "e2e_ms": 950.0, "cf_ray": None, "requested_model": None},
        # an ordinary streamed turn is left alone
        {"flow_id": "s", "stream_format": "v1", "conversation_id": "c", "user_message_id": "u0",
         "started_at": ts(-5.0), "ttft_ms": 300.0, "e2e_ms": 500.0, "cf_ray": "ray-0", "requested_model": "auto"},
    ])
    merged = merge_handoffs(turns).set_index("flow_id")
    assert sorted(merged.index) == ["s", "ws#0", "ws#1"]
    assert merged.loc["ws#0", "cf_ray"] == "ray-1" and merged.loc["ws#1", "cf_ray"] == "ray-2"
    assert merged.loc["ws#0", "ttft_ms"] == pytest.approx(650.0) and merged.loc["ws#1", "e2e_ms"] == pytest.approx(1000.0)
    assert merged.loc["ws#1", "started_at"] == ts(10.0) and merged.loc["ws#0", "requested_model"] == "auto"
    assert merged.loc["s", "ttft_ms"] == 300.0


def test_unmatched_rows_stay():
    turns = pd.DataFrame([
        {"flow_id": "p1", "stream_format": "websocket", "conversation_id": "c", "user_message_id": "u",
         "started_at": ts(0.0), "ttft_ms": None, "e2e_ms": 4.0},
        {"flow_id": "ws#0", "stream_format": "websocket", "conversation_id": "other", "user_message_id": "x",
         "started_at": ts(1.0), "ttft_ms": 600.0, "e2e_ms": 900.0},
    ])
    assert list(merge_handoffs(turns).flow_id) == ["p1", "ws#0"]
