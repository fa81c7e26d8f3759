"""The page's 2026 telemetry (guide 6f): metric series and log records, one row per data point.

- Segment's metrics series ``POST …/v1/m`` (``/ces/v1/m`` on chatgpt.com): analytics.js
  ``RemoteMetrics`` sends ``{"series": [{"type": "Counter", "metric", "value", "tags"}]}``.
- ``POST /ces/statsc/flush``: ``{"counters", "histograms", "client_type"}``; the inner shape is not
  published, so lists of ``{name, value|values, tags}`` and maps ``name -> number | samples |
  {…}`` are both read (docs/schema.md says what is inferred).
- OpenTelemetry metrics ``POST …/v1/metrics`` (OTLP/HTTP): an ``ExportMetricsServiceRequest`` in
  JSON or protobuf; protobuf is decoded with the official ``opentelemetry-proto`` messages and
  turned into the same JSON mapping, so one reader serves both.
- Datadog browser logs (NDJSON, one log a line) to ``/api/v2/logs`` or through
  ``/ces/v1/telemetry/intake?ddforward=/api/v2/logs``.

What a row has no column for stays in its JSON columns (``attributes``, ``resource``, ``extra``).
"""

from __future__ import annotations

import zlib
from typing import Any

from mitmproxy import http

from analyzer.extract.analytics import conversation_from_path
from analyzer.extract.common import (
    ExtractError,
    as_number,
    body_bytes,
    media_type,
    parse_time,
    str_or_none,
    to_json,
)
from analyzer.extract.rows import Rows
from analyzer.json_codec import parse_json
from analyzer.recognise import strip_query
from analyzer.streams.ndjson import parse_ndjson

MAX_LINE_ERRORS = 5  # per flow: a broken batch says so a few times, not once per line


def _base(flow: http.HTTPFlow, source: str) -> dict:
    return {"flow_id": flow.id, "sent_at": flow.request.timestamp_start, "host": flow.request.pretty_host,
            "endpoint": strip_query(flow.request.path), "source": source}


def _json_request(flow: http.HTTPFlow, what: str) -> Any:
    data = body_bytes(flow.request, "request")
    if not data.strip():
        raise ExtractError("request", f"{what} body is empty")
    try:
        return parse_json(data)
    except ValueError as exc:
        raise ExtractError("request", f"{what} body is not JSON: {exc}") from exc


def _float(value: Any) -> float | None:
    return as_number(value, float)


def _int(value: Any) -> int | None:
    number = as_number(value, float)  # "12" and 12.0 both count; int64 comes as a string in OTLP JSON
    return int(number) if number is not None and number == number and abs(number) < 2**63 else None


def _rest(item: dict, known: set[str]) -> dict | None:
    rest = {k: v for k, v in item.items() if k not in known}
    return rest or None


# -- Segment /v1/m -------------------------------------------------------------------------------


def extract_segment_metrics(flow: http.HTTPFlow, rows: Rows, redact: bool) -> None:
    body = _json_request(flow, "Segment metrics")
    series = body.get("series") if isinstance(body, dict) else None
    if not isinstance(series, list):
        raise ExtractError("request", "Segment metrics body has no series list")
    base = _base(flow, "segment")
    for seq, item in enumerate(series):
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        rows["telemetry_metrics"].append(base | {
            "seq": seq,
            "name": str_or_none(item.get("metric") or item.get("name")),
            "metric_type": kind.lower() if isinstance(kind, str) else str_or_none(kind),
            "value": _float(item.get("value")),
            "time": parse_time(item.get("timestamp")),
            "attributes": to_json(item.get("tags"), redact),
            "resource": to_json(_rest(body, {"series"}), redact),
            "extra": to_json(_rest(item, {"type", "metric", "name", "value", "tags", "timestamp"}), redact),
        })


# -- /ces/statsc/flush ---------------------------------------------------------------------------

_STATSC_KNOWN = {"name", "metric", "key", "value", "count", "values", "samples", "tags", "attributes", "sum",
                 "min", "max", "timestamp", "time"}


