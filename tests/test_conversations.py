"""Conversation trees rebuilt from real Parquet captures (analyzer.analysis.conversations)."""

from __future__ import annotations

import random

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.analysis import ConversationNotFound, build_conversation, list_conversations
from analyzer.analysis.conversations import ROOT_ID, conversation_from_frames, render_markdown
from analyzer.schema import rows_to_table
from analyzer.store import load_capture
from tests.capture_factory import T0, make_capture, mapping_read, merge, message_row, turn

KYOTO = "6790a1b2-0c3d-800a-9f1e-4b2c6d8e0f11"
HAIKU = "6790b7c8-1d2e-800a-8e3f-5a6b7c8d9e00"

A1_STREAM = "Day one: Fushimi Inari at dawn."
A1_MAPPING = "Day one: Fushimi Inari at dawn. Day two: Arashiyama."
A3_DONE = "Gion is lively at night; walk along Pontocho."


def kyoto_rows() -> dict[str, list[dict]]:
    """A chat with a regeneration, an edit, a mapping read overlapping the streamed turns, a
    stream that broke and a ``continue`` that finished it; plus a second chat whose only
    answer broke off."""
    return merge(
        turn(KYOTO, flow_id="f1", at=T0, user_id="u1", user_text="Plan two days in Kyoto.",
             parent_id=ROOT_ID, assistant_id="a1", assistant_text=A1_STREAM, title="Kyoto trip",
             ttft_ms=912.0),
        turn(KYOTO, flow_id="f2", at=T0 + 60, user_id="u2", user_text="What about food?", parent_id="a1",
             assistant_id="a2", assistant_text="Try ramen in Ichijoji."),
        # Regenerate: the same user message re-sent, a new answer beside the old one.
        turn(KYOTO, flow_id="f3", at=T0 + 120, action="variant", user_id="u2", user_text="What about food?",
             parent_id="a1", assistant_id="a2b", assistant_text="Book a kaiseki dinner.", model="o3",
             ttft_ms=2400.0),
        # Edit: a new user message under the same parent; its answer has no metadata.parent_id.
        turn(KYOTO, flow_id="f4", at=T0 + 180, user_id="u2e", user_text="What about temples?", parent_id="a1",
             assistant_id="a2e", assistant_text="Kiyomizu-dera and Kinkaku-ji.", stream_parent=False),
        mapping_read(KYOTO, flow_id="r1", at=T0 + 200, current_node="a2e", title="Kyoto trip planning", nodes=[
            {"id": "sys", "parent": "root-node", "role": "system", "text": "", "hidden": True,
             "create_time": T0 - 1},
            {"id": "u1", "parent": "sys", "role": "user", "text": "Plan two days in Kyoto.", "create_time": T0},
            {"id": "a1", "parent": "u1", "role": "assistant", "text": A1_MAPPING, "create_time": T0 + 0.9,
             "model_slug": "gpt-4o"},
            {"id": "u2", "parent": "a1", "role": "user", "text": "What about food?", "create_time": T0 + 60},
            {"id": "a2", "parent": "u2", "role": "assistant", "text": "Try ramen in Ichijoji.",
             "create_time": T0 + 60.8, "model_slug": "gpt-4o"},
            {"id": "a2b", "parent": "u2", "role": "assistant", "text": "Book a kaiseki dinner.",
             "create_time": T0 + 122.4, "model_slug": "o3"},
            {"id": "u2e", "parent": "a1", "role": "user", "text": "What about temples?", "create_time": T0 + 180},
            {"id": "a2e", "parent": "u2e", "role": "assistant", "text": "Kiyomizu-dera and Kinkaku-ji.",
             "create_time": T0 + 180.8, "model_slug": "gpt-4o"},
        ]),
        turn(KYOTO, flow_id="f5", at=T0 + 240, user_id="u3", user_text="And in the evening?", parent_id="a2e",
             assistant_id="a3", assistant_text="Gion is", status="in_progress", ttft_ms=650.0),
        turn(KYOTO, flow_id="f6", at=T0 + 300, action="continue", parent_id="a3", assistant_id="a3",
             assistant_text=A3_DONE, ttft_ms=400.0),
        turn(HAIKU, flow_id="f7", at=T0 + 3600, user_id="h1", user_text="Write a haiku about autumn.",
             parent_id=ROOT_ID, assistant_id="h2", assistant_text="Autumn moonlight—", status="in_progress"),
    )


