"""Compaction: the many small part files of a long capture merged into one per table.

A live capture writes a part per table and flush (every ``capture_flush_ms / 2`` while traffic
flows), which over hours makes thousands of small files that every reader must open. Compaction
merges them, streaming one part at a time (memory: one part, not the table), and stays
crash-safe through a journal:

1. ``.compact-<id>.json`` (hidden) names the merged file and its sources; written atomically.
2. The merged part is written (hidden temp file, fsync, rename): from here the rows are on disk
   twice, and the journal says which copy wins.
3. The sources are deleted, then the journal.

After a crash between 2 and 3, ``recover`` (run whenever a writer opens the capture, and by
``analyze compact``) finishes the job; ``analyzer``'s reader skips the journal's sources meanwhile,
so it never counts a row twice. A crash before 2 leaves only a hidden journal: nothing changed.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from analyzer.schema import TABLES
from analyzer.store.files import fsync_dir, open_new, partition_dirs

log = logging.getLogger(__name__)

JOURNAL_GLOB = ".compact-*.json"
# Small parts are gathered into row groups of up to this many rows or bytes before they are written:
# a row group per source part would leave a merged file of thousands of tiny row groups (a footer
# of megabytes, every reader's cost), and the bytes bound keeps long answer texts from piling up.
ROW_GROUP_ROWS = 1_000_000
ROW_GROUP_BYTES = 64 * 1024 * 1024


def visible_parts(table_dir: Path) -> list[Path]:
    return sorted(p for p in table_dir.glob("*.parquet") if not p.name.startswith((".", "_")))


def superseded_parts(table_dir: Path) -> set[str]:
    """Names of parts that a finished merge replaced but a crash left behind (readers skip them)."""
    names: set[str] = set()
    for journal in table_dir.glob(JOURNAL_GLOB):
        try:
            entry = json.loads(journal.read_text())
        except (OSError, ValueError):
            continue
        if (table_dir / entry.get("merged", "")).is_file():
            names.update(entry.get("sources", []))
    return names


def recover(table_dir: Path) -> None:
    """Finish or forget a compaction that a crash interrupted."""
    for journal in table_dir.glob(JOURNAL_GLOB):
        try:
            entry = json.loads(journal.read_text())
        except (OSError, ValueError):
            journal.unlink(missing_ok=True)
            continue
        if (table_dir / entry.get("merged", "")).is_file():
            for name in entry.get("sources", []):
                (table_dir / name).unlink(missing_ok=True)
            fsync_dir(table_dir)
        journal.unlink(missing_ok=True)


def compact_table(table_dir: Path, name: str, *, min_parts: int = 2) -> int:
    """Merge the visible parts of one table into one; returns how many parts were merged.

    Every part is checked first (``analyzer.store.reader.check_part``): a damaged one raises
    CaptureError before anything is written. A merge that fails midway (a full disk) removes its
    journal and temporary file: the parts are as they were. The merged part keeps the mode of
    the first part it replaces."""
    from analyzer.store.reader import check_part  # the reader imports this module

    recover(table_dir)
    parts = visible_parts(table_dir)
    for part in parts:
        check_part(part, name)
    if len(parts) < min_parts:
        return 0
    schema = TABLES[name]
    ident = uuid.uuid4().hex[:8]
    merged = f"part-{time.time_ns() // 1_000_000:013d}-compact-{ident}.parquet"
    journal = table_dir / f".compact-{ident}.json"
    journal_tmp = table_dir / f".compact-{ident}.json.tmp"
    tmp = table_dir / f".{merged}.tmp"
    mode = stat.S_IMODE(parts[0].stat().st_mode)
    try:
        with open_new(journal_tmp, mode) as fh:
            fh.write(json.dumps({"merged": merged, "sources": [p.name for p in parts]}).encode())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(journal_tmp, journal)
        with open_new(tmp, mode) as fh:
            with pq.ParquetWriter(fh, schema, compression="zstd") as writer:
                gathered: list = []
                rows = size = 0
                for part in parts:
                    table = pq.read_table(part, schema=schema)
                    if not table.num_rows:
                        continue
                    gathered.append(table)
                    rows, size = rows + table.num_rows, size + table.nbytes
                    if rows >= ROW_GROUP_ROWS or size >= ROW_GROUP_BYTES:
                        writer.write_table(pa.concat_tables(gathered), row_group_size=ROW_GROUP_ROWS)
                        gathered, rows, size = [], 0, 0
                if gathered:
                    writer.write_table(pa.concat_tables(gathered), row_group_size=ROW_GROUP_ROWS)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, table_dir / merged)
    except BaseException:
        for leftover in (tmp, journal_tmp, journal):
            try:
                leftover.unlink(missing_ok=True)
            except OSError:
                pass
        raise
    fsync_dir(table_dir)
    for part in parts:
        part.unlink(missing_ok=True)
    fsync_dir(table_dir)
    journal.unlink(missing_ok=True)
    return len(parts)


def compact_capture(path: str | os.PathLike) -> dict[str, int]:
    """Compact every table of a capture, each hive partition (``date=…``) on its own: parts are
    merged within their directory, never across partitions. Returns parts merged per directory,
    keyed by its path relative to the capture (``flows``, ``stream_events/date=2026-12-01``).

    Every part of every table is checked before any is merged: a damaged capture is left as it is."""
    from analyzer.store.reader import check_part

    root = Path(path)
    directories = [(name, d) for name in TABLES if (root / name).is_dir() for d in partition_dirs(root / name)]
    for name, directory in directories:
        for part in visible_parts(directory):
            check_part(part, name)
    return {directory.relative_to(root).as_posix(): compact_table(directory, name) for name, directory in directories}
