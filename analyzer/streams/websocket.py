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
