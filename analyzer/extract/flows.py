"""The ``flows`` row: one per recognised flow (or every flow with ``capture_all_flows``)."""

from __future__ import annotations

import json

from mitmproxy import http

from analyzer.extract.common import chatwire_meta, header, media_type
from analyzer.recognise import strip_query
from analyzer.redact import redact_headers, redact_query


def _headers_json(message: http.Message | None, redact: bool) -> str | None:
    if message is None:
        return None
    pairs = [(k, v) for k, v in message.headers.items(multi=True)]
    if redact:
        pairs = redact_headers(pairs)
    return json.dumps(pairs, ensure_ascii=False)


_HTTP_VERSIONS = {"h2": "HTTP/2.0", "http/2": "HTTP/2.0", "h3": "HTTP/3", "http/3": "HTTP/3",
                  "http/3.0": "HTTP/3", "http/1.1": "HTTP/1.1", "http/1.0": "HTTP/1.0", "h2c": "HTTP/2.0"}


def normalise_http_version(version: str | None) -> str | None:
    """One spelling per protocol, whichever source reported it (mitmproxy: HTTP/2.0; HAR: h2, HTTP/2)."""
    if not version:
        return None
    return _HTTP_VERSIONS.get(version.strip().lower(), version)


def flow_row(flow: http.HTTPFlow, kind: str | None, source: str, redact: bool) -> dict:
    request, response = flow.request, flow.response
    meta = chatwire_meta(flow)
    har = meta.get("har_timings") or {}
    started = har.get("started_at", request.timestamp_start)
    ttfb_ms = duration_ms = ended = None
    if response is not None and response.timestamp_start is not None:
        ttfb_ms = (response.timestamp_start - request.timestamp_start) * 1000.0
    if response is not None and response.timestamp_end is not None:
        ended = response.timestamp_end
        duration_ms = (response.timestamp_end - request.timestamp_start) * 1000.0
    if flow.websocket is not None and flow.websocket.timestamp_end is not None:
        ended = flow.websocket.timestamp_end
        duration_ms = (ended - request.timestamp_start) * 1000.0
    if "ttfb_ms" in har:  # HAR: from its own timings, not from the reader's synthetic timestamps
        ttfb_ms = har["ttfb_ms"]
    if "duration_ms" in har:
        duration_ms = har["duration_ms"]
        ended = None if duration_ms is None or started is None else started + duration_ms / 1000.0
    query = request.path.partition("?")[2]
    chunks = meta.get("chunks") or []
    error = flow.error.msg if flow.error else None
    return {
        "flow_id": flow.id,
        "kind": kind,
        "source": source,
        "method": request.method,
        "scheme": request.scheme,
        "host": request.pretty_host,  # Host header / :authority, as the client asked
        "port": request.port,
        "path": strip_query(request.path),
        "query": redact_query(query) if redact else query,
        "http_version": normalise_http_version(request.http_version),
        "status_code": response.status_code if response is not None else None,
        "started_at": started,
        "ended_at": ended,
        "ttfb_ms": ttfb_ms,
        "duration_ms": duration_ms,
        "request_bytes": len(request.raw_content or b""),
        "response_bytes": len(response.raw_content or b"") if response is not None else None,
        "content_type": media_type(response) or None,
        # HAR bodies are stored decoded, so the importer moves their header aside.
        "content_encoding": header(response, "content-encoding") or meta.get("har_content_encoding"),
        "cf_ray": header(response, "cf-ray"),
        "streamed": bool(chunks),
        "n_chunks": len(chunks) if chunks else None,
        "request_headers": _headers_json(request, redact),
        "response_headers": _headers_json(response, redact),
        "error": error,
    }
