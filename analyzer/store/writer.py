"""The capture writer: rows in, crash-safe Parquet part files out.

A capture is a directory (``something.parquet``) with one sub-directory per table. Each flush
writes one new part file per table that has new rows: written to a hidden temporary name,
fsynced, then renamed into place, so a reader (or a ``kill -9``) only ever sees whole files.
Hidden names (leading ``.``) are ignored by pyarrow, pandas, DuckDB and Spark alike.

An import writes into a hidden staging directory that is published whole at the end, so its
writer (``one_part=True``) streams each table's flushes as row groups into a single part file
instead: fewer files to open, fsync and later read.

Every writer is one *capture run*: it gets a ``capture_id`` (``new_capture_id``), stamps it on
every row it writes (a constant column per part) and writes the run's ``captures`` row. With
``partition="date"`` each table's parts go into hive-style ``date=YYYY-MM-DD`` sub-directories
(the UTC date of the ``at`` given to ``add``: the start of the flow the rows came from).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from analyzer.inert import inert
from analyzer.schema import TABLES, empty_table, rows_to_table
from analyzer.store.compact import compact_capture, recover
from analyzer.store.files import describe_os_error, fsync_dir, make_dirs, open_new, partition_dirs

log = logging.getLogger(__name__)

Rows = Mapping[str, list[dict]]
STALE_TMP_S = 600
EMPTY_PART = "part-00000000-empty.parquet"
PARTITIONINGS = ("none", "date")
PARTITION_KEY = "date"
MAX_OPEN_PARTS = 64  # one_part writers: open part files at once (one per table and partition)


def chatwire_version() -> str:
    """The installed chatwire's version (``unknown`` when it runs from a tree that is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("chatwire")
    except PackageNotFoundError:
        return "unknown"


