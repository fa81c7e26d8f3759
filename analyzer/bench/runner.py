"""Drive a load generator with a workload and a schedule; collect a record per request.

``Run.records`` fills in as requests finish (and with the partial request when interrupted), so a
caller stopped by Ctrl-C keeps what was done. ``on_result`` gets each finished request (to write its
rows and move a progress bar).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from analyzer.bench.loadgen import LoadGenerator, RequestSpec, Result
from analyzer.bench.metrics import RequestRecord
from analyzer.bench.schedule import OPEN_LOOP, Knobs, open_loop_plan, phase, session_starts, think_time_s
from analyzer.bench.workload import CHARS_PER_TOKEN, BenchTurn, Session

LEAD_S = 0.05  # the run's clock starts this far after set-up, so the first request is not born late


def live_context(turn: BenchTurn, earlier: Sequence[tuple[BenchTurn, str | None]]) -> list[dict]:
    """The system prefix, each earlier question with the server's answer (the captured one where the
    server gave none), then this question."""
    messages = list(turn.prefix)
    for before, answer in earlier:
        messages.append({"role": "user", "content": before.user_text})
        text = answer or before.answer_text
        if text:
            messages.append({"role": "assistant", "content": text})
    messages.append({"role": "user", "content": turn.user_text})
    return messages


@dataclass
class Run:
    generator: LoadGenerator
    sessions: list[tuple[Session, float]]
    knobs: Knobs
    model: str | None = None
    context: str = "captured"  # captured | live
    hold_length: bool = False
    max_tokens: bool = True  # send the recorded answer length as max_tokens
    on_result: Callable[[Result], None] | None = None
    records: list[RequestRecord] = field(default_factory=list)
    started_at: float | None = None
    _last_planned: float | None = None

    def _spec(self, turn: BenchTurn, intended_at: float, messages: list[dict]) -> RequestSpec:
        # The estimate for what is sent (with --context live, not the captured context).
        context_tokens = math.ceil(sum(len(m.get("content") or "") for m in messages) / CHARS_PER_TOKEN)
        return RequestSpec(
            session_id=turn.session_id, turn_index=turn.turn_index, messages=messages,
            model=self.model or turn.model or "default", intended_at=intended_at,
            max_tokens=turn.answer_tokens if self.max_tokens else None, hold_length=self.hold_length,
            context_tokens=context_tokens, captured_context_chars=turn.context_chars,
            recorded_tokens=turn.answer_tokens, recorded_tokens_source=turn.tokens_source,
        )

    async def _send(self, spec: RequestSpec) -> Result:
        try:
            result = await self.generator.send(spec)
        except asyncio.CancelledError as exc:
            partial = getattr(exc, "result", None)
            if partial is not None:
                self._keep(partial)
            raise
        self._keep(result)
        return result

    def _keep(self, result: Result) -> None:
        self.records.append(result.record)
        if self.on_result is not None:
            self.on_result(result)

    async def _sleep_until(self, at: float) -> None:
        delay = at - self.generator.clock.now()
        if delay > 0:
            await asyncio.sleep(delay)

    async def run(self) -> list[RequestRecord]:
        clock = self.generator.clock
        self.started_at = start = clock.now() + LEAD_S
        if self.knobs.schedule in OPEN_LOOP:
            await self._open_loop(start)
        elif self.knobs.schedule == "session":
            await self._sessions(start)
        else:
            await self._concurrency(start)
        self.mark_phases()
        return self.records

    def mark_phases(self) -> None:
        """Warm-up and cool-down by intended send time (the cool-down counts back from the last one)."""
        if not self.records or self.started_at is None:
            return
        last = self._last_planned if self._last_planned is not None else max(r.intended_at for r in self.records)
        for r in self.records:
            r.phase = phase(r.intended_at - self.started_at, last - self.started_at, self.knobs)

    async def _open_loop(self, start: float) -> None:
        plan = open_loop_plan(self.sessions, self.knobs)
        if plan:
            self._last_planned = start + plan[-1].offset_s
        tasks: set[asyncio.Task] = set()
        try:
            for p in plan:
                session, _ = self.sessions[p.session_index]
                turn = session.turns[p.turn_position]
                intended = start + p.offset_s
                await self._sleep_until(intended)
                task = asyncio.create_task(self._send(self._spec(turn, intended, turn.messages)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def _one_session(self, session: Session, first_at: float, gate: asyncio.Semaphore | None,
                           end_at: float | None, think: bool = True) -> None:
        """The turns of one session in order; each meant for the previous end plus the think time."""
        intended = first_at
        earlier: list[tuple[BenchTurn, str | None]] = []
        if gate is not None:
            # Wait for the start first: a session meant for later must not hold a slot while it sleeps.
            await self._sleep_until(first_at)
            await gate.acquire()
        try:
            for index, turn in enumerate(session.turns):
                if end_at is not None and intended > end_at:
                    return
                await self._sleep_until(intended)
                messages = live_context(turn, earlier) if self.context == "live" else turn.messages
                result = await self._send(self._spec(turn, intended, messages))
                rec = result.record
                earlier.append((turn, None if rec.error else rec.answer_text))
                done_at = rec.ended_at or self.generator.clock.now()
                if index + 1 < len(session.turns):
                    nxt = session.turns[index + 1]
                    intended = done_at + (think_time_s(nxt, self.knobs) if think else 0.0)
        finally:
            if gate is not None:
                gate.release()

    async def _sessions(self, start: float) -> None:
        starts = session_starts(self.sessions, self.knobs)
        gate = asyncio.Semaphore(self.knobs.max_active) if self.knobs.max_active else None
        end_at = start + self.knobs.duration_s if self.knobs.duration_s is not None else None
        await asyncio.gather(*(self._one_session(s, start + o, gate, end_at)
                               for (s, _), o in zip(self.sessions, starts, strict=True)))

    async def _concurrency(self, start: float) -> None:
        """``concurrency`` workers; each takes the next session and sends its turns back to back."""
        queue = deque(s for s, _ in self.sessions)
        end_at = start + self.knobs.duration_s if self.knobs.duration_s is not None else None
        await self._sleep_until(start)

        async def worker() -> None:
            while queue:
                now = self.generator.clock.now()
                if end_at is not None and now > end_at:
                    return
                await self._one_session(queue.popleft(), now, None, end_at, think=False)

        await asyncio.gather(*(worker() for _ in range(self.knobs.concurrency or 1)))
