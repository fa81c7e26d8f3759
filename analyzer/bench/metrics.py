"""Bench metrics, per request and per run (pure; definitions in docs/metrics.md, "analyze bench").

Every time is epoch seconds from one clock. For one request: ``intended_at`` (the schedule's send
time), ``sent_at`` (the moment its request bytes were written to the socket), ``token_times`` (the
arrival of each chunk that carried output: text or reasoning), ``visible_times`` (chunks with
visible, non-reasoning text), ``ended_at`` (the last byte). Then

- ``ttft_ms`` = first token − sent; ``ttft_from_intended_ms`` = first token − intended (it includes
  the client's own lag, which open-loop latency must: no coordinated omission);
- ``ttfv_ms`` = first visible token − sent;
- ``e2e_ms`` = end − sent, ``e2e_from_intended_ms`` = end − intended;
- ``tpot_ms`` = (e2e − ttft) / (output tokens − 1) (vLLM's TPOT);
- ``itl_ms``: every gap between consecutive output chunks (per chunk), and ``itl_per_token_ms``: each
  gap divided by the tokens the later chunk carried (tokens spread evenly over the chunks when only
  the total is known);
- ``schedule_lag_ms`` = sent − intended.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from analyzer.analysis.latency import stats

CONTEXT_BUCKETS = ((0, 1024, "<1k"), (1024, 4096, "1k-4k"), (4096, 16384, "4k-16k"), (16384, math.inf, "16k+"))


@dataclass
class RequestRecord:
    run_id: str
    flow_id: str
    session_id: str
    turn_index: int
    intended_at: float
    sent_at: float | None = None
    headers_at: float | None = None
    ended_at: float | None = None
    token_times: list[float] = field(default_factory=list)
    visible_times: list[float] = field(default_factory=list)
    output_tokens: int | None = None  # usage, else the answer's tokenizer count (``output_tokens_source``)
    output_tokens_source: str | None = None  # usage | tokenizer; None: ``tokens`` counts output chunks
    recorded_tokens: int | None = None  # the workload's answer length for this turn (sent as max_tokens)
    recorded_tokens_source: str | None = None  # usage | beacon | tokenizer | text_events | chars
    prompt_tokens: int | None = None
    context_tokens: int | None = None  # usage's prompt tokens, else the workload's estimate
    status_code: int | None = None
    error: str | None = None
    error_kind: str | None = None  # http_429 | http_5xx | http_4xx | cut | network | timeout | interrupted
    phase: str = "steady"
    answer_text: str = ""
    context_chars: int | None = None  # characters of the context sent
    captured_context_chars: int | None = None  # ... and of the captured context of the same turn

    @property
    def ok(self) -> bool:
        return self.error is None and self.sent_at is not None

    @property
    def first_token_at(self) -> float | None:
        return self.token_times[0] if self.token_times else None

    def _ms(self, a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else (a - b) * 1000.0

    @property
    def ttft_ms(self) -> float | None:
        return self._ms(self.first_token_at, self.sent_at)

    @property
    def ttft_from_intended_ms(self) -> float | None:
        return self._ms(self.first_token_at, self.intended_at)

    @property
    def ttfv_ms(self) -> float | None:
        return self._ms(self.visible_times[0] if self.visible_times else None, self.sent_at)

    @property
    def e2e_ms(self) -> float | None:
        return self._ms(self.ended_at, self.sent_at) if self.ok else None

    @property
    def e2e_from_intended_ms(self) -> float | None:
        return self._ms(self.ended_at, self.intended_at) if self.ok else None

    @property
    def schedule_lag_ms(self) -> float | None:
        return self._ms(self.sent_at, self.intended_at)

    @property
    def tokens(self) -> int:
        return self.output_tokens if self.output_tokens is not None else len(self.token_times)

    @property
    def tokens_source(self) -> str:
        """Where ``tokens`` comes from: ``usage``, ``tokenizer`` or ``chunks``."""
        return self.output_tokens_source or ("chunks" if self.output_tokens is None else "usage")

    @property
    def tpot_ms(self) -> float | None:
        ttft, e2e, n = self.ttft_ms, self.e2e_ms, self.tokens
        return None if ttft is None or e2e is None or n < 2 else (e2e - ttft) / (n - 1)

    @property
    def itl_ms(self) -> list[float]:
        t = self.token_times
        return [(b - a) * 1000.0 for a, b in zip(t, t[1:], strict=False)]

    @property
    def itl_per_token_ms(self) -> list[float]:
        gaps = self.itl_ms
        if not gaps:
            return []
        per_chunk = max(self.tokens / len(self.token_times), 1.0)
        return [g / per_chunk for g in gaps]


def error_kind(status: int | None, *, cut: bool = False, timeout: bool = False, network: bool = False) -> str | None:
    if timeout:
        return "timeout"
    if status is not None and status >= 400:
        return "http_429" if status == 429 else "http_5xx" if status >= 500 else "http_4xx"
    if cut:
        return "cut"
    if network:
        return "network"
    return None


# ---------------------------------------------------------------- SLOs


def parse_slo(text: str | None) -> dict[str, float]:
    """``ttft=MS,tpot=MS,e2e=MS`` (any subset) as a dict; ValueError on anything else."""
    if not text:
        return {}
    out: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or name not in ("ttft", "tpot", "e2e"):
            raise ValueError(f"--slo: {part.strip()!r} is not ttft=MS, tpot=MS or e2e=MS")
        try:
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"--slo: {value!r} is not a number of milliseconds") from None
        if out[name] <= 0:
            raise ValueError(f"--slo: {name} must be > 0")
    return out


def slo_ok(rec: RequestRecord, slo: dict[str, float]) -> bool | None:
    """Whether ``rec`` met every SLO (vLLM's goodput: each given bound ≥ the request's value, TTFT and
    E2E counted from the intended send); None without SLOs. A failed request never meets them."""
    if not slo:
        return None
    if not rec.ok:
        return False
    values = {"ttft": rec.ttft_from_intended_ms, "tpot": rec.tpot_ms, "e2e": rec.e2e_from_intended_ms}
    for name, bound in slo.items():
        value = values[name]
        if name == "tpot" and value is None:  # a one-token answer has no TPOT: vLLM counts it as met
            continue
        if value is None or value > bound:
            return False
    return True


# ---------------------------------------------------------------- run summary


def context_bucket(tokens: int | None) -> str | None:
    if tokens is None:
        return None
    return next(name for lo, hi, name in CONTEXT_BUCKETS if lo <= tokens < hi)


def _latency_block(records: Sequence[RequestRecord]) -> dict:
    return {
        "ttft_ms": stats([r.ttft_ms for r in records if r.ttft_ms is not None]),
        "tpot_ms": stats([r.tpot_ms for r in records if r.tpot_ms is not None]),
        "e2e_ms": stats([r.e2e_ms for r in records if r.e2e_ms is not None]),
        "n": len(records),
    }


def steady_window(records: Sequence[RequestRecord]) -> tuple[float, float] | None:
    """From the first steady send to the last steady end (None without any)."""
    sent = [r.sent_at for r in records if r.sent_at is not None]
    ended = [r.ended_at for r in records if r.ended_at is not None]
    if not sent or not ended:
        return None
    start, end = min(sent), max(ended)
    return (start, end) if end > start else None


def lag_degraded(lags_ms: Sequence[float], bound_ms: float) -> bool:
    """A run whose schedule lag grew past ``bound_ms``: its p99 lag is above the bound."""
    return bool(lags_ms) and float(np.percentile(np.asarray(lags_ms, dtype=float), 99)) > bound_ms


def time_series(records: Sequence[RequestRecord], start: float, bin_s: float = 1.0) -> list[dict]:
    """Per ``bin_s`` from ``start``: requests in flight (mean over the bin), output tokens/s (a chunk's
    tokens counted when it arrives) and the mean schedule lag of the requests sent in the bin."""
    ends = [r.ended_at or r.sent_at for r in records if r.sent_at is not None]
    if not ends:
        return []
    n_bins = max(int(math.ceil((max(ends) - start) / bin_s)), 1)
    busy = np.zeros(n_bins)
    tokens = np.zeros(n_bins)
    lag_sum, lag_n = np.zeros(n_bins), np.zeros(n_bins)
    for r in records:
        if r.sent_at is None:
            continue
        a, b = r.sent_at - start, (r.ended_at or r.sent_at) - start
        for k in range(max(int(a // bin_s), 0), min(int(b // bin_s) + 1, n_bins)):
            lo, hi = k * bin_s, (k + 1) * bin_s
            busy[k] += max(min(b, hi) - max(a, lo), 0.0) / bin_s
        per_chunk = r.tokens / len(r.token_times) if r.token_times else 0.0
        for t in r.token_times:
            k = int((t - start) // bin_s)
            if 0 <= k < n_bins:
                tokens[k] += per_chunk
        k = int(a // bin_s)
        if 0 <= k < n_bins and r.schedule_lag_ms is not None:
            lag_sum[k] += r.schedule_lag_ms
            lag_n[k] += 1
    return [
        {"t_s": k * bin_s, "in_flight": round(float(busy[k]), 3), "output_tokens_per_s": round(float(tokens[k] / bin_s), 3),
         "schedule_lag_ms": float(lag_sum[k] / lag_n[k]) if lag_n[k] else None}
        for k in range(n_bins)
    ]


def bootstrap_median_diff(diffs: Sequence[float], n_resamples: int = 2000, seed: int = 0) -> dict:
    """The median of ``diffs`` with a percentile-bootstrap 95% interval."""
    values = [d for d in diffs if d is not None and math.isfinite(d)]
    if not values:
        return {"n": 0, "median": None, "ci95": [None, None]}
    arr = np.asarray(values)
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(arr, size=(n_resamples, arr.size), replace=True), axis=1)
    lo, hi = np.percentile(medians, [2.5, 97.5])
    return {"n": int(arr.size), "median": float(np.median(arr)), "ci95": [float(lo), float(hi)]}


def versus_capture(records: Sequence[RequestRecord], captured: dict[tuple[str, int], dict]) -> dict:
    """Per turn (session, turn index) the bench's TTFT / ITL p50 / E2E beside the captured ones, and
    for each metric the median of (bench − captured) with a bootstrap 95% interval."""
    turns, diffs = [], {"ttft_ms": [], "itl_p50_ms": [], "e2e_ms": []}
    for r in records:
        base_id = r.session_id.split("#", 1)[0]
        cap = captured.get((base_id, r.turn_index))
        if cap is None or not r.ok:
            continue
        itl = r.itl_ms
        bench = {"ttft_ms": r.ttft_ms, "itl_p50_ms": float(np.median(itl)) if itl else None, "e2e_ms": r.e2e_ms}
        turns.append({"session_id": r.session_id, "turn_index": r.turn_index, "bench": bench,
                      "captured": {k: cap.get(k) for k in bench}})
        for k, v in bench.items():
            if v is not None and cap.get(k) is not None:
                diffs[k].append(v - cap[k])
    return {"turns": turns, "median_difference_ms": {k: bootstrap_median_diff(v) for k, v in diffs.items()}}


def summarize(records: Sequence[RequestRecord], *, slo: dict[str, float] | None = None, lag_bound_ms: float = 10.0,
              captured: dict[tuple[str, int], dict] | None = None, started_at: float | None = None) -> dict:
    """The run's summary: the keys ``analyze bench --format json`` prints."""
    slo = slo or {}
    steady = [r for r in records if r.phase == "steady"]
    ok = [r for r in steady if r.ok]
    lags = [r.schedule_lag_ms for r in steady if r.schedule_lag_ms is not None]
    window = steady_window(ok)
    span = (window[1] - window[0]) if window else None
    out_tokens = sum(r.tokens for r in ok)
    errors: dict[str, int] = {}
    for r in steady:
        if r.error_kind:
            errors[r.error_kind] = errors.get(r.error_kind, 0) + 1
    met = [r for r in steady if slo_ok(r, slo)]
    sessions: dict[str, bool] = {}
    for r in steady:
        sessions[r.session_id] = sessions.get(r.session_id, True) and bool(slo_ok(r, slo))
    by_turn: dict[int, list[RequestRecord]] = {}
    by_ctx: dict[str, list[RequestRecord]] = {}
    for r in ok:
        by_turn.setdefault(r.turn_index, []).append(r)
        bucket = context_bucket(r.context_tokens)
        if bucket:
            by_ctx.setdefault(bucket, []).append(r)
    order = [name for _, _, name in CONTEXT_BUCKETS]
    degraded = lag_degraded(lags, lag_bound_ms)
    drift = [100.0 * (r.context_chars - r.captured_context_chars) / r.captured_context_chars for r in steady
             if r.context_chars is not None and r.captured_context_chars]
    start = started_at if started_at is not None else min((r.intended_at for r in records), default=0.0)
    return {
        "degraded": degraded,
        "degraded_reason": (f"schedule lag p99 {np.percentile(lags, 99):.1f} ms > bound {lag_bound_ms:g} ms: "
                            "the generator did not keep to its schedule") if degraded else None,
        "requests": {"total": len(records), "steady": len(steady), "ok": len(ok),
                     "warmup": sum(r.phase == "warmup" for r in records),
                     "cooldown": sum(r.phase == "cooldown" for r in records), "errors": errors},
        "ttft_ms": stats([r.ttft_ms for r in ok if r.ttft_ms is not None]),
        "ttft_from_intended_ms": stats([r.ttft_from_intended_ms for r in ok if r.ttft_from_intended_ms is not None]),
        "ttfv_ms": stats([r.ttfv_ms for r in ok if r.ttfv_ms is not None]),
        "itl_ms": stats([g for r in ok for g in r.itl_ms]),
        "itl_per_token_ms": stats([g for r in ok for g in r.itl_per_token_ms]),
        "tpot_ms": stats([r.tpot_ms for r in ok if r.tpot_ms is not None]),
        "e2e_ms": stats([r.e2e_ms for r in ok if r.e2e_ms is not None]),
        "e2e_from_intended_ms": stats([r.e2e_from_intended_ms for r in ok if r.e2e_from_intended_ms is not None]),
        "schedule_lag_ms": stats(lags),
        "throughput": {
            "window_s": span,
            "requests_per_s": len(ok) / span if span else None,
            "output_tokens_per_s": out_tokens / span if span else None,
            "output_tokens": out_tokens,
        },
        "goodput": None if not slo else {
            "slo": slo,
            "requests_met": len(met),
            "share": len(met) / len(steady) if steady else None,
            "requests_per_s": len(met) / span if span else None,
            "conversations_met": sum(sessions.values()),
            "conversations": len(sessions),
            "conversation_share": sum(sessions.values()) / len(sessions) if sessions else None,
        },
        "by_turn_index": {str(k): _latency_block(v) for k, v in sorted(by_turn.items())},
        "by_context_tokens": {k: _latency_block(by_ctx[k]) for k in order if k in by_ctx},
        "versus_capture": versus_capture(ok, captured) if captured else None,
        # How far the contexts sent (with --context live: the server's own answers) are from the captured ones.
        "context_drift_pct": stats(drift),
        "time_series": time_series(records, start),
    }

