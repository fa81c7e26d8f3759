"""Conversation turns (the POST that streams an answer) and conversation reads (mappings)."""

from __future__ import annotations

from collections.abc import Callable

from mitmproxy import http

from analyzer.extract.common import (
    ExtractError,
    event_data,
    header,
    is_event_stream,
    json_body,
    offset_ms,
    parse_time,
    request_start,
    response_events,
    str_or_none,
    to_json,
)
from analyzer.extract.ending import end_status
from analyzer.extract.history_fields import image_parts, read_metadata
from analyzer.extract.perf_stats import perf_rows
from analyzer.extract.rows import Rows
from analyzer.recognise import conversation_id_from_read
from analyzer.streams.conversation import ConversationStream, EventInfo, message_text
from analyzer.streams.sse import SSEEvent


def message_row(message: dict, *, conversation_id: str | None, parent_id: str | None, source: str,
                flow_id: str, seen_at: float | None) -> dict:
    author = message.get("author") or {}
    content = message.get("content") or {}
    metadata = message.get("metadata") or {}
    role = author.get("role")
    text = message_text(message)
    hidden = bool(metadata.get("is_visually_hidden_from_conversation")) or (role == "system" and not text)
    return {
        "conversation_id": conversation_id,
        "message_id": str_or_none(message.get("id")),
        # A mapping's node.parent (and the parent a history page gives) is authoritative;
        # elsewhere the message's own metadata is.
        "parent_id": parent_id if source in ("mapping", "page") else (metadata.get("parent_id") or parent_id),
        "role": str_or_none(role),
        "author_name": str_or_none(author.get("name")),
        "content_type": str_or_none(content.get("content_type")),
        "recipient": str_or_none(message.get("recipient")),
        "text": text,
        "model_slug": str_or_none(metadata.get("model_slug")),
        "create_time": parse_time(message.get("create_time")),
        "status": str_or_none(message.get("status")),
        "end_turn": message.get("end_turn") if isinstance(message.get("end_turn"), bool) else None,
        "hidden": hidden,
        "source": source,
        "flow_id": flow_id,
        "seen_at": seen_at,
        "images": image_parts(message),
    }


def stream_rows(flow_id: str, events: list[SSEEvent], start: float, redact: bool,
                feed: Callable[[str, str | None], EventInfo]) -> list[dict]:
    """``stream_events`` rows for SSE events interpreted by ``feed`` (a stream's ``feed``);
    offsets count from ``start``."""
    rows = []
    for seq, event in enumerate(events):
        info = feed(event.data, event.event)
        rows.append(
            {
                "flow_id": flow_id,
                "seq": seq,
                "at": event.at,
                "offset_ms": offset_ms(event.at, start),
                "event": event.event,
                "type": info.type,
                "message_id": info.message_id,
                "text": info.text,
                "data": event_data(event.data, redact),
                "n_bytes": event.n_bytes,
            }
        )
    return rows


def turn_timing(rows: list[dict]) -> tuple[float | None, float | None, int]:
    """(ttft_ms, e2e_ms, n_text_events) from stream_events rows."""
    text_offsets = [r["offset_ms"] for r in rows if r["text"]]
    offsets = [r["offset_ms"] for r in rows if r["offset_ms"] is not None]
    ttft = text_offsets[0] if text_offsets and text_offsets[0] is not None else None
    e2e = offsets[-1] if offsets else None
    return ttft, e2e, len(text_offsets)


def stream_messages(stream: ConversationStream, *, request_parents: dict[str, str | None],
                    first_parent: str | None, flow_id: str, seen_at: float | None) -> list[dict]:
    """Rows for every message a stream carried. A message without ``metadata.parent_id`` gets the
    parent its request named; a system message hangs from the request's parent; any other message
    from the message before it (ChatGPT streams new messages in tree order), starting from the last
    message the request sent, so an answer whose user message is not echoed hangs from that."""
    rows = []
    request_ids = [i for i in request_parents if i]
    previous = request_ids[-1] if request_ids else first_parent
    for message_id, message in stream.messages.items():
        role = (message.get("author") or {}).get("role")
        if message_id in request_parents:
            parent = request_parents[message_id]
        elif role == "system":
            parent = first_parent
        else:
            parent = previous
        rows.append(message_row(message, conversation_id=stream.conversation_id, parent_id=parent,
                                source="stream", flow_id=flow_id, seen_at=seen_at))
        if role != "system":
            previous = message_id
    return rows


