"""Stream controls (guide 6c): the user pressed stop, the page asked whether an answer still streams.

``POST …/stop_conversation`` ``{conversation_id, exclude_async_types}`` -> ``{status, last_message_id}``;
``GET …/conversation/<id>/stream_status`` -> ``{status: IS_STREAMING | COMPLETE | FAILURE}`` (a 404
is ``UNAVAILABLE`` to the page). One ``stream_controls`` row each; analysis puts them on the turn.
"""

from __future__ import annotations

from mitmproxy import http

from analyzer.extract.common import ExtractError, json_body, request_start, str_or_none, to_json
from analyzer.extract.rows import Rows
from analyzer.recognise import stream_control

_KNOWN = frozenset({"conversation_id", "status", "last_message_id"})


def _json_or_none(message: http.Message | None, stage: str) -> dict | None:
    if message is None or not message.raw_content:
        return None
    try:
        value = json_body(message, stage)
    except ExtractError:
        return None
    return value if isinstance(value, dict) else None


def extract_stream_control(flow: http.HTTPFlow, rows: Rows, redact: bool) -> None:
    control = stream_control(flow.request.path)
    if control is None:
        return
    kind, conversation_id = control
    request = _json_or_none(flow.request, "request") if kind == "stop" else None
    response = flow.response
    answer = _json_or_none(response, "response")
    status = answer.get("status") if answer else None
    if status is None and response is not None and kind == "stream_status" and response.status_code == 404:
        status = "UNAVAILABLE"  # what the page makes of a 404 (real-samples 2026, section 5)
    extra = {k: v for k, v in (answer or {}).items() if k not in _KNOWN}
    if request:
        extra.update({f"request.{k}": v for k, v in request.items() if k != "conversation_id"})
    rows["stream_controls"].append({
        "flow_id": flow.id,
        "kind": kind,
        "conversation_id": str_or_none((request or {}).get("conversation_id") or conversation_id
                                       or (answer or {}).get("conversation_id")),
        "at": request_start(flow),
        "status_code": response.status_code if response is not None else None,
        "status": str_or_none(status),
        "last_message_id": str_or_none((answer or {}).get("last_message_id")),
        "extra": to_json(extra, redact) if extra else None,
    })
