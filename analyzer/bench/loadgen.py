"""The load generator: an aiohttp client that records when each request's bytes were written.

``sent_at`` is taken in aiohttp's ``on_request_chunk_sent`` trace hook, which runs as the request
body is handed to the socket: after the connection is made and the headers are serialised, so
neither the client's set-up nor the wait for a pooled connection counts as server time (the wait
shows up as schedule lag instead). Every response chunk is time-stamped as it is read and fed to the
project's SSE parser, so each event gets the arrival time of the chunk that completed it.

One clock for everything: ``time.perf_counter`` anchored once to the epoch (monotonic, sub-µs).
The API key goes into the ``Authorization`` header and nowhere else; no captured header is sent.
"""

from __future__ import annotations

import asyncio
import codecs
import contextvars
import time
import uuid
from dataclasses import dataclass, field

import aiohttp

from analyzer.bench.metrics import RequestRecord, error_kind
from analyzer.json_codec import parse_json
from analyzer.streams.sse import SSEParser

_SENT: contextvars.ContextVar[list | None] = contextvars.ContextVar("chatwire_bench_sent", default=None)


class Clock:
    """Epoch seconds from ``perf_counter``: monotonic within a run, comparable with ``time.time()``."""

    def __init__(self) -> None:
        self._base = time.time() - time.perf_counter()

    def now(self) -> float:
        return self._base + time.perf_counter()


@dataclass
class RequestSpec:
    session_id: str
    turn_index: int
    messages: list[dict]
    model: str
    intended_at: float
    max_tokens: int | None = None
    hold_length: bool = False  # also min_tokens = max_tokens and ignore_eos (vLLM, SGLang, TGI take them)
    context_tokens: int | None = None
    captured_context_chars: int | None = None
    recorded_tokens: int | None = None  # the workload's answer length (max_tokens unless --no-max-tokens)
    recorded_tokens_source: str | None = None  # where it came from (workload.BenchTurn.tokens_source)


@dataclass
class Result:
    """A record and what the capture rows need: the raw events and response headers."""

    record: RequestRecord
    chunks: list[tuple[float, str]] = field(default_factory=list)  # (arrival, SSE data), [DONE] left out
    done: bool = False
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    http_version: str | None = None
    url: str = ""
    body: dict = field(default_factory=dict)


def request_body(spec: RequestSpec) -> dict:
    body: dict = {"model": spec.model, "messages": spec.messages, "stream": True,
                  "stream_options": {"include_usage": True}}
    if spec.max_tokens:
        body["max_tokens"] = spec.max_tokens
        if spec.hold_length:
            body["min_tokens"] = spec.max_tokens
            body["ignore_eos"] = True
    return body


def _delta_parts(obj: dict) -> tuple[bool, bool]:
    """(carries output, carries visible text) for one chat.completions chunk."""
    out = vis = False
    for choice in obj.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content"):
            out = vis = True
        if delta.get("reasoning_content") or delta.get("reasoning"):
            out = True
        if delta.get("tool_calls"):
            out = vis = True
    return out, vis


async def _on_chunk_sent(session, ctx, params) -> None:
    slot = _SENT.get()
    if slot is not None:
        slot.append(time.perf_counter())


async def _on_headers_sent(session, ctx, params) -> None:
    slot = _SENT.get()
    if slot is not None:
        slot.append(time.perf_counter())


