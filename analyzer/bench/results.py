"""What a bench run leaves behind: capture rows, the ``bench_runs`` / ``bench_requests`` rows, and the
printed summary (text; JSON is the summary dict itself)."""

from __future__ import annotations

import json
import math
from typing import Any

from analyzer.bench.loadgen import Result
from analyzer.bench.metrics import RequestRecord, slo_ok

SOURCE = "bench"


def capture_rows(result: Result) -> dict[str, list[dict]]:
    """``flows`` / ``api_calls`` / ``stream_events`` (/ ``errors``) of one request, built like a replay's
    (``analyzer.replay.replay.attempt_rows``), counted from the moment its bytes were written."""
    from analyzer.replay.replay import Attempt, attempt_rows

    rec = result.record
    attempt = Attempt(
        flow_id=rec.flow_id, started_at=rec.sent_at if rec.sent_at is not None else rec.intended_at,
        messages=result.body.get("messages", []), model=result.body.get("model", ""),
        status_code=rec.status_code, headers_at=rec.headers_at, ended_at=rec.ended_at, chunks=result.chunks,
        done=result.done, error=rec.error, network_error=rec.error_kind in ("network", "cut", "timeout"),
        response_headers=result.response_headers, http_version=result.http_version, url=result.url,
    )
    rows, _ = attempt_rows(attempt)
    for flow in rows["flows"]:
        flow["source"] = SOURCE
    for err in rows.get("errors", []):
        err["stage"] = SOURCE
    return rows


def request_row(rec: RequestRecord, slo: dict[str, float]) -> dict:
    return {
        "run_id": rec.run_id, "flow_id": rec.flow_id, "session_id": rec.session_id, "turn_index": rec.turn_index,
        "phase": rec.phase, "intended_at": rec.intended_at, "sent_at": rec.sent_at,
        "first_token_at": rec.first_token_at, "first_visible_at": rec.visible_times[0] if rec.visible_times else None,
        "ended_at": rec.ended_at, "schedule_lag_ms": rec.schedule_lag_ms, "ttft_ms": rec.ttft_ms,
        "ttft_from_intended_ms": rec.ttft_from_intended_ms, "ttfv_ms": rec.ttfv_ms, "tpot_ms": rec.tpot_ms,
        "e2e_ms": rec.e2e_ms, "e2e_from_intended_ms": rec.e2e_from_intended_ms,
        "output_tokens": rec.tokens if rec.ok else rec.output_tokens,
        "output_tokens_source": rec.tokens_source if rec.ok or rec.output_tokens is not None else None,
        "recorded_tokens": rec.recorded_tokens, "recorded_tokens_source": rec.recorded_tokens_source,
        "prompt_tokens": rec.prompt_tokens,
        "context_tokens": rec.context_tokens, "status_code": rec.status_code, "ok": rec.ok, "error": rec.error,
        "error_kind": rec.error_kind, "slo_ok": slo_ok(rec, slo),
    }


def run_row(*, run_id: str, started_at: float, ended_at: float, command: list[str], base_url: str, knobs: dict,
            models: dict, n_requests: int, summary: dict, interrupted: bool) -> dict:
    return {
        "run_id": run_id, "started_at": started_at, "ended_at": ended_at,
        "command": json.dumps(command, ensure_ascii=False), "base_url": base_url, "schedule": knobs.get("schedule"),
        "knobs": json.dumps(knobs, ensure_ascii=False, sort_keys=True), "models": json.dumps(models, ensure_ascii=False),
        "seed": knobs.get("seed"), "n_requests": n_requests, "degraded": bool(summary.get("degraded")),
        "interrupted": interrupted, "summary": json.dumps(summary, ensure_ascii=False, default=str),
    }


# ---------------------------------------------------------------- text


def _ms(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"


def _stats_line(name: str, s: dict) -> str:
    if not s or not s.get("n"):
        return f"  {name:<24} n=0"
    return (f"  {name:<24} n={s['n']:<6} p50 {_ms(s['p50']):>8}  p90 {_ms(s['p90']):>8}  p99 {_ms(s['p99']):>8}"
            f"  mean {_ms(s['mean']):>8}  max {_ms(s['max']):>8}")


def inert(text: Any) -> str:
    """Text from traffic made safe to print: control characters (escape sequences included) shown as
    ``\\xNN`` escapes, so a server's error message cannot drive the terminal."""
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode() for c in str(text))


