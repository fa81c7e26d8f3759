"""``analyze bench --format html``: one static page (inline SVG, no script, nothing fetched).

Charts: latency over the run (TTFT from the intended send, per request), requests in flight and
schedule lag per second, and the CDFs of TTFT and E2E beside the captured ones. Every text that
came from traffic or the command line is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

from analyzer.analysis.charts import CdfSeries, _figure, cdf_chart, figure_svg, series_colour
from analyzer.bench.metrics import RequestRecord

_CSS = """
:root { color-scheme: light dark; --c0: #1f6fd1; --c1: #d9730d; --c2: #1a8a5a; --c3: #c9302c; --c4: #7b4fd6;
  --c5: #0e8fa8; --c6: #c2407f; --c7: #6b8e23; --grid: #d0d4da; }
@media (prefers-color-scheme: dark) { :root { --c0: #6cb6ff; --c1: #f0a050; --c2: #57c98f; --c3: #ff7b72;
  --c4: #b19cff; --c5: #4fd1e5; --c6: #f07fb4; --c7: #a8cc5a; --grid: #3a3f46; } }
body { font: 14px/1.45 system-ui, sans-serif; max-width: 1100px; margin: 1.5rem auto; padding: 0 1rem; }
svg.chart { width: 100%; height: auto; display: block; margin: .5rem 0 1.5rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; } td, th { padding: .15rem .6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; } tr:nth-child(even) { background: color-mix(in srgb, currentColor 6%, transparent); }
.degraded { border: 2px solid var(--c3); padding: .5rem .8rem; color: var(--c3); font-weight: 600; }
"""

_STAT_KEYS = ("ttft_ms", "ttft_from_intended_ms", "ttfv_ms", "itl_ms", "itl_per_token_ms", "tpot_ms", "e2e_ms",
              "e2e_from_intended_ms", "schedule_lag_ms")


def _num(v) -> str:
    return "–" if v is None else f"{v:,.1f}"


def _over_time(records: Sequence[RequestRecord], start: float) -> str:
    fig = _figure(height=3.2)
    ax = fig.add_subplot()
    ok = [r for r in records if r.ok and r.ttft_from_intended_ms is not None]
    if ok:
        x = np.array([r.intended_at - start for r in ok])
        ax.plot(x, [r.ttft_from_intended_ms for r in ok], ".", color=series_colour(0), markersize=3,
                label="TTFT from the intended send")
        ax.plot(x, [r.ttft_ms for r in ok], ".", color=series_colour(1), markersize=3, label="TTFT from the send")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_xlabel("intended send (s from the run's start)")
    ax.set_ylabel("ms")
    return figure_svg(fig, label="TTFT over the run")


def _series(points: list[dict]) -> str:
    fig = _figure(height=3.2)
    ax = fig.add_subplot()
    t = [p["t_s"] for p in points]
    ax.step(t, [p["in_flight"] for p in points], where="post", color=series_colour(2), label="requests in flight")
    ax.set_xlabel("s from the run's start")
    ax.set_ylabel("requests in flight")
    lag_ax = ax.twinx()
    lag_ax.plot(t, [p["schedule_lag_ms"] if p["schedule_lag_ms"] is not None else np.nan for p in points], "-",
                color=series_colour(3), label="mean schedule lag (ms)")
    lag_ax.set_ylabel("schedule lag (ms)")
    handles = ax.get_legend_handles_labels()[0] + lag_ax.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper left", bbox_to_anchor=(1.08, 1.0))
    return figure_svg(fig, label="requests in flight and schedule lag per second")


def render_html(summary: dict, records: Sequence[RequestRecord], captured: dict[tuple[str, int], dict], *,
                title: str, started_at: float | None) -> str:
    """The page, as a string."""
    steady = [r for r in records if r.phase == "steady"]
    start = started_at if started_at is not None else min((r.intended_at for r in records), default=0.0)
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    if summary.get("degraded"):
        parts.append(f"<p class='degraded'>DEGRADED: {html.escape(summary['degraded_reason'] or '')}</p>")
    req = summary["requests"]
    errors = ", ".join(f"{html.escape(k)} {v}" for k, v in sorted(req["errors"].items())) or "none"
    parts.append(f"<p>{req['total']} requests sent, {req['steady']} in the steady window, {req['ok']} ok; "
                 f"errors: {errors}.</p>")
    parts.append("<h2>Latency (ms)</h2><table><tr><th>metric</th><th>n</th><th>p50</th><th>p90</th><th>p99</th>"
                 "<th>mean</th><th>max</th></tr>")
    for key in _STAT_KEYS:
        s = summary[key]
        parts.append(f"<tr><td>{key}</td><td>{s['n']}</td><td>{_num(s['p50'])}</td><td>{_num(s['p90'])}</td>"
                     f"<td>{_num(s['p99'])}</td><td>{_num(s['mean'])}</td><td>{_num(s['max'])}</td></tr>")
    parts.append("</table>")
    tp = summary["throughput"]
    if tp["window_s"]:
        parts.append(f"<p>Throughput over {tp['window_s']:.2f} s: {tp['requests_per_s']:.2f} requests/s, "
                     f"{tp['output_tokens_per_s']:.1f} output tokens/s.</p>")
    parts.append("<h2>Over the run</h2>")
    parts.append(_over_time(steady, start))
    if summary.get("time_series"):
        parts.append(_series(summary["time_series"]))
    parts.append("<h2>Beside the capture</h2>")
    for metric, label in (("ttft_ms", "TTFT (ms)"), ("e2e_ms", "E2E (ms)")):
        bench = np.array([getattr(r, metric) for r in steady if r.ok and getattr(r, metric) is not None], dtype=float)
        cap = np.array([v[metric] for v in captured.values() if v.get(metric) is not None], dtype=float)
        series = [CdfSeries("bench", bench, 0, marks={"p50": summary[metric]["p50"], "p99": summary[metric]["p99"]})]
        if cap.size:
            series.append(CdfSeries("captured", cap, 1, dashed=True))
        parts.append(cdf_chart(series, xlabel=label, label=f"{label}: bench beside the capture"))
    parts.append("</body></html>\n")
    return "".join(parts)
