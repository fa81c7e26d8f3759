"""Reading captures back: one or several captures, each table as one DataFrame.

``load_capture`` takes capture directories, dataset roots (a directory with captures at any depth
below it, e.g. one per proxy and day) and globs (``'captures/**/*.parquet'``, which match capture
directories and the part files inside them alike: each match is taken to its capture). Part files
in hive partition directories (``stream_events/date=2026-12-01/``) are found too.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from analyzer.schema import CAPTURE_ID, FIRST_TABLES, TABLES
from analyzer.store.compact import superseded_parts
from analyzer.store.files import partition_dirs


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
    """The visible parts of one table: in ``table_dir`` and in its hive partition dirs (``key=value``)."""
    out: list[str] = []
    for directory in partition_dirs(table_dir):
        skip = superseded_parts(directory)  # a compaction interrupted by a crash: count its rows once
        out.extend(str(p) for p in directory.glob("*.parquet")
                   if not p.name.startswith((".", "_")) and p.name not in skip and p.is_file())
    return sorted(out)


def partition_values(part: str | os.PathLike) -> dict[str, str]:
    """The hive partition values in a part file's path (``{"date": "2026-12-01"}`` for
    ``…/stream_events/date=2026-12-01/part-….parquet``; ``{}`` for an unpartitioned part): for an
    engine that prunes by date, or that must know whether every part is partitioned before it
    reads them with ``hive_partitioning`` (DuckDB refuses a mix)."""
    values: dict[str, str] = {}
    for name in reversed(Path(part).parent.parts):
        if name in TABLES or "=" not in name:
            break
        key, _, value = name.partition("=")
        values.setdefault(key, value)
    return dict(reversed(values.items()))


# A folder named ``captures`` alone (the repository's own captures/) does not make its parent a capture.
_CAPTURE_MARKERS = tuple(name for name in TABLES if name != "captures")


def is_capture_dir(path: Path) -> bool:
    """Whether ``path`` is a capture: a directory with at least one table folder."""
    return path.is_dir() and any((path / name).is_dir() for name in _CAPTURE_MARKERS)


@dataclass
class Capture:
    """One or several capture directories read as one. Tables are loaded lazily and cached."""

    paths: tuple[Path, ...]
    _cache: dict[tuple[str, tuple[str, ...] | None], pd.DataFrame] = field(default_factory=dict, repr=False)

    def part_files(self, name: str) -> list[str]:
        """The part files of table ``name`` a reader must read, each checked (``check_part``): for a
        reader that needs pyarrow's dataset options ``arrow`` does not offer."""
        return [f for files in self.part_files_by_path(name).values() for f in files]

    def part_files_by_path(self, name: str) -> dict[Path, list[str]]:
        """``part_files(name)`` grouped by the capture directory they belong to (in ``paths`` order)."""
        if name not in TABLES:
            raise KeyError(f"unknown table {name!r}")
        out = {p: _part_files(p / name) for p in self.paths}
        for files in out.values():
            for f in files:
                check_part(f, name)
        return out

    def default_capture_ids(self) -> dict[Path, str]:
        """The id that stands for a capture directory's rows that carry no ``capture_id`` (parts
        written before the column existed): the directory's name, or where two of ``paths`` share a
        name, their path relative to the closest common directory."""
        names = [p.name for p in self.paths]
        if len(set(names)) == len(names):
            return dict(zip(self.paths, names, strict=True))
        root = Path(os.path.commonpath([str(p.resolve()) for p in self.paths]))
        return {p: p.resolve().relative_to(root).as_posix() if p.resolve() != root else p.name for p in self.paths}

    def captures(self) -> pd.DataFrame:
        """One row per capture run in these captures: the ``captures`` table's columns plus ``path``
        (the capture directory holding it), oldest first. A run's latest row wins (the one with
        ``ended_at`` over the one written at its start). A directory with rows that carry no
        ``capture_id`` (written before capture ids existed) gets a row for them too: ``capture_id``
        from ``default_capture_ids``, the rest null."""
        schema = TABLES["captures"]
        defaults = self.default_capture_ids()
        frames = []
        for path, files in self.part_files_by_path("captures").items():
            runs = ds.dataset(files, schema=schema, format="parquet").to_table() if files else schema.empty_table()
            if _has_unstamped_rows(path):
                old = pa.Table.from_pylist([{"capture_id": defaults[path]}], schema=schema)
                runs = pa.concat_tables([old, runs])
            frames.append(runs.append_column("path", pa.array([str(path)] * runs.num_rows, pa.string())))
        out = pa.concat_tables(frames).to_pandas() if frames else \
            schema.append(pa.field("path", pa.string())).empty_table().to_pandas()
        out = out.sort_values(["capture_id", "ended_at"], na_position="first", kind="stable")
        out = out.drop_duplicates("capture_id", keep="last")
        return out.sort_values(["started_at", "capture_id"], na_position="first", kind="stable") \
            .reset_index(drop=True)

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
            # self_destruct: each Arrow column is released as it is converted (half the peak of a big table)
            self._cache[key] = self.arrow(name, columns).to_pandas(split_blocks=True, self_destruct=True)
        return self._cache[key]

    def counts(self) -> dict[str, int]:
        return {name: self.arrow(name, [TABLES[name].names[0]]).num_rows for name in TABLES}


