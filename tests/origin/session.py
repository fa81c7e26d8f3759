"""A scripted, browser-like session against the origin (directly or through a proxy).

It does what the ChatGPT web page and an API client put on the wire: chats with several turns and a
regenerated answer in each stream generation, the conversation read back, a latency beacon per
answer (with the client's own timings and the response's ``cf-ray``), Segment and Statsig
analytics, and OpenAI API calls. Every request carries the secrets listed in :data:`SECRETS`, so a
test can scan everything a capture wrote for them. The client records the arrival time of every
event it parsed, to compare with the origin's send log.

Run: ``python -m tests.origin.session --base-url https://127.0.0.1:PORT --ca origin-ca.pem``
(add ``--proxy http://127.0.0.1:8080 --ca ~/.mitmproxy/mitmproxy-ca-cert.pem`` to go through mitmproxy).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import logging
import os
import socket
import ssl
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import numpy as np

log = logging.getLogger(__name__)

# The secrets a browser and an API client send. Distinctive strings, so any leak is found by a
# plain byte search.
SECRET_VALUES: dict[str, str] = {
    "access_token": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjaGF0d2lyZS10ZXN0LXVzZXIifQ.QWNjZXNzVG9rZW5TZWNyZXQ4Mzc1",
    "session_cookie": "SessionCookieSecret.7f3a9c1e5b2d4a6f8e0c",
    "cf_clearance": "CfClearanceSecret-4b8d2f6a0c1e3579",
    "chat_requirements": "gAAAAAChatRequirementsSecret9d4e2a71",
    "proof_token": "gAAAAABProofTokenSecret6c3f81e0b5",
    "turnstile_token": "TurnstileTokenSecret2e9a7c4f1d",
    "arkose_header": "ArkoseHeaderSecret.8f2c5a91|r=eu-west-1",
    "conduit_token": "eyJhbGciOiJIUzI1NiJ9.ConduitTokenSecret.5e1b7d3c",
    "arkose_body": "ArkoseBodySecret.3a7e9b2d|r=us-east-1",
    "api_key": "sk-proj-ApiKeySecretChatwireTest0123456789abcdef",
}
SECRET_NAMES: tuple[str, ...] = tuple(SECRET_VALUES)
SECRETS: list[str] = list(SECRET_VALUES.values())

USER_AGENT = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/143.0.0.0 Safari/537.36")
USER_ID = "user-OriginTestUser0001"
ANONYMOUS_ID = "6f1c2b9e-0d3a-4e57-9b1f-0a2c3d4e5f60"
DEVICE_ID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
STABLE_ID = "c0ffee00-1234-4abc-8def-0123456789ab"
STATSIG_CLIENT_KEY = "client-OriginTestStatsigKey"
RESUME_TEXTS = ("Tell me a long story about proxies", "Go on with the story please",
                "Now summarise the whole story", "Start another one", "One more over the socket")
USER_TEXTS = ("What does a proxy see of my chats?", "Explain streaming in two sentences",
              "And how is latency measured?")


# ---------------------------------------------------------------------------------------------
# Records


# What the page reports about the browser with every conversation POST (the real field's keys).
CLIENT_CONTEXT = {"is_dark_mode": True, "time_since_loaded": 42, "page_height": 1021, "page_width": 1512,
                  "pixel_ratio": 2, "screen_height": 982, "screen_width": 1512}


@dataclass
class ArrivedEvent:
    """One parsed SSE event (or WebSocket frame) and the wall time its last byte arrived."""

    t: float
    event: str | None
    data: str


@dataclass
class StreamRecord:
    """One streamed response as the client saw it."""

    kind: str                     # conversation | chat.completions | responses
    fmt: str                      # legacy | v1 | ws2024 | celsius | api
    path: str
    status: int
    http_version: str
    cf_ray: str | None
    started_at: float
    ended_at: float = 0.0
    events: list[ArrivedEvent] = field(default_factory=list)   # inner SSE events
    frames: list[ArrivedEvent] = field(default_factory=list)   # WebSocket frames, if handed off
    text_times: list[float] = field(default_factory=list)      # arrival of each text event
    text: str = ""
    action: str = ""
    conversation_id: str | None = None
    message_id: str | None = None
    user_message_id: str | None = None
    parent_message_id: str | None = None
    user_text: str = ""
    model_slug: str | None = None
    ws_key: str | None = None     # celsius topic id / 2024 response id
    conduit_token: str | None = None  # the x-conduit-token the POST answered with (a resume needs it)
    cut: bool = False             # the stream ended without [DONE]
    resumes: list[StreamRecord] = field(default_factory=list)  # POST …/resume parts that streamed
    resume_failures: list[tuple[int, Any]] = field(default_factory=list)  # (status, body) of failed resumes
    stopped: bool = False         # stop_conversation was sent for it
    preflight_ms: float = 0.0


@dataclass
class SessionRecord:
    """What the session did and saw."""

    base_url: str
    conversation_ids: dict[str, str] = field(default_factory=dict)   # format -> conversation id
    streams: list[StreamRecord] = field(default_factory=list)
    beacons: list[dict] = field(default_factory=list)
    mappings: dict[str, dict] = field(default_factory=dict)
    segment_payloads: list[dict] = field(default_factory=list)       # (endpoint, body) as sent
    statsig_payloads: list[dict] = field(default_factory=list)
    api_responses: list[dict] = field(default_factory=list)          # non-streamed API bodies
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    stream_statuses: list[str | None] = field(default_factory=list)  # what stream_status answered, in order

    @property
    def cf_rays(self) -> list[str]:
        return [s.cf_ray for s in self.streams if s.kind == "conversation" and s.cf_ray]

    @property
    def conversation_streams(self) -> list[StreamRecord]:
        return [s for s in self.streams if s.kind == "conversation"]

    def to_json(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Parsing what arrives


class SSEReader:
    """Incremental SSE parser that stamps each event with the arrival time of its last chunk."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes, t: float) -> list[ArrivedEvent]:
        self._buf = (self._buf + data).replace(b"\r\n", b"\n")
        out = []
        while b"\n\n" in self._buf:
            raw, self._buf = self._buf.split(b"\n\n", 1)
            name, lines = None, []
            for line in raw.decode("utf-8", "replace").split("\n"):
                if line.startswith(":"):
                    continue
                key, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if key == "event":
                    name = value
                elif key == "data":
                    lines.append(value)
            if lines or name:
                out.append(ArrivedEvent(t, name, "\n".join(lines)))
        return out


