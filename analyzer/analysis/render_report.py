"""Render the report dict (``build_report``) as text for a terminal, Markdown for an issue, or JSON.

Text and Markdown are made from the same list of blocks (headings, sentences, tables), so they
always show the same content; only the layout differs. Text tables are aligned and sized to stay
within 80 columns for the usual model names and hosts. Latency comes first. Missing numbers are
shown as ``-`` and empty sections say so in a sentence: NaN never reaches the output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

FORMATS = ("text", "markdown", "json")
TOP_N = 10  # rows of event-count tables before "… and N more"
MAX_TEXT_CELL = 30  # text format: longer cells (model slugs, hosts) are shortened with "…"


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    # "l" or "r" per column; numbers are right-aligned.
    align: str = ""
    note: str = ""
    # Text format: wrap the last column (a free-text list) onto continuation lines to stay in 80 columns.
    wrap_last: bool = False


Block = Heading | Para | Table


# -- number formatting --------------------------------------------------------------------------


def _num(value: float | int | None, decimals: int = 1) -> str:
    """One decimal below 1,000, none above (a tenth of a millisecond is noise on a multi-second time)."""
    if value is None:
        return "-"
    if abs(value) >= 1000:
        decimals = 0
    return f"{value:,.{decimals}f}"


def _count(value: int | None) -> str:
    return "-" if value is None else f"{int(value):,}"


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (plural or word + 's')}"


def _when(iso: str | None) -> str:
    if not iso:
        return "-"
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S")


def format_span(first: str | None, last: str | None) -> str:
    """``3d 04h`` / ``2h 05m`` / ``4m 10s`` between two ISO times; empty when one is missing."""
    if not first or not last:
        return ""
    seconds = max(int((datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


# -- blocks -------------------------------------------------------------------------------------

STAT_COLUMNS = ("n", "mean", "p50", "p90", "p95", "p99", "max")


def _stats_table(rows: list[tuple[str, dict]], decimals: int = 1) -> Table:
    """One row per metric with n, mean and the percentiles (min is in the JSON)."""
    body = []
    for label, s in rows:
        if not s or not s.get("n"):
            body.append([label, "0"] + ["-"] * (len(STAT_COLUMNS) - 1))
            continue
        body.append([label, _count(s["n"])] + [_num(s[k], decimals) for k in STAT_COLUMNS[1:]])
    return Table(["metric", *STAT_COLUMNS], body, "l" + "r" * len(STAT_COLUMNS))


def _observed_blocks(obs: dict, unit: str, what: str) -> list[Block]:
    total, timed = obs[unit], obs[f"{unit}_with_timing"]
    untimed = obs[f"{unit}_without_timing"]
    if total == 0:
        return [Para(f"No {what} in this capture.")]
    if timed == 0:
        return [Para(f"{_plural(total, what[:-1] if what.endswith('s') else what)}, none with per-event timing "
                     "(imports from HAR files carry no arrival times): no observed latency.")]
    sources = obs.get("tpot_token_source") or {}
    source_text = ", ".join(f"{_count(n)} from {_TOKEN_SOURCE.get(k, k)}" for k, n in sources.items())
    out: list[Block] = [
        Para(f"{_count(timed)} of {_plural(total, what[:-1] if what.endswith('s') else what)} with per-event timing"
             + (f" ({_count(untimed)} without, left out)" if untimed else "")
             + "; milliseconds. ITL pools every gap between consecutive text events."),
        _stats_table([
            ("TTFT", obs["ttft_ms"]), ("ITL", obs["itl_ms"]),
            ("TPOT", obs["tpot_ms"]), ("E2E", obs["e2e_ms"]),
        ]),
    ]
    if source_text:
        out.append(Para(f"TPOT token counts: {source_text}."))
    return out


_TOKEN_SOURCE = {"beacon": "the page's beacon", "text_events": "counted text events", "usage": "API usage"}


def _latency_blocks(lat: dict) -> list[Block]:
    out: list[Block] = [Heading("Latency")]
    out.append(Heading("Observed at the proxy: conversation turns", 3))
    out += _observed_blocks(lat["observed"], "turns", "conversation turns")

    cr = lat["client_reported"]
    out.append(Heading("Reported by the page: latency beacons", 3))
    if cr["beacons"] == 0:
        out.append(Para("No latency beacons (POST /backend-api/lat/r) in this capture."))
    else:
        out.append(Para(f"{_plural(cr['beacons'], 'beacon')}; each summarises one answer, so these are "
                        "statistics across answers, not across tokens. Milliseconds, except tokens and tokens/s; "
                        "the gaps are each beacon's own median/p95/p99 time between tokens after the first."))
        out.append(_stats_table([
            ("first token", cr["ts_first_token_ms"]), ("total", cr["ts_total_request_ms"]),
            ("tokens", cr["count_tokens"]), ("tokens/s", cr["tokens_per_s"]),
            ("median gap", cr["ts_median_token_without_first_ms"]),
            ("p95 gap", cr["ts_p95_token_without_first_ms"]),
            ("p99 gap", cr["ts_p99_token_without_first_ms"]),
        ]))

    sr = lat.get("server_reported") or {}
    if sr.get("answers"):
        out.append(Heading("Reported by the server: perf_stats events", 3))
        out.append(Para(f"{_plural(sr['answers'], 'answer')} whose stream carried perf_stats; each number is listed "
                        "under its key path, as sent (milliseconds where the name says so), beside the beacon's "
                        "first-token and total times above."))
        out.append(_stats_table([(name, s) for name, s in sr["metrics"].items()]))

    mt = lat["matched"]
    if cr["beacons"] or lat["observed"]["turns"]:
        out.append(Heading("Beacons joined to turns (server_request_id = cf-ray)", 3))
        out.append(Para(f"{_plural(mt['pairs'], 'pair')}, {_plural(mt['unmatched_beacons'], 'unmatched beacon')}."
                        + (" TTFT gap (ms) = the page's first-token time minus the proxy's TTFT: what the page "
                           "adds on top of the network." if mt["ttft_gap_ms"]["n"] else "")))
        if mt["ttft_gap_ms"]["n"]:
            out.append(_stats_table([("TTFT gap", mt["ttft_gap_ms"])]))

    by = lat["by_model"]
    if by:
        out.append(Heading("By model: observed p50, ms", 3))
        rows = [[model, _count(b["observed"]["turns"]), _num(b["observed"]["ttft_ms"]["p50"]),
                 _num(b["observed"]["itl_ms"]["p50"]), _num(b["observed"]["tpot_ms"]["p50"]),
                 _num(b["observed"]["e2e_ms"]["p50"])] for model, b in by.items() if b["observed"]["turns"]]
        if rows:
            out.append(Table(["model", "turns", "TTFT", "ITL", "TPOT", "E2E"], rows, "lrrrrr"))
        rows = [[model, _count(b["client_reported"]["beacons"]),
                 _num(b["client_reported"]["ts_first_token_ms"]["p50"]),
                 _num(b["client_reported"]["ts_total_request_ms"]["p50"]),
                 _num(b["client_reported"]["tokens_per_s"]["p50"])]
                for model, b in by.items() if b["client_reported"]["beacons"]]
        if rows:
            out.append(Heading("By model: page-reported p50", 3))
            out.append(Table(["model", "beacons", "first token ms", "total ms", "tokens/s"], rows, "lrrrr"))

    out += _by_blocks(lat.get("by"))

    api = lat["api"]
    if api["calls"]:
        out.append(Heading("OpenAI-API calls", 3))
        out += _observed_blocks(api, "calls", "API calls")
        usage = api.get("usage_by_model") or {}
        if usage:
            out.append(Table(["model", "calls", "prompt tok", "completion tok", "total tok"],
                             [[m, _count(u["calls"]), _count(u["prompt_tokens"]), _count(u["completion_tokens"]),
                               _count(u["total_tokens"])] for m, u in usage.items()], "lrrrr"))
    server = lat.get("local_models") or {}
    if server.get("calls"):
        out.append(Heading("Reported by the server: local models (Ollama)", 3))
        out.append(Para(f"{_plural(server['calls'], 'call')} with the server's own timings (milliseconds; "
                        "tokens/s is the server's decode rate). TTFT minus prefill: the proxy's TTFT less the "
                        "server's model load and prompt evaluation."))
        out.append(_stats_table([("server total", server["server_total_ms"]),
                                 ("model load", server["server_load_ms"]),
                                 ("prompt eval", server["server_prompt_eval_ms"]),
                                 ("eval (decode)", server["server_eval_ms"]),
                                 ("eval tokens/s", server["eval_tokens_per_s"]),
                                 ("TTFT minus prefill", server["ttft_minus_server_prefill_ms"])]))
    return out


def _by_blocks(by: dict | None) -> list[Block]:
    """``--by``: every latency table once per group (observed turns, beacons, API calls)."""
    if not by:
        return []
    out: list[Block] = [Heading(f"By {by['key']}", 3)]
    if not by["groups"]:
        out.append(Para(f"No answer or beacon to group by {by['key']}."))
    for group, block in by["groups"].items():
        out.append(Heading(f"{by['key']} = {group}", 4))
        obs, cr, api = block["observed"], block["client_reported"], block["api"]
        if obs["turns"]:
            out += _observed_blocks(obs, "turns", "conversation turns")
        if cr["beacons"]:
            out.append(Para(f"{_plural(cr['beacons'], 'beacon')}, as the page reported them (ms, except tokens/s)."))
            out.append(_stats_table([("first token", cr["ts_first_token_ms"]), ("total", cr["ts_total_request_ms"]),
                                     ("tokens/s", cr["tokens_per_s"])]))
        if api["calls"]:
            out += _observed_blocks(api, "calls", "API calls")
    return out


def _top(counts: dict[str, int], label: str) -> Table:
    items = list(counts.items())
    rows = [[name, _count(n)] for name, n in items[:TOP_N]]
    note = f"… and {len(items) - TOP_N} more" if len(items) > TOP_N else ""
    return Table([label, "events"], rows, "lr", note=note)


def _capture_blocks(cap: dict, conv: dict) -> list[Block]:
    out: list[Block] = [Heading("Conversations")]
    if conv["turns"] == 0 and conv["messages"] == 0 and conv["count"] == 0:
        out.append(Para("No conversations in this capture."))
    else:
        out.append(Table(["conversations", "turns", "messages", "branch points"],
                         [[_count(conv["count"]), _count(conv["turns"]), _count(conv["messages"]),
                           _count(conv["branch_points"])]], "rrrr"))
        if conv["by_model"]:
            out.append(Table(["model", "turns"], [[m, _count(n)] for m, n in conv["by_model"].items()], "lr"))
        rs = conv.get("resumes") or {}
        if rs.get("resumed_turns") or rs.get("stopped_by_user"):
            gap = rs["resume_gap_ms"]
            out.append(Para(
                f"{_plural(rs['resumed_turns'], 'turn')} resumed after a broken stream "
                f"({_plural(rs['resumes'], 'resume')}, {_count(rs['failed_resumes'])} failed), each counted as one "
                f"turn; {_plural(rs['stopped_by_user'], 'turn')} stopped by the user."
                + (f" Time lost in the breaks, per turn: p50 {_num(gap['p50'])} ms, max {_num(gap['max'])} ms."
                   if gap.get("n") else "")))
    out.append(Heading("Flows by kind"))
    if cap["by_kind"]:
        out.append(Table(["kind", "flows"], [[k, _count(n)] for k, n in cap["by_kind"].items()], "lr"))
    else:
        out.append(Para("No flows."))
    return out


def _telemetry_blocks(tel: dict) -> list[Block]:
    out: list[Block] = [Heading("Telemetry")]
    seg, st = tel["segment"], tel["statsig"]
    metrics = tel.get("metrics") or {"points": 0}
    logs = tel.get("logs") or {"records": 0}
    if not seg["events"] and not st["events"] and not tel["identifiers"] and not metrics["points"] \
            and not logs["records"]:
        return out + [Para("No Segment or Statsig events, metrics or logs in this capture.")]
    out.append(Para(f"Segment: {_plural(seg['events'], 'event')}; Statsig: {_plural(st['events'], 'event')}. "
                    f"{_plural(tel['events_in_conversations'], 'analytics event')} name a captured conversation "
                    f"({_plural(tel.get('conversations_linked', 0), 'conversation')}; "
                    f"{_count(tel.get('events_naming_a_conversation', 0))} name any)."))
    if seg["events"]:
        out.append(Heading("Segment events", 3))
        out.append(_top(seg["by_event"], "event"))
        out.append(Table(["type", "events"], [[k, _count(n)] for k, n in seg["by_type"].items()], "lr"))
    if st["events"]:
        out.append(Heading("Statsig events", 3))
        out.append(_top(st["by_event"], "event"))
    if metrics["points"]:
        out.append(Heading("Metrics", 3))
        out.append(Para(f"{_plural(metrics['points'], 'data point')} (Segment series, statsc counters and "
                        "histograms, OpenTelemetry)."))
        out.append(Table(["source", "points"], [[k, _count(n)] for k, n in metrics["by_source"].items()], "lr"))
        out.append(_top(metrics["by_name"], "metric"))
    if logs["records"]:
        out.append(Heading("Logs", 3))
        out.append(Para(f"{_plural(logs['records'], 'log record')} (Datadog browser logs)."))
        out.append(Table(["status", "records"], [[k, _count(n)] for k, n in logs["by_status"].items()], "lr"))
    if tel["identifiers"]:
        out.append(Heading("Identifiers sent, by host", 3))
        rows = []
        for e in tel["identifiers"]:
            others = [h for h in e["hosts"] if h != e["host"]]
            rows.append([e["kind"], e["host"], _count(e["distinct_values"]), _count(e["events"]),
                         ", ".join(others) if others else "-"])
        out.append(Para("Values: distinct values of the identifier sent to that host. The last column lists the "
                        "other hosts that received at least one of the same values."))
        out.append(Table(["identifier", "host", "values", "events", "same value also sent to"], rows, "llrrl",
                         wrap_last=True))
    return out


def _codex_blocks(cx: dict | None) -> list[Block]:
    """Codex backend calls by model, usage limits, and the CLI's turn timings against the wire."""
    if not cx or not (cx["calls"] or cx["rate_limits"]["observations"] or cx["turn_events"]["events"]):
        return []
    out: list[Block] = [Heading("Codex")]
    out.append(Para(f"{_plural(cx['calls'], 'Codex call')} ({_count(cx['failed'])} failed) in "
                    f"{_plural(cx['sessions'], 'session')} and {_plural(cx['turns'], 'turn')}; milliseconds. "
                    "TTFT is the first visible text; reasoning is timed apart (first reasoning event, and the "
                    "span from the first to the last)."))
    if cx["by_model"]:
        rows = []
        for model, m in cx["by_model"].items():
            rows.append([model, _count(m["calls"]), _num(m["ttft_ms"].get("p50")), _num(m["itl_ms"].get("p50")),
                         _num(m["first_reasoning_ms"].get("p50")), _num(m["reasoning_ms"].get("p50")),
                         _num(m["e2e_ms"].get("p50"))])
        out.append(Table(["model", "calls", "TTFT p50", "ITL p50", "reason 1st", "reason ms", "E2E p50"], rows,
                         "lrrrrrr", note="p50s; the JSON has every percentile"))
    if cx["errors_by_code"]:
        out.append(Table(["error", "calls"], [[k, _count(n)] for k, n in cx["errors_by_code"].items()], "lr"))
    limits = cx["rate_limits"]
    out.append(Heading("Usage limits", 3))
    if limits["by_limit"]:
        rows = [[name, _count(b["observations"]), _num(b["first_used_percent"]), _num(b["last_used_percent"]),
                 _num(b["max_used_percent"]), _num(b["window_minutes"], 0), _when(b["reset_at"])]
                for name, b in limits["by_limit"].items()]
        out.append(Table(["limit", "seen", "first %", "last %", "max %", "window min", "resets (UTC)"], rows,
                         "lrrrrrl"))
    else:
        out.append(Para("No usage-limit headers or codex.rate_limits events in this capture."))
    turns = cx["turn_events"]
    out.append(Heading("Codex turns: the CLI's timing against the wire", 3))
    if not turns["events"]:
        out.append(Para("No codex_turn_event analytics events in this capture."))
        return out
    out.append(Para(f"{_plural(turns['events'], 'codex_turn_event')}, {_count(turns['joined'])} joined to their "
                    "responses calls on turn_id. Inference gap = the CLI's critical_path_inference_ms − the sum "
                    "of the calls' E2E."))
    rows = [[t["turn_id"], _count(t["n_calls"]), _num(t["critical_path_duration_ms"]),
             _num(t["critical_path_inference_ms"]), _num(t["critical_path_tools_ms"]), _num(t["wire_ttft_ms"]),
             _num(t["wire_inference_ms"]), _num(t["inference_gap_ms"])] for t in turns["turns"]]
    out.append(Table(["turn", "calls", "CLI total", "CLI infer", "CLI tools", "wire TTFT", "wire E2E", "gap"],
                     rows, "lrrrrrrr"))
    return out


