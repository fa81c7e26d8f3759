"""``analyze serve``: an HTTP server that plays captured streams back with their captured timing.

Every response is scheduled against absolute deadlines: event *k* goes out at
``request_start + offset_k / speed`` on the event loop's monotonic clock, so waiting never adds up
into drift, and one slow client does not delay another (each request is its own task). Events that
arrived in one network chunk (equal offsets) go out in one write, as they did.

Routes:

- ``POST`` on every conversation path (``/backend-api/conversation``, ``/backend-anon/…``, the
  ``/f/`` paths and ``/resume``): the captured SSE events of the matching web turn, with the
  captured status, content-type and cf-ray. ``POST …/f/conversation/prepare`` answers ``{}``.
- ``POST /v1/chat/completions`` and ``POST /v1/responses`` (also without ``/v1``): the matching
  captured API call, in the shape the request asks for (see ``analyzer.replay.sse_writer``).
- ``GET …/conversation/<id>``: the conversation with a ``mapping`` rebuilt from the capture.
- ``GET /v1/models``: the models seen in the capture.

Response headers added by the server: ``x-chatwire-flow-id`` (the captured flow served),
``x-chatwire-match`` (which rule matched), ``x-chatwire-timing`` (``captured``, or how the times
of a HAR turn were spread) and ``x-chatwire-synthesised`` (when the body's shape was built).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence

from aiohttp import web

from analyzer.replay.matching import (
    CONVERSATION_PATHS,
    ApiCall,
    Catalog,
    Matcher,
    Recording,
    WebTurn,
    api_last_user_text,
    api_rules,
    web_request_fields,
    web_rules,
)
from analyzer.replay.sse_writer import (
    ServedEvent,
    adapt_chat_stream,
    chat_chunk_events,
    chat_completion_body,
    encode_event,
    response_body,
    responses_events,
)

log = logging.getLogger(__name__)
# One line per request; the CLI shows this logger at INFO whatever -v says.
access_log = logging.getLogger("analyzer.replay.serve.access")

CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")
RESPONSES_PATHS = ("/v1/responses", "/responses")
ROOT_ID = "client-created-root"
CONVERSATION_GET_PREFIXES = ("/backend-api/conversation/", "/backend-anon/conversation/")


def timing_note(rec: Recording) -> str:
    """The ``x-chatwire-timing`` header value."""
    if rec.timing == "spread":
        return (
            f"spread: no per-event times in the capture ({rec.source or 'har'}); {len(rec.events)} events "
            f"spread evenly between ttfb {rec.headers_ms or 0:.0f} ms and total {rec.end_ms or 0:.0f} ms"
        )
    if rec.timing == "none":
        return "none: no times in the capture; events sent at once"
    return "captured"


def mapping_json(conv: dict) -> dict:
    """A ``GET /backend-api/conversation/<id>`` body from ``Conversation.to_json()``."""
    # The tree hangs from a message-less root, as the web app's own mapping does.
    roots = [n["id"] for n in conv.get("nodes", []) if n.get("parent") is None]
    mapping: dict[str, dict] = {ROOT_ID: {"id": ROOT_ID, "message": None, "parent": None, "children": roots}}
    create_times = []
    for node in conv.get("nodes", []):
        message = None
        if node.get("role"):
            message = {
                "id": node["id"],
                "author": {"role": node["role"], "name": None, "metadata": {}},
                "create_time": node.get("create_time"),
                "update_time": None,
                "content": {"content_type": node.get("content_type") or "text", "parts": [node.get("text") or ""]},
                "status": "finished_successfully",
                "end_turn": None,
                "weight": 1.0,
                "metadata": {"model_slug": node["model_slug"]} if node.get("model_slug") else {},
                "recipient": "all",
            }
            if node.get("create_time") is not None:
                create_times.append(node["create_time"])
        mapping[node["id"]] = {
            "id": node["id"],
            "message": message,
            "parent": node.get("parent") or ROOT_ID,
            "children": list(node.get("children") or []),
        }
    return {
        "title": conv.get("title"),
        "create_time": min(create_times) if create_times else None,
        "update_time": max(create_times) if create_times else None,
        "mapping": mapping,
        "current_node": conv.get("current_node"),
        "conversation_id": conv.get("conversation_id"),
        "moderation_results": [],
        "is_archived": False,
    }


def _json_default(value: object) -> object:
    if hasattr(value, "timestamp"):
        return value.timestamp()
    return str(value)


class ReplayServer:
    """The aiohttp application that serves one catalog."""

    def __init__(self, catalog: Catalog, *, speed: float = 1.0, loop: bool = False) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self.catalog = catalog
        self.speed = speed
        self.web = Matcher(catalog.web_turns, loop=loop, what="conversation turn")
        self.api_chat = Matcher(catalog.api_calls, loop=loop, what="API call")

    # ------------------------------------------------------------ timing

    async def _until(self, t0: float, offset_ms: float | None) -> None:
        """Sleep until ``t0 + offset/speed`` (absolute, on the loop's monotonic clock)."""
        if self.speed == 0 or offset_ms is None:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        delay = t0 + offset_ms / 1000.0 / self.speed - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _stream(
        self, request: web.Request, t0: float, rec: Recording, events: Sequence[ServedEvent], headers: dict[str, str]
    ) -> tuple[web.StreamResponse, int]:
        """Send headers at the captured ttfb, then each event at its offset; returns events sent."""
        first = events[0].offset_ms if events else None
        headers_at = rec.headers_ms
        if headers_at is not None and first is not None:
            headers_at = min(headers_at, first)
        response = web.StreamResponse(status=rec.status_code, headers=headers)
        await self._until(t0, headers_at)
        await response.prepare(request)
        sent = 0
        i = 0
        try:
            while i < len(events):
                # Events captured in one chunk (same time) go out in one write.
                j = i + 1
                while j < len(events) and events[j].offset_ms == events[i].offset_ms:
                    j += 1
                await self._until(t0, events[i].offset_ms)
                await response.write(b"".join(encode_event(e.event, e.data) for e in events[i:j]))
                sent = j
                i = j
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            log.info("client went away after %d of %d events", sent, len(events))
        return response, sent

    async def _json_at(self, t0: float, at_ms: float | None, body: dict, status: int, headers: dict) -> web.Response:
        await self._until(t0, at_ms)
        headers = {k: v for k, v in headers.items() if k != "content-type"}
        return web.json_response(body, status=status, headers=headers, dumps=lambda o: json.dumps(o, default=_json_default))

    def _own_headers(self, rec: Recording, reason: str) -> dict[str, str]:
        headers = dict(rec.headers)
        headers["x-chatwire-flow-id"] = rec.flow_id
        headers["x-chatwire-match"] = reason
        headers["x-chatwire-timing"] = timing_note(rec)
        headers.setdefault("cache-control", "no-cache")
        return headers

    @staticmethod
    def _log(request: web.Request, t0: float, status: int, rec: Recording | None, reason: str, n: int) -> None:
        elapsed = (asyncio.get_running_loop().time() - t0) * 1000.0
        access_log.info(
            "%s %s -> %d %s (%s), %d events, %.0f ms",
            request.method, request.path, status, rec.flow_id if rec else "-", reason, n, elapsed,
        )

    @staticmethod
    def _not_found(message: str, **extra: object) -> web.Response:
        return web.json_response({"error": {"message": message, "type": "not_found", **extra}}, status=404)

    async def _body(self, request: web.Request) -> dict | web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": {"message": "the request body is not JSON", "type": "invalid_request"}}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": {"message": "the request body is not a JSON object", "type": "invalid_request"}}, status=400)
        return body

    # ------------------------------------------------------------ handlers

    async def web_turn(self, request: web.Request) -> web.StreamResponse:
        t0 = asyncio.get_running_loop().time()
        body = await self._body(request)
        if isinstance(body, web.Response):
            self._log(request, t0, body.status, None, "bad request", 0)
            return body
        cid, pid, text = web_request_fields(body)
        turn, reason = self.web.match(web_rules(cid, pid, text), prefer=lambda t: int(t.path == request.path))
        if turn is None:
            self._log(request, t0, 404, None, reason, 0)
            return self._not_found(reason, conversation_id=cid, parent_message_id=pid, user_text=text)
        assert isinstance(turn, WebTurn)
        headers = self._own_headers(turn, reason)
        if turn.stream_format in ("websocket", "json") and turn.events:
            # The answer came over a WebSocket: its inner SSE lines are served as an ordinary stream.
            headers["content-type"] = "text/event-stream; charset=utf-8"
            headers["x-chatwire-note"] = turn.note or f"captured as {turn.stream_format}; served as SSE"
        if not turn.events:
            body = {"detail": f"the captured turn {turn.flow_id} has no stream events (status {turn.status_code})"}
            response = await self._json_at(t0, turn.end_ms, body, turn.status_code if turn.status_code >= 400 else 502, headers)
            self._log(request, t0, response.status, turn, reason, 0)
            return response
        headers.setdefault("content-type", "text/event-stream; charset=utf-8")
        response, sent = await self._stream(request, t0, turn, turn.events, headers)
        self._log(request, t0, turn.status_code, turn, reason, sent)
        return response

    async def api(self, request: web.Request) -> web.StreamResponse:
        t0 = asyncio.get_running_loop().time()
        body = await self._body(request)
        if isinstance(body, web.Response):
            self._log(request, t0, body.status, None, "bad request", 0)
            return body
        endpoint = "/v1/responses" if request.path in RESPONSES_PATHS else "/v1/chat/completions"
        stream = bool(body.get("stream"))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        call, reason = self.api_chat.match(api_rules(api_last_user_text(body)), prefer=lambda c: 2 * (c.endpoint == endpoint) + (c.stream == stream))
        if call is None:
            self._log(request, t0, 404, None, reason, 0)
            return self._not_found(reason, last_user_text=api_last_user_text(body))
        assert isinstance(call, ApiCall)
        headers = self._own_headers(call, reason)
        same_shape = call.endpoint == endpoint and call.stream == stream and (call.events or not stream)
        if call.status_code >= 400 and not call.events:
            error = {"error": {"message": f"captured status {call.status_code}; its body is not in the capture", "type": "captured_error"}}
            response = await self._json_at(t0, call.end_ms, error, call.status_code, headers)
            self._log(request, t0, response.status, call, reason, 0)
            return response
        if not same_shape:
            headers["x-chatwire-synthesised"] = (
                f"captured {call.endpoint} {'streamed' if call.stream else 'not streamed'}; "
                f"built {endpoint} {'stream' if stream else 'body'} from its text, usage and times"
            )
        if not stream:
            completed = _captured_response(call) if endpoint == "/v1/responses" == call.endpoint else None
            if completed is not None:
                payload = completed  # the captured response.completed object, as it was
                headers.pop("x-chatwire-synthesised", None)
            elif endpoint == "/v1/responses":
                payload = response_body(call.answer)
            else:
                payload = chat_completion_body(call.answer)
            if completed is None:
                headers.setdefault("x-chatwire-synthesised", "body built from the captured text, usage and times")
            response = await self._json_at(t0, call.end_ms, payload, call.status_code, headers)
            self._log(request, t0, response.status, call, reason, 0)
            return response
        if same_shape:
            events = adapt_chat_stream(call.events, call.answer, include_usage) if endpoint == "/v1/chat/completions" else call.events
        elif endpoint == "/v1/responses":
            events = responses_events(call.answer)
        else:
            events = chat_chunk_events(call.answer, include_usage)
        headers["content-type"] = "text/event-stream; charset=utf-8"
        response, sent = await self._stream(request, t0, call, events, headers)
        self._log(request, t0, call.status_code, call, reason, sent)
        return response

    async def prepare(self, request: web.Request) -> web.Response:
        t0 = asyncio.get_running_loop().time()
        self._log(request, t0, 200, None, "prepare acknowledged", 0)
        return web.json_response({}, headers={"x-chatwire-note": "prepare is not replayed; answered {}"})

    async def conversation(self, request: web.Request) -> web.Response:
        t0 = asyncio.get_running_loop().time()
        conversation_id = request.match_info["conversation_id"]
        try:
            from analyzer.analysis.conversations import build_conversation
        except ImportError:
            self._log(request, t0, 501, None, "conversation analysis not available", 0)
            return web.json_response({"error": {"message": "analyzer.analysis.conversations is not available"}}, status=501)
        if self.catalog.capture is None:
            return self._not_found("no capture loaded")
        try:
            conv = build_conversation(self.catalog.capture, conversation_id)
        except (KeyError, LookupError, ValueError) as exc:
            self._log(request, t0, 404, None, "unknown conversation", 0)
            return self._not_found(f"conversation {conversation_id} is not in the capture ({exc})")
        data = conv.to_json()
        if not data.get("nodes"):
            self._log(request, t0, 404, None, "unknown conversation", 0)
            return self._not_found(f"conversation {conversation_id} is not in the capture")
        self._log(request, t0, 200, None, f"mapping of {len(data['nodes'])} nodes", 0)
        return web.json_response(mapping_json(data), dumps=lambda o: json.dumps(o, default=_json_default))

    async def models(self, request: web.Request) -> web.Response:
        t0 = asyncio.get_running_loop().time()
        self._log(request, t0, 200, None, f"{len(self.catalog.models)} models", 0)
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "chatwire-capture"} for m in self.catalog.models]
        return web.json_response({"object": "list", "data": data})

    async def preflight(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={
            "access-control-allow-methods": "GET, POST, OPTIONS",
            "access-control-allow-headers": request.headers.get("access-control-request-headers", "*"),
            "access-control-max-age": "600",
        })

    @staticmethod
    async def _cors(request: web.Request, response: web.StreamResponse) -> None:
        # A front end on another origin (a dev server) can read the served streams.
        response.headers["access-control-allow-origin"] = request.headers.get("origin", "*")
        response.headers["access-control-expose-headers"] = "*"

    def app(self) -> web.Application:
        app = web.Application()
        for path in CONVERSATION_PATHS:
            app.router.add_post(path, self.web_turn)
        app.router.add_post("/backend-api/f/conversation/prepare", self.prepare)
        app.router.add_post("/backend-anon/f/conversation/prepare", self.prepare)
        for prefix in CONVERSATION_GET_PREFIXES:
            app.router.add_get(prefix + "{conversation_id}", self.conversation)
        for path in CHAT_PATHS + RESPONSES_PATHS:
            app.router.add_post(path, self.api)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/models", self.models)
        app.router.add_route("OPTIONS", "/{tail:.*}", self.preflight)
        app.on_response_prepare.append(self._cors)
        return app


