"""Conversations rebuilt from a capture: one tree per conversation, every source merged.

A message can be seen several times: in the request that sent it (``source = request``), in the
stream that answered it (``stream``), in a ``GET …/conversation/<id>`` read (``mapping``), in a
page of the 2026 paged history (``page``), in a celsius ``conversation-update`` frame (``update``). The
``messages`` table keeps every sighting; this module de-duplicates them by message id and links
the survivors into a tree (``docs/conversations.md`` gives the rules). The work on the tables is
done with pandas over all rows at once; Python only walks the (small) resolved tree.

Notebook use::

    from analyzer.store import load_capture
    from analyzer.analysis import list_conversations, build_conversation
    cap = load_capture("captures/sample.parquet")
    list_conversations(cap)                      # a DataFrame, one row per conversation
    conv = build_conversation(cap, "6790a1b2")   # a full id or a unique prefix
    conv.openai_messages()                       # the active branch, ready for chat.completions
"""

from __future__ import annotations

import json
import logging
import re
import textwrap
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from analyzer.analysis.handoff import merge_handoffs
from analyzer.analysis.resume import last_part_starts, merge_resumes, resume_pairs, resumed_messages

log = logging.getLogger(__name__)

# The web app's placeholder parent for the first message of a new chat; here it also names the
# synthetic root that every message with an unknown parent hangs from.
ROOT_ID = "client-created-root"

# Among sightings of one message with equally complete status and the same seen_at, the server's
# stored copy (a mapping or a history page) beats the live stream or socket update, which beats
# what the client sent; ``turn`` rows are a last resort for messages that have no row in
# ``messages`` at all.
SOURCE_RANK = {"mapping": 3, "page": 3, "stream": 2, "update": 2, "request": 1, "turn": 0}

# Content types that carry the dialogue itself; others (thoughts, code for a tool, …) are not
# part of an API-style context.
DIALOGUE_CONTENT_TYPES = {"text", "multimodal_text"}

MESSAGE_COLUMNS = [
    "conversation_id", "message_id", "parent_id", "role", "content_type", "recipient", "text",
    "model_slug", "create_time", "status", "end_turn", "hidden", "source", "flow_id", "seen_at", "images",
]
TURN_COLUMNS = [
    "flow_id", "conversation_id", "action", "model_slug", "parent_message_id", "user_message_id",
    "user_text", "assistant_message_id", "assistant_text", "status", "title", "started_at", "ttft_ms",
    "stream_format",
    # what joins a resumed answer's flows into one turn (analyzer.analysis.resume)
    "path", "e2e_ms", "n_events", "n_text_events", "resume_offset", "next_offset", "error", "error_code",
    "finish_type",
]
READ_COLUMNS = ["flow_id", "conversation_id", "title", "current_node", "read_at"]
# Sources that are reads of the server's stored conversation (not new activity).
READ_SOURCES = ("mapping", "page")
LIST_COLUMNS = ["conversation_id", "title", "turns", "messages", "models", "first_at", "last_at"]


