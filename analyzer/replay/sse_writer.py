"""Turning captured (or synthesised) events back into bytes, and synthesising the API shapes.

Pure functions, no I/O. An event to serve is a ``ServedEvent``: when to send it (milliseconds
after the request arrived, before ``--speed``), its SSE ``event:`` field and its ``data:`` payload.

Synthesis: a client may ask for a shape the capture does not hold (a non-streamed answer from a
streamed capture, a stream from a non-streamed one, ``/v1/responses`` from a chat.completions
capture, the usage chunk that was not requested at capture time). The other shape is built from
the call's captured text pieces, usage, finish reason, id and model, keeping the captured times:
each text piece goes out when it arrived, the closing events and a non-streamed body go out at the
captured end of the call (``e2e_ms``). A non-streamed capture has one text piece, at its end.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServedEvent:
    """One SSE event to send ``offset_ms`` after the request arrived (at ``--speed 1``)."""

    offset_ms: float
    event: str | None
    data: str
    kind: str | None = None  # the capture's ``type`` of the event, when it came from one


@dataclass(frozen=True, slots=True)
class TextPiece:
    """A piece of the answer's text and when it arrived (ms after the request)."""

    offset_ms: float
    text: str


@dataclass(frozen=True, slots=True)
class Answer:
    """What synthesis needs from a captured API call."""

    id: str
    model: str
    created: int
    pieces: tuple[TextPiece, ...]
    end_ms: float
    finish_reason: str | None = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    system_fingerprint: str | None = None

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.pieces)

    @property
    def first_ms(self) -> float:
        return self.pieces[0].offset_ms if self.pieces else self.end_ms


def encode_event(event: str | None, data: str) -> bytes:
    """One SSE event as bytes: multi-line data becomes several ``data:`` lines, as captured."""
    lines = []
    if event is not None:
        lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


def _dumps(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def usage_dict(answer: Answer) -> dict | None:
    """The chat.completions ``usage`` object, or None when the capture has no token counts."""
    if answer.prompt_tokens is None and answer.completion_tokens is None and answer.total_tokens is None:
        return None
    prompt = answer.prompt_tokens or 0
    completion = answer.completion_tokens or 0
    total = answer.total_tokens if answer.total_tokens is not None else prompt + completion
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


# ---------------------------------------------------------------- chat.completions


def chat_completion_body(answer: Answer) -> dict:
    """A non-streamed ``chat.completion`` object."""
    body = {
        "id": answer.id,
        "object": "chat.completion",
        "created": answer.created,
        "model": answer.model,
        "system_fingerprint": answer.system_fingerprint,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text, "refusal": None},
                "logprobs": None,
                "finish_reason": answer.finish_reason or "stop",
            }
        ],
    }
    usage = usage_dict(answer)
    if usage is not None:
        body["usage"] = usage
    return body


def _chunk(answer: Answer, delta: dict, finish_reason: str | None, choices: bool = True) -> dict:
    return {
        "id": answer.id,
        "object": "chat.completion.chunk",
        "created": answer.created,
        "model": answer.model,
        "system_fingerprint": answer.system_fingerprint,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
        if choices
        else [],
    }


def chat_chunk_events(answer: Answer, include_usage: bool) -> list[ServedEvent]:
    """A ``chat.completion.chunk`` stream: role chunk, one chunk per text piece, the finish chunk,
    the usage chunk (when asked for and known) and ``[DONE]``."""
    events = [ServedEvent(answer.first_ms, None, _dumps(_chunk(answer, {"role": "assistant", "content": ""}, None)))]
    for piece in answer.pieces:
        events.append(ServedEvent(piece.offset_ms, None, _dumps(_chunk(answer, {"content": piece.text}, None))))
    end = max(answer.end_ms, answer.first_ms)
    events.append(ServedEvent(end, None, _dumps(_chunk(answer, {}, answer.finish_reason or "stop"))))
    usage = usage_dict(answer)
    if include_usage and usage is not None:
        chunk = _chunk(answer, {}, None, choices=False)
        chunk["usage"] = usage
        events.append(ServedEvent(end, None, _dumps(chunk)))
    events.append(ServedEvent(end, None, "[DONE]"))
    return events


