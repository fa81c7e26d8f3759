"""The watch channel: small progress records from the live addon to ``analyze watch``.

The proxy's hot path does as little as possible: a chunk of a passing stream is appended to a
bounded deque (when it is full the chunk is dropped and that stream's live count is marked lost)
and nothing else. A daemon thread interprets the chunks with the extractors' own parsers
(``BodyDecoder``, ``SSEParser``, ``ConversationStream`` / ``ApiStream``) and sends one JSON datagram per
stream at most every ``PUBLISH_INTERVAL`` seconds, plus one when it ends, to a loopback UDP port
with a non-blocking ``sendto``: when nobody listens, or the listener is slow, the datagram is
dropped by the kernel; nothing queues without bound. The records carry counts, timings and
model names; never texts, headers, cookies or bodies.

WebSocket answers take the same path: the addon's ``websocket_message`` hook appends the frame
that just arrived, and the thread splits a socket's frames into answers as the extractors do (one
per ``response.create`` on the Codex socket, ``<socket flow id>#<n>`` as in ``api_calls``; one per
answer on ChatGPT's conversation socket, as in ``conversation_turns``).
"""

from __future__ import annotations

import collections
import logging
import socket
import threading
import time

import orjson
from mitmproxy import http

from analyzer.extract import extract_flow
from analyzer.extract.codex_websocket import TERMINAL as CODEX_TERMINAL
from analyzer.extract.codex_websocket import frame_text
from analyzer.extract.common import header
from analyzer.json_codec import parse_json
from analyzer.recognise import (
    API,
    CODEX_WEBSOCKET,
    CONVERSATION,
    CONVERSATION_WEBSOCKET,
    LATENCY_BEACON,
    SEGMENT,
    STATSIG,
    is_codex_responses,
    recognise,
)
from analyzer.streams.conversation import ConversationStream
from analyzer.streams.decoding import BodyDecodeError, BodyDecoder
from analyzer.streams.openai_api import ApiStream, api_endpoint
from analyzer.streams.sse import SSEParser
from analyzer.streams.websocket import frame_turn_key, is_conversation_frame, sse_text_from_frame

log = logging.getLogger(__name__)

RECORD_VERSION = 1
PUBLISH_INTERVAL = 0.1  # seconds between two records of one stream
MAX_PENDING = 4096  # chunks waiting for the thread; beyond this they are dropped
ANALYTICS_TABLES = ("latency_beacons", "segment_events", "statsig_events")


def parse_address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``udp://HOST:PORT``) of a loopback address, else ValueError."""
    text = value.removeprefix("udp://")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"capture_watch must be HOST:PORT, not {value!r}")
    host = host.strip("[]") or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"capture_watch must be a loopback address (127.0.0.1 or ::1), not {host!r}")
    return ("127.0.0.1" if host == "localhost" else host), int(port)


class _Live:
    """The watch thread's view of one passing answer (an HTTP stream, or one answer of a socket)."""

    __slots__ = ("id", "kind", "path", "host", "started_at", "decoder", "parser", "stream", "first_at",
                 "first_text_at", "last_at", "n_bytes", "n_events", "n_text_events", "lost", "done", "sent_at",
                 "dirty", "key")

    def __init__(self, answer_id: str, kind: str, path: str, host: str, started_at: float,
                 stream: ApiStream | ConversationStream, decoder: BodyDecoder | None = None) -> None:
        self.id, self.kind, self.path, self.host, self.started_at = answer_id, kind, path, host, started_at
        self.decoder = decoder
        self.parser = SSEParser()
        self.stream = stream
        self.first_at = self.first_text_at = self.last_at = None
        self.n_bytes = self.n_events = self.n_text_events = 0
        self.lost = self.done = self.dirty = False
        self.sent_at = 0.0
        self.key: str | None = None  # the carrier's answer id (ChatGPT's socket), when it names one

    @classmethod
    def from_flow(cls, flow: http.HTTPFlow, kind: str) -> _Live:
        path = flow.request.path.split("?", 1)[0]
        stream = ApiStream(api_endpoint(path)) if kind == API else ConversationStream()
        return cls(flow.id, kind, path, flow.request.pretty_host, float(flow.request.timestamp_start), stream,
                   BodyDecoder(header(flow.response, "content-encoding")))

    def _arrived(self, at: float, n_bytes: int) -> None:
        self.n_bytes += n_bytes
        self.first_at = self.first_at or at
        self.last_at = at
        self.dirty = True

    def feed(self, at: float, data: bytes) -> None:
        """A chunk of an HTTP answer body, as it came (encoded, SSE)."""
        self._arrived(at, len(data))
        if self.lost:
            return
        try:
            for event in self.parser.feed(self.decoder.decode(data) if self.decoder else data, at):
                self.feed_event(at, event.data, event.event)
        except BodyDecodeError:
            self.lost = True

    def feed_event(self, at: float, data: str, event: str | None = None, n_bytes: int = 0) -> str:
        """One event of the answer (an SSE event's data, or a Codex socket's frame); its type."""
        if n_bytes:
            self._arrived(at, n_bytes)
        info = self.stream.feed(data, event)
        self.n_events += 1
        if info.text:
            self.n_text_events += 1
            self.first_text_at = self.first_text_at or at
        return info.type

    def record(self) -> dict:
        stream = self.stream
        if isinstance(stream, ApiStream):
            model = stream.model
            tokens = stream.tokens()[1]
            status = stream.finish_reason
        else:
            answer = stream.answer() or {}
            model = (answer.get("metadata") or {}).get("model_slug") or stream.server_model_slug
            tokens = None  # the web app reports no token counts in the stream (the beacon does)
            status = answer.get("status") or ("handed_off" if stream.handoff else None)
        return {
            "v": RECORD_VERSION, "type": "stream", "id": self.id, "kind": self.kind, "host": self.host,
            "path": self.path, "model": model, "started_at": self.started_at,
            "ttft_ms": None if self.first_text_at is None else (self.first_text_at - self.started_at) * 1000.0,
            "elapsed_ms": None if self.last_at is None else (self.last_at - self.started_at) * 1000.0,
            "text_elapsed_ms": None if self.first_text_at is None else (self.last_at - self.first_text_at) * 1000.0,
            "n_bytes": self.n_bytes, "n_events": self.n_events, "n_text_events": self.n_text_events,
            "completion_tokens": tokens, "status": status, "done": self.done, "lost": self.lost,
        }


