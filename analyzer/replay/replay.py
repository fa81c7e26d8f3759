"""``analyze replay``: send the user turns of a captured web conversation to an OpenAI-compatible API.

The web app carries context by reference (``conversation_id`` + ``parent_message_id``), the API by
value (``messages``). For each user message on the conversation's active branch, the context is
rebuilt from the branch: with ``context="captured"`` the history holds the web app's own answers
(so every turn asks the question the web app was asked, in the same context); with ``"live"`` it
holds the API's previous answers (turns then run one after the other).

Every attempt is recorded like a captured API call (``flows``, ``api_calls``, ``stream_events``
with the arrival time of each chunk as the ``openai`` client yields it, ``source = "replay"``), with
the extractor's own row builders, so ``analyze report`` reads a replay like any capture. Two
approximations, because the client hands back parsed chunks: an event's ``data`` is the chunk
re-serialised (``to_json``: the fields the server sent, compact), and the ``[DONE]`` event the client
consumes is recorded at the time the stream ended. The API key never reaches a row: requests are
recorded as their JSON body only and response headers go through ``analyzer.redact``.
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import openai
import pandas as pd

from analyzer.replay.compare import Side, TurnComparison, answer_metrics
from analyzer.store import Capture, CaptureWriter

log = logging.getLogger(__name__)

SOURCE = "replay"
MAX_WAIT_S = 120.0  # a retry-after longer than this is not waited for


# ---------------------------------------------------------------- planning (pure)


@dataclass
class TurnPlan:
    """One user turn of the branch: its question, its captured context and the web app's answer."""

    index: int
    user_id: str
    user_text: str
    messages: list[dict]  # captured context: history with the web answers, ending with this question
    prefix: list[dict]  # the system messages before the first user message (for the live context)
    web: Side
    model: str | None = None


def plan_turns(conv, web_sides: dict[str, Side]) -> list[TurnPlan]:
    """The user turns of ``conv``'s active branch. ``web_sides`` maps a user message id to the web
    app's answer to it (metrics and text)."""
    branch = conv.active_branch()
    visible = {id(m) for m in branch if conv.openai_messages([m])}
    plans: list[TurnPlan] = []
    users = [i for i, n in enumerate(branch) if n.role == "user" and id(n) in visible]
    prefix = conv.openai_messages(branch[: users[0]]) if users else []
    for k, i in enumerate(users):
        node = branch[i]
        end = users[k + 1] if k + 1 < len(users) else len(branch)
        answers = [m for m in conv.openai_messages(branch[i + 1 : end]) if m["role"] == "assistant"]
        web = web_sides.get(node.id) or Side()
        if web.text is None and answers:
            web.text = answers[-1]["content"]
        model = next((n.model_slug for n in branch[i + 1 : end] if n.role == "assistant" and n.model_slug), None)
        plans.append(
            TurnPlan(
                index=k + 1, user_id=node.id, user_text=node.text or "",
                messages=conv.openai_messages(branch[: i + 1]), prefix=prefix, web=web, model=web.model or model,
            )
        )
    return plans


def live_messages(plan: TurnPlan, previous: list[tuple[TurnPlan, str | None]]) -> list[dict]:
    """The live context: the system prefix, each earlier question with the API's answer (the web
    answer where the API gave none), then this question."""
    messages = list(plan.prefix)
    for earlier, answer in previous:
        messages.append({"role": "user", "content": earlier.user_text})
        fallback = earlier.web.text
        if answer or fallback:
            messages.append({"role": "assistant", "content": answer or fallback})
    messages.append({"role": "user", "content": plan.user_text})
    return messages


