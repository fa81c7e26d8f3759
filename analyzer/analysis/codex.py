"""The Codex backend in a capture: calls by model (TTFT, ITL, reasoning), usage limits over time,
and the CLI's own turn timings (``codex_turn_event``) joined to the wire timing of that turn's calls.

Reads tables only (``api_calls``, ``rate_limits``, ``codex_analytics_events``) and the per-answer
frames of :mod:`analyzer.analysis.latency`. Definitions are in ``docs/metrics.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from analyzer.analysis.latency import model_column
from analyzer.store import Capture

CALL_COLUMNS = ["flow_id", "endpoint", "model", "started_at", "ttft_ms", "e2e_ms", "first_reasoning_ms",
                "reasoning_ms", "error", "error_code", "codex_session_id", "codex_thread_id", "codex_turn_id",
                "originator"]
LIMIT_COLUMNS = ["flow_id", "at", "source", "limit", "used_percent", "window_minutes", "reset_at", "plan_type"]
EVENT_COLUMNS = ["flow_id", "sent_at", "seq", "event_type", "turn_id", "thread_id", "model",
                 "critical_path_duration_ms", "critical_path_inference_ms", "critical_path_tools_ms"]
TURN_ROWS = 20  # turns listed in the report's join table (newest first)


def codex_calls(capture: Capture) -> pd.DataFrame:
    """The ``api_calls`` rows of the Codex backend (its path, or the Codex CLI's headers)."""
    calls = capture.table("api_calls", CALL_COLUMNS)
    if len(capture.paths) > 1:
        calls = calls.drop_duplicates("flow_id")
    codex = calls["endpoint"].fillna("").str.contains("/codex/", regex=False) | calls["codex_session_id"].notna()
    out = calls[codex].copy()
    out["model"] = model_column(out, "model")
    return out.reset_index(drop=True)


def rate_limit_frame(capture: Capture) -> pd.DataFrame:
    """Every usage-limit observation, oldest first (one series per ``limit``)."""
    limits = capture.table("rate_limits", LIMIT_COLUMNS)
    if len(capture.paths) > 1:
        limits = limits.drop_duplicates()
    return limits.sort_values(["at", "limit"], kind="stable").reset_index(drop=True)


def turn_join(capture: Capture, calls: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per ``codex_turn_event`` with the wire timing of the calls of that turn.

    Join key: the event's ``turn_id`` = the calls' ``codex_turn_id`` (from ``x-codex-turn-metadata``).
    Columns: turn_id, model, sent_at, critical_path_duration_ms / _inference_ms / _tools_ms (the
    CLI's), n_calls, wire_ttft_ms (first call's TTFT), wire_inference_ms (sum of the calls' E2E),
    wire_span_ms (first call's start to the last call's end), inference_gap_ms
    (= critical_path_inference_ms − wire_inference_ms: what the CLI counts beyond the wire).
    """
    calls = calls if calls is not None else codex_calls(capture)
    events = capture.table("codex_analytics_events", EVENT_COLUMNS)
    if len(capture.paths) > 1:
        events = events.drop_duplicates(["flow_id", "seq"])
    turns = events[(events["event_type"] == "codex_turn_event") & events["turn_id"].notna()]
    turns = turns.drop_duplicates("turn_id", keep="last")
    keyed = calls[calls["codex_turn_id"].notna()].copy()
    keyed["start_s"] = epoch_seconds(keyed["started_at"])
    keyed["end_s"] = keyed["start_s"] + keyed["e2e_ms"] / 1000.0
    keyed = keyed.sort_values("start_s", kind="stable")
    wire = keyed.groupby("codex_turn_id", sort=False).agg(
        n_calls=("flow_id", "size"), wire_ttft_ms=("ttft_ms", "first"),
        wire_inference_ms=("e2e_ms", lambda s: s.sum(min_count=1)), first_start=("start_s", "min"),
        last_end=("end_s", "max"))
    wire["wire_span_ms"] = (wire["last_end"] - wire["first_start"]) * 1000.0
    # a lookup, not a merge: the string columns may be Arrow-backed and empty
    wire.index = wire.index.astype(object)
    matched = wire.reindex(pd.Index(turns["turn_id"].astype(object)))
    out = turns.reset_index(drop=True).copy()
    for column in ("n_calls", "wire_ttft_ms", "wire_inference_ms", "wire_span_ms"):
        out[column] = matched[column].to_numpy(dtype="float64", na_value=np.nan)
    out["n_calls"] = out["n_calls"].fillna(0).astype("int64")
    out["inference_gap_ms"] = out["critical_path_inference_ms"] - out["wire_inference_ms"]
    cols = ["turn_id", "model", "sent_at", "critical_path_duration_ms", "critical_path_inference_ms",
            "critical_path_tools_ms", "n_calls", "wire_ttft_ms", "wire_inference_ms", "wire_span_ms",
            "inference_gap_ms"]
    return out[cols].sort_values("sent_at", ascending=False, kind="stable").reset_index(drop=True)


def epoch_seconds(times: pd.Series) -> np.ndarray:
    """Float epoch seconds of a UTC timestamp column (whatever its unit); NaN for a missing one."""
    return ((times - pd.Timestamp(0, tz="UTC")).dt.total_seconds()).to_numpy(dtype="float64", na_value=np.nan)


def _iso(value: Any) -> str | None:
    return None if value is None or pd.isna(value) else pd.Timestamp(value).isoformat()


def _float(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def codex_block(capture: Capture, metrics=None) -> dict:
    """The report's ``codex`` object: per-model numbers by the engine (``metrics``, an
    ``analyzer.engine.Metrics``, or one prepared here), usage limits and turn joins from the rows."""
    from analyzer.analysis.report import _metrics

    with _metrics(capture, metrics) as m:
        return _codex_block(capture, m)


def _codex_block(capture: Capture, m) -> dict:
    calls = codex_calls(capture)
    by_model = m.codex_by_model()
    codes = calls["error_code"].fillna(calls["error"]).dropna()  # a failure without a code: its message
    limits = rate_limit_frame(capture)
    by_limit: dict[str, dict] = {}
    for limit, grp in limits.groupby("limit", sort=True):
        used = grp["used_percent"].dropna()
        last = grp.iloc[-1]
        by_limit[str(limit)] = {
            "observations": int(len(grp)),
            "first_at": _iso(grp["at"].min()), "last_at": _iso(grp["at"].max()),
            "first_used_percent": _float(used.iloc[0]) if len(used) else None,
            "last_used_percent": _float(used.iloc[-1]) if len(used) else None,
            "max_used_percent": _float(used.max()) if len(used) else None,
            "window_minutes": _float(last["window_minutes"]),
            "reset_at": _iso(last["reset_at"]),
            "plan_type": None if pd.isna(last["plan_type"]) else str(last["plan_type"]),
        }
    joined = turn_join(capture, calls)
    return {
        "calls": int(len(calls)),
        "failed": int(calls["error"].notna().sum()),
        "sessions": int(calls["codex_session_id"].nunique()),
        "turns": int(calls["codex_turn_id"].nunique()),
        "by_model": by_model,
        "errors_by_code": {str(k): int(v) for k, v in codes.value_counts().sort_index().items()},
        "rate_limits": {"observations": int(len(limits)), "by_limit": by_limit},
        "turn_events": {
            "events": int(len(joined)),
            "joined": int((joined["n_calls"] > 0).sum()),
            "inference_gap_ms": m.frame_stats(joined["inference_gap_ms"]),
            "turns": [{k: (_iso(v) if k == "sent_at" else v) for k, v in row.items()}
                      for row in joined.head(TURN_ROWS).to_dict("records")],
        },
    }


__all__ = ["codex_block", "codex_calls", "epoch_seconds", "rate_limit_frame", "turn_join"]
