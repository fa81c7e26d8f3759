"""The Codex backend of chatgpt.com (guide section 6a): ``POST /backend-api/codex/responses``.

The answer is the Responses-API event stream. ``x-origin-content-type: none`` sends it without a
Content-Type header, as some real Codex answers come.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING

from tests.origin import formats as F

if TYPE_CHECKING:
    from tests.origin.server import OriginApp, Request, Send

CODEX_RESPONSES = "/backend-api/codex/responses"


async def handle_http(app: OriginApp, req: Request, send: Send) -> bool:
    if req.path != CODEX_RESPONSES or req.method != "POST":
        return False
    from tests.origin.server import EVENT_STREAM

    body = req.json()
    if not isinstance(body, dict) or "input" not in body:
        app._log_request(req, 400)
        await app._json(send, 400, {"error": {"message": "input is required", "type": "invalid_request_error"}})
        return True
    ids = {"response_id": "resp_" + secrets.token_hex(24), "item_id": "msg_" + secrets.token_hex(24),
           "created": int(time.time())}
    no_type = req.headers.get("x-origin-content-type", "").lower() == "none"
    await app.stream(req, send, F.response_events(body, **ids), content_type=None if no_type else EVENT_STREAM,
                     extra={"api": "codex"})
    return True
