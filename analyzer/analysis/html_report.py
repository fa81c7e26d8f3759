"""``analyze report --format html``: one self-contained page with the report's numbers and charts.

Every number on the page comes from the same library functions as the text and JSON report:
``analyzer.analysis.report`` (the summary), the engine's tables (``latency.compute_latency``: the
per-answer rows the TTFT curves are drawn from, and for ITL a grid of 1001 exact quantiles per group,
never the gaps themselves), ``telemetry`` and ``conversations``. The charts are matplotlib SVG
(``analyzer.analysis.charts``) inlined into a Jinja2 template (``analyzer/templates/report.html.j2``);
the page loads nothing: no script, style, font or image from anywhere else.

Notebook use::

    from analyzer.store import load_capture
    from analyzer.analysis.html_report import render_html
    html = render_html(load_capture("captures/sample.parquet"), raster_n=80)

Cost: the one pass over ``stream_events`` is shared between the report and the charts (pass
``report`` only if you already have it). The stream raster re-reads only the events of the
``raster_n`` answers it draws.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jinja2
import markupsafe
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from analyzer.analysis import charts, latency
from analyzer.analysis import codex as codex_analysis
from analyzer.analysis import report as report_mod
from analyzer.analysis.conversations import (
    MESSAGE_COLUMNS,
    READ_COLUMNS,
    ROOT_ID,
    TURN_COLUMNS,
    Conversation,
    conversation_from_frames,
    list_conversations,
    with_resumes,
)
from analyzer.analysis.privacy import privacy_audit
from analyzer.analysis.render_report import format_span
from analyzer.engine.metrics import Metrics
from analyzer.inert import inert
from analyzer.schema import TABLES
from analyzer.store import Capture, CaptureError

log = logging.getLogger(__name__)

RASTER_N = 50
CONVERSATIONS_N = 30  # each transcript costs ~50 ms of pandas work in conversation_from_frames
TOP_N = 15
ERROR_EXAMPLES = 10
MAX_MESSAGE_CHARS = 4000  # a transcript message longer than this is cut (the CLI prints it whole)


# -- the report and the frames, computed once ------------------------------------------------------


# -- formatting -------------------------------------------------------------------------------------


def fmt_num(value: float | int | None, decimals: int = 0) -> str:
    """``1,234`` / ``12.5``; ``–`` for a missing value (NaN never reaches the page)."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, int | np.integer) and decimals == 0:
        return f"{int(value):,}"
    return f"{float(value):,.{decimals}f}"


def fmt_ms(value: float | None) -> str:
    """Milliseconds: one decimal below 100 ms, none above."""
    if value is None or not np.isfinite(value):
        return "–"
    return f"{value:,.1f} ms" if abs(value) < 100 else f"{value:,.0f} ms"


def fmt_span(first: str | None, last: str | None) -> str:
    """``3d 04h`` / ``2h 05m`` / ``4m 10s`` between two ISO times (the text report's format)."""
    return format_span(first, last) or "–"


def fmt_time(iso: str | pd.Timestamp | None) -> str:
    if iso is None or (not isinstance(iso, str) and pd.isna(iso)):
        return "–"
    return pd.Timestamp(iso).strftime("%Y-%m-%d %H:%M:%S")


# -- page sections -------------------------------------------------------------------------------------


@dataclass
class Chart:
    """A rendered chart (``svg``) or, when there is nothing to draw, the sentence that says so (``empty``)."""

    svg: str = ""
    empty: str = ""
    table: dict[str, Any] | None = None  # {"headers": [...], "rows": [[...]], "numeric": [bool]} below the chart
    note: str = ""


@dataclass
class Palette:
    """One colour slot per model, the same in every chart."""

    models: list[str] = field(default_factory=list)

    def slot(self, model: str) -> int:
        if model not in self.models:
            self.models.append(model)
        return self.models.index(model)


def _finite(values: Any) -> np.ndarray:
    arr = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return arr[np.isfinite(arr)]


