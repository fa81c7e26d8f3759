"""The Codex backend's WebSocket transport and the reads the real Codex CLI makes (guide section 6a).

``GET /backend-api/codex/responses`` upgraded (``OpenAI-Beta: responses_websockets=…``, permessage-
deflate: hypercorn's wsproto negotiates it when the client offers it). Client text frames are
``{"type": "response.create", …Responses request…}`` (also ``response.append`` and
``response.processed``, logged and not answered); each ``response.create`` is answered by the Responses
event objects (the SSE ``data:`` payloads, one per text frame) at the scheduled times, ``codex.rate_limits``
among them and ``response.completed`` with ``output: []`` (the text is in the deltas). A warm-up create
(``"generate": false``) gets ``response.created`` and a ``response.completed`` with empty output.

Handshake headers that steer it: ``x-origin-ws: 426`` (refuse the upgrade with 426; the client then
falls back to the HTTP POST), ``x-origin-fail: usage-limit`` (answer each create with the wrapped
429 error frame), ``x-origin-codex-tool: CMD`` (answer a create that does not carry a tool's output
with a ``function_call`` of ``exec_command`` {cmd: CMD}; the create that brings the output back gets
the text answer), ``x-origin-delays-ms: FIRST,GAP``. A handshake without the beta header gets 426 too.

Send log records: ``ws_connect`` (by the server), ``ws_reject`` {status}, ``ws_client`` {conn, index,
type, tool_output} per client frame, ``ws_frame`` {conn, key = response id, call = n-th create of the socket, index,
t, data, text, event_kind} per server frame.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import TYPE_CHECKING

from tests.origin import formats as F

if TYPE_CHECKING:
    from tests.origin.server import OriginApp, Request, Send

CODEX_RESPONSES = "/backend-api/codex/responses"
BETA_PREFIX = "responses_websockets="
MODELS_ETAG = 'W/"origin-models-1"'


def rate_limits(now: float) -> dict:
    """The ``codex.rate_limits`` event of this origin (fixed percentages, resets relative to ``now``)."""
    return {"type": "codex.rate_limits", "plan_type": "plus",
            "rate_limits": {"primary": {"used_percent": 7.0, "window_minutes": 300, "reset_at": int(now) + 9000},
                            "secondary": {"used_percent": 2.0, "window_minutes": 10080,
                                          "reset_at": int(now) + 500000}},
            "credits": {"has_credits": False, "unlimited": False, "balance": None}}


def limit_headers(now: float) -> list[tuple[str, str]]:
    """The ``x-codex-*`` response headers carrying the same limits as :func:`rate_limits`."""
    return [("x-codex-primary-used-percent", "7.0"), ("x-codex-primary-window-minutes", "300"),
            ("x-codex-primary-reset-at", str(int(now) + 9000)), ("x-codex-secondary-used-percent", "2.0"),
            ("x-codex-secondary-window-minutes", "10080"), ("x-codex-secondary-reset-at", str(int(now) + 500000)),
            ("x-codex-credits-has-credits", "False"), ("x-codex-credits-unlimited", "False"),
            ("x-models-etag", MODELS_ETAG), ("x-reasoning-included", "false")]


def answer_frames(request: dict, *, response_id: str, item_id: str, created: int) -> list[F.WireEvent]:
    """The server frames answering one ``response.create``: each the JSON of one SSE ``data:`` line."""
    if request.get("generate") is False:  # the warm-up: nothing generated, the connection is ready
        usage = {"input_tokens": F.prompt_token_count(request.get("input", "")), "output_tokens": 0}
        usage["total_tokens"] = usage["input_tokens"]
        base = {"id": response_id, "object": "response", "created_at": created, "model": request.get("model"),
                "previous_response_id": request.get("previous_response_id")}
        return [F.WireEvent(json.dumps({"type": "response.created", "sequence_number": 0, "response": {
                    **base, "status": "in_progress", "output": [], "usage": None}}).encode(), kind="response.created"),
                F.WireEvent(json.dumps({"type": "response.completed", "sequence_number": 1, "response": {
                    **base, "status": "completed", "output": [], "usage": usage}}).encode(),
                    kind="response.completed")]
    frames: list[F.WireEvent] = []
    for event in F.response_events(request, response_id=response_id, item_id=item_id, created=created):
        data = next(line[6:] for line in event.data.decode().split("\n") if line.startswith("data: "))
        obj = json.loads(data)
        if obj["type"] == "response.completed":
            obj["response"]["output"] = []  # as the Codex backend sends it: the text came in the deltas
        frames.append(F.WireEvent(json.dumps(obj, ensure_ascii=False).encode(), text=event.text, kind=obj["type"]))
        if obj["type"] == "response.in_progress":
            frames.append(F.WireEvent(json.dumps(rate_limits(created)).encode(), kind="codex.rate_limits"))
    return frames


def tool_call_frames(request: dict, command: str, *, response_id: str, call_id: str,
                     created: int) -> list[F.WireEvent]:
    """An answer that asks the client to run ``command`` with its ``exec_command`` tool."""
    item_id = "fc_" + secrets.token_hex(24)
    arguments = json.dumps({"cmd": command})
    base = {"id": response_id, "object": "response", "created_at": created, "model": request.get("model"),
            "previous_response_id": request.get("previous_response_id")}
    item = {"id": item_id, "type": "function_call", "call_id": call_id, "name": "exec_command"}
    n_in = F.prompt_token_count(request.get("input", ""))
    events = [
        {"type": "response.created", "response": {**base, "status": "in_progress", "output": [], "usage": None}},
        {"type": "response.output_item.added", "output_index": 0,
         "item": {**item, "arguments": "", "status": "in_progress"}},
        *({"type": "response.function_call_arguments.delta", "item_id": item_id, "output_index": 0, "delta": piece}
          for piece in (arguments[: len(arguments) // 2], arguments[len(arguments) // 2:])),
        {"type": "response.function_call_arguments.done", "item_id": item_id, "output_index": 0,
         "arguments": arguments},
        {"type": "response.output_item.done", "output_index": 0,
         "item": {**item, "arguments": arguments, "status": "completed"}},
        {"type": "response.completed", "response": {**base, "status": "completed", "output": [], "usage": {
            "input_tokens": n_in, "output_tokens": 12, "total_tokens": n_in + 12}}},
    ]
    return [F.WireEvent(json.dumps({**e, "sequence_number": i}).encode(), kind=e["type"]) for i, e in enumerate(events)]


def _tool_output(request: dict) -> str | None:
    """The output of the last item when it is a ``function_call_output`` (the client ran a tool)."""
    items = request.get("input")
    last = items[-1] if isinstance(items, list) and items else None
    if isinstance(last, dict) and last.get("type") == "function_call_output":
        output = last.get("output")
        return output if isinstance(output, str) else json.dumps(output)
    return None


def usage_limit_frame(now: float) -> F.WireEvent:
    """The wrapped error the backend sends when the plan's limit is reached (guide 6a, sample 1)."""
    obj = {"type": "error", "status": 429,
           "error": {"type": "usage_limit_reached", "message": "The usage limit has been reached",
                     "plan_type": "plus", "resets_at": int(now) + 9568, "resets_in_seconds": 9568},
           "headers": {"x-codex-primary-used-percent": "100", "x-codex-primary-window-minutes": "300"}}
    return F.WireEvent(json.dumps(obj).encode(), kind="error")


