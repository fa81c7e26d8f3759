"""Many captures as one dataset: capture ids, labels, date partitions, dataset roots and globs.

Two real mitmdump captures (``capture_label`` fra and iad, ``capture_partition=date``) of the same
scripted session against our origin, under one dataset root; the fra proxy also writes a
``-w`` flow file that is imported with ``--label``/``--partition``. Every check counts against
what the client sent (the session's record) or against the per-capture numbers, never a
constant of chatwire's own making.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from analyzer.cli import main
from analyzer.schema import TABLES
from analyzer.store import CaptureError, CaptureWriter, load_capture
from analyzer.store.compact import compact_capture, visible_parts
from analyzer.store.files import partition_dirs
from tests.origin.mitm import run_mitmdump
from tests.origin.session import run_session

ROOT = Path(__file__).resolve().parent.parent
ADDON = ROOT / "addons" / "chatgpt_capture.py"
SAMPLE = ROOT / "captures" / "sample.parquet"
ANALYZE = Path(sys.executable).parent / "analyze"


def _capture_live(workdir: Path, origin, capture: Path, label: str, flow_file: Path | None = None) -> dict:
    proxy = run_mitmdump(workdir, script=ADDON, confdir=workdir / "confdir", flow_file=flow_file,
                         options={"capture_path": capture, "capture_flush_ms": 200, "capture_label": label,
                                  "capture_partition": "date"})
    try:
        record = run_session(origin.url, proxy=proxy.proxy_url, verify=ssl.create_default_context(cafile=str(proxy.ca_path)),
                             formats=("legacy", "v1"), n_turns=2, delays=(20, 5))
    finally:
        code = proxy.stop()
    assert code == 0 and "Traceback" not in proxy.log_text(), proxy.log_text()[-2000:]
    return {"record": record, "log": proxy.log_text()}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, origin) -> dict:
    work = tmp_path_factory.mktemp("campaign")
    root = work / "campaign"
    fra, iad = root / "fra" / "day.parquet", root / "iad" / "day.parquet"
    flow_file = work / "fra.mitm"
    runs = {"fra": _capture_live(work, origin, fra, "fra", flow_file), "iad": _capture_live(work, origin, iad, "iad")}
    return {"work": work, "root": root, "fra": fra, "iad": iad, "flow_file": flow_file, "runs": runs}


def _every_row(capture) -> dict[str, pd.DataFrame]:
    return {name: capture.table(name) for name in TABLES}


def _utc_day(ts) -> str:
    return pd.Timestamp(ts).tz_convert("UTC").strftime("%Y-%m-%d")


def _flow_dates(capture_path: Path) -> dict[str, set[str]]:
    """flow_id -> the date= partitions its rows are in, over every table (read without chatwire)."""
    out: dict[str, set[str]] = {}
    for name in TABLES:
        if "flow_id" not in TABLES[name].names:
            continue
        for part in (capture_path / name).rglob("*.parquet"):
            if part.name.startswith("."):
                continue
            date = part.parent.name.removeprefix("date=")
            for fid in pq.read_table(part, columns=["flow_id"]).column(0).to_pylist():
                if fid:
                    out.setdefault(fid.split("#")[0], set()).add(date)
    return out


def test_a_live_capture_is_stamped_labelled_partitioned_and_private(campaign):
    path = campaign["fra"]
    cap = load_capture(path)
    runs = cap.captures()
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run.label == "fra" and run.source == "live" and run.partitioning == "date"
    assert run.hostname == socket.gethostname() and run.ended_at > run.started_at
    assert run.capture_id.startswith("fra-") and run.capture_id in campaign["runs"]["fra"]["log"]
    # every row of every table carries it
    rows = 0
    for name, frame in _every_row(cap).items():
        assert frame["capture_id"].eq(run.capture_id).all(), name
        rows += len(frame)
    record = campaign["runs"]["fra"]["record"]
    turns = cap.table("conversation_turns")
    assert sorted(turns["cf_ray"].dropna()) == sorted(s.cf_ray for s in record.conversation_streams)
    # parts only inside date= partitions; each flow in the partition of the UTC day it started
    for name in TABLES:
        parts = [p for p in (path / name).rglob("*.parquet") if not p.name.startswith(".")]
        assert parts and all(p.parent.parent == path / name and p.parent.name.startswith("date=") for p in parts), name
    flows = cap.table("flows")
    dates = _flow_dates(path)
    for fid, started in zip(flows["flow_id"], flows["started_at"], strict=True):
        assert dates[fid] == {_utc_day(started)}, fid
    # private: 0600 files, 0700 directories, partitions included
    for p in [path, *path.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o700 if p.is_dir() else 0o600), (p, oct(mode))
    # read without chatwire: DuckDB with hive partitions sees the same rows and ids
    con = duckdb.connect()
    got = con.execute(f"SELECT capture_id, count(*) FROM read_parquet('{path}/stream_events/**/*.parquet', "
                      "hive_partitioning = true, union_by_name = true) GROUP BY ALL").fetchall()
    assert got == [(run.capture_id, len(cap.table("stream_events")))]


def test_report_and_tables_read_a_partitioned_capture(campaign):
    path = campaign["fra"]
    cap = load_capture(path)
    out = subprocess.run([str(ANALYZE), "tables", str(path), "--format", "json"], capture_output=True, text=True,
                         check=True)
    tables = json.loads(out.stdout)
    assert {name: v["rows"] for name, v in tables.items()} == {name: len(f) for name, f in _every_row(cap).items()}
    assert [r["label"] for r in tables["captures"]["runs"]] == ["fra"]
    report = subprocess.run([str(ANALYZE), "report", str(path), "--format", "json"], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["capture"]["flows"] == len(cap.table("flows"))


def test_two_captures_under_a_root_and_a_glob_read_as_one(campaign):
    root, fra, iad = campaign["root"], load_capture(campaign["fra"]), load_capture(campaign["iad"])
    expected = {name: len(fra.table(name)) + len(iad.table(name)) for name in TABLES}
    globs = [f"{root}/**/*.parquet", f"{root}/*/*.parquet", f"{root}/*/day.parquet/stream_events/*/*.parquet"]
    relative = Path(os.path.relpath(campaign["fra"]))
    for spelling in [root, *globs, [campaign["fra"], campaign["iad"]], [root, campaign["fra"]], [root, relative]]:
        cap = load_capture(spelling)
        assert sorted(p.resolve() for p in cap.paths) == sorted([campaign["fra"], campaign["iad"]]), spelling  # each once
        assert cap.counts() == expected, spelling
    flows = load_capture(root).table("flows")
    assert not flows["flow_id"].duplicated().any()
    by_run = load_capture(root).table("stream_events").groupby("capture_id").size().to_dict()
    runs = load_capture(root).captures().set_index("label")["capture_id"]
    assert by_run == {runs["fra"]: len(fra.table("stream_events")), runs["iad"]: len(iad.table("stream_events"))}
    # the CLI, with the glob left to chatwire (quoted, as a shell user would)
    result = CliRunner().invoke(main, ["tables", f"{root}/**/*.parquet", "--format", "json"])
    assert result.exit_code == 0, result.output
    tables = json.loads(result.output)
    assert {name: v["rows"] for name, v in tables.items()} == expected
    assert sorted(r["label"] for r in tables["captures"]["runs"]) == ["fra", "iad"]
    report = CliRunner().invoke(main, ["report", str(root), "--format", "json"])
    assert report.exit_code == 0, report.output
    assert json.loads(report.output)["capture"]["flows"] == expected["flows"]


@pytest.mark.parametrize("command", [["conversations"], ["privacy"], ["report", "-f", "html"], ["tables"],
                                     ["export", "otel", "-o", "OUT"]])
def test_commands_take_a_dataset_root_and_a_glob(campaign, command, tmp_path):
    command = [str(tmp_path / "otel.json") if arg == "OUT" else arg for arg in command]
    for spelling in [str(campaign["root"]), f"{campaign['root']}/**/*.parquet"]:
        result = CliRunner().invoke(main, [*command, spelling])
        assert result.exit_code == 0, (command, spelling, result.output)


def test_a_dataset_root_follows_symlinks_once_and_skips_hidden_dirs(campaign, tmp_path):
    root = tmp_path / "linked"
    (root / "vantage").mkdir(parents=True)
    (root / "vantage" / "fra").symlink_to(campaign["fra"], target_is_directory=True)
    (root / "vantage" / "loop").symlink_to(root, target_is_directory=True)  # a cycle: visited once
    (root / ".day.parquet.import-1234").mkdir()  # an import in progress: hidden, skipped
    (root / ".day.parquet.import-1234" / "flows").mkdir()
    cap = load_capture(root)
    assert cap.paths == (root / "vantage" / "fra",)
    assert cap.counts() == load_capture(campaign["fra"]).counts()


def test_a_glob_or_directory_with_no_capture_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.parquet").write_bytes(b"x")  # matches the glob, is in no capture
    cases = [(f"{tmp_path}/nothing/**/*.parquet", "no capture matches this pattern (nothing matches it)"),
             (f"{tmp_path}/notes/*.parquet", "no capture matches this pattern (1 path(s) match"),
             (str(tmp_path / "empty"), "not a capture (none of the tables")]
    for spelling, expect in cases:
        with pytest.raises(CaptureError, match=expect.replace("(", r"\(").replace(")", r"\)")):
            load_capture(spelling)
        result = CliRunner().invoke(main, ["report", spelling])
        assert result.exit_code == 1 and expect in result.output and result.output.count("\n") == 1, result.output


def test_import_with_label_and_partition_then_compaction_per_partition(campaign, tmp_path):
    out = tmp_path / "imported.parquet"
    args = ["import", str(campaign["flow_file"]), "--label", "fra-import", "--partition", "date", "-o", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    cap = load_capture(out)
    runs = cap.captures()
    assert runs[["label", "source", "partitioning"]].values.tolist() == [["fra-import", "import", "date"]]
    run_id = runs.capture_id.iloc[0]
    live = load_capture(campaign["fra"])
    for name in TABLES:
        if name != "captures":
            assert cap.table(name)["capture_id"].eq(run_id).all(), name
            assert len(cap.table(name)) == len(live.table(name)), name  # the -w file holds the same flows
    dates = _flow_dates(out)
    for fid, started in zip(cap.table("flows")["flow_id"], cap.table("flows")["started_at"], strict=True):
        assert dates[fid] == {_utc_day(started)}
    # importing again adds nothing, not even a run
    counts = cap.counts()
    assert CliRunner().invoke(main, args).exit_code == 0
    assert load_capture(out).counts() == counts
    # a second import of the same flows into more parts, then compaction: one part per partition
    second = tmp_path / "more.parquet"
    assert CliRunner().invoke(main, ["import", str(campaign["flow_file"]), "--partition", "date", "-o",
                                     str(second)]).exit_code == 0
    for part in (second / "stream_events").rglob("part-*.parquet"):
        target = out / part.relative_to(second)
        target.parent.mkdir(mode=0o700, exist_ok=True)
        os.replace(part, target.with_name("part-9999999999999-copy-" + part.name))
    before = load_capture(out).counts()
    merged = compact_capture(out)
    assert any(k.startswith("stream_events/date=") and v >= 2 for k, v in merged.items()), merged
    for name in TABLES:
        for directory in partition_dirs(out / name)[1:]:
            assert len(visible_parts(directory)) == 1, directory
        assert not visible_parts(out / name), name  # nothing merged across partitions into the table root
    assert load_capture(out).counts() == before
    assert _flow_dates(out) == dates
    for p in out.rglob("*"):
        assert stat.S_IMODE(p.stat().st_mode) == (0o700 if p.is_dir() else 0o600), p


def test_old_captures_still_read_alone_and_with_new_ones(campaign, tmp_path):
    old = load_capture(SAMPLE)
    sample_counts = old.counts()
    assert sample_counts["flows"] > 0 and sample_counts["captures"] == 0
    assert old.table("flows")["capture_id"].isna().all()
    runs = old.captures()
    assert runs["capture_id"].tolist() == ["sample.parquet"] and runs["label"].isna().all()
    both = load_capture([SAMPLE, campaign["fra"]])
    fra_counts = load_capture(campaign["fra"]).counts()
    assert both.counts() == {name: sample_counts[name] + fra_counts[name] for name in TABLES}
    assert both.captures()["label"].tolist()[-1] == "fra" and "sample.parquet" in both.captures()["capture_id"].tolist()
    assert CliRunner().invoke(main, ["report", str(SAMPLE), str(campaign["fra"]), "-f", "json"]).exit_code == 0
    # a capture written before capture_id, captures and the later tables: only the first ten, old columns
    older = tmp_path / "older.parquet"
    for name in ("flows", "conversation_turns", "messages", "conversation_reads", "stream_events",
                 "latency_beacons", "segment_events", "statsig_events", "api_calls", "errors"):
        table = pq.read_table(SAMPLE / name) if name != "errors" else TABLES[name].empty_table()
        table = table.drop_columns([c for c in ("capture_id",) if c in table.column_names])
        (older / name).mkdir(parents=True)
        pq.write_table(table, older / name / "part-1700000000000-00000000-000001.parquet")
    cap = load_capture(older)
    assert cap.counts() == sample_counts
    assert cap.captures()["capture_id"].tolist() == ["older.parquet"]
    assert cap.table("stream_events", ["flow_id", "capture_id"])["capture_id"].isna().all()


def test_many_writers_share_one_capture_directory(tmp_path):
    """One shared set of table folders written by several proxies at once: each part is stamped with
    its writer's run, and the runs stay apart."""
    shared = tmp_path / "shared.parquet"
    n_rows = {"a": 300, "b": 200, "c": 100}

    def write(label: str) -> None:
        with CaptureWriter(shared, flush_ms=20, label=label, partition="date", source="live") as writer:
            for i in range(n_rows[label]):
                writer.add({"flows": [{"flow_id": f"{label}-{i}", "kind": "api"}]})

    threads = [threading.Thread(target=write, args=(label,)) for label in n_rows]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cap = load_capture(shared)
    runs = cap.captures().set_index("label")
    assert sorted(runs.index) == ["a", "b", "c"] and runs["ended_at"].notna().all()
    by_run = cap.table("flows").groupby("capture_id").size().to_dict()
    assert by_run == {runs.loc[label, "capture_id"]: n for label, n in n_rows.items()}


