"""Log records from the ``analyzer`` loggers are inert on the terminal, tracebacks included.

A real mitmdump prints our log lines through its own termlog handler, which formats a record's
``exc_info`` itself. A crafted answer carries ``ESC ] 52 ; c ; … BEL`` (clipboard write), ``ESC ] 0
; … BEL`` (window title), a C1 CSI (U+009B) and a bidi override; a probe addon quotes it the ways a
parser would — in a warning's arguments, a debug line's traceback, and an exception that the
addon's own hook guard (``analyzer.capture.addon._guarded``) logs with ``log.exception``. With the
chatwire addon loaded (it installs ``analyzer.log_safety`` in ``load``) none of those bytes reach
mitmdump's output, and the client still gets the answer byte for byte. Without it — the same probe
alone — they do: the check is not vacuous.
"""

from __future__ import annotations

import http.server
import logging
import re
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from analyzer import log_safety
from analyzer.inert import inert
from tests.origin.mitm import run_mitmdump

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = "answer \x1b]52;c;cGF3bmVk\x07 title \x1b]0;owned\x07 c1 \x9b31m red \u202eevil\u202c end"
HOSTILE_BYTES = HOSTILE.encode()
# BEL, ESC, C1 (U+0080–U+009F), bidi embeddings/overrides/isolates, and raw bytes that are not UTF-8
# (a lone C1 byte, decoded with surrogateescape).
UNSAFE = re.compile("[\x07\x1b\x80-\x9f\u202a-\u202e\u2066-\u2069\udc80-\udcff]")


def unsafe(out: bytes) -> list[str]:
    """The control characters in a program's output (an independent list, not analyzer.inert's)."""
    return UNSAFE.findall(out.decode("utf-8", "surrogateescape"))

PROBE = '''
"""Quotes an answer the ways a parser would, on analyzer loggers (test only)."""
import logging

from analyzer.capture.addon import _guarded

log = logging.getLogger("analyzer.capture.hostile_probe")


class HostileProbe:
    @_guarded
    def response(self, flow):
        text = flow.response.content.decode("utf-8")
        log.warning("PROBE-WARNING answer quoted: %s", text)
        try:
            raise ValueError(f"PROBE-DEBUG-EXC cannot parse {text}")
        except ValueError:
            log.debug("PROBE-DEBUG parse failed", exc_info=True)
        raise ValueError(f"PROBE-GUARD cannot parse the answer: {text}")


addons = [HostileProbe()]
'''


class _Origin(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("content-type", "text/plain; charset=utf-8")
        self.send_header("content-length", str(len(HOSTILE_BYTES)))
        self.end_headers()
        self.wfile.write(HOSTILE_BYTES)

    def log_message(self, *args) -> None:  # keep the test's own output quiet
        pass


@pytest.fixture
def origin():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _run(tmp_path: Path, origin: str, *, with_capture: bool) -> tuple[bytes, bytes]:
    """(body the client got, everything mitmdump printed) for one GET of the hostile answer."""
    probe = tmp_path / "hostile_probe.py"
    probe.write_text(PROBE)
    scripts = ["-s", str(ROOT / "addons" / "chatgpt_capture.py")] if with_capture else []
    proc = run_mitmdump(tmp_path, script=probe, options={"termlog_verbosity": "debug", "flow_detail": 0,
                                                         "capture_path": str(tmp_path / "cap.parquet")}
                        if with_capture else {"termlog_verbosity": "debug", "flow_detail": 0},
                        extra_args=scripts)
    try:
        with httpx.Client(proxy=proc.proxy_url, timeout=30) as client:
            body = client.get(f"{origin}/backend-api/hostile").content
    finally:
        proc.stop()
    return body, proc.log_path.read_bytes()


def test_mitmdump_prints_no_control_bytes_from_analyzer_logs(tmp_path: Path, origin: str) -> None:
    body, out = _run(tmp_path, origin, with_capture=True)
    assert body == HOSTILE_BYTES  # the flow passed untouched
    text = out.decode("utf-8", "replace")
    # Every way of quoting reached the log, made visible ...
    for marker in ("PROBE-WARNING", "PROBE-DEBUG parse failed", "PROBE-DEBUG-EXC", "PROBE-GUARD",
                   "response hook failed", "Traceback (most recent call last)"):
        assert marker in text, marker
    assert text.count("\\x1b]52;c;cGF3bmVk\\x07") == 3  # the warning, the debug traceback, the guard's traceback
    assert "\\x9b31m" in text and "\\u202eevil\\u202c" in text
    # ... and no control byte was printed.
    assert unsafe(out) == []


def test_without_the_filter_the_probe_prints_raw(tmp_path: Path, origin: str) -> None:
    """The control: mitmdump alone prints the same records raw (so the test above can fail)."""
    body, out = _run(tmp_path, origin, with_capture=False)
    assert body == HOSTILE_BYTES
    assert b"\x1b]52;c;cGF3bmVk\x07" in out and b"\xc2\x9b31m" in out


def test_records_made_inert_for_every_handler() -> None:
    """In process: a child logger's record, its arguments, exception and stack, through two handlers."""
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(self.format(record))

    root_handler = Collect()
    logging.getLogger().addHandler(root_handler)
    installed = log_safety.install()
    assert log_safety.install() is installed  # loading the addon twice adds one
    logger = logging.getLogger("analyzer.some.child")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        try:
            raise RuntimeError(HOSTILE)
        except RuntimeError:
            logger.error("quoted %s", HOSTILE, exc_info=True, stack_info=True)
        logger.warning("%d%%", 5)  # plain arguments still formatted
    finally:
        logger.setLevel(old_level)
        logging.getLogger().removeHandler(root_handler)
        logging.getLogger(log_safety.ROOT_LOGGER).removeHandler(installed)
    error, warning = seen[-2:]
    assert warning == "5%"
    assert "\x1b" not in error and "\x07" not in error and "\x9b" not in error and "\u202e" not in error
    assert error.count(inert(HOSTILE)) == 2  # the message and the traceback's last line
    assert "Traceback (most recent call last)" in error and "Stack (most recent call last)" in error


def test_analyze_cli_logs_inert(tmp_path: Path) -> None:
    """The ``analyze`` CLI's own log lines (here ``-v import``'s summary, which names the capture
    it wrote) go through the same handler: a hostile name prints as visible escapes."""
    sample = sorted((ROOT / "tests" / "fixtures" / "har").glob("*.har"))[0]
    target = tmp_path / "cap\x1b]0;owned\x07\x9b.parquet"
    result = subprocess.run([str(Path(sys.executable).parent / "analyze"), "-v", "import", str(sample), "-o", str(target)],
                            capture_output=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert b"import: " in result.stderr
    assert b"\\x1b]0;owned\\x07\\x9b" in result.stderr
    assert unsafe(result.stderr) == []
