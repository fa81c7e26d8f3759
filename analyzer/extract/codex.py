"""The Codex backend of chatgpt.com (guide section 6a): usage limits, the CLI's request headers,
its analytics events, MCP over streamable HTTP and the reads around them.

Everything here is pure: headers and JSON in, row dicts out. The rate-limit reading follows the
Codex CLI's own parser (openai/codex ``codex-rs/codex-api/src/rate_limits.rs``): a header family
``x-<id>-primary-used-percent`` / ``-window-minutes`` / ``-reset-at`` (and ``-secondary-*``) per
limit, ``x-codex-*`` being the default limit; a ``codex.rate_limits`` event names its limit with
``metered_limit_name`` or ``limit_name``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from mitmproxy import http

from analyzer.extract.common import (
    ExtractError,
    as_number,
    event_data,
    header,
    is_event_stream,
    json_body,
    offset_ms,
    request_start,
    response_events,
    str_or_none,
    to_json,
)
from analyzer.extract.rows import Rows
from analyzer.json_codec import parse_json
from analyzer.streams.conversation import EventInfo, event_json

DEFAULT_LIMIT = "codex"  # the limit of the plain ``x-codex-*`` headers and of an unnamed event
WINDOWS = ("primary", "secondary")
_FAMILY = re.compile(r"^x-(.+)-primary-used-percent$")

# Request headers the Codex CLI sends (CLI 0.171, seen against a local stand-in): api_calls columns.
CODEX_REQUEST_HEADERS = {
    "session-id": "codex_session_id",
    "thread-id": "codex_thread_id",
    "x-codex-window-id": "codex_window_id",
    "x-client-request-id": "client_request_id",
    "originator": "originator",
    "chatgpt-account-id": "chatgpt_account_id",  # an account identifier, not a credential
    "x-codex-beta-features": "codex_beta_features",
}
# Response headers worth keeping on the call (``extra``): not limits, not credentials.
CODEX_RESPONSE_HEADERS = ("openai-model", "x-models-etag", "x-reasoning-included", "x-codex-promo-message")


def normalize_limit_id(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _finite(value: Any) -> float | None:
    number = as_number(value, float)
    return number if number is not None and math.isfinite(number) else None


def _integer(value: Any) -> int | None:
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    number = _finite(value)
    return int(number) if number is not None and number == int(number) else None


def _bool(value: str | None) -> bool | None:
    if value is None:
        return None
    text = value.strip().lower()
    return True if text in ("true", "1") else False if text in ("false", "0") else None


def _lower(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {str(k).lower(): str(v) for k, v in items}


def _window_row(limit_id: str, window: str, used: float | None, minutes: int | None, reset_at: float | None,
                **common: Any) -> dict:
    label = window if limit_id == DEFAULT_LIMIT else (limit_id if window == "primary" else f"{limit_id}.{window}")
    return {"limit": label, "limit_id": limit_id, "window": window, "used_percent": used,
            "window_minutes": minutes, "reset_at": reset_at, **common}


def rate_limits_from_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]], *,
                             at: float | None = None) -> list[dict]:
    """``rate_limits`` rows (without flow_id/at/source) from response headers, one per window.

    A window counts when its used-percent parses and something in it is non-zero or a reset time
    is given (as the CLI decides); ``reset_at`` falls back to ``at`` + ``-reset-after-seconds``.
    Credits (``x-codex-credits-*``) ride on the default limit's rows, or make a row of their own.
    """
    h = _lower(headers)
    ids = [DEFAULT_LIMIT] + sorted({normalize_limit_id(m.group(1)) for name in h
                                    if (m := _FAMILY.match(name)) and normalize_limit_id(m.group(1)) != DEFAULT_LIMIT})
    credits = None
    has, unlimited = _bool(h.get("x-codex-credits-has-credits")), _bool(h.get("x-codex-credits-unlimited"))
    if has is not None and unlimited is not None:
        credits = {"has_credits": has, "unlimited": unlimited,
                   "balance": (h.get("x-codex-credits-balance") or "").strip() or None}
    rows = []
    for limit_id in ids:
        prefix = "x-" + limit_id.replace("_", "-")
        name = (h.get(f"{prefix}-limit-name") or "").strip() or None
        for window in WINDOWS:
            used = _finite(h.get(f"{prefix}-{window}-used-percent"))
            if used is None:
                continue
            minutes = _integer(h.get(f"{prefix}-{window}-window-minutes"))
            reset_at = _integer(h.get(f"{prefix}-{window}-reset-at"))
            after = _finite(h.get(f"{prefix}-{window}-reset-after-seconds"))
            if not (used != 0 or minutes or reset_at is not None or after is not None):
                continue
            reset = float(reset_at) if reset_at is not None else (at + after if at is not None and after is not None
                                                                  else None)
            extra = {"reset_after_seconds": after} if after is not None else None
            rows.append(_window_row(limit_id, window, used, minutes, reset, limit_name=name,
                                    credits=to_json(credits, False) if limit_id == DEFAULT_LIMIT else None,
                                    extra=to_json(extra, False)))
    if credits is not None and not any(r["limit_id"] == DEFAULT_LIMIT for r in rows):
        rows.append({"limit": "credits", "limit_id": DEFAULT_LIMIT, "credits": to_json(credits, False)})
    return rows


def _event_windows(limit_id: str, details: Any, **common: Any) -> list[dict]:
    rows = []
    if not isinstance(details, dict):
        return rows
    for window in WINDOWS:
        w = details.get(window)
        if not isinstance(w, dict):
            continue
        used = _finite(w.get("used_percent"))
        if used is None:
            continue
        reset = _finite(w.get("reset_at"))
        rows.append(_window_row(limit_id, window, used, _integer(w.get("window_minutes")), reset, **common))
    return rows


def rate_limits_from_event(event: dict) -> list[dict]:
    """``rate_limits`` rows (without flow_id/at/source) from one ``codex.rate_limits`` event,
    its ``additional_rate_limits`` included (each named by its key)."""
    if not isinstance(event, dict) or event.get("type") != "codex.rate_limits":
        return []
    name = event.get("metered_limit_name") or event.get("limit_name")
    limit_id = normalize_limit_id(name) if isinstance(name, str) and name.strip() else DEFAULT_LIMIT
    credits = event.get("credits") if isinstance(event.get("credits"), dict) else None
    plan = str_or_none(event.get("plan_type"))
    rows = _event_windows(limit_id, event.get("rate_limits"), plan_type=plan, limit_name=str_or_none(name),
                          credits=to_json(credits, False))
    additional = event.get("additional_rate_limits")
    if isinstance(additional, dict):
        for key, details in additional.items():
            inner = details.get("rate_limits", details) if isinstance(details, dict) else None
            rows += _event_windows(normalize_limit_id(str(key)), inner, plan_type=plan, limit_name=str(key))
    if credits is not None and not rows:
        rows.append({"limit": "credits", "limit_id": limit_id, "plan_type": plan, "credits": to_json(credits, False)})
    return rows


def rate_limits_from_error_event(event: dict, *, at: float | None) -> list[dict]:
    """Rows from the headers a wrapped error event carries (``{"type":"error","headers":{…}}``),
    with the plan named in its error."""
    headers = event.get("headers") if isinstance(event, dict) else None
    if not isinstance(headers, dict):
        return []
    error = event.get("error") if isinstance(event.get("error"), dict) else {}
    rows = rate_limits_from_headers({str(k): str(v) for k, v in headers.items()}, at=at)
    for row in rows:
        row["plan_type"] = str_or_none(error.get("plan_type"))
    return rows


def rate_limit_rows(flow: http.HTTPFlow, events: list[tuple[float | None, dict]]) -> list[dict]:
    """Every ``rate_limits`` row of one Codex answer: its response headers, then its events
    (``(arrival, event object)``: ``codex.rate_limits`` events and error events with headers)."""
    rows = []
    if flow.response is not None:
        at = flow.response.timestamp_start
        rows += [{"flow_id": flow.id, "at": at, "source": "header", **r}
                 for r in rate_limits_from_headers(flow.response.headers.items(multi=True), at=at)]
    for at, event in events:
        if event.get("type") == "codex.rate_limits":
            rows += [{"flow_id": flow.id, "at": at, "source": "event", **r} for r in rate_limits_from_event(event)]
        else:
            rows += [{"flow_id": flow.id, "at": at, "source": "header", **r}
                     for r in rate_limits_from_error_event(event, at=at)]
    return rows


def codex_request_columns(request: http.Request, body: Any = None, redact: bool = True) -> dict:
    """``api_calls`` columns from the Codex CLI's request headers (empty for other clients).

    Where a header is missing, the request body's ``client_metadata`` (the same keys, as the CLI
    also sends them there, and the only place a WebSocket ``response.create`` has them) fills in."""
    out: dict[str, Any] = {}
    for name, column in CODEX_REQUEST_HEADERS.items():
        value = header(request, name)
        if value is not None:
            out[column] = value
    client = body.get("client_metadata") if isinstance(body, dict) else None
    client = client if isinstance(client, dict) else {}
    for key, column in (("session_id", "codex_session_id"), ("thread_id", "codex_thread_id"),
                        ("x-codex-window-id", "codex_window_id")):
        if column not in out and isinstance(client.get(key), str):
            out[column] = client[key]
    meta_text = header(request, "x-codex-turn-metadata")
    if meta_text is None and isinstance(client.get("x-codex-turn-metadata"), str):
        meta_text = client["x-codex-turn-metadata"]
    if meta_text is not None:
        try:
            meta = parse_json(meta_text)
        except ValueError:
            meta = None
        out["codex_turn_metadata"] = to_json(meta, redact) if isinstance(meta, dict) else meta_text
        if isinstance(meta, dict):
            out["codex_turn_id"] = str_or_none(meta.get("turn_id"))
            out.setdefault("codex_session_id", str_or_none(meta.get("session_id")))
            out.setdefault("codex_thread_id", str_or_none(meta.get("thread_id")))
    if "codex_turn_id" not in out and isinstance(client.get("turn_id"), str):
        out["codex_turn_id"] = client["turn_id"]
    return {k: v for k, v in out.items() if v is not None}


def codex_response_extra(response: http.Response | None) -> dict:
    """The response headers kept in ``api_calls.extra`` (model, etags, reasoning-included)."""
    if response is None:
        return {}
    return {name: response.headers[name] for name in CODEX_RESPONSE_HEADERS if response.headers.get(name)}


# -- analytics events ----------------------------------------------------------------------------

_ANALYTICS_COLUMNS = ("thread_id", "session_id", "turn_id", "model", "runtime")
_ANALYTICS_TIMINGS = ("critical_path_duration_ms", "critical_path_inference_ms", "critical_path_tools_ms")


def analytics_event_rows(body: Any, *, flow_id: str, sent_at: float, redact: bool) -> list[dict]:
    """``codex_analytics_events`` rows: one per event of ``{"events": [{event_type, event_params}]}``;
    known params as columns, every param (known or not) kept in ``params``."""
    events = body.get("events") if isinstance(body, dict) else body if isinstance(body, list) else None
    if not isinstance(events, list):
        raise ExtractError("request", "analytics body has no events list")
    rows = []
    for seq, event in enumerate(events):
        if not isinstance(event, dict):
            continue
        params = event.get("event_params")
        params = params if isinstance(params, dict) else {}
        row = {"flow_id": flow_id, "sent_at": sent_at, "seq": seq, "event_type": str_or_none(event.get("event_type")),
               "params": to_json({**params, **{k: v for k, v in event.items()
                                               if k not in ("event_type", "event_params")}}, redact)}
        for name in _ANALYTICS_COLUMNS:
            row[name] = str_or_none(params.get(name))
        for name in _ANALYTICS_TIMINGS:
            row[name] = _finite(params.get(name))
        rows.append(row)
    return rows


def extract_codex_analytics(flow: http.HTTPFlow, rows: Rows, redact: bool) -> None:
    """``POST /backend-api/codex/analytics-events/events``: the CLI's own telemetry."""
    body = json_body(flow.request, "request")
    rows["codex_analytics_events"].extend(
        analytics_event_rows(body, flow_id=flow.id, sent_at=request_start(flow), redact=redact))


