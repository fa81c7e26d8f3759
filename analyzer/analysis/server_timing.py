"""What the server says it spent, beside what the wire shows: Ollama's own timings of each call.

Ollama's last NDJSON line reports load, prefill (prompt eval) and decode (eval) durations; the
extractor stores them in ``api_calls.server_*`` (ms). This block puts them next to the proxy's
TTFT: ``ttft_minus_server_prefill_ms`` = wire TTFT − (load + prompt eval) is roughly what the
HTTP layer and the network add before the first token; ``eval_tokens_per_s`` is the server's
decode rate (Ollama's "eval rate"). See docs/metrics.md.
"""

from __future__ import annotations

from analyzer.store import Capture

# The columns the block reads (its SQL is ``analyzer.engine.metrics.Metrics.local_models``).
COLUMNS: dict[str, list[str]] = {
    "api_calls": ["flow_id", "model", "ttft_ms", "server_total_ms", "server_load_ms", "server_prompt_eval_ms",
                  "server_eval_ms", "server_eval_count"],
}


def local_models(capture: Capture, metrics=None) -> dict:
    """The report's ``latency.local_models`` object: the block for all such calls and ``by_model``."""
    from analyzer.analysis.report import _metrics

    with _metrics(capture, metrics) as m:
        return m.local_models()


__all__ = ["COLUMNS", "local_models"]
