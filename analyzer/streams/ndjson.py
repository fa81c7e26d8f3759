"""Incremental NDJSON (newline-delimited JSON) line splitter that keeps each line's arrival time.

Ollama's native API (``/api/chat``, ``/api/generate``) streams one JSON object a line
(``application/x-ndjson``), without SSE framing. Like ``analyzer.streams.sse`` this only frames:
it returns each line's text, the arrival time of the chunk that completed it and the bytes it took
on the wire; the caller parses the JSON. Lines end in LF (a CR before it is dropped); blank lines
carry no object, their bytes count toward the next line.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class NDJSONLine:
    """One non-blank line. ``at``: arrival of the chunk that completed it (None without timing)."""

    data: str
    at: float | None = None
    n_bytes: int = 0


class NDJSONParser:
    """Feed bytes chunk by chunk (any split, UTF-8 sequences included); get the lines each completed."""

    def __init__(self) -> None:
        self._tail = b""
        self._pending_bytes = 0  # bytes of blank lines since the last line

    def feed(self, data: bytes, at: float | None = None) -> list[NDJSONLine]:
        if not data:
            return []
        buf = self._tail + data
        pieces = buf.split(b"\n")
        self._tail = pieces.pop()
        lines: list[NDJSONLine] = []
        for piece in pieces:
            self._emit(piece, len(piece) + 1, at, lines)
        return lines

    def close(self, at: float | None = None) -> list[NDJSONLine]:
        """End of stream: an unterminated last line still counts."""
        lines: list[NDJSONLine] = []
        if self._tail:
            piece, self._tail = self._tail, b""
            self._emit(piece, len(piece), at, lines)
        return lines

    def _emit(self, piece: bytes, n_bytes: int, at: float | None, lines: list[NDJSONLine]) -> None:
        text = piece.removesuffix(b"\r").decode("utf-8", errors="replace")
        if not text.strip():
            self._pending_bytes += n_bytes
            return
        lines.append(NDJSONLine(text, at, n_bytes + self._pending_bytes))
        self._pending_bytes = 0


def parse_ndjson(data: bytes) -> list[NDJSONLine]:
    """All lines of a complete NDJSON body (no timing)."""
    parser = NDJSONParser()
    return parser.feed(data) + parser.close()
