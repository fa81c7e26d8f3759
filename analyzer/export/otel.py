"""A capture as OpenTelemetry GenAI traces and metrics (``analyze export otel``).

Each conversation turn and each API call becomes one CLIENT span following the OpenTelemetry
GenAI semantic conventions (``docs/export.md`` maps every attribute to the column it comes from).
Spans are the SDK's own ``ReadableSpan`` objects carrying the capture's timestamps, and metrics
the SDK's ``MetricsData``; the same objects are either encoded with the official OTLP encoder into
OTLP/JSON lines (what a Collector's ``otlpjsonfile`` receiver reads) or sent with the official
OTLP/HTTP exporters. Reads the tables only: ``analyzer.analysis.latency`` frames and the stored
columns, never raw traffic.

Ids are derived, not random: the trace id is a hash of the conversation id (of the Codex thread
id, else of the flow id, for API calls) and the span id a hash of the flow id, so exporting the
same capture twice gives the same ids and a collector de-duplicates re-exports.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from analyzer.analysis import latency
from analyzer.store import Capture

SCOPE_NAME = "chatwire.export.otel"
SERVICE_NAME = "chatwire"
OPERATION = "chat"
# Web-app turns go to OpenAI; API calls to any OpenAI-compatible host (see provider_for_host).
WEB_PROVIDER = "openai"

# The conventions' ExplicitBucketBoundaries advice (docs/metrics.md, "OpenTelemetry histograms").
DURATION_BUCKETS_S = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                      40.96, 81.92)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216,
                 67108864)
# The two chunk histograms take the same boundaries as the duration (the conventions say so).
TTFC_BUCKETS_S = DURATION_BUCKETS_S
TPOC_BUCKETS_S = DURATION_BUCKETS_S

# Provider names of the conventions' gen_ai.provider.name list, by host.
_PROVIDER_HOSTS = (
    ("openai.azure.com", "azure.ai.openai"),
    ("chatgpt.com", "openai"),
    ("openai.com", "openai"),
    ("anthropic.com", "anthropic"),
    ("mistral.ai", "mistral_ai"),
    ("groq.com", "groq"),
    ("deepseek.com", "deepseek"),
    ("x.ai", "x_ai"),
    ("perplexity.ai", "perplexity"),
)


def provider_for_host(host: str | None) -> str:
    """``gen_ai.provider.name`` for an API host: a known provider, else ``openai`` (the API spoken)."""
    host = (host or "").lower()
    for suffix, name in _PROVIDER_HOSTS:
        if host == suffix or host.endswith("." + suffix):
            return name
    return "openai"


def trace_id_for(key: str) -> int:
    """A 128-bit trace id derived from ``key`` (never zero: zero is invalid in OTLP)."""
    return int.from_bytes(hashlib.sha256(b"chatwire trace\0" + key.encode()).digest()[:16], "big") or 1


def span_id_for(flow_id: str) -> int:
    """A 64-bit span id derived from the flow id (never zero)."""
    return int.from_bytes(hashlib.sha256(b"chatwire span\0" + flow_id.encode()).digest()[:8], "big") or 1


def _epoch(value: Any) -> float:
    """Epoch seconds from a stored timestamp (pandas reads TS columns as ``Timestamp``)."""
    if isinstance(value, pd.Timestamp):
        return value.timestamp()  # tz-aware UTC (a naive one is taken as UTC too)
    return float(value)


def _ns(epoch_s: float) -> int:
    return int(round(epoch_s * 1e9))


def _present(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return not (isinstance(value, str) and value == "")


def _clean(row: dict) -> dict:
    return {k: v for k, v in row.items() if _present(v)}


@dataclass
class Answer:
    """One exported answer (a turn or an API call): the numbers a span and the metrics share."""

    flow_id: str
    trace_key: str
    conversation_id: str | None
    start_s: float
    end_s: float
    attributes: dict[str, Any]
    streamed: bool
    ttfc_s: float | None
    failed: bool
    error_type: str | None
    input_tokens: int | None = None
    output_tokens: int | None = None
    chunk_gaps_s: list[float] = field(default_factory=list)
    events: list[tuple[str, int, dict]] = field(default_factory=list)
    status_message: str | None = None
    duration_s: float | None = None  # the stored e2e_ms, exact where end_s − start_s is not

    def duration(self) -> float:
        return self.duration_s if self.duration_s is not None else self.end_s - self.start_s


# --------------------------------------------------------------------------------------------
# From tables to answers (pure: frames in, answers out)
# --------------------------------------------------------------------------------------------


def _flows(capture: Capture) -> pd.DataFrame:
    cols = ["flow_id", "host", "port", "status_code", "started_at", "ended_at", "request_headers"]
    flows = capture.table("flows", cols)
    return flows.drop_duplicates("flow_id", keep="first").set_index("flow_id")


def _events_by_flow(capture: Capture, flow_ids: set[str], content: bool) -> dict[str, list[dict]]:
    if not flow_ids:
        return {}
    # The text column is the largest: read it only when it is exported.
    columns = ["flow_id", "seq", "at", "type", "n_bytes", *(["text"] if content else [])]
    events = capture.table("stream_events", columns)
    events = events[events["flow_id"].isin(flow_ids) & events["at"].notna()]
    events = events.drop_duplicates(["flow_id", "seq"]).sort_values(["flow_id", "seq"], kind="stable")
    out: dict[str, list[dict]] = defaultdict(list)
    for row in events.to_dict("records"):
        out[row["flow_id"]].append(row)
    return out


def _gaps_by_flow(gaps: pd.DataFrame) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    if gaps.empty:
        return out
    for flow_id, itl in zip(gaps["flow_id"].astype(str), gaps["itl_ms"], strict=True):
        if _present(itl):
            out[flow_id].append(float(itl) / 1000)
    return out


def _header(headers_json: Any, *names: str) -> str | None:
    """A request header's value from ``flows.request_headers`` (JSON list of pairs or object)."""
    if not _present(headers_json):
        return None
    try:
        headers = json.loads(headers_json)
    except (TypeError, ValueError):
        return None
    pairs = headers.items() if isinstance(headers, dict) else headers if isinstance(headers, list) else []
    wanted = {n.lower() for n in names}
    for pair in pairs:
        if isinstance(pair, (list, tuple)) and len(pair) == 2 and str(pair[0]).lower() in wanted:
            return str(pair[1]) or None
    return None


