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
    ),
    # One row per conversation read (GET …/conversation/<id> with a mapping): the tree's metadata.
    "conversation_reads": _schema(
        ("flow_id", STR),
        ("conversation_id", STR),
        ("title", STR),
        ("create_time", TS),
        ("update_time", TS),
        ("current_node", STR),
        ("n_nodes", I64),
        ("read_at", TS),
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
}

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


def rows_to_table(name: str, rows: list[dict]) -> pa.Table:
    """Build a table of ``name`` from row dicts; missing keys become nulls, unknown keys are an error."""
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
    return table
