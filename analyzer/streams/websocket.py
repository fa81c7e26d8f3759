"""Conversation streams carried over WebSocket frames, unwrapped back to SSE text.

Two carriers are known: 2024's Azure Web PubSub (``json.reliable.webpubsub.azure.v1``), whose
frames hold ``data.body`` = base64 of SSE text, and 2025–26's "celsius" topic socket, whose frames
hold ``payload.payload.encoded_item`` = SSE text. Either way the inner lines are legacy or v1.
"""

from __future__ import annotations

import base64
import binascii

from analyzer.json_codec import parse_json


def _item_text(obj: object) -> str | None:
    if not isinstance(obj, dict):
        return None
    # 2025–26: {"type": "message", "payload": {"type": "conversation-turn-stream",
    #           "payload": {"type": "stream-item", "encoded_item": "data: {…}\n\n"}}}
    payload = obj.get("payload")
    if isinstance(payload, dict):
        inner = payload.get("payload")
        if isinstance(inner, dict) and isinstance(inner.get("encoded_item"), str):
            return inner["encoded_item"]
    # 2024: webpubsub {"type": "message", "data": {"body": "<base64 SSE>", ...}}
    data = obj.get("data")
    if isinstance(data, dict) and isinstance(data.get("body"), str):
        try:
            return base64.b64decode(data["body"], validate=False).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            return None
    return None


def sse_text_from_frame(content: bytes | str) -> str | None:
    """The SSE text a frame carries, or None when the frame is not a conversation stream item.

    A frame holds one item object, or (some clients batch them) a JSON array of item objects.
    """
    if isinstance(content, bytes):
        try:
            content = content.decode("utf-8")
        except UnicodeDecodeError:
            return None
    content = content.strip()
    if not content.startswith(("{", "[")):
        return None
    try:
        obj = parse_json(content)
    except ValueError:
        return None
    items = obj if isinstance(obj, list) else [obj]
    texts = [t for t in (_item_text(item) for item in items) if t is not None]
    return "".join(texts) if texts else None


def frame_turn_key(content: bytes | str) -> str | None:
    """An id that groups the frames of one answer when the carrier names one (response id/topic)."""
    try:
        obj = parse_json(content)
    except (ValueError, TypeError):
        return None
    if not isinstance(obj, dict):
        return None
    data = obj.get("data")
    if isinstance(data, dict) and data.get("response_id"):
        return str(data["response_id"])
    if obj.get("topic_id"):
        return str(obj["topic_id"])
    payload = obj.get("payload")
    if isinstance(payload, dict):
        for key in ("turn_id", "response_id", "topic_id"):
            if payload.get(key):
                return str(payload[key])
    return None


def _update_of(obj: object) -> dict | None:
    """The ``conversation-update`` event in ``obj``: bare ``{type, payload}``, or inside the
    celsius topic envelope ``{"type": "message", "topic_id": …, "payload": {type, payload}}``."""
    if not isinstance(obj, dict):
        return None
    if obj.get("type") == "conversation-update" and isinstance(obj.get("payload"), dict):
        return obj["payload"]
    payload = obj.get("payload")
    if isinstance(payload, dict) and payload.get("type") == "conversation-update" \
            and isinstance(payload.get("payload"), dict):
        return payload["payload"]
    return None


def conversation_updates(content: bytes | str) -> list[dict]:
    """The celsius ``conversation-update`` payloads a frame carries (guide 6e), else ``[]``.

    Each is ``{conversation_id, update_type, update_content}``; ``async-task-start`` and
    ``async-task-update-message`` carry a whole message in ``update_content.message``.
    """
    if isinstance(content, bytes):
        try:
            content = content.decode("utf-8")
        except UnicodeDecodeError:
            return []
    content = content.strip()
    if "conversation-update" not in content or not content.startswith(("{", "[")):
        return []  # fast path: stream items and pings never hold the name
    try:
        obj = parse_json(content)
    except ValueError:
        return []
    items = obj if isinstance(obj, list) else [obj]
    return [u for u in (_update_of(item) for item in items) if u is not None]


def update_messages(update: dict) -> list[dict]:
    """The messages a ``conversation-update`` payload carries (``message``, or ``messages`` of an
    ``add-messages`` update)."""
    content = update.get("update_content")
    if not isinstance(content, dict):
        return []
    if isinstance(content.get("message"), dict):
        return [content["message"]]
    messages = content.get("messages")
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


def is_conversation_frame(content: bytes | str) -> bool:
    """A server frame chatwire reads: a stream item or a conversation update."""
    return sse_text_from_frame(content) is not None or bool(conversation_updates(content))