def codex_thread_id(request_headers: Any, request_json: Any) -> str | None:
    """The Codex thread an API call belongs to: its ``session_id``/``conversation_id`` request header,
    else the request body's ``prompt_cache_key`` (the Codex CLI sets it to the thread id)."""
    found = _header(request_headers, "session_id", "conversation_id")
    if found:
        return found
    if _present(request_json):
        try:
            body = json.loads(request_json)
        except (TypeError, ValueError):
            return None
        if isinstance(body, dict) and isinstance(body.get("prompt_cache_key"), str):
            return body["prompt_cache_key"] or None
    return None


def _error_type(status_code: Any, error_code: Any, error: Any) -> str | None:
    """``error.type``: the HTTP status for an HTTP failure, else the server's error code, else ``_OTHER``."""
    if _present(status_code) and int(status_code) >= 400:
        return str(int(status_code))
    if _present(error_code):
        return str(error_code)
    if _present(error):
        return "_OTHER"
    return None


def _chunk_events(rows: list[dict], content: bool) -> list[tuple[str, int, dict]]:
    out = []
    for ev in rows:
        attrs = {"chatwire.seq": int(ev["seq"])}
        if _present(ev.get("type")):
            attrs["chatwire.event.type"] = str(ev["type"])
        if _present(ev.get("n_bytes")):
            attrs["chatwire.event.bytes"] = int(ev["n_bytes"])
        if content and _present(ev.get("text")):
            attrs["gen_ai.output.text_delta"] = str(ev["text"])
        out.append(("chatwire.stream_event", _ns(_epoch(ev["at"])), attrs))
    return out


def _messages(role: str, text: Any, finish_reason: Any = None) -> str | None:
    if not _present(text):
        return None
    msg: dict[str, Any] = {"role": role, "parts": [{"type": "text", "content": str(text)}]}
    if role == "assistant":
        msg["finish_reason"] = str(finish_reason) if _present(finish_reason) else "stop"
    return json.dumps([msg], ensure_ascii=False)


