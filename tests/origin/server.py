"""The local stand-in for chatgpt.com and an OpenAI-compatible API (an ASGI app served by hypercorn).

It speaks HTTP/1.1 and HTTP/2 (TLS with ALPN, or plain), and WebSockets. Conversation answers are
streamed one SSE event per chunk at scheduled times, and every chunk's send time is logged so a test
can compare what a client (or a proxy) saw with what the origin did.

Run: ``python -m tests.origin.server --port 0 --ready-file F [--tls] [--log F]``, or from Python
``with start_origin(tls=True) as origin: ...``.

Request headers that steer it:

- ``x-origin-format: legacy|v1|ws2024|celsius`` — the stream generation (default: by path).
- ``x-origin-delays-ms: FIRST,GAP`` — ms before the first text event and between text events.
- ``x-origin-gzip: 1`` or ``x-origin-encoding: gzip|deflate|br|zstd`` — compress, flushed per event.
- ``x-origin-fail: 429-once`` (first identical request gets 429), ``drop-mid-stream`` (abort the TCP
  connection after half the events) or ``reset-mid-stream`` (HTTP/2: RST_STREAM with INTERNAL_ERROR
  after half the events, the connection stays up; HTTP/1.1 has no stream reset, so it aborts the
  connection as ``drop-mid-stream`` does). The cut comes before the first text event of the second
  half (at its scheduled time); ``x-origin-fail-at: N`` moves it to event N.
- ``x-origin-max-tokens: N`` — cut the answer (``finish_details.type = max_tokens``).
- ``x-origin-reasoning: 1`` — a ``thoughts`` message before the answer (v1 only).
- ``x-origin-events: 2026`` — a v1 stream with the 2026 events of guide 6d interleaved.
- ``x-origin-cut-after: N`` — end the stream cleanly after N events, without ``[DONE]`` (guide 6c: what
  makes the page resume). Also on a resume, which is then cut again.
- ``x-origin-resume: persisted`` — a resume answers 410 ``persisted_final_available``.
- ``x-origin-image-ms: N`` — an image turn (``system_hints: ["picture_v2"]``, tests.origin.history2026):
  ms between its ``async-task-start`` and ``async-task-update-message`` frames on the celsius socket.

Resumed streams (guide 6c): every v1 answer is kept; ``POST …/f/conversation/resume``
``{conversation_id, offset}`` with the ``x-conduit-token`` the POST answered with continues it from
event ``offset``; without the token it is a 404 ``tokenless_resume_unavailable``; an answer sent in
full (or stopped) is a 410 ``persisted_final_available``. ``POST …/stop_conversation`` stops it;
``GET …/conversation/<id>/stream_status`` says ``IS_STREAMING`` / ``COMPLETE``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import random
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from tests.origin import codex, codex_ws, history2026, ollama, telemetry2026
from tests.origin import formats as F
from tests.origin.certs import CertPaths, generate_certs

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DELAYS: tuple[float, float] = (150.0, 20.0)
FORMATS = ("legacy", "v1", "ws2024", "celsius")
IATA = ("SIN", "KIX", "MIA", "FRA", "AMS", "LHR", "IAD", "SJC", "NRT", "CDG", "MBA", "SEA", "ORD", "BOM")
EVENT_STREAM = "text/event-stream; charset=utf-8"

# Route modules for the 2026 formats (guide section 6): each has ``async handle_http(app, req, send)
# -> bool`` (True: answered) and optionally ``async handle_websocket(app, scope, receive, send, path)
# -> bool`` (called after the connect message was received).
ROUTE_MODULES = (codex, codex_ws, history2026, telemetry2026, ollama)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


def new_cf_ray() -> str:
    """A Cloudflare-style ray id: 16 hex digits, a dash, an IATA airport code."""
    return f"{secrets.token_hex(8)}-{random.choice(IATA)}"


# ---------------------------------------------------------------------------------------------
# The send log


class OriginLog:
    """Append-only records (in memory, optionally mirrored to a JSONL file), safe across threads."""

    def __init__(self, path: Path | str | None = None) -> None:
        self._records: list[dict] = []
        self._lock = threading.Lock()
        self._fh = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115 - lives as long as the log

    def add(self, **record: Any) -> None:
        with self._lock:
            record["i"] = len(self._records)
            self._records.append(record)
            if self._fh:
                self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                self._fh.flush()

    def since(self, n: int = 0) -> list[dict]:
        with self._lock:
            return list(self._records[max(n, 0):])

    def close(self) -> None:
        if self._fh:
            self._fh.close()
            self._fh = None


# ---------------------------------------------------------------------------------------------
# Requests and encoders


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    scheme: str
    http_version: str
    client: tuple | None
    t_mono: float = field(default_factory=time.monotonic)
    t_wall: float = field(default_factory=time.time)
    rid: str = field(default_factory=lambda: secrets.token_hex(6))
    asgi_send: Any = None  # hypercorn's own send callable (for an HTTP/2 stream reset)

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON (never raises)."""
        try:
            return json.loads(self.body or b"null")
        except (ValueError, UnicodeDecodeError):
            return None

    @property
    def host(self) -> str:
        return self.headers.get("host") or self.headers.get(":authority") or "localhost"

    @property
    def ws_base(self) -> str:
        return ("wss" if self.scheme == "https" else "ws") + "://" + self.host

    def delays(self, default: tuple[float, float]) -> tuple[float, float]:
        raw = self.headers.get("x-origin-delays-ms", "")
        try:
            first, gap = (float(x) for x in raw.split(","))
            return max(first, 0.0), max(gap, 0.0)
        except ValueError:
            return default


