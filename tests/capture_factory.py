"""Build small, real captures for tests: row dicts in, a Parquet capture directory out.

Rows follow ``analyzer/schema.py`` (timestamps as float epoch seconds). The builders return
``dict[table, list[row]]`` fragments that ``merge`` combines and ``make_capture`` writes with the
project's own ``CaptureWriter``, so tests read captures exactly as the CLI does.

    rows = merge(
        turn("c1", flow_id="f1", at=T0, user_id="u1", user_text="hi", assistant_id="a1",
             assistant_text="hello", parent_id="client-created-root", title="Greeting"),
    )
    path = make_capture(tmp_path / "cap.parquet", rows)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

from analyzer.store import CaptureWriter

Rows = dict[str, list[dict]]

T0 = 1_735_812_000.0  # 2025-01-02 10:00:00 UTC: a fixed, readable epoch for fixtures


def make_capture(path: str | Path, rows: Mapping[str, Iterable[dict]] | None = None) -> Path:
    """Write ``rows`` (table name -> row dicts) as a capture at ``path`` and return the path."""
    path = Path(path)
    with CaptureWriter(path) as writer:
        writer.add({name: list(table_rows) for name, table_rows in (rows or {}).items()})
    return path


def merge(*fragments: Mapping[str, Iterable[dict]]) -> Rows:
    """Concatenate row fragments table by table."""
    out: Rows = defaultdict(list)
    for fragment in fragments:
        for name, table_rows in fragment.items():
            out[name].extend(table_rows)
    return dict(out)


def flow_row(flow_id: str, *, at: float, kind: str = "conversation", method: str = "POST",
             path: str = "/backend-api/conversation", duration_ms: float = 1500.0, **extra) -> dict:
    """A ``flows`` row for one HTTP flow to chatgpt.com."""
    return {
        "flow_id": flow_id, "kind": kind, "source": "test", "method": method, "scheme": "https",
        "host": "chatgpt.com", "port": 443, "path": path, "http_version": "HTTP/2.0",
        "status_code": 200, "started_at": at, "ended_at": at + duration_ms / 1000,
        "duration_ms": duration_ms, "streamed": kind == "conversation", **extra,
    }


def message_row(conversation_id: str | None, message_id: str, parent_id: str | None, role: str,
                text: str, *, source: str, flow_id: str, seen_at: float | None,
                create_time: float | None = None, status: str | None = "finished_successfully",
                model_slug: str | None = None, hidden: bool = False, content_type: str = "text",
                recipient: str = "all", **extra) -> dict:
    """One sighting of one message (a ``messages`` row)."""
    return {
        "conversation_id": conversation_id, "message_id": message_id, "parent_id": parent_id,
        "role": role, "content_type": content_type, "recipient": recipient, "text": text,
        "model_slug": model_slug, "create_time": create_time, "status": status,
        "end_turn": role == "assistant" and status == "finished_successfully" or None,
        "hidden": hidden, "source": source, "flow_id": flow_id, "seen_at": seen_at, **extra,
    }


def stream_event_rows(flow_id: str, message_id: str, text: str, *, first_at: float,
                      pieces: int = 3, gap_ms: float = 40.0, done: bool = True) -> list[dict]:
    """``stream_events`` rows of a v1 delta stream that sends ``text`` in ``pieces`` appends."""
    step = max(len(text) // pieces, 1)
    chunks = [text[i:i + step] for i in range(0, len(text), step)] or [""]
    rows = []
    for seq, chunk in enumerate(chunks):
        at = first_at + seq * gap_ms / 1000
        rows.append({"flow_id": flow_id, "seq": seq, "at": at, "offset_ms": None, "event": "delta",
                     "type": "delta", "message_id": message_id, "text": chunk, "n_bytes": 40 + len(chunk)})
    if done:
        rows.append({"flow_id": flow_id, "seq": len(chunks), "at": first_at + len(chunks) * gap_ms / 1000,
                     "type": "done", "n_bytes": 14})
    return rows


def turn(conversation_id: str, *, flow_id: str, at: float, assistant_id: str, assistant_text: str,
         user_id: str | None = None, user_text: str | None = None, parent_id: str | None = None,
         action: str = "next", model: str = "gpt-4o", ttft_ms: float = 800.0,
         status: str = "finished_successfully", title: str | None = None,
         stream_parent: bool = True, with_events: bool = True) -> Rows:
    """One conversation POST and its streamed answer, as the extractor would record it.

    The request carries the user message (none for ``continue``) with ``parent_id`` = the
    request's ``parent_message_id``; the stream echoes the user message and streams the
    assistant one (``status`` ``in_progress`` for a broken stream). ``stream_parent=False``
    leaves out the assistant's ``metadata.parent_id``.
    """
    first_token = at + ttft_ms / 1000
    done_at = first_token + 0.5
    rows: Rows = {"flows": [flow_row(flow_id, at=at, duration_ms=(done_at - at) * 1000)], "messages": []}
    if user_id is not None and action != "continue":
        rows["messages"].append(message_row(
            None if action == "next" and parent_id == "client-created-root" else conversation_id,
            user_id, parent_id, "user", user_text or "", source="request", flow_id=flow_id, seen_at=at,
            create_time=at, status=None))
        rows["messages"].append(message_row(
            conversation_id, user_id, parent_id, "user", user_text or "", source="stream",
            flow_id=flow_id, seen_at=first_token - 0.05, create_time=at))
    assistant_parent = (user_id if action != "continue" else parent_id) if stream_parent else None
    rows["messages"].append(message_row(
        conversation_id, assistant_id, assistant_parent, "assistant", assistant_text, source="stream",
        flow_id=flow_id, seen_at=done_at, create_time=first_token, status=status, model_slug=model))
    rows["conversation_turns"] = [{
        "flow_id": flow_id, "conversation_id": conversation_id, "action": action,
        "requested_model": model, "model_slug": model, "parent_message_id": parent_id,
        "user_message_id": user_id if action != "continue" else None,
        "user_text": user_text if action != "continue" else None,
        "assistant_message_id": assistant_id, "assistant_text": assistant_text,
        "stream_format": "v1", "status": status, "title": title, "started_at": at,
        "ttft_ms": ttft_ms, "e2e_ms": (done_at - at) * 1000, "path": "/backend-api/conversation",
    }]
    if with_events:
        rows["stream_events"] = stream_event_rows(flow_id, assistant_id, assistant_text,
                                                  first_at=first_token, done=status != "in_progress")
    return rows


def mapping_read(conversation_id: str, *, flow_id: str, at: float, nodes: Iterable[dict],
                 current_node: str | None, title: str | None = None) -> Rows:
    """A ``GET /backend-api/conversation/<id>`` read.

    ``nodes`` are dicts with ``id``, ``parent``, ``role``, ``text`` and optionally
    ``create_time``, ``model_slug``, ``status``, ``hidden``, ``content_type``, ``recipient``.
    The read itself becomes a ``conversation_reads`` row (title, current_node, read_at).
    """
    seen = at + 0.3
    messages = [
        message_row(conversation_id, n["id"], n.get("parent"), n["role"], n.get("text", ""),
                    source="mapping", flow_id=flow_id, seen_at=seen, create_time=n.get("create_time"),
                    status=n.get("status", "finished_successfully"), model_slug=n.get("model_slug"),
                    hidden=n.get("hidden", False), content_type=n.get("content_type", "text"),
                    recipient=n.get("recipient", "all"))
        for n in nodes
    ]
    return {
        "flows": [flow_row(flow_id, at=at, kind="conversation_read", method="GET",
                           path=f"/backend-api/conversation/{conversation_id}", duration_ms=300.0)],
        "messages": messages,
        "conversation_reads": [{"flow_id": flow_id, "conversation_id": conversation_id, "title": title,
                                "current_node": current_node, "n_nodes": len(messages) + 1,
                                "read_at": seen}],
    }
