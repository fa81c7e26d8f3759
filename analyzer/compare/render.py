"""Render a :class:`~analyzer.compare.comparison.CompareResult` as text, Markdown, JSON or HTML.

Text and Markdown share one list of blocks (``analyzer.analysis.render_report``'s layouts); JSON is
:func:`~analyzer.compare.comparison.as_dict`; HTML is one self-contained page (Jinja2 autoescape,
inline SVG CDFs from ``analyzer.analysis.charts``, nothing fetched). Group names and paths come from
captures: the CLI makes the whole text inert, the page escapes and makes inert every string.
"""

from __future__ import annotations

import json

import numpy as np

from analyzer.analysis.render_report import Block, Heading, Para, Table, blocks_to_markdown, blocks_to_text
from analyzer.compare import stats
from analyzer.compare.comparison import METRICS, CompareResult, as_dict

FORMATS = ("text", "markdown", "json", "html")
HTML_GROUPS = 8  # CDF lines per chart: one palette slot per group, A solid and B dashed


def _ms(value: float | None, signed: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "-"
    decimals = 0 if abs(value) >= 1000 else 1
    return f"{value:+,.{decimals}f}" if signed else f"{value:,.{decimals}f}"


def _ci(ci: tuple[float, float] | None) -> str:
    return "-" if ci is None else f"[{_ms(ci[0], True)}, {_ms(ci[1], True)}]"


def _p(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def _side_text(name: str, side) -> str:
    where = f" where {side.where}" if side.where else ""
    caps = f" ({len(side.captures)} captures)" if len(side.captures) > 1 else ""
    return f"{name}: {', '.join(side.paths)}{where}{caps}: {side.answers:,} answers"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def method_sentence(result: CompareResult) -> str:
    s = result.settings
    return (f"B − A of the medians, one value per answer ({', '.join(f'{m} = {METRICS[m]}' for m in s.metrics)}); "
            f"95% percentile-bootstrap interval ({s.resamples:,} resamples, seed {s.seed}); two-sided Mann-Whitney U "
            f"p-value, Holm-adjusted over the {_plural(sum(c.p_value is not None for c in result.comparisons), 'comparison')} "
            f"with at least {s.min_n} answers per side. 'slower'/'faster' only when the interval excludes 0 and "
            f"p < {s.alpha:g}.")


HEADERS = ["metric", "group", "A n", "A p50", "A p90", "B n", "B p50", "B p90", "B−A p50 ms", "95% CI ms",
           "p (Holm)", "verdict"]
ALIGN = "llrrrrrrrrrl"


def _rows(result: CompareResult) -> list[list[str]]:
    return [[c.metric, c.group, f"{c.a.n:,}", _ms(c.a.p50), _ms(c.a.p90), f"{c.b.n:,}", _ms(c.b.p50),
             _ms(c.b.p90), _ms(c.diff_p50, True), _ci(c.ci95), _p(c.p_value), c.verdict]
            for c in result.comparisons]


def blocks(result: CompareResult) -> list[Block]:
    by = f" by {result.settings.by}" if result.settings.by else ""
    out: list[Block] = [Heading(f"chatwire compare{by}", 1), Para(_side_text("A", result.a)),
                        Para(_side_text("B", result.b))]
    if result.comparisons:
        out.append(Table(HEADERS, _rows(result), ALIGN))
    else:
        out.append(Para("Nothing to compare: neither side has an answer."))
    out.append(Para(method_sentence(result)))
    return out


def render_json(result: CompareResult) -> str:
    return json.dumps(as_dict(result), indent=2, allow_nan=False, ensure_ascii=False) + "\n"


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>{{ title }}</title>
<style>
:root { color-scheme: light dark; --fg: #1b1f24; --bg: #ffffff; --muted: #5b6570; --grid: #d8dde3; --line: #e3e7ec;
  --c0: #1f6fd1; --c1: #d9730d; --c2: #1a8a5a; --c3: #c9302c; --c4: #7b4fd6; --c5: #0e8fa8; --c6: #c2407f; --c7: #6b8e23; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e6e9ed; --bg: #15181c; --muted: #9aa4ae; --grid: #343a41; --line: #2b3036;
    --c0: #6cb6ff; --c1: #f0a050; --c2: #57c98f; --c3: #ff7b72; --c4: #b19cff; --c5: #4fd1e5; --c6: #f07fb4; --c7: #a8cc5a; }
}
body { font-family: system-ui, sans-serif; color: var(--fg); background: var(--bg); margin: 1.5rem auto;
  max-width: 1200px; padding: 0 1rem; line-height: 1.4; }
p.muted { color: var(--muted); }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; margin: 1rem 0; }
th, td { padding: .3rem .5rem; border-bottom: 1px solid var(--line); text-align: left; }
td.num, th.num { text-align: right; white-space: nowrap; }
tr.slower td.verdict { color: var(--c3); font-weight: 600; }
tr.faster td.verdict { color: var(--c2); font-weight: 600; }
svg.chart { width: 100%; height: auto; color: var(--fg); }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p id="side-a"><strong>A</strong>: {{ a_text }}</p>
<p id="side-b"><strong>B</strong>: {{ b_text }}</p>
{% if rows %}
<table id="comparisons">
<thead><tr>{% for h in headers %}<th{% if align[loop.index0] == "r" %} class="num"{% endif %}>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in rows %}
<tr class="{{ row.css }}" data-metric="{{ row.metric }}" data-group="{{ row.group }}">{% for cell in row.cells %}<td class="{{ 'num' if align[loop.index0] == 'r' else '' }}{{ ' verdict' if loop.last else '' }}">{{ cell }}</td>{% endfor %}</tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p>Nothing to compare: neither side has an answer.</p>
{% endif %}
<p class="muted">{{ method }}</p>
{% for chart in charts %}
<section class="cdf" id="cdf-{{ chart.metric }}" data-metric="{{ chart.metric }}">
<h2>{{ chart.metric }}: {{ chart.column }} per answer, A solid, B dashed</h2>
{{ chart.svg }}
</section>
{% endfor %}
</body>
</html>
"""


def render_html(result: CompareResult) -> str:
    """One self-contained page: the comparison table and per metric a CDF of both sides per group."""
    import jinja2
    import markupsafe

    from analyzer.analysis.charts import CdfSeries, cdf_chart
    from analyzer.inert import inert

    def finalize(value: object) -> object:
        # As the report's page: every string inert before autoescape (a page `cat` to a terminal).
        return inert(value) if isinstance(value, str) and not isinstance(value, markupsafe.Markup) else value

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, finalize=finalize)
    groups = list(dict.fromkeys(c.group for c in result.comparisons))[:HTML_GROUPS]
    charts = []
    for metric in result.settings.metrics:
        series = []
        for i, group in enumerate(groups):
            a_values, b_values = result.samples.get((metric, group), (np.empty(0), np.empty(0)))
            prefix = "" if group == "all" and len(groups) == 1 else f"{inert(group)} "
            series.append(CdfSeries(f"{prefix}A (n={a_values.size:,})", a_values, i))
            series.append(CdfSeries(f"{prefix}B (n={b_values.size:,})", b_values, i, dashed=True))
        if any(s.values.size for s in series):
            svg = cdf_chart(series, xlabel=f"{METRICS[metric]} (ms)", label=f"CDF of {metric}, A and B")
            charts.append({"metric": metric, "column": METRICS[metric], "svg": markupsafe.Markup(svg)})
    rows = [{"cells": cells, "metric": c.metric, "group": c.group,
             "css": {stats.SLOWER: "slower", stats.FASTER: "faster"}.get(c.verdict, "same")}
            for c, cells in zip(result.comparisons, _rows(result), strict=True)]
    by = f" by {result.settings.by}" if result.settings.by else ""
    return env.from_string(_PAGE).render(
        title=f"chatwire compare{by}", a_text=_side_text("A", result.a)[3:], b_text=_side_text("B", result.b)[3:],
        headers=HEADERS, align=ALIGN, rows=rows, method=method_sentence(result), charts=charts)


def render(result: CompareResult, fmt: str) -> str:
    """``result`` in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "json":
        return render_json(result)
    if fmt == "markdown":
        return blocks_to_markdown(blocks(result))
    if fmt == "html":
        return render_html(result)
    return blocks_to_text(blocks(result))
