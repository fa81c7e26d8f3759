"""The Parquet writer and reader: schemas, atomic parts, crash safety, combining captures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analyzer.schema import TABLES
from analyzer.store import CaptureError, CaptureWriter, load_capture

ROOT = Path(__file__).resolve().parent.parent


def test_new_capture_has_every_table_with_its_schema(tmp_path):
    CaptureWriter(tmp_path / "c.parquet").close()
    for name, schema in TABLES.items():
        frame = pd.read_parquet(tmp_path / "c.parquet" / name)
        # every table is empty but the run's own row in captures
        assert list(frame.columns) == schema.names and len(frame) == (name == "captures")
    con = duckdb.connect()
    assert con.execute(f"select count(*) from read_parquet('{tmp_path}/c.parquet/flows/*.parquet')").fetchone() == (0,)


def test_rows_round_trip_and_captures_combine(tmp_path):
    for i, name in enumerate(["a.parquet", "b.parquet"]):
        with CaptureWriter(tmp_path / name) as writer:
            writer.add({"flows": [{"flow_id": f"f{i}", "kind": "conversation", "started_at": 1700000000.5 + i,
                                   "ttfb_ms": 12.5, "streamed": True}]})
    capture = load_capture([tmp_path / "a.parquet", tmp_path / "b.parquet"])
    flows = capture.table("flows").sort_values("flow_id")
    assert list(flows.flow_id) == ["f0", "f1"]
    assert str(flows.started_at.iloc[0]) == "2023-11-14 22:13:20.500000+00:00"
    assert pd.read_parquet(tmp_path / "a.parquet" / "flows").shape[0] == 1


def test_a_bad_row_costs_only_itself(tmp_path):
    with CaptureWriter(tmp_path / "c.parquet") as writer:
        writer.add({"flows": [{"flow_id": "good-1", "kind": "api"}, {"flow_id": "bad", "nonsense": 1},
                              {"flow_id": "bad-type", "status_code": "two hundred"}, {"flow_id": "good-2"}]})
    capture = load_capture(tmp_path / "c.parquet")
    assert sorted(capture.table("flows").flow_id) == ["good-1", "good-2"]
    errors = capture.table("errors")
    assert sorted(errors.flow_id) == ["bad", "bad-type"] and set(errors.stage) == {"write"}


def test_hidden_temporary_parts_are_ignored(tmp_path):
    with CaptureWriter(tmp_path / "c.parquet") as writer:
        writer.add({"errors": [{"flow_id": "x", "stage": "s", "error": "e"}]})
    (tmp_path / "c.parquet" / "errors" / ".part-half-written.parquet.tmp").write_bytes(b"PAR1garbage")
    assert len(pd.read_parquet(tmp_path / "c.parquet" / "errors")) == 1
    assert len(load_capture(tmp_path / "c.parquet").table("errors")) == 1


def test_one_part_writer_streams_flushes_into_one_file_published_on_close(tmp_path):
    path = tmp_path / "c.parquet"
    writer = CaptureWriter(path, one_part=True)
    for batch in range(3):
        writer.add({"flows": [{"flow_id": f"f{batch}-{i}", "started_at": 1700000000.0 + i} for i in range(4)],
                    "errors": [{"flow_id": f"e{batch}", "stage": "import", "error": "x"}]})
        writer.flush()
    # nothing published yet: only the empty parts of a new capture are visible
    assert len(load_capture(path).table("flows")) == 0
    writer.close()
    parts = sorted(p.name for p in (path / "flows").glob("part-*.parquet") if "empty" not in p.name)
    assert len(parts) == 1 and not list((path / "flows").glob(".*.tmp"))
    meta = pq.ParquetFile(path / "flows" / parts[0]).metadata
    assert meta.num_row_groups == 3 and meta.num_rows == 12
    capture = load_capture(path)
    assert sorted(capture.table("flows").flow_id) == sorted(f"f{b}-{i}" for b in range(3) for i in range(4))
    assert len(capture.table("errors")) == 3


def test_one_part_writer_abandoned_leaves_no_file(tmp_path):
    path = tmp_path / "c.parquet"
    writer = CaptureWriter(path, one_part=True)
    writer.add({"flows": [{"flow_id": "f"}]})
    writer.flush()
    writer.abandon()
    assert not [p for p in path.rglob("*") if p.is_file() and "empty" not in p.name]


def test_reader_errors_are_one_line(tmp_path):
    with pytest.raises(CaptureError, match="does not exist"):
        load_capture(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CaptureError, match="not a capture"):
        load_capture(tmp_path / "file.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CaptureError, match="not a capture"):
        load_capture(tmp_path / "empty")
    CaptureWriter(tmp_path / "c.parquet").close()
    for part in (tmp_path / "c.parquet" / "messages").iterdir():
        part.unlink()
    (tmp_path / "c.parquet" / "messages").rmdir()
    with pytest.raises(CaptureError, match="missing table.*messages"):
        load_capture(tmp_path / "c.parquet")


WRITER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    from analyzer.store import CaptureWriter
    writer = CaptureWriter(sys.argv[1], flush_ms=int(sys.argv[2]))
    i = 0
    while True:
        writer.add({{"flows": [{{"flow_id": f"f{{i}}", "kind": "x"}}]}})
        print(i, time.time(), flush=True)
        i += 1
        time.sleep(0.002)
    """
)