def _tags(value: Any) -> Any:
    """Tags as a mapping where they are ``"key:value"`` strings (statsd style); as given otherwise."""
    if isinstance(value, list) and value and all(isinstance(t, str) and ":" in t for t in value):
        return dict(t.split(":", 1) for t in value)
    return value


def _statsc_items(section: Any) -> list[tuple[str | None, Any]]:
    """(name, item) pairs of a counters/histograms section, list or mapping."""
    if isinstance(section, list):
        return [(None, item) for item in section]
    if isinstance(section, dict):
        return list(section.items())
    return []


def _samples(item: Any) -> list[float] | None:
    values = item if isinstance(item, list) else (
        (item.get("values") if item.get("values") is not None else item.get("samples"))
        if isinstance(item, dict) else None)
    if not isinstance(values, list):
        return None
    return [v for v in (_float(x) for x in values) if v is not None]


def extract_statsc(flow: http.HTTPFlow, rows: Rows, redact: bool) -> None:
    body = _json_request(flow, "statsc")
    if not isinstance(body, dict):
        raise ExtractError("request", "statsc body is not a JSON object")
    base = _base(flow, "statsc")
    resource = to_json(_rest(body, {"counters", "histograms"}), redact)
    seq = 0
    for section, metric_type in (("counters", "counter"), ("histograms", "histogram")):
        for key, item in _statsc_items(body.get(section)):
            fields = item if isinstance(item, dict) else {}
            name = key if key is not None else (fields.get("name") or fields.get("metric") or fields.get("key"))
            row = base | {"seq": seq, "name": str_or_none(name), "metric_type": metric_type,
                          "time": parse_time(fields.get("timestamp") or fields.get("time")),
                          "attributes": to_json(_tags(fields.get("tags") or fields.get("attributes")), redact),
                          "resource": resource}
            samples = _samples(item) if metric_type == "histogram" else None
            if samples is not None:
                row.update(count=len(samples), sum=float(sum(samples)) if samples else None,
                           min=min(samples, default=None), max=max(samples, default=None),
                           extra=to_json({"values": samples} | (_rest(fields, _STATSC_KNOWN) or {}), redact))
            else:
                value = item if not isinstance(item, dict) else fields.get("value", fields.get("count"))
                row.update(value=_float(value), count=_int(fields.get("count")) if metric_type == "histogram" else None,
                           sum=_float(fields.get("sum")), min=_float(fields.get("min")), max=_float(fields.get("max")),
                           extra=to_json(_rest(fields, _STATSC_KNOWN), redact))
            rows["telemetry_metrics"].append(row)
            seq += 1


# -- OTLP/HTTP metrics ---------------------------------------------------------------------------

PROTOBUF_TYPES = frozenset({"application/x-protobuf", "application/protobuf", "application/vnd.google.protobuf"})


