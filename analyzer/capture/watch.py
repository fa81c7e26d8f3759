"""The watch channel: small progress records from the live addon to ``analyze watch``.

The proxy's hot path does as little as possible: a chunk of a passing stream is appended to a
bounded deque (when it is full the chunk is dropped and that stream's live count is marked lost)
and nothing else. A daemon thread interprets the chunks with the extractors' own parsers
(``BodyDecoder``, ``SSEParser``, ``ConversationStream`` / ``ApiStream``) and sends one JSON datagram per
stream at most every ``PUBLISH_INTERVAL`` seconds, plus one when it ends, to a loopback UDP port
with a non-blocking ``sendto``: when nobody listens, or the listener is slow, the datagram is
dropped by the kernel; nothing queues without bound. The records carry counts, timings and
model names; never texts, headers, cookies or bodies.
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
from analyzer.extract.common import header
from analyzer.recognise import API, CONVERSATION, LATENCY_BEACON, SEGMENT, STATSIG, recognise
from analyzer.streams.conversation import ConversationStream
from analyzer.streams.decoding import BodyDecodeError, BodyDecoder
from analyzer.streams.openai_api import ApiStream, api_endpoint
from analyzer.streams.sse import SSEParser

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
    """The watch thread's view of one passing stream."""

    __slots__ = ("id", "kind", "path", "host", "started_at", "decoder", "parser", "stream", "model",
                 "first_at", "first_text_at", "last_at", "n_bytes", "n_events", "n_text_events", "lost",
                 "done", "sent_at", "dirty")

    def __init__(self, flow: http.HTTPFlow, kind: str) -> None:
        path = flow.request.path.split("?", 1)[0]
        self.id, self.kind, self.path, self.host = flow.id, kind, path, flow.request.pretty_host
        self.started_at = float(flow.request.timestamp_start)
        self.decoder = BodyDecoder(header(flow.response, "content-encoding"))
        self.parser = SSEParser()
        self.stream = ApiStream(api_endpoint(path)) if kind == API else ConversationStream()
        self.model = None
        self.first_at = self.first_text_at = self.last_at = None
        self.n_bytes = self.n_events = self.n_text_events = 0
        self.lost = self.done = self.dirty = False
        self.sent_at = 0.0

    def feed(self, at: float, data: bytes) -> None:
        self.n_bytes += len(data)
        self.first_at = self.first_at or at
        self.last_at = at
        self.dirty = True
        if self.lost:
            return
        try:
            for event in self.parser.feed(self.decoder.decode(data), at):
                info = self.stream.feed(event.data, event.event)
                self.n_events += 1
                if info.text:
                    self.n_text_events += 1
                    self.first_text_at = self.first_text_at or at
        except BodyDecodeError:
            self.lost = True

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
            if item[0] == "chunk":
                self._lost.add(item[1].id)

    def stream_started(self, flow: http.HTTPFlow) -> None:
        self._put(("start", flow))

    def chunk(self, flow: http.HTTPFlow, at: float, data: bytes) -> None:
        self._put(("chunk", flow, at, data))

    def stream_ended(self, flow: http.HTTPFlow) -> None:
        self._put(("end", flow))

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
                    self._live[flow.id] = _Live(flow, stream_kind)
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
        now = time.monotonic()
        for live in self._live.values():
            if live.dirty and now - live.sent_at >= PUBLISH_INTERVAL:
                live.dirty, live.sent_at = False, now
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