class TextTracker:
    """What the page does with events: find the new assistant text of each (legacy or v1)."""

    def __init__(self) -> None:
        self.snapshots: dict[str, str] = {}
        self.p: str = ""
        self.o: str = ""
        self.role: str | None = None
        self.content_type: str | None = None
        self.message_id: str | None = None
        self.model_slug: str | None = None
        self.conversation_id: str | None = None

    def _start(self, message: dict) -> None:
        self.role = (message.get("author") or {}).get("role")
        self.content_type = (message.get("content") or {}).get("content_type")
        if self.role == "assistant" and self.content_type == "text":
            self.message_id = message.get("id")
            self.model_slug = (message.get("metadata") or {}).get("model_slug") or self.model_slug

    def _append(self, p: str, o: str, v: Any) -> str:
        if (o == "append" and p == "/message/content/parts/0" and isinstance(v, str)
                and self.role == "assistant" and self.content_type == "text"):
            return v
        return ""

    def new_text(self, ev: ArrivedEvent) -> str:
        try:
            obj = json.loads(ev.data)
        except ValueError:
            return ""
        if not isinstance(obj, dict):
            return ""
        self.conversation_id = obj.get("conversation_id") or self.conversation_id
        msg = obj.get("message")
        if isinstance(msg, dict):  # legacy snapshot
            self._start(msg)
            parts = (msg.get("content") or {}).get("parts") or [""]
            text = parts[0] if isinstance(parts[0], str) else ""
            prev = self.snapshots.get(msg.get("id", ""), "")
            if self.role != "assistant" or self.content_type != "text":
                return ""
            self.snapshots[msg.get("id", "")] = text
            return text[len(prev):] if text.startswith(prev) else text
        if "type" in obj and "v" not in obj:
            return ""
        explicit = "p" in obj or "o" in obj
        if explicit:
            self.p, self.o = obj.get("p", ""), obj.get("o", "")
        v = obj.get("v")
        # A bare {"v": {"message": …}} or an add at "" starts a new current message.
        if isinstance(v, dict) and isinstance(v.get("message"), dict) and (
                not explicit or (self.p == "" and self.o == "add")):
            self.p, self.o = "", "add"
            self._start(v["message"])
            return ""
        if self.o == "patch" and isinstance(v, list):
            return "".join(self._append(s.get("p", ""), s.get("o", ""), s.get("v"))
                           for s in v if isinstance(s, dict))
        return self._append(self.p, self.o, v)


def api_text(ev: ArrivedEvent) -> str:
    """New text of a chat.completions chunk or a Responses event."""
    try:
        obj = json.loads(ev.data)
    except ValueError:
        return ""
    if not isinstance(obj, dict):
        return ""
    if obj.get("type") == "response.output_text.delta":
        return obj.get("delta") or ""
    choices = obj.get("choices") or []
    if choices and isinstance(choices[0], dict):
        return (choices[0].get("delta") or {}).get("content") or ""
    return ""


# ---------------------------------------------------------------------------------------------
# A small synchronous WebSocket client (wsproto), able to go through an HTTP proxy's CONNECT