class ConversationNotFound(KeyError):
    """No conversation (or more than one) matches the id asked for."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "conversation not found"


@dataclass
class Node:
    """One message of a conversation tree, after de-duplication."""

    id: str
    parent: str | None  # None: a child of the (synthetic) root
    children: list[str]
    role: str | None
    content_type: str | None
    text: str | None
    model_slug: str | None
    create_time: float | None  # epoch seconds; when the message was first seen if it has none
    recipient: str | None = None
    hidden: bool = False
    status: str | None = None
    flow_id: str | None = None  # the flow of the sighting that won
    ttft_ms: float | None = None  # of the turn that produced this (assistant) message
    sources: tuple[str, ...] = ()  # every source it was seen in
    images: list[dict] = field(default_factory=list)  # image_asset_pointer parts (messages.images)


@dataclass
class Conversation:
    """A conversation tree: ``nodes`` by id, ``roots`` the children of the synthetic root."""

    conversation_id: str
    title: str | None
    current_node: str | None
    nodes: dict[str, Node]
    roots: list[str] = field(default_factory=list)

    def path_to(self, node_id: str) -> list[Node]:
        """The nodes from the root down to ``node_id``."""
        path: list[Node] = []
        seen: set[str] = set()
        current: str | None = node_id
        while current is not None and current in self.nodes and current not in seen:
            seen.add(current)
            path.append(self.nodes[current])
            current = self.nodes[current].parent
        return path[::-1]

    def active_branch(self) -> list[Node]:
        """Root → ``current_node``: the branch the user last saw."""
        return self.path_to(self.current_node) if self.current_node else []

    def walk(self) -> list[Node]:
        """Every node, depth first, siblings oldest first."""
        out: list[Node] = []
        stack = list(reversed(self.roots))
        while stack:
            node = self.nodes[stack.pop()]
            out.append(node)
            stack.extend(reversed(node.children))
        return out

    def leaves(self) -> list[Node]:
        return [n for n in self.walk() if not n.children]

    def branches(self) -> list[list[Node]]:
        """Every root → leaf path, in depth-first order."""
        return [self.path_to(leaf.id) for leaf in self.leaves()]

    def branch_points(self) -> list[str]:
        """Ids of nodes with more than one child (``ROOT_ID`` if the root itself has several)."""
        points = [ROOT_ID] if len(self.roots) > 1 else []
        return points + [n.id for n in self.walk() if len(n.children) > 1]

    def to_json(self, branch: list[Node] | None = None) -> dict[str, Any]:
        """``{conversation_id, title, current_node, nodes: […]}``; only ``branch`` if given."""
        nodes = self.walk() if branch is None else branch
        keep = {n.id for n in nodes}
        return {
            "conversation_id": self.conversation_id,
            "title": self.title,
            "current_node": self.current_node,
            "nodes": [
                {
                    "id": n.id,
                    "parent": n.parent,
                    "children": [c for c in n.children if c in keep],
                    "role": n.role,
                    "content_type": n.content_type,
                    "text": n.text,
                    "model_slug": n.model_slug,
                    "create_time": n.create_time,
                    **({"images": n.images} if n.images else {}),
                }
                for n in nodes
            ],
        }

    def openai_messages(self, branch: list[Node] | None = None) -> list[dict[str, str]]:
        """``branch`` (default: the active one) as a ``chat.completions`` ``messages`` list.

        Kept: visible system/user/assistant messages with text, addressed to everyone, of a
        dialogue content type. Left out: hidden, empty, tool messages, tool calls, thoughts.
        """
        branch = self.active_branch() if branch is None else branch
        return [
            {"role": n.role, "content": n.text}
            for n in branch
            if n.role in ("system", "user", "assistant")
            and not n.hidden
            and n.text and n.text.strip()
            and n.recipient in (None, "all")
            and (n.content_type is None or n.content_type in DIALOGUE_CONTENT_TYPES)
        ]


# ---------------------------------------------------------------------------------------------
# Tables → sightings → resolved messages (vectorised)


def _isin(values: pd.Series, allowed) -> pd.Series:
    """``values.isin(allowed)`` through object arrays: pandas' Arrow-string ``isin`` walks a large
    ``allowed`` in Python (seconds for 10⁵ ids)."""
    return values.astype(object).isin(pd.Index(allowed, dtype=object))


def _load(capture) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    # A POST that handed its answer to a WebSocket and that answer are one turn (TTFT from the POST);
    # so are an answer whose stream broke and the resumes that continued it, whose whole text is
    # one more sighting of the answer.
    turns = merge_handoffs(capture.table("conversation_turns", TURN_COLUMNS))
    messages, merged = with_resumes(capture.table("messages", MESSAGE_COLUMNS), turns)
    return messages, merged, capture.table("conversation_reads", READ_COLUMNS)


def with_resumes(messages: pd.DataFrame, turns: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(messages, turns) with every resumed answer's flows folded into one turn and its whole text
    added as one more ``stream`` sighting (``analyzer.analysis.resume``)."""
    pairs = resume_pairs(turns)
    if pairs.empty:
        return messages, turns
    merged = merge_resumes(turns, pairs)
    stitched = resumed_messages(merged, pairs, last_part_starts(turns, pairs))
    if not stitched.empty:
        messages = pd.concat([messages, stitched.astype({"seen_at": messages["seen_at"].dtype})],
                             ignore_index=True)
    return messages, merged


def _no_reads() -> pd.DataFrame:
    from analyzer.schema import empty_table

    return empty_table("conversation_reads").select(READ_COLUMNS).to_pandas()