class Encoder:
    """Incremental content-encoding with a flush per event, so each event stays decodable on arrival."""

    def __init__(self, name: str) -> None:
        self.name = name
        if name in ("gzip", "deflate"):
            self._z = zlib.compressobj(6, zlib.DEFLATED, 31 if name == "gzip" else 15)
        elif name == "br":
            import brotli

            self._br = brotli.Compressor()
        elif name == "zstd":
            import zstandard

            self._zstd = zstandard.ZstdCompressor().compressobj()
            self._zflush = zstandard.COMPRESSOBJ_FLUSH_BLOCK
        elif name != "identity":
            raise ValueError(f"unknown encoding {name!r}")

    def encode(self, data: bytes, last: bool) -> bytes:
        if self.name in ("gzip", "deflate"):
            return self._z.compress(data) + (self._z.flush() if last else self._z.flush(zlib.Z_SYNC_FLUSH))
        if self.name == "br":
            return self._br.process(data) + (self._br.finish() if last else self._br.flush())
        if self.name == "zstd":
            return self._zstd.compress(data) + (self._zstd.flush() if last else self._zstd.flush(self._zflush))
        return data


def encoding_for(req: Request) -> str:
    name = req.headers.get("x-origin-encoding", "").strip().lower()
    if name in ("gzip", "deflate", "br", "zstd"):
        return name
    return "gzip" if req.headers.get("x-origin-gzip", "") in ("1", "true", "yes") else "identity"


class DropConnection(Exception):
    """Raised to end a response half-way after the connection was aborted."""


def abort_connection(client: tuple | None) -> bool:
    """Abort the TCP connection of ``client`` (peer address) so the response ends half-way.

    ASGI has no "reset this connection" message and hypercorn keeps an unfinished HTTP/1.1 response
    open when the app returns early, so we find the transport in the (selector) event loop by its
    peer address. Private asyncio API, acceptable for a test server.
    """
    if not client:
        return False
    loop = asyncio.get_running_loop()
    transports = getattr(loop, "_transports", {})
    for transport in list(transports.values()):
        try:
            peer = transport.get_extra_info("peername")
        except Exception:  # noqa: BLE001 - a closing transport may refuse
            continue
        if peer and tuple(peer[:2]) == tuple(client[:2]):
            transport.abort()
            return True
    return False


async def reset_h2_stream(asgi_send: Any, error_code: int = 0x2) -> bool:
    """Send RST_STREAM (default INTERNAL_ERROR) for the HTTP/2 stream ``asgi_send`` belongs to.

    ASGI has no stream reset and hypercorn leaves an unfinished HTTP/2 stream open when the app
    returns early. Its send callable is bound to the stream, which knows its id and its connection's
    protocol: reset through that (private hypercorn API, acceptable for a test server).
    """
    stream = getattr(asgi_send, "__self__", None)
    protocol = getattr(getattr(stream, "send", None), "__self__", None)
    connection = getattr(protocol, "connection", None)
    if stream is None or connection is None or not hasattr(connection, "reset_stream"):
        return False  # HTTP/1.1: no streams to reset
    connection.reset_stream(stream.stream_id, error_code)
    await protocol._flush()
    return True  # the app then returns: hypercorn forgets the stream without sending on it


# ---------------------------------------------------------------------------------------------
# The app


@dataclass
class Resumable:
    """A v1 answer a client may resume: every event, how far it went out, its conduit token."""

    events: list[F.WireEvent]
    token: str
    message_id: str
    cf_ray: str
    sent: int = 0
    stopped: bool = False

    @property
    def complete(self) -> bool:
        return self.stopped or self.sent >= len([e for e in self.events if e.kind != "done"])


@dataclass
class PendingStream:
    """Frames waiting for a WebSocket subscriber (2024 access token or 2025 celsius topic)."""

    frames: list[F.WireEvent]
    delays: tuple[float, float]
    conversation_id: str
    cf_ray: str


