"""Latency of answers: what the proxy observed, what the page reported, and the two joined.

The metrics themselves are SQL run by an engine (``analyzer.engine.metrics`` has every definition,
``docs/metrics.md`` explains them). What stays here is Python that is not an aggregation: the
conversation turns with their WebSocket hand-offs and resumes folded (small tables, pandas), the
folding map the queries use, and per-answer frames for notebooks (one row per turn or call).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.analysis.handoff import merge_handoffs
from analyzer.analysis.resume import mark_controls, merge_resumes, resume_pairs
from analyzer.engine.metrics import BEACON_METRICS, STATS_KEYS, UNKNOWN_MODEL, Metrics
from analyzer.schema import TABLES
from analyzer.store import Capture

log = logging.getLogger(__name__)

OBSERVED_METRICS = ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms")

# The columns the report reads of each table (the benchmark's memory budget is measured against them).
COLUMNS: dict[str, list[str]] = {
    "stream_events": ["flow_id", "seq", "offset_ms", "text"],
    "conversation_turns": [
        "flow_id", "action", "conversation_id", "model_slug", "server_model_slug", "requested_model",
        "started_at", "ttft_ms", "e2e_ms", "cf_ray", "stream_format", "user_message_id",
        # what joins a resumed answer's flows into one turn (analyzer.analysis.resume)
        "path", "n_events", "n_text_events", "resume_offset", "next_offset", "status", "error", "error_code",
    ],
    "stream_controls": ["flow_id", "kind", "conversation_id", "at", "status"],
    "perf_stats": ["flow_id", "metric", "value"],
    "latency_beacons": [
        "flow_id", "sent_at", "server_request_id", "model", "count_tokens", "ts_first_token_ms",
        "ts_total_request_ms", "ts_median_token_without_first_ms", "ts_p95_token_without_first_ms",
        "ts_p99_token_without_first_ms",
    ],
    "api_calls": [
        "flow_id", "host", "endpoint", "model", "started_at", "ttft_ms", "e2e_ms", "prompt_tokens",
        "completion_tokens", "total_tokens", "codex_session_id", "error",
    ],
    "flows": ["flow_id", "host", "kind"],
}


def stats(values: Any) -> dict[str, int | float | None]:
    """``{n, mean, min, p50, p90, p95, p99, max}`` of the finite values; nulls when there are none.

    The same SQL as every statistic of the report (``analyzer.engine.metrics``), on an in-memory
    DuckDB: percentiles interpolate linearly between closest ranks (NumPy's default method).
    """
    from analyzer.engine import stats as engine_stats

    return engine_stats(values)


def _dedupe(capture: Capture, frame: pd.DataFrame, key: str | list[str]) -> pd.DataFrame:
    """Drop rows repeated across combined captures (a live capture and its ``-w`` import share flow ids)."""
    if len(capture.paths) > 1 and len(frame):
        return frame.drop_duplicates(subset=key, keep="first", ignore_index=True)
    return frame


def model_column(frame: pd.DataFrame, *candidates: str) -> pd.Series:
    """The first non-empty of ``candidates`` per row, else ``unknown``: the model a row is filed under
    (the SQL of ``analyzer.engine.metrics`` spells the same rule as COALESCE/NULLIF)."""
    out = pd.Series(np.nan, index=frame.index, dtype="str")
    for name in candidates:
        col = frame[name].astype("str")
        out = out.fillna(col.mask(col == ""))
    return out.fillna(UNKNOWN_MODEL).astype("str")


def isin(values: pd.Series, pool: pd.Series) -> np.ndarray:
    """``values.isin(pool)`` for string columns, in Arrow (pandas' version walks Arrow strings in Python)."""
    value_set = pa.array(pool.dropna().unique(), type=pa.string())
    found = pc.is_in(pa.array(values, type=pa.string()), value_set=value_set)
    return found.to_numpy(zero_copy_only=False).astype(bool)


# --------------------------------------------------------------------------------------------
# Conversation turns (small: one row per flow) and the folding map
# --------------------------------------------------------------------------------------------


def _turn_table(capture: Capture, columns: list[str] | None, per_capture: bool) -> pd.DataFrame:
    if not per_capture:
        return capture.table("conversation_turns", columns)
    # One capture directory at a time, so each row knows its capture (the --by capture fallback).
    if columns is not None and "capture_id" in TABLES["conversation_turns"].names and "capture_id" not in columns:
        columns = [*columns, "capture_id"]
    frames = [type(capture)((path,)).table("conversation_turns", columns).assign(_capture=path.name)
              for path in capture.paths]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def handed_off_turns(capture: Capture, all_columns: bool = False, per_capture: bool = False) -> pd.DataFrame:
    """``conversation_turns`` (one row per flow) with the WebSocket hand-offs folded in."""
    columns = None if all_columns else COLUMNS["conversation_turns"]
    turns = _dedupe(capture, _turn_table(capture, columns, per_capture), "flow_id")
    return merge_handoffs(turns)


_handed_off_turns = handed_off_turns


def conversation_turns(capture: Capture, *, all_columns: bool = False, per_capture: bool = False,
                       handed_off: pd.DataFrame | None = None) -> pd.DataFrame:
    """``conversation_turns`` as the report reads it: one row per flow (combined captures may
    hold the same flow twice), each WebSocket hand-off folded into the answer it started, each
    resume into the answer it continued, stops and stream-status reads on the turn. The report's
    columns only, unless ``all_columns`` (texts included: what a notebook wants); ``per_capture``
    adds ``_capture``, the name of the capture directory of each row."""
    turns = merge_resumes(handed_off if handed_off is not None else handed_off_turns(capture, all_columns, per_capture))
    controls = _dedupe(capture, capture.table("stream_controls", COLUMNS["stream_controls"]), "flow_id")
    return mark_controls(turns, controls)


def fold_map(capture: Capture, handed_off: pd.DataFrame | None = None) -> pd.DataFrame:
    """flow_id (a resume) -> into_flow_id (the turn it continues), shift_ms (its start after the
    turn's): the queries file a resume's text events under its turn, shifted, and its gaps too (the
    break itself is no gap: it is ``resume_gap_ms``)."""
    pairs = resume_pairs(handed_off if handed_off is not None else handed_off_turns(capture))
    return pd.DataFrame({"flow_id": pairs["flow_id"].astype(object), "into_flow_id": pairs["into_flow_id"].astype(object),
                         "shift_ms": pd.to_numeric(pairs["shift_ms"], errors="coerce").astype("float64")})


# --------------------------------------------------------------------------------------------
# Per-answer frames, from the engine's tables
# --------------------------------------------------------------------------------------------


def compute_latency(capture: Capture, *, engine: str = "duckdb", by: str | None = None, **options) -> Metrics:
    """The engine with the capture's metric tables prepared: what ``build_report`` and the HTML
    report share (``stream_events`` is read once). Indexing it gives the per-answer frames a
    notebook wants: ``turns``, ``api``, ``beacons``, ``matches``, ``itl_gaps``, ``api_itl_gaps``."""
    from analyzer.engine import open_engine

    return Metrics(capture, open_engine(engine, **options), by=by)


def text_events(capture: Capture) -> Metrics:
    """The prepared metric tables of ``capture`` (kept for callers that pass them on)."""
    return compute_latency(capture)


def _metrics(capture: Capture, events: Metrics | None) -> Metrics:
    return events if isinstance(events, Metrics) else compute_latency(capture)


def turn_latency(capture: Capture, events: Metrics | None = None) -> pd.DataFrame:
    """One row per conversation turn with its observed timing.

    Columns: flow_id, conversation_id, model_slug, started_at, ttft_ms, e2e_ms, tpot_ms,
    n_text_events, tokens, token_source (``beacon`` | ``text_events``), cf_ray, has_timing.
    ``ttft_ms``/``e2e_ms``/``tpot_ms`` are null for turns without per-event timing.
    """
    return _metrics(capture, events)["turns"]


def itl_gaps(capture: Capture, events: Metrics | None = None, *, api: bool = False) -> pd.DataFrame:
    """Every gap between consecutive text events of one answer: flow_id, model_slug, itl_ms (per gap:
    for exports and notebooks; the report itself only aggregates them in the engine)."""
    return _metrics(capture, events)["api_itl_gaps" if api else "itl_gaps"]


def beacon_matches(capture: Capture, turns: Any = None) -> pd.DataFrame:
    """Latency beacons joined to conversation turns on ``server_request_id`` = the turn's ``cf_ray``:
    server_request_id, flow_id (the turn's), model (the beacon's), model_slug (the turn's),
    ts_first_token_ms, ttft_ms (observed), ttft_gap_ms (= ts_first_token_ms − ttft_ms)."""
    return _metrics(capture, turns)["matches"]


def api_latency(capture: Capture, events: Metrics | None = None) -> pd.DataFrame:
    """One row per OpenAI-API call with its observed timing, like :func:`turn_latency`, plus
    prompt_tokens, completion_tokens, total_tokens; token_source ``usage`` | ``text_events``."""
    return _metrics(capture, events)["api"]


def beacon_frame(capture: Capture) -> pd.DataFrame:
    """The latency beacons with ``tokens_per_s`` = count_tokens / ((total − first) / 1000) added."""
    return compute_latency(capture)["beacons"]


def latency_report(capture: Capture, *, engine: str = "duckdb", by: str | None = None, **options) -> dict:
    """The report's ``latency`` object for ``capture``."""
    from analyzer.analysis.report import _clean

    metrics = compute_latency(capture, engine=engine, by=by, **options)
    try:
        return _clean(metrics.latency_block())
    finally:
        metrics.close()


__all__: Iterable[str] = [
    "BEACON_METRICS", "STATS_KEYS", "api_latency", "beacon_frame", "beacon_matches", "compute_latency",
    "conversation_turns", "fold_map", "itl_gaps", "latency_report", "stats", "text_events", "turn_latency",
]
