"""Redaction: secrets are replaced by a fixed placeholder before anything reaches disk.

Header names and JSON shapes are kept; only values change. Three layers: by header name, by
JSON key, and a final scan of every string for token shapes (JWTs, API keys, bearer values, the
``sig=`` of signed URLs), so a secret in an unexpected place (a query string, an error message, a
download URL inside a stream event) is caught too. Device and account ids (``Oai-Device-Id``,
``Chatgpt-Account-Id``, ``Oai-Session-Id``) are identifiers, not credentials: they are kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote_plus

try:
    import orjson
except ImportError:  # pragma: no cover - a dependency; without it every cell is looked at
    orjson = None

PLACEHOLDER = "[REDACTED]"

_SECRET_HEADER = re.compile(
    r"^(authorization|proxy-authorization|cookie|set-cookie|x-api-key|api-key|x-conduit-token"
    r"|openai-sentinel-.*|x-.*-token|.*-token|x-csrf-token|x-auth.*|ocp-apim-subscription-key)$",
    re.I,
)
_SECRET_KEY = re.compile(
    r"^(arkose_token|token|access_token|accesstoken|refresh_token|id_token|session_token|api_key|apikey"
    r"|password|secret|client_secret|authorization|.*_token|proof_token|turnstile_token|conduit_token"
    r"|sentinel_token|private_key|secret_key|access_key)$",
    re.I,
)
# Query parameters that carry credentials (Azure's api-key, Statsig's client key is public: kept).
# ``*_token`` as for JSON keys (refresh_token, id_token, device_token…: found by tests/test_secrets_fuzz.py).
_SECRET_QUERY = re.compile(r"^(api[-_]?key|key|token|access_token|.*_token|sig|signature|code|auth)$", re.I)
_TOKEN_SHAPES = re.compile(
    r"eyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]*"  # JWT
    r"|\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}"  # OpenAI-style API keys
    r"|(?<=[Bb]earer )[A-Za-z0-9._~+/=-]{8,}"  # any bearer value
    # A signed URL's signature (estuary/content?…&sig=…, guide 6e) wherever the URL is: plain,
    # JSON-escaped (\u0026sig=), HTML-escaped (&amp;sig=) or percent-encoded inside another URL.
    r"|(?:(?<=[?&;]sig=)|(?<=\\u0026sig=))[^&#\"'\s\\<>]+"
    r"|(?<=%26sig%3[Dd])(?:(?!%26)[^&#\"'\s\\<>])+"
    r"|(?<=%3[Ff]sig%3[Dd])(?:(?!%26)[^&#\"'\s\\<>])+"
)


def is_secret_header(name: str) -> bool:
    return bool(_SECRET_HEADER.match(name.strip()))


def redact_cookie(value: str) -> str:
    """Keep cookie names (useful in an audit), drop their values."""
    pieces = []
    for part in value.split(";"):
        name, sep, _ = part.strip().partition("=")
        if not name:
            continue
        if sep and name.lower() not in ("path", "domain", "expires", "max-age", "samesite"):
            pieces.append(f"{name}={PLACEHOLDER}")
        else:
            pieces.append(part.strip())
    return "; ".join(pieces)


def redact_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    out = []
    for name, value in headers:
        lower = name.lower()
        if lower in ("cookie", "set-cookie"):
            value = redact_cookie(value)
        elif is_secret_header(lower):
            value = PLACEHOLDER
        else:
            value = redact_string(value)
        out.append((name, value))
    return out


def redact_json(value: Any) -> Any:
    """A copy of a JSON value with secret keys' values replaced and token shapes scrubbed."""
    if isinstance(value, dict):
        return {
            k: (PLACEHOLDER if isinstance(v, str) and v and _SECRET_KEY.match(str(k)) else redact_json(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_json(v) for v in value]
    if isinstance(value, str):
        return redact_string(value)
    return value


def may_hold_secret_key(json_text: str) -> bool:
    """Whether a JSON text might have a key whose value ``redact_json`` would replace.

    Every name ``_SECRET_KEY`` matches ends in token, key, password, secret or authorization: a
    text in which none of them is followed by a quote (any case, and with no ``\\u`` escape that
    could spell one) has no such key.
    """
    if "\\u" in json_text:
        return True
    lower = json_text.lower()
    return ('token"' in lower or 'key"' in lower or 'password"' in lower or 'secret"' in lower
            or 'authorization"' in lower)


def redact_string(text: str) -> str:
    if not text or not _might_hold_token(text):
        return text  # fast path: most strings hold no token shape at all
    return _TOKEN_SHAPES.sub(PLACEHOLDER, text)


def redact_query(query: str) -> str:
    """Replace secret parameters' values in place; everything else stays byte for byte."""
    if not query:
        return query
    pieces = []
    for piece in query.split("&"):
        name, sep, value = piece.partition("=")
        if sep and value and _SECRET_QUERY.match(unquote_plus(name)):
            piece = f"{name}={PLACEHOLDER}"
        else:
            piece = redact_string(piece)
        pieces.append(piece)
    return "&".join(pieces)


def _might_hold_token(text: str) -> bool:
    return "eyJ" in text or "sk-" in text or "earer" in text or "sig=" in text or "sig%3" in text


def redact_rows(rows: Mapping[str, list[dict]]) -> None:
    """Last line of defence: scrub token shapes from every string cell, in place.

    Each table is first serialised in one C call and searched for the four markers every token
    shape contains (``sig=`` or ``sig%3`` for signed URLs); only a table that has one (or that cannot be serialised so) is scrubbed cell
    by cell. Same result as scrubbing every cell, without a Python step per cell in the usual
    case of nothing to find. (The markers are ASCII letters and ``-``: JSON never escapes them.)
    """
    for table_rows in rows.values():
        if not table_rows:
            continue
        if orjson is not None:
            try:
                dumped = orjson.dumps(table_rows)
                if (b"eyJ" not in dumped and b"sk-" not in dumped and b"earer" not in dumped
                        and b"sig=" not in dumped and b"sig%3" not in dumped):
                    continue
            except (TypeError, orjson.JSONEncodeError):
                pass  # a cell orjson cannot write (a lone surrogate, bytes…): look at each cell
        for row in table_rows:
            for key, value in row.items():
                if isinstance(value, str):
                    row[key] = redact_string(value)
