"""The ``bench`` section of ``analyze report``: one entry per ``analyze bench`` run of a capture.

Each run's numbers are the run's own summary (``bench_runs.summary``, computed by
``analyzer.bench.metrics.summarize`` when the run ended, exactly what ``analyze bench --format json``
printed); nothing is recomputed. ``bench_requests`` adds how many rows the run left and where
their token counts came from. ``bench_block`` is the JSON; ``bench_blocks`` the text / Markdown
blocks; ``bench_html`` the HTML section. A degraded run says so before anything else.
"""

from __future__ import annotations

import html
import json
from typing import Any

import pandas as pd

from analyzer.inert import inert

STATS_KEYS = ("ttft_ms", "ttft_from_intended_ms", "ttfv_ms", "itl_ms", "tpot_ms", "e2e_ms", "e2e_from_intended_ms",
              "schedule_lag_ms")
# What the section reads (``analyzer.analysis.report.report_columns`` declares it).
COLUMNS: dict[str, list[str]] = {
    "bench_runs": ["run_id", "started_at", "ended_at", "base_url", "schedule", "knobs", "models", "degraded",
                   "interrupted", "summary"],
    "bench_requests": ["run_id", "output_tokens_source", "recorded_tokens_source"],
}
KNOB_ORDER = ("rate", "concurrency", "speed", "think_scale", "think_max_s", "clone", "jitter_s", "max_active",
              "duration_s", "warmup_s", "cooldown_s", "seed")


def _json(text: Any) -> Any:
    if not isinstance(text, str) or not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _iso(ts: Any) -> str | None:
    if ts is None or (not isinstance(ts, str) and pd.isna(ts)):
        return None
    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t.isoformat().replace("+00:00", "Z")


def run_entry(run: dict, requests: pd.DataFrame) -> dict:
    """One run: what was asked (schedule, knobs), whether it held (degraded), what came out."""
    summary = _json(run.get("summary")) or {}
    knobs = _json(run.get("knobs")) or {}
    sources = requests["output_tokens_source"].dropna().value_counts() if "output_tokens_source" in requests else []
    recorded = (requests["recorded_tokens_source"].dropna().value_counts()
                if "recorded_tokens_source" in requests else [])
    entry = {
        "run_id": run.get("run_id"),
        "degraded": bool(run.get("degraded")) or bool(summary.get("degraded")),
        "degraded_reason": summary.get("degraded_reason"),
        "interrupted": bool(run.get("interrupted")),
        "started_at": _iso(run.get("started_at")),
        "ended_at": _iso(run.get("ended_at")),
        "base_url": run.get("base_url"),
        "models": _json(run.get("models")),
        "schedule": run.get("schedule"),
        "knobs": {k: knobs[k] for k in KNOB_ORDER if knobs.get(k) is not None},
        "request_rows": int(len(requests)),
        "requests": summary.get("requests"),
        **{k: summary.get(k) for k in STATS_KEYS},
        "throughput": summary.get("throughput"),
        "goodput": summary.get("goodput"),
        "output_tokens_source": {str(k): int(v) for k, v in dict(sources).items()},
        "recorded_tokens_source": {str(k): int(v) for k, v in dict(recorded).items()},
        "summary_missing": not summary,
    }
    return entry


def bench_block(capture) -> dict | None:
    """``{"runs": [...]}``, oldest run first; None when the capture has no bench rows."""
    runs = capture.table("bench_runs", COLUMNS["bench_runs"])
    requests = capture.table("bench_requests", COLUMNS["bench_requests"])
    if not len(runs) and not len(requests):
        return None
    runs = runs.sort_values("started_at", kind="stable") if len(runs) else runs
    by_run = {k: g for k, g in requests.groupby("run_id", observed=True, sort=False)} if len(requests) else {}
    out = [run_entry(r, by_run.get(r["run_id"], requests.iloc[0:0])) for r in runs.to_dict("records")]
    orphans = sorted(set(by_run) - set(runs["run_id"] if len(runs) else []))
    for run_id in orphans:  # requests of a run whose run row never came (a run killed before it ended)
        out.append(run_entry({"run_id": run_id}, by_run[run_id]))
    return {"runs": out}


# ---------------------------------------------------------------- text and Markdown


def _num(value: Any, decimals: int = 1) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{value:,.{decimals}f}"


DEFAULT_KNOBS = {"speed": 1, "think_scale": 1, "clone": 1, "jitter_s": 0, "warmup_s": 0, "cooldown_s": 0}


def knobs_text(run: dict) -> str:
    """The schedule and its knobs that differ from their defaults (the JSON has them all)."""
    shown = {k: v for k, v in run["knobs"].items() if DEFAULT_KNOBS.get(k, object()) != v}
    knobs = ", ".join(f"{k}={v:g}" if isinstance(v, int | float) else f"{k}={v}" for k, v in shown.items())
    return f"schedule {run['schedule'] or '-'}" + (f" ({knobs})" if knobs else "")


