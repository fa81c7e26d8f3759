"""What ``analyze serve`` can serve, read from a capture, and how a request finds its recording.

``load_catalog`` reads the capture's tables once into plain objects (web turns, API calls, models);
``Matcher`` picks the recording for a request. Matching is pure logic: no I/O, no clock.

Timing. A captured event is served at its ``offset_ms`` (milliseconds after the request started,
as the extractor records it; computed from ``at`` and the flow's ``started_at`` when only ``at`` is
there). Events without any time (a HAR has no per-event timing) are spread evenly between the
flow's time to first byte and its total duration, and the turn is marked ``timing="spread"``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd

from analyzer.analysis.handoff import handoff_pairs
from analyzer.replay.sse_writer import Answer, ServedEvent, TextPiece
from analyzer.store import Capture

log = logging.getLogger(__name__)

# The conversation POST paths of every era (see docs: traffic formats, section 1).
CONVERSATION_PATHS = (
    "/backend-api/conversation",
    "/backend-anon/conversation",
    "/backend-api/f/conversation",
    "/backend-anon/f/conversation",
    "/backend-api/f/conversation/resume",
)

# Response headers never passed on: hop-by-hop, framing and encoding (the served body is decoded
# text with its own framing), the server's own, and cookies (a replay must not set them).
_DROP_HEADERS = frozenset(
    {
        "connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
        "date", "server", "set-cookie", "alt-svc", "upgrade", "trailer", "te", "proxy-connection",
        "access-control-allow-origin", "access-control-allow-credentials",
    }
)


@dataclass
class Recording:
    """One captured response, ready to be served."""

    flow_id: str
    order: int
    status_code: int
    headers: dict[str, str]
    headers_ms: float | None  # when the response headers went out (the captured ttfb)
    end_ms: float | None  # the captured total duration
    events: list[ServedEvent]
    timing: str  # "captured", "spread" (HAR: no per-event times) or "none" (no times at all)
    source: str | None = None


@dataclass
class WebTurn(Recording):
    path: str = ""
    conversation_id: str | None = None
    parent_message_id: str | None = None
    user_text: str | None = None
    stream_format: str | None = None
    model_slug: str | None = None
    user_message_id: str | None = None
    started_at: float | None = None
    note: str | None = None  # said in ``x-chatwire-note``


@dataclass
class ApiCall(Recording):
    endpoint: str = "/v1/chat/completions"
    stream: bool = True
    last_user_text: str | None = None
    model: str | None = None
    answer: Answer = field(default_factory=lambda: Answer("", "", 0, (), 0.0))


@dataclass
class Catalog:
    """Everything ``serve`` answers from."""

    web_turns: list[WebTurn]
    api_calls: list[ApiCall]
    models: list[str]
    capture: Capture | None = None


def normalise_text(text: str | None) -> str:
    """User text compared loosely: surrounding and repeated whitespace do not count."""
    return re.sub(r"\s+", " ", text or "").strip()


# ---------------------------------------------------------------- loading


def _val(value: object) -> object:
    """A DataFrame cell as a plain Python value, None for every kind of missing."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def _epoch(value: object) -> float | None:
    value = _val(value)
    if value is None:
        return None
    if isinstance(value, pd.Timestamp):
        return value.timestamp()
    return float(value)


def parse_headers(raw: str | None) -> dict[str, str]:
    """The captured header JSON (an object, or a list of ``[name, value]`` pairs) as a dict."""
    if not raw:
        return {}
    try:
        obj = json.loads(raw)
    except ValueError:
        return {}
    pairs: list = []
    if isinstance(obj, dict):
        pairs = list(obj.items())
    elif isinstance(obj, list):
        pairs = [tuple(p) for p in obj if isinstance(p, (list, tuple)) and len(p) == 2]
    out: dict[str, str] = {}
    for name, value in pairs:
        if isinstance(value, list):  # several values of one header
            value = ", ".join(str(v) for v in value)
        out[str(name).lower()] = str(value)
    return out


def served_headers(flow: dict) -> dict[str, str]:
    """The response headers to send again: the captured ones minus framing, plus content-type and cf-ray."""
    headers = {k: v for k, v in parse_headers(flow.get("response_headers")).items() if k not in _DROP_HEADERS}
    if flow.get("content_type"):
        headers["content-type"] = str(flow["content_type"])
    if flow.get("cf_ray"):
        headers["cf-ray"] = str(flow["cf_ray"])
    return headers


