"""mitmproxy flow files (``mitmdump -w``), read with mitmproxy's own reader.

``mitmproxy.io.FlowReader`` migrates every older flow format version to the current one, so
whatever the installed mitmproxy reads, this reads. Flows keep their ``id`` and their
``metadata`` — the per-chunk timing that the capture addon recorded included.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from mitmproxy import exceptions, flow
from mitmproxy.io import FlowReader

from analyzer.sources.detect import SourceError


def iter_flows(path: Path, open_stream: Callable[[], BinaryIO]) -> Iterator[flow.Flow]:
    """Yield the flows of a flow file; SourceError (one line) on a corrupt or truncated file.

    Flows before the fault are yielded first: a file cut short by a killed ``mitmdump`` still
    gives everything it holds whole.
    """
    n = 0
    end = 0  # the byte after the last whole flow: where the damage starts
    with open_stream() as stream:
        try:
            for f in FlowReader(stream).stream():
                n += 1
                end = _tell(stream, end)
                yield f
        except exceptions.FlowReadException as exc:
            raise SourceError(
                f"{path}: truncated or corrupt flow file after {n} complete flows "
                f"(flow {n}, at byte {end}{_of(stream)}: {exc})"
            ) from None
        except (OSError, EOFError) as exc:
            raise SourceError(f"{path}: truncated file: the compressed data ends early after {n} complete flows "
                              f"(flow {n}, at byte {end}{_of(stream)}: {exc})") from None


def _tell(stream: BinaryIO, default: int) -> int:
    try:
        return stream.tell()
    except (OSError, ValueError, AttributeError):
        return default


def _of(stream: BinaryIO) -> str:
    """Offsets in a compressed file count decompressed bytes: say so."""
    plain = isinstance(getattr(stream, "raw", None), io.FileIO)  # open(path, "rb"): a file's own bytes
    return "" if plain else " of the decompressed data"