@pytest.fixture(scope="module")
def kyoto_capture(tmp_path_factory):
    return load_capture(make_capture(tmp_path_factory.mktemp("conv") / "cap.parquet", kyoto_rows()))


@pytest.fixture(scope="module")
def kyoto(kyoto_capture):
    return build_conversation(kyoto_capture, KYOTO)


def ids(nodes) -> list[str]:
    return [n.id for n in nodes]


def test_regenerations_and_edits_are_siblings(kyoto):
    assert kyoto.roots == ["sys"]
    assert kyoto.nodes["sys"].children == ["u1"]  # the mapping's known parent beats client-created-root
    assert kyoto.nodes["a1"].children == ["u2", "u2e"]  # edit
    assert kyoto.nodes["u2"].children == ["a2", "a2b"]  # regeneration
    assert kyoto.nodes["a2e"].parent == "u2e"  # from the turn: the stream did not say
    assert kyoto.branch_points() == ["a1", "u2"]
    assert [ids(b)[-1] for b in kyoto.branches()] == ["a2", "a2b", "a3"]
    assert len(kyoto.nodes) == 10


def test_active_branch_follows_the_newest_leaf_after_an_older_read(kyoto):
    # The read said a2e, but u3/a3 were streamed after it: the newest leaf wins.
    assert kyoto.current_node == "a3"
    assert ids(kyoto.active_branch()) == ["sys", "u1", "a1", "u2e", "a2e", "u3", "a3"]


def test_later_mapping_copy_wins_over_the_stream(kyoto):
    a1 = kyoto.nodes["a1"]
    assert a1.text == A1_MAPPING
    assert a1.sources == ("mapping", "stream")
    assert a1.flow_id == "r1"
    assert a1.ttft_ms == 912.0  # still from the turn that produced it
    assert kyoto.title == "Kyoto trip planning"  # the read is newer than the title_generation


def test_request_message_without_conversation_id_joins_through_its_flow(kyoto):
    assert kyoto.nodes["u1"].sources == ("mapping", "stream", "request")


def test_continue_completes_the_broken_stream(kyoto):
    a3 = kyoto.nodes["a3"]
    assert (a3.text, a3.status, a3.flow_id) == (A3_DONE, "finished_successfully", "f6")
    assert a3.ttft_ms == 650.0  # the first turn's: when the user first saw this answer start
    assert kyoto.nodes["a3"].parent == "u3"


def test_broken_stream_stays_incomplete(kyoto_capture):
    haiku = build_conversation(kyoto_capture, HAIKU)
    assert ids(haiku.active_branch()) == ["h1", "h2"]
    assert haiku.nodes["h2"].status == "in_progress"
    assert haiku.title is None
    assert "INCOMPLETE (stream broke)" in render_markdown(haiku)


def test_model_and_times(kyoto):
    assert kyoto.nodes["a2b"].model_slug == "o3"
    # The regeneration re-sent u2 with a later create_time; the first one is kept.
    assert kyoto.nodes["u2"].create_time == pytest.approx(T0 + 60)
    assert kyoto.nodes["a2"].create_time < kyoto.nodes["a2b"].create_time


def test_openai_messages_of_the_active_branch(kyoto):
    assert kyoto.openai_messages() == [
        {"role": "user", "content": "Plan two days in Kyoto."},
        {"role": "assistant", "content": A1_MAPPING},
        {"role": "user", "content": "What about temples?"},
        {"role": "assistant", "content": "Kiyomizu-dera and Kinkaku-ji."},
        {"role": "user", "content": "And in the evening?"},
        {"role": "assistant", "content": A3_DONE},
    ]
    other = kyoto.path_to("a2b")
    assert kyoto.openai_messages(other)[-1] == {"role": "assistant", "content": "Book a kaiseki dinner."}


def test_to_json_shape(kyoto):
    doc = kyoto.to_json()
    assert list(doc) == ["conversation_id", "title", "current_node", "nodes"]
    assert {tuple(n) for n in doc["nodes"]} == {
        ("id", "parent", "children", "role", "content_type", "text", "model_slug", "create_time")}
    by_id = {n["id"]: n for n in doc["nodes"]}
    assert by_id["a1"]["children"] == ["u2", "u2e"] and by_id["sys"]["parent"] is None
    # Restricted to a branch, children only name nodes of that branch.
    active = {n["id"]: n for n in kyoto.to_json(kyoto.active_branch())["nodes"]}
    assert active["a1"]["children"] == ["u2e"]


