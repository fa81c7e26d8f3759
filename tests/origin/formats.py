"""Wire bytes of chatgpt.com and the OpenAI API, as the field guide (docs: traffic formats) describes them.

Pure functions and plain data: no sockets, no clocks (callers pass ``now``), no randomness except
what is derived from the user text. The origin server (``tests.origin.server``) strings these
together; tests use them to know what the wire must carry.

A stream is a list of :class:`WireEvent`: the exact bytes of one SSE event (or WebSocket frame) and
the assistant text it adds, so that a schedule can put text events at known times and a test can
check what a parser made of them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Any

# Words of the deterministic answers. A few non-ASCII ones so that multi-byte UTF-8 characters
# get split across chunk and compression boundaries.
VOCAB: tuple[str, ...] = (
    "the", "model", "answers", "with", "plain", "words", "that", "follow", "from", "your",
    "question", "and", "a", "small", "fixed", "list", "of", "tokens", "streams", "back",
    "slowly", "so", "every", "timing", "can", "be", "measured", "against", "origin", "clock",
    "café", "naïve", "über", "résumé", "—", "🙂",
)

LEGACY_MODEL = "text-davinci-002-render-sha"
V1_DEFAULT_MODEL = "gpt-5-2"
# What server_ste_metadata reports when the request asked for "auto": the routed model differs
# from the slug on the message, as on the real site.
SERVER_MODEL_FOR_AUTO = "i-mini"

# JWT-shaped secrets the server hands out (resume_conversation_token, the 2024 wss access token).
# Constant so that a test can scan captured bytes for them.
RESUME_TOKEN = (
    "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJjb25kdWl0X3V1aWQiOiJvcmlnaW4tdGVzdC1yZXN1bWUiLCJjbHVzdGVyIjoidGVzdCJ9."
    "UmVzdW1lVG9rZW5TZWNyZXRPcmlnaW5UZXN0MDAwMQ"
)
SERVER_SECRETS: tuple[str, ...] = (RESUME_TOKEN,)


@dataclass(frozen=True)
class WireEvent:
    """One SSE event (or WebSocket frame) as bytes, and the assistant text it adds ("" if none)."""

    data: bytes
    text: str = ""
    kind: str = ""

    @property
    def is_text(self) -> bool:
        return bool(self.text)


# ---------------------------------------------------------------------------------------------
# Deterministic answers


def _rng(*parts: object) -> random.Random:
    seed = hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()
    return random.Random(seed)


def answer_tokens(user_text: str, variant: int | str = 0, n: int | None = None) -> list[str]:
    """The answer to ``user_text`` as tokens: words, every one after the first with its leading space."""
    rng = _rng("answer", variant, user_text)
    count = n if n is not None else 8 + rng.randrange(9)
    words = [rng.choice(VOCAB) for _ in range(max(count, 1))]
    tokens = [words[0].capitalize()] + [" " + w for w in words[1:]]
    tokens[-1] += "."
    return tokens


def thought_tokens(user_text: str) -> list[str]:
    """A short chain of 'thoughts' for the reasoning variant."""
    rng = _rng("thoughts", user_text)
    words = [rng.choice(VOCAB) for _ in range(5)]
    return ["Thinking"] + [" " + w for w in words]


def title_for(user_text: str) -> str:
    """The generated title of a chat that starts with ``user_text``."""
    words = user_text.split()[:4] or ["New", "chat"]
    return " ".join(w.capitalize() for w in words)


def count_words(text: str) -> int:
    return len(text.split())


# ---------------------------------------------------------------------------------------------
# SSE framing


def sse(data: Any, event: str | None = None, *, ensure_ascii: bool = True) -> bytes:
    """One SSE event; ``data`` is JSON-encoded unless it is already a str (e.g. ``[DONE]``)."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=ensure_ascii)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


DONE = WireEvent(b"data: [DONE]\n\n", kind="done")


# ---------------------------------------------------------------------------------------------
# Messages