class OriginApp:
    """ASGI application: see the module docstring for the routes and knobs."""

    def __init__(self, *, log: OriginLog | None = None, delays: tuple[float, float] = DEFAULT_DELAYS) -> None:
        self.log = log or OriginLog()
        self.delays = delays
        self.conversations: dict[str, F.ConversationTree] = {}
        self.pending: dict[str, PendingStream] = {}
        self._pending_ready: dict[str, asyncio.Event] = {}
        self._failed_once: set[str] = set()
        self.resumable: dict[str, Resumable] = {}  # conversation id -> its last v1 answer
        self.async_updates: list = []  # (delay ms, conversation-update frames) for history2026

    # -- ASGI entry -------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            try:
                await self._websocket(scope, receive, send)
            except Exception:  # noqa: BLE001 - a test server must survive any client
                log.exception("websocket handler failed")

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracked_send(msg: dict) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            body = bytearray()
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return
                body += msg.get("body", b"")
                if not msg.get("more_body"):
                    break
            headers: dict[str, str] = {}
            for k, v in scope.get("headers", []):
                headers[k.decode("latin-1").lower()] = v.decode("latin-1")
            req = Request(
                method=scope.get("method", "GET"), path=scope.get("path", "/"),
                query=dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))),
                headers=headers, body=bytes(body), scheme=scope.get("scheme", "http"),
                http_version=scope.get("http_version", "1.1"), client=scope.get("client"), asgi_send=send)
            await self.dispatch(req, tracked_send)
        except DropConnection:
            return
        except Exception as exc:  # noqa: BLE001 - never crash on odd input
            log.exception("handler failed for %s", scope.get("path"))
            if not started:
                with contextlib.suppress(Exception):
                    await self._json(tracked_send, 500, {"detail": f"origin error: {exc}"})

    # -- helpers ----------------------------------------------------------------------------

    async def _json(self, send: Send, status: int, obj: Any, headers: list[tuple[str, str]] | None = None) -> None:
        await self._bytes(send, status, json.dumps(obj).encode(), "application/json", headers)

    async def _bytes(self, send: Send, status: int, body: bytes, content_type: str,
                     headers: list[tuple[str, str]] | None = None) -> None:
        hdrs = [("content-type", content_type), ("content-length", str(len(body)))] + (headers or [])
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in hdrs]})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    def _log_request(self, req: Request, status: int, **extra: Any) -> None:
        self.log.add(kind="request", rid=req.rid, t=req.t_wall, method=req.method, path=req.path,
                     status=status, http_version=req.http_version, **extra)

    async def stream(self, req: Request, send: Send, events: list[F.WireEvent], *, cf_ray: str | None = None,
                     content_type: str | None = EVENT_STREAM, extra: dict | None = None,
                     headers_extra: list[tuple[str, str]] | None = None, cut_after: int | None = None) -> None:
        """Send ``events`` one per chunk at their scheduled times, logging each hand-off to the transport.

        ``cut_after``: send only that many events and end the body cleanly (no ``[DONE]``)."""
        first, gap = req.delays(self.delays)
        offsets = F.schedule(events, first, gap)
        if cut_after is not None and 0 <= cut_after < len(events):
            events, offsets = events[:cut_after], offsets[:cut_after]
            extra = {**(extra or {}), "cut_after": cut_after}
        encoder = Encoder(encoding_for(req))
        fail = req.headers.get("x-origin-fail")
        drop_at = None
        if fail in ("drop-mid-stream", "reset-mid-stream"):
            # by default before the first text event of the second half: a gap precedes it, so what
            # was sent before has left the origin when the connection goes
            half = next((i for i in range(len(events) // 2, len(events)) if events[i].is_text), len(events) // 2)
            drop_at = min(_int(req.headers.get("x-origin-fail-at"), half), max(len(events) - 1, 0))
        headers = [("cache-control", "no-cache"), ("x-request-id", req.rid)]
        if content_type:  # None: no Content-Type at all, as some Codex backend answers come (guide 6a)
            headers.insert(0, ("content-type", content_type))
        if cf_ray:
            headers.append(("cf-ray", cf_ray))
        if encoder.name != "identity":
            headers.append(("content-encoding", encoder.name))
        headers.extend(headers_extra or [])
        self._log_request(req, 200, cf_ray=cf_ray, n_events=len(events), encoding=encoder.name, **(extra or {}))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(k.encode(), v.encode()) for k, v in headers]})
        for i, (ev, off) in enumerate(zip(events, offsets, strict=True)):
            if drop_at is not None and i == drop_at:
                delay = req.t_mono + off - time.monotonic()
                if delay > 0:  # cut where the event would have been sent
                    await asyncio.sleep(delay)
                reset = fail == "reset-mid-stream" and await reset_h2_stream(req.asgi_send)
                aborted = False if reset else abort_connection(req.client)
                self.log.add(kind="reset" if reset else "drop", rid=req.rid, cf_ray=cf_ray, t=time.time(), index=i,
                             aborted=aborted)
                raise DropConnection
            delay = req.t_mono + off - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            last = i == len(events) - 1
            chunk = encoder.encode(ev.data, last)
            # ``t_before``: no one can receive the event earlier; ``t``: the server has taken it (a loaded
            # machine may run the proxy between the two).
            t_before = time.time()
            await send({"type": "http.response.body", "body": chunk, "more_body": not last})
            self.log.add(kind="event", rid=req.rid, cf_ray=cf_ray, path=req.path, index=i, t=time.time(), t_before=t_before,
                         n_bytes=len(chunk), text=ev.text, event_kind=ev.kind, data=ev.data.decode("utf-8"))
        if not events:
            await send({"type": "http.response.body", "body": encoder.encode(b"", True), "more_body": False})

    # -- routing ----------------------------------------------------------------------------

    async def dispatch(self, req: Request, send: Send) -> None:
        path, method = req.path, req.method
        if req.headers.get("x-origin-fail") == "429-once" and method == "POST":
            key = hashlib.sha256(path.encode() + b"\0" + req.body).hexdigest()
            if key not in self._failed_once:
                self._failed_once.add(key)
                self._log_request(req, 429)
                await self._json(send, 429, {"error": {"message": "Rate limit reached (origin test)",
                                                       "type": "requests", "code": "rate_limit_exceeded"}},
                                 [("retry-after", "1"), ("cf-ray", new_cf_ray())])
                return

        if path.startswith("/_origin/"):
            await self._origin_route(req, send)
            return
        for module in ROUTE_MODULES:  # the 2026 formats, one module per area
            if await module.handle_http(self, req, send):
                return
        if re.fullmatch(r"/backend-(?:api|anon)/stop_conversation", path) and method == "POST":
            await self._stop(req, send)
            return
        m = re.fullmatch(r"/backend-(?:api|anon)/conversation/([^/]+)/stream_status", path)
        if m and method == "GET":
            await self._stream_status(req, send, m.group(1))
            return
        m = re.fullmatch(r"/backend-(?:api|anon)/(f/)?conversation(/resume|/prepare)?", path)
        if m and method == "POST":
            if m.group(2) == "/prepare":
                token = req.headers.get("x-conduit-token") or "conduit-" + secrets.token_hex(16)
                self._log_request(req, 200)
                await self._json(send, 200, {"status": "ok", "conduit_token": token})
            elif m.group(2) == "/resume":
                await self._resume(req, send)
            else:
                await self._conversation(req, send, v1_path=bool(m.group(1)))
            return
        m = re.fullmatch(r"/backend-(?:api|anon)/conversation/([^/]+)", path)
        if m and method == "GET":
            tree = self.conversations.get(m.group(1))
            self._log_request(req, 200 if tree else 404)
            if tree is None:
                await self._json(send, 404, {"detail": "Can't load conversation " + m.group(1)})
            else:
                await self._json(send, 200, tree.to_json(), [("cf-ray", new_cf_ray())])
            return
        if re.fullmatch(r"/backend-(?:api|anon)/conversations", path) and method == "GET":
            offset, limit = _int(req.query.get("offset"), 0), _int(req.query.get("limit"), 28)
            items = sorted(self.conversations.values(), key=lambda t: -t.update_time)
            self._log_request(req, 200)
            await self._json(send, 200, {"items": [t.summary() for t in items[offset:offset + limit]],
                                         "total": len(items), "limit": limit, "offset": offset})
            return
        if path == "/backend-api/celsius/ws/user" and method == "GET":
            self._log_request(req, 200)
            await self._json(send, 200, {"websocket_url": f"{req.ws_base}/celsius/ws/user?verify={secrets.token_hex(8)}"})
            return
        if path == "/backend-api/lat/r" and method == "POST":
            self._log_request(req, 200)
            await self._json(send, 200, {})
            return
        if re.fullmatch(r"/ces/v1/[tpigasb]", path) and method == "POST":
            self._log_request(req, 200)
            await self._json(send, 200, {"success": True})
            return
        if path in ("/ces/statsc/flush", "/ces/v1/telemetry/intake") and method == "POST":
            self._log_request(req, 200)
            await self._json(send, 200, {})
            return
        if path.endswith("/v1/rgstr") and method == "POST":
            self._log_request(req, 202)
            await self._json(send, 202, {"success": True})
            return
        if path.endswith("/v1/initialize") and method == "POST":
            self._log_request(req, 200)
            await self._json(send, 200, {"feature_gates": {"origin_gate": {"name": "origin_gate", "value": True,
                                                                           "rule_id": "default"}},
                                         "dynamic_configs": {}, "layer_configs": {}, "has_updates": True,
                                         "time": int(time.time() * 1000)})
            return
        if path.endswith("/chat/completions") and method == "POST":
            await self._chat_completions(req, send)
            return
        if path.endswith("/responses") and method == "POST":
            await self._responses(req, send)
            return
        if path.endswith("/v1/models") and method == "GET":
            self._log_request(req, 200)
            await self._json(send, 200, F.models_list(int(time.time())))
            return
        self._log_request(req, 404)
        await self._json(send, 404, {"detail": "Not Found", "path": path})

    async def _origin_route(self, req: Request, send: Send) -> None:
        path = req.path
        if path == "/_origin/log":
            await self._json(send, 200, {"records": self.log.since(_int(req.query.get("since"), 0)),
                                         "next": len(self.log.since(0))})
        elif path == "/_origin/health":
            await self._json(send, 200, {"ok": True})
        elif path == "/_origin/big":
            total = int(float(req.query.get("mb", "1")) * 1024 * 1024)
            self._log_request(req, 200, n_bytes=total)
            block = (b"0123456789abcdef" * 65536)  # 1 MiB
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/octet-stream"), (b"content-length", str(total).encode())]})
            sent = 0
            while sent < total:
                piece = block[:min(len(block), total - sent)]
                sent += len(piece)
                await send({"type": "http.response.body", "body": piece, "more_body": sent < total})
            if total == 0:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif path == "/_origin/echo":
            self._log_request(req, 200, n_bytes=len(req.body))
            await self._json(send, 200, {"n_bytes": len(req.body), "sha256": hashlib.sha256(req.body).hexdigest(),
                                         "headers": req.headers})
        elif path == "/_origin/sse":
            # An event stream on a path chatwire does not recognise; ``content_type=none`` sends
            # it without a Content-Type header. Used to check that no stream is ever held back.
            n = _int(req.query.get("n"), 10)
            ctype = req.query.get("content_type", EVENT_STREAM)
            events = [F.WireEvent(F.sse({"type": "tick", "i": i}), text=f"{i}", kind="tick") for i in range(n)]
            await self.stream(req, send, events, content_type=None if ctype == "none" else ctype)
        elif path == "/_origin/garbage":
            n = _int(req.query.get("n"), 64 * 1024)
            rng = random.Random(_int(req.query.get("seed"), 1))
            data = rng.randbytes(n)
            self._log_request(req, 200, n_bytes=n)
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", EVENT_STREAM.encode()), (b"cf-ray", new_cf_ray().encode())]})
            for i in range(0, max(n, 1), 4096):
                await send({"type": "http.response.body", "body": data[i:i + 4096], "more_body": i + 4096 < n})
        else:
            self._log_request(req, 404)
            await self._json(send, 404, {"detail": "Not Found", "path": path})

    # -- conversations ----------------------------------------------------------------------

    def _choose_format(self, req: Request, body: dict, v1_path: bool) -> str:
        fmt = req.headers.get("x-origin-format", "").strip().lower()
        if fmt in FORMATS:
            return fmt
        if v1_path or "v1" in (body.get("supported_encodings") or []):
            return "v1"
        return "legacy"

    def plan_turn(self, req: Request, body: dict, fmt: str) -> F.Turn | tuple[int, str]:
        """Update the conversation tree for this request and return the answer to stream (or an error)."""
        now = time.time()
        action = body.get("action") if body.get("action") in ("next", "variant", "continue") else "next"
        requested = str(body.get("model") or ("auto" if fmt != "legacy" else F.LEGACY_MODEL))
        if fmt in ("legacy", "ws2024"):
            slug = F.LEGACY_MODEL if requested == "auto" else requested
            server_slug = slug
        else:
            slug = F.V1_DEFAULT_MODEL if requested == "auto" else requested
            server_slug = F.SERVER_MODEL_FOR_AUTO if requested == "auto" else requested
        # Odd input is coerced, never trusted: ids must be strings, parts a list of strings.
        cid = body.get("conversation_id") if isinstance(body.get("conversation_id"), str) else None
        parent = body.get("parent_message_id") if isinstance(body.get("parent_message_id"), str) else None
        messages = body.get("messages") if isinstance(body.get("messages"), list) else []
        user_in = messages[-1] if messages and isinstance(messages[-1], dict) else {}
        user_id = str(user_in.get("id") or uuid.uuid4())
        content = user_in.get("content") if isinstance(user_in.get("content"), dict) else {}
        parts = content.get("parts") if isinstance(content.get("parts"), list) else []
        user_text = "".join(p for p in parts if isinstance(p, str))

        is_new = not cid
        if cid:
            tree = self.conversations.get(cid)
            if tree is None:
                return 404, f"Can't load conversation {cid}"
        else:
            cid = str(uuid.uuid4())
            root_id = parent if isinstance(parent, str) and parent else str(uuid.uuid4())
            tree = F.ConversationTree.new(cid, root_id, str(uuid.uuid4()), now)
        system_msg = tree.nodes[tree.nodes[tree.root_id].children[0]].message if is_new else None

        max_tokens = _int(req.headers.get("x-origin-max-tokens"), 0)
        reasoning = fmt != "legacy" and fmt != "ws2024" and action != "continue" and (
            req.headers.get("x-origin-reasoning") == "1" or "thinking" in requested
            or re.match(r"o\d", requested) is not None)
        turn = F.Turn(conversation_id=cid, assistant_id=str(uuid.uuid4()), assistant_parent="", tokens=[],
                      create_time=now, model_slug=slug, server_model_slug=server_slug, system=system_msg,
                      message_type=action, turn_exchange_id=str(uuid.uuid4()))

        if action == "continue":
            if parent not in tree.nodes or tree.role_of(parent) != "assistant":
                return 400, "continue needs parent_message_id of an assistant message"
            turn.assistant_id = parent
            turn.assistant_parent = tree.nodes[parent].parent or ""
            turn.prefix = tree.text_of(parent)
            turn.tokens = F.answer_tokens(turn.prefix, variant="continue")
            user_node = None
        elif action == "variant":
            if user_id in tree.nodes and tree.role_of(user_id) == "user":
                user_node = user_id
            elif parent in tree.nodes and tree.role_of(parent) == "user":
                user_node = parent
            elif parent in tree.nodes and tree.role_of(parent) == "assistant":
                user_node = tree.nodes[parent].parent
            else:
                return 400, "variant needs the user message to regenerate"
            user_text = tree.text_of(user_node)
            siblings = [c for c in tree.nodes[user_node].children]
            turn.user = tree.nodes[user_node].message
            turn.assistant_parent = user_node
            turn.tokens = F.answer_tokens(user_text, variant=len(siblings))
        else:
            attach = tree.nodes[tree.root_id].children[0] if is_new else (
                parent if parent in tree.nodes else tree.current_node)
            user_msg = F.user_message(user_id, user_text, parent_id=attach, create_time=now)
            tree.add(user_msg, attach)
            user_node = user_id
            turn.user = user_msg
            turn.assistant_parent = user_node
            turn.tokens = F.answer_tokens(user_text)
            if is_new:
                turn.title = tree.title = F.title_for(user_text)

        if max_tokens and 0 < max_tokens < len(turn.tokens):
            turn.tokens = turn.tokens[:max_tokens]
            turn.finish_type = "max_tokens"
        if reasoning:
            turn.thoughts = F.thought_tokens(user_text)
            turn.thoughts_id, turn.recap_id = str(uuid.uuid4()), str(uuid.uuid4())
            tree.add(turn.thoughts_message(final=True), turn.assistant_parent)
            tree.add(turn.recap_message(), turn.thoughts_id)
        if action == "continue":
            tree.set_message(turn.final_assistant())
        else:
            tree.add(turn.final_assistant(), turn.answer_parent)
        tree.update_time = now
        self.conversations[cid] = tree
        return turn

    async def _conversation(self, req: Request, send: Send, *, v1_path: bool) -> None:
        body = req.json()
        if not isinstance(body, dict):
            self._log_request(req, 400)
            await self._json(send, 400, {"detail": "body must be a JSON object"})
            return
        fmt = self._choose_format(req, body, v1_path)
        turn = self.plan_turn(req, body, fmt)
        if isinstance(turn, tuple):
            self._log_request(req, turn[0])
            await self._json(send, turn[0], {"detail": turn[1]})
            return
        cf_ray = new_cf_ray()
        extra = {"conversation_id": turn.conversation_id, "format": fmt, "message_id": turn.assistant_id}
        if fmt == "legacy":
            await self.stream(req, send, F.legacy_events(turn), cf_ray=cf_ray, extra=extra)
        elif fmt == "v1":
            if req.headers.get("x-origin-events") == "2026":
                first, gap = req.delays(self.delays)
                events = F.v1_events_2026(turn, first_ms=first, gap_ms=gap)
            else:
                events = F.v1_events(turn)
            await self._resumable_stream(req, send, turn, events, cf_ray, extra)
        elif fmt == "celsius":
            topic = F.celsius_topic(turn.conversation_id, turn.turn_exchange_id)
            sse_part, frames = F.celsius_split(turn, topic, f"{req.ws_base}/celsius/ws/user")
            self._put_pending(topic, PendingStream(frames, req.delays(self.delays), turn.conversation_id, cf_ray))
            # The stream_handoff also offers resume_sse_endpoint: a client may take the rest over
            # HTTP instead, from the offset it reached (the events before the hand-off).
            token = "conduit-" + secrets.token_hex(16)
            rest = [F.WireEvent(ev.data, text=ev.text, kind=ev.kind) for ev in F.v1_body(turn, explicit_add=True)]
            self.resumable[turn.conversation_id] = Resumable(sse_part[:-1] + rest, token, turn.assistant_id, cf_ray,
                                                             sent=len(sse_part) - 1)
            # The POST's own events are not timed like tokens: they all go out at once.
            await self.stream(req, send, sse_part, cf_ray=cf_ray, extra={**extra, "topic_id": topic},
                              headers_extra=[("x-conduit-token", token)])
        else:  # ws2024
            response_id = str(uuid.uuid4())
            token = _jwt({"response_id": response_id, "conversation_id": turn.conversation_id,
                          "exp": int(time.time()) + 3600})
            group = "user-" + hashlib.sha256(req.headers.get("authorization", "").encode()).hexdigest()[:16]
            frames = F.webpubsub_frames(F.legacy_events(turn), group=group, response_id=response_id,
                                        conversation_id=turn.conversation_id)
            self._put_pending(token, PendingStream(frames, req.delays(self.delays), turn.conversation_id, cf_ray))
            wss_url = f"{req.ws_base}/client/hubs/conversations?access_token={token}"
            self._log_request(req, 200, cf_ray=cf_ray, response_id=response_id, **extra)
            await self._json(send, 200, F.ws2024_handoff(wss_url, turn.conversation_id, response_id,
                                                        time.time() + 3600), [("cf-ray", cf_ray)])

    async def _resumable_stream(self, req: Request, send: Send, turn: F.Turn, events: list[F.WireEvent],
                                cf_ray: str, extra: dict) -> None:
        """Stream a v1 answer and keep it for a resume; ``x-origin-cut-after`` ends it early."""
        token = "conduit-" + secrets.token_hex(16)
        cut = _int(req.headers.get("x-origin-cut-after"), -1)
        cut_after = cut if cut >= 0 else None
        answer = Resumable(events, token, turn.assistant_id, cf_ray)
        self.resumable[turn.conversation_id] = answer
        answer.sent = min(cut_after, len(events)) if cut_after is not None else len(events)
        await self.stream(req, send, events, cf_ray=cf_ray, extra=extra, cut_after=cut_after,
                          headers_extra=[("x-conduit-token", token)])

    async def _resume(self, req: Request, send: Send) -> None:
        body = req.json() if isinstance(req.json(), dict) else {}
        cid = body.get("conversation_id") if isinstance(body.get("conversation_id"), str) else ""
        answer = self.resumable.get(cid)
        if answer is not None:
            await self._resume_answer(req, send, cid, answer, body.get("offset"))
            return
        tree = self.conversations.get(cid)
        if tree is None or tree.role_of(tree.current_node) != "assistant":
            self._log_request(req, 404)
            await self._json(send, 404, {"detail": "nothing to resume"})
            return
        msg = tree.nodes[tree.current_node].message or {}
        text = tree.text_of(tree.current_node)
        meta = msg.get("metadata") or {}
        turn = F.Turn(conversation_id=tree.conversation_id, assistant_id=tree.current_node,
                      assistant_parent=tree.nodes[tree.current_node].parent or "",
                      tokens=re.findall(r"\s*\S+", text) or [""], create_time=msg.get("create_time") or time.time(),
                      model_slug=meta.get("model_slug", F.V1_DEFAULT_MODEL),
                      server_model_slug=meta.get("model_slug", F.V1_DEFAULT_MODEL),
                      finish_type=(meta.get("finish_details") or {}).get("type", "stop"),
                      turn_exchange_id=str(uuid.uuid4()))
        await self.stream(req, send, F.v1_events(turn), cf_ray=new_cf_ray(),
                          extra={"conversation_id": tree.conversation_id, "format": "v1", "resume": True})

    async def _resume_answer(self, req: Request, send: Send, cid: str, answer: Resumable, offset: Any) -> None:
        """Continue a kept answer from event ``offset`` (the events the client consumed; no pings
        and no ``[DONE]`` are in the origin's lists, so it is an index)."""
        extra = {"conversation_id": cid, "format": "v1", "resume": True, "message_id": answer.message_id}
        if req.headers.get("x-conduit-token") != answer.token:
            self._log_request(req, 404, **extra)
            await self._json(send, 404, {"detail": {
                "message": "A network error occurred. Please check your connection and try again.",
                "code": "tokenless_resume_unavailable"}})
            return
        if answer.complete or req.headers.get("x-origin-resume") == "persisted":
            self._log_request(req, 410, **extra)
            await self._json(send, 410, {"errorCode": "persisted_final_available",
                                         "detail": "The answer is complete: read it from the conversation."})
            return
        start = offset if isinstance(offset, int) and not isinstance(offset, bool) and offset >= 0 else 0
        events = answer.events[start:]
        cut = _int(req.headers.get("x-origin-cut-after"), -1)
        cut_after = cut if cut >= 0 else None
        answer.sent = start + (min(cut_after, len(events)) if cut_after is not None else len(events))
        await self.stream(req, send, events, cf_ray=new_cf_ray(), extra={**extra, "offset": start},
                          cut_after=cut_after, headers_extra=[("x-conduit-token", answer.token)])

    async def _stop(self, req: Request, send: Send) -> None:
        """``POST …/stop_conversation``: the user pressed stop; the kept answer cannot be resumed."""
        body = req.json() if isinstance(req.json(), dict) else {}
        cid = body.get("conversation_id") if isinstance(body.get("conversation_id"), str) else ""
        answer = self.resumable.get(cid)
        if answer is not None:
            answer.stopped = True
        self._log_request(req, 200, conversation_id=cid, stop=True)
        await self._json(send, 200, {"status": "ok", "last_message_id": answer.message_id if answer else None})

    async def _stream_status(self, req: Request, send: Send, cid: str) -> None:
        answer = self.resumable.get(cid)
        if answer is None and cid not in self.conversations:
            self._log_request(req, 404, conversation_id=cid)
            await self._json(send, 404, {"detail": "conversation not found"})
            return
        status = "IS_STREAMING" if answer is not None and not answer.complete else "COMPLETE"
        self._log_request(req, 200, conversation_id=cid, stream_status=status)
        await self._json(send, 200, {"status": status})

    # -- OpenAI API -------------------------------------------------------------------------

    async def _chat_completions(self, req: Request, send: Send) -> None:
        body = req.json()
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self._log_request(req, 400)
            await self._json(send, 400, {"error": {"message": "messages is required", "type": "invalid_request_error"}})
            return
        cid, created = "chatcmpl-" + secrets.token_urlsafe(18), int(time.time())
        if body.get("stream"):
            await self.stream(req, send, F.chat_completion_chunks(body, completion_id=cid, created=created),
                              cf_ray=new_cf_ray(), extra={"api": "chat.completions"})
        else:
            self._log_request(req, 200, api="chat.completions")
            await self._json(send, 200, F.chat_completion(body, completion_id=cid, created=created),
                             [("x-request-id", req.rid)])

    async def _responses(self, req: Request, send: Send) -> None:
        body = req.json()
        if not isinstance(body, dict) or "input" not in body:
            self._log_request(req, 400)
            await self._json(send, 400, {"error": {"message": "input is required", "type": "invalid_request_error"}})
            return
        ids = {"response_id": "resp_" + secrets.token_hex(24), "item_id": "msg_" + secrets.token_hex(24),
               "created": int(time.time())}
        if body.get("stream"):
            await self.stream(req, send, F.response_events(body, **ids), cf_ray=new_cf_ray(),
                              extra={"api": "responses"})
        else:
            self._log_request(req, 200, api="responses")
            await self._json(send, 200, F.response_object(body, **ids), [("x-request-id", req.rid)])

    # -- WebSockets -------------------------------------------------------------------------

    def _ready_event(self, key: str) -> asyncio.Event:
        if key not in self._pending_ready:
            self._pending_ready[key] = asyncio.Event()
        return self._pending_ready[key]

    def _put_pending(self, key: str, stream: PendingStream) -> None:
        self.pending[key] = stream
        self._ready_event(key).set()

    async def _take_pending(self, key: str, timeout: float = 10.0) -> PendingStream | None:
        """The frames for ``key``, waiting a little in case the subscriber came before the POST."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready_event(key).wait(), timeout)
        self._pending_ready.pop(key, None)
        return self.pending.pop(key, None)

    async def _send_frames(self, send: Send, stream: PendingStream, key: str, path: str) -> None:
        first, gap = stream.delays
        offsets = F.schedule(stream.frames, first, gap)
        t0 = time.monotonic()
        self.log.add(kind="ws_stream", key=key, t=time.time(), path=path, cf_ray=stream.cf_ray,
                     conversation_id=stream.conversation_id, n_frames=len(stream.frames))
        for i, (frame, off) in enumerate(zip(stream.frames, offsets, strict=True)):
            delay = t0 + off - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await send({"type": "websocket.send", "text": frame.data.decode()})
            self.log.add(kind="ws_frame", key=key, cf_ray=stream.cf_ray, path=path, index=i, t=time.time(),
                         n_bytes=len(frame.data), text=frame.text, event_kind=frame.kind,
                         data=frame.data.decode())

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        msg = await receive()
        if msg["type"] != "websocket.connect":
            return
        path = scope.get("path", "/")
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        offered = scope.get("subprotocols") or []
        self.log.add(kind="ws_connect", t=time.time(), path=path)
        for module in ROUTE_MODULES:
            handler = getattr(module, "handle_websocket", None)
            if handler is not None and await handler(self, scope, receive, send, path):
                return
        if path.startswith("/client/hubs/"):
            accept: dict = {"type": "websocket.accept"}
            if F.WEBPUBSUB_SUBPROTOCOL in offered:
                accept["subprotocol"] = F.WEBPUBSUB_SUBPROTOCOL
            await send(accept)
            token = query.get("access_token", "")
            await send({"type": "websocket.send", "text": F.webpubsub_connected(
                "user-origin", secrets.token_hex(8)).data.decode()})
            stream = await self._take_pending(token) if token else None
            if stream:
                await self._send_frames(send, stream, token, path)
            await self._drain_until_close(receive, send, timeout=30)
        elif path.startswith("/celsius/"):
            await send({"type": "websocket.accept"})
            while True:
                msg = await receive()
                if msg["type"] == "websocket.disconnect":
                    return
                try:
                    obj = json.loads(msg.get("text") or msg.get("bytes") or b"null")
                except ValueError:
                    continue
                if not isinstance(obj, dict):
                    continue
                if obj.get("type") == "subscribe" and isinstance(obj.get("topic_id"), str):
                    if await history2026.celsius_subscribe(self, obj["topic_id"], send, path):
                        continue
                    stream = await self._take_pending(obj["topic_id"])
                    if stream:
                        await self._send_frames(send, stream, obj["topic_id"], path)
                    else:
                        await send({"type": "websocket.send", "text": json.dumps(
                            {"type": "error", "topic_id": obj["topic_id"], "error": "unknown topic"})})
                elif obj.get("type") == "ping":
                    await send({"type": "websocket.send", "text": json.dumps({"type": "pong"})})
        else:
            await send({"type": "websocket.close", "code": 4404})

    async def _drain_until_close(self, receive: Receive, send: Send, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.01))
            except TimeoutError:
                await send({"type": "websocket.close", "code": 1000})
                return
            if msg["type"] == "websocket.disconnect":
                return


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(payload: dict) -> str:
    """A JWT-shaped token (unsigned, random signature): what the real service hands out looks like this."""
    head = _b64url(json.dumps({"alg": "ES256", "typ": "JWT"}).encode())
    return f"{head}.{_b64url(json.dumps(payload).encode())}.{_b64url(os.urandom(32))}"


# ---------------------------------------------------------------------------------------------
# Serving


def _config(sock: socket.socket, certs: CertPaths | None) -> Any:
    from hypercorn.config import Config

    config = Config()
    # hypercorn adopts (and later closes) the descriptor it is given: give it a duplicate so the
    # caller's socket object stays valid and is closed exactly once.
    config.bind = [f"fd://{os.dup(sock.fileno())}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 0.5
    config.keep_alive_timeout = 30
    config.include_server_header = True
    if certs is not None:
        config.certfile, config.keyfile = str(certs.cert), str(certs.key)
    return config


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(256)
    sock.set_inheritable(True)
    return sock


async def serve(app: OriginApp, sock: socket.socket, certs: CertPaths | None, shutdown: asyncio.Event) -> None:
    """Serve ``app`` on the already-bound ``sock`` until ``shutdown`` is set."""
    from hypercorn.asyncio import serve as hyper_serve

    async def trigger() -> None:
        await shutdown.wait()
        # asyncio's Server.wait_closed() (3.12+) waits for every client connection, and clients
        # keep idle keep-alive connections open: close whatever is left shortly after shutdown.
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, lambda: [t.abort() for t in list(getattr(loop, "_transports", {}).values())])

    await hyper_serve(app, _config(sock, certs), shutdown_trigger=trigger, mode="asgi")


@dataclass
class OriginHandle:
    """A running origin: ``url``, ``port``, ``scheme``, ``ca_cert`` (None without TLS), ``stop()``, ``log()``."""

    port: int
    scheme: str
    ca_cert: Path | None
    _stop: Callable[[], None]
    _log: Callable[[int], list[dict]]
    app: OriginApp | None = None  # only in thread mode
    workdir: Path | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What an httpx (or openai) client talking to the origin directly should pass as ``verify``."""
        return ssl.create_default_context(cafile=str(self.ca_cert)) if self.ca_cert else True

    def log(self, since: int = 0) -> list[dict]:
        """Records of the send log (requests, per-event send times, WebSocket frames) from index ``since``."""
        return self._log(since)

    def stop(self) -> None:
        self._stop()

    def __enter__(self) -> OriginHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _read_jsonl(path: Path, since: int) -> list[dict]:
    out = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    break  # a line being written right now
    return out[since:]