def _captured_response(call: ApiCall) -> dict | None:
    """The ``response`` object of a captured ``response.completed`` event, if there is one."""
    for event in reversed(call.events):
        if event.event == "response.completed" or '"response.completed"' in event.data[:80]:
            try:
                obj = json.loads(event.data)
            except ValueError:
                return None
            return obj.get("response") if isinstance(obj, dict) else None
    return None


async def serve_forever(
    server: ReplayServer, host: str, port: int, ready: Callable[[list[str]], None] | None = None
) -> None:
    """Bind, report the bound addresses (port 0 picks a free one), serve until cancelled."""
    runner = web.AppRunner(server.app(), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        urls = [f"http://{a[0]}:{a[1]}" if ":" not in a[0] else f"http://[{a[0]}]:{a[1]}" for a in runner.addresses]
        if ready is not None:
            ready(urls)
        while True:
            await asyncio.sleep(3600)
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()


def run(catalog: Catalog, host: str, port: int, *, speed: float = 1.0, loop: bool = False,
        ready: Callable[[list[str]], None] | None = None) -> None:
    """Serve until Ctrl-C or SIGTERM."""
    import signal

    server = ReplayServer(catalog, speed=speed, loop=loop)

    async def main() -> None:
        task = asyncio.current_task()
        aio_loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError):
            aio_loop.add_signal_handler(signal.SIGTERM, task.cancel)
        await serve_forever(server, host, port, ready)

    started = time.time()
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(main())
    log.info("served for %.0f s", time.time() - started)
