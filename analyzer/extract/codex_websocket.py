"""The Codex backend's WebSocket transport (``GET …/backend-api/codex/responses`` upgraded).

Client text frames ``{"type": "response.create", …Responses request…}`` each ask for one answer;
the server's text frames are the same JSON objects as the HTTP transport's SSE ``data:`` payloads.
Each ``response.create`` becomes one call with id ``<websocket flow id>#<n>`` (n counts the
creates of the socket, from 0). The call is handed to the HTTP transport's extractor
(:func:`analyzer.extract.api.extract_api_call`) as the flow it would have been: the handshake's
request headers, the create frame (without ``type``) as the body, the request starting at the
frame, and the answer frames as an event stream, one chunk per frame at the frame's timestamp. So
both transports give the same ``api_calls`` columns and ``stream_events`` rows, by one code path.
``response.append`` and ``response.processed`` frames ask for no answer and make no row. A server
frame after its answer ended (a timing note) joins that answer's ``stream_events`` only; one before
any create (an error on connect) makes a call without a request.
"""

from __future__ import annotations

import json
import re

from mitmproxy import http

from analyzer.extract.api import extract_api_call
from analyzer.extract.common import METADATA_KEY, ExtractError
from analyzer.extract.conversation import stream_rows
from analyzer.extract.rows import Rows, new_rows
from analyzer.json_codec import parse_json
from analyzer.recognise import is_codex_responses
from analyzer.streams.openai_api import ApiStream
from analyzer.streams.sse import SSEEvent

# Events after which the server sends nothing more for this answer.
TERMINAL = frozenset({"response.completed", "response.failed", "response.incomplete", "error"})
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# Usage-limit response headers (``x-codex-primary-used-percent``, ``x-<limit>-limit-name``,
# ``x-codex-credits-*``): the handshake's are one observation, given to the socket's first call only.
_LIMIT_HEADER = re.compile(
    r"^x-.+-(?:primary|secondary)-(?:used-percent|window-minutes|reset-at|reset-after-seconds)$"
    r"|^x-.+-limit-name$|^x-codex-credits-", re.I)


def is_codex_websocket(flow: http.HTTPFlow) -> bool:
    return flow.websocket is not None and is_codex_responses(flow.request.path)


def frame_text(content: bytes | str) -> str | None:
    """A frame's content as text; None for binary that is not UTF-8."""
    if isinstance(content, str):
        return content
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _frame_object(text: str | None) -> dict | None:
    if text is None or not text.lstrip().startswith("{"):
        return None
    try:
        obj = parse_json(text)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _as_sse(text: str) -> bytes:
    """One frame as the SSE event the HTTP transport would have sent (``data:`` per line)."""
    return "".join(f"data: {line}\n" for line in _LINE_BREAK.split(text)).encode() + b"\n"