def _has_unstamped_rows(path: Path) -> bool:
    """Whether a capture directory has rows without a ``capture_id``, looked up in ``flows``,
    ``api_calls`` and ``errors`` (every run that recorded anything wrote to one of them), from the
    parts' footers (a missing column, or its null count) where they tell."""
    for name in ("flows", "api_calls", "errors"):
        for f in _part_files(path / name):
            check_part(f, name)
            metadata = pq.read_metadata(f)
            if metadata.num_rows == 0:
                continue
            names = metadata.schema.names
            if CAPTURE_ID not in names:
                return True
            index = names.index(CAPTURE_ID)
            for group in range(metadata.num_row_groups):
                stats = metadata.row_group(group).column(index).statistics
                if stats is None or not stats.has_null_count:
                    if pq.read_table(f, columns=[CAPTURE_ID]).column(0).null_count:
                        return True
                    break
                if stats.null_count:
                    return True
    return False


_GLOB_CHARS = frozenset("*?[")


def find_captures(root: Path) -> list[Path]:
    """The captures at any depth under the dataset root ``root`` (not below a capture; hidden
    directories, such as an import's staging directory, skipped; symlinks followed), sorted."""
    found: list[Path] = []
    seen: set[str] = set()  # symlinked directories are followed, each real directory once (no loops)
    for directory, subdirs, _files in os.walk(root, followlinks=True):
        here = Path(directory)
        real = os.path.realpath(directory)
        if real in seen:
            subdirs.clear()
            continue
        seen.add(real)
        if here != root and is_capture_dir(here):
            found.append(here)
            subdirs.clear()
            continue
        subdirs[:] = sorted(d for d in subdirs if not d.startswith((".", "_")))
    return sorted(found)


def _capture_of(match: Path, known: dict[Path, bool]) -> Path | None:
    """The capture a glob match belongs to: the match itself, or the capture above a part file or a
    table (or partition) directory; None when it is inside no capture."""
    for candidate in [match, *match.parents]:
        if candidate not in known:
            known[candidate] = is_capture_dir(candidate)
        if known[candidate]:
            return candidate
        if candidate.name not in TABLES and "=" not in candidate.name and candidate != match:
            return None  # above a table folder's parent there is no capture to find
    return None


def _expand_glob(pattern: str) -> list[Path]:
    """The captures a glob names: every match resolved to its capture (a dataset root that matches
    contributes its captures), each once, in sorted order."""
    matches = sorted(glob.glob(pattern, recursive=True))
    if not matches:
        raise CaptureError(f"{pattern}: no capture matches this pattern (nothing matches it)")
    found: list[Path] = []
    known: dict[Path, bool] = {}  # a glob of part files visits the same few directories again and again
    for match in map(Path, matches):
        if any(part.startswith(".") and part not in (".", "..") for part in match.parts):
            continue  # hidden: a write or an import in progress
        capture = _capture_of(match, known)
        if capture is not None:
            found.append(capture)
        elif match.is_dir():
            found.extend(find_captures(match))
    if not found:
        raise CaptureError(f"{pattern}: no capture matches this pattern ({len(matches)} path(s) match, "
                           f"none is or is inside a capture)")
    return list(dict.fromkeys(found))


def _check_capture(path: Path, require_all: bool) -> None:
    present = [name for name in TABLES if (path / name).is_dir()]
    missing = [name for name in TABLES if name not in present and name in FIRST_TABLES]
    if missing and require_all:
        raise CaptureError(f"{path}: incomplete capture, missing table(s): {', '.join(missing)}")


def load_capture(paths: str | os.PathLike | Iterable[str | os.PathLike], *, require_all: bool = True) -> Capture:
    """Open captures for reading; raises CaptureError with a one-line reason.

    Each path is a capture directory, a dataset root (a directory of captures, at any depth) or a
    glob; the captures they name are read as one, each once."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    resolved: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists() and _GLOB_CHARS & set(str(raw)):
            found = _expand_glob(str(raw))
        elif not path.exists():
            raise CaptureError(f"{path}: no such capture (the path does not exist)")
        elif not path.is_dir():
            raise CaptureError(f"{path}: not a capture (a capture is a directory of table folders)")
        elif is_capture_dir(path):
            found = [path]
        else:
            found = find_captures(path)
            if not found:
                raise CaptureError(f"{path}: not a capture (none of the tables {', '.join(TABLES)} is in it), "
                                   f"nor a directory of captures")
        for capture in found:
            _check_capture(capture, require_all)
        resolved.extend(found)
    if not resolved:
        raise CaptureError("no capture given")
    unique: dict[str, Path] = {}  # each capture once, however it was spelled (relative, absolute, linked)
    for capture in resolved:
        unique.setdefault(os.path.realpath(capture), capture)
    return Capture(tuple(unique.values()))
