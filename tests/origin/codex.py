"""The Codex backend of chatgpt.com over HTTP (guide section 6a), as the Codex CLI meets it.

Routes:

- ``POST /backend-api/codex/responses``: the Responses-API event stream with Codex's extras
  (``codex.rate_limits``, ``codex.response.metadata``) and the limit headers (``x-codex-primary-*``,
  ``x-codex-secondary-*``, ``x-codex-credits-*``, a metered family ``x-codex-bengalfox-*``,
  ``openai-model``, ``x-models-etag``, ``x-reasoning-included``). As Codex answers over HTTP, the
  text comes as deltas and ``output_item.done`` while ``response.completed`` carries ``output: []``.
  A zstd request body (``Content-Encoding: zstd``) is decoded.
- ``POST /backend-api/codex/analytics-events/events``: the CLI's telemetry (``{"events": [...]}``).
- ``POST /backend-api/ps/mcp``: MCP over streamable HTTP (JSON-RPC); ``tools/call`` answers an
  event stream (progress notifications, then the result), everything else JSON.

Request headers that steer it (besides the server's ``x-origin-delays-ms``, ``x-origin-encoding``):

- ``x-origin-content-type: none`` — the answer without a Content-Type header.
- ``x-origin-reasoning: 1`` — a reasoning item (summary deltas) before the message.
- ``x-origin-codex: no-deltas`` — the message text only in ``output_text.done`` / ``output_item.done``.
- ``x-origin-codex-fail: usage_limit`` (the wrapped 429 error event inside a 200 stream),
  ``overloaded`` (``response.failed`` with ``server_is_overloaded``), ``http429`` (an HTTP 429 JSON
  answer with the limit headers).

Every limit value sent is in the request's log record (``limits``), the tests' oracle.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from typing import TYPE_CHECKING, Any

from tests.origin import formats as F

if TYPE_CHECKING:
    from tests.origin.server import OriginApp, Request, Send

CODEX_RESPONSES = "/backend-api/codex/responses"
CODEX_ANALYTICS = "/backend-api/codex/analytics-events/events"
MCP = "/backend-api/ps/mcp"
RESET_BASE = 1_800_000_000  # reset times are fixed epochs: a test can check them exactly
_calls = itertools.count(1)  # one origin process: the n-th Codex call burns 5 * n % of the window


def request_json(req: Request) -> Any:
    """The request body as JSON, zstd-decoded when it says so (the Codex CLI compresses it)."""
    body = req.body
    if req.headers.get("content-encoding", "").strip().lower() == "zstd":
        import zstandard

        try:
            body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
        except zstandard.ZstdError:
            return None
    try:
        return json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        return None


def limits_for(n: int) -> dict:
    """The usage limits reported on the n-th call: the default limit's two windows and a metered one."""
    return {
        "plan_type": "plus",
        "primary": {"used_percent": min(100.0, 5.0 * n), "window_minutes": 300, "reset_at": RESET_BASE + 300 * 60},
        "secondary": {"used_percent": float(n), "window_minutes": 10080, "reset_at": RESET_BASE + 10080 * 60},
        "metered": {"name": "codex_bengalfox", "label": "GPT-5.6-Codex-Spark", "used_percent": 0.5 * n,
                    "window_minutes": 10080, "reset_at": RESET_BASE + 7 * 86400},
        "credits": {"has_credits": True, "unlimited": False, "balance": "12.50"},
    }


def limit_headers(limits: dict) -> list[tuple[str, str]]:
    """The response headers that carry ``limits`` (``x-codex-*`` and the metered family)."""
    out = []
    for window in ("primary", "secondary"):
        w = limits[window]
        out += [(f"x-codex-{window}-used-percent", f"{w['used_percent']:g}"),
                (f"x-codex-{window}-window-minutes", str(w["window_minutes"])),
                (f"x-codex-{window}-reset-at", str(w["reset_at"]))]
    m = limits["metered"]
    prefix = "x-" + m["name"].replace("_", "-")
    out += [(f"{prefix}-primary-used-percent", f"{m['used_percent']:g}"),
            (f"{prefix}-primary-window-minutes", str(m["window_minutes"])),
            (f"{prefix}-primary-reset-at", str(m["reset_at"])), (f"{prefix}-limit-name", m["label"])]
    c = limits["credits"]
    out += [("x-codex-credits-has-credits", str(c["has_credits"]).lower()),
            ("x-codex-credits-unlimited", str(c["unlimited"]).lower()), ("x-codex-credits-balance", c["balance"])]
    return out