class CodexSocketCalls:
    """The calls of one Codex responses socket, read frame by frame (the live pipeline's reader).

    ``feed`` reads the frames that arrived since the last call; ``rows`` gives out the calls that
    ended (all of them with ``final``), and frames that came after a call was given out as more
    of its ``stream_events``. Same protocol as :class:`analyzer.extract.websocket.WebSocketAnswers`.
    """

    def __init__(self, flow: http.HTTPFlow) -> None:
        self.flow = flow
        self._calls: list[dict] = []
        self._frames_read = 0
        self.emitted = 0  # calls already given out

    def feed(self) -> None:
        assert self.flow.websocket is not None
        messages = self.flow.websocket.messages
        end = len(messages)
        for frame in messages[self._frames_read:end]:
            text = frame_text(frame.content)
            obj = _frame_object(text)
            kind = obj.get("type") if obj else None
            if frame.from_client:
                if kind == "response.create":
                    self._new_call(frame.timestamp, {k: v for k, v in obj.items() if k != "type"})
                continue
            if text is None:  # a binary frame: a protocol error on this socket (the flows row has it)
                continue
            call = self._calls[-1] if self._calls else self._new_call(frame.timestamp, None)
            # After the answer's end: kept in its stream_events, not in its timing.
            call["late" if call["finished"] else "frames"].append((frame.timestamp, text))
            if kind in TERMINAL:
                call["finished"] = True
        self._frames_read = end

    def _new_call(self, at: float, request: dict | None) -> dict:
        call = {"n": len(self._calls), "start": at, "request": request, "frames": [], "late": [],
                "finished": False, "n_events": 0}
        self._calls.append(call)
        return call

    def rows(self, rows: Rows, redact: bool, *, final: bool = False) -> None:
        """Add the rows of every call not given out yet that ended (all with ``final``)."""
        for call in self._calls[:self.emitted]:
            if call["late"]:
                self._late_rows(call, rows, redact)
        while self.emitted < len(self._calls):
            call = self._calls[self.emitted]
            if not (call["finished"] or final):
                break
            self.emitted += 1
            self._call_rows(call, rows, redact)
            if call["late"]:
                self._late_rows(call, rows, redact)

    def _call_flow(self, call: dict) -> http.HTTPFlow:
        """The call as the HTTP POST it stands for (see the module docstring)."""
        socket = self.flow
        flow = http.HTTPFlow(socket.client_conn, socket.server_conn)
        flow.id = f"{socket.id}#{call['n']}"
        request = socket.request.copy()
        request.method = "POST"
        request.headers.pop("content-encoding", None)
        request.headers["content-type"] = "application/json"
        request.headers["accept"] = "text/event-stream"
        # The per-call headers of the POST (turn metadata, window) ride in the create's client_metadata.
        for name, value in _metadata_headers((call["request"] or {}).get("client_metadata")).items():
            request.headers[name] = value
        request.content = json.dumps(call["request"] or {}, ensure_ascii=False, separators=(",", ":")).encode()
        request.timestamp_start = request.timestamp_end = call["start"]
        flow.request = request
        pieces = [_as_sse(text) for _, text in call["frames"]]
        last = call["frames"][-1][0] if call["frames"] else call["start"]
        handshake = socket.response
        flow.response = http.Response.make(200, b"", handshake.headers.copy() if handshake else {})
        flow.response.headers.pop("content-encoding", None)
        if call["n"] > 0:
            for name in [n for n in flow.response.headers if _LIMIT_HEADER.match(n)]:
                del flow.response.headers[name]
        flow.response.headers["content-type"] = "text/event-stream"
        flow.response.raw_content = b"".join(pieces)
        flow.response.timestamp_start = handshake.timestamp_start if handshake else call["start"]
        flow.response.timestamp_end = last
        flow.metadata[METADATA_KEY] = {"chunks": [[at, len(p)] for (at, _), p in zip(call["frames"], pieces,
                                                                                    strict=True)]}
        return flow

    def _call_rows(self, call: dict, rows: Rows, redact: bool) -> None:
        call_rows = new_rows()
        flow_id = f"{self.flow.id}#{call['n']}"
        try:
            extract_api_call(self._call_flow(call), call_rows, redact)
        except ExtractError as exc:
            call_rows["errors"].append({"flow_id": flow_id, "stage": exc.stage, "error": str(exc)})
        except Exception as exc:  # one strange call costs its own rows only, never the socket's others
            call_rows["errors"].append({"flow_id": flow_id, "stage": "codex_websocket",
                                        "error": f"{type(exc).__name__}: {exc}"})
        for error in call_rows["errors"]:
            error.setdefault("at", call["start"])
        sizes = [len(text.encode()) for _, text in call["frames"]]
        if len(sizes) == len(call_rows["stream_events"]):  # one event per frame: count the frame, not its SSE
            for row, size in zip(call_rows["stream_events"], sizes, strict=True):
                row["n_bytes"] = size
        for row in call_rows["api_calls"]:
            row["status_code"] = None  # no HTTP status per call: the handshake's 101 is on the flows row
            if call["request"] is None:
                row["request_json"] = None
            error = None if row.get("error") else _call_error(call)
            if error:
                row["error"] = error
        call["n_events"] = len(call_rows["stream_events"])
        call["frames"] = []  # given out: a socket open all session keeps no answers in memory
        for name, table_rows in call_rows.items():
            rows[name].extend(table_rows)

    def _late_rows(self, call: dict, rows: Rows, redact: bool) -> None:
        flow_id = f"{self.flow.id}#{call['n']}"
        events = [SSEEvent(event=None, data=text, at=at, n_bytes=len(text.encode())) for at, text in call["late"]]
        late = stream_rows(flow_id, events, call["start"], redact, ApiStream("responses").feed)
        for row in late:
            row["seq"] += call["n_events"]
        call["n_events"] += len(late)
        call["late"] = []
        rows["stream_events"].extend(late)


def _metadata_headers(client_metadata) -> dict[str, str]:
    """The request headers a create's ``client_metadata`` repeats (the Codex CLI puts ``x-codex-*``,
    ``thread_id``, ``session_id`` there: the WebSocket has no headers per call)."""
    if not isinstance(client_metadata, dict):
        return {}
    out = {k.lower(): v for k, v in client_metadata.items()
           if isinstance(k, str) and k.lower().startswith("x-codex-") and isinstance(v, str)}
    for key, name in (("thread_id", "thread-id"), ("session_id", "session-id")):
        if isinstance(client_metadata.get(key), str):
            out[name] = client_metadata[key]
    return out


def _call_error(call: dict) -> str | None:
    """A wrapped error frame ``{"type":"error","status":429,"error":{…}}``, or an answer cut off."""
    if not call["finished"]:
        return "socket closed before the answer ended"
    obj = _frame_object(call["frames"][-1][1]) if call["frames"] else None
    if not obj or obj.get("type") != "error":
        return None
    status = obj.get("status", obj.get("status_code"))
    detail = obj.get("error") if isinstance(obj.get("error"), dict) else {}
    code = detail.get("type") or detail.get("code")
    message = detail.get("message") or obj.get("message") or "error event"
    head = f"{status}: " if isinstance(status, int) and not isinstance(status, bool) else ""
    return f"{head}{code}: {message}" if code else f"{head}{message}"


def extract_codex_websocket(flow: http.HTTPFlow, rows: Rows, redact: bool) -> None:
    """All calls of a finished socket; a handshake that was refused (426: the client falls back to
    the HTTP POST) has only its ``flows`` row."""
    if flow.websocket is None:
        return
    calls = CodexSocketCalls(flow)
    calls.feed()
    calls.rows(rows, redact, final=True)
