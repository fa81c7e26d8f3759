"""The 2026 history reads (guide 6b, 6e): paged conversation reads and file-download answers.

``GET …/conversations/<id>?num_turns=N`` (the newest page) and
``GET …/conversations/<id>/messages?before=<cursor>&num_turns=N`` (older pages) answer a flat
``messages`` list with ``page_info`` cursors. Each page is a ``conversation_reads`` row
(``read_type = page``) and its messages ``messages`` rows with ``source = page``.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from mitmproxy import http

from analyzer.extract.common import ExtractError, as_number, json_body, parse_time, str_or_none, to_json
from analyzer.extract.conversation import message_row
from analyzer.extract.history_fields import read_metadata
from analyzer.extract.rows import Rows
from analyzer.recognise import conversation_id_from_page, file_id_from_download
from analyzer.redact import redact_query


def page_parent(message: dict, previous: str | None) -> str | None:
    """A page message's parent: its own ``parent_id``, else ``metadata.parent_id``, else (inferred)
    the message before it in the page, which lists one branch oldest first."""
    metadata = message.get("metadata") if isinstance(message.get("metadata"), dict) else {}
    for value in (message.get("parent_id"), metadata.get("parent_id")):
        if isinstance(value, str) and value:
            return value
    return previous


def _unwrap(entry: dict) -> dict:
    """A page entry as a message. The source lists message objects; a mapping-style node
    ``{id, message, parent}`` is read too (its ``parent`` as the message's own ``parent_id``)."""
    if "author" not in entry and isinstance(entry.get("message"), dict):
        message = dict(entry["message"])
        message.setdefault("id", entry.get("id"))
        if entry.get("parent") and not message.get("parent_id"):
            message["parent_id"] = entry["parent"]
        return message
    return entry


def _query(flow: http.HTTPFlow) -> dict[str, str]:
    return dict(parse_qsl(flow.request.path.partition("?")[2], keep_blank_values=True))


def extract_conversation_page(flow: http.HTTPFlow, rows: Rows, redact: bool) -> None:
    if flow.response is None or flow.response.status_code >= 400:
        return  # like a mapping read: nothing to record but the flow row
    body = json_body(flow.response, "response")
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise ExtractError("response", "history page without a messages list")
    query = _query(flow)
    page_info = body.get("page_info") if isinstance(body.get("page_info"), dict) else {}
    conversation_id = str_or_none(body.get("conversation_id") or body.get("id")) or conversation_id_from_page(
        flow.request.path)
    read_at = flow.response.timestamp_end
    messages = [_unwrap(m) for m in body["messages"] if isinstance(m, dict)]
    row = read_metadata(body, redact)
    extra_page = {k: v for k, v in page_info.items()
                  if k not in ("start_cursor", "end_cursor", "has_previous_page", "has_next_page")}
    if extra_page:  # unknown page_info keys are kept with the other unknown keys
        row["extra"] = to_json({**_loads(row.get("extra")), "page_info": extra_page}, redact)
    row.update(
        flow_id=flow.id,
        conversation_id=conversation_id,
        read_type="page",
        n_messages=len(messages),
        num_turns=as_number(query.get("num_turns"), int),
        before_cursor=query.get("before"),
        start_cursor=str_or_none(page_info.get("start_cursor")),
        end_cursor=str_or_none(page_info.get("end_cursor")),
        has_previous_page=_bool(page_info.get("has_previous_page")),
        has_next_page=_bool(page_info.get("has_next_page")),
        read_at=read_at,
    )
    rows["conversation_reads"].append(row)
    previous: str | None = None
    for message in messages:
        parent = page_parent(message, previous)
        rows["messages"].append(
            message_row(message, conversation_id=conversation_id, parent_id=parent, source="page",
                        flow_id=flow.id, seen_at=read_at)
        )
        previous = str_or_none(message.get("id")) or previous


def extract_file_download(flow: http.HTTPFlow, rows: Rows, redact: bool) -> None:
    """``GET /backend-api/files/download/<id>`` → ``{status, download_url, file_name, …}``.

    The URL is signed (``sig=…``, a credential): with redaction on, its query goes through the
    same redaction as ``flows.query``. The file itself is never fetched.
    """
    if flow.response is None or flow.response.status_code >= 400:
        return
    body = json_body(flow.response, "response")
    if not isinstance(body, dict):
        raise ExtractError("response", "file download answer is not a JSON object")
    url = str_or_none(body.get("download_url"))
    if url and redact:
        url = redact_url(url)
    known = {"status", "download_url", "file_name", "creation_time"}
    extra = {k: v for k, v in body.items() if k not in known}
    rows["file_downloads"].append(
        {
            "flow_id": flow.id,
            "file_id": file_id_from_download(flow.request.path),
            "status": str_or_none(body.get("status")),
            "file_name": str_or_none(body.get("file_name")),
            "download_url": url,
            "creation_time": parse_time(body.get("creation_time")),
            "extra": to_json(extra, redact) if extra else None,
            "read_at": flow.response.timestamp_end,
        }
    )


def redact_url(url: str) -> str:
    """``url`` with its query's secret parameters (``sig``, ``token``, …) redacted."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_query(url)
    return urlunsplit(parts._replace(query=redact_query(parts.query)))


def _bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _loads(text: str | None) -> dict:
    return json.loads(text) if text else {}
