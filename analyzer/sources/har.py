"""HAR files as mitmproxy flows: streamed entry by entry, with the timings and quirks real exports have.

mitmproxy's own reader (``mitmproxy.io.har.request_to_flow``) parses the whole file at once and
drops what this project needs: ``timings`` (hence TTFB), ``_webSocketMessages``, ``postData.params``,
``status: 0``, ``h3``. So entries are converted here, with mitmproxy's header helper, into the same
``HTTPFlow`` objects that live capture produces; the extractor then treats them alike.

The file is parsed once, as a stream (``ijson`` on yajl's C parser): memory holds one entry at a
time, not the file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlencode

import ijson
from mitmproxy import connection, flow, http, websocket
from mitmproxy.io.har import fix_headers
from mitmproxy.net import encoding
from mitmproxy.net.http import url as mitm_url
from mitmproxy.net.http.headers import parse_content_type

from analyzer.sources.detect import BOM, SourceError

# Fixed namespace of HAR flow ids: uuid5(HAR_NAMESPACE, "<sha256 of the file>:<entry index>").
HAR_NAMESPACE = uuid.UUID("6f1c5b7e-2a4d-5e8f-9b3c-8d2e4f6a1c0b")

# The phases of HAR `timings` before the first response byte. `ssl` is left out: HAR 1.2 counts
# it inside `connect` already.
TTFB_PHASES = ("blocked", "dns", "connect", "send", "wait")

_READ_SIZE = 1 << 20


class EntryError(ValueError):
    """One HAR entry that cannot become a flow; the message names the field."""


def har_flow_id(file_sha256: str, index: int) -> str:
    """The stable flow id of entry ``index`` of the HAR file whose bytes hash to ``file_sha256``."""
    return str(uuid.uuid5(HAR_NAMESPACE, f"{file_sha256}:{index}"))


def file_sha256(path: Path) -> str:
    """SHA-256 of the file's bytes as stored (compressed or not)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_READ_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- pure conversion of one entry


def _field(obj: Any, dotted: str) -> Any:
    """``obj["a"]["b"]`` for ``"a.b"``; EntryError naming the field if any part is missing."""
    cur = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict) or cur.get(part) is None:
            raise EntryError(f"missing field '{dotted}'")
        cur = cur[part]
    return cur


def parse_started(value: Any) -> float:
    """``startedDateTime`` (ISO 8601, any offset, ``Z`` included) as epoch seconds."""
    if not isinstance(value, str):
        raise EntryError(f"bad field 'startedDateTime': {value!r} is not an ISO 8601 time")
    try:
        started = datetime.fromisoformat(value.strip())
    except ValueError:
        raise EntryError(f"bad field 'startedDateTime': {value!r} is not an ISO 8601 time") from None
    if started.tzinfo is None:  # HAR requires an offset; a tool that omits it most likely meant UTC
        return started.replace(tzinfo=datetime.now().astimezone().tzinfo).timestamp()
    return started.timestamp()