def test_kill_9_loses_nothing_older_than_flush_interval(tmp_path):
    flush_ms = 200
    script = tmp_path / "writer.py"
    script.write_text(WRITER_SCRIPT.format(root=str(ROOT)))
    capture = tmp_path / "c.parquet"
    proc = subprocess.Popen([sys.executable, str(script), str(capture), str(flush_ms)], stdout=subprocess.PIPE, text=True)
    added: list[tuple[int, float]] = []
    # The 1.5 s of writing start when the writer is ready (its first row), not at the process start:
    # imports and opening a capture of many tables take longer than that on a loaded machine.
    i, at = proc.stdout.readline().split()
    added.append((int(i), float(at)))
    deadline = time.time() + 1.5
    while time.time() < deadline:
        line = proc.stdout.readline()
        i, at = line.split()
        added.append((int(i), float(at)))
    os.kill(proc.pid, signal.SIGKILL)
    killed_at = time.time()
    proc.wait()
    for line in proc.stdout:  # rows added between our last read and the kill
        i, at = line.split()
        added.append((int(i), float(at)))
    ids = set(load_capture(capture).table("flows").flow_id)  # reads without any repair
    must_have = {f"f{i}" for i, at in added if at < killed_at - flush_ms / 1000}
    assert must_have and must_have <= ids
    for part in (capture / "flows").glob("*.parquet"):
        pq.read_metadata(part)  # every visible part is a whole Parquet file


def _capture_with_parts(path: Path, n: int) -> None:
    for i in range(n):
        with CaptureWriter(path) as writer:
            writer.add({"flows": [{"flow_id": f"f{i}", "kind": "api", "started_at": 1700000000.0 + i}]})