def client_context_json(body: dict, redact: bool) -> str | None:
    """``client_contextual_info`` plus the request's ``timezone`` / ``timezone_offset_min``, as JSON."""
    info = body.get("client_contextual_info")
    context = dict(info) if isinstance(info, dict) else {}
    for key in ("timezone", "timezone_offset_min"):
        if key in body and key not in context:
            context[key] = body[key]
    return to_json(context, redact) if context else None


def offset_events(rows: list[dict]) -> int:
    """SSE events that count toward a resume offset: every event but ``[DONE]`` and pings (guide 6c)."""
    return sum(1 for r in rows if r["type"] not in ("done", "ping") and r["event"] != "ping")


def error_code(answer: object) -> str | None:
    """The code of a JSON error answer: ``detail.code`` (404 tokenless_resume_unavailable),
    ``errorCode`` / ``error_code`` (410 persisted_final_available), ``error.code``."""
    if not isinstance(answer, dict):
        return None
    for holder in (answer.get("detail"), answer.get("error"), answer):
        if isinstance(holder, dict):
            for key in ("code", "errorCode", "error_code"):
                if isinstance(holder.get(key), str):
                    return holder[key]
    return None


def is_resume(flow: http.HTTPFlow) -> bool:
    return flow.request.path.split("?", 1)[0].rstrip("/").endswith("/conversation/resume")


def infer_status(stream: ConversationStream) -> str | None:
    answer = stream.answer()
    if answer is None:
        return "error" if stream.stream_error else "incomplete"
    status = answer.get("status")
    if status:
        return status
    finish = (answer.get("metadata") or {}).get("finish_details")
    # 2023 snapshots carry no status: a finish reason plus [DONE] means it finished.
    return "finished_successfully" if finish and stream.done else "in_progress"