def start_origin(*, tls: bool = True, certs: CertPaths | None = None, delays: tuple[float, float] = DEFAULT_DELAYS,
                 mode: str = "subprocess", workdir: Path | str | None = None, timeout: float = 20.0) -> OriginHandle:
    """Start the origin on a free port of 127.0.0.1, in a subprocess (default) or a thread of this process.

    With ``tls`` the origin speaks HTTPS (HTTP/2 and HTTP/1.1 by ALPN) with a certificate of a fresh
    test CA (``handle.ca_cert``) unless ``certs`` is given; without, plain HTTP (HTTP/1.1 and h2c).
    """
    workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="origin-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if tls and certs is None:
        certs = generate_certs(workdir / "certs")
    used_certs = certs if tls else None
    log_path = workdir / "origin-log.jsonl"
    if mode == "thread":
        return _start_thread(used_certs, delays, log_path, workdir)
    ready = workdir / "ready.json"
    ready.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "tests.origin.server", "--port", "0", "--ready-file", str(ready),
           "--log", str(log_path), "--delays", f"{delays[0]},{delays[1]}"]
    if used_certs:
        cmd += ["--tls", "--cert", str(used_certs.cert), "--key", str(used_certs.key)]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = open(workdir / "origin-stderr.log", "ab")  # noqa: SIM115 - closed in stop()
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out.close()
            raise RuntimeError(f"origin did not start: {(workdir / 'origin-stderr.log').read_text()[-2000:]}")
        time.sleep(0.02)
    info = json.loads(ready.read_text())

    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        out.close()

    return OriginHandle(info["port"], info["scheme"], used_certs.ca_cert if used_certs else None, stop,
                        lambda since: _read_jsonl(log_path, since), workdir=workdir)


