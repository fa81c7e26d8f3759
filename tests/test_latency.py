"""Latency numbers checked against values worked out by hand from a fixture with known timings.

The fixture (``known_rows``) is shared with test_report.py and test_cli_report.py. Its timings:

turn A — legacy stream (2023 cumulative snapshots), text-davinci-002-render-sha, cf-ray ``…01-SIN``:
    text events at 300, 350, 450, 700 ms (after a user echo and an empty first snapshot);
    stored ttft 300, e2e 720; ITL gaps 50, 100, 250; beacon count_tokens 4 → TPOT = 400 / 3.
turn B — v1 delta stream, gpt-4o, cf-ray ``…02-LHR``, rows stored out of order:
    text events at 500, 520, 600, 610; stored ttft 500, e2e 650; gaps 20, 80, 10;
    no beacon → tokens = 4 text events → TPOT = 110 / 3.
turn C — v1, gpt-4o, cf-ray ``…03-LHR``: text at 1000, 1100; ttft 1000, e2e 1150; gap 100;
    beacon count_tokens 11 → TPOT = 100 / 10 = 10.
turn D — HAR import (null offsets, null ttft/e2e), gpt-4o, cf-ray ``…04-AMS``: no timing; its
    beacon matches but has no observed TTFT.
beacon E — unmatched (``…05-FRA``), gpt-4o.
API: a streamed chat.completions call (text at 200, 260, 400; completion_tokens 5 → TPOT 50;
    ttft 200, e2e 420) and a non-streamed one without timing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from analyzer.analysis import latency
from analyzer.store import CaptureWriter, load_capture

T0 = 1_735_812_000.0  # 2025-01-02 10:00:00 UTC

LEGACY = "text-davinci-002-render-sha"
RAY_A, RAY_B, RAY_C, RAY_D, RAY_E = (
    "aaaa000000000001-SIN", "bbbb000000000002-LHR", "cccc000000000003-LHR", "dddd000000000004-AMS",
    "eeee000000000005-FRA",
)
CONV_A, CONV_B = "c0a0a0a0-0000-4000-8000-00000000000a", "c0b0b0b0-0000-4000-8000-00000000000b"


def _events(flow_id: str, spec: list[tuple[float | None, str | None, str | None]], *, start: float) -> list[dict]:
    """stream_events rows from (offset_ms, type, text) triples, seq in list order."""
    rows = []
    for seq, (offset, typ, text) in enumerate(spec):
        rows.append({
            "flow_id": flow_id, "seq": seq, "at": None if offset is None else start + offset / 1000,
            "offset_ms": offset, "event": "delta" if typ == "delta" else None, "type": typ, "text": text,
            "data": json.dumps({"v": text}) if text else "{}", "n_bytes": 20 + len(text or ""),
        })
    return rows


def _flow(flow_id: str, kind: str, at: float, *, cf_ray: str | None = None, source: str = "live",
          host: str = "chatgpt.com", path: str = "/backend-api/conversation", duration_ms: float = 800.0,
          error: str | None = None) -> dict:
    return {"flow_id": flow_id, "kind": kind, "source": source, "method": "POST", "scheme": "https",
            "host": host, "port": 443, "path": path, "status_code": 200, "started_at": at,
            "ended_at": at + duration_ms / 1000, "duration_ms": duration_ms, "cf_ray": cf_ray, "error": error}


def _turn(flow_id: str, conv: str, model: str, at: float, ray: str, ttft: float | None, e2e: float | None,
          fmt: str, user: str, assistant: str, parent: str) -> dict:
    return {"flow_id": flow_id, "conversation_id": conv, "action": "next", "requested_model": model,
            "model_slug": model, "parent_message_id": parent, "user_message_id": user,
            "assistant_message_id": assistant, "stream_format": fmt, "status": "finished_successfully",
            "started_at": at, "ttft_ms": ttft, "e2e_ms": e2e, "cf_ray": ray, "path": "/backend-api/conversation"}


def _beacon(flow_id: str, at: float, ray: str | None, model: str, count: float, first: float, total: float,
            median: float, p95: float, p99: float) -> dict:
    return {"flow_id": flow_id, "sent_at": at, "server_request_id": ray, "model": model, "count_tokens": count,
            "ts_first_token_ms": first, "ts_total_request_ms": total, "ts_median_token_without_first_ms": median,
            "ts_p95_token_without_first_ms": p95, "ts_p99_token_without_first_ms": p99}


def _msg(conv: str | None, mid: str, parent: str | None, role: str, source: str, flow_id: str) -> dict:
    return {"conversation_id": conv, "message_id": mid, "parent_id": parent, "role": role, "text": mid,
            "source": source, "flow_id": flow_id}


def known_rows() -> dict[str, list[dict]]:
    """Every table of the known-timings fixture (see the module docstring for the numbers)."""
    ta, tb, tc, td = T0, T0 + 60, T0 + 120, T0 + 180
    events_a = _events("fa", [
        (100, None, None),      # the legacy stream echoes the user message first: no assistant text
        (200, None, ""),        # first assistant snapshot with parts [""]: empty text is not a text event
        (300, None, "Hel"), (350, None, "lo"), (450, None, " world"), (700, None, "!"),
        (720, "done", None),
    ], start=ta)
    events_b = _events("fb", [
        (50, "delta_encoding", None), (60, "resume_conversation_token", None), (80, "delta", None),
        (90, "delta", ""), (95, "message_marker", None),
        (500, "delta", "Here's"), (520, "delta", " a"), (600, "delta", " list"), (610, "delta", "."),
        (640, "message_stream_complete", None), (650, "done", None),
    ], start=tb)
    events_b.reverse()  # stored out of order: the analysis must order by seq, not by row position
    events_c = _events("fc", [(900, "delta", None), (1000, "delta", "Hi"), (1100, "delta", "!"),
                              (1150, "done", None)], start=tc)
    events_d = _events("fd", [(None, "delta", "No"), (None, "delta", " timing"), (None, "done", None)], start=td)
    events_api = _events("fapi", [(150, "chunk", ""), (200, "chunk", "one"), (260, "chunk", " two"),
                                  (400, "chunk", " three"), (420, "done", None)], start=T0 + 300)
    return {
        "flows": [
            _flow("fa", "conversation", ta, cf_ray=RAY_A),
            _flow("fb", "conversation", tb, cf_ray=RAY_B),
            _flow("fc", "conversation", tc, cf_ray=RAY_C),
            _flow("fd", "conversation", td, cf_ray=RAY_D, source="har"),
            _flow("lb-a", "latency_beacon", ta + 2, path="/backend-api/lat/r"),
            _flow("lb-c", "latency_beacon", tc + 3, path="/backend-api/lat/r"),
            _flow("lb-d", "latency_beacon", td + 2, path="/backend-api/lat/r", source="har"),
            _flow("lb-e", "latency_beacon", T0 + 240, path="/backend-api/lat/r"),
            _flow("fapi", "api_chat_completions", T0 + 300, host="api.openai.com", path="/v1/chat/completions"),
            _flow("fapi2", "api_chat_completions", T0 + 400, host="api.openai.com", path="/v1/chat/completions",
                  duration_ms=3000.0, error="upstream closed early"),
        ],
        "conversation_turns": [
            _turn("fa", CONV_A, LEGACY, ta, RAY_A, 300.0, 720.0, "legacy", "ua1", "aa1", "sa0"),
            _turn("fb", CONV_B, "gpt-4o", tb, RAY_B, 500.0, 650.0, "v1", "ub1", "ab1", "client-created-root"),
            _turn("fc", CONV_B, "gpt-4o", tc, RAY_C, 1000.0, 1150.0, "v1", "ub2", "ab2", "ab1"),
            _turn("fd", CONV_A, "gpt-4o", td, RAY_D, None, None, "v1", "ua2", "aa2", "ua1"),
        ],
        "stream_events": events_a + events_b + events_c + events_d + events_api,
        "latency_beacons": [
            _beacon("lb-a", ta + 2, RAY_A, LEGACY, 4, 450.0, 1200.0, 60.0, 240.0, 250.0),
            _beacon("lb-c", tc + 3, RAY_C, "gpt-4o", 11, 1250.0, 2000.0, 10.0, 90.0, 99.0),
            _beacon("lb-d", td + 2, RAY_D, "gpt-4o", 2, 800.0, 1800.0, 20.0, 30.0, 40.0),
            _beacon("lb-e", T0 + 240, RAY_E, "gpt-4o", 8, 600.0, 1000.0, 30.0, 60.0, 70.0),
        ],
        "api_calls": [
            {"flow_id": "fapi", "host": "api.openai.com", "endpoint": "chat.completions", "model": "gpt-4o-mini",
             "stream": True, "prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17,
             "started_at": T0 + 300, "ttft_ms": 200.0, "e2e_ms": 420.0},
            {"flow_id": "fapi2", "host": "api.openai.com", "endpoint": "chat.completions", "model": "gpt-4o-mini",
             "stream": False, "prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37,
             "started_at": T0 + 400},
        ],
        "messages": [
            _msg(CONV_A, "sa0", None, "system", "stream", "fa"),
            _msg(CONV_A, "ua1", "sa0", "user", "request", "fa"),
            _msg(CONV_A, "ua1", "sa0", "user", "stream", "fa"),
            _msg(CONV_A, "aa1", "ua1", "assistant", "stream", "fa"),
            _msg(CONV_A, "ua2", "ua1", "user", "request", "fd"),   # edit: a second child of ua1
            _msg(CONV_A, "aa2", "ua2", "assistant", "stream", "fd"),
            _msg(None, "ub1", "client-created-root", "user", "request", "fb"),
            _msg(CONV_B, "ub1", "client-created-root", "user", "stream", "fb"),
            _msg(CONV_B, "ab1", "ub1", "assistant", "stream", "fb"),
            _msg(CONV_B, "ub2", "ab1", "user", "request", "fc"),
            _msg(CONV_B, "ab2", "ub2", "assistant", "stream", "fc"),
            # A third conversation started from the same placeholder root: not a branch point.
            _msg("c0c0c0c0-0000-4000-8000-00000000000c", "uc1", "client-created-root", "user", "request", "fx"),
        ],
        "errors": [{"flow_id": "fapi2", "stage": "extract", "error": "upstream closed early", "at": T0 + 403}],
    }


def write_capture(path: Path, rows: dict[str, list[dict]]) -> Path:
    """Write ``rows`` as a capture with the project's own writer (real Parquet parts)."""
    with CaptureWriter(path) as writer:
        writer.add(rows)
    return path


