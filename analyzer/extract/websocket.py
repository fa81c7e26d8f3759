"""Conversation streams over WebSocket: frames unwrapped to SSE, split into answers.

The celsius socket also carries ``conversation-update`` frames (long image tasks finishing,
guide 6e): each is a ``conversation_updates`` row, and each message they carry a ``messages`` row
with ``source = update`` and the socket's plain flow id.

One socket may carry many answers. Each answer becomes a turn whose id is
``<websocket flow id>#<n>``; its events' offsets count from the client frame that asked for it
(the last client→server frame before the answer began) or, without one, from the answer's
first frame.
"""

from __future__ import annotations

from mitmproxy import http

from analyzer.extract.common import str_or_none, to_json
from analyzer.extract.conversation import infer_status, message_row, stream_messages, stream_rows, turn_timing
from analyzer.extract.perf_stats import perf_rows
from analyzer.extract.rows import Rows
from analyzer.streams.conversation import ConversationStream, message_text
from analyzer.streams.sse import SSEParser
from analyzer.streams.websocket import (
    conversation_updates,
    frame_turn_key,
    is_conversation_frame,
    sse_text_from_frame,
    update_messages,
)


def is_conversation_websocket(flow: http.HTTPFlow) -> bool:
    if flow.websocket is None:
        return False
    return any(not m.from_client and is_conversation_frame(m.content) for m in flow.websocket.messages[:50])


class WebSocketAnswers:
    """The answers of one WebSocket, read frame by frame.

    ``feed`` takes the frames that arrived since the last call; ``rows`` gives the rows of the
    answers not yet given out: the finished ones, or all with ``final``. The live pipeline calls it
    as answers finish, so an answer on a socket that stays open all session is on disk as soon as
    it ends; an import or a socket's end calls it once with everything.
    """

    def __init__(self, flow: http.HTTPFlow) -> None:
        self.flow = flow
        self._parser = SSEParser()
        self._turns: list[dict] = []
        self._current: dict | None = None
        self._last_client_at: float | None = None
        self._frames_read = 0
        self._updates: list[tuple[int, list[dict], float]] = []  # conversation updates not given out yet
        self.emitted = 0  # answers already given out

    def feed(self) -> None:
        """Read the frames that arrived since the last call."""
        assert self.flow.websocket is not None
        messages = self.flow.websocket.messages
        end = len(messages)
        for index, frame in enumerate(messages[self._frames_read:end], self._frames_read):
            if frame.from_client:
                self._last_client_at = frame.timestamp
                continue
            text = sse_text_from_frame(frame.content)
            if text is None:
                updates = conversation_updates(frame.content)
                if updates:
                    self._updates.append((index, updates, frame.timestamp))
                continue
            key = frame_turn_key(frame.content)
            for event in self._parser.feed(text, frame.timestamp):
                current = self._current
                if current is None or current["finished"] or (key and current["key"] and key != current["key"]):
                    start = self._last_client_at if self._last_client_at is not None else frame.timestamp
                    current = self._current = {"key": key, "start": start, "events": [], "finished": False,
                                               "n": len(self._turns)}
                    self._turns.append(current)
                current["events"].append(event)
                if event.data == "[DONE]":
                    current["finished"] = True
        self._frames_read = end

    def rows(self, rows: Rows, redact: bool, *, final: bool = False) -> None:
        """Add the rows of every answer not given out yet: finished ones, or all when ``final``;
        and the messages of every conversation update read so far."""
        for index, updates, at in self._updates:
            for name, table_rows in _update_rows(self.flow.id, index, updates, at, redact).items():
                rows[name].extend(table_rows)
        self._updates = []
        while self.emitted < len(self._turns):
            turn = self._turns[self.emitted]
            if not (turn["finished"] or final):
                break
            _answer_rows(self.flow, turn, rows, redact)
            turn["events"] = []  # given out: a socket open all session keeps no answers in memory
            self.emitted += 1


def _update_rows(flow_id: str, frame: int, updates: list[dict], at: float, redact: bool) -> Rows:
    """``conversation_updates`` rows and ``messages`` rows (source ``update``) of the
    conversation-update payloads of one frame."""
    out: Rows = {"conversation_updates": [], "messages": []}
    for update in updates:
        conversation_id = str_or_none(update.get("conversation_id"))
        content_obj = update.get("update_content") if isinstance(update.get("update_content"), dict) else {}
        messages = update_messages(update)
        first = messages[0] if messages else {}
        rest = {k: v for k, v in update.items() if k not in ("conversation_id", "update_type", "update_content")}
        rest_content = {k: v for k, v in content_obj.items()
                        if k not in ("async_task_id", "async_task_type", "message", "messages")}
        if rest_content:
            rest["update_content"] = rest_content
        out["conversation_updates"].append({
            "flow_id": flow_id, "frame": frame, "at": at, "conversation_id": conversation_id,
            "update_type": str_or_none(update.get("update_type")),
            "async_task_id": str_or_none(content_obj.get("async_task_id")),
            "async_task_type": str_or_none(content_obj.get("async_task_type")),
            "message_id": str_or_none(first.get("id")), "message_status": str_or_none(first.get("status")),
            "extra": to_json(rest, redact) if rest else None,
        })
        for message in messages:
            parent = message.get("parent_id") if isinstance(message.get("parent_id"), str) else None
            out["messages"].append(message_row(message, conversation_id=conversation_id, parent_id=parent,
                                               source="update", flow_id=flow_id, seen_at=at))
    return out


def extract_websocket(flow: http.HTTPFlow, rows: Rows, redact: bool) -> None:
    answers = WebSocketAnswers(flow)
    answers.feed()
    answers.rows(rows, redact, final=True)


def _answer_rows(flow: http.HTTPFlow, turn: dict, rows: Rows, redact: bool) -> None:
    turn_id = f"{flow.id}#{turn['n']}"
    stream = ConversationStream()
    event_rows = stream_rows(turn_id, turn["events"], turn["start"], redact, stream.feed)
    rows["stream_events"].extend(event_rows)
    if stream.perf_events:  # the 2026 v1 events ride the socket too
        rows["perf_stats"].extend(perf_rows(turn_id, event_rows, stream.perf_events, stream.conversation_id))
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
            or (None if stream.done or stream.completed or stream.main_completed else "stream ended without [DONE]"),
            "resume_token_kind": stream.resume_token_kind,
        }
    )
    seen_at = turn["events"][-1].at if turn["events"] else None
    rows["messages"].extend(
        stream_messages(stream, request_parents={}, first_parent=None, flow_id=turn_id, seen_at=seen_at)
    )