def _is_empty(report: dict) -> bool:
    cap, lat, tel = report["capture"], report["latency"], report["telemetry"]
    return (cap["flows"] == 0 and report["conversations"]["turns"] == 0 and lat["client_reported"]["beacons"] == 0
            and lat["api"]["calls"] == 0 and tel["segment"]["events"] == 0 and tel["statsig"]["events"] == 0)


def report_blocks(report: dict) -> list[Block]:
    """The report as headings, sentences and tables, in reading order (latency first)."""
    cap = report["capture"]
    paths = ", ".join(cap.get("paths") or []) or "capture"
    out: list[Block] = [Heading(f"chatwire report: {paths}", 1)]
    if _is_empty(report):
        out.append(Para("This capture is empty: no flows, no conversation turns, no latency beacons, no API calls "
                        "and no analytics events. Nothing to report yet."))
        return out
    span = format_span(cap["first_at"], cap["last_at"])
    out.append(Para(f"{_plural(cap['flows'], 'flow')} from {_when(cap['first_at'])} to {_when(cap['last_at'])} UTC"
                    + (f" ({span})" if span else "") + f"; {_plural(cap['errors'], 'extraction error')}."))
    # analyze bench runs first when there are any: a degraded run must be seen before its latency.
    from analyzer.bench.report_block import bench_blocks

    out += bench_blocks(report.get("bench"))
    out += _latency_blocks(report["latency"])
    out += _capture_blocks(cap, report["conversations"])
    out += _telemetry_blocks(report["telemetry"])
    out += _codex_blocks(report.get("codex"))
    return out