def connect_tunnel(proxy_url: str, host: str, port: int, *, timeout: float = 30.0) -> socket.socket:
    """A socket to ``host:port`` through an HTTP proxy's ``CONNECT`` (the reply read and checked)."""
    pu = urlsplit(proxy_url)
    sock = socket.create_connection((pu.hostname, pu.port or 8080), timeout=timeout)
    sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            sock.close()
            raise ConnectionError("proxy closed the CONNECT")
        head += chunk
    if b" 200" not in head.split(b"\r\n", 1)[0]:
        sock.close()
        raise ConnectionError(f"proxy refused CONNECT: {head[:100]!r}")
    return sock


class WSClient:
    """Blocking WebSocket client over ``ws://`` / ``wss://``, optionally via an HTTP CONNECT proxy."""

    def __init__(self, url: str, *, proxy: str | None = None, verify: Verify = True,
                 subprotocols: Sequence[str] = (), timeout: float = 30.0) -> None:
        from wsproto import ConnectionType, WSConnection
        from wsproto.events import AcceptConnection, RejectConnection, Request

        u = urlsplit(url)
        secure = u.scheme == "wss"
        host, port = u.hostname or "localhost", u.port or (443 if secure else 80)
        if proxy:
            sock = connect_tunnel(proxy, host, port, timeout=timeout)
        else:
            sock = socket.create_connection((host, port), timeout=timeout)
        if secure:
            ctx = ssl_context(verify)
            if not isinstance(ctx, ssl.SSLContext):
                ctx = ssl.create_default_context()
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            # httpx/httpcore set ALPN on every connect too, so sharing a context is safe.
            ctx.set_alpn_protocols(["http/1.1"])
            sock = ctx.wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self.ws = WSConnection(ConnectionType.CLIENT)
        target = u.path + (f"?{u.query}" if u.query else "")
        self.sock.sendall(self.ws.send(Request(host=f"{host}:{port}", target=target or "/",
                                               subprotocols=list(subprotocols))))
        self.subprotocol: str | None = None
        self._pending: list[tuple[float, str]] = []
        self._text = ""
        self.closed = False
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed during the WebSocket handshake")
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, AcceptConnection):
                    self.subprotocol = event.subprotocol
                    return
                if isinstance(event, RejectConnection):
                    raise ConnectionError(f"WebSocket rejected: {event.status_code}")

    def send_text(self, text: str) -> None:
        from wsproto.events import Message

        self.sock.sendall(self.ws.send(Message(data=text)))

    def messages(self) -> Iterator[tuple[float, str]]:
        """Yield ``(arrival time, text)`` per complete text message until the socket closes."""
        from wsproto.events import CloseConnection, Ping, TextMessage

        while True:
            while self._pending:
                yield self._pending.pop(0)
            if self.closed:
                return
            try:
                data = self.sock.recv(65536)
            except (OSError, ssl.SSLError):
                data = b""
            t = time.time()
            self.ws.receive_data(data or None)
            if not data:
                self.closed = True
            for event in self.ws.events():
                if isinstance(event, TextMessage):
                    self._text += event.data
                    if event.message_finished:
                        self._pending.append((t, self._text))
                        self._text = ""
                elif isinstance(event, Ping):
                    self.sock.sendall(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    try:
                        self.sock.sendall(self.ws.send(event.response()))
                    except Exception:  # noqa: BLE001 - the peer may be gone already
                        pass
                    self.closed = True

    def close(self) -> None:
        from wsproto.events import CloseConnection

        if not self.closed:
            try:
                self.sock.sendall(self.ws.send(CloseConnection(code=1000)))
            except Exception:  # noqa: BLE001
                pass
            self.closed = True
        self.sock.close()


# ---------------------------------------------------------------------------------------------
# The session


Verify = bool | str | os.PathLike | ssl.SSLContext


def ssl_context(verify: Verify) -> ssl.SSLContext | bool:
    """What to trust, as httpx wants it: a CA file path becomes an SSLContext; False stays False."""
    if isinstance(verify, ssl.SSLContext) or verify is False:
        return verify
    if verify is True:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=os.fspath(verify))