def decode_otlp_metrics(data: bytes, content_type: str) -> dict:
    """An ``ExportMetricsServiceRequest`` as its OTLP-JSON mapping (lowerCamelCase keys, enums as
    integers), from
    protobuf (by Content-Type, or when the bytes are not JSON) or JSON."""
    looks_json = data.lstrip()[:1] in (b"{", b"[")
    if content_type in PROTOBUF_TYPES or not looks_json:
        from google.protobuf.json_format import MessageToDict
        from google.protobuf.message import DecodeError
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

        message = ExportMetricsServiceRequest()
        try:
            message.ParseFromString(data)
        except DecodeError as exc:
            raise ExtractError("request", f"OTLP metrics body is not a valid protobuf message: {exc}") from exc
        # OTLP JSON writes enums as integers (aggregationTemporality: 1), as the JS exporters send them
        return MessageToDict(message, use_integers_for_enums=True)
    try:
        body = parse_json(data)
    except ValueError as exc:
        raise ExtractError("request", f"OTLP metrics body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ExtractError("request", "OTLP metrics body is not a JSON object")
    return body


def _get(obj: dict, camel: str) -> Any:
    """OTLP JSON is lowerCamelCase; receivers also accept the proto's snake_case names."""
    if camel in obj:
        return obj[camel]
    snake = "".join("_" + c.lower() if c.isupper() else c for c in camel)
    return obj.get(snake)


def any_value(value: Any) -> Any:
    """An OTLP ``AnyValue`` as a plain JSON value."""
    if not isinstance(value, dict):
        return value
    for key in ("stringValue", "string_value", "boolValue", "bool_value", "doubleValue", "double_value"):
        if key in value:
            return value[key]
    for key in ("intValue", "int_value"):
        if key in value:
            number = _int(value[key])
            return number if number is not None else value[key]
    array = _get(value, "arrayValue")
    if isinstance(array, dict):
        return [any_value(v) for v in array.get("values") or []]
    kvlist = _get(value, "kvlistValue")
    if isinstance(kvlist, dict):
        return attributes_dict(kvlist.get("values"))
    raw = _get(value, "bytesValue")
    if raw is not None:
        return raw  # base64 in OTLP JSON; kept as that text
    return None


def attributes_dict(attributes: Any) -> dict:
    """OTLP ``[{key, value: AnyValue}]`` as ``{key: value}``."""
    out: dict = {}
    for kv in attributes or []:
        if isinstance(kv, dict) and isinstance(kv.get("key"), str):
            out[kv["key"]] = any_value(kv.get("value"))
    return out


def _nanos(value: Any) -> float | None:
    number = _int(value)
    return number / 1e9 if number else None


_POINT_KNOWN = {"attributes", "timeUnixNano", "startTimeUnixNano", "asDouble", "asInt", "count", "sum", "min",
                "max", "time_unix_nano", "start_time_unix_nano", "as_double", "as_int"}
_DATA_KINDS = (("gauge", "gauge"), ("sum", "sum"), ("histogram", "histogram"),
               ("exponentialHistogram", "exponential_histogram"), ("summary", "summary"))


def _metric_rows(metric: dict, base: dict, resource: str | None, redact: bool, seq: int) -> list[dict]:
    out = []
    for key, metric_type in _DATA_KINDS:
        data = _get(metric, key)
        if not isinstance(data, dict):
            continue
        shared = _rest(data, {"dataPoints", "data_points"}) or {}  # aggregationTemporality, isMonotonic
        for point in _get(data, "dataPoints") or []:
            if not isinstance(point, dict):
                continue
            value = _get(point, "asDouble")
            if value is None and _get(point, "asInt") is not None:
                value = _int(_get(point, "asInt"))
            extra = shared | (_rest(point, _POINT_KNOWN) or {})
            if metric.get("description"):
                extra["description"] = metric["description"]
            out.append(base | {
                "seq": seq + len(out),
                "name": str_or_none(metric.get("name")),
                "metric_type": metric_type,
                "value": _float(value),
                "count": _int(point.get("count")),
                "sum": _float(point.get("sum")),
                "min": _float(point.get("min")),
                "max": _float(point.get("max")),
                "unit": metric.get("unit") or None,
                "time": _nanos(_get(point, "timeUnixNano")),
                "start_time": _nanos(_get(point, "startTimeUnixNano")),
                "attributes": to_json(attributes_dict(point.get("attributes")), redact),
                "resource": resource,
                "extra": to_json(extra or None, redact),
            })
    return out


def extract_otlp_metrics(flow: http.HTTPFlow, rows: Rows, redact: bool) -> None:
    body = decode_otlp_metrics(body_bytes(flow.request, "request"), media_type(flow.request))
    base = _base(flow, "otlp")
    seq = 0
    for resource_metrics in _get(body, "resourceMetrics") or []:
        if not isinstance(resource_metrics, dict):
            continue
        resource = resource_metrics.get("resource") if isinstance(resource_metrics.get("resource"), dict) else {}
        resource_attrs = attributes_dict(resource.get("attributes"))
        for scope_metrics in _get(resource_metrics, "scopeMetrics") or []:
            if not isinstance(scope_metrics, dict):
                continue
            scope = scope_metrics.get("scope") if isinstance(scope_metrics.get("scope"), dict) else {}
            context = {"attributes": resource_attrs,
                       "scope": {k: v for k, v in scope.items() if k in ("name", "version")} or None,
                       "scope_attributes": attributes_dict(scope.get("attributes")) or None,
                       "schema_url": _get(scope_metrics, "schemaUrl") or _get(resource_metrics, "schemaUrl")}
            resource_json = to_json({k: v for k, v in context.items() if v}, redact)
            for metric in scope_metrics.get("metrics") or []:
                if isinstance(metric, dict):
                    new = _metric_rows(metric, base, resource_json, redact, seq)
                    rows["telemetry_metrics"].extend(new)
                    seq += len(new)


# -- Datadog browser logs ------------------------------------------------------------------------

_LOG_KNOWN = {"date", "timestamp", "status", "service", "logger", "origin", "message", "session_id", "session",
              "usr", "view"}


def _log_records(data: bytes, rows: Rows, flow_id: str) -> list[dict]:
    if data.lstrip()[:1] == b"[":  # the HTTP API also takes one JSON array
        try:
            body = parse_json(data)
        except ValueError as exc:
            raise ExtractError("request", f"Datadog logs body is not JSON: {exc}") from exc
        return [r for r in body if isinstance(r, dict)] if isinstance(body, list) else []
    records, bad = [], 0
    for number, line in enumerate(parse_ndjson(data), 1):
        try:
            record = parse_json(line.data)
        except ValueError as exc:
            bad += 1
            if bad <= MAX_LINE_ERRORS:
                rows["errors"].append({"flow_id": flow_id, "stage": "request",
                                       "error": f"Datadog logs line {number} is not JSON: {exc}"})
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def extract_datadog_logs(flow: http.HTTPFlow, rows: Rows, redact: bool) -> None:
    data = body_bytes(flow.request, "request")
    if data[:2] == b"\x1f\x8b" or data[:1] == b"\x78":
        # A compressed batch (the SDK's deflate worker, dd-evp-encoding=deflate) without a
        # content-encoding header: JSON never starts with these bytes.
        try:
            data = zlib.decompress(data, 47)  # 32+15: zlib or gzip header
        except zlib.error as exc:
            raise ExtractError("request", f"Datadog logs body is not NDJSON nor compressed: {exc}") from exc
    base = _base(flow, "datadog")
    for seq, record in enumerate(_log_records(data, rows, flow.id)):
        logger = record.get("logger")
        session = record.get("session") if isinstance(record.get("session"), dict) else {}
        usr = record.get("usr") if isinstance(record.get("usr"), dict) else {}
        view = record.get("view") if isinstance(record.get("view"), dict) else {}
        view_url = str_or_none(view.get("url"))
        rest = _rest(record, _LOG_KNOWN) or {}
        for name, part, known in (("session", session, {"id"}), ("usr", usr, {"id"}), ("view", view, {"url"})):
            left = _rest(part, known)
            if left:
                rest[name] = left
        rows["telemetry_logs"].append(base | {
            "seq": seq,
            "time": parse_time(record.get("date") if record.get("date") is not None else record.get("timestamp")),
            "status": str_or_none(record.get("status")),
            "service": str_or_none(record.get("service")),
            "logger": str_or_none(logger.get("name") if isinstance(logger, dict) else logger),
            "origin": str_or_none(record.get("origin")),
            "message": str_or_none(record.get("message")),
            "session_id": str_or_none(record.get("session_id") or session.get("id")),
            "user_id": str_or_none(usr.get("id")),
            "view_url": view_url,
            "conversation_id": conversation_from_path(view_url),
            "attributes": to_json(rest or None, redact),
        })


__all__ = ["attributes_dict", "decode_otlp_metrics", "extract_datadog_logs", "extract_otlp_metrics",
           "extract_segment_metrics", "extract_statsc"]