class _LiveSocket:
    """The answers of one WebSocket as its frames pass, split as the extractors split them
    (analyzer/extract/codex_websocket.py, analyzer/extract/websocket.py)."""

    __slots__ = ("flow_id", "kind", "path", "host", "answers", "n_answers", "last_client_at", "parser",
                 "unknown_frames")

    def __init__(self, flow: http.HTTPFlow) -> None:
        self.flow_id = flow.id
        self.path = flow.request.path.split("?", 1)[0]
        self.host = flow.request.pretty_host
        self.kind = CODEX_WEBSOCKET if is_codex_responses(self.path) else None  # ChatGPT's: told by a frame
        self.answers: list[_Live] = []  # the last few only: a socket open all session keeps no history
        self.n_answers = 0
        self.last_client_at: float | None = None
        self.parser = SSEParser()
        self.unknown_frames = 0  # server frames before one told what the socket carries

    @property
    def ignored(self) -> bool:
        """No answer in its first frames: a socket of another kind (the extractor looks at 50 too)."""
        return self.kind is None and self.unknown_frames >= 50

    def _new(self, at: float, stream: ApiStream | ConversationStream) -> _Live:
        live = _Live(f"{self.flow_id}#{self.n_answers}", self.kind, self.path, self.host, at, stream)
        self.n_answers += 1
        self.answers.append(live)
        del self.answers[:-2]
        return live

    def frame(self, from_client: bool, content: bytes | str, at: float) -> list[_Live]:
        """Read one frame; the answers it ended (to publish at once)."""
        if self.kind == CODEX_WEBSOCKET:
            return self._codex_frame(from_client, content, at)
        if from_client:
            self.last_client_at = at
            return []
        if self.kind is None:
            if not is_conversation_frame(content):
                self.unknown_frames += 1
                return []
            self.kind = CONVERSATION_WEBSOCKET
        text = sse_text_from_frame(content)
        if text is None:
            return []  # a conversation-update frame: no answer text
        key = frame_turn_key(content)
        ended = []
        for event in self.parser.feed(text, at):
            current = self.answers[-1] if self.answers else None
            if current is None or current.done or (key and current.key and key != current.key):
                if current is not None and not current.done:
                    current.done = True  # the next answer began: this one is over
                    ended.append(current)
                current = self._new(self.last_client_at if self.last_client_at is not None else at,
                                    ConversationStream())
                current.key = key
            current.feed_event(at, event.data, event.event, n_bytes=len(event.data))
            if event.data == "[DONE]":
                current.done = True
                ended.append(current)
        return ended

    def _codex_frame(self, from_client: bool, content: bytes | str, at: float) -> list[_Live]:
        text = frame_text(content)
        if from_client:
            if text is None or not text.lstrip().startswith("{"):
                return []
            try:
                obj = parse_json(text)
            except ValueError:
                return []
            if not isinstance(obj, dict) or obj.get("type") != "response.create":
                return []
            ended = [live for live in self.answers if not live.done]  # a create before the last answer ended
            for live in ended:
                live.done = True
            self._new(at, ApiStream("responses"))
            return ended
        if text is None:
            return []
        current = self.answers[-1] if self.answers else self._new(at, ApiStream("responses"))
        if current.done:
            return []  # a frame after the answer ended (a timing note): not part of its timing
        if current.feed_event(at, text, n_bytes=len(text)) in CODEX_TERMINAL:
            current.done = True
            return [current]
        return []


