"""Which kind of traffic file a path holds, told from its bytes (never from its name).

Compression is recognised by magic bytes: gzip (``1f 8b``), zlib/deflate (``78 01|5e|9c|da``, what
mitmproxy's ``save.har`` writes for ``.zhar``) and zstd. Under it, a HAR is JSON (an optional UTF-8
BOM, whitespace, then ``{``); a mitmproxy flow file is a stream of tnetstrings, whose first bytes
are a decimal length and ``:``. An empty file is a flow file with no flows (``mitmdump -w`` writes
one when nothing passed through), but it is nothing to import either: ``detect`` says it is empty
rather than guess (a failed or cancelled export is also 0 bytes).
"""

from __future__ import annotations

import gzip
import io
import re
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Literal

Kind = Literal["har", "flowfile"]
Compression = Literal["gzip", "zlib", "zstd"] | None

BOM = b"\xef\xbb\xbf"
_TNETSTRING_HEAD = re.compile(rb"\d{1,12}:")
_ZLIB_HEADS = (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda")
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class SourceError(Exception):
    """A source that cannot be read; the message is one line that names the file."""


def sniff_compression(head: bytes) -> Compression:
    """The compression of a file whose first bytes are ``head``, or None."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head[:2] in _ZLIB_HEADS:
        return "zlib"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    return None


def sniff_kind(head: bytes) -> Kind | None:
    """The kind of an uncompressed file whose first bytes are ``head``, or None if neither."""
    if not head:
        return "flowfile"
    if head.startswith(BOM):
        head = head[len(BOM):]
    stripped = head.lstrip(b" \t\r\n")
    if stripped.startswith(b"{"):
        return "har"
    if _TNETSTRING_HEAD.match(head):
        return "flowfile"
    return None


class _ZlibReader(io.RawIOBase):
    """A read-only stream that inflates a zlib stream as it is read (constant memory)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._inflate = zlib.decompressobj()
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        while not self._buffer:
            if self._inflate.eof:
                return 0
            chunk = self._raw.read(1 << 20)
            if not chunk:
                self._buffer = self._inflate.flush()
                if not self._buffer:
                    raise EOFError("compressed stream ends early")
                break
            self._buffer = self._inflate.decompress(chunk)
        n = min(len(b), len(self._buffer))
        b[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def open_decompressed(raw: BinaryIO, compression: Compression) -> BinaryIO:
    """A buffered, peekable stream of the decompressed content of ``raw``."""
    if compression is None:
        return raw
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if compression == "zlib":
        return io.BufferedReader(_ZlibReader(raw), buffer_size=1 << 20)  # type: ignore[return-value]
    import zstandard

    return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw), buffer_size=1 << 20)  # type: ignore


def detect(path: Path, opener: Callable[[Path], BinaryIO] = lambda p: open(p, "rb")) -> tuple[Kind, Compression]:
    """Tell the kind and compression of ``path``; raises SourceError if it is neither kind."""
    try:
        if path.stat().st_size == 0:
            raise SourceError(f"{path}: empty file (0 bytes): nothing to import (an export that failed or was "
                              f"cancelled, or a `mitmdump -w` file that no flow passed through)")
        with opener(path) as raw:
            compression = sniff_compression(raw.read(4))
            raw.seek(0)
            try:
                head = open_decompressed(raw, compression).read(64)
            except (OSError, EOFError, zlib.error) as exc:
                raise SourceError(f"{path}: looks {compression}-compressed but cannot be decompressed ({exc})") from exc
    except OSError as exc:
        raise SourceError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if not head:
        raise SourceError(f"{path}: {compression}-compressed but empty inside: nothing to import")
    kind = sniff_kind(head)
    if kind is None:
        raise SourceError(f"{path}: not a HAR file or a mitmproxy flow file")
    return kind, compression