def test_current_node_of_a_newer_read_wins(tmp_path):
    base = kyoto_rows()
    # The user went back to the regenerated answer a2b and the page read the conversation.
    everything = [{"id": r["message_id"], "parent": r["parent_id"], "role": r["role"], "text": r["text"]}
                  for r in base["messages"] if r["source"] == "stream" and r["conversation_id"] == KYOTO]
    rows = merge(base, mapping_read(KYOTO, flow_id="r2", at=T0 + 900, current_node="a2b", nodes=everything))
    cap = load_capture(make_capture(tmp_path / "cap.parquet", rows))
    conv = build_conversation(cap, KYOTO)
    assert conv.current_node == "a2b"
    assert ids(conv.active_branch())[-3:] == ["a1", "u2", "a2b"]

    # A turn streamed after that read moves the active branch to its answer.
    later = turn(KYOTO, flow_id="f8", at=T0 + 1000, user_id="u4", user_text="Cheaper?", parent_id="a2b",
                 assistant_id="a4", assistant_text="Try an izakaya.")
    cap = load_capture(make_capture(tmp_path / "cap2.parquet", merge(rows, later)))
    assert ids(build_conversation(cap, KYOTO).active_branch())[-3:] == ["a2b", "u4", "a4"]


def test_finished_copy_beats_a_later_in_progress_read(tmp_path):
    rows = merge(
        turn(KYOTO, flow_id="f1", at=T0, user_id="u1", user_text="Hi", parent_id=ROOT_ID,
             assistant_id="a1", assistant_text="Hello there, how can I help?"),
        # A read taken while the server still had the answer in progress.
        mapping_read(KYOTO, flow_id="r1", at=T0 + 60, current_node="a1", nodes=[
            {"id": "u1", "parent": None, "role": "user", "text": "Hi"},
            {"id": "a1", "parent": "u1", "role": "assistant", "text": "Hello", "status": "in_progress"},
        ]),
    )
    conv = build_conversation(load_capture(make_capture(tmp_path / "c.parquet", rows)), KYOTO)
    assert conv.nodes["a1"].text == "Hello there, how can I help?"
    assert conv.nodes["a1"].status == "finished_successfully"


def test_openai_leaves_out_hidden_empty_tool_and_thoughts(tmp_path):
    c, f = "conv-tools", "f1"

    def m(mid, parent, role, text, **kw):
        return message_row(c, mid, parent, role, text, source="mapping", flow_id=f, seen_at=T0,
                           create_time=T0 + len(mid), **kw)

    rows = {"messages": [
        m("s", None, "system", "Be brief."),
        m("s2", "s", "system", "", hidden=True),
        m("u", "s2", "user", "Weather in Kyoto?"),
        m("t", "u", "assistant", "thinking…", content_type="thoughts"),
        m("call", "t", "assistant", "search('kyoto weather')", content_type="code", recipient="web"),
        m("res", "call", "tool", "12°C, clear", author_name="web"),
        m("empty", "res", "assistant", "   "),
        m("ans", "empty", "assistant", "12°C and clear."),
    ]}
    conv = build_conversation(load_capture(make_capture(tmp_path / "c.parquet", rows)), c)
    assert len(conv.active_branch()) == 8
    assert conv.openai_messages() == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Kyoto?"},
        {"role": "assistant", "content": "12°C and clear."},
    ]


def test_messages_known_only_from_turns(tmp_path):
    rows = turn("conv-sparse", flow_id="f1", at=T0, user_id="u1", user_text="Ping", parent_id=ROOT_ID,
                assistant_id="a1", assistant_text="Pong", title="Ping")
    rows["messages"] = []  # an extractor that only filled conversation_turns
    conv = build_conversation(load_capture(make_capture(tmp_path / "c.parquet", rows)), "conv-sparse")
    assert conv.openai_messages() == [{"role": "user", "content": "Ping"}, {"role": "assistant", "content": "Pong"}]
    assert conv.nodes["a1"].sources == ("turn",)