def rate_limits_event(limits: dict) -> dict:
    """The ``codex.rate_limits`` event for ``limits``, the metered limit as an additional one."""
    m = limits["metered"]
    return {"type": "codex.rate_limits", "plan_type": limits["plan_type"],
            "rate_limits": {"primary": limits["primary"], "secondary": limits["secondary"]},
            "credits": limits["credits"],
            "additional_rate_limits": {m["name"]: {"primary": {k: m[k] for k in ("used_percent", "window_minutes",
                                                                                 "reset_at")}}}}


def codex_events(body: dict, *, limits: dict, reasoning: bool = False, deltas: bool = True,
                 fail: str | None = None) -> list[F.WireEvent]:
    """One Codex answer as SSE events (``WireEvent.text`` = the visible text each adds)."""
    response_id, created = "resp_" + secrets.token_hex(16), int(time.time())
    model = body.get("model", "gpt-5.6-codex")
    out: list[F.WireEvent] = []
    seq = itertools.count()

    def emit(name: str, payload: dict, piece: str = "", kind: str | None = None) -> None:
        obj = {"type": name, "sequence_number": next(seq), **payload}
        out.append(F.WireEvent(F.sse(obj, name, ensure_ascii=False), text=piece, kind=kind or name))

    pending = {"id": response_id, "object": "response", "created_at": created, "status": "in_progress",
               "model": model, "output": [], "usage": None}
    emit("response.created", {"response": pending})
    if fail == "usage_limit":
        error = {"type": "usage_limit_reached", "message": "The usage limit has been reached",
                 "plan_type": limits["plan_type"], "resets_at": limits["primary"]["reset_at"],
                 "resets_in_seconds": 9568}
        headers = {k.title(): v for k, v in limit_headers(limits)}
        out.append(F.WireEvent(F.sse({"type": "error", "status_code": 429, "error": error, "headers": headers},
                                     "error"), kind="error"))
        return out
    emit("response.in_progress", {"response": pending})
    if fail == "overloaded":
        emit("codex.rate_limits", {"plan_type": limits["plan_type"], "rate_limits": {"allowed": True}})
        emit("response.failed", {"response": {**pending, "status": "failed", "error": {
            "code": "server_is_overloaded",
            "message": "Our servers are currently overloaded. Please try again later."}}})
        return out
    emit("codex.rate_limits", {k: v for k, v in rate_limits_event(limits).items() if k != "type"})
    index = 0
    if reasoning:
        rs_id = "rs_" + secrets.token_hex(16)
        thoughts = ["**Planning** ", "Reading the question, ", "then answering it."]
        emit("response.output_item.added", {"output_index": 0, "item": {"id": rs_id, "type": "reasoning",
                                                                        "summary": []}})
        ref = {"item_id": rs_id, "output_index": 0, "summary_index": 0}
        emit("response.reasoning_summary_part.added", {**ref, "part": {"type": "summary_text", "text": ""}})
        for piece in thoughts:
            # kind "thought": scheduled like text (F.schedule), but it is not visible text
            emit("response.reasoning_summary_text.delta", {**ref, "delta": piece}, kind="thought")
        summary = "".join(thoughts)
        emit("response.reasoning_summary_text.done", {**ref, "text": summary})
        emit("response.reasoning_summary_part.done", {**ref, "part": {"type": "summary_text", "text": summary}})
        emit("response.output_item.done", {"output_index": 0, "item": {
            "id": rs_id, "type": "reasoning", "summary": [{"type": "summary_text", "text": summary}]}})
        index = 1
    tokens, _ = F.api_tokens(body, "max_output_tokens")
    text = "".join(tokens)
    item_id = "msg_" + secrets.token_hex(16)
    emit("response.output_item.added", {"output_index": index, "item": {
        "id": item_id, "type": "message", "status": "in_progress", "content": [], "role": "assistant"}})
    ref = {"item_id": item_id, "output_index": index, "content_index": 0}
    emit("response.content_part.added", {**ref, "part": {"type": "output_text", "annotations": [], "text": ""}})
    if deltas:
        for tok in tokens:
            emit("response.output_text.delta", {**ref, "delta": tok}, tok)
    emit("response.output_text.done", {**ref, "text": text}, "" if deltas else text)
    emit("response.content_part.done", {**ref, "part": {"type": "output_text", "annotations": [], "text": text}})
    emit("response.output_item.done", {"output_index": index, "item": {
        "id": item_id, "type": "message", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "annotations": [], "text": text}]}})
    emit("codex.response.metadata", {"etag": 'W/"models-1"'})
    n_in = F.prompt_token_count(body.get("input", ""))
    usage = {"input_tokens": n_in, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": len(tokens),
             "output_tokens_details": {"reasoning_tokens": 3 if reasoning else 0},
             "total_tokens": n_in + len(tokens)}
    # Over HTTP, Codex's terminal event may carry no output: the text was in the events above.
    emit("response.completed", {"response": {**pending, "status": "completed", "output": [], "usage": usage}})
    return out


