"""The capture's tables and their Arrow schemas: the one contract between extractors and analysis.

A capture is a directory with one sub-directory per table (see ``docs/schema.md``). Every table
exists in every capture, even when it is empty, so readers never have to special-case a missing
table. Timestamps are UTC (microseconds); durations are float64 milliseconds. Extractors produce rows as
plain dicts whose timestamps are float epoch seconds; ``rows_to_table`` converts them.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

TS = pa.timestamp("us", tz="UTC")
STR = pa.string()
F64 = pa.float64()
I64 = pa.int64()
BOOL = pa.bool_()


def _schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([pa.field(name, typ) for name, typ in fields])


TABLES: dict[str, pa.Schema] = {
    # One row per recognised HTTP or WebSocket flow (every flow with capture_all_flows).
    "flows": _schema(
        ("flow_id", STR),
        ("kind", STR),
        ("source", STR),
        ("method", STR),
        ("scheme", STR),
        ("host", STR),
        ("port", I64),
        ("path", STR),
        ("query", STR),
        ("http_version", STR),
        ("status_code", I64),
        ("started_at", TS),
        ("ended_at", TS),
        ("ttfb_ms", F64),
        ("duration_ms", F64),
        ("request_bytes", I64),
        ("response_bytes", I64),
        ("content_type", STR),
        ("content_encoding", STR),
        ("cf_ray", STR),
        ("streamed", BOOL),
        ("n_chunks", I64),
        ("request_headers", STR),
        ("response_headers", STR),
        ("error", STR),
    ),
    # One row per conversation POST (a user turn and the answer streamed back).
    "conversation_turns": _schema(
        ("flow_id", STR),
        ("conversation_id", STR),
        ("action", STR),
        ("requested_model", STR),
        ("model_slug", STR),
        ("server_model_slug", STR),
        ("parent_message_id", STR),
        ("user_message_id", STR),
        ("user_text", STR),
        ("assistant_message_id", STR),
        ("assistant_text", STR),
        ("stream_format", STR),
        ("status", STR),
        ("finish_type", STR),
        ("title", STR),
        ("started_at", TS),
        ("ttft_ms", F64),
        ("e2e_ms", F64),
        ("n_events", I64),
        ("n_text_events", I64),
        ("cf_ray", STR),
        ("path", STR),
        ("error", STR),
        ("client_contextual_info", STR),
        # Resumed streams (guide 6c): the offset a resume POST asked from; the offset a resume
        # after this flow would ask for; the code of a failed answer (tokenless_resume_unavailable…).
        ("resume_offset", I64),
        ("next_offset", I64),
        ("error_code", STR),
        ("resume_token_kind", STR),
        ("end_status", STR),
    ),
    # One row per sighting of a message (request, stream, mapping read); analysis de-duplicates.
    "messages": _schema(
        ("conversation_id", STR),
        ("message_id", STR),
        ("parent_id", STR),
        ("role", STR),
        ("author_name", STR),
        ("content_type", STR),
        ("recipient", STR),
        ("text", STR),
        ("model_slug", STR),
        ("create_time", TS),
        ("status", STR),
        ("end_turn", BOOL),
        ("hidden", BOOL),
        ("source", STR),
        ("flow_id", STR),
        ("seen_at", TS),
        ("images", STR),  # JSON list of the message's image_asset_pointer parts; null when none
    ),
    # One row per conversation read: a mapping (GET …/conversation/<id>) or a history page
    # (GET …/conversations/<id>[/messages]): the tree's or page's metadata.
    "conversation_reads": _schema(
        ("flow_id", STR),
        ("conversation_id", STR),
        ("title", STR),
        ("create_time", TS),
        ("update_time", TS),
        ("current_node", STR),
        ("n_nodes", I64),
        ("read_at", TS),
        ("read_type", STR),  # mapping | page
        ("n_messages", I64),
        ("num_turns", I64),
        ("before_cursor", STR),
        ("start_cursor", STR),
        ("end_cursor", STR),
        ("has_previous_page", BOOL),
        ("has_next_page", BOOL),
        ("default_model_slug", STR),
        ("is_do_not_remember", BOOL),
        ("is_temporary_chat", BOOL),
        ("is_archived", BOOL),
        ("async_status", I64),
        ("extra", STR),  # JSON object of the top-level keys without a column of their own
    ),
    # One row per SSE event ([DONE] included, as type "done") or WebSocket stream item.
    "stream_events": _schema(
        ("flow_id", STR),
        ("seq", I64),
        ("at", TS),
        ("offset_ms", F64),
        ("event", STR),
        ("type", STR),
        ("message_id", STR),
        ("text", STR),
        ("data", STR),
        ("n_bytes", I64),
    ),
    # One row per latency beacon (POST /backend-api/lat/r): the page's own timing of one answer.
    "latency_beacons": _schema(
        ("flow_id", STR),
        ("sent_at", TS),
        ("server_request_id", STR),
        ("model", STR),
        ("preflight_time_ms", F64),
        ("count_tokens", F64),
        ("ts_first_token_ms", F64),
        ("ts_max_token_time_ms", F64),
        ("ts_mean_token_without_first_ms", F64),
        ("ts_median_token_without_first_ms", F64),
        ("ts_min_token_time_ms", F64),
        ("ts_p95_token_without_first_ms", F64),
        ("ts_p99_token_without_first_ms", F64),
        ("ts_std_dev_token_ms", F64),
        ("ts_total_request_ms", F64),
        ("extra", STR),
    ),
    # Segment (analytics.js) events sent through /ces/v1/<letter>; batches are exploded.
    "segment_events": _schema(
        ("flow_id", STR),
        ("sent_at", TS),
        ("host", STR),
        ("endpoint", STR),
        ("type", STR),
        ("event", STR),
        ("user_id", STR),
        ("anonymous_id", STR),
        ("message_id", STR),
        ("timestamp", TS),
        ("page_path", STR),
        ("conversation_id", STR),
        ("properties", STR),
        ("context", STR),
    ),
    # Statsig events sent to …/v1/rgstr.
    "statsig_events": _schema(
        ("flow_id", STR),
        ("sent_at", TS),
        ("host", STR),
        ("event_name", STR),
        ("user_id", STR),
        ("stable_id", STR),
        ("custom_ids", STR),
        ("time", TS),
        ("value", STR),
        ("metadata", STR),
        ("current_page", STR),
        ("conversation_id", STR),
        ("sdk_type", STR),
        ("sdk_version", STR),
        # The SDK session: the query's ``sid`` (js-client 3.x) or ``statsigMetadata.sessionID``.
        ("session_id", STR),
    ),
    # OpenAI-compatible API calls (/v1/chat/completions, /v1/responses), streamed or not.
    "api_calls": _schema(
        ("flow_id", STR),
        ("host", STR),
        ("endpoint", STR),
        ("model", STR),
        ("stream", BOOL),
        ("n_messages", I64),
        ("last_user_text", STR),
        ("response_text", STR),
        ("prompt_tokens", I64),
        ("completion_tokens", I64),
        ("total_tokens", I64),
        ("finish_reason", STR),
        ("response_id", STR),
        ("system_fingerprint", STR),
        ("status_code", I64),
        ("started_at", TS),
        ("ttft_ms", F64),
        ("e2e_ms", F64),
        ("n_events", I64),
        ("n_text_events", I64),
        ("request_json", STR),
        ("error", STR),
        # Reasoning (Responses API / Codex): kept apart from the visible text above.
        ("reasoning_text", STR),
        ("n_reasoning_events", I64),
        ("first_reasoning_ms", F64),
        ("reasoning_ms", F64),
        # A failed call's error code (``usage_limit_reached``, ``server_is_overloaded``) and the
        # status an error event carried inside a 200 stream.
        ("error_code", STR),
        ("error_status_code", I64),
        # The Codex CLI's request headers: they group calls into Codex sessions, threads and turns.
        ("codex_session_id", STR),
        ("codex_thread_id", STR),
        ("codex_turn_id", STR),
        ("codex_window_id", STR),
        ("client_request_id", STR),
        ("originator", STR),
        ("chatgpt_account_id", STR),
        ("codex_beta_features", STR),
        ("codex_turn_metadata", STR),
        ("extra", STR),
        # The server's own account of the call (Ollama's last line, nanoseconds made milliseconds).
        ("server_total_ms", F64),
        ("server_load_ms", F64),
        ("server_prompt_eval_count", I64),
        ("server_prompt_eval_ms", F64),
        ("server_eval_count", I64),
        ("server_eval_ms", F64),
        ("end_status", STR),
    ),
    # Every recognised flow that could not be fully parsed, and why.
    "errors": _schema(
        ("flow_id", STR),
        ("stage", STR),
        ("error", STR),
        ("at", TS),
    ),
    # One row per stop (POST …/stop_conversation) or stream-status read (GET …/conversation/<id>/stream_status).
    "stream_controls": _schema(
        ("flow_id", STR),
        ("kind", STR),
        ("conversation_id", STR),
        ("at", TS),
        ("status_code", I64),
        ("status", STR),
        ("last_message_id", STR),
        ("extra", STR),
    ),
    # One row per number in a v1 stream's perf_stats event (the server's own timings of one answer).
    "perf_stats": _schema(
        ("flow_id", STR),
        ("seq", I64),
        ("at", TS),
        ("conversation_id", STR),
        ("message_id", STR),
        ("metric", STR),
        ("value", F64),
    ),
    # One row per celsius conversation-update payload (2026: async tasks such as image generation).
    "conversation_updates": _schema(
        ("flow_id", STR),
        ("frame", I64),
        ("at", TS),
        ("conversation_id", STR),
        ("update_type", STR),
        ("async_task_id", STR),
        ("async_task_type", STR),
        ("message_id", STR),
        ("message_status", STR),
        ("extra", STR),
    ),
    # One row per GET /backend-api/files/download/<id> answer: the file's signed URL (redacted).
    "file_downloads": _schema(
        ("flow_id", STR),
        ("file_id", STR),
        ("status", STR),
        ("file_name", STR),
        ("download_url", STR),
        ("creation_time", TS),
        ("extra", STR),
        ("read_at", TS),
    ),
    # One row per observation of one usage limit window (Codex response headers, codex.rate_limits
    # events, the headers inside a wrapped error event).
    "rate_limits": _schema(
        ("flow_id", STR),
        ("at", TS),
        ("source", STR),
        ("limit", STR),
        ("limit_id", STR),
        ("window", STR),
        ("limit_name", STR),
        ("used_percent", F64),
        ("window_minutes", I64),
        ("reset_at", TS),
        ("plan_type", STR),
        ("credits", STR),
        ("extra", STR),
    ),
    # One row per event the Codex CLI posts to /backend-api/codex/analytics-events/events.
    "codex_analytics_events": _schema(
        ("flow_id", STR),
        ("sent_at", TS),
        ("seq", I64),
        ("event_type", STR),
        ("thread_id", STR),
        ("session_id", STR),
        ("turn_id", STR),
        ("model", STR),
        ("runtime", STR),
        ("critical_path_duration_ms", F64),
        ("critical_path_inference_ms", F64),
        ("critical_path_tools_ms", F64),
        ("params", STR),
    ),
    # One row per `analyze bench` run: what was run, against what, and its summary.
    "bench_runs": _schema(
        ("run_id", STR),
        ("started_at", TS),
        ("ended_at", TS),
        ("command", STR),
        ("base_url", STR),
        ("schedule", STR),
        ("knobs", STR),
        ("models", STR),
        ("seed", I64),
        ("n_requests", I64),
        ("degraded", BOOL),
        ("interrupted", BOOL),
        ("summary", STR),
    ),
    # One row per request an `analyze bench` run sent (its api_calls / stream_events share flow_id).
    "bench_requests": _schema(
        ("run_id", STR),
        ("flow_id", STR),
        ("session_id", STR),
        ("turn_index", I64),
        ("phase", STR),
        ("intended_at", TS),
        ("sent_at", TS),
        ("first_token_at", TS),
        ("first_visible_at", TS),
        ("ended_at", TS),
        ("schedule_lag_ms", F64),
        ("ttft_ms", F64),
        ("ttft_from_intended_ms", F64),
        ("ttfv_ms", F64),
        ("tpot_ms", F64),
        ("e2e_ms", F64),
        ("e2e_from_intended_ms", F64),
        ("output_tokens", I64),
        ("prompt_tokens", I64),
        ("context_tokens", I64),
        ("status_code", I64),
        ("ok", BOOL),
        ("error", STR),
        ("error_kind", STR),
        ("slo_ok", BOOL),
        ("output_tokens_source", STR),
        ("recorded_tokens", I64),
        ("recorded_tokens_source", STR),
    ),
    # One row per metric data point the page reports: Segment's /v1/m series, /ces/statsc/flush
    # counters and histograms, OpenTelemetry (OTLP/HTTP, JSON or protobuf) metrics.
    "telemetry_metrics": _schema(
        ("flow_id", STR),
        ("sent_at", TS),
        ("host", STR),
        ("endpoint", STR),
        ("source", STR),
        ("seq", I64),
        ("name", STR),
        ("metric_type", STR),
        ("value", F64),
        ("count", I64),
        ("sum", F64),
        ("min", F64),
        ("max", F64),
        ("unit", STR),
        ("time", TS),
        ("start_time", TS),
        ("attributes", STR),
        ("resource", STR),
        ("extra", STR),
    ),
    # One row per log record the page ships: Datadog browser logs (NDJSON), direct or forwarded
    # through /ces/v1/telemetry/intake?ddforward=/api/v2/logs.
    "telemetry_logs": _schema(
        ("flow_id", STR),
        ("sent_at", TS),
        ("host", STR),
        ("endpoint", STR),
        ("source", STR),
        ("seq", I64),
        ("time", TS),
        ("status", STR),
        ("service", STR),
        ("logger", STR),
        ("origin", STR),
        ("message", STR),
        ("session_id", STR),
        ("user_id", STR),
        ("view_url", STR),
        ("conversation_id", STR),
        ("attributes", STR),
    ),
}

# One row per capture run: a live mitmdump session, an import, a replay's or a bench run's output.
# Every row of every table carries its run's ``capture_id`` (the writer stamps it), so many runs
# written into one capture or one dataset root stay apart, and this table gives each its label.
TABLES["captures"] = _schema(
    ("capture_id", STR),
    ("label", STR),
    ("hostname", STR),
    ("started_at", TS),
    ("ended_at", TS),  # null until the run closes cleanly (a killed proxy leaves it null)
    ("chatwire_version", STR),
    ("source", STR),  # live | import | replay | bench | library
    ("partitioning", STR),  # none | date
)

# Every table ends with the capture run that wrote the row; parts written before the column
# existed read it as null (the reader fills missing columns).
CAPTURE_ID = "capture_id"
for _name, _schema_of in list(TABLES.items()):
    if _schema_of.get_field_index(CAPTURE_ID) < 0:
        TABLES[_name] = _schema_of.append(pa.field(CAPTURE_ID, STR))

TABLE_NAMES: tuple[str, ...] = tuple(TABLES)

# The tables of the first capture format. Every later table is missing from captures written
# before it existed: readers take a missing later table as empty (nothing of that kind was recorded
# then), while a capture missing one of these is incomplete.
FIRST_TABLES: frozenset[str] = frozenset({
    "flows", "conversation_turns", "messages", "conversation_reads", "stream_events", "latency_beacons",
    "segment_events", "statsig_events", "api_calls", "errors",
})


def empty_table(name: str) -> pa.Table:
    """An empty Arrow table with the schema of ``name``."""
    return TABLES[name].empty_table()


# Rows carry timestamps as float epoch seconds: they are read as float64, then converted in Arrow.
_FLOAT_SCHEMAS = {
    name: pa.schema([pa.field(f.name, F64 if f.type == TS else f.type) for f in schema])
    for name, schema in TABLES.items()
}
_NAMES = {name: frozenset(schema.names) for name, schema in TABLES.items()}


def rows_to_table(name: str, rows: list[dict], capture_id: str | None = None) -> pa.Table:
    """Build a table of ``name`` from row dicts; missing keys become nulls, unknown keys are an error.

    ``capture_id``: stamped on every row that carries none (``stamp_capture_id``)."""
    schema = TABLES[name]
    names = _NAMES[name]
    for row in rows:
        if not names.issuperset(row):
            raise KeyError(f"{name}: unknown column(s) {sorted(set(row) - names)}")
    table = pa.Table.from_pylist(rows, schema=_FLOAT_SCHEMAS[name])
    for index, field in enumerate(schema):
        if field.type == TS:
            micros = pc.cast(pc.round(pc.multiply(table.column(index), 1_000_000.0)), pa.int64())
            table = table.set_column(index, field, micros.cast(TS))
    return stamp_capture_id(table, capture_id) if capture_id is not None else table


def stamp_capture_id(table: pa.Table, capture_id: str) -> pa.Table:
    """``table`` with ``capture_id`` wherever its ``capture_id`` column is null: one constant
    column per part (``pa.repeat``), not a per-row update of the row dicts."""
    index = table.schema.get_field_index(CAPTURE_ID)
    if index < 0:
        return table
    column = table.column(index)
    if column.null_count == 0:
        return table
    constant = pa.repeat(pa.scalar(capture_id, STR), table.num_rows)
    stamped = constant if column.null_count == table.num_rows else pc.coalesce(column, constant)
    return table.set_column(index, table.schema.field(index), stamped)