class WatchPublisher:
    """Publishes progress records for ``analyze watch``; the addon calls only the cheap methods."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.pending: collections.deque = collections.deque()
        self.dropped_chunks = 0
        self.dropped_records = 0
        self._lost: set[str] = set()
        self._live: dict[str, _Live] = {}
        self._sockets: dict[str, _LiveSocket] = {}
        self._counts = dict.fromkeys(ANALYTICS_TABLES, 0)
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="chatwire-watch", daemon=True)
        self._thread.start()

    # -- the proxy's side: appends only ------------------------------------------------------
    def _put(self, item: tuple) -> None:
        if len(self.pending) < MAX_PENDING:
            self.pending.append(item)
        else:
            self.dropped_chunks += 1
            if item[0] in ("chunk", "frame"):
                self._lost.add(item[1].id)

    def stream_started(self, flow: http.HTTPFlow) -> None:
        self._put(("start", flow))

    def chunk(self, flow: http.HTTPFlow, at: float, data: bytes) -> None:
        self._put(("chunk", flow, at, data))

    def stream_ended(self, flow: http.HTTPFlow) -> None:
        self._put(("end", flow))

    def websocket_message(self, flow: http.HTTPFlow, message) -> None:
        """A WebSocket frame (``mitmproxy.websocket.WebSocketMessage``) just passed, either way."""
        self._put(("frame", flow, message))

    def socket_ended(self, flow: http.HTTPFlow) -> None:
        self._put(("socket_end", flow))

    def flow_finished(self, flow: http.HTTPFlow) -> None:
        """A finished flow of a kind whose rows ``analyze watch`` counts (beacon, analytics)."""
        if recognise(flow.request.method, flow.request.path) in (LATENCY_BEACON, SEGMENT, STATSIG):
            self._put(("flow", flow))

    # -- the thread's side -------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(PUBLISH_INTERVAL / 2)
            try:
                self._drain()
            except Exception:  # the watch view is best effort; the capture never depends on it
                log.exception("chatwire: watch channel failed")

    def _drain(self) -> None:
        while self.pending:
            item = self.pending.popleft()
            kind = item[0]
            if kind == "start":
                flow = item[1]
                stream_kind = recognise(flow.request.method, flow.request.path)
                if stream_kind in (CONVERSATION, API):
                    self._live[flow.id] = _Live.from_flow(flow, stream_kind)
            elif kind == "chunk":
                live = self._live.get(item[1].id)
                if live is not None:
                    live.lost = live.lost or item[1].id in self._lost
                    live.feed(item[2], item[3])
            elif kind == "end":
                live = self._live.pop(item[1].id, None)
                self._lost.discard(item[1].id)
                if live is not None:
                    live.done = True
                    self.send(live.record())
            elif kind == "flow":
                self._count(item[1])
            elif kind == "frame":
                self._frame(item[1], item[2])
            elif kind == "socket_end":
                self._socket_end(item[1])
        now = time.monotonic()
        for live in self._live.values():
            if live.dirty and now - live.sent_at >= PUBLISH_INTERVAL:
                live.dirty, live.sent_at = False, now
                self.send(live.record())
        for socket_state in self._sockets.values():
            for live in socket_state.answers:
                if live.dirty and not live.done and now - live.sent_at >= PUBLISH_INTERVAL:
                    live.dirty, live.sent_at = False, now
                    self.send(live.record())

    def _frame(self, flow: http.HTTPFlow, message) -> None:
        state = self._sockets.get(flow.id)
        if state is None:
            state = self._sockets[flow.id] = _LiveSocket(flow)
        if state.ignored:
            return
        lost = flow.id in self._lost
        for live in state.frame(message.from_client, message.content, float(message.timestamp)):
            live.lost = live.lost or lost
            live.dirty, live.sent_at = False, time.monotonic()
            self.send(live.record())

    def _socket_end(self, flow: http.HTTPFlow) -> None:
        state = self._sockets.pop(flow.id, None)
        self._lost.discard(flow.id)
        if state is None:
            return
        for live in state.answers:
            if not live.done:
                live.done = True  # the socket closed before the answer ended
                self.send(live.record())

    def _count(self, flow: http.HTTPFlow) -> None:
        rows = extract_flow(flow, source="proxy", redact=True)
        for table in ANALYTICS_TABLES:
            self._counts[table] += len(rows.get(table, ()))
        record = {"v": RECORD_VERSION, "type": "analytics", "counts": dict(self._counts)}
        for beacon in rows.get("latency_beacons", ()):
            record["beacon"] = {"model": beacon.get("model"), "ts_first_token_ms": beacon.get("ts_first_token_ms"),
                                "count_tokens": beacon.get("count_tokens"),
                                "ts_total_request_ms": beacon.get("ts_total_request_ms"),
                                "sent_at": beacon.get("sent_at")}
        self.send(record)

    def send(self, record: dict) -> None:
        try:
            self.sock.sendto(orjson.dumps(record), self.address)
        except OSError:  # EAGAIN (buffer full), ECONNREFUSED (nobody listens): drop it
            self.dropped_records += 1

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=5)
        try:
            self._drain()
        except Exception:
            log.exception("chatwire: watch channel failed")
        self.sock.close()