def _end_s(start: float, e2e_ms: Any, flow: dict) -> float:
    if _present(e2e_ms):
        return start + float(e2e_ms) / 1000
    if _present(flow.get("ended_at")):
        return max(start, _epoch(flow["ended_at"]))
    return start


def turn_answers(capture: Capture, *, content: bool = False) -> list[Answer]:
    """One :class:`Answer` per conversation turn (WebSocket hand-offs and resumes folded in)."""
    turns = latency.conversation_turns(capture, all_columns=True)
    if turns.empty:
        return []
    flows = _flows(capture)
    gaps = _gaps_by_flow(latency.itl_gaps(capture))
    events = _events_by_flow(capture, set(turns["flow_id"]), content)
    out = []
    for row in turns.to_dict("records"):
        row = _clean(row)
        flow_id = str(row["flow_id"])
        # A WebSocket turn ``<ws flow id>#<n>`` has the socket's flow row (host, port).
        flow_key = flow_id if flow_id in flows.index else flow_id.split("#", 1)[0]
        flow = _clean(flows.loc[flow_key].to_dict()) if flow_key in flows.index else {}
        if flow_key != flow_id:
            flow.pop("status_code", None)  # the socket's 101, not this answer's
        start = row.get("started_at", flow.get("started_at"))
        if start is None:
            continue  # a turn without any time cannot be a span
        start = _epoch(start)
        request_model = row.get("requested_model") or row.get("model_slug") or row.get("server_model_slug")
        response_model = row.get("server_model_slug") or row.get("model_slug")
        conv = row.get("conversation_id")
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.provider.name": WEB_PROVIDER,
            "gen_ai.request.stream": True,
            "chatwire.flow_id": flow_id,
            "chatwire.answer": "conversation_turn",
        }
        if conv:
            attrs["gen_ai.conversation.id"] = str(conv)
        if request_model:
            attrs["gen_ai.request.model"] = str(request_model)
        if response_model:
            attrs["gen_ai.response.model"] = str(response_model)
        if row.get("assistant_message_id"):
            attrs["gen_ai.response.id"] = str(row["assistant_message_id"])
        if row.get("finish_type"):
            attrs["gen_ai.response.finish_reasons"] = (str(row["finish_type"]),)
        ttfc = float(row["ttft_ms"]) / 1000 if "ttft_ms" in row else None
        if ttfc is not None:
            attrs["gen_ai.response.time_to_first_chunk"] = ttfc
        _server_attrs(attrs, flow)
        error_type = _error_type(flow.get("status_code"), row.get("error_code"), row.get("error"))
        if error_type:
            attrs["error.type"] = error_type
        if content:
            _content_attrs(attrs, row.get("user_text"), row.get("assistant_text"), row.get("finish_type"))
        out.append(Answer(
            flow_id=flow_id, trace_key=f"conversation:{conv}" if conv else f"flow:{flow_id}",
            conversation_id=conv, start_s=start, end_s=_end_s(start, row.get("e2e_ms"), flow),
            attributes=attrs, streamed=True, ttfc_s=ttfc, failed=error_type is not None,
            error_type=error_type, chunk_gaps_s=gaps.get(flow_id, []),
            events=_chunk_events(events.get(flow_id, []), content),
            status_message=str(row["error"]) if "error" in row else None,
            duration_s=float(row["e2e_ms"]) / 1000 if "e2e_ms" in row else None,
        ))
    return out