# -- layouts ------------------------------------------------------------------------------------


def _shorten(cell: str, limit: int = MAX_TEXT_CELL) -> str:
    return cell if len(cell) <= limit else cell[: limit - 1] + "…"


def _text_table(t: Table, width: int = 80) -> list[str]:
    n = len(t.headers)
    rows = [[c if t.align[i:i + 1] == "r" or (t.wrap_last and i == n - 1) else _shorten(c)
             for i, c in enumerate(r)] for r in t.rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(t.headers)]
    indent, sep = "  ", "  "
    wrapped: list[list[str]] = [[r[-1]] for r in rows]
    if t.wrap_last and rows:
        room = width - len(indent) - sum(widths[:-1]) - len(sep) * (n - 1)
        if room >= 16 and widths[-1] > room:
            wrapped = [_wrap(r[-1], room) for r in rows]
            widths[-1] = max(len(t.headers[-1]), *(len(x) for w in wrapped for x in w))

    def line(cells: list[str]) -> str:
        parts = [c.rjust(w) if t.align[i:i + 1] == "r" else c.ljust(w)
                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return (indent + sep.join(parts)).rstrip()

    out = [line(t.headers), indent + sep.join("-" * w for w in widths)]
    for r, last in zip(rows, wrapped, strict=True):
        out.append(line(r[:-1] + [last[0]]))
        out += [line([""] * (n - 1) + [more]) for more in last[1:]]
    if t.note:
        out.append(indent + t.note)
    return out


def render_text(report: dict) -> str:
    """A terminal-friendly report: aligned tables, readable at 80 columns."""
    return blocks_to_text(report_blocks(report))


def blocks_to_text(blocks: list[Block]) -> str:
    """Headings, sentences and aligned tables for a terminal (any command's blocks)."""
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            if lines and lines[-1] != "":
                lines.append("")
            if block.level == 1:
                lines += [block.text, "=" * min(len(block.text), 78)]
            elif block.level == 2:
                lines += [block.text.upper(), "-" * min(len(block.text), 78)]
            else:
                lines.append(block.text)
        elif isinstance(block, Para):
            lines += _wrap(block.text, 78)
        else:
            lines += _text_table(block)
        if isinstance(block, Table):
            lines.append("")
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=width, break_long_words=False, break_on_hyphens=False) or [""]


