"""What the server says it spent, beside what the wire shows: Ollama's own timings of each call.

Ollama's last NDJSON line reports load, prefill (prompt eval) and decode (eval) durations; the
extractor stores them in ``api_calls.server_*`` (ms). This block puts them next to the proxy's
TTFT: ``ttft_minus_server_prefill_ms`` = wire TTFT − (load + prompt eval) is roughly what the
HTTP layer and the network add before the first token; ``eval_tokens_per_s`` is the server's
decode rate (Ollama's "eval rate"). See docs/metrics.md.
"""

from __future__ import annotations

import pandas as pd

from analyzer.analysis.latency import stats
from analyzer.store import Capture

COLUMNS: dict[str, list[str]] = {
    "api_calls": ["flow_id", "model", "ttft_ms", "server_total_ms", "server_load_ms", "server_prompt_eval_ms",
                  "server_eval_ms", "server_eval_count"],
}


def server_calls(capture: Capture) -> pd.DataFrame:
    """API calls that carry the server's own timings, with the derived columns."""
    calls = capture.table("api_calls", COLUMNS["api_calls"])
    if len(capture.paths) > 1 and len(calls):
        calls = calls.drop_duplicates("flow_id", ignore_index=True)
    calls = calls[calls["server_total_ms"].notna() | calls["server_eval_ms"].notna()].copy()
    eval_ms = pd.to_numeric(calls["server_eval_ms"], errors="coerce")
    count = pd.to_numeric(calls["server_eval_count"], errors="coerce")
    calls["eval_tokens_per_s"] = (count / eval_ms * 1000.0).where(eval_ms > 0)
    prefill = (pd.to_numeric(calls["server_load_ms"], errors="coerce").fillna(0.0)
               + pd.to_numeric(calls["server_prompt_eval_ms"], errors="coerce"))
    calls["ttft_minus_server_prefill_ms"] = pd.to_numeric(calls["ttft_ms"], errors="coerce") - prefill
    return calls


def _block(frame: pd.DataFrame) -> dict:
    return {
        "calls": int(len(frame)),
        "server_total_ms": stats(frame["server_total_ms"]),
        "server_load_ms": stats(frame["server_load_ms"]),
        "server_prompt_eval_ms": stats(frame["server_prompt_eval_ms"]),
        "server_eval_ms": stats(frame["server_eval_ms"]),
        "eval_tokens_per_s": stats(frame["eval_tokens_per_s"]),
        "ttft_minus_server_prefill_ms": stats(frame["ttft_minus_server_prefill_ms"]),
    }


def local_models(capture: Capture) -> dict:
    """The report's ``latency.local_models`` object: the block for all such calls and ``by_model``."""
    calls = server_calls(capture)
    out = _block(calls)
    out["by_model"] = {str(model): _block(group) for model, group in
                       calls.groupby(calls["model"].fillna("unknown"), sort=True)}
    return out


__all__ = ["COLUMNS", "local_models", "server_calls"]