def sightings(messages: pd.DataFrame, turns: pd.DataFrame) -> pd.DataFrame:
    """Every sighting of every message, conversation ids filled in, plus turn-only messages.

    A request message of a new chat has no conversation id: it takes its flow's turn's one.
    Messages that only ``conversation_turns`` knows (no row in ``messages``) become sightings
    of source ``turn`` so that a capture with sparse message rows still yields a tree.
    """
    msgs = messages.loc[messages["message_id"].notna()].copy()
    flow_conv = turns.dropna(subset=["flow_id", "conversation_id"]).drop_duplicates("flow_id")
    flow_conv = flow_conv.set_index("flow_id")["conversation_id"]
    msgs["conversation_id"] = msgs["conversation_id"].fillna(msgs["flow_id"].map(flow_conv))
    # A HAR import has no arrival times: the turn's start still orders its messages.
    flow_start = turns.dropna(subset=["flow_id", "started_at"]).drop_duplicates("flow_id")
    if not flow_start.empty and msgs["seen_at"].isna().any():
        msgs["seen_at"] = msgs["seen_at"].fillna(
            msgs["flow_id"].map(flow_start.set_index("flow_id")["started_at"]))

    posted = turns.dropna(subset=["conversation_id"])
    user = posted[posted["user_message_id"].notna() & (posted["action"].fillna("next") != "continue")]
    user = pd.DataFrame({
        "conversation_id": user["conversation_id"], "message_id": user["user_message_id"],
        "parent_id": user["parent_message_id"], "role": "user", "content_type": "text",
        "text": user["user_text"], "source": "turn", "flow_id": user["flow_id"],
        "seen_at": user["started_at"],
    })
    asst = posted[posted["assistant_message_id"].notna()]
    asst = pd.DataFrame({
        "conversation_id": asst["conversation_id"], "message_id": asst["assistant_message_id"],
        "parent_id": asst["user_message_id"].fillna(asst["parent_message_id"]), "role": "assistant",
        "content_type": "text", "text": asst["assistant_text"], "model_slug": asst["model_slug"],
        "status": asst["status"], "source": "turn", "flow_id": asst["flow_id"],
        "seen_at": asst["started_at"],
    })
    extra = pd.concat([user, asst], ignore_index=True)
    extra = extra[~_isin(extra["message_id"], msgs["message_id"])].drop_duplicates("message_id")
    if extra.empty:
        out = msgs
    else:
        out = pd.concat([msgs, extra], ignore_index=True)
    return out[out["conversation_id"].notna()].reset_index(drop=True)


def rank_sightings(s: pd.DataFrame) -> pd.DataFrame:
    """``s`` sorted so that, per message id, the winning sighting comes first.

    Order: most complete status (anything but ``in_progress`` and not null > null >
    ``in_progress``), then the latest ``seen_at`` (unknown counts as oldest), then the source
    (mapping > stream > request > turn), then the longest text.
    """
    status = s["status"]
    status_rank = (status.notna() & (status != "in_progress")).astype(int) * 2 + status.isna().astype(int)
    keyed = s.assign(
        _status=status_rank,
        _seen=s["seen_at"].fillna(pd.Timestamp(0, tz="UTC")),
        _source=s["source"].map(SOURCE_RANK).fillna(-1),
        _len=s["text"].fillna("").str.len(),
    )
    keyed = keyed.sort_values(
        ["message_id", "_status", "_seen", "_source", "_len"],
        ascending=[True, False, False, False, False], kind="stable",
    )
    return keyed.drop(columns=["_status", "_seen", "_source", "_len"])


