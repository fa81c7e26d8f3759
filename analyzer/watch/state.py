"""What ``analyze watch`` knows: the latest record of each stream, analytics counts, the last beacon.

Pure: records (dicts decoded from the addon's datagrams, analyzer/capture/watch.py) go in, numbers
come out. A record that is not one of ours is counted and ignored.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import orjson

from analyzer.capture.watch import ANALYTICS_TABLES, RECORD_VERSION

MAX_TURNS = 20  # rows kept on screen, newest last


@dataclass
class WatchState:
    turns: collections.OrderedDict = field(default_factory=collections.OrderedDict)  # id -> stream record
    counts: dict = field(default_factory=lambda: dict.fromkeys(ANALYTICS_TABLES, 0))
    beacon: dict | None = None
    received: int = 0
    ignored: int = 0

    def apply_datagram(self, data: bytes) -> None:
        try:
            record = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.ignored += 1
            return
        self.apply(record)

    def apply(self, record: object) -> None:
        if not isinstance(record, dict) or record.get("v") != RECORD_VERSION:
            self.ignored += 1
            return
        self.received += 1
        if record.get("type") == "stream" and isinstance(record.get("id"), str):
            previous = self.turns.get(record["id"])
            if previous is not None and previous.get("done") and not record.get("done"):
                return  # a late datagram overtaken by the final one
            self.turns[record["id"]] = record
            self.turns.move_to_end(record["id"])
            while len(self.turns) > MAX_TURNS:
                self.turns.popitem(last=False)
        elif record.get("type") == "analytics":
            counts = record.get("counts")
            if isinstance(counts, dict):
                for table in ANALYTICS_TABLES:
                    if isinstance(counts.get(table), int):
                        # counts only grow: a reordered datagram never makes them tick back
                        self.counts[table] = max(self.counts[table], counts[table])
            if isinstance(record.get("beacon"), dict):
                self.beacon = record["beacon"]
        else:
            self.ignored += 1


def tokens_per_second(record: dict) -> tuple[float | None, str]:
    """(rate, source) for a stream record: the API's completion tokens when reported, else text
    events, over the time from the first text event to the last chunk (docs/metrics.md, TPOT's
    token sources). None until there are two text events to measure between."""
    elapsed = record.get("text_elapsed_ms")
    if not elapsed or elapsed <= 0:
        return None, ""
    tokens = record.get("completion_tokens")
    if isinstance(tokens, int) and tokens > 1:
        return (tokens - 1) / (elapsed / 1000.0), "usage"
    n = record.get("n_text_events") or 0
    if n > 1:
        return (n - 1) / (elapsed / 1000.0), "text_events"
    return None, ""
