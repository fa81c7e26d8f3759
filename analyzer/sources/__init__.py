"""Traffic files as flows: HAR exports and mitmproxy flow files, found by content.

``find_sources`` expands files and directories into ``Source`` objects (kind told from the bytes);
``iter_items`` streams each one as ``Item``s — a flow with its stable id, or an entry-level error —
so that the importer never holds more than one flow of a file at a time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mitmproxy import flow

from analyzer.sources.detect import Compression, Kind, SourceError, detect, open_decompressed
from analyzer.sources.flowfile import iter_flows
from analyzer.sources.har import EntryError, entry_to_flow, file_sha256, har_flow_id, iter_entries

log = logging.getLogger(__name__)

__all__ = ["Item", "Source", "SourceError", "find_sources", "iter_items"]


@dataclass(frozen=True)
class Source:
    """One readable traffic file."""

    path: Path
    kind: Kind
    compression: Compression
    size: int


@dataclass
class Item:
    """One flow of a source, or why entry ``index`` could not become one (``error``, a full line)."""

    index: int
    flow_id: str
    flow: flow.Flow | None = None
    error: str | None = None
    skipped: bool = False  # read, but not converted: the ``keep`` filter said it cannot be ours


def _files_under(directory: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / name for name in sorted(files) if not name.startswith("."))
    return found


def find_sources(paths: Iterable[str | os.PathLike]) -> tuple[list[Source], list[str], list[Path]]:
    """Sources in ``paths`` (files, or directories searched recursively).

    Returns (sources, errors, skipped): a named file that is neither kind is an error; a file
    found inside a directory that is neither kind is skipped (a README next to the HARs is fine).
    """
    sources: list[Source] = []
    errors: list[str] = []
    skipped: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            candidates, named = _files_under(path), False
        elif path.exists():
            candidates, named = [path], True
        else:
            errors.append(f"{path}: no such file or directory")
            continue
        for candidate in candidates:
            key = candidate.resolve()
            if key in seen:
                continue
            seen.add(key)
            try:
                kind, compression = detect(candidate)
            except SourceError as exc:
                if named:
                    errors.append(str(exc))
                else:
                    skipped.append(candidate)
                continue
            sources.append(Source(candidate, kind, compression, candidate.stat().st_size))
    return sources, errors, skipped


def iter_items(source: Source, progress: Callable[[int], None] | None = None,
               keep: Callable[[dict], bool] | None = None) -> Iterator[Item]:
    """Stream the flows of ``source``; ``progress(bytes_of_the_file_read)`` is called as it goes.

    ``keep(entry)``, for HAR entries, may say that an entry needs no flow (an image, a script):
    converting it would cost more than parsing it, and extraction would drop it anyway.

    Raises SourceError for a fault that ends the file (after yielding every whole item before it).
    """
    raw_files: list[BinaryIO] = []

    def open_stream() -> BinaryIO:
        raw = open(source.path, "rb")  # noqa: SIM115 - closed by the caller's with-block below
        raw_files.append(raw)
        stream = open_decompressed(raw, source.compression)
        if stream is raw:
            return raw
        # A decompressing stream must close its raw file too; wrap it to keep `with` working.
        return _ClosingStream(stream, raw)  # type: ignore[return-value]

    def position() -> int:
        raw = raw_files[-1] if raw_files else None
        try:
            return raw.tell() if raw is not None and not raw.closed else source.size
        except (OSError, ValueError):
            return source.size

    if source.kind == "flowfile":
        for i, f in enumerate(iter_flows(source.path, open_stream)):
            yield Item(i, f.id, flow=f)
            if progress:
                progress(position())
    else:
        digest = file_sha256(source.path)
        for i, entry in iter_entries(source.path, open_stream):
            flow_id = har_flow_id(digest, i)
            if keep is not None and not keep(entry):
                yield Item(i, flow_id, skipped=True)
                if progress:
                    progress(position())
                continue
            try:
                item = Item(i, flow_id, flow=entry_to_flow(entry, flow_id))
            except EntryError as exc:
                item = Item(i, flow_id, error=f"{source.path}: entry {i}: {exc}")
            except Exception as exc:  # a shape nobody foresaw must cost one entry, not the file
                log.debug("entry %d of %s", i, source.path, exc_info=True)
                item = Item(i, flow_id, error=f"{source.path}: entry {i}: cannot be read ({type(exc).__name__}: {exc})")
            yield item
            if progress:
                progress(position())
    if progress:
        progress(source.size)


class _ClosingStream:
    """A decompressed stream that closes the raw file under it as well."""

    def __init__(self, stream: BinaryIO, raw: BinaryIO) -> None:
        self._stream = stream
        self._raw = raw

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    def __enter__(self) -> BinaryIO:
        return self._stream

    def __exit__(self, *exc) -> None:
        self._stream.close()
        self._raw.close()
