"""Origin routes for the 2026 formats (guide section 6): history2026. See tests.origin.server.ROUTE_MODULES."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.origin.server import OriginApp, Request, Send


async def handle_http(app: OriginApp, req: Request, send: Send) -> bool:
    """Answer the request and return True, or return False to leave it to the other routes."""
    return False