def resolve_messages(s: pd.DataFrame, turns: pd.DataFrame) -> pd.DataFrame:
    """One row per message id: the winning sighting, gaps filled from the next best ones.

    Columns: those of ``messages`` plus ``first_seen``, ``last_seen``, ``sources``,
    ``ttft_ms`` (earliest turn that produced the message) and ``time`` (create_time or
    first_seen). ``parent_id`` is the best-ranked parent that is a known message of the same
    conversation; else the turn's user message; else null (the synthetic root).
    """
    if s.empty:
        cols = MESSAGE_COLUMNS + ["first_seen", "last_seen", "sources", "ttft_ms", "time"]
        return pd.DataFrame(columns=cols)
    ranked = rank_sightings(s)
    by_id = ranked.groupby("message_id", sort=False)
    best = by_id.first()  # first non-null value per column, in rank order
    # A regeneration re-sends the user message with a new create_time: the first one is its birth.
    best["create_time"] = by_id["create_time"].min()
    best["first_seen"] = by_id["seen_at"].min()
    best["last_seen"] = by_id["seen_at"].max()
    best["sources"] = by_id["source"].agg(
        lambda v: tuple(sorted(set(v.dropna()), key=lambda src: -SOURCE_RANK.get(src, -1))))

    # Parent candidates: every sighting's parent in rank order, then the turn's user message
    # (a streamed message may lack metadata.parent_id).
    hints = pd.DataFrame({
        "message_id": turns["assistant_message_id"],
        "parent_id": turns["user_message_id"].fillna(turns["parent_message_id"]),
    })
    cands = pd.concat([ranked[["message_id", "parent_id", "conversation_id"]],
                       hints.assign(conversation_id=hints["message_id"].map(best["conversation_id"]))])
    known = pd.Series(best["conversation_id"])  # message id -> its conversation
    ok = (
        _isin(cands["parent_id"], known.index)
        & (cands["parent_id"] != cands["message_id"])
        & (cands["parent_id"].map(known) == cands["conversation_id"])
    )
    best["parent_id"] = cands[ok].groupby("message_id", sort=False)["parent_id"].first()

    first_turn = turns.dropna(subset=["assistant_message_id"]).sort_values("started_at", kind="stable")
    first_turn = first_turn.drop_duplicates("assistant_message_id").set_index("assistant_message_id")
    # An answer the turn does not name (no assistant_message_id) still belongs to its flow's turn.
    by_flow = turns.dropna(subset=["flow_id"]).drop_duplicates("flow_id").set_index("flow_id")
    answer = best["role"] == "assistant"
    best["ttft_ms"] = first_turn["ttft_ms"].reindex(best.index)
    best["model_slug"] = best["model_slug"].fillna(first_turn["model_slug"].reindex(best.index))
    if not by_flow.empty:
        best["ttft_ms"] = best["ttft_ms"].fillna(best["flow_id"].map(by_flow["ttft_ms"]).where(answer))
        best["model_slug"] = best["model_slug"].fillna(best["flow_id"].map(by_flow["model_slug"]).where(answer))
    best["time"] = best["create_time"].fillna(best["first_seen"])
    return best.reset_index()


# ---------------------------------------------------------------------------------------------
# Listing


def _newest_titles(turns: pd.DataFrame, reads: pd.DataFrame) -> pd.Series:
    """conversation id -> the newest non-null title of a title_generation event or a read."""
    titled = pd.concat([
        turns[["conversation_id", "title", "started_at"]].rename(columns={"started_at": "t"}),
        reads[["conversation_id", "title", "read_at"]].rename(columns={"read_at": "t"}),
    ]).dropna(subset=["conversation_id", "title"])
    titled = titled.sort_values("t", kind="stable", na_position="first")
    return titled.groupby("conversation_id")["title"].last()