def make_message(
    message_id: str,
    role: str,
    text: str,
    *,
    create_time: float | None,
    status: str = "finished_successfully",
    end_turn: bool | None = None,
    metadata: dict | None = None,
    content_type: str = "text",
    recipient: str = "all",
    weight: float = 1.0,
    channel: str | None = None,
) -> dict:
    """A message object as the backend-api serialises it."""
    if content_type == "thoughts":
        content: dict = {"content_type": "thoughts", "thoughts": [{"summary": "Thinking", "content": text}],
                         "source_analysis_msg_id": message_id}
    elif content_type == "reasoning_recap":
        content = {"content_type": "reasoning_recap", "content": text}
    else:
        content = {"content_type": content_type, "parts": [text]}
    return {
        "id": message_id,
        "author": {"role": role, "name": None, "metadata": {}},
        "create_time": create_time,
        "update_time": None,
        "content": content,
        "status": status,
        "end_turn": end_turn,
        "weight": weight,
        "metadata": metadata if metadata is not None else {},
        "recipient": recipient,
        "channel": channel,
    }


def system_message(message_id: str) -> dict:
    """The hidden system message at the top of every chat."""
    return make_message(message_id, "system", "", create_time=None, end_turn=True, weight=0.0,
                        metadata={"is_visually_hidden_from_conversation": True})


def user_message(message_id: str, text: str, *, parent_id: str | None, create_time: float) -> dict:
    return make_message(message_id, "user", text, create_time=create_time,
                        metadata={"parent_id": parent_id, "message_type": None})


@dataclass
class Turn:
    """Everything one streamed answer needs: who, what, and the messages echoed before it."""

    conversation_id: str
    assistant_id: str
    assistant_parent: str
    tokens: list[str]
    create_time: float
    model_slug: str
    server_model_slug: str
    system: dict | None = None          # echoed hidden system message (new chat)
    user: dict | None = None            # echoed user message (absent for continue)
    prefix: str = ""                    # text the message already had (continue)
    title: str | None = None            # set on the first turn of a chat
    finish_type: str = "stop"           # or "max_tokens"
    message_type: str = "next"          # next | variant | continue
    thoughts: list[str] = field(default_factory=list)  # reasoning variant
    thoughts_id: str | None = None
    recap_id: str | None = None
    turn_exchange_id: str = ""

    @property
    def text(self) -> str:
        return self.prefix + "".join(self.tokens)

    @property
    def answer_parent(self) -> str:
        """Parent of the visible answer: the recap when the model reasoned first."""
        return self.recap_id if self.thoughts and self.recap_id else self.assistant_parent

    def assistant_metadata(self, *, final: bool) -> dict:
        meta: dict = {"message_type": self.message_type, "model_slug": self.model_slug,
                      "default_model_slug": "auto", "parent_id": self.answer_parent, "citations": []}
        if final:
            meta["finish_details"] = {"type": self.finish_type}
            meta["is_complete"] = True
        return meta

    def final_assistant(self) -> dict:
        """The answer as it stands after the stream: what the mapping holds."""
        return make_message(self.assistant_id, "assistant", self.text, create_time=self.create_time,
                            end_turn=self.finish_type == "stop",
                            metadata=self.assistant_metadata(final=True))

    def thoughts_message(self, *, final: bool) -> dict:
        return make_message(self.thoughts_id or "", "assistant", "".join(self.thoughts) if final else "",
                            create_time=self.create_time, content_type="thoughts",
                            status="finished_successfully" if final else "in_progress",
                            metadata={"parent_id": self.assistant_parent, "model_slug": self.model_slug},
                            channel="analysis")

    def recap_message(self) -> dict:
        return make_message(self.recap_id or "", "assistant", "Thought for 1s", create_time=self.create_time,
                            content_type="reasoning_recap",
                            metadata={"parent_id": self.thoughts_id, "model_slug": self.model_slug})


# ---------------------------------------------------------------------------------------------
# 1a. legacy cumulative snapshots


