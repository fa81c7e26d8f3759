"""Every aggregate metric of the report, each written once as SQL run by an :class:`Engine`.

Definitions (``docs/metrics.md`` has them in full, with where each query is):

* a *text event* is a ``stream_events`` row with non-null, non-empty ``text`` and a non-null
  ``offset_ms`` (a HAR import has none); a ``(flow_id, seq)`` repeated by combined captures counts once;
* ``ttft_ms`` / ``e2e_ms`` are the columns the extractor stored on ``conversation_turns`` /
  ``api_calls`` (null for an answer without any per-event timing);
* ``itl_ms`` pools every gap between consecutive text events of one flow (window ``lag`` over ``seq``);
  a resumed answer's parts are separate flows, so the break between them is no gap;
* ``tpot_ms`` = (offset of the last text event − of the first) / (tokens − 1), tokens from the matched
  beacon's ``count_tokens`` (web) or ``completion_tokens`` (API) when > 0, else the text events;
* a statistic is ``{n, mean, min, p50, p90, p95, p99, max}`` of the finite values, percentiles exact
  and linearly interpolated between closest ranks (NumPy's default method): by the engine's own
  aggregate for a source of at most ``Engine.holistic_max_rows`` rows, else out of core by
  :func:`exact_quantiles` (rank passes of hash aggregations: nothing holds a group's values); the
  ITL always by the passes, every ITL table at once from the gaps' cells (:meth:`Metrics.gap_itl`).

What is not an aggregation stays Python on small tables: the conversation turns with their WebSocket
hand-offs and resumes folded (``analyzer.analysis.latency.conversation_turns``) and the resume
folding map (resume flow -> turn flow, shift) are registered as tables for the queries. Nothing
per event or per gap ever comes back to Python: the HTML charts get a quantile grid per group.
"""

from __future__ import annotations

import weakref
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from analyzer.engine.base import FINITE, Engine
from analyzer.schema import TABLES

STATS_KEYS = ("n", "mean", "min", "p50", "p90", "p95", "p99", "max")
STAT_FRACTIONS = (0.5, 0.9, 0.95, 0.99)
GRID_POINTS = 1001  # quantiles per group the HTML CDFs are drawn through
UNKNOWN_MODEL = "unknown"
UNLABELLED = "unlabelled"
GROUP_KEYS = ("capture", "label", "day", "hour", "model", "host", "stream_format")
BEACON_METRICS = (
    "ts_first_token_ms", "ts_total_request_ms", "count_tokens", "tokens_per_s",
    "ts_median_token_without_first_ms", "ts_p95_token_without_first_ms", "ts_p99_token_without_first_ms",
)
TOKEN_SOURCES = ("beacon", "text_events", "usage")
ANSWER_COLUMNS = ["flow_id", "kind", "conversation_id", "model", "capture", "label", "day", "hour", "host",
                  "stream_format", "started_at", "ttft_ms", "e2e_ms", "tpot_ms", "itl_p50_ms", "n_gaps"]

TURN_SCHEMA = pa.schema([
    ("flow_id", pa.string()), ("conversation_id", pa.string()), ("model_slug", pa.string()),
    ("server_model_slug", pa.string()), ("requested_model", pa.string()), ("started_at", pa.timestamp("us", tz="UTC")),
    ("ttft_ms", pa.float64()), ("e2e_ms", pa.float64()), ("cf_ray", pa.string()), ("stream_format", pa.string()),
    ("capture_id", pa.string()), ("_capture", pa.string()), ("_row", pa.int64()),
    ("n_resumes", pa.int64()), ("resume_gap_ms", pa.float64()),
])
# The columns the queries read of each table that is deduplicated first (``u_<table>``).
READ_COLUMNS: dict[str, list[str]] = {
    "api_calls": ["flow_id", "host", "endpoint", "model", "started_at", "ttft_ms", "e2e_ms", "prompt_tokens",
                  "completion_tokens", "total_tokens", "codex_session_id", "error", "first_reasoning_ms",
                  "reasoning_ms", "server_total_ms", "server_load_ms", "server_prompt_eval_ms", "server_eval_ms",
                  "server_eval_count"],
    "latency_beacons": ["flow_id", "sent_at", "server_request_id", "model", "count_tokens", "ts_first_token_ms",
                        "ts_total_request_ms", "ts_median_token_without_first_ms", "ts_p95_token_without_first_ms",
                        "ts_p99_token_without_first_ms"],
    "flows": ["flow_id", "kind", "host", "started_at", "ended_at", "error"],
    "perf_stats": ["flow_id", "metric", "value"],
}
# Columns of the folded turns Python keeps beside TURN_SCHEMA's (report.resumes_block).
TURN_FRAME_EXTRA = ("resume_error", "stopped_by_user")
FOLD_SCHEMA = pa.schema([("flow_id", pa.string()), ("into_flow_id", pa.string()), ("shift_ms", pa.float64())])


def empty_stats() -> dict[str, Any]:
    return {"n": 0} | {k: None for k in STATS_KEYS[1:]}


def _float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(out) else out


def stats_from(n: Any, mean: Any, mn: Any, mx: Any, q: Any) -> dict[str, Any]:
    """A stats object from one result row (``q`` the array of STAT_FRACTIONS percentiles)."""
    n = 0 if n is None or (isinstance(n, float) and np.isnan(n)) else int(n)
    if n == 0:
        return empty_stats()
    q = list(q)
    return {"n": n, "mean": _float(mean), "min": _float(mn), "p50": _float(q[0]), "p90": _float(q[1]),
            "p95": _float(q[2]), "p99": _float(q[3]), "max": _float(mx)}


