"""The page's 2026 telemetry (guide 6f), both ends: the routes that receive it and what the page sends.

Routes (any host; the real ones are chatgpt.com and ab.chatgpt.com):

- ``POST /ces/v1/rgstr`` (Statsig js-client 3.x, first party): body gzip when ``gz=1`` (no
  Content-Encoding header), query ``k, st, sv, t, sid, ec, gz``; answers 202 ``{"success": true}``.
- ``POST /ces/v1/m`` (Segment metrics series): 200 ``{"success": true}``.
- ``POST /ces/statsc/flush`` ``{counters, histograms, client_type}``: 200 ``{"success": true}``
  (the client requires a JSON boolean ``success``).
- ``POST /otlp/v1/metrics`` (OTLP/HTTP): an ``ExportMetricsServiceRequest`` in protobuf
  (``application/x-protobuf``) or JSON; answers an empty ``ExportMetricsServiceResponse`` in the
  request's encoding, 400 for a body that does not decode, 415 for any other Content-Type.
- ``POST /ces/v1/telemetry/intake?ddforward=/api/v2/logs?…`` and ``/api/v2/logs``: Datadog
  browser logs, NDJSON; answers 202 ``{}``.

The builders below (``statsig_rgstr``, ``segment_series``, ``statsc_flush``, ``otlp_request``,
``datadog_logs``) make the bodies the page sends, with known values for tests to check against.
"""

from __future__ import annotations

import gzip
import json
import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

if TYPE_CHECKING:
    from tests.origin.server import OriginApp, Request, Send

DEVICE_ID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
ACCOUNT_ID = "acct-5e6f7a8b-0000-4000-8000-00000000a001"
SESSION_ID = "oai-sess-7c1d2e3f-1111-4222-8333-444455556666"
STATSIG_SID = "6d9bf2bf-5689-4b72-8a73-2b190bda5ff2"
STABLE_ID = "c0ffee00-1234-4abc-8def-0123456789ab"
DD_SESSION_ID = "dd5e5510-aaaa-4bbb-8ccc-ddddeeeeffff"
STATSIG_SDK_VERSION = "3.33.1"
PROTOBUF = "application/x-protobuf"


async def handle_http(app: OriginApp, req: Request, send: Send) -> bool:
    """Answer the request and return True, or return False to leave it to the other routes."""
    path, method = req.path, req.method
    if method == "POST" and path == "/ces/v1/rgstr":
        body = req.body
        if req.query.get("gz") == "1" or body[:2] == b"\x1f\x8b":
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError):
                app._log_request(req, 400)
                await app._json(send, 400, {"error": "bad gzip"})
                return True
        try:
            events = json.loads(body).get("events")
        except (ValueError, AttributeError):
            events = None
        status = 202 if isinstance(events, list) else 400
        app._log_request(req, status, n_events=len(events) if isinstance(events, list) else None)
        await app._json(send, status, {"success": status == 202})
        return True
    if method == "POST" and path in ("/ces/v1/m", "/ces/statsc/flush"):
        app._log_request(req, 200)
        await app._json(send, 200, {"success": True})
        return True
    if method == "POST" and path in ("/ces/v1/telemetry/intake", "/api/v2/logs"):
        lines = [line for line in req.body.split(b"\n") if line.strip()]
        app._log_request(req, 202, n_lines=len(lines), ddforward=req.query.get("ddforward"))
        await app._json(send, 202, {})
        return True
    if method == "POST" and path.endswith("/v1/metrics"):
        await _otlp_metrics(app, req, send)
        return True
    return False


async def _otlp_metrics(app: OriginApp, req: Request, send: Send) -> None:
    from google.protobuf.json_format import ParseDict, ParseError
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
        ExportMetricsServiceResponse,
    )

    content_type = req.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    message = ExportMetricsServiceRequest()
    try:
        if content_type == PROTOBUF:
            message.ParseFromString(req.body)
        elif content_type == "application/json":
            ParseDict(json.loads(req.body), message)
        else:
            app._log_request(req, 415)
            await app._json(send, 415, {"code": 3, "message": f"unsupported content type {content_type!r}"})
            return
    except (DecodeError, ParseError, ValueError) as exc:
        app._log_request(req, 400)
        await app._json(send, 400, {"code": 3, "message": f"bad OTLP request: {exc}"})
        return
    n_points = sum(len(getattr(m, m.WhichOneof("data")).data_points)
                   for rm in message.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                   if m.WhichOneof("data"))
    app._log_request(req, 200, n_points=n_points, encoding=content_type)
    if content_type == PROTOBUF:
        await app._bytes(send, 200, ExportMetricsServiceResponse().SerializeToString(), PROTOBUF)
    else:
        await app._json(send, 200, {})


# ---------------------------------------------------------------------------------------------
# What the page sends


def statsig_rgstr(events: list[dict], *, at_ms: int | None = None) -> tuple[str, bytes]:
    """(path with query, gzip body) of a js-client 3.x ``rgstr`` flush to chatgpt.com/ces/v1/rgstr."""
    at_ms = at_ms if at_ms is not None else int(time.time() * 1000)
    body = {"events": events, "statsigMetadata": {"sdkType": "javascript-client-react",
                                                  "sdkVersion": STATSIG_SDK_VERSION, "stableID": STABLE_ID,
                                                  "sessionID": STATSIG_SID, "fallbackUrl": None}}
    query = urlencode({"k": "client-OriginTestStatsigKey", "st": "javascript-client-react",
                       "sv": STATSIG_SDK_VERSION, "t": at_ms, "sid": STATSIG_SID, "ec": len(events), "gz": 1})
    return f"/ces/v1/rgstr?{query}", gzip.compress(json.dumps(body).encode())