def _secrets(values: Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    """Named secrets: a mapping overrides by name, a list by position in :data:`SECRET_NAMES`."""
    if isinstance(values, Mapping):
        return {**SECRET_VALUES, **values}
    return {**SECRET_VALUES, **dict(zip(SECRET_NAMES, values, strict=False))}


def beacon(server_request_id: str | None, model: str | None, started: float, text_times: list[float],
           ended: float, preflight_ms: float) -> dict:
    """The page's latency beacon for one answer, from the times the client saw."""
    gaps = np.diff(np.array(text_times)) * 1000 if len(text_times) > 1 else np.array([0.0])
    first = (text_times[0] - started) * 1000 if text_times else (ended - started) * 1000
    return {
        "server_request_id": server_request_id, "model": model, "preflight_time_ms": round(preflight_ms, 1),
        "count_tokens": len(text_times), "ts_first_token_ms": round(first, 1),
        "ts_max_token_time_ms": round(float(gaps.max()), 1),
        "ts_mean_token_without_first_ms": float(gaps.mean()),
        "ts_median_token_without_first_ms": round(float(np.median(gaps)), 1),
        "ts_min_token_time_ms": round(float(gaps.min()), 1),
        "ts_p95_token_without_first_ms": float(np.percentile(gaps, 95)),
        "ts_p99_token_without_first_ms": float(np.percentile(gaps, 99)),
        "ts_std_dev_token_ms": float(gaps.std()),
        "ts_total_request_ms": round((ended - started) * 1000, 1),
    }


class Session:
    """State of one scripted session: the HTTP client, the headers, the record."""

    def __init__(self, base_url: str, *, proxy: str | None, verify: Verify, http2: bool,
                 delays: tuple[float, float], secrets: dict[str, str], encoding: str | None,
                 extra_headers: Mapping[str, str] | None, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.proxy, self.verify = proxy, ssl_context(verify)
        self.s = secrets
        self.client = httpx.Client(base_url=self.base_url, http2=http2, proxy=proxy, verify=self.verify,
                                   timeout=timeout, headers={"user-agent": USER_AGENT})
        self.origin_headers = {"x-origin-delays-ms": f"{delays[0]:g},{delays[1]:g}", **(extra_headers or {})}
        if encoding:
            self.origin_headers["x-origin-encoding"] = encoding
        self.record = SessionRecord(self.base_url)
        self.timeout = timeout
        self._celsius: WSClient | None = None
        self._trackers: dict[int, TextTracker] = {}  # id(StreamRecord) -> the page's text state, for resumes

    # -- plumbing ---------------------------------------------------------------------------

    def web_headers(self, *, stream: bool = False) -> dict[str, str]:
        s = self.s
        h = {
            "authorization": f"Bearer {s['access_token']}",
            "cookie": (f"__Secure-next-auth.session-token={s['session_cookie']}; "
                       f"cf_clearance={s['cf_clearance']}; oai-did={DEVICE_ID}"),
            "oai-device-id": DEVICE_ID, "oai-language": "en-US", "origin": "https://chatgpt.com",
            "referer": "https://chatgpt.com/", "content-type": "application/json",
            **self.origin_headers,
        }
        if stream:
            h.update({
                "accept": "text/event-stream",
                "openai-sentinel-chat-requirements-token": s["chat_requirements"],
                "openai-sentinel-proof-token": s["proof_token"],
                "openai-sentinel-turnstile-token": s["turnstile_token"],
                "openai-sentinel-arkose-token": s["arkose_header"],
                "x-conduit-token": s["conduit_token"],
            })
        return h

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        r = self.client.request(method, path, **kw)
        self.record.requests.append((method, path, r.status_code))
        return r

    def close(self) -> None:
        if self._celsius:
            self._celsius.close()
        self.client.close()

    # -- conversations ----------------------------------------------------------------------

    def _stream_sse(self, rec: StreamRecord, response: httpx.Response, tracker: TextTracker | None) -> None:
        reader = SSEReader()
        for chunk in response.iter_bytes():
            t = time.time()
            for ev in reader.feed(chunk, t):
                self._take(rec, ev, tracker)
        rec.ended_at = time.time()

    def _take(self, rec: StreamRecord, ev: ArrivedEvent, tracker: TextTracker | None) -> None:
        rec.events.append(ev)
        new = tracker.new_text(ev) if tracker else api_text(ev)
        if new:
            rec.text += new
            rec.text_times.append(ev.t)

    def turn(self, fmt: str, action: str, *, conversation_id: str | None, parent: str, user_text: str,
             user_id: str | None = None, cut_after: int | None = None, events_2026: bool = False,
             follow_sse: bool = False, send_beacon: bool = True) -> StreamRecord:
        """One conversation POST (and its WebSocket, if handed off); returns what the client saw.

        ``cut_after``: the origin ends the stream after that many events without ``[DONE]``;
        ``follow_sse``: a celsius hand-off is followed over HTTP (``resume_sse_endpoint``)."""
        v1 = fmt in ("v1", "celsius")
        prefix = "/backend-api/f/conversation" if v1 else "/backend-api/conversation"
        t_pre = time.time()
        if v1:
            self._request("POST", prefix + "/prepare", headers=self.web_headers(),
                          json={"action": action, "conversation_id": conversation_id,
                                "parent_message_id": parent, "model": "auto"})
        preflight_ms = (time.time() - t_pre) * 1000
        user_id = user_id or str(uuid.uuid4())
        body: dict[str, Any] = {
            "action": action, "parent_message_id": parent, "model": "auto" if v1 else "text-davinci-002-render-sha",
            "timezone_offset_min": -60, "history_and_training_disabled": False,
            "conversation_mode": {"kind": "primary_assistant"}, "force_paragen": False,
            "arkose_token": self.s["arkose_body"], "websocket_request_id": str(uuid.uuid4()),
            "client_contextual_info": dict(CLIENT_CONTEXT),
        }
        if action != "continue":
            body["messages"] = [{"id": user_id, "author": {"role": "user"}, "create_time": time.time(),
                                 "content": {"content_type": "text", "parts": [user_text]}, "metadata": {}}]
        if conversation_id:
            body["conversation_id"] = conversation_id
        if v1:
            body["supported_encodings"] = ["v1"]
        headers = self.web_headers(stream=True) | {"x-origin-format": fmt}
        if cut_after is not None:
            headers["x-origin-cut-after"] = str(cut_after)
        if events_2026:
            headers["x-origin-events"] = "2026"
        rec = StreamRecord("conversation", fmt, prefix, 0, "", None, time.time(), action=action,
                           conversation_id=conversation_id, user_message_id=user_id, parent_message_id=parent,
                           user_text=user_text)
        tracker = TextTracker()
        with self.client.stream("POST", prefix, json=body, headers=headers) as r:
            rec.status, rec.http_version, rec.cf_ray = r.status_code, r.http_version, r.headers.get("cf-ray")
            rec.conduit_token = r.headers.get("x-conduit-token")
            self.record.requests.append(("POST", prefix, r.status_code))
            if r.status_code != 200:
                r.read()
                raise RuntimeError(f"{prefix} answered {r.status_code}: {r.text[:200]}")
            if fmt == "ws2024":
                handoff = json.loads(r.read())
                rec.ended_at = time.time()
            else:
                self._stream_sse(rec, r, tracker)
        self._trackers[id(rec)] = tracker
        rec.conversation_id = tracker.conversation_id or rec.conversation_id
        if fmt == "ws2024":
            self._ws2024(rec, handoff, tracker)
        elif fmt == "celsius" and follow_sse:
            rec.cut = True  # the POST ended at the hand-off: the rest comes from …/resume
            self.resume(rec)
        elif fmt == "celsius":
            self._celsius_stream(rec, tracker)
        elif fmt == "v1":
            rec.cut = not any(ev.data == "[DONE]" for ev in rec.events)
        rec.conversation_id = tracker.conversation_id or rec.conversation_id
        rec.message_id, rec.model_slug = tracker.message_id, tracker.model_slug
        rec.preflight_ms = preflight_ms
        self.record.streams.append(rec)
        if send_beacon:
            self.send_beacon(rec)
        return rec

    def send_beacon(self, rec: StreamRecord) -> None:
        b = beacon(rec.cf_ray, rec.model_slug, rec.started_at, rec.text_times, rec.ended_at,
                   rec.preflight_ms)
        self._request("POST", "/backend-api/lat/r", headers=self.web_headers(), json=b)
        self.record.beacons.append(b)

    # -- resumed streams, stop, status (guide 6c) ------------------------------------------------

    def resume(self, rec: StreamRecord, *, token: str | None | bool = True, cut_after: int | None = None,
               persisted: bool = False) -> int:
        """``POST …/f/conversation/resume`` from the events consumed so far (``[DONE]`` and pings not
        counted), with the POST's conduit token (``token=True``), none (``None``) or another one.
        What streams back grows ``rec`` as the page's answer grows; a failure is noted on it."""
        offset = sum(1 for ev in rec.events if ev.data != "[DONE]" and ev.event != "ping")
        headers = {k: v for k, v in self.web_headers(stream=True).items() if k != "x-conduit-token"}
        conduit = rec.conduit_token if token is True else token
        if conduit:
            headers["x-conduit-token"] = str(conduit)
        if cut_after is not None:
            headers["x-origin-cut-after"] = str(cut_after)
        if persisted:
            headers["x-origin-resume"] = "persisted"
        path = "/backend-api/f/conversation/resume"
        part = StreamRecord("resume", "v1", path, 0, "", None, time.time(), conversation_id=rec.conversation_id)
        with self.client.stream("POST", path, json={"conversation_id": rec.conversation_id, "offset": offset},
                                headers=headers) as r:
            part.status, part.http_version, part.cf_ray = r.status_code, r.http_version, r.headers.get("cf-ray")
            self.record.requests.append(("POST", path, r.status_code))
            if r.status_code != 200:
                r.read()
                rec.resume_failures.append((r.status_code, r.json()))
                return r.status_code
            self._stream_sse(part, r, self._trackers[id(rec)])
        rec.resumes.append(part)
        rec.events += part.events
        rec.text += part.text
        rec.text_times += part.text_times
        rec.ended_at = part.ended_at
        rec.cut = not any(ev.data == "[DONE]" for ev in part.events)
        return r.status_code

    def stream_status(self, conversation_id: str) -> str | None:
        r = self._request("GET", f"/backend-api/conversation/{conversation_id}/stream_status",
                          headers=self.web_headers())
        return r.json().get("status") if r.status_code == 200 else "UNAVAILABLE"

    def stop(self, rec: StreamRecord) -> dict:
        """The user pressed stop."""
        r = self._request("POST", "/backend-api/stop_conversation", headers=self.web_headers(),
                          json={"conversation_id": rec.conversation_id, "exclude_async_types": []})
        rec.stopped = True
        return r.json()

    def resumed_chat(self, cut_after: int = 16) -> str:
        """A new v1 chat with the 2026 events whose answers break (no ``[DONE]``) and are resumed:
        once cleanly (stream_status before and after), once with a failed resume (no conduit token,
        404) and a second break, once answered 410 ``persisted_final_available`` (then read from
        history), once stopped by the user; and a celsius hand-off followed over HTTP."""
        root = "client-created-root"
        a = self.turn("v1", "next", conversation_id=None, parent=root, user_text=RESUME_TEXTS[0],
                      cut_after=cut_after, events_2026=True, send_beacon=False)
        cid = a.conversation_id
        assert cid is not None
        self.record.stream_statuses.append(self.stream_status(cid))
        self.resume(a)
        self.record.stream_statuses.append(self.stream_status(cid))
        self.send_beacon(a)
        b = self.turn("v1", "next", conversation_id=cid, parent=a.message_id or root, user_text=RESUME_TEXTS[1],
                      cut_after=cut_after, events_2026=True, send_beacon=False)
        self.resume(b, token=None)
        self.resume(b, cut_after=3)
        self.resume(b)
        self.send_beacon(b)
        c = self.turn("v1", "next", conversation_id=cid, parent=b.message_id or root, user_text=RESUME_TEXTS[2],
                      cut_after=cut_after, events_2026=True)
        self.resume(c, persisted=True)
        d = self.turn("v1", "next", conversation_id=cid, parent=c.message_id or root, user_text=RESUME_TEXTS[3],
                      cut_after=cut_after, events_2026=True)
        self.stop(d)
        mapping = self._request("GET", f"/backend-api/conversation/{cid}", headers=self.web_headers())
        self.record.mappings[cid] = mapping.json()
        self.record.conversation_ids["resume"] = cid
        e = self.turn("celsius", "next", conversation_id=None, parent=root, user_text=RESUME_TEXTS[4],
                      follow_sse=True)
        self.record.conversation_ids["resume_sse_endpoint"] = e.conversation_id or ""
        return cid

    def _ws2024(self, rec: StreamRecord, handoff: dict, tracker: TextTracker) -> None:
        from tests.origin.formats import WEBPUBSUB_SUBPROTOCOL

        rec.conversation_id, rec.ws_key = handoff.get("conversation_id"), handoff.get("response_id")
        ws = WSClient(handoff["wss_url"], proxy=self.proxy, verify=self.verify,
                      subprotocols=[WEBPUBSUB_SUBPROTOCOL], timeout=self.timeout)
        reader = SSEReader()
        try:
            for t, text in ws.messages():
                rec.frames.append(ArrivedEvent(t, None, text))
                frame = json.loads(text)
                data = frame.get("data") if isinstance(frame, dict) else None
                if not isinstance(data, dict) or frame.get("type") != "message":
                    continue
                for ev in reader.feed(base64.b64decode(data.get("body", "")), t):
                    self._take(rec, ev, tracker)
                if not data.get("more_body", True):
                    break
        finally:
            ws.close()
        rec.ended_at = time.time()

    def _celsius_stream(self, rec: StreamRecord, tracker: TextTracker) -> None:
        topic = None
        for ev in rec.events:
            try:
                obj = json.loads(ev.data)
            except ValueError:
                continue
            if isinstance(obj, dict) and obj.get("type") == "stream_handoff":
                for opt in obj.get("options") or []:
                    if opt.get("type") == "subscribe_ws_topic":
                        topic = opt.get("topic_id")
        if not topic:
            raise RuntimeError("celsius stream without a stream_handoff topic")
        rec.ws_key = topic
        if self._celsius is None:  # one socket per page, as the browser keeps it
            url = self._request("GET", "/backend-api/celsius/ws/user", headers=self.web_headers()).json()
            self._celsius = WSClient(url["websocket_url"], proxy=self.proxy, verify=self.verify, timeout=self.timeout)
        self._celsius.send_text(json.dumps({"type": "subscribe", "topic_id": topic}))
        reader = SSEReader()
        for t, text in self._celsius.messages():
            rec.frames.append(ArrivedEvent(t, None, text))
            frame = json.loads(text)
            inner = ((frame.get("payload") or {}).get("payload") or {}) if isinstance(frame, dict) else {}
            if inner.get("type") == "stream-item":
                for ev in reader.feed(inner.get("encoded_item", "").encode(), t):
                    self._take(rec, ev, tracker)
            elif inner.get("type") == "done" or frame.get("type") == "error":
                break
        rec.ended_at = time.time()

    def chat(self, fmt: str, n_turns: int = 3) -> str:
        """A new chat with ``n_turns`` turns and one regenerated answer; then read the mapping back."""
        root = "client-created-root" if fmt in ("v1", "celsius") else str(uuid.uuid4())
        cid: str | None = None
        parent = root
        last: StreamRecord | None = None
        for text in USER_TEXTS[:n_turns]:
            last = self.turn(fmt, "next", conversation_id=cid, parent=parent, user_text=text)
            cid = last.conversation_id
            parent = last.message_id or parent
        assert last is not None and cid is not None
        # Regenerate the last answer: same user message, its parent as parent_message_id.
        self.turn(fmt, "variant", conversation_id=cid, parent=last.parent_message_id or root,
                  user_text=last.user_text, user_id=last.user_message_id)
        mapping = self._request("GET", f"/backend-api/conversation/{cid}", headers=self.web_headers())
        self.record.mappings[cid] = mapping.json()
        self.record.conversation_ids[fmt] = cid
        return cid

    # -- analytics --------------------------------------------------------------------------

    def _segment_event(self, kind: str, cid: str, i: int, **extra: Any) -> dict:
        now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
        ev = {"timestamp": now, "integrations": {}, "type": kind, "userId": USER_ID, "anonymousId": ANONYMOUS_ID,
              "messageId": f"ajs-next-{uuid.uuid4().hex}", "writeKey": "oai-segment-write-key",
              "sentAt": now,
              "context": {"page": {"path": f"/c/{cid}", "referrer": "", "search": "", "title": "ChatGPT",
                                   "url": f"https://chatgpt.com/c/{cid}"},
                          "userAgent": USER_AGENT, "locale": "en-US",
                          "library": {"name": "analytics.js", "version": "npm:next-1.56.0"}},
              "properties": {"index": i}}
        ev.update(extra)
        return ev

    def segment(self, cid: str) -> None:
        """One track, one page and one batch of three events through /ces/v1."""
        payloads = [
            ("t", self._segment_event("track", cid, 0, event="Send Message")),
            ("p", self._segment_event("page", cid, 1, name="Conversation", category=None)),
        ]
        batch = [self._segment_event("track", cid, 2 + i, event=name)
                 for i, name in enumerate(("Stream Complete", "Copy Message", "Model Switcher Opened"))]
        payloads.append(("b", {"batch": batch, "sentAt": batch[-1]["sentAt"], "writeKey": "oai-segment-write-key"}))
        for letter, body in payloads:
            self._request("POST", f"/ces/v1/{letter}", headers=self.web_headers(), json=body)
            self.record.segment_payloads.append({"endpoint": letter, "body": body})

    def statsig(self, cid: str) -> None:
        """Statsig: initialize, one plain rgstr, one gzip'd (gz=1) and one reversed-base64 (se=1)."""
        user = {"userID": USER_ID, "custom": {"plan_type": "free", "workspace_id": "ws-origin-test"},
                "locale": "en-US", "statsigEnvironment": {"tier": "production"}}
        meta = {"sdkType": "js-client", "sdkVersion": "3.12.0", "stableID": STABLE_ID}
        self._request("POST", "/v1/initialize", headers={"content-type": "text/plain"},
                      content=base64.b64encode(json.dumps({"user": user, "statsigMetadata": meta}).encode())[::-1])

        def body(name: str, n: int) -> dict:
            events = [{"eventName": name, "user": user, "value": None, "metadata": {"conversation_id": cid, "i": i},
                       "time": int(time.time() * 1000),
                       "statsigMetadata": {"currentPage": f"https://chatgpt.com/c/{cid}"}} for i in range(n)]
            return {"events": events, "statsigMetadata": meta}

        query = {"k": STATSIG_CLIENT_KEY, "st": "javascript-client", "sv": "3.12.0",
                 "t": str(int(time.time() * 1000)), "sid": str(uuid.uuid4())}
        plain = body("chatgpt_web_send_message", 1)
        self._request("POST", "/v1/rgstr", headers={"content-type": "application/json"}, json=plain)
        gz = body("chatgpt_web_stream_complete", 2)
        self._request("POST", "/v1/rgstr?" + urlencode({**query, "ec": "2", "gz": "1"}),
                      headers={"content-type": "text/plain"}, content=gzip.compress(json.dumps(gz).encode()))
        se = body("statsig::diagnostics", 1)
        self._request("POST", "/v1/rgstr?" + urlencode({**query, "ec": "1", "se": "1"}),
                      headers={"content-type": "text/plain"},
                      content=base64.b64encode(json.dumps(se).encode())[::-1])
        self.record.statsig_payloads += [{"variant": "plain", "body": plain}, {"variant": "gz", "body": gz},
                                         {"variant": "se", "body": se}]

    # -- OpenAI API -------------------------------------------------------------------------

    def api(self) -> None:
        """/v1/chat/completions and /v1/responses, each streamed and not."""
        h = {"authorization": f"Bearer {self.s['api_key']}", "content-type": "application/json",
             **self.origin_headers}
        messages = [{"role": "system", "content": "You are terse."},
                    {"role": "user", "content": "Name three ways to measure latency."}]
        for path, req in (
            ("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": messages, "stream": True,
                                      "stream_options": {"include_usage": True}}),
            ("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": messages}),
            ("/v1/responses", {"model": "gpt-4.1", "input": "Say some greetings", "stream": True}),
            ("/v1/responses", {"model": "gpt-4.1", "input": [{"role": "user", "content": "Say hi"}]}),
        ):
            kind = "chat.completions" if "chat" in path else "responses"
            if req.get("stream"):
                rec = StreamRecord(kind, "api", path, 0, "", None, time.time())
                with self.client.stream("POST", path, json=req, headers=h | {"accept": "text/event-stream"}) as r:
                    rec.status, rec.http_version, rec.cf_ray = r.status_code, r.http_version, r.headers.get("cf-ray")
                    self.record.requests.append(("POST", path, r.status_code))
                    self._stream_sse(rec, r, None)
                self.record.streams.append(rec)
            else:
                r = self._request("POST", path, json=req, headers=h)
                self.record.api_responses.append(r.json())


