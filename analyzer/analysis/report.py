"""The whole ``analyze report`` as one JSON-serialisable dict: capture, conversations, latency, telemetry.

``build_report(capture)`` is what the CLI prints (``analyzer.analysis.render_report`` turns it into
text or markdown); every aggregate in it is a query run by an engine (``analyzer.engine``: DuckDB by
default, or Spark). The keys are documented in ``docs/report.md``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd

from analyzer.analysis import codex, latency, server_timing, telemetry
from analyzer.analysis.latency import model_column
from analyzer.engine.metrics import Metrics
from analyzer.store import Capture

log = logging.getLogger(__name__)

TOP_LEVEL_KEYS = ("capture", "conversations", "latency", "telemetry", "codex")

COLUMNS: dict[str, list[str]] = {
    "flows": ["flow_id", "kind", "started_at", "ended_at", "error"],
    "errors": ["flow_id", "stage"],
    "messages": ["conversation_id", "message_id", "parent_id", "seen_at"],
    "conversation_reads": ["conversation_id"],
    # The same columns as the latency frames read, so the table is read (and cached) once.
    "conversation_turns": latency.COLUMNS["conversation_turns"],
}


def report_columns() -> dict[str, list[str]]:
    """Every (table, columns) the report reads: the benchmark measures memory against their size."""
    out: dict[str, list[str]] = {}
    codex_columns = {"api_calls": codex.CALL_COLUMNS, "rate_limits": codex.LIMIT_COLUMNS,
                     "codex_analytics_events": codex.EVENT_COLUMNS}
    from analyzer.bench.report_block import COLUMNS as bench_columns  # the bench section (analyze bench runs)

    for spec in (COLUMNS, latency.COLUMNS, telemetry.COLUMNS, server_timing.COLUMNS, codex_columns, bench_columns):
        for table, cols in spec.items():
            out.setdefault(table, [])
            out[table] += [c for c in cols if c not in out[table]]
    return out


def _iso(value: Any) -> str | None:
    if value is None or pd.isna(value):
        return None
    return pd.Timestamp(value).isoformat()


def capture_block(capture: Capture, metrics: Metrics | None = None) -> dict:
    """Flow counts by kind, the time span, and the number of recorded errors."""
    with _metrics(capture, metrics) as m:
        return m.capture_block()


class _metrics:
    """``metrics`` if given, else one prepared for the call (and closed after it)."""

    def __init__(self, capture: Capture, metrics: Metrics | None) -> None:
        self.metrics, self.own = (metrics, False) if metrics is not None else (latency.compute_latency(capture), True)

    def __enter__(self) -> Metrics:
        return self.metrics

    def __exit__(self, *exc: object) -> None:
        if self.own:
            self.metrics.close()


def conversations_block(capture: Capture, metrics: Metrics | None = None) -> dict:
    """Conversation, turn, message and branch-point counts, and turns per model (vectorised)."""
    with _metrics(capture, metrics) as m:
        return _conversations_block(capture, m)


def _conversations_block(capture: Capture, metrics: Metrics) -> dict:
    turns = metrics.turn_frame
    slugs = model_column(turns, "model_slug", "server_model_slug", "requested_model")
    by_model = slugs.value_counts(sort=False).sort_index().sort_values(ascending=False, kind="stable")
    # The counts over messages are the engine's (Metrics.conversation_counts): a capture sights a
    # message several times per turn, too many rows to hold in pandas.
    counts = metrics.conversation_counts()
    return {
        "count": counts["count"],
        "turns": int(len(turns)),
        "messages": counts["messages"],
        "branch_points": counts["branch_points"],
        "by_model": {str(k): int(v) for k, v in by_model.items()},
        "resumes": resumes_block(turns, metrics),
    }


def resumes_block(turns: pd.DataFrame, metrics: Metrics) -> dict:
    """Resumed, failed-resume and stopped turns (``analyzer.analysis.resume``) and the time lost in breaks."""
    resumed = turns[turns["n_resumes"] > 0]
    failed = resumed["resume_error"].dropna().astype(str)
    return {
        "resumed_turns": int(len(resumed)),
        "resumes": int(resumed["n_resumes"].sum()),
        "failed_resumes": int(failed.str.count(",").sum() + len(failed)),
        "stopped_by_user": int(turns["stopped_by_user"].sum()),
        "resume_gap_ms": metrics.stats_of("turn_rows", "resume_gap_ms", where="n_resumes > 0"),
    }


def _clean(obj: Any) -> Any:
    """NaN/inf -> None and NumPy scalars -> Python: the report must survive ``json.dumps(allow_nan=False)``."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def build_report(capture: Capture, metrics: Metrics | None = None, *, engine: str = "duckdb",
                 by: str | None = None, **options) -> dict:
    """The report as a plain dict with exactly the keys capture, conversations, latency, telemetry, codex.

    ``metrics`` (from ``latency.compute_latency(capture)``) may be passed in by a caller that needs
    its tables too (the HTML report draws them), so ``stream_events`` is read once; otherwise one is
    prepared on ``engine`` (``duckdb`` | ``spark``; ``options`` as ``analyzer.engine.open_engine``'s),
    grouped ``by`` one of ``analyzer.engine.GROUP_KEYS`` (adds ``latency.by``).
    """
    own = metrics is None
    m = metrics if metrics is not None else latency.compute_latency(capture, engine=engine, by=by, **options)
    try:
        report = {
            "capture": m.capture_block(),
            "conversations": _conversations_block(capture, m),
            "latency": m.latency_block(),
            "telemetry": telemetry.telemetry_report(capture, m),
            "codex": codex.codex_block(capture, m),
        }
        report["latency"]["local_models"] = m.local_models()
        if "by" in report["latency"]:  # after local_models: the key order of today's report is kept
            report["latency"]["by"] = report["latency"].pop("by")
    finally:
        if own:
            m.close()
    # analyze bench runs: the key is there only when the capture has bench rows (docs/report.md).
    from analyzer.bench.report_block import bench_block

    if (bench := bench_block(capture)) is not None:
        report["bench"] = bench
    return _clean(report)


__all__ = ["TOP_LEVEL_KEYS", "build_report", "capture_block", "conversations_block", "report_columns"]
