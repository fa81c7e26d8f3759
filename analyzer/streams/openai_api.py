"""OpenAI-compatible API streams: ``chat.completion.chunk`` lines and Responses API events."""

from __future__ import annotations

from dataclasses import dataclass, field

from analyzer.streams.conversation import EventInfo, event_json


@dataclass
class ApiStream:
    """State of one streamed API answer (``/v1/chat/completions`` or ``/v1/responses``)."""

    endpoint: str  # "chat.completions" or "responses"
    text: list[str] = field(default_factory=list)
    response_id: str | None = None
    model: str | None = None
    system_fingerprint: str | None = None
    finish_reason: str | None = None
    usage: dict | None = None
    done: bool = False
    errors: list[str] = field(default_factory=list)

    def feed(self, data: str, event: str | None = None) -> EventInfo:
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
        response = obj.get("response") if isinstance(obj.get("response"), dict) else None
        if response:
            self.response_id = response.get("id") or self.response_id
            self.model = response.get("model") or self.model
            if response.get("usage"):
                self.usage = response["usage"]
            if response.get("status") and kind != "response.created":
                self.finish_reason = response.get("status")
            incomplete = response.get("incomplete_details") or {}
            if incomplete.get("reason"):
                self.finish_reason = incomplete["reason"]
        text = None
        if kind == "response.output_text.delta" and isinstance(obj.get("delta"), str) and obj["delta"]:
            text = obj["delta"]
            self.text.append(text)
        if kind in ("response.completed", "response.failed", "response.incomplete", "error"):
            self.done = True
        if kind in ("response.failed", "error"):
            self.errors.append(f"stream error: {obj.get('error') or (response or {}).get('error')}")
        return EventInfo(kind, text=text)

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
