"""One row per answer (a conversation turn or an API call) with its latency metrics.

This is the single place ``analyze compare`` gets its samples from. It builds, from today's
``analyzer.analysis.latency`` frames, the columns the engine's ``answer_metrics`` is specified to
return, so that swapping it for ``analyzer.engine.answer_metrics`` is a one-line change here:
replace :func:`answer_metrics` by ``from analyzer.engine import answer_metrics`` (the CLI and the
tests import it from this module only). The engine labels a capture without a label
``unlabelled`` where this adapter leaves ``label`` null.

Columns: flow_id, kind (``turn`` | ``api``), conversation_id, model, capture (the capture
directory's name), label (null until captures carry one), day (``YYYY-MM-DD``, UTC), hour
(``YYYY-MM-DDTHH:00Z``, UTC), host, stream_format, started_at, ttft_ms, e2e_ms, tpot_ms,
itl_p50_ms (the median of the answer's own inter-token gaps), n_gaps.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analyzer.store import Capture

COLUMNS = ("flow_id", "kind", "conversation_id", "model", "capture", "label", "day", "hour", "host",
           "stream_format", "started_at", "ttft_ms", "e2e_ms", "tpot_ms", "itl_p50_ms", "n_gaps")
GROUP_COLUMNS = ("model", "capture", "label", "day", "hour", "host", "stream_format", "kind")


def _per_answer_itl(flow_ids: pd.Index, gap_codes: np.ndarray, gaps: np.ndarray) -> pd.DataFrame:
    """``itl_p50_ms`` (median gap, NumPy's linear method) and ``n_gaps`` per flow id with gaps."""
    if len(gaps) == 0:
        return pd.DataFrame({"itl_p50_ms": pd.Series(dtype="float64"), "n_gaps": pd.Series(dtype="int64")},
                            index=pd.Index([], dtype="str", name="flow_id"))
    grouped = pd.Series(gaps).groupby(gap_codes, sort=True)
    frame = pd.DataFrame({"itl_p50_ms": grouped.median(), "n_gaps": grouped.size().astype("int64")})
    frame.index = flow_ids[frame.index.to_numpy()]
    return frame


def _capture_names(capture: Capture, flow_ids: pd.Series) -> pd.Series:
    """The name of the capture directory each flow came from (the first one that holds it)."""
    if len(capture.paths) == 1:
        return pd.Series(capture.paths[0].name, index=flow_ids.index, dtype="str")
    owner = pd.Series(np.nan, index=flow_ids.index, dtype="str")
    for path in capture.paths:
        ids = Capture((path,)).table("flows", ["flow_id"])["flow_id"]
        found = flow_ids.isin(ids) & owner.isna()
        owner[found] = path.name
    return owner


def _with_time_columns(frame: pd.DataFrame) -> pd.DataFrame:
    started = pd.to_datetime(frame["started_at"], utc=True)
    frame["day"] = started.dt.strftime("%Y-%m-%d").astype("str")
    frame["hour"] = started.dt.strftime("%Y-%m-%dT%H:00Z").astype("str")
    return frame


def answer_metrics(capture: Capture, by: str | None = None, engine: str | None = None) -> pd.DataFrame:
    """One row per answer of ``capture`` with the columns of :data:`COLUMNS` (see the module docstring).

    ``by`` is accepted for the engine's signature and only checked (grouping happens in the
    caller); ``engine`` is ignored (the pandas path is the only one here)."""
    from analyzer.analysis import latency

    if by is not None and by not in GROUP_COLUMNS:
        raise ValueError(f"cannot group by {by!r}: one of {', '.join(GROUP_COLUMNS)}")
    events = latency.turn_text_events(capture)
    turns = latency.turn_latency(capture, events)
    api = latency.api_latency(capture, events)
    itl = _per_answer_itl(events.flow_ids, events.gap_codes, events.gaps)

    formats = capture.table("conversation_turns", ["flow_id", "stream_format"]).drop_duplicates("flow_id")
    hosts = capture.table("flows", ["flow_id", "host"]).drop_duplicates("flow_id").set_index("flow_id")["host"]
    turn_rows = pd.DataFrame({
        "flow_id": turns["flow_id"], "kind": "turn", "conversation_id": turns["conversation_id"],
        "model": turns["model_slug"], "started_at": turns["started_at"],
        "ttft_ms": turns["ttft_ms"], "e2e_ms": turns["e2e_ms"], "tpot_ms": turns["tpot_ms"],
        "stream_format": turns["flow_id"].map(formats.set_index("flow_id")["stream_format"]),
    })
    api_rows = pd.DataFrame({
        "flow_id": api["flow_id"], "kind": "api", "conversation_id": pd.Series(None, index=api.index, dtype="str"),
        "model": api["model"], "started_at": api["started_at"],
        "ttft_ms": api["ttft_ms"], "e2e_ms": api["e2e_ms"], "tpot_ms": api["tpot_ms"],
        "stream_format": pd.Series(None, index=api.index, dtype="str"),
    })
    parts = [p for p in (turn_rows, api_rows) if len(p)]
    out = pd.concat(parts, ignore_index=True) if parts else turn_rows.iloc[0:0].reset_index(drop=True)
    for name in ("ttft_ms", "e2e_ms", "tpot_ms"):
        out[name] = pd.to_numeric(out[name], errors="coerce").astype("float64")
    pos = itl.index.get_indexer(out["flow_id"])
    hit = pos >= 0
    out["itl_p50_ms"] = np.where(hit, itl["itl_p50_ms"].to_numpy()[np.maximum(pos, 0)] if len(itl) else np.nan,
                                 np.nan)
    out["n_gaps"] = np.where(hit, itl["n_gaps"].to_numpy()[np.maximum(pos, 0)] if len(itl) else 0, 0).astype("int64")
    out["host"] = out["flow_id"].map(hosts).astype("str")
    out["capture"] = _capture_names(capture, out["flow_id"])
    out["label"] = pd.Series(None, index=out.index, dtype="str")
    out = _with_time_columns(out)
    for name in ("kind", "conversation_id", "model", "stream_format"):
        out[name] = out[name].astype("str")
    return out[list(COLUMNS)]
