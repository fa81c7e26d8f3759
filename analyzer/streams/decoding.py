"""Incremental decoding of a response body as it arrives: content-encoding, then UTF-8.

Used for parsing only: the bytes the proxy forwards are never touched.
"""

from __future__ import annotations

import codecs
import zlib


class BodyDecodeError(ValueError):
    """The body could not be decoded with its declared content-encoding."""


class _Zlib:
    def __init__(self, gzip: bool) -> None:
        self._gzip = gzip
        self._obj: zlib._Decompress | None = None  # deflate: choose zlib or raw on the first bytes
        self._head = b""

    def decompress(self, data: bytes) -> bytes:
        if self._obj is None:
            if not self._gzip and len(self._head) + len(data) < 2:
                self._head += data  # two bytes are needed to tell a zlib header from raw deflate
                return b""
            data, self._head = self._head + data, b""
            if self._gzip:
                self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
            else:
                # RFC 9110 "deflate" is zlib-wrapped, but servers send raw deflate too.
                wrapped = len(data) >= 2 and (data[0] & 0x0F) == 8 and ((data[0] << 8) | data[1]) % 31 == 0
                self._obj = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        return self._obj.decompress(data)

    def flush(self) -> bytes:
        if self._obj is None and self._head:
            return zlib.decompressobj(-zlib.MAX_WBITS).decompress(self._head)
        return self._obj.flush() if self._obj is not None else b""


class _Brotli:
    def __init__(self) -> None:
        import brotli

        self._obj = brotli.Decompressor()

    def decompress(self, data: bytes) -> bytes:
        return self._obj.process(data)

    def flush(self) -> bytes:
        return b""


class _Zstd:
    """zstd, frame after frame: a body may be several frames back to back, and a decoder left to
    itself stops after the first and drops the rest without a word."""

    def __init__(self) -> None:
        import zstandard

        self._new = zstandard.ZstdDecompressor().decompressobj
        self._obj = self._new()

    def decompress(self, data: bytes) -> bytes:
        out = self._obj.decompress(data) if data else b""
        while self._obj.eof and self._obj.unused_data:
            rest = self._obj.unused_data
            self._obj = self._new()
            out += self._obj.decompress(rest)
        if self._obj.eof:
            self._obj = self._new()  # the next bytes, if any, start a new frame
        return out

    def flush(self) -> bytes:
        return b""


def _step(encoding: str):
    if encoding in ("gzip", "x-gzip"):
        return _Zlib(gzip=True)
    if encoding == "deflate":
        return _Zlib(gzip=False)
    if encoding == "br":
        return _Brotli()
    if encoding == "zstd":
        return _Zstd()
    raise BodyDecodeError(f"unsupported content-encoding {encoding!r}")


class BodyDecoder:
    """Turns raw body chunks into text chunks, undoing ``content-encoding`` (possibly stacked)."""

    def __init__(self, content_encoding: str | None = None, charset: str = "utf-8") -> None:
        names = [e.strip().lower() for e in (content_encoding or "").split(",")]
        names = [e for e in names if e and e != "identity"]
        # Encodings are listed in the order they were applied: undo them last first.
        self._steps = [_step(e) for e in reversed(names)]
        try:
            self._text = codecs.getincrementaldecoder(charset)("replace")
        except LookupError:
            self._text = codecs.getincrementaldecoder("utf-8")("replace")

    def decode_bytes(self, chunk: bytes) -> bytes:
        try:
            for step in self._steps:
                chunk = step.decompress(chunk)
        except Exception as exc:  # zlib.error, brotli.error, zstd.ZstdError
            raise BodyDecodeError(f"bad {self.describe()} data: {exc}") from exc
        return chunk

    def decode(self, chunk: bytes) -> str:
        return self._text.decode(self.decode_bytes(chunk))

    def finish_bytes(self) -> bytes:
        """What the decompressors still hold at the end of the body."""
        tail = b""
        try:
            for step in self._steps:
                tail = (step.decompress(tail) if tail else b"") + step.flush()
        except Exception as exc:
            raise BodyDecodeError(f"bad {self.describe()} data at end: {exc}") from exc
        return tail

    def finish(self) -> str:
        return self._text.decode(self.finish_bytes(), final=True)

    def describe(self) -> str:
        return "+".join(type(s).__name__.strip("_").lower() for s in self._steps) or "identity"


def decode_body(raw: bytes, content_encoding: str | None = None) -> str:
    """A whole body as text."""
    decoder = BodyDecoder(content_encoding)
    return decoder.decode(raw) + decoder.finish()


def decode_body_bytes(raw: bytes, content_encoding: str | None = None) -> bytes:
    """A whole body with its content-encoding undone."""
    decoder = BodyDecoder(content_encoding)
    return decoder.decode_bytes(raw) + decoder.finish_bytes()
