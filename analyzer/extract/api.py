"""OpenAI-compatible API calls: ``/v1/chat/completions`` and ``/v1/responses``."""

from __future__ import annotations

from mitmproxy import http

from analyzer.extract.codex import codex_request_columns, codex_response_extra, rate_limit_rows
from analyzer.extract.common import (
    ExtractError,
    as_number,
    is_event_stream,
    json_body,
    request_start,
    response_events,
    str_or_none,
    to_json,
)
from analyzer.extract.conversation import stream_rows, turn_timing
from analyzer.extract.ending import COMPLETE, end_status
from analyzer.extract.rows import Rows
from analyzer.recognise import strip_query
from analyzer.streams.openai_api import ApiStream, api_endpoint


def _content_text(content) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text"|"input_text", "text": ...}, ...]
        return "".join(p.get("text", "") for p in content if isinstance(p, dict)) or None
    return None


def _last_user_text(body: dict) -> str | None:
    messages = body.get("messages")
    if not isinstance(messages, list):  # Responses API: "input" is a string or a list of items
        messages = body.get("input")
        if isinstance(messages, str):
            return messages
        if not isinstance(messages, list):
            return None
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content_text(message.get("content"))
    return None


def _responses_output_text(answer: dict) -> str:
    if isinstance(answer.get("output_text"), str):
        return answer["output_text"]
    pieces = []
    for item in answer.get("output") or []:
        if isinstance(item, dict) and item.get("type") == "message":
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "output_text":
                    pieces.append(part.get("text", ""))
    return "".join(pieces)


def extract_api_call(flow: http.HTTPFlow, rows: Rows, redact: bool) -> None:
    start = request_start(flow)
    body = json_body(flow.request, "request")
    if not isinstance(body, dict):
        raise ExtractError("request", "API request body is not a JSON object")
    path = strip_query(flow.request.path)
    endpoint = api_endpoint(path)
    messages = body.get("messages") if isinstance(body.get("messages"), list) else body.get("input")
    call = {
        "flow_id": flow.id,
        "host": flow.request.pretty_host,
        "endpoint": path,
        "model": body.get("model"),
        "stream": bool(body.get("stream")),
        "n_messages": len(messages) if isinstance(messages, list) else (1 if messages else 0),
        "last_user_text": _last_user_text(body),
        "started_at": start,
        "request_json": to_json(body, redact),
        "n_events": 0,
        "n_text_events": 0,
        **codex_request_columns(flow.request, body, redact),
        "end_status": end_status(flow),
    }
    response = flow.response
    stream = ApiStream(endpoint)
    limit_events: list[tuple[float | None, dict]] = []
    answer = None
    if response is not None:
        call["status_code"] = response.status_code
    if response is None:
        pass
    elif is_event_stream(flow):
        timed = response_events(flow)
        event_rows = stream_rows(flow.id, timed.events, start, redact, stream.feed)
        rows["stream_events"].extend(event_rows)
        ttft, e2e, n_text = turn_timing(event_rows)
        call.update(ttft_ms=ttft, e2e_ms=e2e, n_events=len(event_rows), n_text_events=n_text,
                    response_text="".join(stream.text))
        call.update(_reasoning_columns(stream, event_rows))
        limit_events = [(event_rows[seq]["at"], obj) for seq, obj in stream.rate_limit_events]
        if timed.error:
            rows["errors"].append({"flow_id": flow.id, "stage": "stream", "error": timed.error})
        for error in stream.errors[:5]:
            rows["errors"].append({"flow_id": flow.id, "stage": "stream", "error": error})
    else:
        try:
            answer = json_body(response, "response")
        except ExtractError:
            if response.status_code < 400:
                raise
            answer = None  # an HTML 502 page or an empty 429: the call failed, the row stays
            call["error"] = f"HTTP {response.status_code}"
        if isinstance(answer, dict) and response.status_code >= 400:
            detail = answer.get("error")
            message = detail.get("message") if isinstance(detail, dict) else detail
            if isinstance(detail, dict):
                call["error_code"] = str_or_none(detail.get("code") or detail.get("type"))
            call["error"] = f"HTTP {response.status_code}: {message}" if message else f"HTTP {response.status_code}"
        elif isinstance(answer, dict):
            stream.response_id = answer.get("id")
            stream.model = answer.get("model")
            stream.system_fingerprint = answer.get("system_fingerprint")
            stream.usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else None
            if endpoint == "responses":
                stream.finish_reason = answer.get("status")
                call["response_text"] = _responses_output_text(answer)
            else:
                choice = (answer.get("choices") or [{}])[0] or {}
                stream.finish_reason = choice.get("finish_reason")
                call["response_text"] = _content_text((choice.get("message") or {}).get("content"))
        if response.timestamp_end is not None and response.status_code < 400:
            call["e2e_ms"] = (response.timestamp_end - start) * 1000.0
    prompt, completion, total = (as_number(v, int) for v in stream.tokens())
    call.update(
        model=str_or_none(stream.model or call["model"]),
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total,
        finish_reason=str_or_none(stream.finish_reason),
        response_id=str_or_none(stream.response_id),
        system_fingerprint=str_or_none(stream.system_fingerprint),
    )
    if stream.error is not None:
        call.update(error=stream.error, error_code=str_or_none(stream.error_code),
                    error_status_code=stream.error_status_code)
    if response is not None and response.status_code >= 400 and not call.get("error"):
        call["error"] = f"HTTP {response.status_code}"
    extra = {**codex_response_extra(response), **stream.extra}
    if extra:
        call["extra"] = to_json(extra, redact)
    if call["end_status"] != COMPLETE and not call.get("error"):
        # a call that broke off (or never got an answer) says why, as a cut turn does
        call["error"] = flow.error.msg if flow.error else ("no response" if response is None else None)
    rows["api_calls"].append(call)
    limits = rate_limit_rows(flow, limit_events)
    plan = plan_of_error_body(answer) if not is_event_stream(flow) and response is not None else None
    for row in limits:  # a 429's body names the plan its limit headers belong to
        if plan and row["source"] == "header" and not row.get("plan_type"):
            row["plan_type"] = plan
    rows["rate_limits"].extend(limits)


def plan_of_error_body(answer) -> str | None:
    error = answer.get("error") if isinstance(answer, dict) else None
    return str_or_none(error.get("plan_type")) if isinstance(error, dict) else None


def _reasoning_columns(stream: ApiStream, event_rows: list[dict]) -> dict:
    """Reasoning text and timing: offset of the first reasoning event, and the span to the last."""
    if not stream.reasoning_seqs:
        return {"n_reasoning_events": 0}
    offsets = [event_rows[seq]["offset_ms"] for seq in stream.reasoning_seqs]
    timed = [o for o in offsets if o is not None]
    return {
        "reasoning_text": "".join(stream.reasoning),
        "n_reasoning_events": len(offsets),
        "first_reasoning_ms": timed[0] if timed else None,
        "reasoning_ms": timed[-1] - timed[0] if timed else None,
    }
