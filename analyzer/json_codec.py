"""Parsing JSON the way the standard library does, faster.

``orjson`` parses the small JSON documents of a stream (one per event) several times faster than
``json``. What it refuses (``NaN``/``Infinity``, lone surrogate escapes, very deep nesting) and
invalid JSON go to ``json``, so the value — or the error message stored in ``errors`` — is the
standard library's. One difference is kept: an integer beyond 64 bits becomes a float, as it does
in the browser's own ``JSON.parse`` (checking every event for such a run of digits would cost more
than the parse). Where a parsed body is written back as JSON verbatim, use ``json``.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency; json alone gives the same values
    orjson = None


def parse_json(text: str | bytes) -> Any:
    """``json.loads(text)`` (integers beyond 64 bits aside); raises ``ValueError`` as it does."""
    if orjson is not None:
        try:
            return orjson.loads(text)
        except (orjson.JSONDecodeError, TypeError):
            pass
    return json.loads(text)
