"""A local OpenAI-compatible chat.completions server with a known schedule, for replay tests.

The first path segment picks the behaviour (the rest is the usual ``/v1/chat/completions``):

- ``/ok/v1``: streams the answer ``"<n> echo <question words>"`` one word per chunk: the first
  content chunk ``ttft_ms`` after the request, then one every ``gap_ms``; then the finish chunk,
  the usage chunk (when asked for) and ``[DONE]``.
- ``/ratelimit/v1``: the first request for each question gets ``429`` with ``retry-after-ms``;
  the next one is served like ``/ok``.
- ``/drop/v1``: sends ``drop_after`` content chunks, then cuts the connection mid-stream.
- ``/bad/v1``: ``400`` (must not be retried).
- ``/queue/v1``: a serving engine's queue model, so that overload is real: ``slots`` requests are
  served at once, the others wait in arrival order; a served request streams ``max_tokens`` tokens
  (``queue_tokens`` without it), one every ``per_token_ms`` from the moment it got its slot.

``GET /<behaviour>/v1/models`` lists one model. Every answered request also gets a row in
``server.send_log``: ``received_at`` (the handler started: the request's headers were in),
``slot_at`` (it began to be served), ``first_token_at`` (its first content chunk was handed to the
socket), ``ended_at``, ``n_tokens`` and ``in_service`` (requests being served at ``slot_at``, itself
included): the server's own account, for tests to check the client's timing against.

Every request is kept in ``server.requests`` (path, JSON body, headers, arrival time) and every
served chunk's intended send time in ``server.schedules`` so tests can compare recorded timings
with the schedule. Run ``python tests/replay_api_server.py`` to try it by hand.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field

from aiohttp import web


def answer_words(question: str, n_call: int) -> list[str]:
    """The answer to ``question``: deterministic, so tests know it."""
    return [f"{n_call}", " echo"] + [f" {w}" for w in question.split()]


@dataclass
class ApiTestServer:
    ttft_ms: float = 150.0
    gap_ms: float = 40.0
    drop_after: int = 2
    retry_after_ms: int = 300
    slots: int = 2
    per_token_ms: float = 10.0
    queue_tokens: int = 8
    send_usage: bool = True  # False: never a usage chunk, even when asked (servers that do not send one)
    requests: list[dict] = field(default_factory=list)
    send_log: list[dict] = field(default_factory=list)
    schedules: dict[str, list[float]] = field(default_factory=dict)  # response id -> send offsets (ms)
    _limited: set[str] = field(default_factory=set)
    _slots: asyncio.Semaphore | None = None
    _in_service: int = 0
    base_url: str = ""
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    def url(self, behaviour: str) -> str:
        return f"{self.base_url}/{behaviour}/v1"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        received_at = time.time()
        behaviour = request.match_info["behaviour"]
        body = await request.json()
        self.requests.append({"behaviour": behaviour, "body": body, "headers": dict(request.headers), "at": time.time()})
        question = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")
        if behaviour == "bad":
            return web.json_response({"error": {"message": "model not found", "type": "invalid_request_error"}}, status=400)
        if behaviour == "ratelimit" and question not in self._limited:
            self._limited.add(question)
            return web.json_response(
                {"error": {"message": "Rate limit reached", "type": "requests"}}, status=429,
                headers={"retry-after-ms": str(self.retry_after_ms), "retry-after": "1"},
            )
        n_call = len(self.requests)
        response_id = f"chatcmpl-test{n_call}"
        words = answer_words(question, n_call)
        include_usage = self.send_usage and bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict, finish: str | None = None, usage: dict | None = None, choices: bool = True) -> bytes:
            obj = {"id": response_id, "object": "chat.completion.chunk", "created": int(time.time()),
                   "model": body.get("model"), "system_fingerprint": "fp_test",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else [],
                   "usage": usage}
            return f"data: {json.dumps(obj)}\n\n".encode()

        response = web.StreamResponse(headers={"content-type": "text/event-stream", "x-request-id": response_id})
        await response.prepare(request)
        schedule: list[float] = []
        self.schedules[response_id] = schedule
        log = {"response_id": response_id, "behaviour": behaviour, "received_at": received_at, "slot_at": None,
               "first_token_at": None, "ended_at": None, "n_tokens": 0, "in_service": None}
        self.send_log.append(log)

        async def at(offset_ms: float, data: bytes, base: float | None = None) -> None:
            delay = (t0 if base is None else base) + offset_ms / 1000 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            schedule.append(offset_ms)
            if log["first_token_at"] is None and b'"content": "' in data and b'"content": ""' not in data:
                log["first_token_at"] = time.time()
            await response.write(data)

        try:
            if behaviour == "queue":
                await self._queued(at, chunk, body, include_usage, log)
                await response.write_eof()
            else:
                if log["slot_at"] is None:
                    log["slot_at"] = received_at
                if await self._stream(at, chunk, request, words, include_usage, body):
                    await response.write_eof()
        except ConnectionResetError:  # the client went away (a test interrupting it)
            pass
        log["ended_at"] = time.time()
        return response

    async def _queued(self, at, chunk, body, include_usage, log) -> None:
        """Wait for one of ``slots``, then one token every ``per_token_ms`` from the slot's start."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.slots)
        n = int(body.get("max_tokens") or self.queue_tokens)
        async with self._slots:
            self._in_service += 1
            try:
                base = asyncio.get_running_loop().time()
                log["slot_at"] = time.time()
                log["in_service"] = self._in_service
                await at(0, chunk({"role": "assistant", "content": ""}), base)
                for k in range(n):
                    await at((k + 1) * self.per_token_ms, chunk({"content": f" t{k}"}), base)
                    log["n_tokens"] = k + 1
                end = n * self.per_token_ms
                await at(end, chunk({}, finish="length" if body.get("max_tokens") else "stop"), base)
                if include_usage:
                    usage = {"prompt_tokens": sum(len(m["content"].split()) for m in body["messages"]),
                             "completion_tokens": n}
                    usage["total_tokens"] = usage["prompt_tokens"] + n
                    await at(end, chunk({}, usage=usage, choices=False), base)
                await at(end, b"data: [DONE]\n\n", base)
            finally:
                self._in_service -= 1

    async def _stream(self, at, chunk, request, words, include_usage, body) -> bool:
        """Send the answer on its schedule; False when the connection was cut on purpose."""
        await at(self.ttft_ms, chunk({"role": "assistant", "content": ""}))
        for k, word in enumerate(words):
            if request.match_info["behaviour"] == "drop" and k == self.drop_after:
                request.transport.abort()  # mid-stream: no terminating chunk, no [DONE]
                return False
            await at(self.ttft_ms + k * self.gap_ms, chunk({"content": word}))
        end = self.ttft_ms + len(words) * self.gap_ms
        await at(end, chunk({}, finish="stop"))
        if include_usage:
            usage = {"prompt_tokens": sum(len(m["content"].split()) for m in body["messages"]),
                     "completion_tokens": len(words), "total_tokens": 0}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            await at(end, chunk({}, usage=usage, choices=False))
        await at(end, b"data: [DONE]\n\n")
        return True

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "test-model", "object": "model"}]})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{behaviour}/v1/chat/completions", self._handle)
        app.router.add_get("/{behaviour}/v1/models", self._models)
        return app

    def start(self) -> ApiTestServer:
        """Serve on a free port in a background thread."""
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._runner = web.AppRunner(self.app(), access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            host, port = self._runner.addresses[0][:2]
            self.base_url = f"http://{host}:{port}"
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="replay-api-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("test API server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)


if __name__ == "__main__":
    server = ApiTestServer().start()
    print(f"serving on {server.url('ok')} (also /ratelimit/v1, /drop/v1, /bad/v1); Ctrl-C stops")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()