def _key(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# A group's values are counted per bin, the bins holding the wanted ranks split again, until a bin
# holds at most EXACT_MAX values: those come back as (value, count) rows. Every pass is a hash
# aggregation over a scan (it spills; nothing holds a group's values). A pass cuts each interval
# (each cell, in the first) into as many bins as CELL_BUDGET (tid, bin) rows allow, between
# QUANTILE_BINS and MAX_BINS: the ranks of a few big groups are then found in two passes (a bin of one
# distinct value needs no further one), and thousands of groups (--by hour over months) bring back a
# bounded frame, in a pass or two more.
QUANTILE_BINS = 64
EXACT_MAX = 2048
MAX_PASSES = 24
MAX_BINS = 65536
CELL_BUDGET = 1_000_000
# Up to ``Engine.holistic_max_rows`` rows in a statistic's source (DuckDB: its memory_limit / 64, the
# values an eighth of it) the engine's own exact percentile runs instead: one query, where the passes
# take three or four, holding the source's values (8 bytes each). A number here overrides the engine's.
HOLISTIC_MAX: int | None = None


def _lerp(a: float, b: float, t: float) -> float:
    """NumPy's linear interpolation (``numpy.lib._function_base_impl._lerp``): exact at both ends."""
    if a == b:
        return a
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


def exact_quantiles(engine: Engine, values: str, wanted: dict[Hashable, tuple[int, float, float, Sequence[int]]],
                    fractions: Sequence[float]) -> dict[Hashable, list[float]]:
    """Exact linear percentiles (NumPy's default method) of groups of values, out of core.

    ``values``: a query of ``cell`` (an integer) and ``v`` (finite doubles). ``wanted``: ``{group:
    (n, min, max, cells)}``, a group's values being those of its cells, from a first aggregate pass.
    Groups may share cells: the pooled ITL and the per-model ITL are unions of the same (kind,
    model) cells, and one scan of the values serves them all.

    For each group every needed rank (``floor`` and ``ceil`` of ``(n - 1) * q``, 0-based) is found by
    counting values per bin within an interval known to hold it, then narrowing the interval to the
    rank's bin (its exact min and max) and the count below it, until the bin is one value. The
    first pass counts per (cell, bin) on one grid for all the cells that groups tie together, and
    sums a group's bins over its cells; later passes count per (interval, bin), reading only the
    values in a first-pass bin that some open interval is in."""
    cells_of = {g: tuple(int(c) for c in w[3]) for g, w in wanted.items()}
    # target: [group, rank, lo, hi, below, count, value, its bin of the first pass]
    targets: dict[tuple, list] = {}
    for g, (n, mn, mx, _) in wanted.items():
        for q in fractions:
            h = (n - 1) * float(q)
            for r in (int(np.floor(h)), int(np.ceil(h))):
                targets.setdefault((g, r), [g, r, mn, mx, 0, n, None, None])
    passes = 0
    while True:
        pending = []
        for t in targets.values():
            if t[6] is None and t[2] == t[3]:
                t[6] = t[2]
            if t[6] is None:
                pending.append(t)
        if not pending:
            break
        passes += 1
        if passes == 1:
            found = _first_pass(engine, values, {t[0]: wanted[t[0]] for t in pending}, cells_of)
            for t in pending:
                t[2], t[3], t[4], t[5], t[7] = _narrow(found[t[0]], t)
            continue
        intervals: dict[tuple, int] = {}
        for t in pending:
            intervals.setdefault((t[0], t[2], t[3]), len(intervals))
        bins = max(QUANTILE_BINS, min(MAX_BINS, CELL_BUDGET // len(intervals)))
        rows = []
        done: set[int] = set()
        for t in pending:
            tid = intervals[(t[0], t[2], t[3])]
            if tid in done:
                continue
            done.add(tid)
            w = _bin_width(t[2], t[3], bins)
            exact = t[5] <= EXACT_MAX or passes >= MAX_PASSES or not w > 0
            rows += [_target(tid, c, t[2], t[3], w, exact) for c in cells_of[t[0]]]
        frame = _count_pass(engine, _inside(engine, values, pending, cells_of), rows, "b.v >= t.lo AND b.v <= t.hi")
        by_tid = _bins_by(frame, "tid")
        for t in pending:
            t[2], t[3], t[4], t[5], _ = _narrow(by_tid[intervals[(t[0], t[2], t[3])]], t)
    out: dict[Hashable, list[float]] = {}
    for g, (n, _, _, _) in wanted.items():
        qs = []
        for q in fractions:
            h = (n - 1) * float(q)
            lo_r, hi_r = int(np.floor(h)), int(np.ceil(h))
            qs.append(_lerp(targets[(g, lo_r)][6], targets[(g, hi_r)][6], h - lo_r))
        out[g] = qs
    return out


_TARGETS_SCHEMA = pa.schema([("tid", pa.int64()), ("cell", pa.int64()), ("lo", pa.float64()), ("hi", pa.float64()),
                             ("w", pa.float64()), ("off", pa.float64()), ("exact", pa.bool_())])


_GRID_SCHEMA = pa.schema([("cell", pa.int64()), ("w", pa.float64()), ("off", pa.float64())])
_OPEN_SCHEMA = pa.schema([("cell", pa.int64()), ("k", pa.float64())])


def _bin_width(lo: float, hi: float, bins: int) -> float:
    """The width of ``bins`` equal bins over [lo, hi]; finite when ``hi - lo`` overflows (±1e308
    values), so that such a range is binned too, not fetched value by value. 0 for an interval too
    narrow to cut."""
    w = (hi - lo) / bins
    return w if np.isfinite(w) else hi / bins - lo / bins


def _target(tid: int, cell: int, lo: float, hi: float, w: float, exact: bool) -> dict:
    """A row of quantile_targets. A value's bin is ``floor(v / w - lo / w)``: monotone in v, which
    is all the passes need of it, and finite for every finite v in [lo, hi] (|v| / w is at most
    about 2^53 bins), where ``(v - lo) / w`` overflows on a range of ±1e308."""
    return {"tid": tid, "cell": cell, "lo": lo, "hi": hi, "w": 1.0 if exact else w,
            "off": 0.0 if exact else lo / w, "exact": exact}


def _count_pass(engine: Engine, values: str, rows: list[dict], within: str) -> pd.DataFrame:
    """One pass: per target (``tid``) and bin of its interval (or, ``exact``, per value) the count, min
    and max of the values of the target's cells (``within``: the join's bounds on ``b.v``)."""
    engine.register_frame("quantile_targets", pd.DataFrame(rows, columns=_TARGETS_SCHEMA.names), _TARGETS_SCHEMA)
    return engine.sql(f"""
        SELECT t.tid AS tid, CASE WHEN t.exact THEN b.v ELSE floor(b.v / t.w - t.off) END AS bin,
               count(*) AS c, min(b.v) AS mn, max(b.v) AS mx
        FROM ({values}) b JOIN quantile_targets t ON t.cell = b.cell AND {within}
        GROUP BY 1, 2""")


def _first_pass(engine: Engine, values: str, groups: dict[Hashable, tuple[int, float, float, Sequence[int]]],
                cells_of: dict[Hashable, tuple[int, ...]]) -> dict[Hashable, _Bins]:
    """Pass 1: the bins of every group's values over its whole range, from one count per (cell, bin).

    Cells that groups tie together (a union-find over the groups' cells) share one grid, the range of
    all their groups, so a group's bins are the sums of its cells' bins; each value is read once,
    whichever groups it is in."""
    parent: dict[int, int] = {}

    def root(c: int) -> int:
        while parent.setdefault(c, c) != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    for g in groups:
        first, *rest = cells_of[g]
        for c in rest:
            parent[root(c)] = root(first)
    span: dict[int, list] = {}  # component -> [lo, hi, values at most]
    for g, (n, mn, mx, _) in groups.items():
        s = span.setdefault(root(cells_of[g][0]), [mn, mx, 0])
        s[0], s[1], s[2] = min(s[0], mn), max(s[1], mx), s[2] + n
    bins = max(QUANTILE_BINS, min(MAX_BINS, CELL_BUDGET // max(1, len(parent))))
    rows = []
    for c in parent:
        lo, hi, most = span[root(c)]
        w = _bin_width(lo, hi, bins)
        rows.append(_target(c, c, lo, hi, w, most <= EXACT_MAX or not w > 0))
    # every value of a cell is inside its grid (the grid spans its groups' min..max): no bounds to check
    frame = _count_pass(engine, values, rows, "TRUE")
    # The grid, for later passes to find a value's first-pass bin again (a cell binned exactly is
    # done after this pass: each of its bins is one value).
    engine.register_frame("quantile_grid", pd.DataFrame([{"cell": r["cell"], "w": r["w"], "off": r["off"]}
                                                         for r in rows if not r["exact"]], columns=["cell", "w", "off"]),
                          _GRID_SCHEMA)
    # Each group's bins: the sums over its cells' (one merge and one sort for all the groups).
    names = list(groups)
    member = pd.DataFrame([(c, i) for i, g in enumerate(names) for c in cells_of[g]], columns=["tid", "gi"])
    merged = (frame.merge(member, on="tid").groupby(["gi", "bin"], sort=False)
              .agg(c=("c", "sum"), mn=("mn", "min"), mx=("mx", "max")).reset_index())
    by_index = _bins_by(merged, "gi")
    return {g: by_index[i] for i, g in enumerate(names)}


class _Bins:
    """One group's (or interval's) bins from a pass, ordered by their minimum (bins are monotone in
    the value: so ordered they are ordered and disjoint): the running count ``cum``, minima ``mn``,
    maxima ``mx`` and the bins' numbers ``bin``."""

    __slots__ = ("cum", "mn", "mx", "bin")

    def __init__(self, cum: np.ndarray, mn: np.ndarray, mx: np.ndarray, bin: np.ndarray) -> None:  # noqa: A002
        self.cum, self.mn, self.mx, self.bin = cum, mn, mx, bin


def _bins_by(frame: pd.DataFrame, key: str) -> dict[int, _Bins]:
    """Per value of the integer column ``key`` of a pass's (key, bin, c, mn, mx) rows: its bins, from
    one sort of the whole frame (thousands of groups under --by hour: no pandas call per group)."""
    frame = frame.sort_values([key, "mn"], kind="stable")
    keys = frame[key].to_numpy(dtype="int64")
    c = frame["c"].to_numpy(dtype="int64")
    mn, mx = frame["mn"].to_numpy(dtype="float64"), frame["mx"].to_numpy(dtype="float64")
    b = frame["bin"].to_numpy(dtype="float64")
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.array([], dtype="int64")
    ends = np.r_[starts[1:], len(keys)].astype("int64")
    return {int(keys[s]): _Bins(np.cumsum(c[s:e]), mn[s:e], mx[s:e], b[s:e]) for s, e in zip(starts, ends, strict=True)}


def _narrow(bins: _Bins, t: list) -> tuple[float, float, int, int, float]:
    """Target ``t``'s new interval (lo, hi), count below it, count in it, and the bin holding its rank."""
    local = t[1] - t[4]
    j = int(np.searchsorted(bins.cum, local, side="right"))  # the first bin whose running count > local
    before = int(bins.cum[j - 1]) if j else 0
    return float(bins.mn[j]), float(bins.mx[j]), t[4] + before, int(bins.cum[j]) - before, float(bins.bin[j])


# Up to this many disjoint open intervals a pass filters the values by comparisons on v (cheapest:
# one double, no join); more (--by hour's thousands of groups), by a semi-join on (cell, first-pass
# bin), whose cost does not grow with their number. Measured on the 100M capture's second pass
# (about 20 intervals): 2.4 s by comparisons, 3.1 s by the semi-join.
MAX_RANGE_FILTER = 32


def _inside(engine: Engine, values: str, pending: list[list], cells_of: dict[Hashable, tuple[int, ...]]) -> str:
    """``values`` with only the rows that can be in some pending target's interval."""
    spans: list[list[float]] = []
    for lo, hi in sorted({(t[2], t[3]) for t in pending}):
        if spans and lo <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], hi)
        else:
            spans.append([lo, hi])
    if len(spans) <= MAX_RANGE_FILTER:
        def bound(x: float, towards: float) -> str:  # a few ulps wide: the exact bounds are the join's
            for _ in range(4):
                x = float(np.nextafter(x, towards))
            return f"CAST('{x!r}' AS DOUBLE)"

        ors = " OR ".join(f"(v >= {bound(lo, -np.inf)} AND v <= {bound(hi, np.inf)})" for lo, hi in spans)
        return f"SELECT * FROM ({values}) w WHERE {ors}"
    # each pending target is inside one bin of the first pass, in each of its cells
    open_bins = pd.DataFrame(sorted({(c, t[7]) for t in pending for c in cells_of[t[0]]}), columns=["cell", "k"])
    engine.register_frame("quantile_open", open_bins, _OPEN_SCHEMA)
    return (f"SELECT b.cell, b.v FROM ({values}) b JOIN quantile_grid g ON g.cell = b.cell "
            f"JOIN quantile_open o ON o.cell = b.cell AND o.k = floor(b.v / g.w - g.off)")


def has_column(table: str, column: str) -> bool:
    return table in TABLES and column in TABLES[table].names


class Metrics:
    """The report's queries over one capture on one engine (the engine's tables prepared once).

    ``by``: one of :data:`GROUP_KEYS` to group every latency table by (``None``: no grouping).
    Per-answer frames (one row per turn or API call) are small and come back as pandas; aggregates
    come back as dicts of stats objects.
    """

    def __init__(self, capture, engine: Engine, *, by: str | None = None, close_engine: bool = True) -> None:
        from analyzer.analysis.latency import conversation_turns, fold_map, handed_off_turns

        if by is not None and by not in GROUP_KEYS:
            raise ValueError(f"by must be one of {', '.join(GROUP_KEYS)}, not {by!r}")
        self.capture = capture
        self.engine = engine
        self.d = engine.dialect
        self.by = by
        self.multi = len(capture.paths) > 1
        if close_engine:
            self._finalizer = weakref.finalize(self, engine.close)
        engine.register_capture(capture)
        handed_off = handed_off_turns(capture, per_capture=True)
        engine.register_frame("fold_map", fold_map(capture, handed_off), FOLD_SCHEMA)
        turns = conversation_turns(capture, per_capture=True, handed_off=handed_off)
        del handed_off  # one row per flow, every column: not kept while the queries run
        turns["_row"] = np.arange(len(turns), dtype="int64")
        for column in TURN_SCHEMA.names:
            if column not in turns.columns:
                turns[column] = None
        engine.register_frame("turn_rows", turns, TURN_SCHEMA)
        # What Python still reads of the turns (the conversations block); the rest is the engine's.
        self.turn_frame = turns[[c for c in (*TURN_SCHEMA.names, *TURN_FRAME_EXTRA) if c in turns.columns]]
        del turns
        self._rows: dict[str, int] = {}  # row counts of the statistics' sources (_source_rows)
        self._prepare()
        self._cache: dict[str, Any] = {}

    def close(self) -> None:
        if hasattr(self, "_finalizer"):
            self._finalizer()

    # -- preparation: the derived tables -----------------------------------------------------------

    def _dedupe(self, table: str, keys: Sequence[str], columns: Sequence[str]) -> str:
        """``columns`` of ``table`` with rows repeated across combined captures (a live capture and its
        ``-w`` import share flow ids) counted once; which copy is kept does not matter, they are equal."""
        cols = [*columns, "_capture"] + (["capture_id"] if has_column(table, "capture_id") else [])
        select = ", ".join(self._quote(c) for c in cols)
        if not self.multi:
            return f"SELECT {select} FROM {table}"
        k = ", ".join(self._quote(c) for c in keys)
        return (f"SELECT {select} FROM (SELECT {select}, row_number() OVER (PARTITION BY {k} ORDER BY {k}) AS _dup "
                f"FROM {table}) d WHERE _dup = 1")

    def _quote(self, column: str) -> str:
        return f'"{column}"' if self.d.name == "duckdb" else f"`{column}`"

    def _capture_key(self, table: str, alias: str) -> str:
        if has_column(table, "capture_id"):
            return f"COALESCE({alias}.capture_id, {alias}._capture)"
        return f"{alias}._capture"

    def _label_join(self, table: str, alias: str) -> tuple[str, str]:
        """(join clause, label expression) for the ``captures`` table when the schema has one."""
        if "captures" in TABLES and has_column(table, "capture_id"):
            return (f"LEFT JOIN capture_labels cl_{alias} ON cl_{alias}.capture_id = {alias}.capture_id",
                    f"COALESCE(cl_{alias}.label, '{UNLABELLED}')")
        return "", f"'{UNLABELLED}'"

    def _time_key(self, bucket: str, ts: str) -> str:
        """The ``day``/``hour`` group key of ``ts``; formatted only when the report groups by it (a
        string per row is the costliest column of the answer and beacon tables)."""
        if self.by != bucket:
            return "CAST(NULL AS STRING)"
        return (self.d.day if bucket == "day" else self.d.hour).format(ts=ts)

    def _prepare(self) -> None:
        e = self.engine
        if "captures" in TABLES:
            e.materialize("capture_labels", "SELECT capture_id, max(label) AS label FROM captures "
                                            "WHERE capture_id IS NOT NULL GROUP BY capture_id")
        for name, keys in (("api_calls", ["flow_id"]), ("latency_beacons", ["flow_id"]), ("flows", ["flow_id"]),
                           ("perf_stats", ["flow_id", "metric", "value"])):
            query = self._dedupe(name, keys, READ_COLUMNS[name])
            # One capture: a view (nothing copied); several: the repeated rows dropped once, kept.
            e.materialize(f"u_{name}", query) if self.multi else e.view(f"u_{name}", query)
        distinct = "DISTINCT " if self.multi else ""
        # Timed events (an arrival offset) of stream_events; combined captures repeat (flow_id, seq): once.
        timed = (f"SELECT {distinct}flow_id, seq, offset_ms, text <> '' AS is_text FROM stream_events "
                 "WHERE flow_id IS NOT NULL AND offset_ms IS NOT NULL")
        # Pass 1 over stream_events, an aggregation: per timed flow its text events' count and the
        # offsets of the first and last (by seq). Pass 2 (gap_answers below) is the window.
        e.materialize("flow_text", f"""
            SELECT flow_id, count(*) FILTER (WHERE is_text) AS n_text,
                   min_by(offset_ms, seq) FILTER (WHERE is_text) AS first_ms,
                   max_by(offset_ms, seq) FILTER (WHERE is_text) AS last_ms
            FROM ({timed}) t GROUP BY flow_id""")
        # Every flow -> the answer it belongs to: itself, or (a resume) the turn it continues.
        e.materialize("answer_flows", """
            SELECT flow_id, flow_id AS answer_id, 0.0 AS shift_ms FROM turn_rows
            UNION ALL SELECT flow_id, into_flow_id AS answer_id, shift_ms FROM fold_map
            UNION ALL SELECT flow_id, flow_id AS answer_id, 0.0 AS shift_ms FROM u_api_calls""")
        e.materialize("answer_text", """
            SELECT af.answer_id, min(f.first_ms + af.shift_ms) AS first_ms, max(f.last_ms + af.shift_ms) AS last_ms,
                   sum(f.n_text) AS n_text
            FROM flow_text f JOIN answer_flows af ON af.flow_id = f.flow_id
            GROUP BY af.answer_id""")
        e.materialize("timed_answers", "SELECT DISTINCT af.answer_id FROM flow_text f "
                                       "JOIN answer_flows af ON af.flow_id = f.flow_id")
        e.drop("flow_text")
        # The token count a beacon reported for a turn's request (the first beacon of that request id;
        # only the ids some turn has: the rest would be grouped for nothing).
        e.materialize("request_tokens", """
            SELECT server_request_id, min_by(count_tokens, flow_id) AS count_tokens FROM u_latency_beacons
            WHERE server_request_id IN (SELECT cf_ray FROM turn_rows) GROUP BY server_request_id""")
        turn_label_join, turn_label = self._label_join("conversation_turns", "t")
        api_label_join, api_label = self._label_join("api_calls", "a")
        # turn_rows always has capture_id (null until the schema has the column)
        turn_capture = "COALESCE(t.capture_id, t._capture)"
        api_capture = self._capture_key("api_calls", "a")
        answer_rows = f"""
            SELECT t.flow_id, 'turn' AS kind, t.conversation_id,
                   COALESCE(NULLIF(t.model_slug, ''), NULLIF(t.server_model_slug, ''), NULLIF(t.requested_model, ''),
                            '{UNKNOWN_MODEL}') AS model,
                   {turn_capture} AS capture, {turn_label} AS label, t.started_at, t.cf_ray, t._row,
                   COALESCE(fl.host, 'unknown') AS host, COALESCE(t.stream_format, 'unknown') AS stream_format,
                   t.ttft_ms AS stored_ttft_ms, t.e2e_ms AS stored_e2e_ms, x.first_ms, x.last_ms,
                   COALESCE(x.n_text, 0) AS n_text_events,
                   (ta.answer_id IS NOT NULL OR t.ttft_ms IS NOT NULL OR t.e2e_ms IS NOT NULL) AS has_timing,
                   CAST(rt.count_tokens AS DOUBLE) AS reported_tokens, 'beacon' AS reported_source,
                   CAST(NULL AS DOUBLE) AS prompt_tokens, CAST(NULL AS DOUBLE) AS completion_tokens,
                   CAST(NULL AS DOUBLE) AS total_tokens, FALSE AS is_codex
            FROM turn_rows t
            LEFT JOIN answer_text x ON x.answer_id = t.flow_id
            LEFT JOIN timed_answers ta ON ta.answer_id = t.flow_id
            LEFT JOIN request_tokens rt ON rt.server_request_id = t.cf_ray
            LEFT JOIN u_flows fl ON fl.flow_id = split_part(t.flow_id, '#', 1)
            {turn_label_join}
            UNION ALL
            SELECT a.flow_id, 'api' AS kind, CAST(NULL AS STRING) AS conversation_id,
                   COALESCE(NULLIF(a.model, ''), '{UNKNOWN_MODEL}') AS model,
                   {api_capture} AS capture, {api_label} AS label, a.started_at, CAST(NULL AS STRING) AS cf_ray,
                   CAST(-1 AS BIGINT) AS _row, COALESCE(fl.host, a.host, 'unknown') AS host,
                   COALESCE(fl.kind, 'api') AS stream_format,
                   a.ttft_ms AS stored_ttft_ms, a.e2e_ms AS stored_e2e_ms, x.first_ms, x.last_ms,
                   COALESCE(x.n_text, 0) AS n_text_events,
                   (ta.answer_id IS NOT NULL OR a.ttft_ms IS NOT NULL OR a.e2e_ms IS NOT NULL) AS has_timing,
                   CAST(a.completion_tokens AS DOUBLE) AS reported_tokens, 'usage' AS reported_source,
                   CAST(a.prompt_tokens AS DOUBLE) AS prompt_tokens,
                   CAST(a.completion_tokens AS DOUBLE) AS completion_tokens,
                   CAST(a.total_tokens AS DOUBLE) AS total_tokens,
                   (COALESCE(a.endpoint, '') LIKE '%/codex/%' OR a.codex_session_id IS NOT NULL) AS is_codex
            FROM u_api_calls a
            LEFT JOIN answer_text x ON x.answer_id = a.flow_id
            LEFT JOIN timed_answers ta ON ta.answer_id = a.flow_id
            LEFT JOIN u_flows fl ON fl.flow_id = a.flow_id
            {api_label_join}"""
        finite_reported = FINITE.format(x="reported_tokens") + " AND reported_tokens > 0"
        # answer_no: the answer's number (unique, in no order), what a gap carries instead of its
        # answer's flow id (a string): 8 bytes a gap, where 100M gaps with their ids would spill
        # gigabytes.
        e.materialize("answers", f"""
            SELECT *,
                   CASE WHEN has_timing AND n_text_events >= 2 AND tokens > 1
                        THEN (last_ms - first_ms) / (tokens - 1) END AS tpot_ms,
                   {self.d.row_id} AS answer_no
            FROM (SELECT r.*, {self._time_key('day', 'r.started_at')} AS day,
                         {self._time_key('hour', 'r.started_at')} AS hour,
                         CASE WHEN r.has_timing THEN r.stored_ttft_ms END AS ttft_ms,
                         CASE WHEN r.has_timing THEN r.stored_e2e_ms END AS e2e_ms,
                         CASE WHEN {finite_reported} THEN reported_tokens
                              ELSE CAST(n_text_events AS DOUBLE) END AS tokens,
                         CASE WHEN {finite_reported} THEN reported_source ELSE 'text_events' END AS token_source
                  FROM ({answer_rows}) r) a""")
        # The cells of the gaps: each (kind, model, is_codex, and the --by key when it is another key)
        # an integer. The report's ITL statistics (pooled per kind, per model, the Codex calls', the
        # --by groups') are unions of these cells: one scan of the gaps counts them all (gap_itl), and
        # a gap carries 4 bytes of its answer's keys, not columns of strings.
        by_column = self.by if self.by not in (None, "model") else None
        by_value = by_column or "CAST(NULL AS STRING)"
        e.materialize("gap_cells", f"""
            SELECT CAST(row_number() OVER (ORDER BY kind, model, is_codex, by_value) AS INTEGER) AS cell, kind, model,
                   is_codex, by_value
            FROM (SELECT DISTINCT kind, model, is_codex, {by_value} AS by_value FROM answers) c""")
        # Each flow with a number of its own (flow_no), its answer's number and its answer's cell.
        e.materialize("flow_answers", f"""
            SELECT af.flow_id, {self.d.row_id} AS flow_no, a.answer_no, c.cell
            FROM answer_flows af JOIN answers a ON a.flow_id = af.answer_id
            JOIN gap_cells c ON c.kind = a.kind AND c.model = a.model AND c.is_codex = a.is_codex
                            AND c.by_value IS NOT DISTINCT FROM {f"a.{by_column}" if by_column else by_value}""")
        # Pass 2 over stream_events, the window: every gap between consecutive text events of a flow,
        # with its answer's number and cell (other keys join answers on answer_no). The window
        # partitions by the flow's number, not its id: it sorts 24 bytes an event where the id makes
        # it 60 (and spills less under --memory-limit).
        e.materialize("gap_answers", f"""
            SELECT g.itl_ms, fa.answer_no, fa.cell FROM (
                SELECT flow_no, offset_ms - lag(offset_ms) OVER (PARTITION BY flow_no ORDER BY seq) AS itl_ms
                FROM (SELECT n.flow_no, t.seq, t.offset_ms FROM ({timed}) t
                      JOIN flow_answers n ON n.flow_id = t.flow_id WHERE t.is_text) numbered) g
            JOIN flow_answers fa ON fa.flow_no = g.flow_no
            WHERE g.itl_ms IS NOT NULL""")
        e.drop("flow_answers")
        beacon_label_join, beacon_label = self._label_join("latency_beacons", "b")
        # Per request id the first turn (by _row) that has it: what its beacons are joined to.
        # (_row is unique among turns; min_by would skip a null ttft_ms in DuckDB)
        e.materialize("keyed_turns", """
            SELECT k.cf_ray, a.flow_id, a.model, a.ttft_ms, a.host, a.stream_format
            FROM (SELECT cf_ray, min(_row) AS _row FROM answers WHERE kind = 'turn' AND cf_ray IS NOT NULL
                  GROUP BY cf_ray) k
            JOIN answers a ON a._row = k._row AND a.kind = 'turn'""")
        # A view: its four readers each join the beacons to keyed_turns again in less time than
        # writing the table once takes (measured on 1M beacons: 4% of the report's time, and less memory).
        e.view("beacons", f"""
            SELECT b.server_request_id, b.flow_id, b.sent_at,
                   COALESCE(NULLIF(b.model, ''), '{UNKNOWN_MODEL}') AS model,
                   CAST(b.count_tokens AS DOUBLE) AS count_tokens, b.ts_first_token_ms, b.ts_total_request_ms,
                   b.ts_median_token_without_first_ms, b.ts_p95_token_without_first_ms,
                   b.ts_p99_token_without_first_ms,
                   CASE WHEN b.ts_total_request_ms - b.ts_first_token_ms > 0
                        THEN b.count_tokens / ((b.ts_total_request_ms - b.ts_first_token_ms) / 1000.0) END AS tokens_per_s,
                   {self._capture_key('latency_beacons', 'b')} AS capture, {beacon_label} AS label,
                   {self._time_key('day', 'b.sent_at')} AS day, {self._time_key('hour', 'b.sent_at')} AS hour,
                   COALESCE(k.host, 'unknown') AS host, COALESCE(k.stream_format, 'unknown') AS stream_format,
                   k.flow_id AS turn_flow_id, k.model AS turn_model, k.ttft_ms AS turn_ttft_ms
            FROM u_latency_beacons b LEFT JOIN keyed_turns k ON k.cf_ray = b.server_request_id
            {beacon_label_join}""")

    # -- the statistic, written once ------------------------------------------------------------------

    def _stats_select(self, metrics: dict[str, str], holistic: bool) -> str:
        """Aggregates for each metric: ``n_i, mean_i, min_i, max_i`` over its finite values, and
        ``q_i`` (the percentiles, by the engine's exact aggregate) when ``holistic``."""
        parts = []
        for i, expr in enumerate(metrics.values()):
            v = f"(CASE WHEN {FINITE.format(x=expr)} THEN CAST({expr} AS DOUBLE) END)"
            part = f"count({v}) AS n_{i}, avg({v}) AS mean_{i}, min({v}) AS min_{i}, max({v}) AS max_{i}"
            if holistic:
                part += f", {self.d.q(v, STAT_FRACTIONS)} AS q_{i}"
            parts.append(part)
        return ", ".join(parts)

    def grouped_stats(self, source: str, metrics: dict[str, str], groups: Sequence[str] = (),
                      where: str = "TRUE", extra: str = "") -> pd.DataFrame:
        """One row per group: the group columns, ``extra`` aggregates, and a stats dict per metric.

        A source of at most ``engine.holistic_max_rows`` rows gets its percentiles from the engine's own exact
        aggregate in the same query (it holds a group's values: a few MB here); a larger one from
        :func:`exact_quantiles`' rank passes, which hold none. Both are NumPy's linear method."""
        cols = [f"{g} AS g{i}" for i, g in enumerate(groups)]
        holistic = self._source_rows(source, where) <= (
            HOLISTIC_MAX if HOLISTIC_MAX is not None else self.engine.holistic_max_rows)
        # Each group's key as text: how the percentile passes find the group's values again.
        keys = [] if holistic else [f"CAST({g} AS STRING) AS k{i}" for i, g in enumerate(groups)]
        select = ", ".join([*cols, *keys, *([extra] if extra else []), self._stats_select(metrics, holistic)])
        # group by the select's aliases: both engines accept ordinal positions
        n_group = len(groups) * (1 if holistic else 2)
        group_by = " GROUP BY " + ", ".join(str(i + 1) for i in range(n_group)) if groups else ""
        frame = self.engine.sql(f"SELECT {select} FROM {source} WHERE {where}{group_by}")
        passes = None if holistic else self._pass_quantiles(frame, source, metrics, groups, where)
        for i, name in enumerate(metrics):
            qs = frame[f"q_{i}"] if passes is None else passes[i]
            frame[name] = [stats_from(*row) for row in zip(frame[f"n_{i}"], frame[f"mean_{i}"], frame[f"min_{i}"],
                                                             frame[f"max_{i}"], qs, strict=True)]
        return frame

    def _pass_quantiles(self, frame: pd.DataFrame, source: str, metrics: dict[str, str], groups: Sequence[str],
                        where: str) -> list[list]:
        """Per metric, the percentiles of each row (group) of ``frame`` by :func:`exact_quantiles`: one set
        of passes for all metrics. Each (group, metric) is a cell of its own; the values are written
        once as a compact (cell, value) table that every pass scans, not the source's joins."""
        key_sql = "".join(f"CAST({g} AS STRING) AS k{i}, " for i, g in enumerate(groups))
        key_names = [f"k{j}" for j in range(len(groups))]
        group_keys = [[_key(k) for k in frame[k]] for k in key_names]
        wanted, cell_rows = {}, []
        for i in range(len(metrics)):
            for row in range(len(frame)):
                n = frame[f"n_{i}"].iloc[row]
                if n is not None and not pd.isna(n) and int(n) > 0:
                    key = tuple(col[row] for col in group_keys)
                    cell_rows.append({"cell": len(cell_rows), "m": i, **dict(zip(key_names, key, strict=True))})
                    wanted[(key, i)] = (int(n), float(frame[f"min_{i}"].iloc[row]), float(frame[f"max_{i}"].iloc[row]),
                                        (len(cell_rows) - 1,))
        found = {}
        if wanted:
            schema = pa.schema([("cell", pa.int64()), ("m", pa.int64()), *[(k, pa.string()) for k in key_names]])
            self.engine.register_frame("quantile_cells", pd.DataFrame(cell_rows, columns=schema.names), schema)
            values = " UNION ALL ".join(
                f"SELECT {key_sql}{i} AS m, CAST({expr} AS DOUBLE) AS v FROM {source} "
                f"WHERE ({where}) AND {FINITE.format(x=expr)}" for i, expr in enumerate(metrics.values()))
            join = " AND ".join(["c.m = b.m", *[f"c.{k} IS NOT DISTINCT FROM b.{k}" for k in key_names]])
            self.engine.materialize("quantile_values", f"SELECT c.cell, b.v FROM ({values}) b "
                                                       f"JOIN quantile_cells c ON {join}")
            try:
                found = exact_quantiles(self.engine, "SELECT cell, v FROM quantile_values", wanted, STAT_FRACTIONS)
            finally:
                self.engine.drop("quantile_values")
                self.engine.drop("quantile_cells")
        empty = [None] * len(STAT_FRACTIONS)
        return [[found.get((tuple(col[row] for col in group_keys), i), empty) for row in range(len(frame))]
                for i in range(len(metrics))]

    def _source_rows(self, source: str, where: str) -> int:
        """An upper bound of the rows of ``source``: a table's count, or a query source's, counted
        once; a source ``table alias JOIN ...`` counts as its first table (every join of the report's
        sources is many-to-one: it adds no rows)."""
        first = source.split()[0]
        key = first if first.isidentifier() else f"({source}) WHERE {where}"
        if key not in self._rows:
            query = (f"SELECT count(*) AS n FROM {first}" if first.isidentifier()
                     else f"SELECT count(*) AS n FROM {source} WHERE {where}")
            self._rows[key] = int(self.engine.sql(query)["n"].iloc[0])
        return self._rows[key]

    def stats_of(self, source: str, expr: str, where: str = "TRUE") -> dict[str, Any]:
        frame = self.grouped_stats(source, {"x": expr}, where=where)
        return frame["x"].iloc[0] if len(frame) else empty_stats()

    def frame_stats(self, values: Iterable[float] | pd.Series) -> dict[str, Any]:
        """The statistic of a small in-memory sequence (per-answer numbers), by the same SQL."""
        arr = pd.to_numeric(pd.Series(values, dtype="object" if not isinstance(values, pd.Series) else None),
                            errors="coerce").astype("float64")
        self.engine.register_frame("_values", pd.DataFrame({"v": arr.to_numpy()}), pa.schema([("v", pa.float64())]))
        self._rows.pop("_values", None)  # a new frame under the same name
        return self.stats_of("_values", "v")

    # -- report blocks ------------------------------------------------------------------------------

    def _group_expr(self, key: str | None) -> str:
        return "''" if key is None else key

    def observed_blocks(self, key: str | None) -> dict[tuple[str, str], dict]:
        """``observed`` blocks per (kind, group) of ``key`` (None: one group per kind)."""
        g = self._group_expr(key)
        extra = ("count(*) AS answers, sum(CASE WHEN has_timing THEN 1 ELSE 0 END) AS timed, "
                 + ", ".join(f"sum(CASE WHEN tpot_ms IS NOT NULL AND token_source = '{s}' THEN 1 ELSE 0 END) AS ts_{s}"
                             for s in TOKEN_SOURCES))
        rows = self.grouped_stats("answers", {"ttft_ms": "ttft_ms", "tpot_ms": "tpot_ms", "e2e_ms": "e2e_ms"},
                                  ["kind", g], extra=extra)
        # the gap_itl groups of this key: pooled, per model, or the --by key's (another key: a join)
        level = {None: "kind", "model": "model"}.get(key, "by" if key == self.by else None)
        if level is not None:
            itl = {g[1:]: s for g, s in self.gap_itl().items() if g[0] == level}
        else:
            gaps = self.grouped_stats("gap_answers ga JOIN answers a ON a.answer_no = ga.answer_no",
                                      {"itl_ms": "ga.itl_ms"}, ["a.kind", f"a.{g}"])
            itl = {(r.g0, r.g1): r.itl_ms for r in gaps.itertuples(index=False)}
        out = {}
        for r in rows.itertuples(index=False):
            unit = "turns" if r.g0 == "turn" else "calls"
            answers, timed = int(r.answers), int(r.timed)
            out[(r.g0, r.g1)] = {
                unit: answers, f"{unit}_with_timing": timed, f"{unit}_without_timing": answers - timed,
                "ttft_ms": r.ttft_ms, "itl_ms": itl.get((r.g0, r.g1), empty_stats()), "tpot_ms": r.tpot_ms,
                "e2e_ms": r.e2e_ms,
                "tpot_token_source": {s: int(getattr(r, f"ts_{s}")) for s in TOKEN_SOURCES
                                      if int(getattr(r, f"ts_{s}"))},
            }
        return out

    def gap_itl(self) -> dict[tuple, dict]:
        """The ITL statistics that are unions of the gaps' cells (``gap_cells``): ``("kind", kind, "")``
        pools every gap of that kind's answers, ``("model", kind, model)`` one model's, ``("codex",
        model)`` the Codex backend's calls of a model, and with ``--by`` another key ``("by", kind,
        value)`` one group's. One aggregate per cell and one set of rank
        passes (:func:`exact_quantiles`) serve them all: the gaps are scanned a few times in all,
        not a few times per table. Nothing holds the gaps' values, whatever their number."""
        if "gap_itl" in self._cache:
            return self._cache["gap_itl"]
        finite = FINITE.format(x="itl_ms")
        per_cell = self.engine.sql(f"""
            SELECT c.cell, c.kind, c.model, c.is_codex, c.by_value, g.n, g.s, g.mn, g.mx FROM (
                SELECT cell, count(*) AS n, sum(itl_ms) AS s, min(itl_ms) AS mn, max(itl_ms) AS mx
                FROM gap_answers WHERE {finite} GROUP BY cell) g JOIN gap_cells c ON c.cell = g.cell ORDER BY c.cell""")
        merged: dict[tuple, list] = {}  # group -> [n, sum, min, max, cells]
        for r in per_cell.itertuples(index=False):
            groups = [("kind", r.kind, ""), ("model", r.kind, r.model)]
            if r.kind == "api" and bool(r.is_codex):
                groups.append(("codex", r.model))
            if self.by not in (None, "model"):
                groups.append(("by", r.kind, _key(r.by_value)))
            for g in groups:
                m = merged.setdefault(g, [0, 0.0, np.inf, -np.inf, []])
                m[0] += int(r.n)
                m[1] += float(r.s)
                m[2], m[3] = min(m[2], float(r.mn)), max(m[3], float(r.mx))
                m[4].append(int(r.cell))
        wanted = {g: (n, mn, mx, cells) for g, (n, _, mn, mx, cells) in merged.items()}
        found = exact_quantiles(self.engine, f"SELECT cell, itl_ms AS v FROM gap_answers WHERE {finite}", wanted,
                                STAT_FRACTIONS) if wanted else {}
        out = {g: stats_from(n, s / n, mn, mx, found[g]) for g, (n, s, mn, mx, _) in merged.items()}
        self._cache["gap_itl"] = out
        return out

    @staticmethod
    def empty_observed(unit: str) -> dict:
        return {unit: 0, f"{unit}_with_timing": 0, f"{unit}_without_timing": 0, "ttft_ms": empty_stats(),
                "itl_ms": empty_stats(), "tpot_ms": empty_stats(), "e2e_ms": empty_stats(), "tpot_token_source": {}}

    def _client_reported(self, key: str | None) -> dict[str, dict]:
        rows = self.grouped_stats("beacons", {m: m for m in BEACON_METRICS}, [self._group_expr(key)],
                                  extra="count(*) AS beacons")
        return {r.g0: {"beacons": int(r.beacons)} | {m: getattr(r, m) for m in BEACON_METRICS}
                for r in rows.itertuples(index=False)}

    @staticmethod
    def empty_client_reported() -> dict:
        return {"beacons": 0} | {m: empty_stats() for m in BEACON_METRICS}

    def _matched(self) -> dict:
        counts = self.engine.sql("""
            SELECT count(*) AS beacons, count(server_request_id) AS with_id, count(turn_flow_id) AS pairs,
                   count(DISTINCT turn_flow_id) AS turns FROM beacons""").iloc[0]
        gap = self.stats_of("beacons", "ts_first_token_ms - turn_ttft_ms", where="turn_flow_id IS NOT NULL")
        beacons, pairs = int(counts["beacons"]), int(counts["pairs"])
        return {"pairs": pairs, "unmatched_beacons": beacons - pairs,
                "beacons_without_request_id": beacons - int(counts["with_id"]),
                "turns_with_beacon": int(counts["turns"]), "ttft_gap_ms": gap}

    def _server_reported(self) -> dict:
        n = int(self.engine.sql("SELECT count(*) AS n, count(DISTINCT flow_id) AS f FROM u_perf_stats").iloc[0]["n"])
        if not n:
            return {"answers": 0, "metrics": {}}
        answers = int(self.engine.sql("SELECT count(DISTINCT flow_id) AS f FROM u_perf_stats").iloc[0]["f"])
        rows = self.grouped_stats("u_perf_stats", {"value": "value"}, ["metric"])
        metrics = {str(r.g0): r.value for r in sorted(rows.itertuples(index=False), key=lambda r: str(r.g0))}
        return {"answers": answers, "metrics": metrics}

    def _usage_by_model(self) -> dict:
        rows = self.engine.sql("""
            SELECT model, count(*) AS calls, COALESCE(sum(prompt_tokens), 0) AS prompt_tokens,
                   COALESCE(sum(completion_tokens), 0) AS completion_tokens, COALESCE(sum(total_tokens), 0) AS total_tokens
            FROM answers WHERE kind = 'api' GROUP BY model""")
        return {str(r.model): {"calls": int(r.calls), "prompt_tokens": int(r.prompt_tokens),
                               "completion_tokens": int(r.completion_tokens), "total_tokens": int(r.total_tokens)}
                for r in sorted(rows.itertuples(index=False), key=lambda r: str(r.model))}

    def latency_block(self) -> dict:
        """The report's ``latency`` object (without ``local_models``)."""
        overall = self.observed_blocks(None)
        by_model_obs = self.observed_blocks("model")
        cr = self._client_reported(None)
        cr_by_model = self._client_reported("model")
        turn_models = {g for (k, g) in by_model_obs if k == "turn"}
        models = sorted(turn_models | set(cr_by_model))
        by_model = {m: {"observed": by_model_obs.get(("turn", m), self.empty_observed("turns")),
                        "client_reported": cr_by_model.get(m, self.empty_client_reported())} for m in models}
        api = overall.get(("api", ""), self.empty_observed("calls"))
        api["usage_by_model"] = self._usage_by_model()
        out = {
            "observed": overall.get(("turn", ""), self.empty_observed("turns")),
            "client_reported": cr.get("", self.empty_client_reported()),
            "server_reported": self._server_reported(),
            "matched": self._matched(),
            "by_model": by_model,
            "api": api,
        }
        if self.by is not None:
            out["by"] = self.by_block(self.by)
        return out

    def by_block(self, key: str) -> dict:
        """``{key, groups: {group: {observed, client_reported, api}}}``: every latency table per group."""
        obs = self.observed_blocks(key)
        cr = self._client_reported(key)
        groups = sorted({g for (_, g) in obs} | set(cr), key=str)
        return {"key": key, "groups": {str(g): {
            "observed": obs.get(("turn", g), self.empty_observed("turns")),
            "client_reported": cr.get(g, self.empty_client_reported()),
            "api": obs.get(("api", g), self.empty_observed("calls")),
        } for g in groups}}

    def local_models(self) -> dict:
        """``latency.local_models``: the server's own timings of API calls (Ollama) beside the wire's."""
        source = """(SELECT COALESCE(model, 'unknown') AS model, server_total_ms, server_load_ms, server_prompt_eval_ms,
                            server_eval_ms,
                            CASE WHEN server_eval_ms > 0 THEN server_eval_count / server_eval_ms * 1000.0 END
                                AS eval_tokens_per_s,
                            ttft_ms - (COALESCE(server_load_ms, 0.0) + server_prompt_eval_ms)
                                AS ttft_minus_server_prefill_ms
                     FROM u_api_calls WHERE server_total_ms IS NOT NULL OR server_eval_ms IS NOT NULL) s"""
        names = ["server_total_ms", "server_load_ms", "server_prompt_eval_ms", "server_eval_ms", "eval_tokens_per_s",
                 "ttft_minus_server_prefill_ms"]

        def block(r) -> dict:
            return {"calls": int(r.calls)} | {n: getattr(r, n) for n in names}

        overall = self.grouped_stats(source, {n: n for n in names}, extra="count(*) AS calls")
        out = block(next(overall.itertuples(index=False)))
        rows = self.grouped_stats(source, {n: n for n in names}, ["model"], extra="count(*) AS calls")
        out["by_model"] = {str(r.g0): block(r) for r in sorted(rows.itertuples(index=False), key=lambda r: str(r.g0))}
        return out

    def codex_by_model(self) -> dict:
        """``codex.by_model``: calls, failures and timing of the Codex backend's calls per model."""
        rows = self.grouped_stats(
            "answers a JOIN u_api_calls c ON c.flow_id = a.flow_id",
            {"ttft_ms": "c.ttft_ms", "first_reasoning_ms": "c.first_reasoning_ms", "reasoning_ms": "c.reasoning_ms",
             "e2e_ms": "c.e2e_ms"},
            ["a.model"], where="a.kind = 'api' AND a.is_codex",
            extra="count(*) AS calls, count(c.error) AS failed, sum(CASE WHEN a.has_timing THEN 1 ELSE 0 END) AS timed")
        itl = {g[1]: s for g, s in self.gap_itl().items() if g[0] == "codex"}
        return {str(r.g0): {"calls": int(r.calls), "failed": int(r.failed), "with_timing": int(r.timed),
                            "ttft_ms": r.ttft_ms, "itl_ms": itl.get(r.g0, empty_stats()),
                            "first_reasoning_ms": r.first_reasoning_ms, "reasoning_ms": r.reasoning_ms,
                            "e2e_ms": r.e2e_ms}
                for r in sorted(rows.itertuples(index=False), key=lambda r: str(r.g0))}

    def capture_block(self) -> dict:
        """Flow counts by kind, the time span, and the number of recorded errors."""
        kinds = self.engine.sql("SELECT COALESCE(kind, 'unknown') AS kind, count(*) AS n FROM u_flows GROUP BY 1")
        span = self.engine.sql("""
            SELECT count(*) AS flows, min(started_at) AS first_at,
                   max(CASE WHEN ended_at IS NULL OR started_at > ended_at THEN started_at ELSE ended_at END) AS last_s,
                   max(ended_at) AS last_e, max(started_at) AS last_st, count(error) AS with_error FROM u_flows""").iloc[0]
        errors = int(self.engine.sql("SELECT count(*) AS n FROM errors").iloc[0]["n"])
        pairs = sorted(((str(k), int(v)) for k, v in zip(kinds["kind"], kinds["n"], strict=True)),
                       key=lambda kv: (-kv[1], kv[0]))
        last = [v for v in (span["last_e"], span["last_st"]) if v is not None and not pd.isna(v)]
        return {
            "flows": int(span["flows"]),
            "by_kind": dict(pairs),
            "first_at": _iso(span["first_at"]) if int(span["flows"]) else None,
            "last_at": _iso(max(last)) if int(span["flows"]) and last else None,
            "errors": errors,
            "flows_with_error": int(span["with_error"]),
            "paths": [str(p) for p in self.capture.paths],
        }

    def conversation_counts(self) -> dict[str, int]:
        """``count`` (distinct conversation ids of turns, messages and history reads), ``messages``
        (distinct message ids) and ``branch_points``: messages (not placeholders such as
        ``client-created-root``) with more than one child, a message's parent being the one its
        earliest sighting that names one gives (by ``seen_at``; a tie goes to the smaller parent id)."""
        row = self.engine.sql("""
            SELECT (SELECT count(DISTINCT conversation_id) FROM (
                        SELECT conversation_id FROM turn_rows UNION ALL SELECT conversation_id FROM messages
                        UNION ALL SELECT conversation_id FROM conversation_reads) c) AS conversations,
                   (SELECT count(DISTINCT message_id) FROM messages) AS messages,
                   (SELECT count(*) FROM (
                        SELECT p.parent_id FROM (
                            SELECT message_id, parent_id,
                                   row_number() OVER (PARTITION BY message_id ORDER BY seen_at NULLS LAST, parent_id) AS rn
                            FROM messages WHERE message_id IS NOT NULL AND parent_id IS NOT NULL) p
                        WHERE p.rn = 1 AND p.parent_id IN (SELECT message_id FROM messages WHERE message_id IS NOT NULL)
                        GROUP BY p.parent_id HAVING count(*) > 1) b) AS branch_points""").iloc[0]
        return {"count": int(row["conversations"]), "messages": int(row["messages"]),
                "branch_points": int(row["branch_points"])}

    def counts(self, table: str, keys: dict[str, tuple[str, str]], columns: Sequence[str]) -> dict[str, dict[str, int]]:
        """Per entry ``name: (expression, fill)`` of ``keys``: {value: rows} of ``table`` grouped by the
        expression (NULL -> ``fill``), most frequent first then by value; rows repeated across combined
        captures count once. One query (a UNION ALL of the groupings) per table."""
        cols = ", ".join(f'"{c}"' if self.d.name == "duckdb" else f"`{c}`" for c in columns)
        source = f"(SELECT DISTINCT {cols} FROM {table}) s" if self.multi else table
        union = " UNION ALL ".join(f"SELECT '{name}' AS c, CAST({expr} AS STRING) AS k, count(*) AS n FROM {source} "
                                   f"GROUP BY 2" for name, (expr, _) in keys.items())
        frame = self.engine.sql(union)
        out: dict[str, dict[str, int]] = {}
        for name, (_, fill) in keys.items():
            mine = frame[frame["c"] == name]
            merged: dict[str, int] = {}
            for k, n in zip(mine["k"], mine["n"], strict=True):
                key = fill if k is None or (isinstance(k, float) and np.isnan(k)) else str(k)
                merged[key] = merged.get(key, 0) + int(n)
            by_key = sorted(merged.items())
            out[name] = dict(sorted(by_key, key=lambda kv: -kv[1]))  # stable: ties stay in key order
        return out

    # -- per-answer frames (one row per turn / call: small) ---------------------------------------------

    def answers(self) -> pd.DataFrame:
        """Every answer with its timing and group keys (the ``answers`` table)."""
        if "answers" not in self._cache:
            self._cache["answers"] = self.engine.sql("SELECT * FROM answers ORDER BY kind DESC, _row, flow_id")
        return self._cache["answers"]

    def answer_metrics(self) -> pd.DataFrame:
        """One row per answer: :data:`ANSWER_COLUMNS` (``itl_p50_ms`` its median gap, ``n_gaps``)."""
        per = self.engine.sql(f"""
            SELECT answer_no, count(*) AS n_gaps, {self.d.q('itl_ms', [0.5])} AS q
            FROM gap_answers GROUP BY answer_no""")
        per["itl_p50_ms"] = [float(q[0]) for q in per["q"]]
        times = self.engine.sql(f"""SELECT flow_id, {self.d.day.format(ts='started_at')} AS day,
                                           {self.d.hour.format(ts='started_at')} AS hour FROM answers""")
        out = self.answers().drop(columns=["day", "hour"]).merge(times, on="flow_id", how="left")
        out = out.merge(per[["answer_no", "n_gaps", "itl_p50_ms"]], on="answer_no", how="left")
        out["n_gaps"] = out["n_gaps"].fillna(0).astype("int64")
        return out[ANSWER_COLUMNS].reset_index(drop=True)

    def itl_grid(self, kind: str, key: str = "model", points: int = GRID_POINTS) -> dict[str, np.ndarray]:
        """Per group of ``key``: the gaps at ``points`` evenly spaced ranks (first and last included):
        the CDF drawn through them. One sort per group (``row_number``), where asking for 1001
        percentiles would select 1001 times; a chart needs ranks, not interpolation."""
        if key == "model":  # the gap's cell has its answer's kind and model
            source, alias = "gap_answers ga JOIN gap_cells a ON a.cell = ga.cell", "ga"
        else:
            source, alias = "gap_answers ga JOIN answers a ON a.answer_no = ga.answer_no", "ga"
        step = points - 1
        frame = self.engine.sql(f"""
            SELECT g, v FROM (
                SELECT a.{key} AS g, {alias}.itl_ms AS v,
                       row_number() OVER (PARTITION BY a.{key} ORDER BY {alias}.itl_ms) - 1 AS r,
                       count(*) OVER (PARTITION BY a.{key}) AS n
                FROM {source} WHERE a.kind = '{kind}' AND {FINITE.format(x=f'{alias}.itl_ms')}) s
            WHERE n <= {points}
               OR r = floor(ceil(r * {step}.0 / (n - 1)) * (n - 1.0) / {step})
               OR r = n - 1""")
        out: dict[str, np.ndarray] = {}
        for g, grp in frame.groupby("g", sort=True):
            out[str(g)] = np.sort(grp["v"].to_numpy(dtype="float64"))
        return out

    def time_series(self, metric: str, key: str, bucket: str) -> pd.DataFrame:
        """p50 of ``metric`` (``ttft_ms`` or ``itl_ms``) per ``bucket`` (``hour``/``day``) and group of ``key``
        over turns: columns bucket, g, n, p50."""
        if metric == "itl_ms":
            source, value = "gap_answers ga JOIN answers a ON a.answer_no = ga.answer_no", "ga.itl_ms"
        else:
            source, value = "answers a", f"a.{metric}"
        when = (self.d.day if bucket == "day" else self.d.hour).format(ts="a.started_at")
        frame = self.grouped_stats(source, {"s": value}, [when, f"a.{key}"], where="a.kind = 'turn'")
        return pd.DataFrame({"bucket": frame["g0"], "g": frame["g1"], "n": [s["n"] for s in frame["s"]],
                             "p50": [s["p50"] for s in frame["s"]]})

    def gaps_frame(self, kind: str) -> pd.DataFrame:
        """Every gap of ``kind`` answers: flow_id (the answer's), model_slug, itl_ms. Per gap: for a
        notebook or an export that wants them; the report never calls this."""
        frame = self.engine.sql(f"""
            SELECT a.flow_id, a.model AS model_slug, ga.itl_ms FROM gap_answers ga
            JOIN answers a ON a.answer_no = ga.answer_no WHERE a.kind = '{kind}'""")
        frame["flow_id"] = pd.Categorical(frame["flow_id"].astype(object))
        frame["model_slug"] = pd.Categorical(frame["model_slug"].astype(object))
        return frame

    def beacon_rows(self) -> pd.DataFrame:
        if "beacons" not in self._cache:
            self._cache["beacons"] = self.engine.sql("SELECT * FROM beacons ORDER BY flow_id")
        return self._cache["beacons"]


def _iso(value: Any) -> str | None:
    if value is None or pd.isna(value):
        return None
    return pd.Timestamp(value).isoformat()


_TURN_FRAME = ["flow_id", "conversation_id", "model_slug", "started_at", "ttft_ms", "e2e_ms", "tpot_ms",
               "n_text_events", "tokens", "token_source", "cf_ray", "has_timing"]
_API_FRAME = ["flow_id", "model", "started_at", "ttft_ms", "e2e_ms", "tpot_ms", "n_text_events", "tokens",
              "token_source", "prompt_tokens", "completion_tokens", "total_tokens", "has_timing"]


def _frame(metrics: Metrics, name: str) -> pd.DataFrame:
    """The per-answer frames of the old pandas API, from the engine's tables."""
    if name == "turns":
        a = metrics.answers()
        a = a[a["kind"] == "turn"].sort_values("_row", kind="stable").rename(columns={"model": "model_slug"})
        return a[_TURN_FRAME].reset_index(drop=True)
    if name == "api":
        a = metrics.answers()
        return a[a["kind"] == "api"][_API_FRAME].reset_index(drop=True)
    if name == "beacons":
        return metrics.beacon_rows()
    if name == "matches":
        b = metrics.beacon_rows()
        b = b[b["turn_flow_id"].notna()]
        out = pd.DataFrame({"server_request_id": b["server_request_id"].to_numpy(), "flow_id": b["turn_flow_id"].to_numpy(),
                            "model": b["model"].to_numpy(), "model_slug": b["turn_model"].to_numpy(),
                            "ts_first_token_ms": b["ts_first_token_ms"].to_numpy(dtype="float64", na_value=np.nan),
                            "ttft_ms": b["turn_ttft_ms"].to_numpy(dtype="float64", na_value=np.nan)})
        out["ttft_gap_ms"] = out["ts_first_token_ms"] - out["ttft_ms"]
        return out
    if name in ("itl_gaps", "api_itl_gaps"):
        return metrics.gaps_frame("api" if name == "api_itl_gaps" else "turn")
    raise KeyError(name)


def _getitem(self: Metrics, name: str) -> pd.DataFrame:
    key = f"frame:{name}"
    if key not in self._cache:
        self._cache[key] = _frame(self, name)
    return self._cache[key]


Metrics.__getitem__ = _getitem  # type: ignore[attr-defined]
