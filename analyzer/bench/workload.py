"""The workload: every conversation of the captures as a session of turns.

A web conversation's turns are the user messages of its active branch (``analyzer.replay.replay.plan_turns``:
each with the captured context, i.e. the history with the web app's own answers). Captured API calls are
grouped into sessions by their context: a call whose ``messages`` begin with an earlier call's messages
and that call's answer continues that call's session.

Per turn: the recorded send time, the think time before it (this turn's send − the previous answer's
last event, never negative), the recorded answer length in tokens and the captured timing. The answer
length comes from ``usage`` (API calls), else the latency beacon's ``count_tokens`` (web turns), else
the recorded answer text counted with the shipped ``o200k_base`` vocabulary (``analyzer.bench.tokenizer``),
else (no text) the number of text events, else (no tokenizer) ``len(text) / 4``; ``tokens_source``
says which one.

The builders take plain values (rows, plans) and do no I/O; ``load_workload`` is the thin part that
reads a capture.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

CHARS_PER_TOKEN = 4.0  # the usual rule of thumb for English text with BPE vocabularies


@dataclass
class BenchTurn:
    """One request of the workload."""

    session_id: str
    turn_index: int  # 1-based, within the session
    user_text: str
    messages: list[dict]  # captured context, ending with this turn's question
    prefix: list[dict] = field(default_factory=list)  # system messages before the first question
    sent_at: float | None = None  # recorded send time (epoch seconds)
    answer_end_at: float | None = None  # recorded last event of the answer
    think_s: float | None = None  # recorded send − previous answer's end
    answer_tokens: int | None = None
    tokens_source: str | None = None  # usage | beacon | tokenizer | text_events | chars
    answer_text: str | None = None
    model: str | None = None
    captured: dict[str, float | None] = field(default_factory=dict)  # ttft_ms, e2e_ms, itl_p50_ms, tpot_ms
    source_flow_id: str | None = None

    @property
    def context_chars(self) -> int:
        return sum(len(m.get("content") or "") for m in self.messages)

    @property
    def context_tokens_estimate(self) -> int:
        return math.ceil(self.context_chars / CHARS_PER_TOKEN)


@dataclass
class Session:
    session_id: str
    source: str  # web | api
    turns: list[BenchTurn]

    @property
    def start_at(self) -> float | None:
        return next((t.sent_at for t in self.turns if t.sent_at is not None), None)


def estimate_tokens(text: str | None) -> int | None:
    return None if not text else max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def answer_length(text: str | None, n_text_events: float | None) -> tuple[int | None, str | None]:
    """The answer length without usage or beacon: the text's token count, else the number of text
    events, else characters / 4; with its source (``tokenizer`` | ``text_events`` | ``chars``)."""
    from analyzer.bench.tokenizer import SOURCE, count_tokens

    n = count_tokens(text)
    if n:
        return n, SOURCE
    if n_text_events:
        return int(round(n_text_events)), "text_events"
    n = estimate_tokens(text)
    return (n, "chars") if n else (None, None)


def fill_think_times(turns: Sequence[BenchTurn]) -> None:
    """``think_s`` of each turn after the first: its send − the previous answer's end (≥ 0)."""
    for before, turn in zip(turns, turns[1:], strict=False):
        if turn.sent_at is not None and before.answer_end_at is not None:
            turn.think_s = max(turn.sent_at - before.answer_end_at, 0.0)


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------- web conversations