def spread_offsets(n: int, start_ms: float | None, end_ms: float | None) -> list[float]:
    """``n`` evenly spaced times from ``start_ms`` to ``end_ms`` (both included)."""
    start = start_ms if start_ms is not None else 0.0
    end = end_ms if end_ms is not None else start
    end = max(end, start)
    if n <= 1:
        return [start] * n
    step = (end - start) / (n - 1)
    return [start + i * step for i in range(n)]


def _events_for(rows: pd.DataFrame | None, flow: dict) -> tuple[list[ServedEvent], list[TextPiece], str]:
    """A flow's events in order, their times, its text pieces, and how the times were obtained."""
    if rows is None or rows.empty:
        return [], [], "captured"
    started = _epoch(flow.get("started_at"))
    offsets: list[float | None] = []
    for offset, at in zip(rows["offset_ms"], rows["at"], strict=True):
        offset = _val(offset)
        if offset is None and started is not None and _epoch(at) is not None:
            offset = (_epoch(at) - started) * 1000.0
        offsets.append(None if offset is None else float(offset))
    timing = "captured"
    if any(o is None for o in offsets):
        ttfb, total = _val(flow.get("ttfb_ms")), _val(flow.get("duration_ms"))
        timing = "spread" if ttfb is not None or total is not None else "none"
        offsets = spread_offsets(len(offsets), ttfb, total)
    events, pieces = [], []
    for offset, event, data, text, kind in zip(
        offsets, rows["event"], rows["data"], rows["text"], rows["type"], strict=True
    ):
        data = _val(data)
        if data is None:
            # A [DONE] row may come without its data; any other event without data is sent empty.
            data = "[DONE]" if kind == "done" else ""
        events.append(ServedEvent(offset, _val(event), str(data), _val(kind)))
        if _val(text):
            pieces.append(TextPiece(offset, str(text)))
    return events, pieces, timing


def _flow_dicts(capture: Capture) -> dict[str, dict]:
    flows = capture.table("flows")
    return {str(r["flow_id"]): {k: _val(v) for k, v in r.items()} for r in flows.to_dict("records")}


def _event_groups(capture: Capture) -> dict[str, pd.DataFrame]:
    events = capture.table("stream_events")
    if events.empty:
        return {}
    events = events.sort_values(["flow_id", "seq"], kind="stable")
    return {str(k): g for k, g in events.groupby("flow_id", sort=False)}