def _delays(app: OriginApp, headers: dict[str, str]) -> tuple[float, float]:
    try:
        first, gap = (float(x) for x in headers.get("x-origin-delays-ms", "").split(","))
        return max(first, 0.0), max(gap, 0.0)
    except ValueError:
        return app.delays


async def handle_websocket(app: OriginApp, scope: dict, receive, send, path: str) -> bool:
    """Serve a Codex responses socket (the connect message was received); False for other paths."""
    if path.rstrip("/") != CODEX_RESPONSES:
        return False
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    if headers.get("x-origin-ws") == "426" or not headers.get("openai-beta", "").startswith(BETA_PREFIX):
        body = json.dumps({"error": {"message": "Upgrade Required", "type": "invalid_request_error",
                                     "code": "websocket_not_supported"}}).encode()
        app.log.add(kind="ws_reject", t=time.time(), path=path, status=426)
        await send({"type": "websocket.http.response.start", "status": 426,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
        return True
    conn = secrets.token_hex(6)
    now = time.time()
    # No openai-model here: the socket serves whatever model each create asks for (a different
    # model in that header is what the CLI reports as a reroute).
    accept_headers = [("x-request-id", conn)] + limit_headers(now)
    await send({"type": "websocket.accept", "headers": [(k.encode(), v.encode()) for k, v in accept_headers]})
    first, gap = _delays(app, headers)
    fail = headers.get("x-origin-fail", "")
    tool = headers.get("x-origin-codex-tool")  # a shell command the answer asks the client to run first
    n_client = n_calls = 0
    while True:
        msg = await receive()
        if msg["type"] == "websocket.disconnect":
            return True
        received = time.monotonic()
        if msg.get("text") is None:  # binary frames are a protocol error on this socket
            await send({"type": "websocket.close", "code": 1003})
            return True
        try:
            obj = json.loads(msg["text"])
        except ValueError:
            obj = None
        kind = obj.get("type") if isinstance(obj, dict) else None
        tool_output = _tool_output(obj) if kind == "response.create" else None
        app.log.add(kind="ws_client", conn=conn, path=path, index=n_client, t=time.time(), type=kind,
                    tool_output=tool_output[:2000] if tool_output else None)
        n_client += 1
        if kind in ("response.append", "response.processed"):
            continue
        if kind != "response.create":
            err = {"type": "error", "status": 400,
                   "error": {"type": "invalid_request_error", "message": f"unknown frame type {kind!r}"}}
            await send({"type": "websocket.send", "text": json.dumps(err)})
            continue
        request = {k: v for k, v in obj.items() if k != "type"}
        response_id = "resp_" + secrets.token_hex(24)
        if fail == "usage-limit":
            frames = [usage_limit_frame(now)]
        elif tool and tool_output is None and request.get("generate") is not False:
            frames = tool_call_frames(request, tool, response_id=response_id, call_id="call_" + secrets.token_hex(12),
                                      created=int(time.time()))
        else:
            frames = answer_frames(request, response_id=response_id, item_id="msg_" + secrets.token_hex(24),
                                   created=int(time.time()))
        for i, (frame, off) in enumerate(zip(frames, F.schedule(frames, first, gap), strict=True)):
            delay = received + off - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await send({"type": "websocket.send", "text": frame.data.decode()})
            app.log.add(kind="ws_frame", conn=conn, key=response_id, call=n_calls, path=path, index=i, t=time.time(),
                        n_bytes=len(frame.data), text=frame.text, event_kind=frame.kind, data=frame.data.decode())
        n_calls += 1


# -- the reads the Codex CLI makes besides (shapes inferred from public clients; others stay 404) ------


def _wham_usage(now: float) -> dict:
    limits = rate_limits(now)["rate_limits"]

    def window(w: dict) -> dict:
        return {"used_percent": w["used_percent"], "limit_window_seconds": w["window_minutes"] * 60,
                "reset_after_seconds": w["reset_at"] - int(now), "reset_at": w["reset_at"]}

    return {"plan_type": "plus", "rate_limit": {"allowed": True, "limit_reached": False,
                                                "primary_window": window(limits["primary"]),
                                                "secondary_window": window(limits["secondary"])},
            "credits": {"has_credits": False, "unlimited": False, "balance": None}}


async def handle_http(app: OriginApp, req: Request, send: Send) -> bool:
    """Answer the request and return True, or return False to leave it to the other routes."""
    path, method = req.path.rstrip("/"), req.method
    now = time.time()
    if path == "/backend-api/codex/models" and method == "GET":
        # An empty catalogue: the CLI keeps its bundled model metadata (it says so once).
        app._log_request(req, 200)
        await app._json(send, 200, {"models": []}, [("x-models-etag", MODELS_ETAG)])
        return True
    if path == "/backend-api/wham/usage" and method == "GET":
        app._log_request(req, 200)
        await app._json(send, 200, _wham_usage(now), limit_headers(now))
        return True
    if path == "/backend-api/wham/accounts/check" and method == "GET":
        account = req.headers.get("chatgpt-account-id") or "acct-origin"
        app._log_request(req, 200)
        await app._json(send, 200, {"accounts": [{"id": account, "structure": "personal", "plan_type": "plus",
                                                  "name": None, "is_deactivated": False}],
                                    "account_ordering": [account]})
        return True
    return False  # wham/settings/user, ps/plugins/*, ps/mcp …: not known well enough to imitate (404)