class LoadGenerator:
    """One aiohttp session for a run. Use as ``async with``."""

    def __init__(self, base_url: str, api_key: str | None, *, run_id: str, clock: Clock | None = None,
                 timeout_s: float = 600.0, max_connections: int = 0) -> None:
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.run_id = run_id
        self.clock = clock or Clock()
        self._headers = {"content-type": "application/json", "accept": "text/event-stream"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_connections = max_connections
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> LoadGenerator:
        trace = aiohttp.TraceConfig()
        trace.on_request_headers_sent.append(_on_headers_sent)
        trace.on_request_chunk_sent.append(_on_chunk_sent)
        connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0, force_close=False)
        self.session = aiohttp.ClientSession(connector=connector, trace_configs=[trace], timeout=self._timeout,
                                             auto_decompress=True)
        return self

    async def __aexit__(self, *exc) -> None:
        if self.session is not None:
            await self.session.close()

    def _epoch(self, perf: float) -> float:
        return self.clock._base + perf

    async def models(self) -> dict:
        """``GET /models``: the model ids, or the error (recorded with the run)."""
        assert self.session is not None
        try:
            async with self.session.get(self.base_url + "/models", headers=self._headers,
                                        timeout=aiohttp.ClientTimeout(total=10)) as resp:
                if resp.status != 200:
                    return {"error": f"HTTP {resp.status}"}
                body = await resp.json(content_type=None)
            data = body.get("data") if isinstance(body, dict) else None
            return {"ids": [m.get("id") for m in data if isinstance(m, dict)] if isinstance(data, list) else []}
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}

    async def send(self, spec: RequestSpec) -> Result:
        """Send one request and read its stream to the end. Never raises except on cancellation
        (then the partial result is in the exception's ``result`` attribute)."""
        assert self.session is not None
        rec = RequestRecord(run_id=self.run_id, flow_id=str(uuid.uuid4()), session_id=spec.session_id,
                            turn_index=spec.turn_index, intended_at=spec.intended_at,
                            context_tokens=spec.context_tokens,
                            context_chars=sum(len(m.get("content") or "") for m in spec.messages),
                            captured_context_chars=spec.captured_context_chars,
                            recorded_tokens=spec.recorded_tokens, recorded_tokens_source=spec.recorded_tokens_source)
        body = request_body(spec)
        result = Result(rec, url=self.url, body=body)
        sent: list[float] = []
        token = _SENT.set(sent)
        parser = SSEParser()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        finished = False
        usage = None
        clock = self.clock
        asked_at = clock.now()
        try:
            async with self.session.post(self.url, json=body, headers=self._headers) as resp:
                rec.headers_at = clock.now()
                rec.sent_at = self._epoch(sent[-1]) if sent else None
                rec.status_code = resp.status
                result.http_version = f"HTTP/{resp.version.major}.{resp.version.minor}" if resp.version else None
                result.response_headers = list(resp.headers.items())
                if resp.status >= 400:
                    text = (await resp.read()).decode("utf-8", "replace")
                    rec.ended_at = clock.now()
                    rec.error = f"HTTP {resp.status}: {_error_message(text)}"
                    rec.error_kind = error_kind(resp.status)
                    return result
                async for data in resp.content.iter_any():
                    at = clock.now()
                    for event in parser.feed(decoder.decode(data), at):
                        if event.data == "[DONE]":
                            result.done = True
                            continue
                        result.chunks.append((at, event.data))
                        try:
                            obj = parse_json(event.data)
                        except ValueError:
                            continue
                        if not isinstance(obj, dict):
                            continue
                        out, vis = _delta_parts(obj)
                        if out:
                            rec.token_times.append(at)
                            if vis:
                                rec.visible_times.append(at)
                            for choice in obj.get("choices") or ():
                                rec.answer_text += (choice.get("delta") or {}).get("content") or ""
                        if any(c.get("finish_reason") for c in obj.get("choices") or ()):
                            finished = True
                        if isinstance(obj.get("usage"), dict):
                            usage = obj["usage"]
                rec.ended_at = clock.now()
            if not (result.done or finished):
                rec.error = f"stream cut after {len(result.chunks)} event(s): no finish_reason, no [DONE]"
                rec.error_kind = "cut"
        except asyncio.CancelledError as exc:
            rec.ended_at = clock.now()
            rec.error = f"interrupted after {len(result.chunks)} event(s)"
            rec.error_kind = "interrupted"
            exc.result = result  # type: ignore[attr-defined]
            raise
        except TimeoutError:
            rec.ended_at = clock.now()
            rec.error = f"timed out after {len(result.chunks)} event(s)"
            rec.error_kind = "timeout"
        except aiohttp.ClientPayloadError as exc:
            rec.ended_at = clock.now()
            rec.error = f"stream cut after {len(result.chunks)} event(s): {exc}"
            rec.error_kind = "cut"
        except (aiohttp.ClientError, OSError) as exc:
            rec.ended_at = clock.now()
            rec.error = f"network error after {len(result.chunks)} event(s): {type(exc).__name__}: {exc}"
            rec.error_kind = "cut" if result.chunks else "network"
        finally:
            _SENT.reset(token)
            if rec.sent_at is None and sent:
                rec.sent_at = self._epoch(sent[-1])
            if rec.sent_at is None and rec.status_code is not None:
                # An answer without the hook's report (an aiohttp that stopped calling it): the moment
                # the client was asked is the best we know.
                rec.sent_at = asked_at
            if usage:
                rec.output_tokens = usage.get("completion_tokens")
                rec.output_tokens_source = "usage" if rec.output_tokens is not None else None
                rec.prompt_tokens = usage.get("prompt_tokens")
                if rec.prompt_tokens:
                    rec.context_tokens = rec.prompt_tokens
        return result


def _error_message(text: str) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the body's start."""
    try:
        obj = parse_json(text)
        message = obj["error"]["message"] if isinstance(obj.get("error"), dict) else obj.get("message")
        if isinstance(message, str):
            return message[:300]
    except (ValueError, TypeError, AttributeError, KeyError):
        pass
    return text.strip()[:300] or "(empty body)"