def test_partition_values_of_part_paths():
    from analyzer.store.reader import partition_values

    assert partition_values("/d/fra.parquet/stream_events/date=2026-12-01/part-1.parquet") == {"date": "2026-12-01"}
    assert partition_values("/d/date=x/fra.parquet/stream_events/part-1.parquet") == {}
    assert partition_values("c/flows/date=2026-12-01/hour=08/p.parquet") == {"date": "2026-12-01", "hour": "08"}


def test_capture_ids_are_unique_and_name_the_label_or_host():
    from analyzer.store.writer import new_capture_id

    ids = {new_capture_id("fra") for _ in range(1000)}
    assert len(ids) == 1000 and all(i.startswith("fra-") for i in ids)
    assert new_capture_id("a b/../c").startswith("a-b-..-c-")
    host = new_capture_id(None, now=datetime(2026, 12, 1, 8, tzinfo=UTC).timestamp())
    assert "-20261201T080000Z-" in host


def test_a_capture_read_by_pyarrow_with_hive_partitions(campaign):
    path = campaign["iad"]
    turns = ds.dataset(path / "conversation_turns", format="parquet",
                       partitioning=ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")).to_table()
    cap = load_capture(path)
    assert turns.num_rows == len(cap.table("conversation_turns"))
    days = {_utc_day(t) for t in cap.table("conversation_turns")["started_at"]}
    assert set(turns.column("date").to_pylist()) == days


def test_a_bad_capture_partition_stops_mitmdump_with_one_clear_line(tmp_path):
    mitmdump = Path(sys.executable).parent / "mitmdump"
    proc = subprocess.run([str(mitmdump), "-q", "--listen-port", "0", "--set", f"confdir={tmp_path}", "-s", str(ADDON),
                           "--set", f"capture_path={tmp_path / 'c.parquet'}", "--set", "capture_partition=hourly"],
                          capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out
    assert "capture_partition must be one of none, date, not 'hourly'" in out
    assert not (tmp_path / "c.parquet").exists()