def legacy_events(turn: Turn) -> list[WireEvent]:
    """A legacy (to late 2024) stream: every event repeats the whole message, ends with ``[DONE]``."""
    cid = turn.conversation_id

    def env(message: dict) -> bytes:
        # Raw UTF-8 (no \\u escapes) so multi-byte characters reach the wire as such.
        return sse({"message": message, "conversation_id": cid, "error": None}, ensure_ascii=False)

    out: list[WireEvent] = []
    if turn.system is not None:
        out.append(WireEvent(env(turn.system), kind="system"))
    if turn.user is not None:
        out.append(WireEvent(env(turn.user), kind="user"))

    def snapshot(text: str, *, status: str = "in_progress", end_turn: bool | None = None,
                 final: bool = False, extra: dict | None = None) -> bytes:
        meta = turn.assistant_metadata(final=final)
        if extra:
            meta.update(extra)
        msg = make_message(turn.assistant_id, "assistant", text, create_time=turn.create_time,
                           status=status, end_turn=end_turn, metadata=meta)
        return env(msg)

    text = turn.prefix
    out.append(WireEvent(snapshot(text), kind="snapshot"))  # the empty (or continued) start
    repeat_after = max(len(turn.tokens) // 2, 1)
    for i, tok in enumerate(turn.tokens, 1):
        text += tok
        out.append(WireEvent(snapshot(text), text=tok, kind="snapshot"))
        if i == repeat_after:
            # A metadata-only update: the same text again, which is not a text event.
            out.append(WireEvent(snapshot(text, extra={"citations": [], "content_references": []}),
                                 kind="snapshot"))
    out.append(WireEvent(snapshot(text, status="finished_successfully",
                                  end_turn=turn.finish_type == "stop", final=True), kind="snapshot"))
    if turn.title:
        out.append(WireEvent(sse({"type": "title_generation", "title": turn.title, "conversation_id": cid}),
                             kind="title_generation"))
    out.append(DONE)
    return out


# ---------------------------------------------------------------------------------------------
# 1b. v1 delta encoding


def _delta(obj: dict) -> bytes:
    return sse(obj, "delta")


def v1_head(turn: Turn) -> list[WireEvent]:
    """The start of a v1 stream up to (not including) the assistant: encoding, token, echoes."""
    cid = turn.conversation_id
    out = [
        WireEvent(b'event: delta_encoding\ndata: "v1"\n\n', kind="delta_encoding"),
        WireEvent(sse({"type": "resume_conversation_token", "kind": "conduit", "token": RESUME_TOKEN,
                       "conversation_id": cid}), kind="resume_conversation_token"),
    ]
    counter = 0
    first = True
    for msg in (turn.system, turn.user):
        if msg is None:
            continue
        body: dict = {"v": {"message": msg, "conversation_id": cid, "error": None}, "c": counter}
        if first:
            body = {"p": "", "o": "add", **body}
            first = False
        out.append(WireEvent(_delta(body), kind="delta"))
        counter += 1
    if turn.user is not None:
        out.append(WireEvent(sse({"type": "input_message", "input_message": turn.user, "conversation_id": cid}),
                             kind="input_message"))
    return out


def _first_counter(turn: Turn) -> int:
    return (turn.system is not None) + (turn.user is not None)


def v1_body(turn: Turn, *, counter: int | None = None, explicit_add: bool = False) -> list[WireEvent]:
    """The assistant part of a v1 stream, from its ``add`` to ``[DONE]``."""
    cid = turn.conversation_id
    c = _first_counter(turn) if counter is None else counter
    out: list[WireEvent] = []

    def add(message: dict) -> WireEvent:
        nonlocal c
        body: dict = {"v": {"message": message, "conversation_id": cid, "error": None}, "c": c}
        if explicit_add:
            body = {"p": "", "o": "add", **body}
        c += 1
        return WireEvent(_delta(body), kind="delta")

    if turn.thoughts:
        out.append(add(turn.thoughts_message(final=False)))
        path = "/message/content/thoughts/0/content"
        for i, tok in enumerate(turn.thoughts):
            obj = {"p": path, "o": "append", "v": tok} if i == 0 else {"v": tok}
            out.append(WireEvent(_delta(obj), kind="thought"))
        out.append(WireEvent(_delta({"p": "", "o": "patch", "v": [
            {"p": "/message/status", "o": "replace", "v": "finished_successfully"}]}), kind="delta"))
        out.append(add(turn.recap_message()))

    start = make_message(turn.assistant_id, "assistant", turn.prefix, create_time=turn.create_time,
                         status="in_progress", metadata=turn.assistant_metadata(final=False))
    out.append(add(start))
    out.append(WireEvent(sse({"type": "message_marker", "conversation_id": cid, "message_id": turn.assistant_id,
                              "marker": "user_visible_token", "event": "first"}), kind="message_marker"))
    tokens = turn.tokens
    path = "/message/content/parts/0"
    for i, tok in enumerate(tokens[:-1]):
        obj = {"p": path, "o": "append", "v": tok} if i == 0 else {"v": tok}
        out.append(WireEvent(_delta(obj), text=tok, kind="delta"))
    last = tokens[-1] if tokens else ""
    patch = [
        {"p": path, "o": "append", "v": last},
        {"p": "/message/status", "o": "replace", "v": "finished_successfully"},
        {"p": "/message/end_turn", "o": "replace", "v": turn.finish_type == "stop"},
        {"p": "/message/metadata", "o": "append",
         "v": {"finish_details": {"type": turn.finish_type}, "is_complete": True}},
    ]
    out.append(WireEvent(_delta({"p": "", "o": "patch", "v": patch}), text=last, kind="delta"))
    if turn.title:
        out.append(WireEvent(sse({"type": "title_generation", "title": turn.title, "conversation_id": cid}),
                             kind="title_generation"))
    out.append(WireEvent(sse({"type": "server_ste_metadata", "metadata": {
        "plan_type": "free", "user_agent": "web_desktop", "fast_convo": True, "warmup_state": "warm",
        "is_first_turn": bool(turn.title), "cluster_region": "testregion", "model_slug": turn.server_model_slug,
        "message_id": turn.assistant_id, "turn_exchange_id": turn.turn_exchange_id,
        "did_auto_switch_to_reasoning": bool(turn.thoughts)}, "conversation_id": cid}),
        kind="server_ste_metadata"))
    out.append(WireEvent(sse({"type": "message_stream_complete", "conversation_id": cid}),
                         kind="message_stream_complete"))
    out.append(DONE)
    return out


def v1_events(turn: Turn) -> list[WireEvent]:
    """A whole v1 delta-encoded stream."""
    return v1_head(turn) + v1_body(turn)


def v1_events_2026(turn: Turn, *, first_ms: float, gap_ms: float) -> list[WireEvent]:
    """A v1 stream with the 2026 additions of guide 6d interleaved (real-samples/2026, live observations).

    A ``topic`` resume token; ``safety_review_update`` on then off; ``conversation_async_status``;
    the answer first declared under the request's parent and moved under its user message by
    ``streaming_parent_patch``; a ``remove`` delta (after which the next delta must name its ``p``
    and ``o`` again: they carry over); ``content_references_patch``,
    ``writing_blocks_metadata_patch``, ``toast``, ``perf_stats`` (the scheduled first-token and
    total times, ``first_ms`` / ``gap_ms`` as the server would know them), ``main_stream_complete``
    and a beacon event. Only ``safety_review_update`` has a documented shape; the others' fields
    are this origin's guess and extractors must keep them whatever they hold.
    """
    cid, mid = turn.conversation_id, turn.assistant_id
    head = v1_head(turn)
    head[1] = WireEvent(sse({"type": "resume_conversation_token", "kind": "topic", "token": RESUME_TOKEN,
                             "conversation_id": cid, "topic_id": celsius_topic(cid, turn.turn_exchange_id)}),
                        kind="resume_conversation_token")
    out = list(head)
    out.append(WireEvent(sse({"type": "safety_review_update", "active": True, "conversation_id": cid,
                              "message": "Reviewing this request", "protection_type": "cyber"}),
                         kind="safety_review_update"))
    out.append(WireEvent(sse({"type": "conversation_async_status", "conversation_id": cid, "async_status": 3}),
                         kind="conversation_async_status"))
    c = _first_counter(turn)
    declared = dict(turn.assistant_metadata(final=False))
    user_parent = ((turn.user or {}).get("metadata") or {}).get("parent_id")
    declared["parent_id"] = user_parent or turn.answer_parent
    start = make_message(mid, "assistant", turn.prefix, create_time=turn.create_time, status="in_progress",
                         metadata=declared)
    out.append(WireEvent(_delta({"v": {"message": start, "conversation_id": cid, "error": None}, "c": c}),
                         kind="delta"))
    out.append(WireEvent(sse({"type": "streaming_parent_patch", "conversation_id": cid, "logical_answer_id": mid,
                              "revision": 1, "updates": [{"message_id": mid,
                                                          "streaming_parent_id": turn.answer_parent}]}),
                         kind="streaming_parent_patch"))
    out.append(WireEvent(sse({"type": "message_marker", "conversation_id": cid, "message_id": mid,
                              "marker": "user_visible_token", "event": "first"}), kind="message_marker"))
    path = "/message/content/parts/0"
    tokens = turn.tokens
    half = max(len(tokens) // 2, 1)
    for i, tok in enumerate(tokens[:-1]):
        if i in (0, 1, half):  # the first, and the first after the add / the remove: p and o named again
            obj: dict = {"p": path, "o": "append", "v": tok}
        else:
            obj = {"v": tok}
        out.append(WireEvent(_delta(obj), text=tok, kind="delta"))
        if i == 0:
            out.append(WireEvent(sse({"type": "safety_review_update", "active": False, "conversation_id": cid,
                                      "protection_type": "cyber"}), kind="safety_review_update"))
            out.append(WireEvent(_delta({"p": "/message/metadata/streaming_hint", "o": "add", "v": "drafting",
                                         "c": c}), kind="delta"))
        if i == half - 1:
            out.append(WireEvent(_delta({"p": "/message/metadata/streaming_hint", "o": "remove"}), kind="delta"))
            out.append(WireEvent(sse({"type": "content_references_patch", "conversation_id": cid, "message_id": mid,
                                      "patches": [{"p": "/content_references", "o": "append", "v": [
                                          {"type": "webpage", "title": "Origin test page",
                                           "url": "https://example.org/origin-test"}]}]}),
                                 kind="content_references_patch"))
            out.append(WireEvent(sse({"type": "writing_blocks_metadata_patch", "conversation_id": cid,
                                      "message_id": mid, "metadata": {"blocks": [{"id": "b0", "kind": "paragraph"}]}}),
                                 kind="writing_blocks_metadata_patch"))
    last = tokens[-1] if tokens else ""
    out.append(WireEvent(_delta({"p": "", "o": "patch", "v": [
        {"p": path, "o": "append", "v": last},
        {"p": "/message/status", "o": "replace", "v": "finished_successfully"},
        {"p": "/message/end_turn", "o": "replace", "v": turn.finish_type == "stop"},
        {"p": "/message/metadata", "o": "append",
         "v": {"finish_details": {"type": turn.finish_type}, "is_complete": True}}]}), text=last, kind="delta"))
    n_text = sum(1 for ev in out if ev.is_text)
    out.append(WireEvent(sse({"type": "perf_stats", "conversation_id": cid, "message_id": mid,
                              "turn_exchange_id": turn.turn_exchange_id,
                              "stats": {"time_to_first_token_ms": first_ms,
                                        "total_time_ms": first_ms + gap_ms * max(n_text - 1, 0),
                                        "output_tokens": n_text}}), kind="perf_stats"))
    out.append(WireEvent(sse({"type": "toast", "conversation_id": cid, "level": "info",
                              "message": "Answer saved"}), kind="toast"))
    if turn.title:
        out.append(WireEvent(sse({"type": "title_generation", "title": turn.title, "conversation_id": cid}),
                             kind="title_generation"))
    out.append(WireEvent(sse({"type": "server_ste_metadata", "metadata": {
        "plan_type": "free", "cluster_region": "testregion", "model_slug": turn.server_model_slug,
        "message_id": mid, "turn_exchange_id": turn.turn_exchange_id}, "conversation_id": cid}),
        kind="server_ste_metadata"))
    out.append(WireEvent(sse({"type": "main_stream_complete", "conversation_id": cid, "message_id": mid}),
                         kind="main_stream_complete"))
    out.append(WireEvent(sse({"type": "beacon", "conversation_id": cid, "name": "turn_complete",
                              "attributes": {"message_id": mid}}), kind="beacon"))
    out.append(WireEvent(sse({"type": "message_stream_complete", "conversation_id": cid}),
                         kind="message_stream_complete"))
    out.append(DONE)
    return out


# ---------------------------------------------------------------------------------------------
# 1c. WebSocket hand-offs


WEBPUBSUB_SUBPROTOCOL = "json.reliable.webpubsub.azure.v1"


def ws2024_handoff(wss_url: str, conversation_id: str, response_id: str, expires_at: float) -> dict:
    """The JSON a 2024 conversation POST answered instead of a stream."""
    return {"wss_url": wss_url, "conversation_id": conversation_id, "response_id": response_id,
            "expires_at": expires_at}


def webpubsub_connected(user_id: str, connection_id: str) -> WireEvent:
    return WireEvent(json.dumps({"type": "system", "event": "connected", "userId": user_id,
                                 "connectionId": connection_id}).encode(), kind="system")


def webpubsub_frames(events: list[WireEvent], *, group: str, response_id: str,
                     conversation_id: str) -> list[WireEvent]:
    """Each SSE event as one ``json.reliable.webpubsub.azure.v1`` group message (body = base64 of SSE)."""
    out = []
    for seq, ev in enumerate(events, 1):
        last = seq == len(events)
        frame = {"sequenceId": seq, "type": "message", "from": "group", "group": group, "dataType": "json",
                 "data": {"type": "http.response.body", "body": base64.b64encode(ev.data).decode(),
                          "more_body": not last, "response_id": response_id,
                          "conversation_id": conversation_id}}
        out.append(WireEvent(json.dumps(frame).encode(), text=ev.text, kind=ev.kind))
    return out


def celsius_topic(conversation_id: str, turn_exchange_id: str) -> str:
    return f"conversation-turn-{conversation_id}-{turn_exchange_id}"


def stream_handoff_event(turn: Turn, topic_id: str, ws_url: str) -> WireEvent:
    """The 2025 SSE event that moves the rest of the answer to a celsius WebSocket topic."""
    return WireEvent(sse({"type": "stream_handoff", "conversation_id": turn.conversation_id,
                          "turn_exchange_id": turn.turn_exchange_id,
                          "options": [{"type": "resume_sse_endpoint", "topic_id": topic_id},
                                      {"type": "subscribe_ws_topic", "topic_id": topic_id, "url": ws_url}]}),
                     kind="stream_handoff")


def celsius_frames(events: list[WireEvent], topic_id: str) -> list[WireEvent]:
    """Each SSE event as one celsius ``stream-item`` frame, then the topic's ``done`` frame."""
    out = []
    prev: str | None = None
    for i, ev in enumerate(events):
        item_id = f"{topic_id}:{i}"
        frame = {"type": "message", "topic_id": topic_id, "payload": {
            "type": "conversation-turn-stream", "payload": {
                "type": "stream-item", "stream_item_id": item_id, "parent_stream_item_id": prev,
                "encoded_item": ev.data.decode()}}}
        prev = item_id
        out.append(WireEvent(json.dumps(frame).encode(), text=ev.text, kind=ev.kind))
    done = {"type": "message", "topic_id": topic_id,
            "payload": {"type": "conversation-turn-stream", "payload": {"type": "done"}}}
    out.append(WireEvent(json.dumps(done).encode(), kind="done"))
    return out


def celsius_split(turn: Turn, topic_id: str, ws_url: str) -> tuple[list[WireEvent], list[WireEvent]]:
    """(SSE events of the POST, WebSocket frames of the topic) for a 2025 hand-off."""
    sse_part = v1_head(turn) + [stream_handoff_event(turn, topic_id, ws_url), DONE]
    ws_inner = [WireEvent(b'event: delta_encoding\ndata: "v1"\n\n', kind="delta_encoding")]
    ws_inner += v1_body(turn, explicit_add=True)
    return sse_part, celsius_frames(ws_inner, topic_id)


# ---------------------------------------------------------------------------------------------
# Schedules


def schedule(events: list[WireEvent], first_ms: float, gap_ms: float) -> list[float]:
    """Send offsets (seconds from the start) for ``events``.

    Events before the first text event go out at once; the first text event at ``first_ms``; each
    later text event ``gap_ms`` after the previous one; other events right after their predecessor.
    """
    out: list[float] = []
    t = 0.0
    seen_text = False
    for ev in events:
        if ev.is_text or ev.kind == "thought":
            t = t + gap_ms / 1000 if seen_text else first_ms / 1000
            seen_text = True
        out.append(t)
    return out


# ---------------------------------------------------------------------------------------------
# 2. The conversation tree


@dataclass
class Node:
    id: str
    message: dict | None
    parent: str | None
    children: list[str] = field(default_factory=list)


@dataclass
class ConversationTree:
    """A conversation as the server keeps it: every branch, and the node the user last saw."""

    conversation_id: str
    root_id: str
    create_time: float
    title: str | None = None
    nodes: dict[str, Node] = field(default_factory=dict)
    current_node: str = ""
    update_time: float = 0.0

    @classmethod
    def new(cls, conversation_id: str, root_id: str, system_id: str, now: float) -> ConversationTree:
        tree = cls(conversation_id, root_id, now, update_time=now)
        tree.nodes[root_id] = Node(root_id, None, None)
        tree.add(system_message(system_id), root_id)
        return tree

    def add(self, message: dict, parent: str) -> Node:
        node = Node(message["id"], message, parent)
        self.nodes[node.id] = node
        if parent in self.nodes and node.id not in self.nodes[parent].children:
            self.nodes[parent].children.append(node.id)
        self.current_node = node.id
        return node

    def set_message(self, message: dict) -> None:
        self.nodes[message["id"]].message = message
        self.current_node = message["id"]

    def text_of(self, node_id: str) -> str:
        msg = self.nodes[node_id].message or {}
        parts = (msg.get("content") or {}).get("parts") or [""]
        return parts[0] if isinstance(parts[0], str) else ""

    def role_of(self, node_id: str) -> str | None:
        node = self.nodes.get(node_id)
        return node.message["author"]["role"] if node and node.message else None

    def branch(self, node_id: str | None = None) -> list[str]:
        """Node ids from the root down to ``node_id`` (default: the current node)."""
        out = []
        cur: str | None = node_id or self.current_node
        while cur is not None and cur in self.nodes:
            out.append(cur)
            cur = self.nodes[cur].parent
        return out[::-1]

    def to_json(self) -> dict:
        """The body of ``GET /backend-api/conversation/<id>``."""
        mapping = {nid: {"id": n.id, "message": n.message, "parent": n.parent, "children": list(n.children)}
                   for nid, n in self.nodes.items()}
        return {"title": self.title, "create_time": self.create_time, "update_time": self.update_time,
                "mapping": mapping, "moderation_results": [], "current_node": self.current_node,
                "plugin_ids": None, "conversation_id": self.conversation_id, "id": self.conversation_id,
                "conversation_template_id": None, "gizmo_id": None, "is_archived": False,
                "safe_urls": [], "default_model_slug": "auto"}

    def summary(self) -> dict:
        """An item of ``GET /backend-api/conversations``."""
        return {"id": self.conversation_id, "title": self.title, "create_time": self.create_time,
                "update_time": self.update_time, "mapping": None, "current_node": None,
                "is_archived": False}


# ---------------------------------------------------------------------------------------------
# 5. OpenAI API


def last_user_text(messages: Any) -> str:
    """The text of the last user message of a chat.completions ``messages`` or a Responses ``input``."""
    if isinstance(messages, str):
        return messages
    if not isinstance(messages, list):
        return ""
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role", "user") == "user":
            content = msg.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def prompt_token_count(messages: Any) -> int:
    if isinstance(messages, str):
        return count_words(messages) + 3
    total = 0
    for msg in messages if isinstance(messages, list) else []:
        if isinstance(msg, dict):
            content = msg.get("content")
            total += 4 + count_words(content if isinstance(content, str) else json.dumps(content))
    return total


def api_tokens(request: dict, limit_key: str) -> tuple[list[str], bool]:
    """(answer tokens, truncated?) for an API request; honours max_tokens-like limits."""
    source = request.get("messages", request.get("input", ""))
    tokens = answer_tokens(last_user_text(source), variant="api")
    limit = request.get(limit_key) or request.get("max_tokens")
    if isinstance(limit, int) and 0 < limit < len(tokens):
        return tokens[:limit], True
    return tokens, False


def chat_completion(request: dict, *, completion_id: str, created: int) -> dict:
    """A non-streamed ``chat.completion``."""
    tokens, truncated = api_tokens(request, "max_completion_tokens")
    prompt = prompt_token_count(request.get("messages"))
    return {"id": completion_id, "object": "chat.completion", "created": created,
            "model": request.get("model", "gpt-4o-mini"), "system_fingerprint": "fp_origin",
            "service_tier": "default",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(tokens),
                                                 "refusal": None, "tool_calls": None},
                         "logprobs": None, "finish_reason": "length" if truncated else "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": len(tokens),
                      "total_tokens": prompt + len(tokens)}}


