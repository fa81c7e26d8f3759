"""Helpers shared by the extractors: bodies, JSON, headers and the per-chunk timing of a flow."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mitmproxy import http

from analyzer.json_codec import parse_json
from analyzer.recognise import is_stream_answer
from analyzer.redact import may_hold_secret_key, redact_json, redact_string
from analyzer.streams.decoding import BodyDecodeError, BodyDecoder, decode_body_bytes
from analyzer.streams.ndjson import NDJSONLine, NDJSONParser
from analyzer.streams.sse import SSEEvent, SSEParser

METADATA_KEY = "chatwire"
MAX_PARSE_BYTES = 64 * 1024 * 1024  # bodies above this are not parsed (an errors row says so)


class ExtractError(Exception):
    """A recognised flow whose body cannot be parsed; ``stage`` names the step that failed."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


def chatwire_meta(flow: http.HTTPFlow) -> dict:
    meta = flow.metadata.get(METADATA_KEY)
    return meta if isinstance(meta, dict) else {}


def header(message: http.Message | None, name: str) -> str | None:
    if message is None:
        return None
    value = message.headers.get(name)
    return value if value else None


def media_type(message: http.Message | None) -> str:
    value = header(message, "content-type") or ""
    return value.split(";", 1)[0].strip().lower()


def is_event_stream(flow: http.HTTPFlow) -> bool:
    """The response is an event stream (see ``analyzer.recognise.is_stream_answer``)."""
    if flow.response is None:
        return False
    return is_stream_answer(header(flow.response, "content-type"), header(flow.request, "accept"))


def request_start(flow: http.HTTPFlow) -> float:
    return float(flow.request.timestamp_start)


def body_bytes(message: http.Message, stage: str) -> bytes:
    """The decoded body (content-encoding undone) or an ExtractError."""
    raw = message.raw_content
    if raw is None:
        raise ExtractError(stage, "body was not recorded")
    if len(raw) > MAX_PARSE_BYTES:
        raise ExtractError(stage, f"body of {len(raw)} bytes is too large to parse")
    try:
        return decode_body_bytes(raw, header(message, "content-encoding"))
    except BodyDecodeError as exc:
        raise ExtractError(stage, str(exc)) from exc


def json_body(message: http.Message, stage: str) -> Any:
    data = body_bytes(message, stage)
    if not data.strip():
        raise ExtractError(stage, "empty body")
    try:
        return parse_json(data)
    except ValueError as exc:
        raise ExtractError(stage, f"body is not JSON: {exc}") from exc


def to_json(value: Any, redact: bool) -> str | None:
    if value is None:
        return None
    if redact:
        value = redact_json(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def event_data(data: str, redact: bool) -> str:
    """An event's raw data for the ``data`` column: secrets scrubbed, shape kept."""
    if not redact:
        return data
    if may_hold_secret_key(data):  # only then is a JSON round trip worth it
        try:
            # json, not parse_json: the text is written back, every number exactly as it came
            return json.dumps(redact_json(json.loads(data)), ensure_ascii=False, separators=(",", ":"))
        except ValueError:
            pass
    return redact_string(data)


@dataclass
class TimedEvents:
    events: list[SSEEvent]  # ``at`` is None throughout when the flow has no per-chunk record
    error: str | None = None


def _chunks(flow: http.HTTPFlow, raw: bytes) -> Iterator[tuple[bytes, float | None]]:
    """The body cut back into the chunks it arrived in, with their arrival times."""
    chunks = chatwire_meta(flow).get("chunks")
    if chunks and sum(int(n) for _, n in chunks) == len(raw):
        pos = 0
        for at, n in chunks:
            n = int(n)
            yield raw[pos : pos + n], float(at)
            pos += n
    else:
        yield raw, None


def _timed_parse(flow: http.HTTPFlow, parser, as_text: bool) -> tuple[list, str | None]:
    """Decode the response chunk by chunk and feed ``parser`` (SSE or NDJSON), each item stamped
    with the arrival of the chunk that completed it; (items, error)."""
    response = flow.response
    raw = (response.raw_content if response is not None else None) or b""
    if len(raw) > MAX_PARSE_BYTES:
        return [], f"stream of {len(raw)} bytes is too large to parse"
    items: list = []
    last_at: float | None = None
    try:
        decoder = BodyDecoder(header(response, "content-encoding"))
        decode = decoder.decode if as_text else decoder.decode_bytes
        for piece, at in _chunks(flow, raw):
            last_at = at
            items.extend(parser.feed(decode(piece), at))
        items.extend(parser.feed(decoder.finish() if as_text else decoder.finish_bytes(), last_at))
    except BodyDecodeError as exc:
        items.extend(parser.close(last_at))
        return items, str(exc)
    items.extend(parser.close(last_at))
    return items, None


def response_events(flow: http.HTTPFlow) -> TimedEvents:
    """Every SSE event of the response, each stamped with the arrival of the chunk that completed it."""
    events, error = _timed_parse(flow, SSEParser(), as_text=True)
    return TimedEvents(events, error)


@dataclass
class TimedLines:
    lines: list[NDJSONLine]  # ``at`` is None throughout when the flow has no per-chunk record
    error: str | None = None


def response_lines(flow: http.HTTPFlow) -> TimedLines:
    """Every NDJSON line of the response, each stamped with the arrival of the chunk that completed it."""
    lines, error = _timed_parse(flow, NDJSONParser(), as_text=False)
    return TimedLines(lines, error)


def offset_ms(at: float | None, start: float) -> float | None:
    return None if at is None else (at - start) * 1000.0


def parse_time(value: Any) -> float | None:
    """Epoch seconds from an ISO-8601 string, epoch seconds, or epoch milliseconds."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) / 1000.0 if value > 1e11 else float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return parse_time(float(text))
        except ValueError:
            pass
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def as_number(value: Any, kind: type[int] | type[float]) -> int | float | None:
    """A JSON value as an int or float for a typed column; None for anything else (bools included)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return kind(value)
    except (TypeError, ValueError, OverflowError):
        return None


def str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, default=str)