@pytest.fixture
def known(tmp_path):
    return load_capture(write_capture(tmp_path / "known.parquet", known_rows()))


def approx(x: float) -> object:
    return pytest.approx(x, rel=1e-12, abs=1e-9)


# -- stats ----------------------------------------------------------------------------------------


def test_stats_linear_percentiles_by_hand():
    # Sorted [10, 20, 50, 80, 100, 100, 250]: rank = q * (n - 1) = q * 6, interpolated linearly.
    s = latency.stats([50, 100, 250, 20, 80, 10, 100])
    assert s["n"] == 7
    assert s["min"] == 10 and s["max"] == 250
    assert s["mean"] == approx(610 / 7)
    assert s["p50"] == approx(80)                 # rank 3
    assert s["p90"] == approx(100 + 0.4 * 150)    # rank 5.4
    assert s["p95"] == approx(100 + 0.7 * 150)    # rank 5.7
    assert s["p99"] == approx(100 + 0.94 * 150)   # rank 5.94


def test_stats_ignores_nan_and_reports_nulls_when_empty():
    assert latency.stats([np.nan, 2.0, np.nan])["p99"] == 2.0
    empty = latency.stats([])
    assert empty == {"n": 0, "mean": None, "min": None, "p50": None, "p90": None, "p95": None, "p99": None,
                     "max": None}
    assert latency.stats([np.nan]) == empty