def chat_completion_chunks(request: dict, *, completion_id: str, created: int) -> list[WireEvent]:
    """A streamed chat.completions answer: role chunk, content chunks, finish chunk, usage chunk, [DONE]."""
    tokens, truncated = api_tokens(request, "max_completion_tokens")
    include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
    model = request.get("model", "gpt-4o-mini")

    def chunk(delta: dict | None, finish: str | None, *, usage: Any = None, empty: bool = False) -> bytes:
        obj: dict = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                     "service_tier": "default", "system_fingerprint": "fp_origin",
                     "choices": [] if empty else [{"index": 0, "delta": delta, "logprobs": None,
                                                   "finish_reason": finish}]}
        if include_usage:
            obj["usage"] = usage
        return sse(obj)

    out = [WireEvent(chunk({"role": "assistant", "content": "", "refusal": None}, None), kind="role")]
    out += [WireEvent(chunk({"content": tok}, None), text=tok, kind="content") for tok in tokens]
    out.append(WireEvent(chunk({}, "length" if truncated else "stop"), kind="finish"))
    if include_usage:
        prompt = prompt_token_count(request.get("messages"))
        usage = {"prompt_tokens": prompt, "completion_tokens": len(tokens), "total_tokens": prompt + len(tokens),
                 "prompt_tokens_details": {"cached_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": 0}}
        out.append(WireEvent(chunk(None, None, usage=usage, empty=True), kind="usage"))
    out.append(DONE)
    return out