# -- MCP over streamable HTTP ---------------------------------------------------------------------

def jsonrpc_event(data: str, errors: list[str]) -> EventInfo:
    """Type of one JSON-RPC message: ``jsonrpc.<method>``, ``jsonrpc.result`` or ``jsonrpc.error``."""
    obj = event_json(data, errors)
    if isinstance(obj, EventInfo):
        return obj
    if isinstance(obj, list):
        return EventInfo("jsonrpc.batch")
    if not isinstance(obj, dict):
        return EventInfo("unknown")
    if isinstance(obj.get("method"), str):
        return EventInfo(f"jsonrpc.{obj['method']}")
    return EventInfo("jsonrpc.error" if "error" in obj else "jsonrpc.result" if "result" in obj else "jsonrpc")


def extract_mcp(flow: http.HTTPFlow, rows: Rows, redact: bool) -> None:
    """``POST /backend-api/ps/mcp``: the flow row is written by the caller; an event-stream answer
    adds its JSON-RPC messages to ``stream_events`` with their arrival times."""
    if not is_event_stream(flow):
        return
    start = request_start(flow)
    timed = response_events(flow)
    errors: list[str] = []
    for seq, event in enumerate(timed.events):
        info = jsonrpc_event(event.data, errors)
        rows["stream_events"].append({
            "flow_id": flow.id, "seq": seq, "at": event.at, "offset_ms": offset_ms(event.at, start),
            "event": event.event, "type": info.type, "data": event_data(event.data, redact),
            "n_bytes": event.n_bytes})
    for error in ([timed.error] if timed.error else []) + errors[:5]:
        rows["errors"].append({"flow_id": flow.id, "stage": "stream", "error": error})