def summary_cards(report: dict) -> list[dict[str, str]]:
    """The six summary cards: label, value, a detail line, and a link for errors."""
    cap, conv = report["capture"], report["conversations"]
    kinds = " · ".join(f"{k} {v:,}" for k, v in list(cap["by_kind"].items())[:3])
    models = list(conv["by_model"])
    observed = report["latency"]["observed"]
    return [
        {"label": "Flows", "value": fmt_num(cap["flows"]), "detail": kinds or "no flows", "href": ""},
        {"label": "Conversations", "value": fmt_num(conv["count"]),
         "detail": f"{conv['messages']:,} messages · {conv['branch_points']:,} branch points", "href": "#conversations"},
        {"label": "Turns", "value": fmt_num(conv["turns"]),
         "detail": f"{observed['turns_with_timing']:,} with per-event timing", "href": "#ttft"},
        {"label": "Models", "value": fmt_num(len(models)),
         "detail": ", ".join(models[:3]) + (f" +{len(models) - 3}" if len(models) > 3 else "") or "none",
         "href": ""},
        {"label": "Capture span", "value": fmt_span(cap["first_at"], cap["last_at"]),
         "detail": f"{fmt_time(cap['first_at'])} → {fmt_time(cap['last_at'])}" if cap["first_at"] else "empty",
         "href": ""},
        {"label": "Errors", "value": fmt_num(cap["errors"]),
         "detail": f"{cap['flows_with_error']:,} flows with an error", "href": "#errors"},
    ]


def _stats_rows(rows: list[tuple[str, str, dict]]) -> dict[str, Any]:
    return {
        "headers": ["model", "source", "n", "p50", "p95", "p99"],
        "numeric": [False, False, True, True, True, True],
        "rows": [[m, src, fmt_num(s["n"]), fmt_ms(s["p50"]), fmt_ms(s["p95"]), fmt_ms(s["p99"])]
                 for m, src, s in rows if s["n"]],
    }


def _marks(s: dict) -> dict[str, float | None]:
    return {"p50": s["p50"], "p95": s["p95"]}


def ttft_chart(report: dict, metrics: Metrics, palette: Palette, by: str | None = None) -> Chart:
    """TTFT CDF per model (or per group of ``by``): proxy-observed (solid) and beacon-reported
    (dashed) on the same axes. One value per answer: these come back from the engine."""
    answers = metrics.answers()
    timed = answers[(answers["kind"] == "turn") & answers["has_timing"]]
    beacons = metrics.beacon_rows()
    key = by or "model"
    groups = ({g: b for g, b in report["latency"]["by"]["groups"].items()} if by
              else report["latency"]["by_model"])
    series, rows = [], []
    for model, block in groups.items():
        obs = block["observed"]["ttft_ms"]
        rep = block["client_reported"]["ts_first_token_ms"]
        slot = palette.slot(model)
        if obs["n"]:
            series.append(charts.CdfSeries(f"{model} · proxy (n={obs['n']:,})",
                                           _finite(timed.loc[timed[key].astype(str) == model, "ttft_ms"]), slot,
                                           marks=_marks(obs)))
        if rep["n"]:
            series.append(charts.CdfSeries(f"{model} · beacon (n={rep['n']:,})",
                                           _finite(beacons.loc[beacons[key].astype(str) == model, "ts_first_token_ms"]),
                                           slot, dashed=True, marks=_marks(rep)))
        rows += [(model, "proxy", obs), (model, "beacon", rep)]
    if not series:
        return Chart(empty="No answer has a time to first token: no per-event timing was recorded (a HAR import "
                           "has none) and no latency beacon was captured.")
    svg = charts.cdf_chart(series, xlabel="time to first token (ms)", label="TTFT CDF per model")
    return Chart(svg=svg, table=_stats_rows(rows))


def itl_chart(grids: dict[str, np.ndarray], stats_by_model: dict[str, dict], palette: Palette, *, what: str) -> Chart:
    """CDF of inter-token gaps per model (or group), drawn through the engine's quantile grid of each
    (never the gaps themselves); the percentiles marked come from the report."""
    series, rows = [], []
    for model in sorted(grids):
        s = stats_by_model.get(model)
        if s is None or not s["n"]:
            continue
        series.append(charts.CdfSeries(f"{model} (n={s['n']:,} gaps)", grids[model],
                                       palette.slot(model), marks=_marks(s)))
        rows.append((model, "proxy", s))
    if not series:
        return Chart(empty=f"No {what} has two timed text events, so there is no inter-token gap to show.")
    svg = charts.cdf_chart(series, xlabel="gap between consecutive text events (ms)", label="inter-token latency CDF")
    return Chart(svg=svg, table=_stats_rows(rows))