def headline(run: dict) -> str:
    req = run.get("requests") or {}
    errors = ", ".join(f"{k} {v}" for k, v in sorted((req.get("errors") or {}).items())) or "none"
    when = run["started_at"] or "-"
    return (f"{knobs_text(run)} against {run['base_url'] or '-'}, started {when}: "
            f"{run['request_rows']} request(s), {req.get('steady', '-')} in the steady window, "
            f"{req.get('ok', '-')} ok; errors: {errors}" + (" (interrupted: partial)" if run["interrupted"] else ""))


def throughput_text(run: dict) -> str:
    tp = run.get("throughput") or {}
    parts = []
    if tp.get("window_s"):
        parts.append(f"throughput over {tp['window_s']:.2f} s: {_num(tp['requests_per_s'], 2)} requests/s, "
                     f"{_num(tp['output_tokens_per_s'])} output tokens/s ({tp['output_tokens']} tokens)")
    gp = run.get("goodput")
    if gp:
        slo = ",".join(f"{k}={v:g}" for k, v in gp["slo"].items())
        share = "-" if gp["share"] is None else f"{100 * gp['share']:.1f}%"
        conv = "-" if gp["conversation_share"] is None else f"{100 * gp['conversation_share']:.1f}%"
        parts.append(f"goodput ({slo}): {gp['requests_met']} requests met the SLOs ({share}, "
                     f"{_num(gp['requests_per_s'], 2)}/s); conversations {gp['conversations_met']}/"
                     f"{gp['conversations']} ({conv})")
    if run["output_tokens_source"]:
        parts.append("output tokens from " + ", ".join(f"{k} {v}" for k, v in run["output_tokens_source"].items()))
    return "; ".join(parts) + "." if parts else "No request finished in the steady window."


def stats_rows(run: dict) -> list[list[str]]:
    rows = []
    for key in STATS_KEYS:
        s = run.get(key) or {}
        if s.get("n"):
            rows.append([key, f"{s['n']:,}", _num(s.get("p50")), _num(s.get("p90")), _num(s.get("p99")),
                         _num(s.get("mean")), _num(s.get("max"))])
    return rows


def bench_blocks(bench: dict | None) -> list:
    """The section as ``render_report`` blocks (headings, sentences, tables)."""
    if not bench:
        return []
    from analyzer.analysis.render_report import Heading, Para, Table

    runs = bench["runs"]
    out: list = [Heading("Bench runs")]
    n_degraded = sum(r["degraded"] for r in runs)
    out.append(Para(f"{len(runs)} `analyze bench` run(s) in this capture"
                    + (f", {n_degraded} DEGRADED (the generator did not keep to its schedule)" if n_degraded else "")
                    + "; milliseconds, steady window only (warm-up and cool-down left out)."))
    for k, run in enumerate(runs, 1):
        out.append(Heading(f"Run {k}: {inert(run['run_id'] or '-')}", 3))
        if run["degraded"]:
            out.append(Para(f"DEGRADED: {inert(run['degraded_reason'] or 'schedule lag above the bound')}"))
        out.append(Para(inert(headline(run))))
        if run["summary_missing"]:
            out.append(Para("This run's summary is missing (it never finished writing): only its rows are here."))
            continue
        rows = stats_rows(run)
        if rows:
            out.append(Table(["metric", "n", "p50", "p90", "p99", "mean", "max"], rows, "lrrrrrr"))
        out.append(Para(inert(throughput_text(run))))
    return out


# ---------------------------------------------------------------- HTML


def bench_html(bench: dict | None) -> str:
    """The section as one ``<section id="bench">`` (static, escaped); empty without bench rows."""
    if not bench:
        return ""
    e = html.escape
    parts = ['<section id="bench" data-section="bench">', "  <h2>Bench runs</h2>"]
    for k, run in enumerate(bench["runs"], 1):
        parts.append(f'  <h3>Run {k}: <code>{e(str(run["run_id"] or "-"))}</code></h3>')
        if run["degraded"]:
            parts.append(f'  <p class="degraded" data-degraded="yes"><strong>DEGRADED:</strong> '
                         f'{e(run["degraded_reason"] or "schedule lag above the bound")}</p>')
        parts.append(f"  <p>{e(headline(run))}</p>")
        rows = stats_rows(run)
        if rows:
            parts.append('  <table class="stats bench-stats">')
            parts.append("    <tr>" + "".join(f"<th>{h}</th>" for h in
                                               ("metric", "n", "p50", "p90", "p99", "mean", "max")) + "</tr>")
            for row in rows:
                parts.append("    <tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
            parts.append("  </table>")
        parts.append(f"  <p>{e(throughput_text(run))}</p>")
    parts.append("</section>")
    return "\n".join(parts) + "\n"


def insert_html(page: str, bench: dict | None) -> str:
    """``page`` with the bench section before its first section (a degraded run is seen first), else
    before ``</body>``; the page unchanged without bench rows."""
    section = bench_html(bench)
    if not section:
        return page
    at = page.find("<section")
    if at < 0:
        at = page.rfind("</body>")
    return page[:at] + section + page[at:] if at >= 0 else page + section
