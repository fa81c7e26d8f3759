"""Which kind of traffic a flow is, decided by method and path (any host, query ignored)."""

from __future__ import annotations

import re

CONVERSATION = "conversation"
CONVERSATION_READ = "conversation_read"
CONVERSATION_WEBSOCKET = "conversation_websocket"
LATENCY_BEACON = "latency_beacon"
SEGMENT = "segment"
STATSIG = "statsig"
API = "api"
STREAM_CONTROL = "stream_control"
CONVERSATION_PAGE = "conversation_page"
FILE_DOWNLOAD = "file_download"
CODEX_WEBSOCKET = "codex_websocket"
OTHER = "other"

KINDS = (CONVERSATION, CONVERSATION_READ, CONVERSATION_WEBSOCKET, LATENCY_BEACON, SEGMENT, STATSIG, API,
         STREAM_CONTROL, CONVERSATION_PAGE, FILE_DOWNLOAD, CODEX_WEBSOCKET)

# POST /backend-api/conversation, /backend-anon/conversation, /backend-api/f/conversation,
# /backend-anon/f/conversation, /backend-api/f/conversation/resume (any prefix, e.g. a reverse proxy).
_CONVERSATION_POST = re.compile(r"/backend-(?:api|anon)/(?:f/)?conversation(?:/resume)?/?$")
# GET /backend-api/conversation/<uuid-ish id>
_CONVERSATION_READ = re.compile(r"/backend-(?:api|anon)/conversation/([0-9A-Za-z][0-9A-Za-z_-]{7,})/?$")
# 2026 paged history (guide 6b): GET /backend-api/conversations/<id> (plural) and
# GET /backend-api/conversations/<id>/messages?before=<cursor>. The list (…/conversations?offset=)
# has no id and is not a page. An id has a digit (a UUID does), so that a word-named sibling
# route (…/conversations/archived, …/search) is not taken for a page.
_CONVERSATION_PAGE = re.compile(
    r"/backend-(?:api|anon)/conversations/((?=[^/]*[0-9])[0-9A-Za-z][0-9A-Za-z_-]{7,})(/messages)?/?$")
# GET /backend-api/files/download/<file id>: answers with a signed estuary URL (guide 6e).
_FILE_DOWNLOAD = re.compile(r"/backend-api/files/download/([0-9A-Za-z][0-9A-Za-z_-]*)/?$")
_NOT_IDS = frozenset({"init", "prepare", "resume", "textdocs", "voice", "gen_title", "message_feedback"})
# POST …/stop_conversation (the user pressed stop); GET …/conversation/<id>/stream_status (guide 6c).
_STOP_CONVERSATION = re.compile(r"/backend-(?:api|anon)/stop_conversation/?$")
_STREAM_STATUS = re.compile(r"/backend-(?:api|anon)/conversation/([0-9A-Za-z][0-9A-Za-z_-]{7,})/stream_status/?$")
_BEACON = re.compile(r"/lat/r/?$")
_SEGMENT = re.compile(r"/ces/v1/([tpigasb])/?$")
_STATSIG = re.compile(r"/v1/rgstr/?$")
_API_CHAT = re.compile(r"/chat/completions/?$")
_API_RESPONSES = re.compile(r"/v1/responses/?$")
# The Codex CLI and IDE extensions signed in with ChatGPT: Responses-API requests to chatgpt.com.
_CODEX_RESPONSES = re.compile(r"/backend-api/codex/responses/?$")


def is_codex_responses(path: str) -> bool:
    """The Codex backend's responses path (POST: HTTP/SSE; GET upgraded: the WebSocket transport)."""
    return bool(_CODEX_RESPONSES.search(strip_query(path)))


def strip_query(path: str) -> str:
    return path.split("?", 1)[0].split("#", 1)[0]


def recognise(method: str, path: str) -> str | None:
    """The kind of an HTTP request, or None when chatwire does not extract it."""
    path = strip_query(path)
    method = method.upper()
    if method == "POST":
        if _CONVERSATION_POST.search(path):
            return CONVERSATION
        if _BEACON.search(path):
            return LATENCY_BEACON
        if _SEGMENT.search(path):
            return SEGMENT
        if _STATSIG.search(path):
            return STATSIG
        if _API_CHAT.search(path) or _API_RESPONSES.search(path) or _CODEX_RESPONSES.search(path):
            return API
        if _STOP_CONVERSATION.search(path):
            return STREAM_CONTROL
    elif method == "GET":
        if _STREAM_STATUS.search(path):
            return STREAM_CONTROL
        match = _CONVERSATION_READ.search(path)
        if match and match.group(1) not in _NOT_IDS:
            return CONVERSATION_READ
        match = _CONVERSATION_PAGE.search(path)
        if match and match.group(1) not in _NOT_IDS:
            return CONVERSATION_PAGE
        if _FILE_DOWNLOAD.search(path):
            return FILE_DOWNLOAD
        if _CODEX_RESPONSES.search(path):  # the WebSocket transport's handshake (upgraded, or refused: 426)
            return CODEX_WEBSOCKET
    return None


def conversation_id_from_read(path: str) -> str | None:
    match = _CONVERSATION_READ.search(strip_query(path))
    return match.group(1) if match else None


def stream_control(path: str) -> tuple[str, str | None] | None:
    """``("stop", None)`` or ``("stream_status", conversation id)`` for a stream-control path."""
    path = strip_query(path)
    if _STOP_CONVERSATION.search(path):
        return "stop", None
    match = _STREAM_STATUS.search(path)
    return ("stream_status", match.group(1)) if match else None


def conversation_id_from_page(path: str) -> str | None:
    match = _CONVERSATION_PAGE.search(strip_query(path))
    return match.group(1) if match else None


def file_id_from_download(path: str) -> str | None:
    match = _FILE_DOWNLOAD.search(strip_query(path))
    return match.group(1) if match else None


def segment_endpoint(path: str) -> str | None:
    """The Segment call letter of a ``/ces/v1/<letter>`` path (``b`` = batch)."""
    match = _SEGMENT.search(strip_query(path))
    return match.group(1) if match else None


def is_stream_answer(content_type: str | None, accept: str | None) -> bool:
    """True when a response is an event stream that must pass through chunk by chunk.

    ``text/event-stream``, or no Content-Type at all on a request that asked for an event stream
    (some Codex backend answers come without one, guide section 6a).
    """
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media:
        return media == "text/event-stream"
    return "text/event-stream" in (accept or "").lower()


def might_stream(method: str, path: str) -> bool:
    """True for requests whose answer may be an event stream worth timing chunk by chunk."""
    return recognise(method, path) in (CONVERSATION, API)