def extract_conversation_turn(flow: http.HTTPFlow, rows: Rows, redact: bool) -> None:
    start = request_start(flow)
    body = json_body(flow.request, "request")
    if not isinstance(body, dict):
        raise ExtractError("request", "conversation request body is not a JSON object")
    request_messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    parent_message_id = body.get("parent_message_id")
    user = next((m for m in reversed(request_messages) if (m.get("author") or {}).get("role") == "user"), None)
    conversation_id = body.get("conversation_id")
    request_parents: dict[str, str | None] = {}
    previous = parent_message_id
    for message in request_messages:
        request_parents[message.get("id")] = previous
        previous = message.get("id")

    resumed = is_resume(flow)
    offset = body.get("offset") if resumed else None
    resume_offset = offset if isinstance(offset, int) and not isinstance(offset, bool) else None
    turn = {
        "flow_id": flow.id,
        "conversation_id": str_or_none(conversation_id),
        "action": str_or_none(body.get("action")),
        "requested_model": str_or_none(body.get("model")),
        "parent_message_id": str_or_none(parent_message_id),
        "user_message_id": user.get("id") if user else None,
        "user_text": message_text(user) if user else None,
        "started_at": start,
        "cf_ray": header(flow.response, "cf-ray"),
        "path": flow.request.path.split("?", 1)[0],
        "n_events": 0,
        "n_text_events": 0,
        # What the page says about the browser (screen, page size, pixel ratio, dark mode): the
        # fingerprinting surface of a privacy audit, with the request's timezone fields.
        "client_contextual_info": client_context_json(body, redact),
        "resume_offset": resume_offset,
        "end_status": end_status(flow),
    }
    response = flow.response
    errors = []
    seen_at = response.timestamp_end if response is not None else None
    if response is None:
        turn.update(status="no_response", error=flow.error.msg if flow.error else "no response")
    elif is_event_stream(flow):
        timed = response_events(flow)
        stream = ConversationStream(resumed=resumed)
        stream.conversation_id = str_or_none(conversation_id)
        event_rows = stream_rows(flow.id, timed.events, start, redact, stream.feed)
        rows["stream_events"].extend(event_rows)
        if stream.perf_events:
            rows["perf_stats"].extend(perf_rows(flow.id, event_rows, stream.perf_events, stream.conversation_id))
        ttft, e2e, n_text = turn_timing(event_rows)
        answer = stream.answer() or {}
        metadata = answer.get("metadata") or {}
        conversation_id = stream.conversation_id or conversation_id
        turn.update(
            conversation_id=conversation_id,
            model_slug=metadata.get("model_slug"),
            server_model_slug=stream.server_model_slug,
            assistant_message_id=answer.get("id"),
            assistant_text=message_text(answer) if answer else None,
            stream_format="websocket" if stream.handoff else (stream.format or "unknown"),
            status="handed_off" if stream.handoff and not n_text else infer_status(stream),
            finish_type=(metadata.get("finish_details") or {}).get("type"),
            title=stream.title,
            ttft_ms=ttft,
            e2e_ms=e2e,
            n_events=len(event_rows),
            n_text_events=n_text,
            next_offset=(resume_offset or 0) + offset_events(event_rows),
            resume_token_kind=stream.resume_token_kind,
        )
        if timed.error:
            errors.append(("stream", timed.error))
        errors.extend(("stream", e) for e in stream.errors[:5])
        if stream.stream_error:
            turn["error"] = stream.stream_error
        elif not stream.done and not stream.completed and not stream.main_completed and not stream.handoff:
            turn["error"] = "stream ended without [DONE]"
        rows["messages"].extend(
            stream_messages(stream, request_parents=request_parents, first_parent=parent_message_id,
                            flow_id=flow.id, seen_at=seen_at)
        )
    else:
        # A JSON answer: the 2024 WebSocket hand-off {wss_url, conversation_id, response_id},
        # or an error (rate limit, expired session…).
        try:
            answer = json_body(response, "response")
        except ExtractError as exc:
            answer = None
            if response.status_code < 400:
                errors.append((exc.stage, str(exc)))
        if isinstance(answer, dict) and answer.get("wss_url"):
            conversation_id = answer.get("conversation_id") or conversation_id
            turn.update(conversation_id=conversation_id, stream_format="websocket", status="handed_off")
        else:
            turn.update(stream_format="json", status="error" if response.status_code >= 400 else None,
                        error_code=error_code(answer))
            if isinstance(answer, dict) and (answer.get("detail") or answer.get("error")):
                turn["error"] = str(answer.get("detail") or answer.get("error"))[:500]
            elif response.status_code >= 400:
                turn["error"] = f"HTTP {response.status_code}"
    turn["conversation_id"] = str_or_none(conversation_id)
    turn["title"] = str_or_none(turn.get("title"))
    for message in request_messages:
        rows["messages"].append(
            message_row(message, conversation_id=conversation_id, parent_id=request_parents.get(message.get("id")),
                        source="request", flow_id=flow.id, seen_at=start)
        )
    rows["conversation_turns"].append(turn)
    for stage, message in errors:
        rows["errors"].append({"flow_id": flow.id, "stage": stage, "error": message})


def extract_conversation_read(flow: http.HTTPFlow, rows: Rows, redact: bool) -> None:
    if flow.response is None or flow.response.status_code >= 400:
        return
    body = json_body(flow.response, "response")
    if not isinstance(body, dict) or not isinstance(body.get("mapping"), dict):
        raise ExtractError("response", "conversation read without a mapping")
    conversation_id = body.get("conversation_id") or body.get("id") or conversation_id_from_read(flow.request.path)
    read_at = flow.response.timestamp_end
    mapping = body["mapping"]
    rows["conversation_reads"].append(
        {
            **read_metadata(body, redact),
            "flow_id": flow.id,
            "conversation_id": conversation_id,
            "n_nodes": len(mapping),
            "n_messages": sum(1 for n in mapping.values() if isinstance(n, dict) and isinstance(n.get("message"), dict)),
            "read_type": "mapping",
            "read_at": read_at,
        }
    )
    for node_id, node in mapping.items():
        if not isinstance(node, dict) or not isinstance(node.get("message"), dict):
            continue  # the root: no message
        message = dict(node["message"])
        message.setdefault("id", node_id)
        rows["messages"].append(
            message_row(message, conversation_id=conversation_id, parent_id=node.get("parent"),
                        source="mapping", flow_id=flow.id, seen_at=read_at)
        )