def _text_event_offsets(capture: Capture, flow_ids: list[str]) -> dict[str, np.ndarray]:
    """Offsets (ms) of the text events of ``flow_ids``, in ``seq`` order, read for those flows only.

    A text event is what ``latency.text_events`` counts: non-empty text with a known offset; a
    ``(flow, seq)`` repeated by combined captures counts once.
    """
    files = capture.part_files("stream_events")  # checked, superseded parts skipped: as Capture.arrow reads
    if not files or not flow_ids:
        return {}
    try:
        table = pads.dataset(files, schema=TABLES["stream_events"], format="parquet").to_table(
            columns=["flow_id", "seq", "offset_ms", "text"],
            filter=pc.field("flow_id").isin(pa.array(flow_ids, pa.string())) & pc.field("offset_ms").is_valid()
            & (pc.binary_length(pc.field("text")) > 0),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise CaptureError(f"{capture.paths[0]}: table stream_events cannot be read: {exc}") from exc
    frame = table.select(["flow_id", "seq", "offset_ms"]).to_pandas()
    frame = frame.drop_duplicates(["flow_id", "seq"]).sort_values(["flow_id", "seq"], kind="stable")
    return {fid: grp["offset_ms"].to_numpy() for fid, grp in frame.groupby("flow_id", sort=False)}


def raster_chart(capture: Capture, metrics: Metrics, titles: pd.Series, palette: Palette,
                 raster_n: int) -> Chart:
    """The newest ``raster_n`` timed answers, one row each, a tick per text event."""
    turns = metrics["turns"]
    timed = turns[turns["has_timing"] & turns["ttft_ms"].notna()]
    if timed.empty or raster_n <= 0:
        return Chart(empty="No answer has per-event timing, so there is no stream to draw.")
    newest = timed.sort_values(["started_at", "flow_id"], ascending=[False, True], kind="stable").head(raster_n)
    offsets = _text_event_offsets(capture, newest["flow_id"].tolist())
    rows, legend = [], {}
    for r in newest.itertuples(index=False):
        ticks = offsets.get(r.flow_id)
        if ticks is None or not ticks.size:
            continue
        slot = palette.slot(r.model_slug)
        legend.setdefault(r.model_slug, slot)
        conv = r.conversation_id if isinstance(r.conversation_id, str) else None
        title = titles.get(conv) if conv else None
        name = title if isinstance(title, str) and title else (conv[:8] if conv else "no conversation id")
        hover = (f"{name} · {r.model_slug} · TTFT {fmt_ms(r.ttft_ms)} · {ticks.size:,} text events · "
                 f"{fmt_time(r.started_at)}")
        rows.append(charts.RasterRow(ticks, slot, hover))
    if not rows:
        return Chart(empty="No answer has timed text events, so there is no stream to draw.")
    svg = charts.raster_chart(rows, legend=dict(sorted(legend.items())), label="stream raster")
    note = f"The newest {len(rows):,} of {len(timed):,} timed answers"
    return Chart(svg=svg, note=note)


def scatter_chart(report: dict, metrics: Metrics, palette: Palette) -> Chart:
    """Beacon ``ts_first_token_ms`` against the proxy-observed TTFT of the same answer."""
    m = metrics["matches"]
    pairs = m[m["ts_first_token_ms"].notna() & m["ttft_ms"].notna()]
    if pairs.empty:
        matched = report["latency"]["matched"]["pairs"]
        why = (f"{matched:,} beacons matched a turn, but none of those turns has an observed TTFT."
               if matched else "No latency beacon matched a captured turn (the join is on the cf-ray).")
        return Chart(empty=why)
    models = pairs["model_slug"].astype("str")
    legend = {name: palette.slot(name) for name in sorted(models.unique())}
    svg = charts.scatter_chart(pairs["ttft_ms"].to_numpy(), pairs["ts_first_token_ms"].to_numpy(),
                               models.map(legend).to_numpy(), legend=legend,
                               xlabel="proxy-observed TTFT (ms)", ylabel="beacon ts_first_token_ms (ms)",
                               label="beacon against wire TTFT")
    gap = report["latency"]["matched"]["ttft_gap_ms"]
    note = (f"{len(pairs):,} matched pairs; beacon − wire: p50 {fmt_ms(gap['p50'])}, p95 {fmt_ms(gap['p95'])}"
            + (f" (a random {charts.SCATTER_POINTS:,} of them are drawn)" if len(pairs) > charts.SCATTER_POINTS
               else ""))
    return Chart(svg=svg, note=note)


@dataclass
class TranscriptEntry:
    role: str
    meta: str
    text: str
    marker: str  # "version 2 of 3" where the branch forks, else ""
    cut: int  # characters left out


@dataclass
class ConversationRow:
    id: str
    title: str
    turns: int
    models: str
    ttft_p50: str
    branch_points: int
    last_at: str
    entries: list[TranscriptEntry]


def _entries(conv: Conversation) -> list[TranscriptEntry]:
    out = []
    for node in conv.active_branch():
        if node.hidden:
            continue
        siblings = conv.nodes[node.parent].children if node.parent is not None else conv.roots
        marker = ""
        if len(siblings) > 1 and (node.parent is not None or len(conv.roots) > 1):
            marker = f"version {siblings.index(node.id) + 1} of {len(siblings)}"
        meta = []
        if node.role == "assistant" and node.model_slug:
            meta.append(node.model_slug)
        if node.create_time is not None:
            meta.append(datetime.fromtimestamp(node.create_time, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))
        if node.ttft_ms is not None:
            meta.append(f"TTFT {fmt_ms(node.ttft_ms)}")
        if node.status == "in_progress":
            meta.append("incomplete (the stream broke)")
        text = node.text or ""
        cut = max(len(text) - MAX_MESSAGE_CHARS, 0)
        role = node.role or "?"
        if node.recipient not in (None, "all"):
            role += f" → {node.recipient}"
        out.append(TranscriptEntry(role, " · ".join(meta), text[:MAX_MESSAGE_CHARS], marker, cut))
    return out


def conversation_rows(capture: Capture, listing: pd.DataFrame, metrics: Metrics, n: int) -> list[ConversationRow]:
    """The newest ``n`` conversations with their TTFT p50 and the transcript of the active branch."""
    shown = listing.head(n)
    if shown.empty:
        return []
    ids = shown["conversation_id"].tolist()
    # Only the shown conversations' rows go into the tree builder (pure, per conversation): building
    # every tree from the whole table would cost one scan per conversation.
    messages = capture.table("messages", MESSAGE_COLUMNS)
    turn_rows = capture.table("conversation_turns", TURN_COLUMNS)
    reads = capture.table("conversation_reads", READ_COLUMNS)
    id_set = pd.Index(ids, dtype=object)
    my_turns = turn_rows[turn_rows["conversation_id"].astype(object).isin(id_set)]
    my_msgs = messages[messages["conversation_id"].astype(object).isin(id_set)
                       | (messages["conversation_id"].isna()
                          & messages["flow_id"].astype(object).isin(pd.Index(my_turns["flow_id"].dropna(), dtype=object)))]
    my_reads = reads[reads["conversation_id"].astype(object).isin(id_set)]
    my_msgs, my_turns = with_resumes(my_msgs, my_turns)  # a resumed answer is one message, whole
    per_conv = metrics.grouped_stats("answers", {"ttft_ms": "ttft_ms"}, ["conversation_id"],
                                     where="kind = 'turn' AND conversation_id IS NOT NULL")
    p50 = {cid: s["p50"] for cid, s in zip(per_conv["g0"], per_conv["ttft_ms"], strict=True) if cid in set(ids)}
    msgs_by = dict(tuple(my_msgs.groupby(my_msgs["conversation_id"].fillna(""), sort=False)))
    orphans = msgs_by.pop("", my_msgs.iloc[0:0])
    turns_by = dict(tuple(my_turns.groupby("conversation_id", sort=False)))
    reads_by = dict(tuple(my_reads.groupby("conversation_id", sort=False)))
    out = []
    for r in shown.itertuples(index=False):
        cid = r.conversation_id
        conv_turns = turns_by.get(cid, my_turns.iloc[0:0])
        conv_msgs = pd.concat([msgs_by.get(cid, my_msgs.iloc[0:0]),
                               orphans[orphans["flow_id"].isin(conv_turns["flow_id"])]], ignore_index=True)
        conv = conversation_from_frames(conv_msgs, conv_turns, cid, reads_by.get(cid, my_reads.iloc[0:0]))
        points = [p for p in conv.branch_points() if p != ROOT_ID]
        title = r.title if isinstance(r.title, str) and r.title else ""
        out.append(ConversationRow(
            id=cid, title=title, turns=int(r.turns), models=r.models or "–", ttft_p50=fmt_ms(p50.get(cid)),
            branch_points=len(points), last_at=fmt_time(r.last_at), entries=_entries(conv),
        ))
    return out


def perf_stats_table(report: dict) -> dict[str, Any] | None:
    """The server's perf_stats numbers beside the beacons' first-token and total times (p50/p95/p99)."""
    server = report["latency"].get("server_reported") or {}
    if not server.get("answers"):
        return None
    cr = report["latency"]["client_reported"]
    rows = [("perf_stats", name, s) for name, s in server["metrics"].items()]
    rows += [("beacon", "ts_first_token_ms", cr["ts_first_token_ms"]), ("beacon", "ts_total_request_ms",
                                                                         cr["ts_total_request_ms"])]
    return {
        "answers": server["answers"],
        "headers": ["source", "metric", "n", "p50", "p95", "p99"],
        "numeric": [False, False, True, True, True, True],
        "rows": [[src, name, fmt_num(s["n"]), fmt_num(s["p50"], 1), fmt_num(s["p95"], 1), fmt_num(s["p99"], 1)]
                 for src, name, s in rows if s["n"]],
    }


def telemetry_chart(report: dict, top_n: int) -> Chart:
    """Analytics events per name, Segment and Statsig together, the top ``top_n`` as bars."""
    tel = report["telemetry"]
    named = [(n, c, "Segment") for n, c in tel["segment"]["by_event"].items()]
    named += [(n, c, "Statsig") for n, c in tel["statsig"]["by_event"].items()]
    if not named:
        return Chart(empty="No analytics events (Segment or Statsig) were captured.")
    named.sort(key=lambda t: (-t[1], t[2], t[0]))
    top = named[:top_n]
    labels = [f"{name} ({src})" for name, _, src in top]
    seg = [c if src == "Segment" else 0 for _, c, src in top]
    st = [c if src == "Statsig" else 0 for _, c, src in top]
    svg = charts.bar_chart(labels, {"Segment": seg, "Statsig": st}, xlabel="events", label="analytics events",
                           colours=[0, 1])
    rest = len(named) - len(top)
    note = f"{tel['segment']['events']:,} Segment and {tel['statsig']['events']:,} Statsig events" + (
        f"; {rest:,} less frequent event names are not drawn" if rest > 0 else "")
    return Chart(svg=svg, note=note)


def api_section(report: dict, metrics: Metrics, palette: Palette) -> dict[str, Any] | None:
    """TTFT and ITL CDFs and token usage per model for OpenAI-API calls; None when there are none."""
    api = report["latency"]["api"]
    if not api["calls"]:
        return None
    calls = metrics["api"]
    timed = calls[calls["has_timing"]]
    # The report's API block has pooled stats only: per-model marks come from the same queries.
    per_model = {m: b for (kind, m), b in metrics.observed_blocks("model").items() if kind == "api"}
    series, rows = [], []
    for model, grp in timed.groupby("model", sort=True):
        s = per_model[model]["ttft_ms"] if model in per_model else {"n": 0}
        if s["n"]:
            series.append(charts.CdfSeries(f"{model} (n={s['n']:,})", _finite(grp["ttft_ms"]), palette.slot(model),
                                           marks=_marks(s)))
            rows.append((model, "proxy", s))
    ttft = (Chart(svg=charts.cdf_chart(series, xlabel="time to first token (ms)", label="API TTFT CDF"),
                  table=_stats_rows(rows)) if series else
            Chart(empty="No API call has per-event timing (non-streamed calls and HAR imports have none)."))
    itl_stats = {m: b["itl_ms"] for m, b in per_model.items()}
    itl = itl_chart(metrics.itl_grid("api"), itl_stats, palette, what="API call")
    usage = api["usage_by_model"]
    if usage:
        models = list(usage)
        tokens = Chart(svg=charts.bar_chart(
            [f"{m} ({usage[m]['calls']:,} calls)" for m in models],
            {"prompt tokens": [usage[m]["prompt_tokens"] for m in models],
             "completion tokens": [usage[m]["completion_tokens"] for m in models]},
            xlabel="tokens", label="token usage per model", colours=[2, 3]))
    else:
        tokens = Chart(empty="No API call reported token usage.")
    return {"calls": api["calls"], "with_timing": api["calls_with_timing"], "ttft": ttft, "itl": itl,
            "tokens": tokens}


def codex_section(capture: Capture, report: dict, palette: Palette) -> dict[str, Any] | None:
    """Codex calls by model, used_percent over time per usage limit, and the CLI's turn timings
    against the wire; None when the capture has no Codex traffic."""
    cx = report.get("codex")
    if not cx or not (cx["calls"] or cx["rate_limits"]["observations"] or cx["turn_events"]["events"]):
        return None
    limits = codex_analysis.rate_limit_frame(capture)
    limits = limits[limits["used_percent"].notna() & limits["at"].notna()]
    series = []
    for i, (name, grp) in enumerate(limits.groupby("limit", sort=True)):
        times = codex_analysis.epoch_seconds(grp["at"])
        series.append((f"{name} (n={len(grp):,})", times, grp["used_percent"].to_numpy(dtype="float64"), i))
    chart = (Chart(svg=charts.time_series_chart(series, ylabel="used (%)", label="usage limits over time"))
             if series else Chart(empty="No usage-limit observation with a time and a used percentage."))
    models = [{"model": m, **b} for m, b in cx["by_model"].items()]
    limit_rows = [{"limit": k, **v, "reset_at": fmt_time(v["reset_at"])} for k, v in cx["rate_limits"]["by_limit"].items()]
    return {"calls": cx["calls"], "failed": cx["failed"], "models": models, "errors": cx["errors_by_code"],
            "limits": limit_rows, "chart": chart, "turns": cx["turn_events"]}


def error_groups(capture: Capture, examples: int = ERROR_EXAMPLES) -> list[dict[str, Any]]:
    """Errors per stage, most frequent first, with up to ``examples`` of each."""
    errors = capture.table("errors", ["flow_id", "stage", "error", "at"])
    if len(capture.paths) > 1:
        errors = errors.drop_duplicates()
    if errors.empty:
        return []
    errors = errors.assign(stage=errors["stage"].fillna("unknown")).sort_values("at", kind="stable")
    out = []
    for stage, grp in errors.groupby("stage", sort=False):
        out.append({
            "stage": stage, "count": len(grp),
            "examples": [{"flow_id": r.flow_id or "–", "error": r.error or "–", "at": fmt_time(r.at)}
                         for r in grp.head(examples).itertuples(index=False)],
        })
    out.sort(key=lambda g: (-g["count"], g["stage"]))
    return out


# -- the page -----------------------------------------------------------------------------------------


_ENV: jinja2.Environment | None = None


def _inert_value(value: object) -> object:
    """Every ``{{ … }}`` string is made ``inert`` before autoescape: a saved page that is ``cat`` to a
    terminal cannot write its clipboard either. Markup (the charts, made inert already) passes."""
    if isinstance(value, str) and not isinstance(value, markupsafe.Markup):
        return inert(value)
    return value


def _env() -> jinja2.Environment:
    global _ENV
    if _ENV is None:
        _ENV = jinja2.Environment(loader=jinja2.PackageLoader("analyzer", "templates"),
                                  autoescape=jinja2.select_autoescape(["html", "j2"]),
                                  trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
                                  finalize=_inert_value)
        _ENV.filters["num"] = fmt_num
        _ENV.filters["ms"] = fmt_ms
    return _ENV


def over_time_chart(metrics: Metrics, key: str, report: dict, palette: Palette) -> Chart | None:
    """p50 TTFT and ITL per hour (per day when the capture spans more than three days), one line
    per group of ``key``: how the latency moved over the capture."""
    first, last = report["capture"]["first_at"], report["capture"]["last_at"]
    if not first or not last:
        return Chart(empty="No flow has a time, so there is nothing to draw over time.")
    bucket = key if key in ("day", "hour") else (
        "day" if pd.Timestamp(last) - pd.Timestamp(first) > pd.Timedelta(days=3) else "hour")
    series = []
    for metric, label in (("ttft_ms", "TTFT"), ("itl_ms", "ITL")):
        frame = metrics.time_series(metric, key, bucket)
        frame = frame[frame["n"] > 0]
        for group, grp in frame.groupby("g", sort=True):
            times = pd.to_datetime(grp["bucket"].str.replace("Z", "", regex=False), utc=True)
            order = np.argsort(times.to_numpy())
            seconds = (times - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()[order]
            series.append((f"{label} p50 · {group}", seconds, grp["p50"].to_numpy(dtype="float64")[order],
                           palette.slot(str(group))))
    if not series:
        return Chart(empty="No answer has per-event timing, so there is nothing to draw over time.")
    svg = charts.time_series_chart(series, ylabel="p50 (ms)", label=f"TTFT and ITL p50 per {bucket}")
    return Chart(svg=svg, note=f"p50 per {bucket} (UTC) and per {key}")


def render_html(capture: Capture, report: dict | None = None, *, raster_n: int = RASTER_N,
                conversations_n: int = CONVERSATIONS_N, top_n: int = TOP_N, by: str | None = None,
                metrics: Metrics | None = None, engine: str = "duckdb", **options) -> str:
    """The HTML report of ``capture`` as one self-contained page.

    ``report`` is ``build_report(capture)`` if you have it; otherwise it is built here from the same
    engine tables the charts use. ``raster_n``: answers in the stream raster (newest first);
    ``conversations_n``: conversations in the table; ``top_n``: bars in the analytics chart;
    ``by``: one line per group of that key in the latency charts, plus p50s over time.
    """
    own = metrics is None
    metrics = metrics if metrics is not None else latency.compute_latency(capture, engine=engine, by=by, **options)
    try:
        return _render(capture, metrics, report, raster_n=raster_n, conversations_n=conversations_n, top_n=top_n,
                       by=by)
    finally:
        if own:
            metrics.close()


def _render(capture: Capture, metrics: Metrics, report: dict | None, *, raster_n: int, conversations_n: int,
            top_n: int, by: str | None) -> str:
    if report is None or (by and "by" not in report["latency"]):
        report = report_mod.build_report(capture, metrics)
    groups = report["latency"]["by"]["groups"] if by else report["latency"]["by_model"]
    palette = Palette(sorted(groups))
    listing = list_conversations(capture)
    titles = listing.set_index("conversation_id")["title"] if len(listing) else pd.Series(dtype=object)
    obs_itl = {m: b["observed"]["itl_ms"] for m, b in groups.items()}
    context = {
        "paths": report["capture"]["paths"],
        "cards": summary_cards(report),
        "ttft": ttft_chart(report, metrics, palette, by),
        "itl": itl_chart(metrics.itl_grid("turn", by or "model"), obs_itl, palette, what="conversation turn"),
        "over_time": over_time_chart(metrics, by, report, palette) if by else None,
        "by": by,
        "raster": raster_chart(capture, metrics, titles, palette, raster_n),
        "scatter": scatter_chart(report, metrics, palette),
        "perf_stats": perf_stats_table(report),
        "conversations": conversation_rows(capture, listing, metrics, conversations_n),
        "conversations_total": len(listing),
        "telemetry": telemetry_chart(report, top_n),
        "identifiers": report["telemetry"]["identifiers"],
        "privacy": privacy_audit(capture).to_dict(),
        "tel_metrics": report["telemetry"].get("metrics") or {"points": 0, "by_source": {}},
        "tel_logs": report["telemetry"].get("logs") or {"records": 0, "by_status": {}},
        "api": api_section(report, metrics, palette),
        "codex": codex_section(capture, report, palette),
        "errors": error_groups(capture),
        "error_count": report["capture"]["errors"],
        "limits": {"cdf_points": charts.CDF_POINTS, "raster_n": raster_n, "raster_ticks": charts.RASTER_TICKS,
                   "scatter_points": charts.SCATTER_POINTS, "conversations_n": conversations_n,
                   "max_message_chars": MAX_MESSAGE_CHARS, "top_n": top_n},
    }
    page = _env().get_template("report.html.j2").render(**context)
    # analyze bench runs: their own section, only when the capture has bench rows.
    from analyzer.bench.report_block import insert_html

    return insert_html(page, report.get("bench"))


__all__ = ["render_html"]
