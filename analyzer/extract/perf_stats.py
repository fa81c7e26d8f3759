"""``perf_stats`` events of a v1 stream (guide 6d) as one row per number they carry.

The event's shape is not documented: every numeric leaf (booleans excepted) becomes a row whose
``metric`` is its dotted key path, so whatever timings the server sends are kept and comparable.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

_SKIP = frozenset({"type", "conversation_id", "message_id"})


def numeric_leaves(value: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """``(dotted path, number)`` for every finite number inside ``value``."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, (int, float)):
        if math.isfinite(value):
            yield prefix, float(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not prefix and key in _SKIP:
                continue
            yield from numeric_leaves(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from numeric_leaves(item, f"{prefix}.{i}" if prefix else str(i))


def perf_rows(flow_id: str, event_rows: list[dict], perf_events: list[dict],
              conversation_id: str | None) -> list[dict]:
    """Rows for ``perf_stats``: ``perf_events`` are the stream's perf_stats objects, in the order of
    the ``stream_events`` rows of type ``perf_stats``."""
    rows = []
    perf_event_rows = [r for r in event_rows if r["type"] == "perf_stats"]
    for row, obj in zip(perf_event_rows, perf_events, strict=False):
        message_id = obj.get("message_id") if isinstance(obj.get("message_id"), str) else None
        for metric, value in numeric_leaves(obj):
            rows.append({"flow_id": flow_id, "seq": row["seq"], "at": row["at"],
                         "conversation_id": obj.get("conversation_id") if isinstance(obj.get("conversation_id"), str)
                         else conversation_id,
                         "message_id": message_id, "metric": metric, "value": value})
    return rows
