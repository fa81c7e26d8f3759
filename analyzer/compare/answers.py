"""One row per answer (a conversation turn or an API call) with its latency metrics.

This is the single place ``analyze compare`` gets its samples from: the engine's
``analyzer.engine.answer_metrics`` (the same SQL as the report's numbers; the CLI and the tests
import it from this module only). A capture without a label is ``unlabelled``.

Columns: flow_id, kind (``turn`` | ``api``), conversation_id, model, capture (the capture
directory's name, or its capture_id), label (``unlabelled`` until captures carry one), day (``YYYY-MM-DD``, UTC), hour
(``YYYY-MM-DDTHH:00Z``, UTC), host, stream_format, started_at, ttft_ms, e2e_ms, tpot_ms,
itl_p50_ms (the median of the answer's own inter-token gaps), n_gaps.
"""

from __future__ import annotations

import pandas as pd

from analyzer.store import Capture

COLUMNS = ("flow_id", "kind", "conversation_id", "model", "capture", "label", "day", "hour", "host",
           "stream_format", "started_at", "ttft_ms", "e2e_ms", "tpot_ms", "itl_p50_ms", "n_gaps")
GROUP_COLUMNS = ("model", "capture", "label", "day", "hour", "host", "stream_format", "kind")


def answer_metrics(capture: Capture, by: str | None = None, engine: str | None = None) -> pd.DataFrame:
    """One row per answer of ``capture`` with the columns of :data:`COLUMNS`: the engine's
    ``analyzer.engine.answer_metrics`` (``by`` is only checked here: grouping happens in the caller)."""
    from analyzer.engine import answer_metrics as engine_answer_metrics

    if by is not None and by not in GROUP_COLUMNS:
        raise ValueError(f"cannot group by {by!r}: one of {', '.join(GROUP_COLUMNS)}")
    out = engine_answer_metrics(capture, engine=engine or "duckdb")
    for name in ("kind", "conversation_id", "model", "stream_format", "host", "capture", "label", "day", "hour"):
        out[name] = out[name].astype("str")
    return out[list(COLUMNS)]