def is_usage_chunk(data: str) -> bool:
    """The final usage-only chunk (``choices: []`` and a ``usage`` object) of a chat stream."""
    if '"usage"' not in data:
        return False
    try:
        obj = json.loads(data)
    except ValueError:
        return False
    return isinstance(obj, dict) and not obj.get("choices") and isinstance(obj.get("usage"), dict)


def adapt_chat_stream(events: Iterable[ServedEvent], answer: Answer, include_usage: bool) -> list[ServedEvent]:
    """A captured chat stream as the request wants it: without the usage chunk when the request did
    not ask for one, with a synthesised one (just before ``[DONE]``) when it did and none was captured."""
    out = [e for e in events if include_usage or not is_usage_chunk(e.data)]
    if include_usage and not any(is_usage_chunk(e.data) for e in out):
        usage = usage_dict(answer)
        if usage is not None:
            chunk = _chunk(answer, {}, None, choices=False)
            chunk["usage"] = usage
            done = next((i for i, e in enumerate(out) if e.data == "[DONE]"), len(out))
            at = out[done - 1].offset_ms if done > 0 else answer.end_ms
            out.insert(done, ServedEvent(at, None, _dumps(chunk)))
    return out


# ---------------------------------------------------------------- Responses API


def _responses_usage(answer: Answer) -> dict | None:
    usage = usage_dict(answer)
    if usage is None:
        return None
    return {
        "input_tokens": usage["prompt_tokens"],
        "output_tokens": usage["completion_tokens"],
        "total_tokens": usage["total_tokens"],
    }


def _message_id(answer: Answer) -> str:
    return "msg_" + answer.id.removeprefix("resp_").removeprefix("chatcmpl-")


def response_body(answer: Answer, status: str = "completed") -> dict:
    """A ``response`` object (the non-streamed Responses API answer)."""
    done = status == "completed"
    return {
        "id": answer.id if answer.id.startswith("resp_") else "resp_" + answer.id,
        "object": "response",
        "created_at": answer.created,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "model": answer.model,
        "output": [
            {
                "id": _message_id(answer),
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": answer.text, "annotations": []}],
            }
        ]
        if done
        else [],
        "usage": _responses_usage(answer) if done else None,
    }


def responses_events(answer: Answer) -> list[ServedEvent]:
    """A Responses API stream: created, in_progress, the item and part, one delta per text piece,
    the done events and ``response.completed`` (no ``[DONE]``, as the API does)."""
    start = answer.first_ms
    end = max(answer.end_ms, start)
    item_id = _message_id(answer)
    seq = 0
    events: list[ServedEvent] = []

    def add(at: float, payload: dict) -> None:
        nonlocal seq
        payload = {"type": payload["type"], "sequence_number": seq, **{k: v for k, v in payload.items() if k != "type"}}
        seq += 1
        events.append(ServedEvent(at, payload["type"], _dumps(payload)))

    in_progress = response_body(answer, status="in_progress")
    add(start, {"type": "response.created", "response": in_progress})
    add(start, {"type": "response.in_progress", "response": in_progress})
    item = {"id": item_id, "type": "message", "status": "in_progress", "content": [], "role": "assistant"}
    add(start, {"type": "response.output_item.added", "output_index": 0, "item": item})
    part = {"type": "output_text", "annotations": [], "text": ""}
    common = {"item_id": item_id, "output_index": 0, "content_index": 0}
    add(start, {"type": "response.content_part.added", **common, "part": part})
    for piece in answer.pieces:
        add(piece.offset_ms, {"type": "response.output_text.delta", **common, "delta": piece.text})
    add(end, {"type": "response.output_text.done", **common, "text": answer.text})
    add(end, {"type": "response.content_part.done", **common, "part": {**part, "text": answer.text}})
    final = response_body(answer)
    add(end, {"type": "response.output_item.done", "output_index": 0, "item": final["output"][0]})
    add(end, {"type": "response.completed", "response": final})
    return events
