"""The workload in other load testers' trace formats (pure): one JSON object per line.

- ``mooncake``: the Mooncake (FAST '25) trace: per request ``timestamp`` (ms from the first
  request), ``input_length`` and ``output_length`` (tokens) and ``hash_ids``, one id per 512-token
  block of the prompt, equal for equal prefixes (what a prefix cache could reuse). Lengths and ids
  only: no text leaves the capture.
- ``aiperf``: AIPerf's ``mooncake_trace`` records with the sessions kept: ``session_id``; the first
  turn of a session has its ``timestamp``, later turns the ``delay`` (ms) after the previous answer
  (the think time); ``messages`` (the captured context), ``output_length``, ``input_length``,
  ``hash_ids``. This one carries the conversations' text.

Token counts are the workload's: the recorded answer length, and the context's characters / 4
(no tokenizer ships its vocabulary here); blocks are therefore 512 × 4 characters. Which fields
AIPerf reads is taken from its documentation of the mooncake_trace format.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence

from analyzer.bench.workload import CHARS_PER_TOKEN, BenchTurn, Session

BLOCK_TOKENS = 512
FORMATS = ("mooncake", "aiperf")


class BlockIds:
    """Small integer ids for prompt blocks, the same id for the same block after the same prefix."""

    def __init__(self, block_tokens: int = BLOCK_TOKENS) -> None:
        self.block_chars = int(block_tokens * CHARS_PER_TOKEN)
        self._ids: dict[bytes, int] = {}

    def __call__(self, messages: Sequence[dict]) -> list[int]:
        text = "".join(f"<|{m.get('role')}|>{m.get('content') or ''}" for m in messages)
        out, chain = [], b""
        for start in range(0, len(text), self.block_chars):
            chain = hashlib.sha256(chain + text[start:start + self.block_chars].encode()).digest()
            out.append(self._ids.setdefault(chain, len(self._ids)))
        return out


def _turns_in_time_order(sessions: Sequence[Session]) -> list[BenchTurn]:
    turns = [t for s in sessions for t in s.turns]
    return sorted(turns, key=lambda t: (t.sent_at is None, t.sent_at or 0.0, t.session_id, t.turn_index))


def _t0(sessions: Sequence[Session]) -> float:
    times = [t.sent_at for s in sessions for t in s.turns if t.sent_at is not None]
    return min(times) if times else 0.0


def mooncake_records(sessions: Sequence[Session]) -> Iterable[dict]:
    blocks, t0 = BlockIds(), _t0(sessions)
    for turn in _turns_in_time_order(sessions):
        yield {
            "timestamp": int(round(((turn.sent_at or t0) - t0) * 1000)),
            "input_length": turn.context_tokens_estimate,
            "output_length": turn.answer_tokens or 0,
            "hash_ids": blocks(turn.messages),
        }


def aiperf_records(sessions: Sequence[Session]) -> Iterable[dict]:
    blocks, t0 = BlockIds(), _t0(sessions)
    for session in sorted(sessions, key=lambda s: (s.start_at is None, s.start_at or 0.0, s.session_id)):
        for turn in session.turns:
            record: dict = {"session_id": session.session_id}
            if turn.turn_index == 1 or turn.think_s is None:
                if turn.turn_index == 1:
                    record["timestamp"] = int(round(((turn.sent_at or t0) - t0) * 1000))
                else:
                    record["delay"] = 0
            else:
                record["delay"] = int(round(turn.think_s * 1000))
            record.update({
                "messages": turn.messages,
                "input_length": turn.context_tokens_estimate,
                "output_length": turn.answer_tokens or 0,
                "hash_ids": blocks(turn.messages),
            })
            yield record


def export_trace(sessions: Sequence[Session], fmt: str) -> str:
    """The whole trace as JSON Lines."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown trace format {fmt!r} (one of {', '.join(FORMATS)})")
    records = mooncake_records(sessions) if fmt == "mooncake" else aiperf_records(sessions)
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