def api_answers(capture: Capture, *, content: bool = False) -> list[Answer]:
    """One :class:`Answer` per OpenAI-compatible API call."""
    calls = capture.table("api_calls").drop_duplicates("flow_id", keep="first")
    if calls.empty:
        return []
    flows = _flows(capture)
    gaps = _gaps_by_flow(latency.itl_gaps(capture, api=True))
    events = _events_by_flow(capture, set(calls["flow_id"]), content)
    out = []
    for row in calls.to_dict("records"):
        row = _clean(row)
        flow_id = str(row["flow_id"])
        flow = _clean(flows.loc[flow_id].to_dict()) if flow_id in flows.index else {}
        start = row.get("started_at", flow.get("started_at"))
        if start is None:
            continue
        start = _epoch(start)
        streamed = bool(row.get("stream", False))
        thread = codex_thread_id(flow.get("request_headers"), row.get("request_json"))
        host = row.get("host") or flow.get("host")
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.provider.name": provider_for_host(host),
            "gen_ai.request.stream": streamed,
            "chatwire.flow_id": flow_id,
            "chatwire.answer": "api_call",
        }
        if row.get("endpoint"):
            attrs["chatwire.endpoint"] = str(row["endpoint"])
        if thread:
            attrs["gen_ai.conversation.id"] = thread
        if row.get("model"):
            attrs["gen_ai.request.model"] = str(row["model"])
            attrs["gen_ai.response.model"] = str(row["model"])
        if row.get("response_id"):
            attrs["gen_ai.response.id"] = str(row["response_id"])
        if row.get("finish_reason"):
            attrs["gen_ai.response.finish_reasons"] = (str(row["finish_reason"]),)
        ttfc = float(row["ttft_ms"]) / 1000 if streamed and "ttft_ms" in row else None
        if ttfc is not None:
            attrs["gen_ai.response.time_to_first_chunk"] = ttfc
        # Usage only where the API reported it: never estimated from text events.
        input_tokens = int(row["prompt_tokens"]) if "prompt_tokens" in row else None
        output_tokens = int(row["completion_tokens"]) if "completion_tokens" in row else None
        if input_tokens is not None:
            attrs["gen_ai.usage.input_tokens"] = input_tokens
        if output_tokens is not None:
            attrs["gen_ai.usage.output_tokens"] = output_tokens
        if host and "host" not in flow:
            flow["host"] = host
        _server_attrs(attrs, flow)
        status_code = row.get("status_code", flow.get("status_code"))
        error_type = _error_type(status_code, None, row.get("error"))
        if error_type:
            attrs["error.type"] = error_type
        if content:
            _content_attrs(attrs, row.get("last_user_text"), row.get("response_text"), row.get("finish_reason"))
        out.append(Answer(
            flow_id=flow_id, trace_key=f"codex-thread:{thread}" if thread else f"flow:{flow_id}",
            conversation_id=thread, start_s=start, end_s=_end_s(start, row.get("e2e_ms"), flow),
            attributes=attrs, streamed=streamed, ttfc_s=ttfc, failed=error_type is not None,
            error_type=error_type, input_tokens=input_tokens, output_tokens=output_tokens,
            chunk_gaps_s=gaps.get(flow_id, []) if streamed else [],
            events=_chunk_events(events.get(flow_id, []), content),
            status_message=str(row["error"]) if "error" in row else None,
            duration_s=float(row["e2e_ms"]) / 1000 if "e2e_ms" in row else None,
        ))
    return out


def _server_attrs(attrs: dict, flow: dict) -> None:
    if flow.get("host"):
        attrs["server.address"] = str(flow["host"])
    if flow.get("port") is not None:
        attrs["server.port"] = int(flow["port"])
    if flow.get("status_code") is not None:
        attrs["http.response.status_code"] = int(flow["status_code"])


def _content_attrs(attrs: dict, user_text: Any, assistant_text: Any, finish: Any) -> None:
    inp = _messages("user", user_text)
    outp = _messages("assistant", assistant_text, finish)
    if inp:
        attrs["gen_ai.input.messages"] = inp
    if outp:
        attrs["gen_ai.output.messages"] = outp


def answers(capture: Capture, *, content: bool = False) -> list[Answer]:
    """Every exported answer of ``capture``: turns first, then API calls, each by start time."""
    found = turn_answers(capture, content=content) + api_answers(capture, content=content)
    return sorted(found, key=lambda a: (a.start_s, a.flow_id))


# --------------------------------------------------------------------------------------------
# Answers as SDK objects
# --------------------------------------------------------------------------------------------


def _resource():
    from opentelemetry.sdk.resources import Resource

    # Not Resource.create: it adds a random service.instance.id, and two exports must be identical.
    return Resource({"service.name": SERVICE_NAME})