def _usage_windows(limit_id: str, rate_limit: Any, reset_base: float | None, **common: Any) -> list[dict]:
    rows = []
    if not isinstance(rate_limit, dict):
        return rows
    for window in WINDOWS:
        w = rate_limit.get(f"{window}_window")
        if not isinstance(w, dict) or (used := _finite(w.get("used_percent"))) is None:
            continue
        seconds = _finite(w.get("limit_window_seconds"))
        reset = _finite(w.get("reset_at"))
        after = _finite(w.get("reset_after_seconds"))
        if reset is None and after is not None and reset_base is not None:
            reset = reset_base + after
        rows.append(_window_row(limit_id, window, used, int(seconds // 60) if seconds is not None else None, reset,
                                **common))
    return rows


def rate_limits_from_usage(body: Any, *, at: float | None) -> list[dict]:
    """``rate_limits`` rows (without flow_id/at/source) from a ``GET /backend-api/wham/usage`` answer:
    ``{plan_type, rate_limit: {primary_window|secondary_window: {used_percent, limit_window_seconds,
    reset_at}}, credits, additional_rate_limits}`` (the shape other clients of it read; inferred)."""
    if not isinstance(body, dict):
        return []
    plan = str_or_none(body.get("plan_type"))
    credits = body.get("credits") if isinstance(body.get("credits"), dict) else None
    rows = _usage_windows(DEFAULT_LIMIT, body.get("rate_limit"), at, plan_type=plan, limit_name=None,
                          credits=to_json(credits, False))
    additional = body.get("additional_rate_limits")
    items = list(additional.items()) if isinstance(additional, dict) else [
        (a.get("limit_name") or a.get("metered_feature"), a) for a in additional or [] if isinstance(a, dict)
    ] if isinstance(additional, list) else []
    for name, details in items:
        if not isinstance(name, str) or not isinstance(details, dict):
            continue
        rows += _usage_windows(normalize_limit_id(name), details.get("rate_limit", details), at, plan_type=plan,
                               limit_name=name)
    return rows


def extract_codex_read(flow: http.HTTPFlow, rows: Rows, redact: bool) -> None:
    """``/backend-api/codex/models``, ``/backend-api/wham/*``, ``/backend-api/ps/plugins/*``: the
    flow row (with its headers) is the record; ``wham/usage`` adds its limits to ``rate_limits``
    (``source = usage``)."""
    response = flow.response
    if response is None or response.status_code >= 400 or not flow.request.path.split("?")[0].endswith("/wham/usage"):
        return
    at = response.timestamp_start
    rows["rate_limits"].extend({"flow_id": flow.id, "at": at, "source": "usage", **r}
                               for r in rate_limits_from_usage(json_body(response, "response"), at=at))
