"""Latency beacons: ``POST /backend-api/lat/r``, the page's own timing of one streamed answer."""

from __future__ import annotations

from mitmproxy import http

from analyzer.extract.common import ExtractError, as_number, json_body, str_or_none, to_json
from analyzer.extract.rows import Rows

BEACON_FIELDS = (
    "preflight_time_ms",
    "count_tokens",
    "ts_first_token_ms",
    "ts_max_token_time_ms",
    "ts_mean_token_without_first_ms",
    "ts_median_token_without_first_ms",
    "ts_min_token_time_ms",
    "ts_p95_token_without_first_ms",
    "ts_p99_token_without_first_ms",
    "ts_std_dev_token_ms",
    "ts_total_request_ms",
)


def extract_beacon(flow: http.HTTPFlow, rows: Rows, redact: bool) -> None:
    body = json_body(flow.request, "request")
    beacons = body if isinstance(body, list) else [body]
    for beacon in beacons:
        if not isinstance(beacon, dict):
            raise ExtractError("request", "latency beacon is not a JSON object")
        known = {"server_request_id", "model", *BEACON_FIELDS}
        extra = {k: v for k, v in beacon.items() if k not in known}
        row = {
            "flow_id": flow.id,
            "sent_at": flow.request.timestamp_start,
            "server_request_id": str_or_none(beacon.get("server_request_id")),
            "model": str_or_none(beacon.get("model")),
            "extra": to_json(extra, redact) if extra else None,
        }
        row.update({name: as_number(beacon.get(name), float) for name in BEACON_FIELDS})
        rows["latency_beacons"].append(row)