def new_capture_id(label: str | None = None, now: float | None = None) -> str:
    """``<label-or-host>-<YYYYMMDDTHHMMSSZ>-<12 hex>``: readable, sortable by start, and unique across
    machines and runs (48 random bits on top of the name and the second it started)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", label or socket.gethostname() or "").strip("-.")[:32] or "capture"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"{name}-{stamp}-{uuid.uuid4().hex[:12]}"


def partition_dir(partitioning: str, at: float) -> str | None:
    """The hive partition directory (``date=2026-12-01``, UTC) of a row written at ``at``; None unpartitioned."""
    if partitioning == "none":
        return None
    return f"{PARTITION_KEY}={time.strftime('%Y-%m-%d', time.gmtime(at))}"


def write_part(directory: Path, table: pa.Table, name: str, mode: int | None = None) -> Path:
    """Atomically write ``table`` as ``directory/name``: temp file, fsync, rename, fsync dir.

    The file is created ``mode`` (default 0600) whatever the umask. A write that fails (a full
    disk) removes its temporary file and raises: the directory holds whole parts only."""
    make_dirs(directory, mode)
    final = directory / name
    # Its own temp name: two writers opening one capture at once both write the empty part.
    tmp = directory / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open_new(tmp, mode) as fh:
            pq.write_table(table, fh, compression="zstd")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    fsync_dir(directory)
    return final


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:  # a read-only remount: the hidden name is ignored by every reader anyway
        pass


def init_capture(path: Path, mode: int | None = None, partition: str | None = None) -> None:
    """Create the capture directory with every table present (an empty part where none exists).

    New directories are ``dir_mode(mode)`` (0700 by default), new files ``mode`` (0600). With
    ``partition`` (``date=…``) the empty part goes into that partition, so that every part of a
    partitioned table is at the same depth (Spark refuses a mix)."""
    make_dirs(path, mode)
    for name in TABLES:
        table_dir = path / name
        make_dirs(table_dir, mode)
        has_part = False
        for directory in partition_dirs(table_dir):
            # Temp files left by a crash mid-write (never renamed, never read); recent ones may belong
            # to another writer working on this capture right now, so only old ones go.
            for stale in directory.glob(".*.tmp"):
                try:
                    if time.time() - stale.stat().st_mtime > STALE_TMP_S:
                        stale.unlink(missing_ok=True)
                except OSError:
                    pass
            recover(directory)
            has_part = has_part or any(directory.glob("*.parquet"))
        if not has_part:
            write_part(table_dir / partition if partition else table_dir, empty_table(name), EMPTY_PART, mode)


class CaptureWriter:
    """Buffers rows per table and writes them as Parquet parts.

    ``add`` is cheap and thread-safe. With ``flush_ms`` set, a background thread flushes every
    ``flush_ms / 2`` so that rows added more than ``flush_ms`` ago are always on disk.

    When writing fails (ENOSPC, EIO, EDQUOT, a read-only remount) the rows stay in memory and every
    later flush tries again: one warning when it starts, one line when writing works again. With
    ``max_held_rows`` set, rows added while writing fails beyond that many unwritten ones are
    dropped and counted (``rows_dropped``); ``close`` reports them in the log and, if it can, as
    an ``errors`` row. An import's writer (``one_part``) raises instead: an import is all or nothing.
    """

    def __init__(self, path: str | os.PathLike, *, flush_ms: int | None = None, one_part: bool = False,
                 mode: int | None = None, max_held_rows: int | None = None, capture_id: str | None = None,
                 label: str | None = None, source: str = "library", partition: str = "none") -> None:
        """``one_part``: each table's flushes become row groups of one part file, published by
        ``close`` (for a writer whose whole directory is published at once, as an import's is);
        otherwise every flush publishes its own part files. ``mode``: of the files created
        (default 0600; directories get ``x`` where ``r`` is set). ``capture_id`` (default: a new
        one), ``label``, ``source`` (live, import, replay, bench; ``library`` for other code):
        this run's ``captures`` row. ``partition``: ``none`` or ``date`` (hive ``date=`` dirs)."""
        if partition not in PARTITIONINGS:
            raise ValueError(f"partition must be one of {', '.join(PARTITIONINGS)}, not {partition!r}")
        self.path = Path(path)
        self.one_part = one_part
        self.mode = mode
        self.max_held_rows = max_held_rows
        self.partitioning = partition
        self.label = label or None
        self.source = source
        self.started_at = time.time()
        self.capture_id = capture_id or new_capture_id(self.label, self.started_at)
        self._open_parts: dict[tuple[str, str | None], tuple[pq.ParquetWriter, BinaryIO, Path, Path]] = {}
        init_capture(self.path, mode, partition_dir(partition, self.started_at))
        self._warn_on_mixed_layout()
        self._pending: dict[tuple[str, str | None], list[dict]] = {}
        self._n_pending = 0
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._writer_id = uuid.uuid4().hex[:8]
        self._seq = 0
        self.rows_written = {name: 0 for name in TABLES}
        self.rows_dropped: Counter[str] = Counter()
        self.write_failure: str | None = None  # why writing fails right now, None while it works
        self.last_failure: str | None = None  # why it last failed (kept once it works again)
        self.failed_flushes = 0
        self._run_part: str | None = None
        self._closed = False
        if not one_part:  # on disk from the start: a killed proxy's rows still have their label
            self._write_run_row(ended_at=None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.flush_ms = flush_ms
        if flush_ms:
            self._thread = threading.Thread(target=self._run, name="chatwire-writer", daemon=True)
            self._thread.start()

    def _warn_on_mixed_layout(self) -> None:
        """One warning when this writer's layout differs from the capture's (looked at in ``flows``):
        chatwire reads a mix, DuckDB's hive_partitioning and Spark refuse it."""
        flows = self.path / "flows"
        try:
            entries = list(os.scandir(flows))
        except OSError:
            return
        partitioned = any("=" in e.name and e.is_dir() for e in entries)
        flat = any(e.name.endswith(".parquet") and not e.name.startswith(".") and e.name != EMPTY_PART for e in entries)
        if (self.partitioning == "none" and partitioned) or (self.partitioning != "none" and flat):
            log.warning("chatwire: %s already holds %s parts and this run writes %s ones: chatwire reads both, "
                        "but DuckDB (hive_partitioning) and Spark refuse a capture that mixes them",
                        self.path, "date-partitioned" if partitioned else "unpartitioned",
                        "unpartitioned" if self.partitioning == "none" else "date-partitioned")

    def run_row(self, ended_at: float | None) -> dict:
        """This run's ``captures`` row."""
        return {"capture_id": self.capture_id, "label": self.label, "hostname": socket.gethostname(),
                "started_at": self.started_at, "ended_at": ended_at, "chatwire_version": chatwire_version(),
                "source": self.source, "partitioning": self.partitioning}

    def _write_run_row(self, ended_at: float | None) -> None:
        """Write (or, at close, atomically replace) this run's ``captures`` part."""
        if self._run_part is None:
            self._run_part = self._part_name()
        table = rows_to_table("captures", [self.run_row(ended_at)])
        part = partition_dir(self.partitioning, self.started_at)
        directory = self.path / "captures" / part if part else self.path / "captures"
        write_part(directory, table, self._run_part, self.mode)

    def _partition(self, at: float | None) -> str | None:
        return partition_dir(self.partitioning, time.time() if at is None else at) \
            if self.partitioning != "none" else None

    def add(self, rows: Rows, at: float | None = None) -> None:
        """Queue rows for the next flush. ``at`` (epoch seconds; default now) picks their partition
        when partitioned: the start of the flow they came from, so one flow's rows stay together."""
        part = self._partition(at)
        with self._lock:
            for name, table_rows in rows.items():
                if not table_rows:
                    continue
                # The bound is for rows that wait because writing fails; while it works they wait at
                # most a flush interval whatever their number.
                failing = self.write_failure is not None and self.max_held_rows is not None
                room = self.max_held_rows - self._n_pending if failing else None
                if room is not None and room < len(table_rows):
                    keep = max(room, 0)
                    if not self.rows_dropped:
                        log.warning("chatwire: %d rows wait to be written to %s, and it holds at most %d: "
                                    "further rows are dropped (and counted) until writing works again",
                                    self._n_pending, self.path, self.max_held_rows)
                    self.rows_dropped[name] += len(table_rows) - keep
                    table_rows = table_rows[:keep]
                    if not table_rows:
                        continue
                self._pending.setdefault((name, part), []).extend(table_rows)
                self._n_pending += len(table_rows)

    def pending(self) -> int:
        with self._lock:
            return self._n_pending

    def flush(self) -> int:
        """Write everything added so far; returns the number of rows written.

        A write that fails keeps the unwritten rows for the next flush (``one_part``: raises)."""
        with self._write_lock:
            with self._lock:
                batch, self._pending = self._pending, {}
                self._n_pending = 0
            written = 0
            rejected: dict[str | None, list[dict]] = {}
            try:
                for last in (False, True):  # errors last: they take the rows the other tables rejected
                    if last:
                        for part, rows in rejected.items():
                            batch[("errors", part)] = batch.get(("errors", part), []) + rows
                    for key in sorted((k for k in batch if (k[0] == "errors") == last), key=_key_order):
                        rows = batch[key]
                        if not rows:
                            continue
                        name, part = key
                        table = self._table(name, rows, rejected.setdefault(part, []), self.capture_id)
                        if table is not None:
                            written += self._write(name, table, part)
                        batch[key] = []
            except OSError as exc:
                if self.one_part:
                    raise
                self._hold(batch, exc)
                return written
            if self.write_failure is not None:
                log.warning("chatwire: writing to %s works again (%d held rows written)", self.path, written)
                self.write_failure = None
            return written

    def _hold(self, batch: dict[tuple[str, str | None], list[dict]], exc: OSError) -> None:
        """Put the rows a failed flush could not write back in front of those added meanwhile."""
        with self._lock:
            for key, rows in batch.items():
                if rows:
                    self._pending.setdefault(key, [])[:0] = rows
                    self._n_pending += len(rows)
            held = self._n_pending
        self.failed_flushes += 1
        if self.write_failure is None:
            self.write_failure = self.last_failure = describe_os_error(exc)
            bound = f"up to {self.max_held_rows:,}" if self.max_held_rows is not None else "all"
            log.warning("chatwire: cannot write to %s: %s. Traffic passes untouched; %s rows are held in "
                        "memory (%d now) and written when writing works again", self.path,
                        self.write_failure, bound, held)

    def _part_name(self) -> str:
        self._seq += 1
        return f"part-{time.time_ns() // 1_000_000:013d}-{self._writer_id}-{self._seq:06d}.parquet"

    def _write(self, name: str, table: pa.Table, partition: str | None = None) -> int:
        directory = self.path / name / partition if partition else self.path / name
        if not self.one_part:
            write_part(directory, table, self._part_name(), self.mode)
        else:
            key = (name, partition)
            if key in self._open_parts:
                self._open_parts[key] = self._open_parts.pop(key)  # most recently used last
            elif len(self._open_parts) >= MAX_OPEN_PARTS:  # an import spanning many days: bound open files
                self._finish_part(next(iter(self._open_parts)))
            if key not in self._open_parts:
                part = self._part_name()
                make_dirs(directory, self.mode)
                tmp = directory / f".{part}.tmp"
                fh = open_new(tmp, self.mode)
                self._open_parts[key] = (pq.ParquetWriter(fh, table.schema, compression="zstd"), fh, tmp,
                                         directory / part)
            self._open_parts[key][0].write_table(table)
        self.rows_written[name] += table.num_rows
        return table.num_rows

    def _publish_parts(self) -> None:
        """Close the open part files (``one_part``): fsync, rename into place, fsync the directory."""
        while self._open_parts:
            self._finish_part(next(iter(self._open_parts)))

    def _finish_part(self, key: tuple[str, str | None]) -> None:
        writer, fh, tmp, final = self._open_parts.pop(key)
        with fh:
            writer.close()
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)

    def abandon(self) -> None:
        """Stop without publishing anything not yet published (an import that failed)."""
        self._stop.set()
        while self._open_parts:
            _, (writer, fh, tmp, _final) = self._open_parts.popitem()
            try:
                writer.close()
            except Exception:
                pass
            fh.close()
            tmp.unlink(missing_ok=True)

    @staticmethod
    def _table(name: str, rows: list[dict], rejected: list[dict], capture_id: str) -> pa.Table | None:
        """Rows as an Arrow table, stamped with ``capture_id``. A row whose values do not fit the
        schema costs only itself: it becomes an ``errors`` row (stage ``write``) instead of sinking
        its whole batch."""
        try:
            return rows_to_table(name, rows, capture_id)
        except Exception:
            pass
        good = []
        for row in rows:
            try:
                rows_to_table(name, [row])
                good.append(row)
            except Exception as exc:
                log.warning("chatwire: %s row of flow %s does not fit the schema: %s", name,
                            inert(row.get("flow_id")), inert(exc))
                if name != "errors":
                    rejected.append({"flow_id": row.get("flow_id"), "stage": "write",
                                     "error": f"{name} row does not fit the schema: {type(exc).__name__}: {exc}"[:500],
                                     "at": time.time()})
        return rows_to_table(name, good, capture_id) if good else None

    def _run(self) -> None:
        interval = max(self.flush_ms or 1000, 20) / 2000.0
        while not self._stop.wait(interval):
            try:
                self.flush()
            except Exception:  # a full disk must not kill the thread: try again next tick
                log.exception("chatwire: flush to %s failed", self.path)

    def close(self, *, compact: bool = False) -> None:
        """Stop the background thread and write what is left; ``compact`` then merges each table's
        parts into one (a clean stop of a live capture does, see ``analyzer.store.compact``).

        Rows that could not be written by then are lost: counted in ``rows_dropped``, logged, and
        recorded as an ``errors`` row (stage ``write``) when the disk takes it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.flush()
        if self.write_failure is not None or self.rows_dropped:
            with self._lock:
                for (name, _part), rows in self._pending.items():
                    if rows:
                        self.rows_dropped[name] += len(rows)
                        rows.clear()
                self._n_pending = 0
            if self.rows_dropped:
                self.add({"errors": [{"flow_id": None, "stage": "write", "at": time.time(),
                                      "error": f"{self.lost_line()}"}]})
                self.flush()
                log.warning("chatwire: %s", self.lost_line())
        self._close_run()
        self._publish_parts()
        if compact and self.write_failure is None:
            try:
                compact_capture(self.path)
            except Exception:  # the capture is whole without it: compaction only tidies
                log.exception("chatwire: compacting %s failed (the capture is complete as it is)", self.path)

    def _close_run(self) -> None:
        """The run's ``captures`` row with its ``ended_at``: replaces the start's row (a part of its
        own, renamed over atomically), or for ``one_part`` goes into the part published now."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.one_part:
                if any(self.rows_written.values()):  # an import that added nothing leaves no trace
                    self.add({"captures": [self.run_row(time.time())]}, at=self.started_at)
                    self.flush()
            elif self.write_failure is None:
                self._write_run_row(ended_at=time.time())
        except OSError as exc:
            if self.one_part:
                raise
            log.warning("chatwire: could not note the end of capture run %s in %s: %s", self.capture_id,
                        self.path, describe_os_error(exc))

    def lost_line(self) -> str:
        """One line: how many rows of which tables could not be kept, and why."""
        total = sum(self.rows_dropped.values())
        tables = ", ".join(f"{name} {n}" for name, n in sorted(self.rows_dropped.items()) if n)
        failure = self.write_failure or self.last_failure
        why = f"writing failed: {failure}" if failure else "writing failed"
        return f"{total} rows could not be written to {self.path} ({why}): {tables}"

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_TABLE_ORDER = {name: index for index, name in enumerate(TABLES)}


def _key_order(key: tuple[str, str | None]) -> tuple[int, str]:
    return _TABLE_ORDER[key[0]], key[1] or ""
