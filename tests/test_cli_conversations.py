"""`analyze conversations` through click's runner, on real Parquet captures.

Golden files: ``CHATWIRE_UPDATE_GOLDEN=1`` rewrites tests/golden/conversations_*.md after an intended
change (tests/golden.py, the one switch for every golden test); then review the diff.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from analyzer.analysis import build_conversation
from analyzer.cli import main
from analyzer.store import load_capture
from tests.capture_factory import make_capture
from tests.golden import check_golden
from tests.test_conversations import A3_DONE, HAIKU, KYOTO, kyoto_rows


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    return make_capture(tmp_path_factory.mktemp("cli") / "cap.parquet", kyoto_rows())


def run(*args: str):
    return CliRunner().invoke(main, ["conversations", *map(str, args)])


def ok(*args: str) -> str:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def fails(*args: str) -> str:
    """The command failed with exactly one line of explanation and nothing on stdout."""
    result = run(*args)
    assert result.exit_code != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_list_text_one_line_per_conversation(capture, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # a terminal 80 columns wide
    lines = ok(capture).splitlines()
    assert len(lines) == 3  # header + one per conversation
    assert lines[1].startswith(HAIKU) and lines[2].startswith(KYOTO)
    assert "Kyoto trip planning" in lines[2] and " 6/10 " in lines[2] and "(untitled)" in lines[1]
    assert all(len(line) <= 80 for line in lines)


def test_list_markdown_and_json(capture):
    table = ok(capture, "--format", "markdown").splitlines()
    assert len(table) == 4 and f"`{KYOTO}`" in table[3]
    records = json.loads(ok(capture, "-f", "json"))
    assert [r["conversation_id"] for r in records] == [HAIKU, KYOTO]
    assert records[1]["models"] == ["gpt-4o", "o3"] and records[1]["turns"] == 6
    assert records[1]["first_at"] < records[1]["last_at"]


@pytest.mark.parametrize("branch", ["active", "all"])
def test_markdown_golden(capture, branch):
    check_golden(f"conversations_{branch}.md", ok(capture, "-c", KYOTO, "-f", "markdown", "--branch", branch))


def test_markdown_broken_stream_golden(capture):
    check_golden("conversations_broken.md", ok(capture, "-c", HAIKU, "-f", "markdown"))


@pytest.mark.parametrize("branch", ["active", "all"])
def test_text_fits_80_columns(capture, branch):
    text = ok(capture, "-c", KYOTO, "--branch", branch)
    assert all(len(line) <= 80 for line in text.splitlines())
    assert A3_DONE in text
    assert ("Book a kaiseki dinner." in text) == (branch == "all")


def test_json_tree(capture):
    active = json.loads(ok(capture, "-c", KYOTO, "-f", "json"))
    full = json.loads(ok(capture, "-c", KYOTO, "-f", "json", "--branch", "all"))
    assert active["current_node"] == full["current_node"] == "a3"
    assert [n["id"] for n in active["nodes"]] == ["sys", "u1", "a1", "u2e", "a2e", "u3", "a3"]
    assert len(full["nodes"]) == 10
    assert full == build_conversation(load_capture(capture), KYOTO).to_json()


def test_openai_messages(capture):
    messages = json.loads(ok(capture, "-c", "6790a1", "-f", "openai"))
    assert messages == build_conversation(load_capture(capture), KYOTO).openai_messages()
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3
    assert all(set(m) == {"role", "content"} for m in messages)


def test_output_file(capture, tmp_path):
    out = tmp_path / "context.json"
    result = run(capture, "-c", KYOTO, "-f", "openai", "-o", out)
    assert result.exit_code == 0 and result.stdout == ""
    assert json.loads(out.read_text())[-1]["content"] == A3_DONE


def test_unknown_conversation(capture):
    line = fails(capture, "-c", "no-such-id")
    assert str(capture) in line and "no conversation 'no-such-id'" in line
    assert "ambiguous" in fails(capture, "-c", "6790")


def test_openai_needs_one_active_branch(capture):
    assert "--conversation" in fails(capture, "-f", "openai")
    assert "active branch" in fails(capture, "-c", KYOTO, "-f", "openai", "--branch", "all")


def test_not_a_capture(tmp_path):
    some_file = tmp_path / "notes.txt"
    some_file.write_text("hello")
    assert "not a capture" in fails(some_file)
    (tmp_path / "empty").mkdir()
    assert "not a capture" in fails(tmp_path / "empty")
    assert "does not exist" in fails(tmp_path / "missing")


def test_capture_missing_tables(capture, tmp_path):
    broken = tmp_path / "broken.parquet"
    shutil.copytree(capture, broken)
    shutil.rmtree(broken / "messages")
    shutil.rmtree(broken / "flows")
    line = fails(broken, "-c", KYOTO)
    assert str(broken) in line and "messages" in line and "flows" in line


def test_unreadable_table(capture, tmp_path):
    broken = tmp_path / "corrupt.parquet"
    shutil.copytree(capture, broken)
    (broken / "messages" / "part-9999999999999-bad-000001.parquet").write_bytes(b"not parquet at all")
    line = fails(broken)
    assert str(broken) in line and "messages" in line


def test_end_to_end_through_the_extractor(tmp_path):
    """Real flows through the real extractor and writer: a streamed v1 turn, then a read of the
    conversation after the user regenerated the answer."""
    from analyzer.extract import extract_flow
    from analyzer.store import CaptureWriter
    from tests.flows_factory import make_flow

    stream = (Path(__file__).parent / "fixtures" / "streams" / "v1_answer.sse").read_bytes()
    request = {"action": "next", "model": "auto", "parent_message_id": "client-created-root", "messages": [
        {"id": "user-1", "author": {"role": "user"}, "content": {"content_type": "text", "parts": ["name three rivers"]}}]}
    turn_flow = make_flow("POST", "/backend-api/f/conversation", body=request, response_body=stream,
                          content_type="text/event-stream; charset=utf-8",
                          chunk_times=[0.1 * (i + 1) for i in range(10)], start=1769267362.0)
    conv_id = "67a0c1de-0000-8000-9000-00000000c0de"

    def msg(mid, role, text, **extra):
        return {"id": mid, "author": {"role": role}, "create_time": extra.pop("t", None),
                "content": {"content_type": "text", "parts": [text]}, "status": "finished_successfully",
                "recipient": "all", "metadata": extra}

    mapping = {
        "root": {"id": "root", "message": None, "parent": None, "children": ["sys-1"]},
        "sys-1": {"id": "sys-1", "message": msg("sys-1", "system", "", is_visually_hidden_from_conversation=True),
                  "parent": "root", "children": ["user-1"]},
        "user-1": {"id": "user-1", "message": msg("user-1", "user", "name three rivers", t=1769267362.839),
                   "parent": "sys-1", "children": ["asst-1", "asst-2"]},
        "asst-1": {"id": "asst-1", "message": msg("asst-1", "assistant", "Nile, Amazon and Danube.", t=1769267363.5,
                                                  model_slug="gpt-5-2"), "parent": "user-1", "children": []},
        "asst-2": {"id": "asst-2", "message": msg("asst-2", "assistant", "Rhine, Mekong and Volga.", t=1769267400.0,
                                                  model_slug="gpt-5-2"), "parent": "user-1", "children": []},
    }
    read = {"title": "Three rivers (renamed)", "mapping": mapping, "current_node": "asst-2", "conversation_id": conv_id}
    read_flow = make_flow("GET", f"/backend-api/conversation/{conv_id}", response_body=json.dumps(read),
                          start=1769267500.0)
    with CaptureWriter(tmp_path / "cap.parquet") as writer:
        for flow in (turn_flow, read_flow):
            writer.add(extract_flow(flow, source="proxy"))

    doc = json.loads(ok(tmp_path / "cap.parquet", "-c", conv_id, "-f", "json", "--branch", "all"))
    assert doc["title"] == "Three rivers (renamed)" and doc["current_node"] == "asst-2"
    by_id = {n["id"]: n for n in doc["nodes"]}
    assert by_id["user-1"]["children"] == ["asst-1", "asst-2"] and by_id["sys-1"]["parent"] is None
    assert json.loads(ok(tmp_path / "cap.parquet", "-c", conv_id, "-f", "openai")) == [
        {"role": "user", "content": "name three rivers"},
        {"role": "assistant", "content": "Rhine, Mekong and Volga."},
    ]
    markdown = ok(tmp_path / "cap.parquet", "-c", conv_id, "-f", "markdown", "--branch", "all")
    assert "TTFT" in markdown and "Nile, Amazon and Danube." in markdown