def run_session(base_url: str, *, proxy: str | None = None, verify: Verify = True, http2: bool = False,
                delays: tuple[float, float] = (150, 20), formats: Sequence[str] = ("legacy", "v1"),
                secrets: Mapping[str, str] | Sequence[str] = SECRETS, encoding: str | None = None,
                n_turns: int = 3, analytics: bool = True, api: bool = True, resume: bool = False,
                extra_headers: Mapping[str, str] | None = None, timeout: float = 30.0) -> SessionRecord:
    """Run the scripted session against ``base_url`` and return what it did and saw.

    ``proxy`` is an HTTP proxy URL (mitmproxy); ``verify`` what to trust (a CA file path, an SSLContext, or False);
    ``formats`` the stream generations to chat in (legacy, v1, ws2024, celsius); ``delays`` the
    origin's (first token, inter-token) delays in ms; ``encoding`` asks the origin to compress streams.
    """
    session = Session(base_url, proxy=proxy, verify=verify, http2=http2, delays=delays,
                      secrets=_secrets(secrets), encoding=encoding, extra_headers=extra_headers, timeout=timeout)
    try:
        for fmt in formats:
            cid = session.chat(fmt, n_turns)
            if analytics and fmt == formats[0]:
                session.segment(cid)
                session.statsig(cid)
        if resume:
            session.resumed_chat()
        if api:
            session.api()
        session._request("GET", "/backend-api/conversations?offset=0&limit=28", headers=session.web_headers())
    finally:
        session.close()
    return session.record