async def _responses(app: OriginApp, req: Request, send: Send) -> None:
    from tests.origin.server import EVENT_STREAM

    body = request_json(req)
    if not isinstance(body, dict) or "input" not in body:
        app._log_request(req, 400)
        await app._json(send, 400, {"error": {"message": "input is required", "type": "invalid_request_error"}})
        return
    n = next(_calls)
    limits = limits_for(n)
    fail = req.headers.get("x-origin-codex-fail") or None
    reasoning = req.headers.get("x-origin-reasoning") == "1"
    headers = limit_headers(limits) + [("openai-model", body.get("model", "gpt-5.6-codex")),
                                       ("x-models-etag", 'W/"models-1"'),
                                       ("x-reasoning-included", "true" if reasoning else "false")]
    if fail == "http429":
        app._log_request(req, 429, api="codex", limits=limits)
        await app._json(send, 429, {"error": {"type": "usage_limit_reached", "message": "The usage limit has been reached",
                                              "plan_type": limits["plan_type"],
                                              "resets_at": limits["primary"]["reset_at"]}},
                        headers + [("x-request-id", req.rid)])
        return
    events = codex_events(body, limits=limits, reasoning=reasoning,
                          deltas=req.headers.get("x-origin-codex") != "no-deltas", fail=fail)
    no_type = req.headers.get("x-origin-content-type", "").lower() == "none"
    await app.stream(req, send, events, content_type=None if no_type else EVENT_STREAM,
                     extra={"api": "codex", "limits": limits, "fail": fail}, headers_extra=headers)


async def _analytics(app: OriginApp, req: Request, send: Send) -> None:
    body = request_json(req)
    events = body.get("events") if isinstance(body, dict) else None
    if not isinstance(events, list):
        app._log_request(req, 400)
        await app._json(send, 400, {"detail": "events is required"})
        return
    app._log_request(req, 200, n_events=len(events))
    await app._json(send, 200, {})


def _mcp_events(message: dict) -> list[F.WireEvent]:
    """A ``tools/call`` answered as an event stream: two progress notifications, then the result."""
    token = (message.get("params") or {}).get("_meta", {}).get("progressToken", "p1")
    out = []
    for step in (1, 2):
        note = {"jsonrpc": "2.0", "method": "notifications/progress",
                "params": {"progressToken": token, "progress": step, "total": 3}}
        # kind "thought": F.schedule spaces these out like text events
        out.append(F.WireEvent(F.sse(note, "message"), kind="thought"))
    result = {"jsonrpc": "2.0", "id": message.get("id"),
              "result": {"content": [{"type": "text", "text": "tool ran on the origin"}], "isError": False}}
    out.append(F.WireEvent(F.sse(result, "message"), kind="thought"))
    return out


async def _mcp(app: OriginApp, req: Request, send: Send) -> None:
    message = request_json(req)
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        app._log_request(req, 400)
        await app._json(send, 400, {"jsonrpc": "2.0", "id": None,
                                    "error": {"code": -32600, "message": "Invalid Request"}})
        return
    session = req.headers.get("mcp-session-id") or "mcp-" + secrets.token_hex(8)
    headers = [("mcp-session-id", session)]
    if "id" not in message:  # a notification: accepted, no body
        app._log_request(req, 202, mcp_method=message.get("method"))
        await app._bytes(send, 202, b"", "application/json", headers)
        return
    if message.get("method") == "tools/call" and "text/event-stream" in req.headers.get("accept", ""):
        from tests.origin.server import EVENT_STREAM

        await app.stream(req, send, _mcp_events(message), content_type=EVENT_STREAM,
                         extra={"mcp_method": "tools/call"}, headers_extra=headers)
        return
    if message.get("method") == "initialize":
        result: dict = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                        "serverInfo": {"name": "origin-mcp", "version": "1.0"}}
    elif message.get("method") == "tools/list":
        result = {"tools": [{"name": "echo", "description": "echo", "inputSchema": {"type": "object"}}]}
    else:
        result = {}
    app._log_request(req, 200, mcp_method=message.get("method"))
    await app._json(send, 200, {"jsonrpc": "2.0", "id": message["id"], "result": result}, headers)


async def handle_http(app: OriginApp, req: Request, send: Send) -> bool:
    if req.method != "POST":
        return False
    if req.path == CODEX_RESPONSES:
        await _responses(app, req, send)
    elif req.path == CODEX_ANALYTICS:
        await _analytics(app, req, send)
    elif req.path == MCP:
        await _mcp(app, req, send)
    else:
        return False
    return True