# -- per-answer frames ----------------------------------------------------------------------------


def test_turn_latency_tpot_rule_for_both_stream_generations(known):
    t = latency.turn_latency(known).set_index("flow_id")
    # Legacy stream, beacon count_tokens 4: (700 - 300) / (4 - 1).
    assert t.loc["fa", "n_text_events"] == 4
    assert t.loc["fa", "token_source"] == "beacon"
    assert t.loc["fa", "tokens"] == 4
    assert t.loc["fa", "tpot_ms"] == approx(400 / 3)
    # v1 stream without a beacon: 4 text events, (610 - 500) / 3.
    assert t.loc["fb", "token_source"] == "text_events"
    assert t.loc["fb", "tokens"] == 4
    assert t.loc["fb", "tpot_ms"] == approx(110 / 3)
    # Beacon says 11 tokens over two text events 100 ms apart.
    assert t.loc["fc", "tpot_ms"] == approx(10.0)
    # The HAR turn has no timing at all.
    assert not t.loc["fd", "has_timing"]
    assert math.isnan(t.loc["fd", "tpot_ms"]) and math.isnan(t.loc["fd", "ttft_ms"])
    assert t.loc["fa", "ttft_ms"] == 300 and t.loc["fb", "e2e_ms"] == 650
    assert t.loc["fb", "model_slug"] == "gpt-4o" and t.loc["fa", "cf_ray"] == RAY_A


def test_itl_gaps_pool_consecutive_text_events_per_answer(known):
    g = latency.itl_gaps(known)
    by_flow = {f: sorted(v.tolist()) for f, v in g.groupby("flow_id", observed=True)["itl_ms"]}
    assert by_flow == {"fa": [50, 100, 250], "fb": [10, 20, 80], "fc": [100]}
    assert set(g.loc[g["flow_id"] == "fa", "model_slug"]) == {LEGACY}
    api = latency.itl_gaps(known, api=True)
    assert sorted(api["itl_ms"].tolist()) == [60, 140]


