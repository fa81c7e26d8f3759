"""Product analytics: Segment (``/ces/v1/<letter>``) and Statsig (``…/v1/rgstr``)."""

from __future__ import annotations

import base64
import gzip
import re
import zlib
from urllib.parse import parse_qs, urlsplit

from mitmproxy import http

from analyzer.extract.common import ExtractError, body_bytes, parse_time, str_or_none, to_json
from analyzer.extract.rows import Rows
from analyzer.json_codec import parse_json
from analyzer.recognise import segment_endpoint

_CONVERSATION_IN_PATH = re.compile(r"/c/([0-9A-Za-z][0-9A-Za-z-]{7,})")
SEGMENT_TYPES = {"t": "track", "p": "page", "i": "identify", "g": "group", "a": "alias", "s": "screen"}


def conversation_from_path(path: str | None) -> str | None:
    """The conversation id in a page path or URL like ``/c/<id>`` (also ``/g/<gpt>/c/<id>``)."""
    if not path or not isinstance(path, str):
        return None
    match = _CONVERSATION_IN_PATH.search(path)
    return match.group(1) if match else None


def extract_segment(flow: http.HTTPFlow, rows: Rows, redact: bool) -> None:
    letter = segment_endpoint(flow.request.path)
    data = body_bytes(flow.request, "request")
    try:
        body = parse_json(data)
    except ValueError as exc:
        raise ExtractError("request", f"Segment body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ExtractError("request", "Segment body is not a JSON object")
    events = body.get("batch") if letter == "b" or isinstance(body.get("batch"), list) else [body]
    if not isinstance(events, list):
        raise ExtractError("request", "Segment batch is not a list")
    for event in events:
        if not isinstance(event, dict):
            continue
        context = event.get("context") if isinstance(event.get("context"), dict) else {}
        page = context.get("page") if isinstance(context.get("page"), dict) else {}
        properties = event.get("properties") if event.get("properties") is not None else event.get("traits")
        page_path = page.get("path")
        if not page_path and isinstance(properties, dict):  # page calls put the path in properties
            page_path = properties.get("path")
        event_type = event.get("type") or SEGMENT_TYPES.get(letter or "")
        rows["segment_events"].append(
            {
                "flow_id": flow.id,
                "sent_at": flow.request.timestamp_start,
                "host": flow.request.pretty_host,
                "endpoint": letter,
                "type": event_type,
                "event": event.get("event") or event.get("name"),
                "user_id": str_or_none(event.get("userId")),
                "anonymous_id": str_or_none(event.get("anonymousId")),
                "message_id": str_or_none(event.get("messageId")),
                "timestamp": parse_time(event.get("timestamp") or event.get("sentAt")),
                "page_path": page_path,
                "conversation_id": conversation_from_path(page_path) or conversation_from_path(page.get("url")),
                "properties": to_json(properties, redact),
                "context": to_json(context, redact),
            }
        )


def decode_statsig_body(data: bytes, query: dict[str, list[str]]) -> object:
    """Undo the newer Statsig SDK's encodings: ``gz=1`` gzip without a header, ``se=1`` reversed
    base64. Tried in whatever order the bytes call for, a few steps at most."""
    for _ in range(4):
        stripped = data.strip()
        if stripped[:1] in (b"{", b"["):
            try:
                return parse_json(stripped)
            except ValueError as exc:
                raise ExtractError("request", f"Statsig body is not JSON: {exc}") from exc
        if stripped[:2] == b"\x1f\x8b":
            try:
                data = gzip.decompress(stripped)
            except (OSError, EOFError, zlib.error) as exc:
                raise ExtractError("request", f"Statsig body is not valid gzip: {exc}") from exc
            continue
        try:
            text = stripped.decode("ascii")
            if query.get("se") == ["1"]:
                text = text[::-1]
            data = base64.b64decode(text + "=" * (-len(text) % 4), validate=False)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ExtractError("request", f"Statsig body is neither JSON, gzip nor base64: {exc}") from exc
        if not data:
            break
    raise ExtractError("request", "Statsig body could not be decoded")


def extract_statsig(flow: http.HTTPFlow, rows: Rows, redact: bool) -> None:
    query = parse_qs(urlsplit(flow.request.path).query)
    body = decode_statsig_body(body_bytes(flow.request, "request"), query)
    if not isinstance(body, dict):
        raise ExtractError("request", "Statsig body is not a JSON object")
    top_meta = body.get("statsigMetadata") if isinstance(body.get("statsigMetadata"), dict) else {}
    sdk_type = top_meta.get("sdkType") or (query.get("st") or [None])[0]
    sdk_version = top_meta.get("sdkVersion") or (query.get("sv") or [None])[0]
    session_id = top_meta.get("sessionID") or (query.get("sid") or [None])[0]
    for event in body.get("events") or []:
        if not isinstance(event, dict):
            continue
        user = event.get("user") if isinstance(event.get("user"), dict) else {}
        custom_ids = user.get("customIDs") if isinstance(user.get("customIDs"), dict) else None
        event_meta = event.get("statsigMetadata") if isinstance(event.get("statsigMetadata"), dict) else {}
        current_page = event_meta.get("currentPage") or top_meta.get("currentPage")
        stable_id = (custom_ids or {}).get("stableID") or top_meta.get("stableID")
        rows["statsig_events"].append(
            {
                "flow_id": flow.id,
                "sent_at": flow.request.timestamp_start,
                "host": flow.request.pretty_host,
                "event_name": event.get("eventName"),
                "user_id": str_or_none(user.get("userID")),
                "stable_id": str_or_none(stable_id),
                "custom_ids": to_json(custom_ids, redact),
                "time": parse_time(event.get("time")),
                "value": str_or_none(event.get("value")),
                "metadata": to_json(event.get("metadata"), redact),
                "current_page": current_page,
                "conversation_id": conversation_from_path(current_page),
                "sdk_type": sdk_type,
                "sdk_version": sdk_version,
                "session_id": str_or_none(event_meta.get("sessionID") or session_id),
            }
        )
