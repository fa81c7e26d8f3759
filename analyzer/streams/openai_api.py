"""OpenAI-compatible API streams: ``chat.completion.chunk`` lines and Responses API events."""

from __future__ import annotations

from dataclasses import dataclass, field

from analyzer.streams.conversation import EventInfo, event_json

# Reasoning deltas of the Responses API (Codex streams both): never part of the visible text.
REASONING_DELTAS = frozenset({"response.reasoning_summary_text.delta", "response.reasoning_text.delta"})
# Events that end an answer; ``error`` is also the Codex backend's wrapped error (guide 6a).
_TERMINAL = frozenset({"response.completed", "response.failed", "response.incomplete", "error"})


@dataclass
class ApiStream:
    """State of one streamed API answer (``/v1/chat/completions`` or ``/v1/responses``).

    For the Responses API (and the Codex backend, which speaks it) the visible text comes from
    ``response.output_text.delta``; an output item whose text never came as deltas is taken from
    its ``…done`` event (and, when no text came at all, from ``response.completed.output``), so
    nothing is counted twice. Reasoning deltas go to ``reasoning``, apart from the visible text.
    """

    endpoint: str  # "chat.completions" or "responses"
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    response_id: str | None = None
    model: str | None = None
    system_fingerprint: str | None = None
    finish_reason: str | None = None
    usage: dict | None = None
    done: bool = False
    errors: list[str] = field(default_factory=list)  # what could not be parsed
    # A failed answer (response.failed, an error event): what the call's ``error`` column says.
    error: str | None = None
    error_code: str | None = None
    error_status_code: int | None = None
    # Seq numbers (0-based, in feed order) of the events that added reasoning text.
    reasoning_seqs: list[int] = field(default_factory=list)
    # (seq, event object) of every ``codex.rate_limits`` event and every error event with headers.
    rate_limit_events: list[tuple[int, dict]] = field(default_factory=list)
    # Codex-only metadata kept for the call's ``extra`` column (etag, websocket timing, compaction).
    extra: dict = field(default_factory=dict)
    _seq: int = -1
    _text_items: set = field(default_factory=set)  # output items whose visible text has been seen
    _reasoning_items: set = field(default_factory=set)
    _reasoning_part: tuple | None = None

    def feed(self, data: str, event: str | None = None) -> EventInfo:
        self._seq += 1
        obj = event_json(data, self.errors)
        if isinstance(obj, EventInfo):
            self.done = self.done or obj.type == "done"
            return obj
        if not isinstance(obj, dict):
            return EventInfo(event or "unknown")
        if self.endpoint == "responses":
            return self._responses_event(obj, event)
        return self._chat_chunk(obj)

    def _chat_chunk(self, obj: dict) -> EventInfo:
        if obj.get("error"):
            self.errors.append(f"stream error: {obj['error']}")
            return EventInfo("error", error=str(obj["error"]))
        self.response_id = obj.get("id") or self.response_id
        self.model = obj.get("model") or self.model
        self.system_fingerprint = obj.get("system_fingerprint") or self.system_fingerprint
        if obj.get("usage"):
            self.usage = obj["usage"]
        text = None
        for choice in obj.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                text = content
                self.text.append(content)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        kind = obj.get("object") or "chat.completion.chunk"
        if not obj.get("choices") and obj.get("usage"):
            kind = "usage"
        return EventInfo(kind, text=text)

    def _responses_event(self, obj: dict, event: str | None) -> EventInfo:
        kind = obj.get("type") or event or "unknown"
        if not isinstance(kind, str):
            kind = str(kind)
        response = obj.get("response") if isinstance(obj.get("response"), dict) else None
        if response:
            self.response_id = response.get("id") or self.response_id
            self.model = response.get("model") or self.model
            if isinstance(response.get("usage"), dict):
                self.usage = response["usage"]
            if response.get("status") and kind != "response.created":
                self.finish_reason = response.get("status")
            incomplete = response.get("incomplete_details") or {}
            if isinstance(incomplete, dict) and incomplete.get("reason"):
                self.finish_reason = incomplete["reason"]
        text = None
        if kind == "response.output_text.delta":
            text = self._visible(_item_key(obj), obj.get("delta"), delta=True)
        elif kind in ("response.output_text.done", "response.content_part.done"):
            part = obj.get("part") if kind == "response.content_part.done" else obj
            if isinstance(part, dict) and part.get("type", "output_text") == "output_text":
                text = self._visible(_item_key(obj), part.get("text"))
        elif kind == "response.output_item.done":
            item = obj.get("item") if isinstance(obj.get("item"), dict) else {}
            if item.get("type") == "message":
                text = self._visible(_item_key(item, obj), _message_text(item))
            elif item.get("type") == "reasoning":
                self._think(_item_key(item, obj), _reasoning_item_text(item), None)
        elif kind in REASONING_DELTAS:
            part = (kind, obj.get("summary_index", obj.get("content_index")))
            self._think(_item_key(obj), obj.get("delta"), part, delta=True)
        elif kind == "codex.rate_limits":
            self.rate_limit_events.append((self._seq, obj))
        elif kind == "codex.response.metadata":
            self.extra["response_metadata"] = {k: v for k, v in obj.items() if k not in ("type", "sequence_number")}
        elif kind == "responsesapi.websocket_timing":
            self.extra["websocket_timing"] = obj.get("timing")
        elif kind == "response.compaction.compacting":
            self.extra["compactions"] = self.extra.get("compactions", 0) + 1
        if kind == "response.completed" and response and not self.text:
            # ``output: []`` is common (the text came as deltas); a full output with no deltas is not.
            text = self._visible(None, _output_text(response.get("output"))) if response.get("output") else None
        if kind in _TERMINAL:
            self.done = True
        if kind == "response.failed":
            self._fail((response or {}).get("error") or obj.get("error"), None)
        elif kind == "error":
            self._fail(obj.get("error") if obj.get("error") is not None else obj,
                       obj.get("status_code", obj.get("status")))
            if isinstance(obj.get("headers"), dict):
                self.rate_limit_events.append((self._seq, obj))
        return EventInfo(kind, text=text)

    def _visible(self, key, value, *, delta: bool = False) -> str | None:
        """Visible text of an output item, taken once: deltas, else the item's final text."""
        if not isinstance(value, str) or not value:
            return None
        if not delta and (key in self._text_items or (key is None and self.text) or None in self._text_items):
            return None
        self._text_items.add(key)
        self.text.append(value)
        return value

    def _think(self, key, value, part, *, delta: bool = False) -> None:
        if not isinstance(value, str) or not value:
            return
        if not delta and (key in self._reasoning_items or None in self._reasoning_items):
            return
        if self.reasoning and part != self._reasoning_part:
            self.reasoning.append("\n\n")  # a new summary part starts a new paragraph
        self._reasoning_part = part
        self._reasoning_items.add(key)
        self.reasoning.append(value)
        self.reasoning_seqs.append(self._seq)

    def _fail(self, error, status) -> None:
        if isinstance(error, dict):
            code = error.get("code") or error.get("type")
            message = error.get("message")
        else:
            code, message = None, error
        self.error_code = str(code) if code is not None else self.error_code
        if isinstance(status, int) and not isinstance(status, bool):
            self.error_status_code = status
        self.error = ": ".join(str(p) for p in (code, message) if p) or "failed"
        self.finish_reason = "failed"

    def tokens(self) -> tuple[int | None, int | None, int | None]:
        """(prompt, completion, total) tokens from the usage object, whatever its dialect."""
        usage = self.usage or {}
        prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
        completion = usage.get("completion_tokens", usage.get("output_tokens"))
        total = usage.get("total_tokens")
        if total is None and prompt is not None and completion is not None:
            total = prompt + completion
        return prompt, completion, total


def api_endpoint(path: str) -> str:
    """``chat.completions`` or ``responses`` for an API path."""
    return "responses" if path.rstrip("/").endswith("/responses") else "chat.completions"


def _item_key(obj: dict, outer: dict | None = None):
    """Which output item an event belongs to: its id, else its output index."""
    if obj.get("item_id") or obj.get("id"):
        return obj.get("item_id") or obj.get("id")
    index = obj.get("output_index", (outer or {}).get("output_index"))
    return f"#{index}" if index is not None else None


def _message_text(item: dict) -> str:
    return "".join(p.get("text") or "" for p in item.get("content") or []
                   if isinstance(p, dict) and p.get("type") == "output_text" and isinstance(p.get("text"), str))


def _reasoning_item_text(item: dict) -> str:
    parts = [p.get("text") for p in (item.get("summary") or []) + (item.get("content") or [])
             if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return "\n\n".join(p for p in parts if p)


def _output_text(output) -> str:
    if not isinstance(output, list):
        return ""
    return "".join(_message_text(i) for i in output if isinstance(i, dict) and i.get("type") == "message")