def web_session(conversation_id: str, plans: Sequence[Any], times: dict[str, dict]) -> Session:
    """A session from ``plan_turns``'s plans; ``times`` maps a web flow id to its turn's
    ``started_at`` (epoch) and ``e2e_ms`` and ``token_source`` (``beacon``/``text_events``)."""
    turns = []
    for plan in plans:
        web = plan.web
        timing = times.get(web.flow_id or "", {})
        sent = _finite(timing.get("started_at"))
        e2e = _finite(web.e2e_ms)
        ttft = _finite(web.ttft_ms)
        tokens = _finite(web.tokens)
        source = timing.get("token_source") if tokens else None
        if source != "beacon":  # text events are a proxy: the text's own token count comes first
            tokens, source = answer_length(web.text, tokens)
        tpot = None
        if tokens and tokens > 1 and e2e is not None and ttft is not None:
            tpot = (e2e - ttft) / (tokens - 1)
        turns.append(BenchTurn(
            session_id=conversation_id, turn_index=plan.index, user_text=plan.user_text,
            messages=plan.messages, prefix=plan.prefix, sent_at=sent,
            answer_end_at=None if sent is None or e2e is None else sent + e2e / 1000.0,
            answer_tokens=None if tokens is None else int(round(tokens)), tokens_source=source,
            answer_text=web.text, model=web.model,
            captured={"ttft_ms": ttft, "e2e_ms": e2e, "itl_p50_ms": _finite(web.itl_p50_ms), "tpot_ms": tpot},
            source_flow_id=web.flow_id,
        ))
    fill_think_times(turns)
    return Session(conversation_id, "web", turns)


# ---------------------------------------------------------------- API calls


def _content_text(content: Any) -> str | None:
    """A message's text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return "".join(parts) if parts else None
    return None


def request_messages(request_json: str | None) -> list[dict] | None:
    """The ``messages`` (chat.completions) or message ``input`` (Responses) of a recorded request body,
    reduced to ``{role, content}`` with text content; None when there are none."""
    if not request_json:
        return None
    try:
        body = json.loads(request_json)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    raw = body.get("messages")
    if raw is None:
        raw = body.get("input")
        if isinstance(raw, str):
            raw = [{"role": "user", "content": raw}]
        if isinstance(body.get("instructions"), str) and isinstance(raw, list):
            raw = [{"role": "system", "content": body["instructions"]}, *raw]
    if not isinstance(raw, list):
        return None
    out = []
    for m in raw:
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant"):
            continue
        text = _content_text(m.get("content"))
        if text is not None:
            out.append({"role": "system" if m["role"] == "developer" else m["role"], "content": text})
    return out or None


def _key(messages: Sequence[dict]) -> str:
    return hashlib.sha256(json.dumps(list(messages), sort_keys=True).encode()).hexdigest()


def api_sessions(calls: Iterable[dict], itl_p50: dict[str, float] | None = None) -> list[Session]:
    """Sessions from ``api_calls`` rows (dicts with epoch ``started_at``), oldest call first.

    A call continues a session when its messages are that session's last call's messages plus
    that call's answer (the way a chat client resends the history)."""
    itl_p50 = itl_p50 or {}
    sessions: list[Session] = []
    open_ends: dict[str, Session] = {}  # hash of (last messages + answer) -> session
    for call in sorted(calls, key=lambda c: _finite(c.get("started_at")) or 0.0):
        messages = request_messages(call.get("request_json"))
        if not messages or messages[-1]["role"] != "user":
            continue
        sent = _finite(call.get("started_at"))
        e2e = _finite(call.get("e2e_ms"))
        ttft = _finite(call.get("ttft_ms"))
        tokens = _finite(call.get("completion_tokens"))
        source = "usage" if tokens else None
        if not tokens:
            tokens, source = answer_length(call.get("response_text"), _finite(call.get("n_text_events")))
        session = open_ends.pop(_key(messages[:-1]), None)
        if session is None:
            session = Session(f"api:{call['flow_id']}", "api", [])
            sessions.append(session)
        tpot = (e2e - ttft) / (tokens - 1) if tokens and tokens > 1 and e2e is not None and ttft is not None else None
        text = call.get("response_text")
        session.turns.append(BenchTurn(
            session_id=session.session_id, turn_index=len(session.turns) + 1, user_text=messages[-1]["content"],
            messages=messages, prefix=[m for m in messages[: next(i for i, m in enumerate(messages) if m["role"] == "user")]],
            sent_at=sent, answer_end_at=None if sent is None or e2e is None else sent + e2e / 1000.0,
            answer_tokens=None if not tokens else int(round(tokens)), tokens_source=source, answer_text=text,
            model=call.get("model"),
            captured={"ttft_ms": ttft, "e2e_ms": e2e, "itl_p50_ms": itl_p50.get(call["flow_id"]), "tpot_ms": tpot},
            source_flow_id=call["flow_id"],
        ))
        if isinstance(text, str) and text:
            open_ends[_key([*messages, {"role": "assistant", "content": text}])] = session
    for session in sessions:
        fill_think_times(session.turns)
    return sessions