def web_sides(capture: Capture, conv, frames: dict | None = None) -> dict[str, Side]:
    """The web app's answer to each user message of ``conv``: timing from ``analyzer.analysis.latency``
    (TTFT, TPOT, tokens; ITL from its gaps), text from the answer's message. ``frames`` may hold the
    capture's ``turn_latency`` (``latency``) and ``itl_gaps`` (``gaps``), to compute them once for many
    conversations."""
    from analyzer.analysis.latency import itl_gaps, turn_latency

    turns = capture.table("conversation_turns")
    turns = turns[(turns["conversation_id"] == conv.conversation_id) & turns["user_message_id"].notna()]
    if turns.empty:
        return {}
    frames = frames or {}
    lat = frames["latency"] if "latency" in frames else turn_latency(capture)
    lat = lat.drop_duplicates("flow_id").set_index("flow_id")
    gaps = frames["gaps"] if "gaps" in frames else itl_gaps(capture)
    itl = gaps[gaps["flow_id"].isin(set(turns["flow_id"]))].groupby("flow_id", observed=True)["itl_ms"].median()
    out: dict[str, Side] = {}
    for row in turns.sort_values("started_at").to_dict("records"):
        fid = row["flow_id"]
        metrics = lat.loc[fid] if fid in lat.index else None
        tpot = _opt(metrics["tpot_ms"]) if metrics is not None else None
        answer_id = _opt(row.get("assistant_message_id"))
        node = conv.nodes.get(answer_id) if answer_id else None
        out[row["user_message_id"]] = Side(
            flow_id=fid,
            ttft_ms=_opt(metrics["ttft_ms"]) if metrics is not None else _opt(row.get("ttft_ms")),
            itl_p50_ms=_opt(itl.get(fid)) if fid in itl.index else None,
            tokens_per_s=1000.0 / tpot if tpot else None,
            e2e_ms=_opt(metrics["e2e_ms"]) if metrics is not None else _opt(row.get("e2e_ms")),
            tokens=_opt(metrics["tokens"]) if metrics is not None else None,
            text=(node.text if node is not None else None) or _opt(row.get("assistant_text")),
            model=_opt(row.get("model_slug")) or _opt(row.get("requested_model")),
            status_code=None,
        )
    return out


def _opt(value):
    """A DataFrame cell as a plain value; None for missing."""
    try:
        if value is None or pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value.item() if hasattr(value, "item") else value


# ---------------------------------------------------------------- retry policy (pure)


