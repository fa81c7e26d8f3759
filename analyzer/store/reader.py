"""Reading captures back: one or several capture directories, each table as one DataFrame."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from analyzer.schema import FIRST_TABLES, TABLES
from analyzer.store.compact import superseded_parts


class CaptureError(Exception):
    """A path that is not a readable capture; the message is one line meant for the user."""


def _part_files(table_dir: Path) -> list[str]:
    skip = superseded_parts(table_dir)  # a compaction interrupted by a crash: count its rows once
    return sorted(str(p) for p in table_dir.glob("*.parquet") if not p.name.startswith((".", "_")) and p.name not in skip)


@dataclass
class Capture:
    """One or several capture directories read as one. Tables are loaded lazily and cached."""

    paths: tuple[Path, ...]
    _cache: dict[tuple[str, tuple[str, ...] | None], pd.DataFrame] = field(default_factory=dict, repr=False)

    def arrow(self, name: str, columns: Sequence[str] | None = None) -> pa.Table:
        if name not in TABLES:
            raise KeyError(f"unknown table {name!r}")
        files = [f for p in self.paths for f in _part_files(p / name)]
        schema = TABLES[name]
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns])
        if not files:
            return schema.empty_table()
        try:
            dataset = ds.dataset(files, schema=TABLES[name], format="parquet")
            return dataset.to_table(columns=list(columns) if columns is not None else None)
        except (pa.ArrowInvalid, OSError) as exc:
            raise CaptureError(f"{self.paths[0]}: table {name} cannot be read: {exc}") from exc

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