def _start_thread(certs: CertPaths | None, delays: tuple[float, float], log_path: Path,
                  workdir: Path) -> OriginHandle:
    sock = bind_socket()
    app = OriginApp(log=OriginLog(log_path), delays=delays)
    loop = asyncio.new_event_loop()
    shutdown = asyncio.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(serve(app, sock, certs, shutdown))
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="origin", daemon=True)
    thread.start()

    def stop() -> None:
        if thread.is_alive():
            loop.call_soon_threadsafe(shutdown.set)
            thread.join(10)
        sock.close()
        app.log.close()

    return OriginHandle(sock.getsockname()[1], "https" if certs else "http", certs.ca_cert if certs else None,
                        stop, app.log.since, app=app, workdir=workdir)


def main(argv: list[str] | None = None) -> None:
    """Command line: serve until SIGTERM/SIGINT; write ``{"port", "scheme"}`` to --ready-file once listening."""
    parser = argparse.ArgumentParser(prog="python -m tests.origin.server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", type=Path)
    parser.add_argument("--tls", action="store_true", help="HTTPS (HTTP/2 + HTTP/1.1 by ALPN)")
    parser.add_argument("--cert", type=Path, help="server certificate chain (PEM); generated if absent")
    parser.add_argument("--key", type=Path)
    parser.add_argument("--log", type=Path, help="also append the send log to this JSONL file")
    parser.add_argument("--delays", default=f"{DEFAULT_DELAYS[0]:g},{DEFAULT_DELAYS[1]:g}",
                        help="default FIRST,GAP in ms")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    certs = None
    if args.tls:
        if args.cert and args.key:
            certs = CertPaths(args.cert, args.cert, args.key)
        else:
            certs = generate_certs(Path(tempfile.mkdtemp(prefix="origin-certs-")))
            print(f"CA certificate: {certs.ca_cert}", file=sys.stderr)
    first, gap = (float(x) for x in args.delays.split(","))
    app = OriginApp(log=OriginLog(args.log), delays=(first, gap))
    sock = bind_socket(args.host, args.port)
    port = sock.getsockname()[1]

    async def run() -> None:
        shutdown = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, shutdown.set)
        if args.ready_file:
            tmp = args.ready_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"port": port, "scheme": "https" if certs else "http"}))
            tmp.replace(args.ready_file)
        print(f"origin listening on {'https' if certs else 'http'}://{args.host}:{port}", file=sys.stderr, flush=True)
        await serve(app, sock, certs, shutdown)

    asyncio.run(run())
    sock.close()
    app.log.close()


__all__ = ["OriginApp", "OriginHandle", "OriginLog", "start_origin", "serve", "main"]

if __name__ == "__main__":
    main()
