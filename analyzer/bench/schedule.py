"""When each request is meant to be sent: the schedules and their knobs (pure).

Open loop (the send time does not depend on the server): ``timestamps`` (each turn at its recorded
time, divided by ``speed``), ``poisson`` and ``constant`` (``rate`` requests per second over the
workload's turns in recorded order). Closed loop (the send waits for an answer): ``session`` (sessions
start at their recorded times; each next turn is meant for the previous answer's end plus the think
time) and ``concurrency`` (``concurrency`` sessions at a time, each turn sent when the previous one
ended). For every request the generator records the intended time, so schedule lag is
``sent − intended`` in every schedule.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from analyzer.bench.workload import BenchTurn, Session

OPEN_LOOP = ("timestamps", "poisson", "constant")
CLOSED_LOOP = ("session", "concurrency")
SCHEDULES = OPEN_LOOP + CLOSED_LOOP


@dataclass(frozen=True)
class Knobs:
    schedule: str = "session"
    rate: float | None = None  # poisson, constant: requests per second
    concurrency: int | None = None  # concurrency: sessions at a time
    speed: float = 1.0  # recorded times and think times are divided by this
    think_scale: float = 1.0
    think_max_s: float | None = None
    clone: int = 1
    jitter_s: float = 0.0
    max_active: int | None = None  # session: sessions active at once
    duration_s: float | None = None  # no request is started after this
    warmup_s: float = 0.0
    cooldown_s: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r} (one of {', '.join(SCHEDULES)})")
        if self.schedule in ("poisson", "constant") and not (self.rate and self.rate > 0):
            raise ValueError(f"--schedule {self.schedule} needs --rate > 0")
        if self.schedule == "concurrency" and not (self.concurrency and self.concurrency > 0):
            raise ValueError("--schedule concurrency needs --concurrency ≥ 1")
        if self.speed <= 0:
            raise ValueError("--speed must be > 0")

    def to_dict(self) -> dict:
        return asdict(self)


def think_time_s(turn: BenchTurn, knobs: Knobs) -> float:
    """The wait before ``turn`` in a closed-loop session: its recorded think time × scale, capped,
    divided by speed; 0 for the first turn or an unknown think time."""
    if turn.turn_index <= 1 or turn.think_s is None:
        return 0.0
    think = turn.think_s * knobs.think_scale
    if knobs.think_max_s is not None:
        think = min(think, knobs.think_max_s)
    return max(think, 0.0) / knobs.speed


def session_starts(sessions: Sequence[tuple[Session, float]], knobs: Knobs) -> list[float]:
    """Each (session, shift) pair's start offset (s) from the run's start: recorded start − the earliest
    recorded start, divided by speed, plus the clone's shift. Sessions without a recorded time start at 0."""
    recorded = [s.start_at for s, _ in sessions if s.start_at is not None]
    t0 = min(recorded) if recorded else 0.0
    return [((s.start_at - t0) / knobs.speed if s.start_at is not None else 0.0) + shift for s, shift in sessions]


@dataclass(frozen=True)
class Planned:
    offset_s: float  # intended send, from the run's start
    session_index: int
    turn_position: int  # index into the session's turns


def open_loop_plan(sessions: Sequence[tuple[Session, float]], knobs: Knobs) -> list[Planned]:
    """The intended send offset of every turn under an open-loop schedule, in send order; turns past
    ``duration_s`` are left out."""
    if knobs.schedule not in OPEN_LOOP:
        raise ValueError(f"{knobs.schedule} is not an open-loop schedule")
    starts = session_starts(sessions, knobs)
    # Recorded order (the timestamps schedule's own order), ties by session then turn.
    items: list[tuple[float, int, int]] = []
    for i, ((session, _shift), start) in enumerate(zip(sessions, starts, strict=True)):
        t_first = session.start_at
        previous = start
        for k, turn in enumerate(session.turns):
            if turn.sent_at is not None and t_first is not None:
                offset = start + (turn.sent_at - t_first) / knobs.speed
            else:  # no recorded time: right after the previous turn of the session
                offset = previous
            previous = offset
            items.append((offset, i, k))
    items.sort()
    if knobs.schedule == "timestamps":
        plan = [Planned(o, i, k) for o, i, k in items]
    else:
        offsets = arrival_offsets(len(items), knobs.schedule, knobs.rate or 0.0, knobs.seed)
        plan = [Planned(o, i, k) for o, (_, i, k) in zip(offsets, items, strict=True)]
    if knobs.duration_s is not None:
        plan = [p for p in plan if p.offset_s <= knobs.duration_s]
    return plan


def arrival_offsets(n: int, kind: str, rate: float, seed: int = 0) -> list[float]:
    """``n`` arrival offsets (s) at ``rate`` per second: ``constant`` is k / rate; ``poisson`` has
    exponential gaps of mean 1 / rate (seeded). Both start at 0."""
    if kind == "constant":
        return [k / rate for k in range(n)]
    if kind != "poisson":
        raise ValueError(kind)
    rng = random.Random(seed)
    out, t = [], 0.0
    for _ in range(n):
        out.append(t)
        t += rng.expovariate(rate)
    return out


def phase(intended_offset_s: float, last_offset_s: float, knobs: Knobs) -> str:
    """``warmup`` for requests meant in the first ``warmup_s``, ``cooldown`` in the last ``cooldown_s``
    before the last intended send, else ``steady``: only steady requests enter the statistics."""
    # Without a warm-up nothing is one, not even a request meant a hair before the start (a closed-loop
    # worker's first send after an asyncio timer that woke early).
    if knobs.warmup_s > 0 and intended_offset_s < knobs.warmup_s:
        return "warmup"
    if knobs.cooldown_s > 0 and intended_offset_s > last_offset_s - knobs.cooldown_s:
        return "cooldown"
    return "steady"
