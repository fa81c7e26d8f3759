"""The capture writer: rows in, crash-safe Parquet part files out.

A capture is a directory (``something.parquet``) with one sub-directory per table. Each flush
writes one new part file per table that has new rows: written to a hidden temporary name,
fsynced, then renamed into place, so a reader (or a ``kill -9``) only ever sees whole files.
Hidden names (leading ``.``) are ignored by pyarrow, pandas, DuckDB and Spark alike.

An import writes into a hidden staging directory that is published whole at the end, so its
writer (``one_part=True``) streams each table's flushes as row groups into a single part file
instead: fewer files to open, fsync and later read.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from analyzer.schema import TABLES, empty_table, rows_to_table
from analyzer.store.compact import compact_capture, recover
from analyzer.store.files import fsync_dir

log = logging.getLogger(__name__)

Rows = Mapping[str, list[dict]]
STALE_TMP_S = 600


def write_part(directory: Path, table: pa.Table, name: str) -> Path:
    """Atomically write ``table`` as ``directory/name``: temp file, fsync, rename, fsync dir."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / name
    tmp = directory / f".{name}.tmp"
    with open(tmp, "wb") as fh:
        pq.write_table(table, fh, compression="zstd")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    fsync_dir(directory)
    return final


def init_capture(path: Path) -> None:
    """Create the capture directory with every table present (an empty part where none exists)."""
    path.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        table_dir = path / name
        table_dir.mkdir(exist_ok=True)
        # Temp files left by a crash mid-write (never renamed, never read); recent ones may belong to
        # another writer working on this capture right now, so only old ones go.
        for stale in table_dir.glob(".*.tmp"):
            try:
                if time.time() - stale.stat().st_mtime > STALE_TMP_S:
                    stale.unlink(missing_ok=True)
            except OSError:
                pass
        recover(table_dir)
        if not any(table_dir.glob("*.parquet")):
            write_part(table_dir, empty_table(name), "part-00000000-empty.parquet")


class CaptureWriter:
    """Buffers rows per table and writes them as Parquet parts.

    ``add`` is cheap and thread-safe. With ``flush_ms`` set, a background thread flushes every
    ``flush_ms / 2`` so that rows added more than ``flush_ms`` ago are always on disk.
    """

    def __init__(self, path: str | os.PathLike, *, flush_ms: int | None = None, one_part: bool = False) -> None:
        """``one_part``: each table's flushes become row groups of one part file, published by
        ``close`` (for a writer whose whole directory is published at once, as an import's is);
        otherwise every flush publishes its own part files."""
        self.path = Path(path)
        self.one_part = one_part
        self._open_parts: dict[str, tuple[pq.ParquetWriter, BinaryIO, Path, Path]] = {}
        init_capture(self.path)
        self._pending: dict[str, list[dict]] = {name: [] for name in TABLES}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._writer_id = uuid.uuid4().hex[:8]
        self._seq = 0
        self.rows_written = {name: 0 for name in TABLES}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.flush_ms = flush_ms
        if flush_ms:
            self._thread = threading.Thread(target=self._run, name="chatwire-writer", daemon=True)
            self._thread.start()

    def add(self, rows: Rows) -> None:
        with self._lock:
            for name, table_rows in rows.items():
                if table_rows:
                    self._pending[name].extend(table_rows)

    def pending(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._pending.values())

    def flush(self) -> int:
        """Write everything added so far; returns the number of rows written."""
        with self._write_lock:
            with self._lock:
                batch, self._pending = self._pending, {name: [] for name in TABLES}
            written = 0
            rejected: list[dict] = []
            for name, rows in batch.items():
                if not rows:
                    continue
                table = self._table(name, rows, rejected)
                if table is not None:
                    written += self._write(name, table)
            if rejected:
                written += self._write("errors", rows_to_table("errors", rejected))
            return written

    def _part_name(self) -> str:
        self._seq += 1
        return f"part-{time.time_ns() // 1_000_000:013d}-{self._writer_id}-{self._seq:06d}.parquet"

    def _write(self, name: str, table: pa.Table) -> int:
        if not self.one_part:
            write_part(self.path / name, table, self._part_name())
        else:
            if name not in self._open_parts:
                part = self._part_name()
                tmp = self.path / name / f".{part}.tmp"
                fh = open(tmp, "wb")
                self._open_parts[name] = (pq.ParquetWriter(fh, table.schema, compression="zstd"), fh, tmp,
                                          self.path / name / part)
            self._open_parts[name][0].write_table(table)
        self.rows_written[name] += table.num_rows
        return table.num_rows

    def _publish_parts(self) -> None:
        """Close the open part files (``one_part``): fsync, rename into place, fsync the directory."""
        while self._open_parts:
            _, (writer, fh, tmp, final) = self._open_parts.popitem()
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
    def _table(name: str, rows: list[dict], rejected: list[dict]) -> pa.Table | None:
        """Rows as an Arrow table. A row whose values do not fit the schema costs only itself:
        it becomes an ``errors`` row (stage ``write``) instead of sinking its whole batch."""
        try:
            return rows_to_table(name, rows)
        except Exception:
            pass
        good = []
        for row in rows:
            try:
                rows_to_table(name, [row])
                good.append(row)
            except Exception as exc:
                log.warning("chatwire: %s row of flow %s does not fit the schema: %s", name, row.get("flow_id"), exc)
                if name != "errors":
                    rejected.append({"flow_id": row.get("flow_id"), "stage": "write",
                                     "error": f"{name} row does not fit the schema: {type(exc).__name__}: {exc}"[:500],
                                     "at": time.time()})
        return rows_to_table(name, good) if good else None

    def _run(self) -> None:
        interval = max(self.flush_ms or 1000, 20) / 2000.0
        while not self._stop.wait(interval):
            try:
                self.flush()
            except Exception:  # a full disk must not kill the thread: try again next tick
                log.exception("chatwire: flush to %s failed", self.path)

    def close(self, *, compact: bool = False) -> None:
        """Stop the background thread and write what is left; ``compact`` then merges each table's
        parts into one (a clean stop of a live capture does, see ``analyzer.store.compact``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.flush()
        self._publish_parts()
        if compact:
            try:
                compact_capture(self.path)
            except Exception:  # the capture is whole without it: compaction only tidies
                log.exception("chatwire: compacting %s failed (the capture is complete as it is)", self.path)

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
