"""Text from traffic made inert for a terminal, Markdown and log lines: one function for every printer.

An answer, a title or a model name can carry terminal control sequences whenever a model repeats
what a web page or a prompt injection fed it: ``ESC ] 52 ; c ; … BEL`` writes the clipboard in
iTerm2, kitty and tmux, ``ESC ] 0 ; … BEL`` sets the window title, C1 bytes (U+0080–U+009F) act
as ESC-sequences of their own in some terminals. ``inert`` shows every such character as a visible
escape (``\\x1b``, ``\\x9b``, ``\\u202e``) instead of printing it; newlines and tabs stay.

Bidirectional overrides and isolates (U+202A–U+202E, U+2066–U+2069) are shown too: they reorder
what is displayed ("Trojan Source"), so a transcript could read differently from what it holds.
A lone carriage return is shown as ``\\x0d`` (it would let a line overwrite itself); CRLF becomes LF.
A backslash is left as it is: ``\\x1b`` in the output may also be those four characters in the text.

HTML is escaped by Jinja2's autoescape and CSV/JSON by their writers; ``inert_json`` only makes
the characters JSON leaves raw (C1, bidi, U+2028/2029) into ``\\uXXXX`` escapes, which decode to
the same string.
"""

from __future__ import annotations

import logging
import re

_BIDI = "\u202a-\u202e\u2066-\u2069"
# C0 controls except TAB and LF, DEL, C1 controls, bidi embeddings/overrides/isolates.
_UNSAFE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}]")
_JSON_RAW = re.compile(f"[\x7f-\x9f{_BIDI}\u2028\u2029]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def inert(text: object) -> str:
    """``text`` (``str()`` of anything) with every control character shown, never acted on."""
    s = text if isinstance(text, str) else str(text)
    if "\r\n" in s:
        s = s.replace("\r\n", "\n")
    return _UNSAFE.sub(_visible, s)


def inert_json(text: str) -> str:
    """A JSON document whose raw C1, bidi and line-separator characters become ``\\uXXXX`` escapes.

    Such characters can only stand inside JSON strings, where the escape means the same character:
    the document decodes to the same value. (``json.dumps`` escapes C0 controls itself.)
    """
    return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def is_inert(text: str) -> bool:
    """Whether ``text`` holds no character that ``inert`` would change (tests and assertions)."""
    return _UNSAFE.search(text) is None


class InertFormatter(logging.Formatter):
    """A log formatter whose lines are ``inert``: a flow id or an error message from traffic cannot
    steer the terminal the log goes to (a traceback keeps its newlines)."""

    def format(self, record: logging.LogRecord) -> str:
        return inert(super().format(record))


_FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def inert_filename(text: object, *, max_len: int = 100) -> str:
    """A file-name component made from an id that came from traffic (a conversation or flow id).

    Only ``A-Z a-z 0-9 . _ -`` are kept (anything else, ``/`` and control characters included,
    becomes ``_``); a leading dot is dropped (no hidden files, no ``..``); empty becomes ``_``.
    Different ids can meet in one name: callers that need unique names add their own counter."""
    name = _FILENAME_UNSAFE.sub("_", text if isinstance(text, str) else str(text)).lstrip(".")
    return name[:max_len] or "_"
