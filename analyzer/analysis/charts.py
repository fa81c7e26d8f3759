"""Static charts for the HTML report: matplotlib figures rendered to inline SVG strings.

Each builder takes plain arrays (already computed by ``analyzer.analysis.latency`` and friends) and
returns one ``<svg>`` element ready to paste into a page. Nothing here reads a capture.

Why the post-processing in :func:`figure_svg`:

* colours are drawn with *sentinel* hex values and swapped for CSS (``currentColor`` for ink,
  ``var(--cN)`` for series), so one SVG reads on a light and a dark page and prints in black;
* text stays text (``svg.fonttype = none``) in the page's own font, so no font file is embedded;
* the XML prolog, the DOCTYPE (which names a URL) and the RDF metadata are dropped: the page must
  not name anything a browser could fetch;
* ``svg.hashsalt`` is fixed so the same data gives byte-identical SVG (diffable reports).

Downsampling keeps the page small for captures with millions of events: a CDF is drawn through
at most ``CDF_POINTS`` ranks per series, a scatter through at most ``SCATTER_POINTS`` pairs, and a
raster row through at most ``RASTER_TICKS`` ticks. The percentiles marked on a CDF are passed in
(from the report), never re-read off the downsampled curve.
"""

from __future__ import annotations

import functools
import html
import io
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from analyzer.inert import inert

log = logging.getLogger(__name__)

CDF_POINTS = 400
SCATTER_POINTS = 3000
RASTER_TICKS = 600
PALETTE_SIZE = 8
LOG_SPREAD = 20.0  # p99 / p1 above this: a log axis shows both ends of the distribution

# Sentinel colours (never produced by data) and what they become in the page.
INK = "#010203"
GRID = "#010204"
_SERIES = [f"#0102{0xe0 + i:02x}" for i in range(PALETTE_SIZE)]
_REPLACE = {INK: "currentColor", GRID: "var(--grid)"} | {c: f"var(--c{i})" for i, c in enumerate(_SERIES)}
_COLOUR_RE = re.compile("|".join(re.escape(c) for c in _REPLACE))
_FONT_RE = re.compile(r"font-family: [^;\"]*")

RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "chatwire-report",
    "font.family": "sans-serif",
    "font.size": 9.0,
    "text.color": INK,
    "axes.labelcolor": INK,
    "axes.edgecolor": INK,
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": GRID,
    "grid.linewidth": 0.5,
    "xtick.color": INK,
    "ytick.color": INK,
    "xtick.labelcolor": INK,
    "ytick.labelcolor": INK,
    "legend.frameon": False,
    "legend.fontsize": 8.0,
    "lines.linewidth": 1.4,
    "path.simplify": True,
}


def series_colour(index: int) -> str:
    """The sentinel colour of palette slot ``index`` (it becomes ``var(--c<index mod 8>)`` in the page)."""
    return _SERIES[index % PALETTE_SIZE]


def figure_svg(fig: Figure, *, titles: dict[str, str] | None = None, label: str = "") -> str:
    """``fig`` as one inline ``<svg>`` element; ``titles`` maps artist gids to hover text."""
    buf = io.StringIO()
    with matplotlib.rc_context(RC):
        fig.savefig(buf, format="svg", transparent=True, metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]  # drop the XML prolog and the DOCTYPE (it names a URL)
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, count=1, flags=re.S)
    svg = _COLOUR_RE.sub(lambda m: _REPLACE[m.group(0)], svg)
    svg = _FONT_RE.sub("font-family: inherit", svg)
    # Scale with the page (keep the viewBox, let CSS size the element), but never beyond the drawn size:
    # 9-pt text stays 12 px on a wide screen.
    svg = re.sub(r'<svg ([^>]*?)width="([0-9.]+)pt" height="[^"]*"',
                 lambda m: f'<svg {m.group(1)}class="chart" role="img" aria-label="{html.escape(label)}" '
                           f'style="max-width: {float(m.group(2)) * 4 / 3:.0f}px"',
                 svg, count=1)
    for gid, text in (titles or {}).items():
        svg = svg.replace(f'<g id="{gid}">', f'<g id="{gid}" class="hover"><title>{html.escape(text)}</title>', 1)
    # Labels come from traffic (model names, event names): their control characters shown, as everywhere.
    return inert(svg.strip())