def _capture_order(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    return frame.sort_values(["started_at", "flow_id"], kind="stable", na_position="last").reset_index(drop=True)


def load_catalog(capture: Capture) -> Catalog:
    """Read the web turns, API calls and models of a capture, in capture order."""
    flows = _flow_dicts(capture)
    groups = _event_groups(capture)

    web: list[WebTurn] = []
    turns_table = _capture_order(capture.table("conversation_turns"))
    for order, row in enumerate(turns_table.to_dict("records")):
        row = {k: _val(v) for k, v in row.items()}
        flow = flows.get(str(row["flow_id"]), {})
        events, _, timing = _events_for(groups.get(str(row["flow_id"])), {**flow, "started_at": flow.get("started_at") or row.get("started_at")})
        web.append(
            WebTurn(
                flow_id=str(row["flow_id"]), order=order,
                status_code=int(flow.get("status_code") or 200),
                headers=served_headers({**flow, "cf_ray": flow.get("cf_ray") or row.get("cf_ray")}),
                headers_ms=flow.get("ttfb_ms"),
                end_ms=flow.get("duration_ms") if flow.get("duration_ms") is not None else row.get("e2e_ms"),
                events=events, timing=timing, source=flow.get("source"),
                path=str(row.get("path") or flow.get("path") or ""),
                conversation_id=row.get("conversation_id"), parent_message_id=row.get("parent_message_id"),
                user_text=row.get("user_text"), stream_format=row.get("stream_format"),
                model_slug=row.get("model_slug") or row.get("requested_model"),
                user_message_id=row.get("user_message_id"), started_at=_epoch(row.get("started_at")),
            )
        )
    pairs = handoff_pairs(turns_table)
    web = merge_handoffs(web, dict(zip(pairs["flow_id_post"].astype(str), pairs["flow_id"].astype(str), strict=True)))

    api: list[ApiCall] = []
    for order, row in enumerate(_capture_order(capture.table("api_calls")).to_dict("records")):
        row = {k: _val(v) for k, v in row.items()}
        flow = flows.get(str(row["flow_id"]), {})
        events, pieces, timing = _events_for(groups.get(str(row["flow_id"])), {**flow, "started_at": flow.get("started_at") or row.get("started_at")})
        end_ms = row.get("e2e_ms") if row.get("e2e_ms") is not None else flow.get("duration_ms")
        if end_ms is None:
            end_ms = max((e.offset_ms for e in events), default=0.0)
        if not pieces and row.get("response_text"):
            # Not streamed (or no events kept): the whole text arrived with the body, at the end.
            pieces = [TextPiece(float(end_ms), str(row["response_text"]))]
        started = _epoch(row.get("started_at")) or _epoch(flow.get("started_at")) or 0.0
        answer = Answer(
            id=str(row.get("response_id") or f"chatcmpl-{row['flow_id']}"),
            model=str(row.get("model") or "unknown"),
            created=int(started),
            pieces=tuple(pieces),
            end_ms=float(end_ms),
            finish_reason=row.get("finish_reason"),
            prompt_tokens=_int(row.get("prompt_tokens")),
            completion_tokens=_int(row.get("completion_tokens")),
            total_tokens=_int(row.get("total_tokens")),
            system_fingerprint=row.get("system_fingerprint"),
        )
        api.append(
            ApiCall(
                flow_id=str(row["flow_id"]), order=order,
                status_code=int(row.get("status_code") or flow.get("status_code") or 200),
                headers=served_headers(flow), headers_ms=flow.get("ttfb_ms"),
                end_ms=float(end_ms), events=events, timing=timing, source=flow.get("source"),
                endpoint=canonical_endpoint(row.get("endpoint")),
                stream=bool(row.get("stream")), last_user_text=row.get("last_user_text"),
                model=row.get("model"), answer=answer,
            )
        )

    models = sorted({c.model for c in api if c.model} | {t.model_slug for t in web if t.model_slug})
    return Catalog(web_turns=web, api_calls=api, models=models, capture=capture)


def merge_handoffs(turns: list[WebTurn], answer_of: dict[str, str]) -> list[WebTurn]:
    """Join each conversation POST that handed its answer to a WebSocket with that answer.

    ``answer_of`` maps a POST's flow id to its socket answer's turn id (``<ws flow>#<n>``), as
    ``analyzer.analysis.handoff.handoff_pairs`` pairs them. Served, the POST's own events (minus
    ``stream_handoff``, which would send the client to a socket this server does not have, and its
    ``[DONE]``, which would end the stream before the answer) are followed by the socket's events,
    at their captured times counted from the POST. An answer without its POST stays a turn of its own.
    """
    by_id = {t.flow_id: t for t in turns}
    used: set[str] = set()
    for turn in turns:
        answer = by_id.get(answer_of.get(turn.flow_id, ""))
        if answer is None:
            continue
        used.add(answer.flow_id)
        shift = 0.0
        if answer.started_at is not None and turn.started_at is not None:
            shift = (answer.started_at - turn.started_at) * 1000.0
        own = [e for e in turn.events if e.kind not in ("stream_handoff", "done")]
        moved = [ServedEvent(e.offset_ms + shift, e.event, e.data, e.kind) for e in answer.events]
        turn.events = own + moved
        turn.timing = answer.timing if answer.timing != "captured" else turn.timing
        turn.end_ms = max((e.offset_ms for e in turn.events), default=turn.end_ms)
        turn.status_code = 200 if turn.status_code < 400 else turn.status_code
        turn.note = f"answer read from WebSocket {answer.flow_id}; served as SSE"
    kept = sorted((t for t in turns if t.flow_id not in used), key=lambda t: t.order)
    for order, t in enumerate(kept):
        t.order = order
    return kept


def canonical_endpoint(path: object) -> str:
    """``/v1/responses`` or ``/v1/chat/completions`` for a captured API path (Azure, vLLM… prefixes vary).

    Ollama's native ``/api/chat`` and ``/api/generate`` keep their own name: their NDJSON lines are
    no OpenAI events, so a replay builds the stream from their text, usage and times instead."""
    path = str(path or "").rstrip("/")
    if path.endswith(("/api/chat", "/api/generate")):
        return "/api/" + path.rsplit("/", 1)[1]
    return "/v1/responses" if path.endswith("/responses") else "/v1/chat/completions"


def _int(value: object) -> int | None:
    return None if value is None else int(value)


# ---------------------------------------------------------------- request fields


def _parts_text(parts: object) -> str | None:
    if isinstance(parts, str):
        return parts
    if isinstance(parts, list):
        texts = [p if isinstance(p, str) else p.get("text") for p in parts if isinstance(p, (str, dict))]
        texts = [t for t in texts if isinstance(t, str)]
        return "\n".join(texts) if texts else None
    return None


def web_request_fields(body: dict) -> tuple[str | None, str | None, str | None]:
    """``(conversation_id, parent_message_id, user_text)`` of a conversation POST body."""
    user_text = None
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if not isinstance(message, dict):
                continue
            role = (message.get("author") or {}).get("role") if isinstance(message.get("author"), dict) else None
            if role in (None, "user"):
                content = message.get("content") or {}
                user_text = _parts_text(content.get("parts") if isinstance(content, dict) else content)
                break
    return body.get("conversation_id"), body.get("parent_message_id"), user_text


def api_last_user_text(body: dict) -> str | None:
    """The last user message of a chat.completions (``messages``) or Responses (``input``) request."""
    if isinstance(body.get("messages"), list):
        items = body["messages"]
    elif isinstance(body.get("input"), str):
        return body["input"]
    elif isinstance(body.get("input"), list):
        items = body["input"]
    else:
        return None
    for item in reversed(items):
        if isinstance(item, dict) and item.get("role", "user") == "user":
            return _parts_text(item.get("content"))
    return None


# ---------------------------------------------------------------- matching

class Matcher[T: Recording]:
    """Picks recordings for requests and remembers which ones have been served.

    Each rule is tried in turn; among the recordings a rule matches, an unserved one is preferred
    (a regenerated answer shares its parent with the first one: they come out in capture order).
    The last resort is the next unserved recording in capture order; with ``loop`` the served set is
    cleared when everything has been served.
    """

    def __init__(self, items: Sequence[T], *, loop: bool = False, what: str = "recording") -> None:
        self.items = list(items)
        self.loop = loop
        self.what = what
        self.served: set[int] = set()

    def _take(self, index: int) -> T:
        self.served.add(index)
        return self.items[index]

    def match(
        self,
        rules: Sequence[tuple[str, Callable[[T], bool]]],
        prefer: Callable[[T], int] | None = None,
    ) -> tuple[T | None, str]:
        """The recording to serve and why (``"by <rule>"``, ``"next in capture order"``), or
        ``(None, reason)``. ``prefer`` scores a recording (higher first: same path, same endpoint…)."""
        def ranked(indices: list[int]) -> list[int]:
            # Unserved before served; within each, the highest preference; then capture order.
            return sorted(indices, key=lambda i: (i in self.served, -(prefer(self.items[i]) if prefer else 0), i))

        for name, rule in rules:
            hits = [i for i, item in enumerate(self.items) if rule(item)]
            if hits:
                return self._take(ranked(hits)[0]), f"by {name}"
        unserved = [i for i in range(len(self.items)) if i not in self.served]
        if not unserved and self.loop and self.items:
            self.served.clear()
            unserved = list(range(len(self.items)))
            return self._take(ranked(unserved)[0]), "next in capture order (loop: starting over)"
        if unserved:
            return self._take(ranked(unserved)[0]), "next in capture order"
        tried = " nor ".join(name for name, _ in rules) or "nothing"
        if not self.items:
            return None, f"the capture has no {self.what}s to serve"
        return None, (
            f"no captured {self.what} matches by {tried}, and all {len(self.items)} have been served "
            f"(start the server with --loop to serve them again)"
        )


def web_rules(conversation_id: str | None, parent_id: str | None, user_text: str | None):
    """The web matching rules, in order: both ids, then the user text."""
    text = normalise_text(user_text)
    return [
        (
            "conversation_id + parent_message_id",
            lambda t: bool(conversation_id and parent_id)
            and t.conversation_id == conversation_id
            and t.parent_message_id == parent_id,
        ),
        ("user text", lambda t: bool(text) and normalise_text(t.user_text) == text),
    ]


def api_rules(last_user_text: str | None):
    """The API matching rule: the last user message."""
    text = normalise_text(last_user_text)
    return [("last user message", lambda c: bool(text) and normalise_text(c.last_user_text) == text)]