def retry_after_s(headers) -> float | None:
    """The wait the server asks for: ``retry-after-ms``, ``retry-after`` in seconds or as an HTTP date."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(float(value) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def should_retry(status: int | None, headers=None) -> bool:
    """Retry network errors (``status`` None), 408, 409, 429 and 5xx, unless ``x-should-retry`` says otherwise."""
    hint = (headers or {}).get("x-should-retry") if headers is not None else None
    if hint == "true":
        return True
    if hint == "false":
        return False
    return status is None or status in (408, 409, 429) or status >= 500


def backoff_s(attempt: int, base: float) -> float:
    """Exponential backoff with a little jitter: base, 2·base, 4·base… (capped at 8 s)."""
    return min(base * 2**attempt, 8.0) * (1 + random.uniform(0, 0.25))


# ---------------------------------------------------------------- recording


@dataclass
class Attempt:
    """One HTTP call to the API and what came back."""

    flow_id: str
    started_at: float
    messages: list[dict]
    model: str
    status_code: int | None = None
    headers_at: float | None = None
    ended_at: float | None = None
    chunks: list[tuple[float, str]] = field(default_factory=list)  # (arrival, data)
    done: bool = False
    error: str | None = None
    retry_after: float | None = None
    network_error: bool = False  # the connection failed (before or during the stream)
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    http_version: str | None = None
    url: str = ""
    written_at: float | None = None  # when the request's bytes were written (set by make_client's hook)


def attempt_rows(attempt: Attempt, *, redact: bool = True) -> tuple[dict[str, list[dict]], Side]:
    """The capture rows of one attempt, built the way the extractor builds them, and its metrics."""
    from analyzer.extract.common import to_json
    from analyzer.extract.conversation import stream_rows, turn_timing
    from analyzer.redact import redact_headers
    from analyzer.streams.openai_api import ApiStream
    from analyzer.streams.sse import SSEEvent

    start = attempt.started_at
    stream = ApiStream("chat.completions")
    events = [SSEEvent(data=data, event=None, at=at, n_bytes=len(data.encode()) + 8) for at, data in attempt.chunks]
    if attempt.done:
        events.append(SSEEvent(data="[DONE]", at=attempt.ended_at, n_bytes=14))
    fid = attempt.flow_id
    event_rows = stream_rows(fid, events, start, redact, stream.feed)
    ttft, e2e, n_text = turn_timing(event_rows)
    url = urlsplit(attempt.url)
    body = {"model": attempt.model, "messages": attempt.messages, "stream": True, "stream_options": {"include_usage": True}}
    request_json = to_json(body, redact)
    prompt, completion, total = stream.tokens()
    text = "".join(stream.text)
    call = {
        "flow_id": fid, "host": url.hostname, "endpoint": url.path or "/v1/chat/completions",
        "model": stream.model or attempt.model, "stream": True, "n_messages": len(attempt.messages),
        "last_user_text": next((m["content"] for m in reversed(attempt.messages) if m["role"] == "user"), None),
        "response_text": text if event_rows else None, "prompt_tokens": prompt, "completion_tokens": completion,
        "total_tokens": total, "finish_reason": stream.finish_reason, "response_id": stream.response_id,
        "system_fingerprint": stream.system_fingerprint, "status_code": attempt.status_code,
        "started_at": start, "ttft_ms": ttft, "e2e_ms": e2e, "n_events": len(event_rows),
        "n_text_events": n_text, "request_json": request_json,
    }
    headers = dict((k.lower(), v) for k, v in attempt.response_headers)
    ended = attempt.ended_at
    flow = {
        "flow_id": fid, "kind": "api", "source": SOURCE, "method": "POST", "scheme": url.scheme,
        "host": url.hostname, "port": url.port or (443 if url.scheme == "https" else 80),
        "path": url.path, "query": None, "http_version": attempt.http_version,
        "status_code": attempt.status_code, "started_at": start, "ended_at": ended,
        "ttfb_ms": None if attempt.headers_at is None else (attempt.headers_at - start) * 1000.0,
        "duration_ms": None if ended is None else (ended - start) * 1000.0,
        "request_bytes": len(request_json.encode()) if request_json else None,
        "response_bytes": sum(e.n_bytes for e in events) if events else None,
        "content_type": (headers.get("content-type") or "").split(";")[0].strip() or None,
        "content_encoding": headers.get("content-encoding"), "cf_ray": headers.get("cf-ray"),
        "streamed": bool(events), "n_chunks": len(attempt.chunks) or None,
        # The request's headers carry the key: they are not recorded at all.
        "request_headers": None,
        "response_headers": json.dumps(redact_headers(attempt.response_headers) if redact else attempt.response_headers,
                                       ensure_ascii=False) if attempt.response_headers else None,
        "error": attempt.error,
    }
    rows = {"flows": [flow], "api_calls": [call], "stream_events": event_rows}
    if attempt.error and (attempt.status_code is None or attempt.status_code < 400 or attempt.network_error):
        # The stream could not be read to its end (as an extractor would note); an HTTP error
        # status is an answer, recorded in ``flows.error`` alone.
        rows["errors"] = [{"flow_id": fid, "stage": "replay", "error": attempt.error, "at": ended or start}]
    text_offsets = [r["offset_ms"] for r in event_rows if r["text"]]
    itl, tps = answer_metrics(text_offsets, completion)
    side = Side(
        flow_id=fid, ttft_ms=ttft, itl_p50_ms=itl, tokens_per_s=tps, e2e_ms=e2e, tokens=completion,
        text=text if event_rows else None, model=stream.model or attempt.model,
        status_code=attempt.status_code, error=attempt.error,
    )
    return rows, side


# ---------------------------------------------------------------- the calls

# The attempt whose request is being sent (the httpx hook below runs in the task that sends it).
_SENDING: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar("chatwire_replay_sending", default=None)
# The request's first bytes are about to be written (after the connection is made): a trace event
# that completes after the write could come after the server already has the request.
_WRITING = ("http11.send_request_headers.started", "http2.send_request_headers.started")


async def _note_bytes_written(request) -> None:
    """httpx request hook: ask httpcore to report when the request's bytes are written."""
    attempt = _SENDING.get()
    if attempt is None:
        return

    async def trace(name: str, info: dict) -> None:
        if name in _WRITING:
            attempt.written_at = time.time()

    request.extensions["trace"] = trace


def make_client(base_url: str, api_key: str, *, timeout: float) -> openai.AsyncOpenAI:
    """An ``openai.AsyncOpenAI`` client whose calls record the moment their request bytes were written
    (``Attempt.started_at``): the client's own set-up before that (about 50 ms on the first call:
    building the request, the connection) is not the server's time to first token."""
    http_client = openai.DefaultAsyncHttpxClient(timeout=timeout, event_hooks={"request": [_note_bytes_written]})
    return openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout,
                              http_client=http_client)