# ---------------------------------------------------------------- selection and cloning


def select_sessions(sessions: Sequence[Session], *, conversation: str | None = None, since: float | None = None,
                    until: float | None = None, sample: int | None = None, seed: int = 0) -> list[Session]:
    """Sessions matching ``conversation`` (an id or a unique prefix... any prefix here), whose turns fall
    in [since, until) (turns outside are dropped), then ``sample`` of them drawn with ``seed``."""
    out = []
    for s in sessions:
        if conversation and not s.session_id.startswith(conversation) and not s.session_id.startswith(f"api:{conversation}"):
            continue
        turns = [t for t in s.turns if (since is None or (t.sent_at is not None and t.sent_at >= since))
                 and (until is None or (t.sent_at is not None and t.sent_at < until))]
        if turns:
            out.append(s if len(turns) == len(s.turns) else replace(s, turns=turns))
    out.sort(key=lambda s: (s.start_at is None, s.start_at or 0.0, s.session_id))
    if sample is not None and sample < len(out):
        picked = set(random.Random(seed).sample(range(len(out)), sample))
        out = [s for i, s in enumerate(out) if i in picked]
    return out


def clone_sessions(sessions: Sequence[Session], copies: int, jitter_s: float, seed: int = 0) -> list[tuple[Session, float]]:
    """``copies`` of each session, each with a start shift: 0 for the original, uniform in [0, jitter_s]
    for the others (a copy's id gets ``#k``). Returns (session, shift_s) pairs."""
    rng = random.Random(seed)
    out: list[tuple[Session, float]] = []
    for s in sessions:
        out.append((s, 0.0))
        for k in range(1, copies):
            clone = copy.deepcopy(s)
            clone.session_id = f"{s.session_id}#{k}"
            for t in clone.turns:
                t.session_id = clone.session_id
            out.append((clone, rng.uniform(0.0, jitter_s) if jitter_s > 0 else 0.0))
    return out


# ---------------------------------------------------------------- reading a capture (I/O)


def load_workload(capture) -> list[Session]:
    """Every session of ``capture``: its web conversations and its API calls."""
    import pandas as pd

    from analyzer.analysis.conversations import build_conversation, list_conversations
    from analyzer.analysis.latency import itl_gaps, text_events, turn_latency
    from analyzer.replay.replay import plan_turns, web_sides

    sessions: list[Session] = []
    events = text_events(capture)
    lat = turn_latency(capture, events)
    times = {
        row["flow_id"]: {"started_at": row["started_at"].timestamp() if pd.notna(row["started_at"]) else None,
                         "token_source": row["token_source"]}
        for row in lat[["flow_id", "started_at", "token_source"]].to_dict("records")
    }
    frames = {"latency": lat, "gaps": itl_gaps(capture, events)}
    listing = list_conversations(capture)
    for conversation_id in listing["conversation_id"] if len(listing) else []:
        conv = build_conversation(capture, conversation_id)
        plans = plan_turns(conv, web_sides(capture, conv, frames=frames))
        if plans:
            sessions.append(web_session(conv.conversation_id, plans, times))
    calls = capture.table("api_calls")
    if len(calls):
        calls = calls.drop_duplicates("flow_id")
        gaps = itl_gaps(capture, events, api=True)
        itl = gaps.groupby("flow_id", observed=True)["itl_ms"].median().to_dict() if len(gaps) else {}
        rows = calls.to_dict("records")
        for row in rows:
            ts = row.get("started_at")
            row["started_at"] = ts.timestamp() if ts is not None and pd.notna(ts) else None
        sessions.extend(api_sessions(rows, itl))
    return sessions