def _ms(value: Any) -> float | None:
    """A HAR duration: a non-negative number of ms, else None (HAR writes -1 for "does not apply")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    return float(value)


def har_timings(entry: dict) -> dict[str, float | None]:
    """What HAR knows of a flow's timing: start, time to first byte, total time.

    ``ttfb_ms`` is the sum of the non-negative phases before ``receive``; it is None when none of
    them is given. ``duration_ms`` is ``time``, or, where that is missing, the sum of the phases.
    """
    started = parse_started(entry.get("startedDateTime"))
    timings = entry.get("timings") if isinstance(entry.get("timings"), dict) else {}
    phases = [_ms(timings.get(p)) for p in TTFB_PHASES]
    known = [p for p in phases if p is not None]
    ttfb = sum(known) if known else None
    duration = _ms(entry.get("time"))
    if duration is None:
        receive = _ms(timings.get("receive"))
        if ttfb is not None or receive is not None:
            duration = (ttfb or 0.0) + (receive or 0.0)
    return {"started_at": started, "ttfb_ms": ttfb, "duration_ms": duration}


def http_version(value: Any, fallback: str = "HTTP/1.1") -> str:
    """Normalise the many spellings of HAR ``httpVersion`` (``h3``, ``http/2.0``, ``""``…)."""
    v = value.strip().lower() if isinstance(value, str) else ""
    if v.startswith(("h3", "http/3", "quic")):
        return "HTTP/3"
    if v in ("h2", "h2c") or v.startswith("http/2"):
        return "HTTP/2"
    if v == "http/1.0":
        return "HTTP/1.0"
    if v.startswith("http/1"):
        return "HTTP/1.1"
    return fallback


def _headers(raw: Any, where: str) -> http.Headers:
    if raw is None:
        return http.Headers()
    if not isinstance(raw, list):
        raise EntryError(f"bad field '{where}': not a list")
    clean: list[dict[str, str] | tuple[str, str]] = []
    for h in raw:
        if isinstance(h, dict):
            name, value = h.get("name"), h.get("value", "")
        elif isinstance(h, (list, tuple)) and len(h) >= 2:
            name, value = h[0], h[1]
        else:
            raise EntryError(f"bad field '{where}': {h!r} is not a header")
        if not isinstance(name, str) or not name or name.startswith(":"):
            continue  # HTTP/2 pseudo-headers (Chrome lists them): mitmproxy keeps them apart
        clean.append((name, "" if value is None else str(value)))
    try:
        return fix_headers(clean)
    except (UnicodeError, ValueError) as exc:
        raise EntryError(f"bad field '{where}': {exc}") from exc


def _charset(content_type: str) -> str:
    parsed = parse_content_type(content_type) if content_type else None
    return (parsed[2].get("charset") if parsed else None) or "utf-8"


def _text_to_bytes(text: str, content_type: str) -> bytes:
    """A HAR text body back to bytes: in its declared charset, else UTF-8.

    Lone surrogates (mitmproxy's ``save.har`` writes undecodable bytes as such) are turned back
    into their bytes; a text of code points below 256 that starts with the gzip magic is a binary
    body written byte-per-character, as some tools do for gzip posts.
    """
    if text.startswith("\x1f\x8b"):
        try:
            return text.encode("latin-1")
        except UnicodeEncodeError:
            pass
    if not content_type.strip():
        # No Content-Type (some Codex answers): mitmproxy's save.har decoded the body as latin-1.
        # Its bytes are those code points; when they are valid UTF-8 that is what the server sent.
        try:
            raw = text.encode("latin-1")
            raw.decode("utf-8")
            return raw
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    try:
        return text.encode(_charset(content_type))
    except (LookupError, UnicodeEncodeError):
        return text.encode("utf-8", "surrogateescape")


def _body(text: Any, enc: Any, content_type: str, where: str) -> bytes:
    if text is None:
        return b""  # Firefox leaves out bodies it did not keep; Chrome those it evicted
    if not isinstance(text, str):
        raise EntryError(f"bad field '{where}.text': not a string")
    if isinstance(enc, str) and enc.lower() == "base64":
        try:
            return base64.b64decode(text, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise EntryError(f"bad field '{where}.text': invalid base64 ({exc})") from exc
    return _text_to_bytes(text, content_type)


def _post_data(post: Any) -> bytes:
    if not isinstance(post, dict):
        return b""
    mime = post.get("mimeType") or ""
    if post.get("text") is not None:
        return _body(post.get("text"), post.get("encoding"), mime, "request.postData")
    params = post.get("params")
    if isinstance(params, list) and params:
        # Firefox and Charles give form posts as params only: rebuild the urlencoded body.
        pairs = [(str(p.get("name", "")), str(p.get("value", ""))) for p in params if isinstance(p, dict)]
        return urlencode(pairs).encode()
    return b""


def _keep_or_drop_encoding(headers: http.Headers, body: bytes) -> str | None:
    """HAR bodies are stored decoded while the headers still say ``content-encoding: br``.

    Keep the header only if the body really is encoded (a tool that stored the raw bytes);
    otherwise drop it, so the extractor does not try to decode plain text. Returns the dropped value.
    """
    ce = headers.get("content-encoding")
    if not ce or ce.strip().lower() == "identity":
        return None
    if body:
        try:
            encoding.decode(body, ce.strip().lower())
            return None  # still encoded: leave it to the extractor, as for live traffic
        except (ValueError, TypeError, KeyError):
            pass
    del headers["content-encoding"]
    return ce


def _websocket(messages: list, started: float) -> websocket.WebSocketData:
    """Chrome's ``_webSocketMessages`` (type send/receive, epoch ``time``, opcode, data)."""
    ws = websocket.WebSocketData()
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise EntryError(f"bad field '_webSocketMessages[{i}]': not an object")
        opcode = m.get("opcode", 1)
        data = m.get("data") or ""
        if opcode == 2:
            try:
                content = base64.b64decode(data)
            except (binascii.Error, ValueError) as exc:
                raise EntryError(f"bad field '_webSocketMessages[{i}].data': invalid base64") from exc
            kind = websocket.Opcode.BINARY
        elif opcode == 1:
            content = str(data).encode("utf-8", "surrogateescape")
            kind = websocket.Opcode.TEXT
        else:
            continue  # control frames (ping, pong, close) carry no stream items
        ts = m.get("time")
        ws.messages.append(websocket.WebSocketMessage(
            kind, m.get("type") == "send", content,
            timestamp=float(ts) if isinstance(ts, (int, float)) else started,
        ))
    if ws.messages:
        ws.timestamp_end = ws.messages[-1].timestamp
    return ws


def _unchecked(cls: type[http.Message], data_cls: type, **fields: Any) -> Any:
    """``cls(**fields)`` without mitmproxy's run-time type check of every field.

    The check (``MessageData.__post_init__``, run unless Python is started with ``-O``) costs
    ~25 µs per message, a tenth of an entry's whole import; every value here is built with its
    declared type, which ``tests/test_import_har.py`` checks with mitmproxy's own checker.
    """
    data = object.__new__(data_cls)
    data.__dict__.update(fields)
    message = object.__new__(cls)
    message.data = data
    return message


def entry_to_flow(entry: Any, flow_id: str) -> http.HTTPFlow:
    """One HAR entry as an ``HTTPFlow`` with ``metadata["chatwire"]["har_timings"]``; EntryError if unusable."""
    if not isinstance(entry, dict):
        raise EntryError("not an object")
    timing = har_timings(entry)  # validates startedDateTime first: every entry needs it
    started = timing["started_at"]
    req = _field(entry, "request")
    method = _field(entry, "request.method")
    url = _field(entry, "request.url")
    resp = _field(entry, "response")
    status = _field(entry, "response.status")
    if not isinstance(method, str) or not method:
        raise EntryError(f"bad field 'request.method': {method!r}")
    if not isinstance(url, str):
        raise EntryError(f"bad field 'request.url': {url!r}")
    if isinstance(status, bool) or not isinstance(status, (int, float)):
        raise EntryError(f"bad field 'response.status': {status!r}")
    try:
        scheme, host, port, path = mitm_url.parse(url)
    except (ValueError, UnicodeError) as exc:
        raise EntryError(f"bad field 'request.url': {url!r} ({exc})") from exc

    ttfb = timing["ttfb_ms"]
    duration = timing["duration_ms"]
    # Spread the HAR phases over the flow's timestamps, so that anything reading only the
    # timestamps (as for live flows) gets the same TTFB and duration.
    timings = entry.get("timings") if isinstance(entry.get("timings"), dict) else {}
    before_send = sum(v for p in ("blocked", "dns", "connect", "send") if (v := _ms(timings.get(p))) is not None)
    response_start = started + (ttfb or 0.0) / 1000
    response_end = started + duration / 1000 if duration is not None else response_start

    req_headers = _headers(req.get("headers"), "request.headers")
    authority = next((str(h.get("value", "")) for h in req.get("headers") or []
                      if isinstance(h, dict) and h.get("name") == ":authority"), "")
    req_body = _post_data(req.get("postData"))
    dropped_req = _keep_or_drop_encoding(req_headers, req_body)
    resp_version_raw = resp.get("httpVersion")
    req_version = http_version(req.get("httpVersion"), http_version(resp_version_raw))
    resp_version = http_version(resp_version_raw, req_version)

    server_ip = entry.get("serverIPAddress")
    client = connection.Client(peername=("127.0.0.1", 0), sockname=("127.0.0.1", 0), timestamp_start=started)
    client.timestamp_end = response_end
    server = connection.Server(address=(host.decode("ascii", "replace"), port))
    if isinstance(server_ip, str) and server_ip:
        server.peername = (server_ip.strip("[]"), port)
    f = http.HTTPFlow(client, server)
    f.id = flow_id
    f.request = _unchecked(http.Request, http.RequestData,
        host=host.decode("ascii", "replace"), port=port, method=method.encode(), scheme=scheme,
        authority=authority.encode(), path=path, http_version=req_version.encode(),
        headers=req_headers, content=req_body, trailers=None,
        timestamp_start=started, timestamp_end=started + before_send / 1000,
    )
    chatwire: dict[str, Any] = {"har_timings": timing}
    if int(status) == 0:
        # Aborted or blocked (Chrome: status 0 and `_error`): a request without an answer.
        message = resp.get("_error") or entry.get("_error") or "no response (HAR status 0)"
        f.error = flow.Error(str(message), timestamp=response_end)
    else:
        resp_headers = _headers(resp.get("headers"), "response.headers")
        content = resp.get("content") if isinstance(resp.get("content"), dict) else {}
        ctype = resp_headers.get("content-type", "") or str(content.get("mimeType") or "")
        body = _body(content.get("text"), content.get("encoding"), ctype, "response.content")
        dropped = _keep_or_drop_encoding(resp_headers, body)
        if dropped:
            chatwire["har_content_encoding"] = dropped
        reason = resp.get("statusText")
        f.response = _unchecked(http.Response, http.ResponseData,
            http_version=resp_version.encode(), status_code=int(status),
            reason=(reason if isinstance(reason, str) else "").encode("utf-8", "replace"),
            headers=resp_headers, content=body, trailers=None,
            timestamp_start=response_start, timestamp_end=response_end,
        )
        ws_messages = entry.get("_webSocketMessages")
        if isinstance(ws_messages, list):
            f.websocket = _websocket(ws_messages, started)
    if dropped_req:
        chatwire["har_request_content_encoding"] = dropped_req
    f.metadata["chatwire"] = chatwire
    return f


# ---------------------------------------------------------------- streaming the file


def _one_line(message: str) -> str:
    return re.sub(r"\s+", " ", message.strip().splitlines()[0] if message.strip() else "").strip()


def _has_entries_list(open_stream: Callable[[], BinaryIO]) -> bool:
    """Whether the JSON document has a ``log.entries`` list (only asked when no entry was found)."""
    with open_stream() as stream:
        _skip_bom(stream)
        try:
            for prefix, event, _ in ijson.parse(stream):
                if prefix == "log.entries" and event == "start_array":
                    return True
        except ijson.JSONError:
            return False
    return False


def _size(path: Path) -> int | str:
    try:
        return path.stat().st_size
    except OSError:
        return "?"


def _skip_bom(stream: BinaryIO) -> None:
    head = stream.peek(3)[:3] if hasattr(stream, "peek") else b""
    if head == BOM:
        stream.read(3)


def iter_entries(path: Path, open_stream: Callable[[], BinaryIO]) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, entry)`` for each element of ``log.entries``, parsing the file once, as a stream.

    Raises SourceError (one line, naming the file) for invalid JSON, a truncated file, or JSON
    that is not a HAR, after yielding every whole entry before the fault.
    """
    n = 0
    with open_stream() as stream:
        _skip_bom(stream)
        try:
            for n, entry in enumerate(ijson.items(stream, "log.entries.item", use_float=True, buf_size=_READ_SIZE), 1):
                yield n - 1, entry
        except ijson.IncompleteJSONError as exc:
            text = str(exc)
            if "premature EOF" in text:
                raise SourceError(f"{path}: truncated file: the JSON ends after {n} complete entries "
                                  f"(in entry {n}, at byte {_size(path)}, the end of the file)") from None
            raise SourceError(f"{path}: invalid JSON after {n} complete entries ({_one_line(text)}; "
                              f"in entry {n})") from None
        except ijson.JSONError as exc:
            raise SourceError(f"{path}: invalid JSON after {n} complete entries ({_one_line(str(exc))}; "
                              f"in entry {n})") from None
        except (OSError, EOFError) as exc:  # a compressed stream cut short
            raise SourceError(f"{path}: truncated file: the compressed data ends early after {n} complete "
                              f"entries (in entry {n}, at byte {_size(path)}: {exc})") from None
    if n == 0 and not _has_entries_list(open_stream):
        raise SourceError(f"{path}: JSON but not a HAR file (no log.entries list)")
