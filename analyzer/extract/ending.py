"""Who ended a flow: the ``end_status`` of turns and API calls (pure: reads the flow, no I/O).

mitmproxy's own error messages do not always say which side hung up: over HTTP/2 both sides report
``peer closed connection`` and ``stream reset by client (CODE)``, whichever peer did it. So the
live addon also notes, when the ``error`` hook runs, which connection had already stopped reading
(``closed_first`` in the flow's chatwire metadata) and, on a clean stop, that the proxy itself
ended flows still in flight (``end = proxy_stopped``). Flow files and HARs without those notes are
judged by the message alone.
"""

from __future__ import annotations

import re

from mitmproxy import flow as mflow
from mitmproxy import http

from analyzer.extract.common import chatwire_meta

COMPLETE = "complete"
CLIENT_CLOSED = "client_closed"
SERVER_CLOSED = "server_closed"
RESET = "reset"
PROXY_STOPPED = "proxy_stopped"
KILLED = "killed"
ERROR = "error"

END_STATUSES = (COMPLETE, CLIENT_CLOSED, SERVER_CLOSED, RESET, PROXY_STOPPED, KILLED, ERROR)

# The chatwire metadata keys the addon sets (they survive ``mitmdump -w`` when set before the save).
CLOSED_FIRST_KEY = "closed_first"  # "client" | "server": the connection that had stopped reading
END_KEY = "end"                    # "proxy_stopped": the proxy stopped with the flow in flight

_STREAM_RESET = re.compile(r"stream reset by (?:client|server) \((?P<code>[A-Z_0-9]+)\)")


def _is_h2(conn) -> bool:
    alpn = getattr(conn, "alpn", None)
    return alpn in (b"h2", "h2")


def end_status(flow: http.HTTPFlow) -> str:
    """How the flow ended (one of :data:`END_STATUSES`); see docs/schema.md, ``end_status``."""
    meta = chatwire_meta(flow)
    if meta.get(END_KEY) == PROXY_STOPPED:
        return PROXY_STOPPED
    response = flow.response
    error = flow.error
    if error is None:
        return COMPLETE if response is not None else ERROR
    # An error after the last byte (a reset once the body was complete) does not undo the answer.
    if response is not None and response.timestamp_end is not None:
        return COMPLETE
    msg = error.msg or ""
    if msg == mflow.Error.KILLED_MESSAGE:
        return KILLED
    side = meta.get(CLOSED_FIRST_KEY)
    if msg == "Client disconnected.":
        return CLIENT_CLOSED
    reset = _STREAM_RESET.search(msg)
    if reset:
        # mitmproxy words both sides' RST_STREAM the same. Only an HTTP/2 side can reset a stream;
        # when both are HTTP/2, a browser cancels with CANCEL, a failing server with anything else.
        client_h2, server_h2 = _is_h2(flow.client_conn), _is_h2(flow.server_conn)
        if client_h2 and not server_h2:
            return CLIENT_CLOSED
        if server_h2 and not client_h2:
            return RESET
        return CLIENT_CLOSED if reset.group("code") == "CANCEL" else RESET
    if side == "client":
        return CLIENT_CLOSED
    if side == "server":
        return SERVER_CLOSED
    if msg.startswith("HTTP/1 protocol error: peer closed connection") and response is not None:
        return SERVER_CLOSED  # the request was complete (a response had begun): the body cut off was the server's
    return ERROR  # timeouts, TLS and protocol errors, size limits, or a close whose side was not noted