def test_beacon_join_on_cf_ray(known):
    m = latency.beacon_matches(known).set_index("server_request_id")
    assert sorted(m.index) == [RAY_A, RAY_C, RAY_D]
    assert m.loc[RAY_A, "flow_id"] == "fa" and m.loc[RAY_A, "model"] == LEGACY
    assert m.loc[RAY_A, "ttft_gap_ms"] == approx(450 - 300)
    assert m.loc[RAY_C, "ttft_gap_ms"] == approx(1250 - 1000)
    assert math.isnan(m.loc[RAY_D, "ttft_gap_ms"])  # HAR turn: no observed TTFT to compare with


def test_api_latency_uses_usage_tokens(known):
    a = latency.api_latency(known).set_index("flow_id")
    assert a.loc["fapi", "token_source"] == "usage"
    assert a.loc["fapi", "tpot_ms"] == approx((400 - 200) / (5 - 1))
    assert not a.loc["fapi2", "has_timing"]


# -- the latency block ----------------------------------------------------------------------------


def test_latency_report_by_hand(known):
    lat = latency.latency_report(known)
    obs = lat["observed"]
    assert (obs["turns"], obs["turns_with_timing"], obs["turns_without_timing"]) == (4, 3, 1)
    # TTFT over [300, 500, 1000]: ranks q * 2.
    assert obs["ttft_ms"] == {"n": 3, "mean": approx(600), "min": 300.0, "p50": 500.0, "p90": approx(900),
                              "p95": approx(950), "p99": approx(990), "max": 1000.0}
    # ITL pooled [50, 100, 250, 20, 80, 10, 100]: see test_stats_linear_percentiles_by_hand.
    assert obs["itl_ms"]["n"] == 7 and obs["itl_ms"]["p90"] == approx(160)
    # TPOT over [10, 110/3, 400/3]: p50 = 110/3, p90 = 110/3 + 0.8 * (400/3 - 110/3).
    assert obs["tpot_ms"]["p50"] == approx(110 / 3)
    assert obs["tpot_ms"]["p90"] == approx(110 / 3 + 0.8 * (290 / 3))
    assert obs["tpot_token_source"] == {"beacon": 2, "text_events": 1}
    assert obs["e2e_ms"]["p50"] == 720.0 and obs["e2e_ms"]["max"] == 1150.0

    cr = lat["client_reported"]
    assert cr["beacons"] == 4
    assert cr["ts_first_token_ms"]["p50"] == approx((600 + 800) / 2)
    # tokens_per_s = count / ((total - first) / 1000): 4/0.75, 11/0.75, 2/1.0, 8/0.4.
    tps = sorted([4 / 0.75, 11 / 0.75, 2 / 1.0, 8 / 0.4])
    assert cr["tokens_per_s"]["min"] == approx(tps[0]) and cr["tokens_per_s"]["max"] == approx(tps[-1])
    assert cr["tokens_per_s"]["p50"] == approx((tps[1] + tps[2]) / 2)
    assert cr["ts_p99_token_without_first_ms"]["max"] == 250.0

    mt = lat["matched"]
    assert (mt["pairs"], mt["unmatched_beacons"]) == (3, 1)
    assert mt["ttft_gap_ms"]["n"] == 2 and mt["ttft_gap_ms"]["mean"] == approx(200)

    by = lat["by_model"]
    assert set(by) == {LEGACY, "gpt-4o"}
    assert by["gpt-4o"]["observed"]["turns"] == 3
    assert by["gpt-4o"]["observed"]["itl_ms"]["n"] == 4
    assert by[LEGACY]["observed"]["itl_ms"]["p50"] == 100.0
    assert by["gpt-4o"]["client_reported"]["beacons"] == 3
    assert by[LEGACY]["client_reported"]["count_tokens"]["mean"] == 4.0

    api = lat["api"]
    assert (api["calls"], api["calls_with_timing"]) == (2, 1)
    assert api["ttft_ms"]["p50"] == 200.0 and api["tpot_ms"]["p50"] == approx(50.0)
    assert api["usage_by_model"] == {"gpt-4o-mini": {"calls": 2, "prompt_tokens": 42, "completion_tokens": 12,
                                                     "total_tokens": 54}}


def test_combined_captures_count_a_repeated_flow_once(tmp_path):
    rows = known_rows()
    first = write_capture(tmp_path / "live.parquet", rows)
    again = write_capture(tmp_path / "import.parquet", rows)  # e.g. the -w file of the same session
    both = latency.latency_report(load_capture([first, again]))
    one = latency.latency_report(load_capture(first))
    assert both == one