def render_text(summary: dict, *, header: str) -> str:
    """The summary as the terminal shows it: a degraded run says so first."""
    lines = []
    if summary.get("degraded"):
        lines.append(f"DEGRADED: {summary['degraded_reason']}")
    lines.append(inert(header))
    req = summary["requests"]
    errors = ", ".join(f"{k} {v}" for k, v in sorted(req["errors"].items())) or "none"
    lines.append(f"requests: {req['total']} sent, {req['steady']} in the steady window ({req['warmup']} warm-up, "
                 f"{req['cooldown']} cool-down left out), {req['ok']} ok; errors: {errors}")
    lines.append("latency (ms)")
    for key in ("ttft_ms", "ttft_from_intended_ms", "ttfv_ms", "itl_ms", "itl_per_token_ms", "tpot_ms", "e2e_ms",
                "e2e_from_intended_ms", "schedule_lag_ms"):
        lines.append(_stats_line(key, summary[key]))
    tp = summary["throughput"]
    if tp["window_s"]:
        lines.append(f"throughput over {tp['window_s']:.2f} s: {tp['requests_per_s']:.2f} requests/s, "
                     f"{tp['output_tokens_per_s']:.1f} output tokens/s ({tp['output_tokens']} tokens)")
    gp = summary.get("goodput")
    if gp:
        slo = ",".join(f"{k}={v:g}" for k, v in gp["slo"].items())
        share = "-" if gp["share"] is None else f"{100 * gp['share']:.1f}%"
        conv = "-" if gp["conversation_share"] is None else f"{100 * gp['conversation_share']:.1f}%"
        rate = "-" if gp["requests_per_s"] is None else f"{gp['requests_per_s']:.2f}/s"
        lines.append(f"goodput ({slo}): {gp['requests_met']} requests met the SLOs ({share}, {rate}); "
                     f"conversations: {gp['conversations_met']}/{gp['conversations']} ({conv})")
    if summary["by_turn_index"]:
        lines.append("by turn index: " + "; ".join(
            f"#{k}: n={v['n']} ttft p50 {_ms(v['ttft_ms']['p50'])}, e2e p50 {_ms(v['e2e_ms']['p50'])}"
            for k, v in list(summary["by_turn_index"].items())[:12]))
    drift = summary.get("context_drift_pct") or {}
    if drift.get("n") and (drift.get("max") or drift.get("min")):
        lines.append(f"context drift from the capture (% of its characters): p50 {drift['p50']:+.1f}, "
                     f"min {drift['min']:+.1f}, max {drift['max']:+.1f} (n={drift['n']})")
    vs = summary.get("versus_capture")
    if vs and vs["turns"]:
        parts = []
        for k, d in vs["median_difference_ms"].items():
            if d["n"]:
                parts.append(f"{k} {d['median']:+.1f} [{d['ci95'][0]:+.1f}, {d['ci95'][1]:+.1f}] (n={d['n']})")
        lines.append("versus the capture (bench − captured, median [95% bootstrap CI]): " + "; ".join(parts))
    return "\n".join(lines) + "\n"


class RowSink:
    """Builds each finished request's capture rows and hands them to the writer, off the event loop.

    While a run is on, results are only kept (appending to a list costs the loop nothing): building
    rows and Parquet would compete with the loop for the GIL and delay sends. They are built on a
    thread of their own when ``backlog`` results have piled up (a long run must not hold them all)
    and at ``close``."""

    def __init__(self, writer, backlog: int = 5000) -> None:
        import queue
        import sys
        import threading

        # Imported now, not in the middle of a run.
        import analyzer.extract.conversation  # noqa: F401
        import analyzer.redact  # noqa: F401
        import analyzer.replay.replay  # noqa: F401
        import analyzer.streams.openai_api  # noqa: F401

        self.writer = writer
        self.backlog = backlog
        self.failed: list[str] = []
        self._pending: list[Result] = []
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        # The loop thread gets the GIL back within 1 ms (not the default 5 ms) while rows are built.
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch, 0.001))
        self._thread = threading.Thread(target=self._work, name="bench-rows", daemon=True)
        self._thread.start()

    def put(self, result: Result) -> None:
        self._pending.append(result)
        if len(self._pending) >= self.backlog:
            self._queue.put(self._pending)
            self._pending = []

    def _work(self) -> None:
        while (batch := self._queue.get()) is not None:
            for result in batch:
                try:
                    self.writer.add(capture_rows(result))
                except Exception as exc:  # one bad row must not lose the rest of the run
                    self.failed.append(f"{result.record.flow_id}: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        import sys

        if self._pending:
            self._queue.put(self._pending)
            self._pending = []
        self._queue.put(None)
        self._thread.join()
        sys.setswitchinterval(self._switch)