def test_har_like_rows_without_times_or_answer_ids(tmp_path):
    """No arrival times, no create_time, turns that do not name their answer: the flow's turn
    still orders the messages and gives the answer its model and TTFT."""
    rows = merge(
        turn("conv-har", flow_id="f1", at=T0, user_id="u1", user_text="First", parent_id=ROOT_ID,
             assistant_id="a1", assistant_text="One", model="gpt-4o", ttft_ms=700.0),
        turn("conv-har", flow_id="f2", at=T0 + 60, user_id="u2", user_text="Edited first", parent_id=ROOT_ID,
             assistant_id="a2", assistant_text="Two", model="o3", ttft_ms=1500.0),
    )
    for m in rows["messages"]:
        m.update(seen_at=None, create_time=None, model_slug=None)
    for t in rows["conversation_turns"]:
        t["assistant_message_id"] = None
    conv = build_conversation(load_capture(make_capture(tmp_path / "c.parquet", rows)), "conv-har")
    assert conv.roots == ["u1", "u2"]
    assert ids(conv.active_branch()) == ["u2", "a2"]
    assert (conv.nodes["a2"].model_slug, conv.nodes["a2"].ttft_ms) == ("o3", 1500.0)
    assert conv.nodes["u2"].model_slug is None and conv.nodes["u2"].ttft_ms is None
    assert conv.branch_points() == [ROOT_ID]


def test_parent_loop_is_cut(tmp_path):
    rows = {"messages": [
        message_row("loop", "x", "y", "user", "x", source="mapping", flow_id="f", seen_at=T0, create_time=T0),
        message_row("loop", "y", "x", "assistant", "y", source="mapping", flow_id="f", seen_at=T0,
                    create_time=T0 + 1),
    ]}
    conv = build_conversation(load_capture(make_capture(tmp_path / "c.parquet", rows)), "loop")
    assert len(conv.roots) == 1
    assert len(conv.walk()) == 2


def test_unknown_and_ambiguous_ids(kyoto_capture):
    with pytest.raises(KeyError, match="no conversation 'nope'"):
        build_conversation(kyoto_capture, "nope")
    with pytest.raises(ConversationNotFound, match="ambiguous"):
        build_conversation(kyoto_capture, "6790")
    assert build_conversation(kyoto_capture, "6790a1").conversation_id == KYOTO


def test_list_conversations(kyoto_capture):
    df = list_conversations(kyoto_capture)
    assert list(df.columns) == ["conversation_id", "title", "turns", "messages", "models", "first_at", "last_at"]
    assert list(df["conversation_id"]) == [HAIKU, KYOTO]  # newest activity first
    kyoto = df.set_index("conversation_id").loc[KYOTO]
    assert kyoto["title"] == "Kyoto trip planning"
    assert kyoto["turns"] == 6  # the mapping read is not a turn
    assert kyoto["messages"] == 10
    assert kyoto["models"] == "gpt-4o, o3"
    assert kyoto["first_at"] == pd.Timestamp(T0 - 1, unit="s", tz="UTC")  # the system message's create_time
    assert kyoto["last_at"] > pd.Timestamp(T0 + 300, unit="s", tz="UTC")
    assert pd.isna(df.set_index("conversation_id").loc[HAIKU, "title"])


def test_empty_capture_lists_nothing(tmp_path):
    assert list_conversations(load_capture(make_capture(tmp_path / "c.parquet"))).empty


# --- property: row order and duplicate sightings do not change the tree --------------------------


def _frames(rows: dict[str, list[dict]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    return (rows_to_table("messages", rows.get("messages", [])).to_pandas(),
            rows_to_table("conversation_turns", rows.get("conversation_turns", [])).to_pandas())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parents=st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=12),
       seed=st.integers(min_value=0, max_value=2**16))
def test_tree_does_not_depend_on_row_order(parents, seed):
    """A random tree, every message seen from 1–3 random sources in a random row order."""
    rng = random.Random(seed)
    parent_of = {f"m{i}": (f"m{p % i}" if i and p else None) for i, p in enumerate(parents)}
    rows = []
    for i, (mid, parent) in enumerate(parent_of.items()):
        for source in rng.sample(["request", "stream", "mapping"], rng.randint(1, 3)):
            rows.append(message_row("c", mid, parent or ROOT_ID, "user" if i % 2 else "assistant", f"text {mid}",
                                    source=source, flow_id=f"f{i}", seen_at=T0 + i + rng.random(),
                                    create_time=T0 + i))
    rng.shuffle(rows)
    conv = conversation_from_frames(*_frames({"messages": rows}), "c")
    assert {n.id: n.parent for n in conv.nodes.values()} == parent_of
    assert sorted(ids(conv.walk())) == sorted(parent_of)
    leaf = conv.active_branch()[-1]
    assert not leaf.children and leaf.id == max((m for m in parent_of if not conv.nodes[m].children),
                                               key=lambda m: int(m[1:]))