def _error_text(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        message = body.get("message") if isinstance(body.get("message"), str) else None
        return f"HTTP {exc.status_code}: {message or exc.message}"
    cause = exc.__cause__ or exc.__context__
    detail = f" ({type(cause).__name__}: {cause})" if cause else ""
    return f"{type(exc).__name__}: {exc}{detail}"


class Replayer:
    """Sends turns through an ``openai.AsyncOpenAI`` client, records every attempt, keeps results.

    ``results`` fills in as turns finish, so a caller interrupted by Ctrl-C still has them; rows go
    to ``writer`` (when given) as each attempt ends.
    """

    def __init__(self, client: openai.AsyncOpenAI, *, writer: CaptureWriter | None, model: str | None,
                 retries: int = 3, backoff: float = 0.5, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.writer = writer
        self.model = model
        self.retries = retries
        self.backoff = backoff
        self.clock = clock
        self.results: dict[int, TurnComparison] = {}

    async def _attempt(self, messages: list[dict], model: str) -> Attempt:
        attempt = Attempt(flow_id=str(uuid.uuid4()), started_at=self.clock(), messages=messages, model=model,
                          url=str(self.client.base_url).rstrip("/") + "/chat/completions")
        token = _SENDING.set(attempt)
        try:
            stream = await self.client.chat.completions.create(
                model=model, messages=messages, stream=True, stream_options={"include_usage": True},
            )
            attempt.headers_at = self.clock()
            self._count_from_written(attempt)
            response = stream.response
            attempt.status_code = response.status_code
            attempt.http_version = response.http_version
            attempt.response_headers = list(response.headers.multi_items())
            attempt.url = str(response.request.url)
            async for chunk in stream:
                attempt.chunks.append((self.clock(), chunk.to_json(indent=None)))
            attempt.done = True
        except openai.APIStatusError as exc:
            attempt.status_code = exc.status_code
            attempt.response_headers = list(exc.response.headers.multi_items())
            attempt.http_version = exc.response.http_version
            attempt.retry_after = retry_after_s(exc.response.headers)
            attempt.error = _error_text(exc)
        except (openai.APIError, OSError) as exc:  # connection refused, dropped mid-stream, timeouts
            attempt.network_error = True
            got = f" after {len(attempt.chunks)} chunk(s)" if attempt.chunks else ""
            attempt.error = f"network error{got}: {_error_text(exc)}"
        except asyncio.CancelledError:
            attempt.error = f"interrupted after {len(attempt.chunks)} chunk(s)"
            self._count_from_written(attempt)
            attempt.ended_at = self.clock()
            self._record(attempt)
            raise
        finally:
            _SENDING.reset(token)
        self._count_from_written(attempt)
        attempt.ended_at = self.clock()
        return attempt

    @staticmethod
    def _count_from_written(attempt: Attempt) -> None:
        """Count the attempt from the moment its bytes were written, when the client reported it."""
        if attempt.written_at is not None:
            attempt.started_at = attempt.written_at

    def _record(self, attempt: Attempt) -> Side:
        rows, side = attempt_rows(attempt)
        if self.writer is not None:
            self.writer.add(rows)
        return side

    async def send(self, plan: TurnPlan, messages: list[dict]) -> Side:
        """One turn with retries; the returned side is the last attempt's, with every attempt listed."""
        model = self.model or plan.model or "gpt-4o-mini"
        attempts: list[dict] = []
        side = Side()
        for n in range(self.retries + 1):
            attempt = await self._attempt(messages, model)
            side = self._record(attempt)
            headers = dict((k.lower(), v) for k, v in attempt.response_headers)
            entry = {"flow_id": attempt.flow_id, "status_code": attempt.status_code, "error": attempt.error}
            attempts.append(entry)
            if attempt.error is None:
                break
            status = None if attempt.network_error else attempt.status_code
            retry = n < self.retries and should_retry(status, None if attempt.network_error else headers)
            log.warning("turn %d attempt %d: %s%s", plan.index, n + 1, attempt.error, "; retrying" if retry else "")
            if not retry:
                break
            wait = attempt.retry_after if attempt.retry_after is not None else backoff_s(n, self.backoff)
            wait = min(wait, MAX_WAIT_S)
            entry["wait_s"] = round(wait, 3)
            await asyncio.sleep(wait)
        side.attempts = attempts
        return side

    async def run(self, plans: list[TurnPlan], *, context: str = "captured", concurrency: int = 1) -> list[TurnComparison]:
        """Send every turn; ``results`` holds each as it finishes."""
        for plan in plans:
            self.results[plan.index] = TurnComparison(plan.index, plan.user_text, plan.web, None)
        if context == "live":
            previous: list[tuple[TurnPlan, str | None]] = []
            for plan in plans:
                side = await self.send(plan, live_messages(plan, previous))
                self.results[plan.index].api = side
                previous.append((plan, None if side.error else side.text))
        else:
            gate = asyncio.Semaphore(max(concurrency, 1))

            async def one(plan: TurnPlan) -> None:
                async with gate:
                    self.results[plan.index].api = await self.send(plan, plan.messages)

            await asyncio.gather(*(one(p) for p in plans))
        return [self.results[k] for k in sorted(self.results)]
