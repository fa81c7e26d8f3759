"""A full disk (and a read-only remount) during a capture, for real: a small tmpfs this test mounts.

What must hold: traffic flows untouched, one warning (not one per flow), rows held in memory up
to a bound and written when writing works again, what could not be kept counted and reported at
the stop, and the capture on disk readable at every moment. Mounting needs root (CI runs as
root); elsewhere these tests skip and say why.
"""

from __future__ import annotations

import errno
import logging
import os
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from analyzer.store import CaptureWriter, load_capture
from tests.origin.session import run_session

ROOT = Path(__file__).resolve().parent.parent
ADDON = ROOT / "addons" / "chatgpt_capture.py"


def _mount(point: Path, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to fill needs root (CI runs the tests as root)")
    point.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(point)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (a container without CAP_SYS_ADMIN?): {proc.stderr.strip()}")


@pytest.fixture
def disk(tmp_path) -> Path:
    point = tmp_path / "disk"
    _mount(point, "2m")
    yield point
    subprocess.run(["umount", "-l", str(point)], check=False)


def fill(disk: Path) -> Path:
    """Write a filler file until the tmpfs has not one byte left."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def _rows(n: int, tag: str) -> dict[str, list[dict]]:
    return {"errors": [{"flow_id": f"{tag}{i}", "stage": "test", "error": "x" * 200, "at": 1.0} for i in range(n)]}


def _readable_ids(cap: Path) -> list[str]:
    return sorted(load_capture(cap).table("errors")["flow_id"].dropna())


def _hidden(cap: Path) -> list[str]:
    return [p.name for p in cap.rglob(".*")]


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_writer_holds_rows_while_writing_fails_and_writes_them_after(disk, caplog, fault):
    cap = disk / "cap.parquet"
    writer = CaptureWriter(cap, flush_ms=None, max_held_rows=10_000)
    writer.add(_rows(5, "before"))
    assert writer.flush() == 5
    if fault == "full":
        filler = fill(disk)
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    caplog.set_level(logging.WARNING, logger="analyzer.store.writer")
    for i in range(20):  # twenty flushes fail: one warning
        writer.add(_rows(3, f"during{i:02d}-"))
        assert writer.flush() == 0
        assert _readable_ids(cap) == [f"before{i}" for i in range(5)]  # readable at every moment
    assert writer.pending() == 60 and writer.failed_flushes == 20
    want = "No space left on device (ENOSPC)" if fault == "full" else "Read-only file system (EROFS)"
    assert writer.write_failure == want
    warnings = [r.getMessage() for r in caplog.records if "cannot write to" in r.getMessage()]
    assert len(warnings) == 1 and want in warnings[0] and "Traffic passes untouched" in warnings[0]
    assert _hidden(cap) == []  # no temporary file left by the failed writes
    if fault == "full":
        filler.unlink()
    else:
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
    assert writer.flush() == 60 and writer.write_failure is None
    assert any("works again (60 held rows written)" in r.getMessage() for r in caplog.records)
    writer.close()
    ids = _readable_ids(cap)
    assert len(ids) == 65 and ids[:3] == ["before0", "before1", "before2"]
    assert sum(writer.rows_dropped.values()) == 0


def test_rows_beyond_the_bound_are_counted_and_reported_at_the_stop(disk, caplog):
    cap = disk / "cap.parquet"
    writer = CaptureWriter(cap, flush_ms=None, max_held_rows=50)
    filler = fill(disk)
    caplog.set_level(logging.WARNING, logger="analyzer.store.writer")
    for i in range(4):
        writer.add(_rows(30, f"r{i}-"))  # 120 rows; 50 are held
        writer.flush()
    assert writer.pending() == 50 and writer.rows_dropped == {"errors": 70}
    filler.unlink()
    writer.close()
    errors = load_capture(cap).table("errors")
    held = errors[errors["stage"] == "test"]
    assert sorted(held["flow_id"]) == sorted([f"r0-{i}" for i in range(30)] + [f"r1-{i}" for i in range(20)])
    (report,) = errors.loc[errors["stage"] == "write", "error"]
    assert report == (f"70 rows could not be written to {cap} (writing failed: No space left on device "
                      f"(ENOSPC)): errors 70")
    assert report in [r.getMessage().removeprefix("chatwire: ") for r in caplog.records]


def test_stop_while_the_disk_is_still_full_counts_everything_lost(disk, caplog):
    cap = disk / "cap.parquet"
    writer = CaptureWriter(cap, flush_ms=None, max_held_rows=50)
    fill(disk)
    caplog.set_level(logging.WARNING, logger="analyzer.store.writer")
    writer.add(_rows(80, "x"))
    writer.close(compact=True)  # must not raise; compaction is skipped
    assert writer.rows_dropped == {"errors": 80}  # the held 50 and the 30 beyond
    assert any("rows could not be written" in r.getMessage() for r in caplog.records)
    assert _readable_ids(cap) == [] and _hidden(cap) == []


def test_live_capture_on_a_full_disk_passes_traffic_and_catches_up(tmp_path, origin, mitmdump_factory):
    disk = tmp_path / "disk"
    _mount(disk, "8m")
    try:
        cap = disk / "live.parquet"
        proxy = mitmdump_factory(script=ADDON, options={"capture_path": cap, "capture_flush_ms": 200})
        verify = ssl.create_default_context(cafile=str(proxy.ca_path))

        def session():
            return run_session(origin.url, proxy=proxy.proxy_url, verify=verify, formats=("v1",),
                               delays=(20, 2), n_turns=2, analytics=True, api=False)

        since = len(origin.log())
        first = session()
        time.sleep(0.5)  # on disk before the disk fills
        filler = fill(disk)
        during = [session() for _ in range(3)]  # the disk is full: traffic must not notice
        time.sleep(1.0)  # several flush ticks fail meanwhile
        log = proxy.log_text()
        assert log.count("cannot write to") == 1, log
        assert "No space left on device (ENOSPC)" in log
        # Readable while full, with what was written before.
        assert len(load_capture(cap).table("conversation_turns")) == len(first.conversation_streams)
        filler.unlink()
        deadline = time.monotonic() + 20
        while "works again" not in proxy.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "works again" in proxy.log_text()
        after = session()
        assert proxy.stop() == 0
        log = proxy.log_text()
        assert "Traceback" not in log and log.count("cannot write to") == 1
        assert "could not be written" not in log  # nothing was lost: the bound was never reached
        capture = load_capture(cap)
        turns = capture.table("conversation_turns")
        segment = capture.table("segment_events")
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    records = [first, *during, after]
    streams = [s for r in records for s in r.conversation_streams]
    # What the clients read is what the origin sent (its own send log), during the full disk as before.
    sent: dict[str, list[dict]] = {}
    for r in origin.log(since):
        if r["kind"] == "event" and r.get("cf_ray"):
            sent.setdefault(r["cf_ray"], []).append(r)
    assert all(len(r.conversation_streams) >= 2 for r in records)
    for stream in streams:
        origin_events = sorted(sent[stream.cf_ray], key=lambda r: r["index"])
        assert len(stream.events) == len(origin_events) and stream.status == 200
        assert all(got.data in want["data"] for got, want in zip(stream.events, origin_events, strict=True))
    # Every turn, the full-disk ones included, is in the capture, and so is every analytics event.
    assert sorted(turns["cf_ray"]) == sorted(s.cf_ray for s in streams)
    by_ray = turns.set_index("cf_ray")
    assert all(by_ray.loc[s.cf_ray, "assistant_text"] == s.text for s in streams)
    sent_segment = sum(len(p["body"].get("batch", [p["body"]])) for r in records for p in r.segment_payloads)
    assert len(segment) == sent_segment


def test_import_onto_a_full_disk_is_one_line_and_leaves_the_capture_as_it_was(disk):
    from click.testing import CliRunner

    from analyzer.cli import main

    har = Path(__file__).parent / "fixtures" / "har"
    cap = disk / "cap.parquet"
    assert CliRunner().invoke(main, ["import", str(har / "firefox.har"), "-o", str(cap)]).exit_code == 0
    before = {str(p): p.read_bytes() for p in cap.rglob("*") if p.is_file()}
    fill(disk)
    result = CliRunner().invoke(main, ["import", str(har / "chrome.har"), "-o", str(cap)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.stderr.count("\n") == 1 and "No space left on device (ENOSPC); nothing imported" in result.stderr
    assert {str(p): p.read_bytes() for p in cap.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in disk.iterdir()) == ["cap.parquet", "filler"]  # no staging directory left
