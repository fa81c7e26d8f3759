"""Reading captures back: one or several capture directories, each table as one DataFrame."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from analyzer.schema import FIRST_TABLES, TABLES
from analyzer.store.compact import superseded_parts


class CaptureError(Exception):
    """A path that is not a readable capture; the message is one line meant for the user."""


_checked: dict[tuple[str, int, int], None] = {}


def check_part(path: str | os.PathLike, name: str) -> None:
    """Raise CaptureError unless ``path`` is a whole Parquet file that belongs to table ``name``.

    This is the one check every reader goes through (``Capture.arrow``, compaction): a part cut
    short (no footer), not Parquet at all, or with a column the table does not have or of another
    type (a part of another table dropped in) is named in one line. A part with only some of the
    table's columns, of the right types, is one written before a column was added: it is read,
    the missing columns as nulls.
    """
    part = Path(path)
    try:
        st = part.stat()
    except OSError as exc:
        raise CaptureError(f"{part}: part of table {name} cannot be read: {exc.strerror or exc}") from exc
    key = (str(part), st.st_size, st.st_mtime_ns)
    if key in _checked:
        return
    try:
        schema = pq.read_schema(part)
    except (pa.ArrowInvalid, OSError) as exc:
        reason = "truncated or not a Parquet file" if st.st_size < 12 or "footer" in str(exc).lower() \
            or "magic" in str(exc).lower() else str(exc).splitlines()[0]
        raise CaptureError(f"{part}: damaged part of table {name} ({st.st_size} bytes): {reason}; "
                           f"move it out of the capture to read the rest") from exc
    expected = TABLES[name]
    unknown = [f.name for f in schema if expected.get_field_index(f.name) < 0]
    wrong = [f"{f.name} is {f.type}, not {expected.field(f.name).type}" for f in schema
             if expected.get_field_index(f.name) >= 0 and not f.type.equals(expected.field(f.name).type)]
    if unknown or wrong:
        what = (f"column(s) {', '.join(unknown)} not in the table" if unknown else "") + \
            ("; " if unknown and wrong else "") + ", ".join(wrong)
        raise CaptureError(f"{part}: not a part of table {name} ({what}): every part of a table has its "
                           f"schema (docs/schema.md); move it out of the capture")
    if len(_checked) > 100_000:
        _checked.clear()
    _checked[key] = None


def _part_files(table_dir: Path) -> list[str]:
    skip = superseded_parts(table_dir)  # a compaction interrupted by a crash: count its rows once
    return sorted(str(p) for p in table_dir.glob("*.parquet") if not p.name.startswith((".", "_")) and p.name not in skip)


@dataclass
class Capture:
    """One or several capture directories read as one. Tables are loaded lazily and cached."""

    paths: tuple[Path, ...]
    _cache: dict[tuple[str, tuple[str, ...] | None], pd.DataFrame] = field(default_factory=dict, repr=False)

    def part_files(self, name: str) -> list[str]:
        """The part files of table ``name`` a reader must read, each checked (``check_part``): for a
        reader that needs pyarrow's dataset options ``arrow`` does not offer."""
        if name not in TABLES:
            raise KeyError(f"unknown table {name!r}")
        files = [f for p in self.paths for f in _part_files(p / name)]
        for f in files:
            check_part(f, name)
        return files

    def arrow(self, name: str, columns: Sequence[str] | None = None) -> pa.Table:
        files = self.part_files(name)
        schema = TABLES[name]
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns])
        if not files:
            return schema.empty_table()
        try:
            dataset = ds.dataset(files, schema=TABLES[name], format="parquet")
            return dataset.to_table(columns=list(columns) if columns is not None else None)
        except (pa.ArrowInvalid, OSError) as exc:  # damage inside a part whose footer is whole
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CaptureError(f"{self.paths[0]}: table {name} cannot be read: {first}") from exc

    def table(self, name: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The table ``name`` as a DataFrame (timestamps as tz-aware UTC)."""
        key = (name, tuple(columns) if columns is not None else None)
        if key not in self._cache:
            self._cache[key] = self.arrow(name, columns).to_pandas()
        return self._cache[key]

    def counts(self) -> dict[str, int]:
        return {name: self.arrow(name, [TABLES[name].names[0]]).num_rows for name in TABLES}


def load_capture(paths: str | os.PathLike | Iterable[str | os.PathLike], *, require_all: bool = True) -> Capture:
    """Open capture directories for reading; raises CaptureError with a one-line reason."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    resolved: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise CaptureError(f"{path}: no such capture (the path does not exist)")
        if not path.is_dir():
            raise CaptureError(f"{path}: not a capture (a capture is a directory of table folders)")
        present = [name for name in TABLES if (path / name).is_dir()]
        if not present:
            raise CaptureError(f"{path}: not a capture (none of the tables {', '.join(TABLES)} is in it)")
        missing = [name for name in TABLES if name not in present and name in FIRST_TABLES]
        if missing and require_all:
            raise CaptureError(f"{path}: incomplete capture, missing table(s): {', '.join(missing)}")
        resolved.append(path)
    if not resolved:
        raise CaptureError("no capture given")
    return Capture(tuple(resolved))
