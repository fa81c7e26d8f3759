"""Conversation streams over WebSocket: frames unwrapped to SSE, split into answers.

One socket may carry many answers. Each answer becomes a turn whose id is
``<websocket flow id>#<n>``; its events' offsets count from the client frame that asked for it
(the last client→server frame before the answer began) or, without one, from the answer's
first frame.
"""

from __future__ import annotations

from mitmproxy import http

from analyzer.extract.common import event_data, offset_ms
from analyzer.extract.conversation import infer_status, stream_messages, turn_timing
from analyzer.extract.rows import Rows
from analyzer.streams.conversation import ConversationStream, message_text
from analyzer.streams.sse import SSEParser
from analyzer.streams.websocket import frame_turn_key, sse_text_from_frame


def is_conversation_websocket(flow: http.HTTPFlow) -> bool:
    if flow.websocket is None:
        return False
    return any(
        not m.from_client and sse_text_from_frame(m.content) is not None for m in flow.websocket.messages[:50]
    )


def extract_websocket(flow: http.HTTPFlow, rows: Rows, redact: bool) -> None:
    assert flow.websocket is not None
    parser = SSEParser()
    turns: list[dict] = []
    current: dict | None = None
    last_client_at: float | None = None
    for frame in flow.websocket.messages:
        if frame.from_client:
            last_client_at = frame.timestamp
            continue
        text = sse_text_from_frame(frame.content)
        if text is None:
            continue
        key = frame_turn_key(frame.content)
        for event in parser.feed(text, frame.timestamp):
            if current is None or current["finished"] or (key and current["key"] and key != current["key"]):
                start = last_client_at if last_client_at is not None else frame.timestamp
                current = {"key": key, "start": start, "stream": ConversationStream(), "events": [],
                           "finished": False, "n": len(turns)}
                turns.append(current)
            current["events"].append(event)
            if event.data == "[DONE]":
                current["finished"] = True
    for turn in turns:
        turn_id = f"{flow.id}#{turn['n']}"
        stream: ConversationStream = turn["stream"]
        event_rows = []
        for seq, event in enumerate(turn["events"]):
            info = stream.feed(event.data, event.event)
            event_rows.append(
                {"flow_id": turn_id, "seq": seq, "at": event.at, "offset_ms": offset_ms(event.at, turn["start"]),
                 "event": event.event, "type": info.type, "message_id": info.message_id, "text": info.text,
                 "data": event_data(event.data, redact), "n_bytes": event.n_bytes}
            )
        rows["stream_events"].extend(event_rows)
        ttft, e2e, n_text = turn_timing(event_rows)
        answer = stream.answer() or {}
        metadata = answer.get("metadata") or {}
        user = next((m for m in stream.messages.values() if (m.get("author") or {}).get("role") == "user"), None)
        rows["conversation_turns"].append(
            {
                "flow_id": turn_id,
                "conversation_id": stream.conversation_id,
                "model_slug": metadata.get("model_slug"),
                "server_model_slug": stream.server_model_slug,
                "parent_message_id": ((user or {}).get("metadata") or {}).get("parent_id"),
                # The socket rarely echoes the user message; the answer's parent names it, which is
                # also what joins this answer to the POST that handed it off.
                "user_message_id": user.get("id") if user else metadata.get("parent_id"),
                "user_text": message_text(user) if user else None,
                "assistant_message_id": answer.get("id"),
                "assistant_text": message_text(answer) if answer else None,
                "stream_format": "websocket",
                "status": infer_status(stream),
                "finish_type": (metadata.get("finish_details") or {}).get("type"),
                "title": stream.title,
                "started_at": turn["start"],
                "ttft_ms": ttft,
                "e2e_ms": e2e,
                "n_events": len(event_rows),
                "n_text_events": n_text,
                "path": flow.request.path.split("?", 1)[0],
                "error": stream.stream_error
                or (None if stream.done or stream.completed else "stream ended without [DONE]"),
            }
        )
        seen_at = turn["events"][-1].at if turn["events"] else None
        rows["messages"].extend(
            stream_messages(stream, request_parents={}, first_parent=None, flow_id=turn_id, seen_at=seen_at)
        )