def _styled[**P](func: Callable[P, str]) -> Callable[P, str]:
    """Run a chart builder under ``RC``: artists take their defaults when created, not when saved."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> str:
        with matplotlib.rc_context(RC):
            return func(*args, **kwargs)

    return wrapper


def _figure(width: float = 11.0, height: float = 3.6) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _axes(fig: Figure):
    return fig.add_subplot()


# -- CDFs -----------------------------------------------------------------------------------------


def cdf_points(values: np.ndarray, max_points: int = CDF_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """The empirical CDF of the finite ``values`` through at most ``max_points`` evenly spaced ranks.

    Returns ``(x, y)`` with ``y = rank / n``; the first and last ranks are always kept, so the curve
    spans the full range.
    """
    arr = np.asarray(values, dtype="float64")
    arr = np.sort(arr[np.isfinite(arr)])
    n = arr.size
    if n == 0:
        return np.empty(0), np.empty(0)
    ranks = np.arange(n) if n <= max_points else np.unique(np.linspace(0, n - 1, max_points).round().astype(int))
    return arr[ranks], (ranks + 1) / n


def wants_log(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> bool:
    """True when the positive values of the CDF ``curves`` (``cdf_points`` output) span more than
    ``LOG_SPREAD`` between their 1st and 99th percentile (read off the curves: a choice of axis needs
    no exact percentile, and the curves are already sorted)."""
    lows, highs = [], []
    for x, y in curves:
        keep = x > 0
        x, y = x[keep], y[keep]
        if not x.size:
            continue
        lows.append(float(x[min(np.searchsorted(y, 0.01), x.size - 1)]))
        highs.append(float(x[min(np.searchsorted(y, 0.99), x.size - 1)]))
    return bool(lows) and max(highs) / min(lows) > LOG_SPREAD


@dataclass
class CdfSeries:
    """One curve: its label, values, palette slot, dashed or not, and percentile marks to draw."""

    label: str
    values: np.ndarray
    colour: int
    dashed: bool = False
    marks: dict[str, float | None] = field(default_factory=dict)  # {"p50": x, "p95": x}


_MARK_Y = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
_MARK_SHAPE = {"p50": "o", "p95": "^", "p99": "s"}


@_styled
def cdf_chart(series: Sequence[CdfSeries], *, xlabel: str, label: str, log_x: bool | None = None) -> str:
    """Step CDFs on shared axes, percentile marks as markers on each curve, legend outside right."""
    fig = _figure()
    ax = _axes(fig)
    curves = [cdf_points(s.values) for s in series]
    if log_x is None:
        log_x = wants_log(curves)
    for s, (x, y) in zip(series, curves, strict=True):
        if not x.size:
            continue
        colour = series_colour(s.colour)
        # Start the curve at 0 on its first value, so that even a single answer draws a visible step.
        x, y = np.r_[x[0], x], np.r_[0.0, y]
        ax.step(x, y, where="post", color=colour, linestyle=(0, (4, 2)) if s.dashed else "-", label=s.label)
        for name, value in s.marks.items():
            if value is not None and (value > 0 or not log_x):
                ax.plot([value], [_MARK_Y[name]], marker=_MARK_SHAPE[name], markersize=5, color=colour,
                        linestyle="none", markeredgewidth=0)
    if log_x:
        ax.set_xscale("log")
    elif any(x.size for x, _ in curves):
        # Latencies read against zero: a tight axis makes 453.4 vs 454.0 ms look like a wide spread.
        left = min(0.0, min(float(x[0]) for x, _ in curves if x.size))
        right = max(float(x[-1]) for x, _ in curves if x.size)
        ax.set_xlim(left, right + 0.04 * (right - left) or 1.0)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel + (" (log scale)" if log_x else ""))
    ax.set_ylabel("fraction ≤ x")
    handles, labels = ax.get_legend_handles_labels()
    # Marker key, drawn once for the whole chart.
    for name in sorted({m for s in series for m, v in s.marks.items() if v is not None}, key=list(_MARK_Y).index):
        handles.append(ax.plot([], [], marker=_MARK_SHAPE[name], color=INK, linestyle="none", markersize=5)[0])
        labels.append(name)
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure_svg(fig, label=label)


# -- stream raster ----------------------------------------------------------------------------------


@dataclass
class RasterRow:
    """One answer: tick offsets (ms from the request), palette slot, and the hover text."""

    offsets: np.ndarray
    colour: int
    hover: str


def thin(offsets: np.ndarray, max_ticks: int = RASTER_TICKS) -> np.ndarray:
    """At most ``max_ticks`` of the sorted ``offsets``, evenly spaced by rank, first and last kept."""
    if offsets.size <= max_ticks:
        return offsets
    return offsets[np.unique(np.linspace(0, offsets.size - 1, max_ticks).round().astype(int))]


@_styled
def raster_chart(rows: Sequence[RasterRow], *, legend: dict[str, int], label: str) -> str:
    """One row per answer (first row at the top), a tick per text event; hovering a row shows its text."""
    height = min(2.0 + 0.16 * len(rows), 14.0)
    fig = _figure(height=height)
    ax = _axes(fig)
    n = len(rows)
    positions = [n - 1 - i for i in range(n)]  # first row on top
    titles = {}
    for i, (row, y) in enumerate(zip(rows, positions, strict=True)):
        # One path per row (ticks joined by NaN breaks) rather than one element per tick as
        # ``eventplot`` writes it: a fifth of the SVG size for the same picture.
        ticks = thin(np.asarray(row.offsets, dtype="float64"))
        xs = np.repeat(ticks, 3)
        xs[2::3] = np.nan
        ys = np.tile([y - 0.4, y + 0.4, np.nan], ticks.size)
        ax.plot(xs, ys, color=series_colour(row.colour), linewidth=0.7, solid_capstyle="butt")
        gid = f"raster-row-{i}"
        # An invisible band over the whole row: the hover target (CSS gives it pointer events).
        ax.axhspan(y - 0.5, y + 0.5, facecolor=INK, alpha=0.0, gid=gid)
        titles[gid] = row.hover
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_yticks([])
    ax.grid(axis="y", visible=False)
    ax.set_xlim(left=0)
    ax.set_xlabel("ms since the request was sent")
    ax.set_ylabel("answers (newest on top)")
    handles = [ax.plot([], [], color=series_colour(c), marker="|", linestyle="none", markersize=8)[0]
               for c in legend.values()]
    if handles:
        ax.legend(handles, list(legend), loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure_svg(fig, titles=titles, label=label)


# -- scatter and bars -------------------------------------------------------------------------------


@_styled
def scatter_chart(x: np.ndarray, y: np.ndarray, colours: np.ndarray, *, legend: dict[str, int], xlabel: str,
                  ylabel: str, label: str, max_points: int = SCATTER_POINTS, seed: int = 0) -> str:
    """``y`` against ``x`` with the y = x line; at most ``max_points`` pairs (a seeded random sample)."""
    x = np.asarray(x, dtype="float64")
    y = np.asarray(y, dtype="float64")
    colours = np.asarray(colours)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y, colours = x[ok], y[ok], colours[ok]
    if x.size > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(x.size, size=max_points, replace=False))
        x, y, colours = x[keep], y[keep], colours[keep]
    fig = _figure(width=7.5, height=4.6)
    ax = _axes(fig)
    for name, slot in legend.items():
        mine = colours == slot
        if mine.any():
            ax.scatter(x[mine], y[mine], s=9, color=series_colour(slot), alpha=0.7, linewidths=0, label=name)
    if x.size:
        lo = float(min(x.min(), y.min(), 0.0))
        hi = float(max(x.max(), y.max())) * 1.05 or 1.0
        ax.plot([lo, hi], [lo, hi], color=INK, linewidth=0.8, linestyle=(0, (3, 3)), label="y = x")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure_svg(fig, label=label)


@_styled
def bar_chart(labels: Sequence[str], stacks: dict[str, Sequence[float]], *, xlabel: str, label: str,
              colours: Sequence[int] | None = None) -> str:
    """Horizontal bars, first label on top; several ``stacks`` are drawn end to end per bar."""
    n = len(labels)
    fig = _figure(height=min(1.2 + 0.24 * n, 9.0))
    ax = _axes(fig)
    y = np.arange(n)[::-1]
    left = np.zeros(n)
    for i, (name, values) in enumerate(stacks.items()):
        vals = np.asarray(values, dtype="float64")
        slot = colours[i] if colours is not None else i
        ax.barh(y, vals, left=left, height=0.7, color=series_colour(slot), label=name)
        left = left + vals
    ax.set_yticks(y, [_short(lab) for lab in labels])
    ax.grid(axis="y", visible=False)
    ax.set_xlabel(xlabel)
    if len(stacks) > 1:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure_svg(fig, label=label)


@_styled
def time_series_chart(series: Sequence[tuple[str, np.ndarray, np.ndarray, int]], *, ylabel: str, label: str,
                      max_points: int = CDF_POINTS) -> str:
    """One stepped line per ``(name, epoch_seconds, values, palette slot)``, time on the x axis (UTC);
    a long series is thinned to ``max_points`` evenly spaced observations, its first and last kept."""
    import matplotlib.dates as mdates

    fig = _figure(height=3.8)
    ax = _axes(fig)
    for name, times, values, slot in series:
        t = np.asarray(times, dtype="float64")
        v = np.asarray(values, dtype="float64")
        ok = np.isfinite(t) & np.isfinite(v)
        t, v = t[ok], v[ok]
        if t.size > max_points:
            keep = np.unique(np.linspace(0, t.size - 1, max_points).round().astype(int))
            t, v = t[keep], v[keep]
        if t.size:
            when = mdates.date2num((t * 1e6).astype("datetime64[us]"))
            ax.step(when, v, where="post", color=series_colour(slot), linewidth=1.4, marker="o", markersize=2.5,
                    label=name)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(mdates.AutoDateLocator()))
    ax.set_ylabel(ylabel)
    ax.set_xlabel("time (UTC)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure_svg(fig, label=label)


def _short(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = [
    "CDF_POINTS", "RASTER_TICKS", "SCATTER_POINTS", "CdfSeries", "RasterRow", "bar_chart", "cdf_chart",
    "cdf_points", "figure_svg", "raster_chart", "scatter_chart", "series_colour", "thin", "time_series_chart",
    "wants_log",
]
