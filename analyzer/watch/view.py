"""The ``analyze watch`` screen: a rich Table of the turns streaming now, and the analytics counts."""

from __future__ import annotations

import time

from rich.console import Group
from rich.table import Table
from rich.text import Text

from analyzer.capture.contentview import inert
from analyzer.watch.state import WatchState, tokens_per_second

# What a record's kind is called on screen: a turn of the web app, an API call; "ws" over a WebSocket.
_WHAT = {"conversation": "turn", "conversation_websocket": "turn ws", "api": "api", "codex_websocket": "api ws"}


def _cell(value: object) -> Text:
    # Text, never markup: a model name from traffic cannot style or drive the terminal.
    return Text("" if value is None else inert(str(value), one_line=True))


def _ms(value: object) -> str:
    return f"{value:,.0f}" if isinstance(value, (int, float)) else "…"


def render(state: WatchState, *, listening: str) -> Group:
    table = Table(title="chatwire watch — turns as they stream", expand=False)
    for name, justify in (("started", "left"), ("what", "left"), ("model", "left"), ("TTFT ms", "right"),
                          ("events", "right"), ("text ev.", "right"), ("tokens", "right"), ("tok/s", "right"),
                          ("elapsed ms", "right"), ("status", "left")):
        table.add_column(name, justify=justify)
    for record in state.turns.values():
        rate, source = tokens_per_second(record)
        status = record.get("status") or ("done" if record.get("done") else "streaming")
        if record.get("lost"):
            status += " (updates lost)"
        what = _WHAT.get(record.get("kind"), "api")
        started = record.get("started_at")
        table.add_row(
            time.strftime("%H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "",
            _cell(f"{what} {record.get('path') or ''}"),
            _cell(record.get("model") or "…"),
            _ms(record.get("ttft_ms")),
            str(record.get("n_events", 0)),
            str(record.get("n_text_events", 0)),
            str(record["completion_tokens"]) if isinstance(record.get("completion_tokens"), int) else "",
            (f"{rate:.1f}" + ("" if source == "usage" else "*")) if rate is not None else "",
            _ms(record.get("elapsed_ms")),
            _cell(status),
        )
    counts = state.counts
    lines = [
        Text(f"analytics events: beacons {counts['latency_beacons']} · segment {counts['segment_events']}"
             f" · statsig {counts['statsig_events']}"),
    ]
    beacon = state.beacon
    if beacon:
        lines.append(Text("last beacon: model ") + _cell(beacon.get("model") or "?")
                     + Text(f" · first token {_ms(beacon.get('ts_first_token_ms'))} ms"
                            f" · {_ms(beacon.get('count_tokens'))} tokens"
                            f" · total {_ms(beacon.get('ts_total_request_ms'))} ms"))
    else:
        lines.append(Text("last beacon: none yet"))
    lines.append(Text(f"listening on udp://{listening} · {state.received} records"
                      + (f" · {state.ignored} ignored" if state.ignored else "")
                      + " · * tok/s from text events (the stream reports no token count)", style="dim"))
    return Group(table, *lines)
