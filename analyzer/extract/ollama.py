"""Ollama's native API (guide 6g): ``POST /api/chat`` and ``/api/generate``, streamed as NDJSON.

Each line is ``{model, created_at, message: {role, content[, thinking]}, done: false}``
(``/api/generate``: ``response`` and ``thinking`` at the top level); the last has ``done: true``,
``done_reason`` and the server's own timings in nanoseconds. One ``api_calls`` row per call, one
``stream_events`` row per line; TTFT is the first line with visible content, ``thinking`` is kept
apart (``reasoning_text``), and the server's timings go to the ``server_*`` columns in ms.
"""

from __future__ import annotations

from typing import Any

from mitmproxy import http

from analyzer.extract.common import (
    ExtractError,
    as_number,
    body_bytes,
    event_data,
    json_body,
    media_type,
    offset_ms,
    request_start,
    response_lines,
    str_or_none,
    to_json,
)
from analyzer.extract.conversation import turn_timing
from analyzer.extract.rows import Rows
from analyzer.json_codec import parse_json
from analyzer.recognise import strip_query

NS_PER_MS = 1_000_000.0
_SERVER_DURATIONS = {"total_duration": "server_total_ms", "load_duration": "server_load_ms",
                     "prompt_eval_duration": "server_prompt_eval_ms", "eval_duration": "server_eval_ms"}


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content parts, as some clients send them
        return "".join(p.get("text", "") for p in value if isinstance(p, dict)) or None
    return None


def _last_user_text(body: dict) -> str | None:
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return _text(message.get("content"))
        return None
    return _text(body.get("prompt"))


def line_parts(obj: dict) -> tuple[str, str]:
    """(visible content, thinking) of one line of either endpoint."""
    message = obj.get("message") if isinstance(obj.get("message"), dict) else {}
    content = message.get("content") if "message" in obj else obj.get("response")
    thinking = message.get("thinking") if "message" in obj else obj.get("thinking")
    return (content if isinstance(content, str) else ""), (thinking if isinstance(thinking, str) else "")


def _line_type(obj: dict, content: str, thinking: str) -> str:
    if obj.get("error") is not None:
        return "error"
    if obj.get("done") is True:
        return "done"
    if isinstance(obj.get("message"), dict) and obj["message"].get("tool_calls"):
        return "tool_calls"
    if content:
        return "content"
    return "thinking" if thinking else "empty"


def _server_columns(final: dict) -> dict:
    out: dict = {}
    for key, column in _SERVER_DURATIONS.items():
        ns = as_number(final.get(key), float)
        out[column] = ns / NS_PER_MS if ns is not None else None
    out["server_prompt_eval_count"] = as_number(final.get("prompt_eval_count"), int)
    out["server_eval_count"] = as_number(final.get("eval_count"), int)
    return out


def extract_ollama(flow: http.HTTPFlow, rows: Rows, redact: bool) -> None:
    start = request_start(flow)
    body = json_body(flow.request, "request")
    if not isinstance(body, dict):
        raise ExtractError("request", "Ollama request body is not a JSON object")
    messages = body.get("messages")
    call: dict = {
        "flow_id": flow.id,
        "host": flow.request.pretty_host,
        "endpoint": strip_query(flow.request.path),
        "model": str_or_none(body.get("model")),
        "stream": body.get("stream") is not False,  # Ollama streams unless told not to
        "n_messages": len(messages) if isinstance(messages, list) else (1 if body.get("prompt") else 0),
        "last_user_text": _last_user_text(body),
        "started_at": start,
        "request_json": to_json(body, redact),
        "n_events": 0,
        "n_text_events": 0,
    }
    response = flow.response
    if response is None:
        rows["api_calls"].append(call)
        return
    call["status_code"] = response.status_code
    objects: list[dict] = []
    if media_type(response) == "application/json" or response.status_code >= 400:
        # stream: false (one object), or an error answer {"error": "..."}
        data = body_bytes(response, "response")
        try:
            answer = parse_json(data) if data.strip() else None
        except ValueError as exc:
            if response.status_code < 400:
                raise ExtractError("response", f"body is not JSON: {exc}") from exc
            answer = None
        if isinstance(answer, dict):
            objects.append(answer)
        if response.timestamp_end is not None and response.status_code < 400:
            call["e2e_ms"] = (response.timestamp_end - start) * 1000.0
    else:
        timed = response_lines(flow)
        if timed.error:
            rows["errors"].append({"flow_id": flow.id, "stage": "stream", "error": timed.error})
        event_rows = []
        thinking_offsets: list[float | None] = []
        bad = 0
        for seq, line in enumerate(timed.lines):
            try:
                obj = parse_json(line.data)
            except ValueError as exc:
                obj, bad = None, bad + 1
                if bad <= 5:
                    rows["errors"].append({"flow_id": flow.id, "stage": "stream",
                                           "error": f"NDJSON line {seq} is not JSON: {exc}"})
            obj = obj if isinstance(obj, dict) else {}
            if obj:
                objects.append(obj)
            content, thinking = line_parts(obj)
            if thinking:
                thinking_offsets.append(offset_ms(line.at, start))
            event_rows.append({
                "flow_id": flow.id, "seq": seq, "at": line.at, "offset_ms": offset_ms(line.at, start),
                "event": None, "type": _line_type(obj, content, thinking) if obj else "invalid",
                "message_id": None, "text": content or None, "data": event_data(line.data, redact),
                "n_bytes": line.n_bytes,
            })
        rows["stream_events"].extend(event_rows)
        ttft, e2e, n_text = turn_timing(event_rows)
        call.update(ttft_ms=ttft, e2e_ms=e2e, n_events=len(event_rows), n_text_events=n_text,
                    n_reasoning_events=len(thinking_offsets),
                    first_reasoning_ms=thinking_offsets[0] if thinking_offsets else None)
    content = "".join(line_parts(o)[0] for o in objects)
    thinking = "".join(line_parts(o)[1] for o in objects)
    # an error answer ({"error": …}) has no text; a stream that said nothing visible has ""
    call["response_text"] = content if objects and (content or response.status_code < 400) else None
    call["reasoning_text"] = thinking or None
    final = next((o for o in reversed(objects) if o.get("done") is True), None)
    errors = [o["error"] for o in objects if o.get("error") is not None]
    if final is not None:
        server = _server_columns(final)
        call.update(server)
        call["model"] = str_or_none(final.get("model")) or call["model"]
        call["finish_reason"] = str_or_none(final.get("done_reason"))
        prompt, completion = server["server_prompt_eval_count"], server["server_eval_count"]
        call.update(prompt_tokens=prompt, completion_tokens=completion,
                    total_tokens=prompt + completion if prompt is not None and completion is not None else None)
    if errors:
        message = str_or_none(errors[-1].get("message") if isinstance(errors[-1], dict) else errors[-1])
        call["error"] = f"HTTP {response.status_code}: {message}" if response.status_code >= 400 else message
    elif response.status_code >= 400:
        call["error"] = f"HTTP {response.status_code}"
    elif final is None and call["stream"]:
        call["error"] = "stream ended without a done line"
    rows["api_calls"].append(call)
