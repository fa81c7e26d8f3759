"""Origin routes for the 2026 formats (guide section 6): the Codex WebSocket transport and what else the real Codex CLI asks. See tests.origin.server.ROUTE_MODULES."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.origin.server import OriginApp, Request, Send


async def handle_http(app: OriginApp, req: Request, send: Send) -> bool:
    """Answer the request and return True, or return False to leave it to the other routes."""
    return False


async def handle_websocket(app: OriginApp, scope: dict, receive, send, path: str) -> bool:
    """Serve a WebSocket whose connect message was received, and return True; or return False."""
    return False