def _scope():
    from importlib.metadata import PackageNotFoundError, version

    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    try:
        own_version = version("chatwire")
    except PackageNotFoundError:  # running from a source tree that was never installed
        own_version = None
    return InstrumentationScope(SCOPE_NAME, own_version)


def span_name(answer: Answer) -> str:
    """``{gen_ai.operation.name} {gen_ai.request.model}``, or the operation alone without a model."""
    model = answer.attributes.get("gen_ai.request.model")
    return f"{OPERATION} {model}" if model else OPERATION


def build_spans(found: Iterable[Answer]) -> list:
    """``ReadableSpan`` objects (kind CLIENT) with the capture's start and end times."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    resource, scope = _resource(), _scope()
    spans = []
    for a in found:
        ctx = SpanContext(trace_id=trace_id_for(a.trace_key), span_id=span_id_for(a.flow_id),
                          is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
        status = Status(StatusCode.ERROR, a.status_message or a.error_type) if a.failed else Status(StatusCode.UNSET)
        events = [Event(name, attrs, timestamp=ts) for name, ts, attrs in a.events]
        spans.append(ReadableSpan(
            name=span_name(a), context=ctx, parent=None, resource=resource, attributes=a.attributes,
            events=events, kind=SpanKind.CLIENT, instrumentation_scope=scope, status=status,
            start_time=_ns(a.start_s), end_time=_ns(a.end_s),
        ))
    return spans


def _metric_attrs(a: Answer) -> dict[str, Any]:
    keys = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.model",
            "server.address", "server.port", "error.type")
    return {k: a.attributes[k] for k in keys if k in a.attributes}


@dataclass
class _Hist:
    bounds: tuple[float, ...]
    values: dict[tuple, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, attrs: dict, value: float) -> None:
        self.values[tuple(sorted(attrs.items()))].append(value)


def bucket_counts(values: list[float], bounds: tuple[float, ...]) -> list[int]:
    """OTLP explicit buckets: bucket i holds bounds[i-1] < v <= bounds[i]; the last one v > bounds[-1]."""
    counts = [0] * (len(bounds) + 1)
    for v in values:
        counts[bisect.bisect_left(bounds, v)] += 1
    return counts


METRICS = (
    # name, unit, description, bounds
    ("gen_ai.client.operation.duration", "s", "GenAI operation duration.", DURATION_BUCKETS_S),
    ("gen_ai.client.token.usage", "{token}", "Number of input and output tokens used.", TOKEN_BUCKETS),
    ("gen_ai.client.operation.time_to_first_chunk", "s",
     "Time to receive the first chunk in a streaming operation.", TTFC_BUCKETS_S),
    ("gen_ai.client.operation.time_per_output_chunk", "s",
     "Time between consecutive chunks of a streaming operation, after the first.", TPOC_BUCKETS_S),
)


def metric_values(found: Iterable[Answer]) -> dict[str, _Hist]:
    """The histogram samples: per metric, per attribute set, the recorded values (seconds or tokens)."""
    hists = {name: _Hist(bounds) for name, _, _, bounds in METRICS}
    for a in found:
        attrs = _metric_attrs(a)
        hists["gen_ai.client.operation.duration"].add(attrs, a.duration())
        for token_type, n in (("input", a.input_tokens), ("output", a.output_tokens)):
            if n is not None:
                hists["gen_ai.client.token.usage"].add({**attrs, "gen_ai.token.type": token_type}, float(n))
        if a.streamed and not a.failed:
            if a.ttfc_s is not None:
                hists["gen_ai.client.operation.time_to_first_chunk"].add(attrs, a.ttfc_s)
            for gap in a.chunk_gaps_s:
                hists["gen_ai.client.operation.time_per_output_chunk"].add(attrs, gap)
    return hists


def build_metrics(found: list[Answer]):
    """One ``MetricsData`` with the four GenAI client histograms (cumulative over the capture)."""
    from opentelemetry.sdk.metrics.export import (
        AggregationTemporality,
        Histogram,
        HistogramDataPoint,
        Metric,
        MetricsData,
        ResourceMetrics,
        ScopeMetrics,
    )

    if not found:
        return None
    start_ns = _ns(min(a.start_s for a in found))
    end_ns = _ns(max(a.end_s for a in found))
    metrics = []
    hists = metric_values(found)
    for name, unit, description, bounds in METRICS:
        points = []
        for key, values in sorted(hists[name].values.items(), key=lambda kv: repr(kv[0])):
            points.append(HistogramDataPoint(
                attributes=dict(key), start_time_unix_nano=start_ns, time_unix_nano=end_ns,
                count=len(values), sum=float(sum(values)), bucket_counts=bucket_counts(values, bounds),
                explicit_bounds=list(map(float, bounds)), min=float(min(values)), max=float(max(values)),
                exemplars=[],
            ))
        if points:
            metrics.append(Metric(name=name, description=description, unit=unit, data=Histogram(
                data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE)))
    if not metrics:
        return None
    return MetricsData(resource_metrics=[ResourceMetrics(
        resource=_resource(), scope_metrics=[ScopeMetrics(scope=_scope(), metrics=metrics, schema_url="")],
        schema_url="")])


# --------------------------------------------------------------------------------------------
# Output: OTLP/JSON lines, or OTLP/HTTP
# --------------------------------------------------------------------------------------------

_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def _hex_ids(node: Any) -> Any:
    """OTLP/JSON writes trace and span ids as hex, where proto3 JSON would write base64."""
    if isinstance(node, dict):
        return {k: (base64.b64decode(v).hex() if k in _ID_FIELDS and isinstance(v, str) else _hex_ids(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_hex_ids(v) for v in node]
    return node


def to_otlp_json(message) -> str:
    """One OTLP/JSON line for an OTLP request message (lowerCamelCase, enums as integers,
    int64 as strings, hex ids)."""
    from google.protobuf import json_format

    as_dict = json_format.MessageToDict(message, use_integers_for_enums=True)
    return json.dumps(_hex_ids(as_dict), separators=(",", ":"), ensure_ascii=False)


def to_jsonl(spans: list, metrics) -> str:
    """The export as JSONL: one ExportTraceServiceRequest per trace, then one ExportMetricsServiceRequest."""
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    by_trace: dict[int, list] = defaultdict(list)
    for span in spans:
        by_trace[span.context.trace_id].append(span)
    lines = [to_otlp_json(encode_spans(group)) for group in by_trace.values()]
    if metrics is not None:
        lines.append(to_otlp_json(encode_metrics(metrics)))
    return "".join(line + "\n" for line in lines)


class ExportError(Exception):
    """The endpoint refused the export or could not be reached."""


def is_traces_url(endpoint: str) -> bool:
    """A signal-specific traces URL (``…/v1/traces``) rather than a collector's base URL."""
    return endpoint.split("?", 1)[0].rstrip("/").endswith("/v1/traces")


