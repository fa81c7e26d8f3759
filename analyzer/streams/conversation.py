"""Interpreting a ChatGPT conversation stream, legacy snapshots and v1 deltas alike.

``ConversationStream`` consumes the events of one answer (SSE events, or WebSocket stream items
turned into SSE events) and keeps every message it has seen in its latest state. For each event
it reports the event's type, the message it touched and the *visible assistant text it added*,
which is what TTFT and inter-token latency are measured on.

A resumed stream (``POST …/f/conversation/resume``, guide 6c) is the same stream from event N on:
its first deltas continue a message this flow never saw. ``ConversationStream(resumed=True)``
applies them to a *continuation* — a provisional visible assistant message without an id, the
carried-over ``p``/``o`` assumed to be an append to its text — so the text it adds is counted and
kept; analysis joins it to the turn that broke (``analyzer.analysis.resume``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from analyzer.json_codec import parse_json
from analyzer.streams.delta_v1 import DeltaError, apply_delta

VISIBLE_CONTENT_TYPES = frozenset({"text", "multimodal_text"})
_PART_PREFIX = "/message/content/parts/"


def message_text(message: dict | None) -> str:
    """The text of a message: its string parts joined (non-string parts, e.g. images, skipped)."""
    if not isinstance(message, dict):
        return ""
    content = message.get("content") or {}
    parts = content.get("parts")
    if isinstance(parts, list):
        return "".join(p for p in parts if isinstance(p, str))
    for key in ("text", "result"):  # code / execution_output / reasoning_recap shapes
        if isinstance(content.get(key), str):
            return content[key]
    thoughts = content.get("thoughts")
    if isinstance(thoughts, list):
        return "\n\n".join(t.get("content", "") for t in thoughts if isinstance(t, dict))
    return ""


def is_visible_answer(message: dict | None) -> bool:
    """An assistant message the user reads: plain text to everyone, not hidden, not thoughts."""
    if not isinstance(message, dict):
        return False
    author = message.get("author") or {}
    content = message.get("content") or {}
    metadata = message.get("metadata") or {}
    return (
        author.get("role") == "assistant"
        and content.get("content_type") in VISIBLE_CONTENT_TYPES
        and message.get("recipient") in (None, "all")
        and message.get("channel") in (None, "final")
        and not metadata.get("is_visually_hidden_from_conversation")
    )


@dataclass(slots=True)
class EventInfo:
    """What one event meant: its type, the message it touched, the visible text it added."""

    type: str
    message_id: str | None = None
    text: str | None = None
    error: str | None = None


def event_json(data: str, errors: list[str]) -> Any:
    """The JSON value of one event's data, or the ``EventInfo`` that ends its interpretation:
    ``done`` for ``[DONE]``, ``invalid_json`` (its message added to ``errors``) for anything else
    that is not JSON. Shared by the ChatGPT and the OpenAI-API stream interpreters."""
    if data == "[DONE]":
        return EventInfo("done")
    try:
        return parse_json(data)
    except ValueError as exc:
        message = f"event is not JSON: {exc}"
        errors.append(message)
        return EventInfo("invalid_json", error=message)


# Typed v1 events of 2026 (guide 6d) whose content is kept in stream_events but needs no state
# here beyond what ``_typed`` records: content_references_patch, writing_blocks_metadata_patch,
# toast, beacon events, perf_stats (rows of their own via ``perf_events``).
PERF_STATS = "perf_stats"


@dataclass
class ConversationStream:
    """State of one conversation answer stream (``resumed``: a resume flow, see the module docstring)."""

    resumed: bool = False
    format: str | None = None  # "legacy" or "v1", decided by the first event that tells
    conversation_id: str | None = None
    messages: dict[str, dict] = field(default_factory=dict)  # id -> latest message, in order seen
    title: str | None = None
    server_model_slug: str | None = None
    server_metadata: dict | None = None
    handoff: dict | None = None
    done: bool = False
    completed: bool = False  # message_stream_complete seen
    errors: list[str] = field(default_factory=list)
    stream_error: str | None = None  # an error the server reported in the stream
    resume_token_kind: str | None = None  # resume_conversation_token.kind ("conduit", "topic", …)
    async_status: Any = None  # the last conversation_async_status value
    safety_review: dict | None = None  # the last safety_review_update (active, protection_type, …)
    main_completed: bool = False  # main_stream_complete seen
    reparented: dict[str, str] = field(default_factory=dict)  # streaming_parent_patch: id -> new parent
    perf_events: list[dict] = field(default_factory=list)  # perf_stats events, as sent
    continued: dict | None = None  # resumed: the message continued without being named
    _envelope: dict | None = None
    _last_p: str = ""
    _last_o: str = "add"
    _last_c: Any = None  # carried over like p and o (guide 6d); kept for completeness
    _visible: bool | None = None  # is the current message a visible answer (cached)
    _prev_text: dict[str, str] = field(default_factory=dict)
    # While the last delta appended a string to a text part: (parts list, index, message id), so
    # the bare {"v": "..."} that follow (most of every answer) skip path resolution entirely.
    _append_to: tuple[list, int, str | None] | None = None

    # -- feeding ----------------------------------------------------------------------------
    def feed(self, data: str, event: str | None = None) -> EventInfo:
        """Interpret one event (its ``data`` and SSE ``event`` name)."""
        obj = event_json(data, self.errors)
        if isinstance(obj, EventInfo):
            self.done = self.done or obj.type == "done"
            return obj
        if event == "delta_encoding":
            self.format = "v1"
            return EventInfo("delta_encoding")
        if not isinstance(obj, dict):
            return EventInfo(event or type(obj).__name__)
        if event == "delta" or (not isinstance(obj.get("type"), str) and ("v" in obj or "o" in obj)):
            return self._delta(obj)
        if "message" in obj and isinstance(obj.get("message"), dict) and "type" not in obj:
            return self._snapshot(obj)
        return self._typed(obj, event)

    def _error(self, kind: str, message: str) -> EventInfo:
        self.errors.append(message)
        return EventInfo(kind, error=message)

    # -- legacy: every event repeats the whole message ------------------------------------------
    def _snapshot(self, obj: dict) -> EventInfo:
        if self.format is None:
            self.format = "legacy"
        message = obj["message"]
        self.conversation_id = obj.get("conversation_id") or self.conversation_id
        if obj.get("error"):
            self.stream_error = str(obj["error"])
        message_id = message.get("id")
        if message_id is None:
            return EventInfo("message")
        self.messages[message_id] = message
        text = None
        if is_visible_answer(message):
            new = message_text(message)
            old = self._prev_text.get(message_id, "")
            if new.startswith(old):
                text = new[len(old) :] or None
            else:  # a rewrite, not an extension: the whole new text is what the user now sees
                text = new or None
            self._prev_text[message_id] = new
        return EventInfo("message", message_id, text)

    # -- v1: deltas against the current message ----------------------------------------------
    def _delta(self, obj: dict) -> EventInfo:
        value = obj.get("v")
        if self._append_to is not None and type(value) is str and len(obj) == 1:
            parts, index, message_id = self._append_to
            parts[index] += value
            return EventInfo("delta", message_id, (value or None) if self._visible else None)
        self._append_to = None
        if self.format is None:
            self.format = "v1"
        # p, o and c carry over from the previous delta; v never does (guide 6d).
        has_p, has_o = "p" in obj, "o" in obj
        if "c" in obj:
            self._last_c = obj["c"]
        bare_message = not has_p and not has_o and isinstance(value, dict) and "message" in value
        if bare_message:
            path, op = "", "add"  # a bare {"v": {"message": …}} starts a new message
        else:
            path = obj["p"] if has_p else self._last_p
            op = obj["o"] if has_o else self._last_o
        if self._envelope is None and self.resumed and not bare_message \
                and not (has_p and has_o and path == "" and op == "add"):
            path, op = self._continue(path, op, has_p, has_o)
        self._last_p, self._last_o = path, op
        if path == "" and op == "add":
            return self._start_message(value)
        if self._envelope is None:
            return self._error("delta", f"delta {op} {path!r} before any message")
        message = self._envelope.get("message")
        if op == "append" and type(value) is str and path.startswith(_PART_PREFIX):
            # The bulk of every answer: a string appended to a text part. Done in place, without
            # the general patcher and without re-checking visibility (only other paths change it).
            parts = ((message or {}).get("content") or {}).get("parts")
            index = path[len(_PART_PREFIX):]
            if isinstance(parts, list) and index.isdigit() and int(index) < len(parts) \
                    and isinstance(parts[int(index)], str):
                parts[int(index)] += value
                self._append_to = (parts, int(index), message.get("id"))
                return EventInfo("delta", message.get("id"), (value or None) if self._visible else None)
        before_visible = self._visible if self._visible is not None else is_visible_answer(message)
        text = self._appended_text(path, op, value) if before_visible else None
        try:
            self._envelope = apply_delta(self._envelope, path, op, value)
        except DeltaError as exc:
            return self._error("delta", f"cannot apply delta {op} {path!r}: {exc}")
        message = self._envelope.get("message") if isinstance(self._envelope, dict) else None
        message_id = message.get("id") if isinstance(message, dict) else None
        self._visible = is_visible_answer(message)
        if message_id:
            self._reparent(message_id, message)
            self.messages[message_id] = message
            if not before_visible and self._visible:
                text = message_text(message) or None  # became visible by this delta
        return EventInfo("delta", message_id, text)

    def _continue(self, path: str, op: str, has_p: bool, has_o: bool) -> tuple[str, str]:
        """A resumed flow's first delta continues a message it never saw: a provisional visible
        answer without an id. With nothing to carry over, the delta is taken as an append to its
        text (the bulk of every answer), which is the inference docs/schema.md states."""
        self.continued = {"id": None, "author": {"role": "assistant"}, "recipient": "all",
                          "content": {"content_type": "text", "parts": [""]}, "status": "in_progress",
                          "metadata": {}}
        self._envelope = {"message": self.continued, "conversation_id": self.conversation_id}
        self._visible = True
        if self.format is None:
            self.format = "v1"
        return (path if has_p else _PART_PREFIX + "0"), (op if has_o else "append")

    def _appended_text(self, path: str, op: str, value: Any) -> str | None:
        if op == "append" and path.startswith(_PART_PREFIX) and isinstance(value, str):
            return value or None
        if op == "patch" and isinstance(value, list):
            pieces = [
                sub.get("v")
                for sub in value
                if isinstance(sub, dict)
                and sub.get("o") == "append"
                and str(sub.get("p", "")).startswith(_PART_PREFIX)
                and isinstance(sub.get("v"), str)
            ]
            return "".join(pieces) or None
        return None

    def _start_message(self, value: Any) -> EventInfo:
        if not isinstance(value, dict) or not isinstance(value.get("message"), dict):
            return self._error("delta", "add at the root without a message")
        self._envelope = value
        self.conversation_id = value.get("conversation_id") or self.conversation_id
        if value.get("error"):
            self.stream_error = str(value["error"])
        message = value["message"]
        message_id = message.get("id")
        if message_id:
            self._reparent(message_id, message)
            self.messages[message_id] = message
        self._visible = is_visible_answer(message)
        text = message_text(message) or None if self._visible else None
        return EventInfo("delta", message_id, text)

    # -- typed events: markers, titles, metadata ---------------------------------------------
    def _typed(self, obj: dict, event: str | None) -> EventInfo:
        kind = obj.get("type") if isinstance(obj.get("type"), str) else (event or "unknown")
        self.conversation_id = obj.get("conversation_id") or self.conversation_id
        message_id = obj.get("message_id")
        if kind == "title_generation":
            self.title = obj.get("title") or self.title
        elif kind == "server_ste_metadata":
            metadata = obj.get("metadata") or {}
            self.server_metadata = metadata
            self.server_model_slug = metadata.get("model_slug") or self.server_model_slug
        elif kind == "message_stream_complete":
            self.completed = True
        elif kind == "main_stream_complete":
            self.main_completed = True
        elif kind == "resume_conversation_token":
            self.resume_token_kind = obj.get("kind") if isinstance(obj.get("kind"), str) else self.resume_token_kind
        elif kind == "conversation_async_status":
            self.async_status = obj.get("async_status", obj.get("status"))
        elif kind == "safety_review_update":
            self.safety_review = {k: obj.get(k) for k in ("active", "protection_type", "message")}
        elif kind == "streaming_parent_patch":
            self._parent_patch(obj)
        elif kind == PERF_STATS:
            self.perf_events.append(obj)
        elif kind == "stream_handoff":
            self.handoff = obj
        elif kind == "input_message":
            message = obj.get("input_message")
            if isinstance(message, dict) and message.get("id"):
                self.messages.setdefault(message["id"], message)
                message_id = message["id"]
        elif kind == "error" or obj.get("error"):
            self.stream_error = str(obj.get("error") or obj.get("message") or obj)
        return EventInfo(kind, message_id)

    def _parent_patch(self, obj: dict) -> None:
        """``streaming_parent_patch``: the listed messages now hang under ``streaming_parent_id``."""
        for update in obj.get("updates") or []:
            if not isinstance(update, dict):
                continue
            message_id, parent = update.get("message_id"), update.get("streaming_parent_id")
            if isinstance(message_id, str) and isinstance(parent, str):
                self.reparented[message_id] = parent
                if message_id in self.messages:
                    self._reparent(message_id, self.messages[message_id])

    def _reparent(self, message_id: str, message: dict) -> None:
        parent = self.reparented.get(message_id)
        if parent is not None:
            metadata = message.get("metadata")
            if not isinstance(metadata, dict):
                metadata = message["metadata"] = {}
            metadata["parent_id"] = parent

    # -- results ----------------------------------------------------------------------------
    def answer(self) -> dict | None:
        """The answer of this turn: the last visible assistant message, else the last assistant one."""
        visible = [m for m in self.messages.values() if is_visible_answer(m)]
        if visible:
            return visible[-1]
        if self.continued is not None:
            return self.continued
        assistants = [m for m in self.messages.values() if (m.get("author") or {}).get("role") == "assistant"]
        return assistants[-1] if assistants else None
