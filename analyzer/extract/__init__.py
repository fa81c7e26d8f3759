"""Extraction: one flow in, rows for every table out. One extractor per kind.

``extract_flow`` is the single entry point used by the live addon, the flow-file import and the
HAR import alike. It never raises: whatever cannot be parsed becomes an ``errors`` row.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable

from mitmproxy import http

from analyzer import recognise as kinds
from analyzer.extract.analytics import extract_segment, extract_statsig
from analyzer.extract.api import extract_api_call
from analyzer.extract.beacon import extract_beacon
from analyzer.extract.codex import extract_codex_analytics, extract_codex_read, extract_mcp
from analyzer.extract.codex_websocket import CodexSocketCalls, extract_codex_websocket, is_codex_websocket
from analyzer.extract.common import ExtractError
from analyzer.extract.conversation import extract_conversation_read, extract_conversation_turn
from analyzer.extract.flows import flow_row
from analyzer.extract.history import extract_conversation_page, extract_file_download
from analyzer.extract.ollama import extract_ollama
from analyzer.extract.rows import Rows, new_rows
from analyzer.extract.stream_control import extract_stream_control
from analyzer.extract.telemetry import (
    extract_datadog_logs,
    extract_otlp_metrics,
    extract_segment_metrics,
    extract_statsc,
)
from analyzer.extract.websocket import WebSocketAnswers, extract_websocket, is_conversation_websocket
from analyzer.redact import redact_rows

log = logging.getLogger(__name__)

Extractor = Callable[[http.HTTPFlow, Rows, bool], None]

EXTRACTORS: dict[str, Extractor] = {
    kinds.CONVERSATION: extract_conversation_turn,
    kinds.CONVERSATION_READ: extract_conversation_read,
    kinds.CONVERSATION_WEBSOCKET: extract_websocket,
    kinds.LATENCY_BEACON: extract_beacon,
    kinds.SEGMENT: extract_segment,
    kinds.STATSIG: extract_statsig,
    kinds.API: extract_api_call,
    kinds.STREAM_CONTROL: extract_stream_control,
    kinds.CONVERSATION_PAGE: extract_conversation_page,
    kinds.FILE_DOWNLOAD: extract_file_download,
    kinds.CODEX_ANALYTICS: extract_codex_analytics,
    kinds.MCP: extract_mcp,
    kinds.CODEX_READ: extract_codex_read,
    kinds.SEGMENT_METRICS: extract_segment_metrics,
    kinds.STATSC: extract_statsc,
    kinds.OTLP_METRICS: extract_otlp_metrics,
    kinds.DATADOG_LOGS: extract_datadog_logs,
    kinds.OLLAMA: extract_ollama,
    kinds.CODEX_WEBSOCKET: extract_codex_websocket,
}

__all__ = ["EXTRACTORS", "CodexSocketCalls", "ExtractError", "Rows", "WebSocketAnswers", "extract_finished_answers", "extract_flow",
           "flow_kind", "new_rows"]


def flow_kind(flow: http.HTTPFlow) -> str | None:
    """The kind of a flow: by method and path, or by frame content for WebSockets."""
    if flow.websocket is not None:
        if is_codex_websocket(flow):
            return kinds.CODEX_WEBSOCKET
        return kinds.CONVERSATION_WEBSOCKET if is_conversation_websocket(flow) else None
    return kinds.recognise(flow.request.method, flow.request.path)


def extract_finished_answers(answers: WebSocketAnswers | CodexSocketCalls, *, redact: bool = True) -> Rows:
    """Rows of the answers a still-open WebSocket has finished since the last call (live capture)."""
    rows = new_rows()
    try:
        answers.feed()
        answers.rows(rows, redact)
    except Exception as exc:  # the socket's end retries with everything; note it and go on
        log.debug("websocket progress of %s failed: %s", answers.flow.id, exc)
        return new_rows()
    if redact:
        redact_rows(rows)
    return rows


def extract_flow(flow: http.HTTPFlow, *, source: str, redact: bool = True, all_flows: bool = False,
                 websocket_answers: WebSocketAnswers | CodexSocketCalls | None = None) -> Rows:
    """Rows for every table from one finished flow (empty when the flow is not ours).

    ``websocket_answers``: the live pipeline's reader of this socket, whose answers already given
    out (as they finished) are not given again."""
    rows = new_rows()
    try:
        kind = flow_kind(flow)
    except Exception as exc:  # never let a strange flow escape
        from analyzer.inert import inert  # here, not at the top: this import block is busy

        log.warning("chatwire: could not recognise flow %s: %s", inert(flow.id), inert(exc))
        kind = None
    if kind is None and not all_flows:
        return rows
    try:
        rows["flows"].append(flow_row(flow, kind or kinds.OTHER, source, redact))
    except Exception as exc:
        rows["errors"].append({"flow_id": flow.id, "stage": "flow", "error": f"{type(exc).__name__}: {exc}"})
    extractor = EXTRACTORS.get(kind) if kind else None
    if kind in (kinds.CONVERSATION_WEBSOCKET, kinds.CODEX_WEBSOCKET) and websocket_answers is not None:
        def extractor(f: http.HTTPFlow, r: Rows, redact_: bool) -> None:
            websocket_answers.feed()
            websocket_answers.rows(r, redact_, final=True)
    if extractor is not None:
        # A failing extractor never costs the flow row or other flows: the rows it produced
        # before failing are kept, and an errors row says where it stopped.
        partial = new_rows()
        try:
            extractor(flow, partial, redact)
        except ExtractError as exc:
            partial["errors"].append({"flow_id": flow.id, "stage": exc.stage, "error": str(exc)})
        except Exception as exc:
            log.debug("extractor %s failed on %s:\n%s", kind, flow.id, traceback.format_exc())
            partial["errors"].append(
                {"flow_id": flow.id, "stage": kind, "error": f"{type(exc).__name__}: {exc}"}
            )
        for name, table_rows in partial.items():
            rows[name].extend(table_rows)
    now = flow.request.timestamp_start
    for error in rows["errors"]:
        error.setdefault("at", now)
    if redact:
        redact_rows(rows)
    return rows
