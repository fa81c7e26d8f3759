"""Which kind of traffic a flow is, decided by method and path (any host, query ignored)."""

from __future__ import annotations

import re
from dataclasses import dataclass

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
CODEX_ANALYTICS = "codex_analytics"
MCP = "mcp"
CODEX_READ = "codex_read"

# 2026 telemetry (guide 6f) and local models (6g)
SEGMENT_METRICS = "segment_metrics"
STATSC = "statsc"
OTLP_METRICS = "otlp_metrics"
DATADOG_LOGS = "datadog_logs"
OLLAMA = "ollama"
CODEX_WEBSOCKET = "codex_websocket"
OTHER = "other"

KINDS = (CONVERSATION, CONVERSATION_READ, CONVERSATION_WEBSOCKET, LATENCY_BEACON, SEGMENT, STATSIG, API,
         STREAM_CONTROL, CONVERSATION_PAGE, FILE_DOWNLOAD, CODEX_ANALYTICS, MCP, CODEX_READ, SEGMENT_METRICS,
         STATSC, OTLP_METRICS, DATADOG_LOGS, OLLAMA, CODEX_WEBSOCKET)

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
# The Codex CLI's own telemetry, its MCP servers over streamable HTTP, and the reads around a session.
_CODEX_ANALYTICS = re.compile(r"/backend-api/codex/analytics-events/events/?$")
_MCP = re.compile(r"/backend-api/ps/mcp/?$")
_CODEX_READ = re.compile(r"/backend-api/(?:codex/models|wham/.+|ps/plugins/.+)$")
# Segment's metrics series (analytics.js RemoteMetrics: api.segment.io/v1/m, ChatGPT's /ces/v1/m).
_SEGMENT_METRICS = re.compile(r"/v1/m/?$")
_STATSC = re.compile(r"/ces/statsc/flush/?$")
# OTLP/HTTP metrics export (ab.chatgpt.com/otlp/v1/metrics; /v1/metrics is the OTLP default path).
_OTLP_METRICS = re.compile(r"/v1/metrics/?$")
# Datadog browser logs: straight to the intake, or through ChatGPT's forwarder with ddforward=/api/v2/logs.
_DATADOG_LOGS = re.compile(r"/api/v2/logs/?$")
_DATADOG_FORWARDER = re.compile(r"/ces/v1/telemetry/intake/?$")
_DDFORWARD_LOGS = re.compile(r"(?:^|&)ddforward=(?:/|%2F)api(?:/|%2F)v2(?:/|%2F)logs(?:$|[?&%])", re.I)
# Ollama's native API (the OpenAI-compatible /v1/chat/completions is API above).
_OLLAMA = re.compile(r"/api/(?:chat|generate)/?$")


def is_codex_responses(path: str) -> bool:
    """The Codex backend's responses path (POST: HTTP/SSE; GET upgraded: the WebSocket transport)."""
    return bool(_CODEX_RESPONSES.search(strip_query(path)))


def strip_query(path: str) -> str:
    return path.split("?", 1)[0].split("#", 1)[0]


@dataclass(frozen=True)
class _Rule:
    """A path pattern and the kind it means; ``id_group``: its first group must not be a word route
    (``_NOT_IDS``); ``query``: the query must match too."""

    pattern: re.Pattern[str]
    kind: str
    id_group: bool = False
    query: re.Pattern[str] | None = None

    def matches(self, path: str, query: str) -> bool:
        match = self.pattern.search(path)
        if match is None or (self.id_group and match.group(1) in _NOT_IDS):
            return False
        return self.query is None or self.query.search(query) is not None


# Per method, the first rule that matches decides (the order matters where paths overlap).
_RULES: dict[str, tuple[_Rule, ...]] = {
    "POST": (
        _Rule(_CONVERSATION_POST, CONVERSATION),
        _Rule(_BEACON, LATENCY_BEACON),
        _Rule(_SEGMENT, SEGMENT),
        _Rule(_STATSIG, STATSIG),
        _Rule(_API_CHAT, API),
        _Rule(_API_RESPONSES, API),
        _Rule(_CODEX_RESPONSES, API),
        _Rule(_STOP_CONVERSATION, STREAM_CONTROL),
        _Rule(_CODEX_ANALYTICS, CODEX_ANALYTICS),
        _Rule(_MCP, MCP),
        _Rule(_SEGMENT_METRICS, SEGMENT_METRICS),
        _Rule(_STATSC, STATSC),
        _Rule(_OTLP_METRICS, OTLP_METRICS),
        _Rule(_DATADOG_LOGS, DATADOG_LOGS),
        _Rule(_DATADOG_FORWARDER, DATADOG_LOGS, query=_DDFORWARD_LOGS),
        _Rule(_OLLAMA, OLLAMA),
        _Rule(_CODEX_READ, CODEX_READ),
    ),
    "GET": (
        _Rule(_STREAM_STATUS, STREAM_CONTROL),
        _Rule(_CONVERSATION_READ, CONVERSATION_READ, id_group=True),
        _Rule(_CONVERSATION_PAGE, CONVERSATION_PAGE, id_group=True),
        _Rule(_FILE_DOWNLOAD, FILE_DOWNLOAD),
        _Rule(_CODEX_RESPONSES, CODEX_WEBSOCKET),  # the WebSocket transport's handshake (upgraded, or refused: 426)
        _Rule(_CODEX_READ, CODEX_READ),
    ),
}


def recognise(method: str, path: str) -> str | None:
    """The kind of an HTTP request, or None when chatwire does not extract it."""
    query = path.split("#", 1)[0].partition("?")[2]
    path = strip_query(path)
    for rule in _RULES.get(method.upper(), ()):
        if rule.matches(path, query):
            return rule.kind
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
    return recognise(method, path) in (CONVERSATION, API, MCP, OLLAMA)


NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl",
                          "application/x-jsonlines"})


def is_ndjson_stream(method: str, path: str, content_type: str | None) -> bool:
    """True when an answer is a recognised Ollama NDJSON stream that must pass chunk by chunk.

    Only for the recognised paths: an NDJSON download elsewhere is no stream of ours to time."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media in NDJSON_TYPES and recognise(method, path) == OLLAMA