def conversation_summaries(messages: pd.DataFrame, turns: pd.DataFrame,
                           reads: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per conversation: ``LIST_COLUMNS``, newest activity first (pure function)."""
    reads = _no_reads() if reads is None else reads
    s = sightings(messages, turns)
    posted = turns.dropna(subset=["conversation_id"])
    ids = pd.Index(pd.concat([s["conversation_id"], posted["conversation_id"],
                              reads["conversation_id"].dropna()]).unique(), name="conversation_id")
    if ids.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in LIST_COLUMNS})
    models = pd.concat([
        posted[["conversation_id", "model_slug"]],
        s.loc[s["role"] == "assistant", ["conversation_id", "model_slug"]],
    ]).dropna()
    times = pd.concat([
        turns[["conversation_id", "started_at"]].rename(columns={"started_at": "t"}),
        s[["conversation_id", "seen_at"]].rename(columns={"seen_at": "t"}),
        s[["conversation_id", "create_time"]].rename(columns={"create_time": "t"}),
        reads[["conversation_id", "read_at"]].rename(columns={"read_at": "t"}),
    ]).dropna()
    out = pd.DataFrame(index=ids)
    out["title"] = _newest_titles(turns, reads).reindex(ids)
    out["turns"] = posted.groupby("conversation_id").size().reindex(ids, fill_value=0).astype(int)
    out["messages"] = s.groupby("conversation_id")["message_id"].nunique().reindex(ids, fill_value=0).astype(int)
    out["models"] = models.groupby("conversation_id")["model_slug"].agg(
        lambda v: ", ".join(sorted(set(v)))).reindex(ids).fillna("")
    grouped = times.groupby("conversation_id")["t"]
    out["first_at"] = grouped.min().reindex(ids)
    out["last_at"] = grouped.max().reindex(ids)
    out = out.reset_index().sort_values(["last_at", "conversation_id"], ascending=[False, True],
                                        na_position="last", kind="stable")
    return out[LIST_COLUMNS].reset_index(drop=True)


def list_conversations(capture) -> pd.DataFrame:
    """Every conversation of ``capture``: conversation_id, title, turns, messages, models,
    first_at, last_at (UTC timestamps), newest activity first."""
    messages, turns, reads = _load(capture)
    return conversation_summaries(messages, turns, reads)


# ---------------------------------------------------------------------------------------------
# Building one conversation


def resolve_conversation_id(known: pd.Series | list[str], wanted: str) -> str:
    """``wanted`` if known, else the one known id it is a prefix of; ConversationNotFound otherwise."""
    ids = pd.Index(pd.Series(known).dropna().unique())
    if wanted in ids:
        return wanted
    matches = sorted(ids[ids.str.startswith(wanted)]) if wanted else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ConversationNotFound(f"conversation id {wanted!r} is ambiguous: {len(matches)} match")
    raise ConversationNotFound(f"no conversation {wanted!r} in the capture")


def _epoch(ts: Any) -> float | None:
    return None if ts is None or pd.isna(ts) else ts.timestamp()


def _opt(v: Any) -> Any:
    return None if v is None or (not isinstance(v, (list, tuple)) and pd.isna(v)) else v


def _break_cycles(parents: dict[str, str | None]) -> None:
    """Bad data could make a parent loop; cut each loop where it closes (the node goes to the root)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: known to reach the root
    for start in parents:
        path = []
        node: str | None = start
        while node is not None and state.get(node) is None:
            state[node] = 1
            path.append(node)
            nxt = parents.get(node)
            if nxt is not None and state.get(nxt) == 1:
                log.warning("message %s: parent loop through %s, attached to the root", node, nxt)
                parents[node] = None
                nxt = None
            node = nxt
        for p in path:
            state[p] = 2


def _current_node(resolved: pd.DataFrame, s: pd.DataFrame, reads: pd.DataFrame,
                  nodes: dict[str, Node]) -> str | None:
    """The newest read's current_node if no message outside the reads was first seen after that
    read, else the newest leaf. Older history pages read after the newest one are reads too: the
    messages they bring are not new activity."""
    all_reads = reads
    reads = reads[_isin(reads["current_node"], list(nodes))]
    if not reads.empty:
        read = reads.sort_values("read_at", kind="stable", na_position="first").iloc[-1]
        in_read = s[(s["flow_id"] == read["flow_id"])
                    | (_isin(s["flow_id"], all_reads["flow_id"].dropna()) & _isin(s["source"], READ_SOURCES))]
        read_time = read["read_at"] if pd.notna(read["read_at"]) else in_read["seen_at"].max()
        later = resolved[~_isin(resolved["message_id"], in_read["message_id"])
                         & (resolved["first_seen"] > read_time)]
        if pd.isna(read_time) or later.empty:
            return read["current_node"]
    leaves = resolved[resolved["message_id"].map(lambda m: not nodes[m].children)]
    if leaves.empty:
        return None
    newest = leaves.sort_values(["time", "last_seen", "message_id"], na_position="first", kind="stable")
    return newest["message_id"].iloc[-1]


def conversation_from_frames(messages: pd.DataFrame, turns: pd.DataFrame, conversation_id: str,
                             reads: pd.DataFrame | None = None) -> Conversation:
    """The tree of ``conversation_id`` from ``messages``, ``conversation_turns`` and
    ``conversation_reads`` frames (pure)."""
    reads = _no_reads() if reads is None else reads
    conv_id = resolve_conversation_id(
        pd.concat([messages["conversation_id"].drop_duplicates(), turns["conversation_id"].drop_duplicates(),
                   reads["conversation_id"].drop_duplicates()]),
        conversation_id)
    conv_turns = turns[turns["conversation_id"] == conv_id]
    conv_reads = reads[reads["conversation_id"] == conv_id]
    # Only this conversation's rows (and rows without an id that its flows may claim) go on.
    mine = (messages["conversation_id"] == conv_id).fillna(False) | (
        messages["conversation_id"].isna() & _isin(messages["flow_id"], conv_turns["flow_id"].dropna()))
    s = sightings(messages[mine], conv_turns)
    s = s[s["conversation_id"] == conv_id]
    resolved = resolve_messages(s, conv_turns)

    parents = {m: _opt(p) for m, p in zip(resolved["message_id"], resolved["parent_id"], strict=True)}
    _break_cycles(parents)
    order = resolved.sort_values(["time", "message_id"], na_position="last", kind="stable")
    nodes: dict[str, Node] = {}
    for row in order.to_dict("records"):
        nodes[row["message_id"]] = Node(
            id=row["message_id"], parent=parents[row["message_id"]], children=[],
            role=_opt(row["role"]), content_type=_opt(row["content_type"]), text=_opt(row["text"]),
            model_slug=_opt(row["model_slug"]), create_time=_epoch(row["time"]),
            recipient=_opt(row["recipient"]), hidden=bool(_opt(row["hidden"]) or False),
            status=_opt(row["status"]), flow_id=_opt(row["flow_id"]), ttft_ms=_opt(row["ttft_ms"]),
            sources=row["sources"], images=_images(row.get("images")),
        )
    roots: list[str] = []
    for node in nodes.values():  # in time order, so children lists come out oldest first
        (nodes[node.parent].children if node.parent is not None else roots).append(node.id)
    title = _newest_titles(conv_turns, conv_reads).get(conv_id)
    conv = Conversation(conv_id, _opt(title), None, nodes, roots)
    conv.current_node = _current_node(resolved, s, conv_reads, nodes)
    return conv


_UNSAFE_POINTER = re.compile(r"[^A-Za-z0-9:/._-]")


def _images(value: Any) -> list[dict]:
    """``messages.images`` (a JSON list) as Python; [] for none or a value that is not a list."""
    if not isinstance(value, str):
        return []
    try:
        images = json.loads(value)
    except ValueError:
        return []
    return [i for i in images if isinstance(i, dict)] if isinstance(images, list) else []


def image_lines(node: Node) -> list[str]:
    """One ``[image W×H, N KB, asset pointer]`` line per image part (never fetched)."""
    out = []
    for image in node.images:
        bits = []
        if image.get("width") and image.get("height"):
            bits.append(f"{image['width']}×{image['height']}")
        if isinstance(image.get("size_bytes"), int):
            bits.append(f"{image['size_bytes'] / 1000:,.0f} KB")
        # an id from the traffic: only the characters an asset pointer has, so it stays inert
        bits.append(_UNSAFE_POINTER.sub("?", str(image.get("asset_pointer") or "?"))[:200])
        out.append(f"[image {', '.join(bits)}]")
    return out


def build_conversation(capture, conversation_id: str) -> Conversation:
    """The conversation ``conversation_id`` (a full id or a unique prefix) of ``capture`` as a tree.

    Raises ``ConversationNotFound`` (a ``KeyError``) for an unknown or ambiguous id.
    """
    messages, turns, reads = _load(capture)
    return conversation_from_frames(messages, turns, conversation_id, reads)


# ---------------------------------------------------------------------------------------------
# Rendering

WIDTH = 80


def _fmt_time(epoch: float | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return "" if epoch is None else datetime.fromtimestamp(epoch, UTC).strftime(fmt)


def _short(text: str, width: int) -> str:
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def render_list_text(df: pd.DataFrame, width: int = WIDTH) -> str:
    """One line per conversation: full id, turns/messages, first–last time (UTC), title and
    models; title and models are shortened so that each line fits ``width``."""
    if df.empty:
        return "no conversations in the capture\n"
    counts = [f"{t}/{m}" for t, m in zip(df["turns"], df["messages"], strict=True)]
    count_w = max(len("t/msg"), *map(len, counts))
    spans = []
    for first, last in zip(map(_epoch, df["first_at"]), map(_epoch, df["last_at"]), strict=True):
        span = _fmt_time(first, "%m-%d %H:%M") or "?"
        if last is not None and first is not None:
            same_day = _fmt_time(last, "%m-%d") == _fmt_time(first, "%m-%d")
            span += "–" + _fmt_time(last, "%H:%M" if same_day else "%m-%d %H:%M")
        spans.append(span)
    span_w = max(len("first–last UTC"), *map(len, spans))
    lines = [f"{'conversation':36} {'t/msg':>{count_w}} {'first–last UTC':{span_w}} title · models"]
    for row, count, span in zip(df.to_dict("records"), counts, spans, strict=True):
        head = f"{row['conversation_id']:36} {count:>{count_w}} {span:{span_w}} "
        room = width - len(head)
        title = _opt(row["title"]) or "(untitled)"
        models = row["models"] or ""
        if models and len(title) + 3 + len(models) <= room:
            tail = f"{title} · {models}"
        elif models and len(title) + 4 <= room:  # the title whole, models cut
            tail = title + " · " + _short(models, room - len(title) - 3)
        else:
            tail = _short(title, room)
        lines.append(head + tail)
    return "\n".join(lines) + "\n"


def render_list_markdown(df: pd.DataFrame) -> str:
    """A Markdown table of the conversations."""
    rows = ["| conversation | title | turns | messages | models | first (UTC) | last (UTC) |",
            "|---|---|---:|---:|---|---|---|"]
    for r in df.to_dict("records"):
        title = (_opt(r["title"]) or "").replace("|", "\\|")
        rows.append(f"| `{r['conversation_id']}` | {title} | {r['turns']} | {r['messages']} | "
                    f"{r['models']} | {_fmt_time(_epoch(r['first_at']))} | {_fmt_time(_epoch(r['last_at']))} |")
    return "\n".join(rows) + "\n"


def list_to_json(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The listing as JSON-ready records (times as epoch seconds)."""
    return [
        {**{k: _opt(r[k]) for k in ("conversation_id", "title")}, "turns": int(r["turns"]),
         "messages": int(r["messages"]), "models": [m for m in r["models"].split(", ") if m],
         "first_at": _epoch(r["first_at"]), "last_at": _epoch(r["last_at"])}
        for r in df.to_dict("records")
    ]


def _label(node: Node) -> str:
    """``assistant → python`` / ``tool (browser)`` style role label."""
    role = node.role or "?"
    if node.recipient not in (None, "all"):
        role += f" → {node.recipient}"
    if node.content_type not in (None, "text"):
        role += f" [{node.content_type}]"
    return role


def _meta(node: Node, previous: Node | None) -> list[str]:
    """Model, time (date only when it changes) and TTFT of one message."""
    parts = []
    if node.role == "assistant" and node.model_slug:
        parts.append(node.model_slug)
    if node.create_time is not None:
        same_day = previous is not None and previous.create_time is not None and \
            _fmt_time(previous.create_time, "%Y-%m-%d") == _fmt_time(node.create_time, "%Y-%m-%d")
        parts.append(_fmt_time(node.create_time, "%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S UTC"))
    if node.ttft_ms is not None:
        parts.append(f"TTFT {node.ttft_ms:,.0f} ms")
    if node.status == "in_progress":
        parts.append("INCOMPLETE (stream broke)")
    return parts


def _shown(nodes: list[Node]) -> list[Node]:
    return [n for n in nodes if not n.hidden]


def _wrap(text: str, width: int, indent: str) -> list[str]:
    """Wrap prose to ``width``; code blocks and short lines stay as they are."""
    out: list[str] = []
    in_code = False
    for line in text.splitlines() or [""]:
        if line.lstrip().startswith("```"):
            in_code = not in_code
        if in_code or len(indent + line) <= width or not line.strip():
            out.append((indent + line).rstrip())
        else:
            out.extend(textwrap.wrap(line, width, initial_indent=indent, subsequent_indent=indent,
                                     break_long_words=True, break_on_hyphens=False))
    return out


def _summary_line(conv: Conversation, shown: list[Node], branch: str) -> str:
    hidden = sum(n.hidden for n in conv.nodes.values())
    points = len(conv.branch_points())
    what = "active branch" if branch == "active" else "all branches"
    text = f"{what}: {len(shown)} messages shown of {len(conv.nodes)}"
    extras = []
    if points:
        extras.append(f"{points} branch point{'s' * (points != 1)}")
    if hidden:
        extras.append(f"{hidden} hidden")
    return text + (f" ({', '.join(extras)})" if extras else "")


def _tree_order(conv: Conversation) -> list[tuple[Node, int, str]]:
    """Depth-first nodes with their branch depth and a sibling label (``2/3``) at branch points."""
    out: list[tuple[Node, int, str]] = []
    stack = [(r, 0, i, len(conv.roots)) for i, r in reversed(list(enumerate(conv.roots)))]
    while stack:
        node_id, depth, index, n_siblings = stack.pop()
        node = conv.nodes[node_id]
        out.append((node, depth, f"{index + 1}/{n_siblings}" if n_siblings > 1 else ""))
        child_depth = depth + (len(node.children) > 1)
        stack.extend((c, child_depth, i, len(node.children))
                     for i, c in reversed(list(enumerate(node.children))))
    return out


def render_text(conv: Conversation, branch: str = "active", width: int = WIDTH) -> str:
    """A plain-text transcript wrapped to ``width``; ``branch="all"`` indents each branch."""
    active = {n.id for n in conv.active_branch()}
    if branch == "active":
        entries = [(n, 0, "") for n in _shown(conv.active_branch())]
    else:
        entries = [(n, d, label) for n, d, label in _tree_order(conv) if not n.hidden]
    lines = [conv.title or "(untitled)", f"conversation {conv.conversation_id}",
             _summary_line(conv, [e[0] for e in entries], branch), ""]
    previous: Node | None = None
    for node, depth, label in entries:
        indent = "  " * min(depth, 8)
        head = [_label(node)] + _meta(node, previous)
        if branch == "all":
            head.append(node.id[:8])
            if label:
                head.append(f"branch {label}")
            if node.id in active:
                head.append("*active*")
        header = _short(f"{indent}── {' · '.join(head)}", width - 4) + " "
        lines.append(header + "─" * max(width - len(header), 2))
        images = image_lines(node)
        if node.text or not images:
            lines.extend(_wrap(node.text or "(no text)", width, indent))
        lines.extend(indent + line for line in images)
        lines.append("")
        previous = node
    return "\n".join(lines).rstrip("\n") + "\n"


def render_markdown(conv: Conversation, branch: str = "active") -> str:
    """A Markdown transcript: one section per message with role, model, time and TTFT."""
    active = {n.id for n in conv.active_branch()}
    if branch == "active":
        entries = [(n, 0, "") for n in _shown(conv.active_branch())]
    else:
        entries = [(n, d, label) for n, d, label in _tree_order(conv) if not n.hidden]
    out = [f"# {conv.title or '(untitled)'}", "",
           f"- conversation: `{conv.conversation_id}`",
           f"- {_summary_line(conv, [e[0] for e in entries], branch)}"]
    if conv.current_node:
        out.append(f"- current node: `{conv.current_node}`")
    out.append("")
    previous: Node | None = None
    shown_ids = {e[0].id for e in entries}
    for i, (node, _depth, label) in enumerate(entries, 1):
        out.append(f"## {i}. {_label(node).capitalize()}")
        meta = _meta(node, previous) + [f"`{node.id}`"]
        if branch == "all":
            if node.parent in shown_ids and (previous is None or previous.id != node.parent):
                meta.append(f"reply to `{node.parent[:8]}`")
            if label:
                meta.append(f"branch {label}")
            if node.id in active:
                meta.append("active")
        images = image_lines(node)
        body = (node.text or ("" if images else "*(no text)*")).rstrip()
        out += ["", "*" + " · ".join(meta) + "*", ""] + ([body, ""] if body else []) + \
            ([f"- `{line}`" for line in images] + [""] if images else [])
        previous = node
    return "\n".join(out).rstrip("\n") + "\n"


def render_json(conv: Conversation, branch: str = "active") -> str:
    return json.dumps(conv.to_json(conv.active_branch() if branch == "active" else None),
                      indent=2, ensure_ascii=False) + "\n"


def render_openai(conv: Conversation) -> str:
    return json.dumps(conv.openai_messages(), indent=2, ensure_ascii=False) + "\n"
