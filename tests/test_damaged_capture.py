"""A damaged capture part: every command says so in one line that names the file, exit status 1.

The check lives in one place (``analyzer.store.reader.check_part``, through ``Capture.arrow`` and
``Capture.part_files``); these tests run each command on a capture with a truncated part, with a
part of another table dropped in, and with a part written before a column existed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from analyzer.cli import main
from analyzer.schema import TABLES
from analyzer.store import load_capture
from analyzer.store.compact import visible_parts
from tests.capture_factory import make_capture, merge, turn

T0 = 1_735_812_000.0
CONV = "6790a1b2-0c3d-800a-9f1e-4b2c6d8e0f11"


def _rows():
    return merge(*[turn(CONV, flow_id=f"f{i}", at=T0 + 60 * i, user_id=f"u{i}", user_text=f"q{i}",
                        assistant_id=f"a{i}", assistant_text=f"answer {i}",
                        parent_id="client-created-root" if i == 0 else f"a{i - 1}") for i in range(3)])


@pytest.fixture
def capture(tmp_path) -> Path:
    return make_capture(tmp_path / "cap.parquet", _rows())


def _data_part(capture: Path, table: str) -> Path:
    return next(p for p in visible_parts(capture / table) if "empty" not in p.name)


def _truncate(part: Path) -> None:
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def _snapshot(capture: Path) -> dict[str, bytes]:
    return {str(p.relative_to(capture)): p.read_bytes() for p in capture.rglob("*") if p.is_file()}


@pytest.mark.parametrize("command", [
    ["tables"], ["report"], ["report", "-f", "html"], ["conversations"], ["conversations", "-c", CONV],
    ["compact"], ["serve", "--port", "0"],
    ["replay", "--conversation", CONV, "--base-url", "http://127.0.0.1:9/v1"],
])
def test_truncated_part_is_one_line_naming_it_for_every_command(capture, command):
    part = _data_part(capture, "conversation_turns")  # a table every one of these commands reads
    _truncate(part)
    before = _snapshot(capture)
    result = run(command[0], capture, *command[1:], env={"OPENAI_API_KEY": "x"})
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # a ClickException's exit, not an escaped traceback
    assert result.stderr.startswith(f"Error: {part}: damaged part of table conversation_turns (")
    assert result.stderr.count("\n") == 1
    assert _snapshot(capture) == before  # nothing written, no journal, no temp file left behind


def test_compact_with_a_damaged_only_part_fails_and_leaves_no_journal(capture):
    # stream_events: merge the parts first, so that the table has one part only, then damage it.
    assert run("compact", capture).exit_code == 0
    (only,) = visible_parts(capture / "stream_events")
    _truncate(only)
    result = run("compact", capture)
    assert result.exit_code == 1 and result.stderr.startswith(f"Error: {only}: damaged part of table stream_events")
    leftovers = [p.name for p in capture.rglob(".*")]
    assert leftovers == []


def test_compact_that_fails_midway_removes_its_journal_and_temp_file(capture, monkeypatch):
    import analyzer.store.compact as compact

    real = compact.pq.ParquetWriter.write_table

    def full_disk(self, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(compact.pq.ParquetWriter, "write_table", full_disk)
    before = _snapshot(capture)
    with pytest.raises(OSError):
        compact.compact_table(capture / "flows", "flows")
    monkeypatch.setattr(compact.pq.ParquetWriter, "write_table", real)
    assert _snapshot(capture) == before and [p.name for p in (capture / "flows").glob(".*")] == []


def test_analyze_compact_on_a_full_disk_is_one_line(capture, monkeypatch):
    import analyzer.store.compact as compact

    def full_disk(self, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(compact.pq.ParquetWriter, "write_table", full_disk)
    before = _snapshot(capture)
    result = run("compact", capture)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.stderr == (f"Error: cannot compact {capture}: No space left on device (ENOSPC); "
                             f"its parts are as they were\n")
    assert _snapshot(capture) == before


def test_part_of_another_table_dropped_in_is_rejected(capture):
    foreign = capture / "flows" / "part-9999999999999-foreign.parquet"
    shutil.copy(_data_part(capture, "stream_events"), foreign)
    result = run("tables", capture)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {foreign}: not a part of table flows (column(s) seq, at, offset_ms")
    assert "every part of a table has its schema" in result.stderr


def test_part_with_a_column_of_another_type_is_rejected(capture):
    bad = capture / "flows" / "part-9999999999999-badtype.parquet"
    pq.write_table(pa.table({"flow_id": ["x"], "port": ["443"]}), bad)
    result = run("tables", capture)
    assert result.exit_code == 1 and "(port is string, not int64)" in result.stderr


def test_part_written_before_a_column_existed_is_read_with_nulls(capture):
    old = capture / "flows" / "part-0000000000001-old.parquet"
    schema = TABLES["flows"]
    pq.write_table(pa.table({"flow_id": ["old1"], "kind": ["conversation"]},
                            schema=pa.schema([schema.field("flow_id"), schema.field("kind")])), old)
    flows = load_capture(capture).table("flows")
    assert len(flows) == 3 + 1
    row = flows[flows["flow_id"] == "old1"].iloc[0]
    assert row["kind"] == "conversation" and pd.isna(row["host"])


def test_not_parquet_at_all(capture):
    junk = capture / "messages" / "part-9999999999999-junk.parquet"
    junk.write_bytes(b"PAR1 not really")
    result = run("conversations", capture)
    assert result.exit_code == 1 and result.stderr.startswith(f"Error: {junk}: damaged part of table messages")
