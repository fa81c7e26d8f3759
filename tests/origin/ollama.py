"""Ollama's native API (guide 6g): ``POST /api/chat`` and ``POST /api/generate``.

Streamed (the default; ``"stream": false`` turns it off) as NDJSON, ``Content-Type:
application/x-ndjson``, one JSON object a line and one line per chunk, at the origin's schedule
(``x-origin-delays-ms``): ``{model, created_at, message: {role, content}, done: false}`` for
``/api/chat``, ``{model, created_at, response, done: false}`` for ``/api/generate``. With
``"think": true`` a few ``thinking`` lines come first (``message.thinking``, or top-level
``thinking`` for generate). The last line has ``done: true``, ``done_reason`` and the server's
timings in nanoseconds (``total_duration``, ``load_duration``, ``prompt_eval_count``,
``prompt_eval_duration``, ``eval_count``, ``eval_duration``); generate adds ``context``.

The answer is deterministic (``formats.answer_tokens``); a prompt ``echo: WORDS`` is answered
with WORDS. No ``model``: 400 ``{"error": …}``; a model named ``missing…``: 404, as Ollama does.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tests.origin import formats as F

if TYPE_CHECKING:
    from tests.origin.server import OriginApp, Request, Send

NDJSON = "application/x-ndjson"
PATHS = ("/api/chat", "/api/generate")
LOAD_NS = 1_534_000
NS = 1_000_000  # per ms


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def _user_text(body: dict, chat: bool) -> str:
    if chat:
        return F.last_user_text(body.get("messages"))
    prompt = body.get("prompt")
    return prompt if isinstance(prompt, str) else ""


def answer(user_text: str) -> list[str]:
    if user_text.startswith("echo: "):
        words = user_text[len("echo: "):].split(" ")
        return [words[0]] + [" " + w for w in words[1:]]
    return F.answer_tokens(user_text)


def _line(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _part(chat: bool, model: str, at: float, content: str, thinking: str | None = None) -> dict:
    obj: dict[str, Any] = {"model": model, "created_at": _iso(at)}
    if chat:
        obj["message"] = {"role": "assistant", "content": content}
        if thinking is not None:
            obj["message"]["thinking"] = thinking
    else:
        obj["response"] = content
        if thinking is not None:
            obj["thinking"] = thinking
    obj["done"] = False
    return obj


def final_fields(user_text: str, tokens: list[str], first_ms: float, gap_ms: float, n_timed: int) -> dict:
    """The server's own account, planned from the schedule: integers in nanoseconds."""
    prompt_eval_ms = first_ms * 0.75
    eval_ms = first_ms * 0.25 + gap_ms * max(n_timed - 1, 0)
    return {"total_duration": int(LOAD_NS + (prompt_eval_ms + eval_ms) * NS + 250_000),
            "load_duration": LOAD_NS,
            "prompt_eval_count": 10 + F.count_words(user_text),
            "prompt_eval_duration": int(prompt_eval_ms * NS),
            "eval_count": len(tokens),
            "eval_duration": int(eval_ms * NS)}


async def handle_http(app: OriginApp, req: Request, send: Send) -> bool:
    """Answer the request and return True, or return False to leave it to the other routes."""
    if req.method != "POST" or req.path not in PATHS:
        return False
    chat = req.path == "/api/chat"
    body = req.json()
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        app._log_request(req, 400)
        await app._json(send, 400, {"error": "model is required"})
        return True
    model = body["model"]
    if model.startswith("missing"):
        app._log_request(req, 404)
        await app._json(send, 404, {"error": f"model '{model}' not found"})
        return True
    user_text = _user_text(body, chat)
    tokens = answer(user_text)
    thoughts = F.thought_tokens(user_text) if body.get("think") else []
    first, gap = req.delays(app.delays)
    final = {"model": model, "created_at": _iso(time.time())}
    final |= {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
    final |= {"done_reason": "stop", "done": True}
    final |= final_fields(user_text, tokens, first, gap, len(tokens) + len(thoughts))
    if not chat:
        final["context"] = list(range(1, 9))
    if body.get("stream") is False:
        whole = dict(final)
        text = "".join(tokens)
        if chat:
            whole["message"] = {"role": "assistant", "content": text} | (
                {"thinking": "".join(thoughts)} if thoughts else {})
        else:
            whole["response"] = text
            if thoughts:
                whole["thinking"] = "".join(thoughts)
        app._log_request(req, 200, api="ollama", body=whole)
        await app._bytes(send, 200, json.dumps(whole).encode(), "application/json; charset=utf-8")
        return True
    offsets = F.schedule([F.WireEvent(b"", kind="thought") for _ in thoughts]
                         + [F.WireEvent(b"", text=t) for t in tokens], first, gap)
    t0 = req.t_wall
    events = [F.WireEvent(_line(_part(chat, model, t0 + off, "", th)), kind="thought")
              for th, off in zip(thoughts, offsets, strict=False)]
    events += [F.WireEvent(_line(_part(chat, model, t0 + off, tok)), text=tok, kind="content")
               for tok, off in zip(tokens, offsets[len(thoughts):], strict=True)]
    events.append(F.WireEvent(_line(final), kind="done"))
    await app.stream(req, send, events, content_type=NDJSON, extra={"api": "ollama"})
    return True