def _response_object(request: dict, response_id: str, created: int, *, status: str, output: list,
                     usage: dict | None, truncated: bool = False) -> dict:
    return {"id": response_id, "object": "response", "created_at": created, "status": status,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
            "instructions": request.get("instructions"), "max_output_tokens": request.get("max_output_tokens"),
            "model": request.get("model", "gpt-4o-mini"), "output": output, "parallel_tool_calls": True,
            "previous_response_id": request.get("previous_response_id"), "store": True,
            "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
            "top_p": 1.0, "truncation": "disabled", "usage": usage, "user": None, "metadata": {}}


def _response_usage(request: dict, n_out: int) -> dict:
    n_in = prompt_token_count(request.get("input", ""))
    return {"input_tokens": n_in, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": n_out,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": n_in + n_out}


def _output_message(item_id: str, text: str, status: str) -> dict:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}]}


def response_object(request: dict, *, response_id: str, item_id: str, created: int) -> dict:
    """A non-streamed Responses API ``response``."""
    tokens, truncated = api_tokens(request, "max_output_tokens")
    text = "".join(tokens)
    return _response_object(request, response_id, created,
                            status="incomplete" if truncated else "completed",
                            output=[_output_message(item_id, text, "completed")],
                            usage=_response_usage(request, len(tokens)), truncated=truncated)