def _md_cell(cell: str) -> str:
    return cell.replace("|", "\\|")


def render_markdown(report: dict) -> str:
    """GitHub-flavoured Markdown: the same blocks as the text format, as headings and pipe tables."""
    return blocks_to_markdown(report_blocks(report))


def blocks_to_markdown(blocks: list[Block]) -> str:
    """Blocks as GitHub-flavoured Markdown headings, paragraphs and pipe tables."""
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Para):
            out += [block.text, ""]
        else:
            out.append("| " + " | ".join(_md_cell(h) for h in block.headers) + " |")
            out.append("|" + "|".join("---:" if a == "r" else "---" for a in block.align) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in block.rows]
            if block.note:
                out += ["", f"*{block.note}*"]
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def render_json(report: dict) -> str:
    """The report object as indented JSON (no NaN: nulls where there is no data)."""
    return json.dumps(report, indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def render(report: dict, fmt: str = "text") -> str:
    """Render ``report`` in ``fmt``: ``text``, ``markdown`` or ``json``."""
    if fmt == "text":
        return render_text(report)
    if fmt == "markdown":
        return render_markdown(report)
    if fmt == "json":
        return render_json(report)
    raise ValueError(f"unknown report format {fmt!r} (choose from {', '.join(FORMATS)})")


__all__ = ["FORMATS", "Block", "Heading", "Para", "Table", "blocks_to_markdown", "blocks_to_text", "render", "render_json", "render_markdown", "render_text", "report_blocks"]
