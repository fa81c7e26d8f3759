"""mitmproxy flow files (``mitmdump -w``), read with mitmproxy's own reader.

``mitmproxy.io.FlowReader`` migrates every older flow format version to the current one, so
whatever the installed mitmproxy reads, this reads. Flows keep their ``id`` and their
``metadata`` — the per-chunk timing that the capture addon recorded included.
"""

from __future__ import annotations

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
    with open_stream() as stream:
        try:
            for f in FlowReader(stream).stream():
                n += 1
                yield f
        except exceptions.FlowReadException as exc:
            raise SourceError(
                f"{path}: truncated or corrupt flow file after {n} complete flows ({exc})"
            ) from None
        except (OSError, EOFError) as exc:
            raise SourceError(f"{path}: truncated file: the compressed data ends early ({exc})") from None