def response_events(request: dict, *, response_id: str, item_id: str, created: int) -> list[WireEvent]:
    """A streamed Responses API answer: named events, ``response.completed`` with usage, no ``[DONE]``."""
    tokens, truncated = api_tokens(request, "max_output_tokens")
    text = "".join(tokens)
    seq = 0
    out: list[WireEvent] = []

    def emit(name: str, payload: dict, piece: str = "") -> None:
        nonlocal seq
        body = {"type": name, "sequence_number": seq, **payload}
        seq += 1
        out.append(WireEvent(sse(body, name, ensure_ascii=False), text=piece, kind=name))

    pending = _response_object(request, response_id, created, status="in_progress", output=[], usage=None)
    emit("response.created", {"response": pending})
    emit("response.in_progress", {"response": pending})
    emit("response.output_item.added", {"output_index": 0, "item": {
        "id": item_id, "type": "message", "status": "in_progress", "content": [], "role": "assistant"}})
    part_ref = {"item_id": item_id, "output_index": 0, "content_index": 0}
    emit("response.content_part.added", {**part_ref, "part": {
        "type": "output_text", "annotations": [], "logprobs": [], "text": ""}})
    for tok in tokens:
        emit("response.output_text.delta", {**part_ref, "delta": tok, "logprobs": []}, tok)
    emit("response.output_text.done", {**part_ref, "text": text, "logprobs": []})
    emit("response.content_part.done", {**part_ref, "part": {
        "type": "output_text", "annotations": [], "logprobs": [], "text": text}})
    done_item = _output_message(item_id, text, "completed")
    emit("response.output_item.done", {"output_index": 0, "item": done_item})
    final = _response_object(request, response_id, created, status="incomplete" if truncated else "completed",
                             output=[done_item], usage=_response_usage(request, len(tokens)),
                             truncated=truncated)
    emit("response.incomplete" if truncated else "response.completed", {"response": final})
    return out


def models_list(created: int) -> dict:
    """``GET /v1/models``."""
    names = ["gpt-4o-mini", "gpt-4o", "gpt-4.1", "o3-mini", "gpt-5"]
    return {"object": "list", "data": [{"id": n, "object": "model", "created": created, "owned_by": "origin"}
                                       for n in names]}
