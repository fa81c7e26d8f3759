"""The whole ``analyze report`` as one JSON-serialisable dict: capture, conversations, latency, telemetry.

``build_report(capture)`` is what the CLI prints (``analyzer.analysis.render_report`` turns it into
text or markdown); every number in it comes from the vectorised frames in ``latency`` and
``telemetry``, which a notebook can use directly. The keys are documented in ``docs/report.md``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd

from analyzer.analysis import codex, latency, server_timing, telemetry
from analyzer.analysis.latency import isin, model_column
from analyzer.store import Capture

log = logging.getLogger(__name__)

TOP_LEVEL_KEYS = ("capture", "conversations", "latency", "telemetry", "codex")

COLUMNS: dict[str, list[str]] = {
    "flows": ["flow_id", "kind", "started_at", "ended_at", "error"],
    "errors": ["flow_id", "stage"],
    "messages": ["conversation_id", "message_id", "parent_id"],
    "conversation_reads": ["conversation_id"],
    # The same columns as the latency frames read, so the table is read (and cached) once.
    "conversation_turns": latency.COLUMNS["conversation_turns"],
}


def report_columns() -> dict[str, list[str]]:
    """Every (table, columns) the report reads: the benchmark measures memory against their size."""
    out: dict[str, list[str]] = {}
    codex_columns = {"api_calls": codex.CALL_COLUMNS, "rate_limits": codex.LIMIT_COLUMNS,
                     "codex_analytics_events": codex.EVENT_COLUMNS}
    for spec in (COLUMNS, latency.COLUMNS, telemetry.COLUMNS, server_timing.COLUMNS, codex_columns):
        for table, cols in spec.items():
            out.setdefault(table, [])
            out[table] += [c for c in cols if c not in out[table]]
    return out


def _iso(value: Any) -> str | None:
    if value is None or pd.isna(value):
        return None
    return pd.Timestamp(value).isoformat()


def capture_block(capture: Capture) -> dict:
    """Flow counts by kind, the time span, and the number of recorded errors."""
    flows = capture.table("flows", COLUMNS["flows"])
    if len(capture.paths) > 1:
        flows = flows.drop_duplicates("flow_id")
    errors = capture.table("errors", COLUMNS["errors"])
    kinds = flows["kind"].fillna("unknown").value_counts(sort=False)
    kinds = kinds.sort_index().sort_values(ascending=False, kind="stable")
    ends = pd.concat([flows["started_at"], flows["ended_at"]], ignore_index=True)
    return {
        "flows": int(len(flows)),
        "by_kind": {str(k): int(v) for k, v in kinds.items()},
        "first_at": _iso(flows["started_at"].min()) if len(flows) else None,
        "last_at": _iso(ends.max()) if len(flows) else None,
        "errors": int(len(errors)),
        "flows_with_error": int(flows["error"].notna().sum()),
        "paths": [str(p) for p in capture.paths],
    }


def conversations_block(capture: Capture) -> dict:
    """Conversation, turn, message and branch-point counts, and turns per model (vectorised)."""
    turns = latency.conversation_turns(capture)
    msgs = capture.table("messages", COLUMNS["messages"])
    reads = capture.table("conversation_reads", COLUMNS["conversation_reads"])
    ids = pd.concat([turns["conversation_id"], msgs["conversation_id"], reads["conversation_id"]],
                    ignore_index=True).dropna()
    # A message is sighted many times (request, stream, mapping read): one row per message_id, its
    # parent taken from the first sighting that names one.
    known = msgs[msgs["message_id"].notna()]
    parents = known.dropna(subset=["parent_id"]).drop_duplicates("message_id")
    # A branch point is a message (not a placeholder such as ``client-created-root``) with > 1 child.
    children = parents[isin(parents["parent_id"], known["message_id"])].groupby("parent_id")["message_id"].nunique()
    slugs = model_column(turns, "model_slug", "server_model_slug", "requested_model")
    by_model = slugs.value_counts(sort=False).sort_index().sort_values(ascending=False, kind="stable")
    return {
        "count": int(ids.nunique()),
        "turns": int(len(turns)),
        "messages": int(known["message_id"].nunique()),
        "branch_points": int((children > 1).sum()),
        "by_model": {str(k): int(v) for k, v in by_model.items()},
        "resumes": resumes_block(turns),
    }


def resumes_block(turns: pd.DataFrame) -> dict:
    """Resumed, failed-resume and stopped turns (``analyzer.analysis.resume``) and the time lost in breaks."""
    resumed = turns[turns["n_resumes"] > 0]
    failed = resumed["resume_error"].dropna().astype(str)
    return {
        "resumed_turns": int(len(resumed)),
        "resumes": int(resumed["n_resumes"].sum()),
        "failed_resumes": int(failed.str.count(",").sum() + len(failed)),
        "stopped_by_user": int(turns["stopped_by_user"].sum()),
        "resume_gap_ms": latency.stats(resumed["resume_gap_ms"]),
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


def build_report(capture: Capture, frames: dict[str, pd.DataFrame] | None = None) -> dict:
    """The report as a plain dict with exactly the keys capture, conversations, latency, telemetry, codex.

    ``frames`` (from ``latency.compute_latency(capture)``) may be passed in by a caller that needs
    them too (the HTML report draws them), so ``stream_events`` is read once.
    """
    f = frames if frames is not None else latency.compute_latency(capture)
    report = {
        "capture": capture_block(capture),
        "conversations": conversations_block(capture),
        "latency": latency.latency_block(f["turns"], f["itl_gaps"], f["beacons"], f["matches"], f["api"],
                                         f["api_itl_gaps"], f.get("perf_stats")),
        "telemetry": telemetry.telemetry_report(capture),
        "codex": codex.codex_block(capture, f["api"], f["api_itl_gaps"]),
    }
    report["latency"]["local_models"] = server_timing.local_models(capture)
    return _clean(report)


__all__ = ["TOP_LEVEL_KEYS", "build_report", "capture_block", "conversations_block", "report_columns"]