def test_compaction_merges_parts_and_keeps_every_row(tmp_path):
    from analyzer.store.compact import compact_capture, visible_parts

    path = tmp_path / "c.parquet"
    _capture_with_parts(path, 5)
    before = load_capture(path).table("flows").sort_values("flow_id").reset_index(drop=True)
    assert len(visible_parts(path / "flows")) == 6  # the empty part and five parts
    merged = compact_capture(path)
    assert merged["flows"] == 6 and len(visible_parts(path / "flows")) == 1
    after = load_capture(path).table("flows").sort_values("flow_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)
    assert len(pd.read_parquet(path / "flows")) == 5  # foreign readers see the same
    # small parts gathered into one row group, not one row group each
    assert pq.ParquetFile(visible_parts(path / "flows")[0]).metadata.num_row_groups == 1


def test_compaction_row_groups_are_bounded_by_rows_and_bytes(tmp_path, monkeypatch):
    from analyzer.store import compact
    from analyzer.store.compact import compact_capture, visible_parts

    path = tmp_path / "c.parquet"
    _capture_with_parts(path, 7)
    monkeypatch.setattr(compact, "ROW_GROUP_ROWS", 3)
    compact_capture(path)
    meta = pq.ParquetFile(visible_parts(path / "flows")[0]).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [3, 3, 1]
    _capture_with_parts(path, 2)
    monkeypatch.setattr(compact, "ROW_GROUP_ROWS", 1_000_000)
    monkeypatch.setattr(compact, "ROW_GROUP_BYTES", 1)  # every part on its own
    compact_capture(path)
    meta = pq.ParquetFile(visible_parts(path / "flows")[0]).metadata
    assert meta.num_rows == 9 and meta.num_row_groups == 3  # the merged part (7 rows) and the two new ones


def test_compaction_interrupted_by_a_crash_counts_rows_once_and_is_finished_on_open(tmp_path):
    import json as _json

    from analyzer.store.compact import visible_parts

    path = tmp_path / "c.parquet"
    _capture_with_parts(path, 3)
    flows = path / "flows"
    sources = [p.name for p in visible_parts(flows)]
    # the state after step 2 of a compaction: merged part visible, sources not yet deleted
    table = pa.concat_tables([pq.read_table(flows / s, schema=TABLES["flows"]) for s in sources])
    pq.write_table(table, flows / "part-9999999999999-compact-deadbeef.parquet")
    (flows / ".compact-deadbeef.json").write_text(_json.dumps(
        {"merged": "part-9999999999999-compact-deadbeef.parquet", "sources": sources}))
    assert sorted(load_capture(path).table("flows").flow_id) == ["f0", "f1", "f2"]
    CaptureWriter(path).close()  # opening the capture finishes the job
    assert [p.name for p in visible_parts(flows)] == ["part-9999999999999-compact-deadbeef.parquet"]
    assert not list(flows.glob(".compact-*"))
    # a crash before the merged part became visible: the journal alone changes nothing
    (flows / ".compact-cafe.json").write_text(_json.dumps({"merged": "part-never-written.parquet",
                                                            "sources": ["part-9999999999999-compact-deadbeef.parquet"]}))
    assert sorted(load_capture(path).table("flows").flow_id) == ["f0", "f1", "f2"]


def test_a_compaction_interrupted_in_a_date_partition_counts_rows_once_and_is_finished_on_open(tmp_path):
    import json as _json

    from analyzer.store.compact import visible_parts

    path = tmp_path / "c.parquet"
    day = 1793491200.0  # 2026-11-01 UTC (not the day the test runs: its empty parts are elsewhere)
    for i in range(3):
        with CaptureWriter(path, partition="date") as writer:
            writer.add({"flows": [{"flow_id": f"f{i}", "kind": "api", "started_at": day + i}]}, at=day + i)
    flows = path / "flows" / "date=2026-11-01"
    sources = [p.name for p in visible_parts(flows)]
    assert len(sources) == 3
    table = pa.concat_tables([pq.read_table(flows / s, schema=TABLES["flows"]) for s in sources])
    pq.write_table(table, flows / "part-9999999999999-compact-deadbeef.parquet")
    (flows / ".compact-deadbeef.json").write_text(_json.dumps(
        {"merged": "part-9999999999999-compact-deadbeef.parquet", "sources": sources}))
    assert sorted(load_capture(path).table("flows").flow_id) == ["f0", "f1", "f2"]
    CaptureWriter(path, partition="date").close()  # opening the capture finishes the job
    assert [p.name for p in visible_parts(flows)] == ["part-9999999999999-compact-deadbeef.parquet"]
    assert not list(flows.glob(".compact-*"))
    assert sorted(load_capture(path).table("flows").flow_id) == ["f0", "f1", "f2"]


def test_analyze_compact_command(tmp_path):
    from click.testing import CliRunner

    from analyzer.cli import main

    path = tmp_path / "c.parquet"
    _capture_with_parts(path, 3)
    result = CliRunner().invoke(main, ["compact", str(path)])
    assert result.exit_code == 0, result.output
    assert "flows: 4 parts merged into 1" in result.output
    assert sorted(load_capture(path).table("flows").flow_id) == ["f0", "f1", "f2"]
    bad = CliRunner().invoke(main, ["compact", str(tmp_path / "missing")])
    assert bad.exit_code != 0 and "does not exist" in bad.output


def test_a_capture_from_before_a_table_existed_reads_it_as_empty(tmp_path):
    """Captures written by an older chatwire lack the folders of tables added since: still readable."""
    import shutil

    from analyzer.schema import FIRST_TABLES, TABLES
    from analyzer.store import CaptureError

    path = tmp_path / "old.parquet"
    with CaptureWriter(path) as writer:
        writer.add({"flows": [{"flow_id": "f1", "kind": "api", "started_at": 1700000000.0}]})
    later = [name for name in TABLES if name not in FIRST_TABLES]
    assert later  # tables were added after the first format
    for name in later:
        shutil.rmtree(path / name)
    capture = load_capture(path)
    assert list(capture.table("flows").flow_id) == ["f1"]
    for name in later:
        assert capture.table(name).empty and list(capture.table(name).columns) == TABLES[name].names
    shutil.rmtree(path / "flows")  # a first-format table missing: incomplete, one line naming it
    with pytest.raises(CaptureError, match="missing table.*flows"):
        load_capture(path)


def test_a_run_compacted_while_it_writes_still_lists_once_with_its_end(tmp_path):
    from analyzer.store.compact import compact_capture

    path = tmp_path / "c.parquet"
    writer = CaptureWriter(path, label="fra", source="live")
    writer.add({"flows": [{"flow_id": "f0", "kind": "api"}]})
    writer.flush()
    compact_capture(path)  # `analyze compact` while the proxy runs: its start row is merged away
    writer.close()
    runs = load_capture(path).captures()
    assert len(pd.read_parquet(path / "captures")) == 2  # the start row (merged) and the end row
    assert runs["capture_id"].tolist() == [writer.capture_id] and runs["ended_at"].notna().all()
    assert runs["label"].tolist() == ["fra"] and runs["path"].tolist() == [str(path)]


def test_a_one_part_writer_over_many_days_keeps_its_open_files_bounded(tmp_path):
    from analyzer.store.writer import MAX_OPEN_PARTS

    path = tmp_path / "c.parquet"
    day0 = 1767225600.0  # 2026-01-01 UTC
    writer = CaptureWriter(path, one_part=True, partition="date", source="import")
    most_open = 0
    for day in range(100):
        for table in ("flows", "stream_events"):
            writer.add({table: [{"flow_id": f"d{day}", "seq": 0} if table == "stream_events" else {"flow_id": f"d{day}"}]},
                       at=day0 + day * 86400 + 3600)
        writer.flush()
        most_open = max(most_open, len(writer._open_parts))
    writer.close()
    assert most_open <= MAX_OPEN_PARTS
    cap = load_capture(path)
    assert len(cap.table("flows")) == len(cap.table("stream_events")) == 100
    days = sorted(p.name for p in (path / "flows").iterdir() if p.name.startswith("date=2026-0"))
    assert len(days) == 100 and days[0] == "date=2026-01-01" and days[-1] == "date=2026-04-10"
    assert not list(path.rglob(".*.tmp"))
