"""Pure helpers for the 2026 history formats: image parts of a message, top-level read metadata.

No I/O: they take parsed JSON and return column values (guide sections 6b and 6e).
"""

from __future__ import annotations

import json
from typing import Any

from analyzer.extract.common import as_number, parse_time, str_or_none, to_json

IMAGE_PART = "image_asset_pointer"
# The keys of an image part that get their own field in ``messages.images``; the part's
# ``metadata`` (generation parameters: gen_id, seed, size, …) is kept whole.
_IMAGE_KEYS = ("asset_pointer", "size_bytes", "width", "height")

# Top-level keys of a conversation read that have a column of their own (or are the tree/page).
_READ_COLUMNS = {
    "default_model_slug": str,
    "is_do_not_remember": bool,
    "is_temporary_chat": bool,
    "is_archived": bool,
}
_READ_HANDLED = frozenset({
    "conversation_id", "id", "title", "create_time", "update_time", "current_node", "mapping", "messages",
    "page_info", "async_status", *_READ_COLUMNS,
})


def image_parts(message: dict | None) -> str | None:
    """``messages.images``: the message's ``image_asset_pointer`` parts as a JSON list, or None.

    Each item: ``asset_pointer``, ``size_bytes``, ``width``, ``height`` and the part's
    ``metadata`` (generation parameters), in part order. Nothing is fetched.
    """
    if not isinstance(message, dict):
        return None
    content = message.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        return None
    images = []
    for part in parts:
        if isinstance(part, dict) and part.get("content_type") == IMAGE_PART:
            item: dict[str, Any] = {key: part.get(key) for key in _IMAGE_KEYS}
            for key in ("size_bytes", "width", "height"):
                item[key] = as_number(item[key], int)
            item["metadata"] = part.get("metadata")
            images.append(item)
    if not images:
        return None
    return json.dumps(images, ensure_ascii=False, separators=(",", ":"), default=str)


def read_metadata(body: dict, redact: bool) -> dict:
    """The ``conversation_reads`` columns every read has (mapping or page), and ``extra``: the
    top-level keys without a column of their own, as JSON (unknown keys are kept, not dropped)."""
    row: dict[str, Any] = {
        "title": str_or_none(body.get("title")),
        "create_time": parse_time(body.get("create_time")),
        "update_time": parse_time(body.get("update_time")),
        "current_node": str_or_none(body.get("current_node")),
    }
    extra = {k: v for k, v in body.items() if k not in _READ_HANDLED}
    for key, kind in _READ_COLUMNS.items():
        value = body.get(key)
        if isinstance(value, kind):
            row[key] = value
        elif value is not None:
            extra[key] = value  # an unexpected shape: kept, not coerced
    status = body.get("async_status")
    if isinstance(status, int) and not isinstance(status, bool):
        row["async_status"] = status
    elif status is not None:
        extra["async_status"] = status
    row["extra"] = to_json(extra, redact) if extra else None
    return row