def main(argv: list[str] | None = None) -> None:
    """Command line: run the session and print a JSON summary."""
    parser = argparse.ArgumentParser(prog="python -m tests.origin.session", description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--proxy")
    parser.add_argument("--ca", help="CA file to trust (the origin's, or mitmproxy's with --proxy)")
    parser.add_argument("--insecure", action="store_true", help="trust any certificate")
    parser.add_argument("--http2", action="store_true")
    parser.add_argument("--formats", default="legacy,v1", help="comma list of legacy,v1,ws2024,celsius")
    parser.add_argument("--delays", default="150,20", help="FIRST,GAP in ms")
    parser.add_argument("--encoding", choices=["gzip", "deflate", "br", "zstd"])
    parser.add_argument("--json", help="write the whole record to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    first, gap = (float(x) for x in args.delays.split(","))
    verify: Verify = False if args.insecure else (args.ca or True)
    rec = run_session(args.base_url, proxy=args.proxy, verify=verify, http2=args.http2, delays=(first, gap),
                      formats=[f for f in args.formats.split(",") if f], encoding=args.encoding)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rec.to_json(), fh, indent=1)
    print(json.dumps({"conversation_ids": rec.conversation_ids, "cf_rays": rec.cf_rays,
                      "streams": len(rec.streams), "requests": len(rec.requests),
                      "failed": [r for r in rec.requests if r[2] >= 400]}, indent=1))


if __name__ == "__main__":
    main()
