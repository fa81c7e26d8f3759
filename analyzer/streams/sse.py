"""Incremental Server-Sent Events parser that keeps each event's arrival time.

Written here rather than taken from a library because the SSE clients on PyPI (httpx-sse,
sseclient) parse a finished byte stream or a live response, and none reports *when* each event
became complete, which is the whole point of a latency capture. Follows the WHATWG
"event stream interpretation" rules: lines end in CRLF, LF or CR; ``:`` starts a comment; ``data``
lines accumulate; a blank line dispatches; a leading BOM is dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_EOL = re.compile(r"\r\n|\r|\n")
# One whole event of the shape nearly every stream uses: [event: NAME LF] data: DATA LF LF.
# Only for text without CR (the caller checks); the optional space after the colon is the spec's.
_WHOLE_EVENT = re.compile(r"(?:event: ?([^\n]*)\n)?data: ?([^\n]*)\n\n")


@dataclass(slots=True)
class SSEEvent:
    """One dispatched event. ``at`` is the arrival time of the chunk that completed it (or None)."""

    data: str
    event: str | None = None
    id: str | None = None
    retry: int | None = None
    at: float | None = None
    n_bytes: int = 0


class SSEParser:
    """Feed decoded text chunk by chunk; get back the events each chunk completed."""

    def __init__(self) -> None:
        self._tail = ""
        self._id: str | None = None  # the spec's last-event-id buffer: it outlives each event
        self._started = False
        self._pending_cr = False
        self._reset()

    def _reset(self) -> None:
        self._data: list[str] = []
        self._event: str | None = None
        self._retry: int | None = None
        self._bytes = 0

    def feed(self, text: str, at: float | None = None) -> list[SSEEvent]:
        if not text:
            return []
        if not self._started:
            self._started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        if self._pending_cr:
            self._pending_cr = False
            if text.startswith("\n"):  # the LF of a CRLF split across two chunks
                text = text[1:]
                self._bytes += 1
        buf = self._tail + text
        events: list[SSEEvent] = []
        if "\r" not in buf:  # the common case, and much faster than the regex
            pos = self._whole_events(buf, at, events)
            lines = buf[pos:].split("\n")
            self._tail = lines.pop()
            for line in lines:
                self._bytes += len(line.encode()) + 1 if not line.isascii() else len(line) + 1
                self._line(line, at, events)
            return events
        pos = 0
        for match in _EOL.finditer(buf):
            line = buf[pos : match.start()]
            pos = match.end()
            self._bytes += len(line.encode()) + len(match.group())
            if match.group() == "\r" and pos == len(buf):
                self._pending_cr = True
            self._line(line, at, events)
        self._tail = buf[pos:]
        return events

    def _whole_events(self, buf: str, at: float | None, events: list[SSEEvent]) -> int:
        """Dispatch the leading run of events of the usual shape (an optional ``event:`` line, one
        ``data:`` line, a blank line) in one regex match each; returns where line-by-line parsing
        takes over. Only from a clean state, where the line rules give exactly the same event."""
        if self._data or self._event is not None or self._retry is not None or self._bytes:
            return 0
        pos = 0
        match = _WHOLE_EVENT.scanner(buf).match  # each match starts where the last one ended
        last_id = self._id
        append = events.append
        ascii_only = buf.isascii()
        while m := match():
            start, pos = m.span()
            n_bytes = pos - start if ascii_only else len(m.group().encode())
            name, data = m.groups()
            append(SSEEvent(data, name, last_id, None, at, n_bytes))
        return pos

    def close(self, at: float | None = None) -> list[SSEEvent]:
        """End of stream: an unterminated last line counts; an event without its blank line does not
        dispatch per the spec, but a capture wants it, so it is returned too."""
        events: list[SSEEvent] = []
        if self._tail:
            line, self._tail = self._tail, ""
            self._bytes += len(line.encode())
            self._line(line, at, events)
        if self._data:
            self._dispatch(at, events)
        return events

    def _line(self, line: str, at: float | None, events: list[SSEEvent]) -> None:
        if not line:
            if self._data:
                self._dispatch(at, events)
            else:
                self._reset_fields_keep_bytes()
            return
        if line[0] == ":":
            return
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._id = value
        elif field == "retry":
            if value.isdigit():
                self._retry = int(value)

    def _reset_fields_keep_bytes(self) -> None:
        # A blank line with no data: the spec drops the event type; its bytes go to the next event.
        self._event = None

    def _dispatch(self, at: float | None, events: list[SSEEvent]) -> None:
        events.append(
            SSEEvent(
                data="\n".join(self._data),
                event=self._event,
                id=self._id,
                retry=self._retry,
                at=at,
                n_bytes=self._bytes,
            )
        )
        self._reset()


def parse_sse(text: str) -> list[SSEEvent]:
    """All events of a complete SSE body (no timing)."""
    parser = SSEParser()
    return parser.feed(text) + parser.close()