def statsig_event(name: str, value: Any, page: str, *, at_ms: int) -> dict:
    return {"eventName": name, "value": value, "time": at_ms,
            "user": {"userID": "user-OriginTestUser0001", "customIDs": {"stableID": STABLE_ID,
                                                                       "account_id": ACCOUNT_ID},
                     "statsigEnvironment": {"tier": "production"}},
            "metadata": {"origin": "chat"}, "statsigMetadata": {"currentPage": page}}


SEGMENT_SERIES = [
    {"type": "Counter", "metric": "analytics_js.invoke", "value": 1,
     "tags": {"method": "track", "library": "analytics.js", "library_version": "npm:next-1.81.0"}},
    {"type": "Counter", "metric": "analytics_js.integration.invoke", "value": 2,
     "tags": {"method": "page", "integration_name": "Segment.io", "type": "classic"}},
]


def segment_series() -> dict:
    """analytics.js ``RemoteMetrics`` flush (sent as text/plain JSON)."""
    return {"series": SEGMENT_SERIES}


STATSC_COUNTERS = [{"name": "composer.submit", "value": 3, "tags": {"route": "/c/[id]", "account_id": ACCOUNT_ID}},
                   {"name": "sse.reconnect", "value": 1, "tags": ["reason:network", "transport:fetch"]}]
STATSC_HISTOGRAMS = [{"name": "ttft_client_ms", "values": [812.5, 640.0, 1210.25], "tags": {"model": "gpt-5-6"}}]


def statsc_flush() -> dict:
    """``/ces/statsc/flush`` body: counters, histograms and the client type (shape inferred)."""
    return {"counters": STATSC_COUNTERS, "histograms": STATSC_HISTOGRAMS, "client_type": "web"}


def otlp_request(at: float) -> Any:
    """An ``ExportMetricsServiceRequest``: a monotonic sum, a gauge and an explicit-bucket histogram,
    as ``@opentelemetry/exporter-metrics-otlp-*`` sends them. Serialise with ``SerializeToString()``
    (protobuf) or :func:`otlp_json`."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.metrics.v1 import metrics_pb2 as m

    def kv(key: str, value: Any) -> KeyValue:
        if isinstance(value, bool):
            return KeyValue(key=key, value=AnyValue(bool_value=value))
        if isinstance(value, int):
            return KeyValue(key=key, value=AnyValue(int_value=value))
        return KeyValue(key=key, value=AnyValue(string_value=str(value)))

    end_ns, start_ns = int(at * 1e9), int((at - 60) * 1e9)
    resource = m.ResourceMetrics(
        resource={"attributes": [kv("service.name", "chatgpt-web"), kv("session.id", SESSION_ID),
                                 kv("device.id", DEVICE_ID)]},
        scope_metrics=[m.ScopeMetrics(
            scope={"name": "chatgpt-web-vitals", "version": "1.4.0"},
            metrics=[
                m.Metric(name="ui.composer.submits", unit="1", sum=m.Sum(
                    aggregation_temporality=m.AGGREGATION_TEMPORALITY_DELTA, is_monotonic=True,
                    data_points=[m.NumberDataPoint(start_time_unix_nano=start_ns, time_unix_nano=end_ns, as_int=4,
                                                   attributes=[kv("route", "/c/[id]")])])),
                m.Metric(name="memory.js_heap_used", unit="By", gauge=m.Gauge(
                    data_points=[m.NumberDataPoint(time_unix_nano=end_ns, as_double=48_500_000.5)])),
                m.Metric(name="web_vitals.inp", unit="ms", histogram=m.Histogram(
                    aggregation_temporality=m.AGGREGATION_TEMPORALITY_DELTA,
                    data_points=[m.HistogramDataPoint(
                        start_time_unix_nano=start_ns, time_unix_nano=end_ns, count=5, sum=640.0, min=48.0,
                        max=250.0, bucket_counts=[1, 3, 1], explicit_bounds=[50.0, 200.0],
                        attributes=[kv("interaction", "click"), kv("account_id", ACCOUNT_ID)])])),
            ])],
    )
    return ExportMetricsServiceRequest(resource_metrics=[resource])


def otlp_json(message: Any) -> str:
    """OTLP JSON of a request message, as the OTLP spec and the JS exporters write it (enums as integers)."""
    from google.protobuf.json_format import MessageToJson

    return MessageToJson(message, use_integers_for_enums=True)


def datadog_logs(page_url: str, at: float) -> list[dict]:
    """Datadog browser-logs records (one per NDJSON line) as the SDK batches them."""
    base = {"service": "chatgpt-web", "session_id": DD_SESSION_ID, "view": {"referrer": "", "url": page_url},
            "usr": {"id": "user-OriginTestUser0001", "anonymous_id": "dd-anon-01"},
            "_dd": {"format_version": 2}, "ddtags": "sdk_version:6.5.0,env:prod"}
    return [
        base | {"date": int(at * 1000), "status": "info", "origin": "logger", "logger": {"name": "conversation"},
                "message": "stream resumed", "resume": {"offset": 12}},
        base | {"date": int(at * 1000) + 250, "status": "error", "origin": "network",
                "message": "Fetch error POST /backend-api/f/conversation",
                "error": {"kind": "TypeError", "message": "network error"}},
    ]


def datadog_intake_path() -> str:
    """The forwarder path with Datadog's own query in ``ddforward`` (as the SDK's proxy option builds it)."""
    forward = "/api/v2/logs?" + urlencode({"ddsource": "browser", "dd-api-key": "pub0123456789abcdef",
                                           "dd-evp-origin": "browser", "dd-request-id": str(uuid.uuid4())})
    return "/ces/v1/telemetry/intake?" + urlencode({"ddforward": forward})


def ndjson(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)