def send(spans: list, metrics, endpoint: str, *, timeout: float = 10.0) -> None:
    """Send spans and metrics as OTLP/HTTP protobuf: to ``endpoint/v1/traces`` and ``endpoint/v1/metrics``
    for a base URL, or spans only to a URL that ends in ``/v1/traces`` (used as it is, as the SDK's
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is; a trace store such as Phoenix takes no metrics)."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics.export import MetricExportResult
    from opentelemetry.sdk.trace.export import SpanExportResult

    base = endpoint.rstrip("/")
    traces_url = base if is_traces_url(base) else f"{base}/v1/traces"
    if spans:
        exporter = OTLPSpanExporter(endpoint=traces_url, timeout=timeout)
        try:
            if exporter.export(spans) is not SpanExportResult.SUCCESS:
                raise ExportError(f"{traces_url}: the endpoint did not accept the spans")
        finally:
            exporter.shutdown()
    if is_traces_url(base):
        return
    if metrics is not None:
        exporter = OTLPMetricExporter(endpoint=f"{base}/v1/metrics", timeout=timeout)
        try:
            if exporter.export(metrics) is not MetricExportResult.SUCCESS:
                raise ExportError(f"{base}/v1/metrics: the endpoint did not accept the metrics")
        finally:
            exporter.shutdown()
