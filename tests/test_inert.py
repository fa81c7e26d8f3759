"""Text from traffic is inert in every output: terminal text, Markdown, JSON, HTML, log lines.

The hostile capture carries ``ESC ] 52 ; c ; … BEL`` (writes the clipboard in iTerm2, kitty, tmux)
and ``ESC ] 0 ; … BEL`` (sets the window title), a C1 CSI (U+009B), a bidi override and an HTML
injection, in answers, questions, titles, model names and analytics event names. The oracles are
hand-written: the exact visible form of each sequence, the original value back out of JSON, and
(tmux) what a real terminal did with the output.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from analyzer.cli import main
from analyzer.inert import InertFormatter, inert, inert_filename, inert_json, is_inert
from tests.capture_factory import make_capture, merge, turn
from tests.test_telemetry import telemetry_rows

CLIPBOARD = "\x1b]52;c;cm0gLXJmIH4K\x07"  # base64 of "rm -rf ~\n"
TITLE = "\x1b]0;you have been pwned\x07"
C1 = "\x9b31m"
BIDI = "\u202eevil\u202c"
HOSTILE = f"before {CLIPBOARD} middle {TITLE} {C1} {BIDI} <script>window.pwned=1</script> after"
MODEL = f"gpt-4o{TITLE}"
EVENT = "e<img src=x onerror=window.pwned=1>\x1b]0;t\x07"  # short: chart labels are cut at 48 characters
CONV = "6790a1b2-0c3d-800a-9f1e-4b2c6d8e0f99"
T0 = 1_735_812_000.0
# Any byte a terminal may act on: C0 except TAB and LF, DEL, C1; and the bidi controls.
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def test_inert_by_hand():
    assert inert(CLIPBOARD) == "\\x1b]52;c;cm0gLXJmIH4K\\x07"
    assert inert(TITLE) == "\\x1b]0;you have been pwned\\x07"
    assert inert(C1) == "\\x9b31m"
    assert inert(BIDI) == "\\u202eevil\\u202c"
    assert inert("a\tb\nc") == "a\tb\nc"  # tabs and newlines stay
    assert inert("a\r\nb\rc\x7f\x00") == "a\nb\\x0dc\\x7f\\x00"
    assert inert("héllo 日本 — “quotes” 🎉") == "héllo 日本 — “quotes” 🎉"
    assert inert(42) == "42" and is_inert(inert(HOSTILE)) and not is_inert(HOSTILE)


def test_file_names_from_ids_by_hand():
    assert inert_filename("6790a1b2-0c3d-800a-9f1e-4b2c6d8e0f11") == "6790a1b2-0c3d-800a-9f1e-4b2c6d8e0f11"
    assert inert_filename("ws-flow#3") == "ws-flow_3"
    assert inert_filename("../../etc/passwd") == "_.._etc_passwd"
    assert inert_filename(f"a{TITLE}b") == "a_0_you_have_been_pwned_b"
    assert inert_filename("...") == "_" and inert_filename("") == "_" and len(inert_filename("x" * 500)) == 100


def test_inert_json_keeps_the_value():
    doc = json.dumps({"t": HOSTILE, "u": "\u2028\x85"}, ensure_ascii=False)
    safe = inert_json(doc)
    assert UNSAFE.search(safe) is None and "\u2028" not in safe
    assert json.loads(safe) == {"t": HOSTILE, "u": "\u2028\x85"}


def test_log_formatter_is_inert():
    record = logging.LogRecord("analyzer.x", logging.WARNING, __file__, 1, "flow %s: %s", ("f1", HOSTILE), None)
    line = InertFormatter("%(levelname)s %(message)s").format(record)
    assert UNSAFE.search(line) is None and line.startswith("WARNING flow f1: before \\x1b]52;c;")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    rows = merge(
        turn(CONV, flow_id="h1", at=T0, user_id="hu1", user_text=f"question {TITLE}", assistant_id="ha1",
             assistant_text=HOSTILE, parent_id="client-created-root", title=f"Title {TITLE}{BIDI}", model=MODEL),
        telemetry_rows(),
    )
    for row in rows["segment_events"]:
        row["event"] = EVENT
    for row in rows["statsig_events"]:
        row["event_name"] = EVENT
    return make_capture(tmp_path_factory.mktemp("hostile") / "cap.parquet", rows)


def run(*args: str) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("args", [
    ["conversations"], ["conversations", "-f", "markdown"], ["conversations", "-c", CONV],
    ["conversations", "-c", CONV, "-f", "markdown"], ["conversations", "-c", CONV, "--branch", "all"],
    ["report"], ["report", "-f", "markdown"], ["tables"], ["privacy"], ["privacy", "-f", "markdown"],
])
def test_terminal_and_markdown_outputs_show_controls_instead_of_printing_them(hostile, args):
    out = run(args[0], hostile, *args[1:])
    assert UNSAFE.search(out) is None, repr(UNSAFE.search(out))
    if "-c" in args:
        assert "before \\x1b]52;c;cm0gLXJmIH4K\\x07 middle \\x1b]0;you have been pwned\\x07 \\x9b31m" in out
        assert "\\u202eevil\\u202c" in out
    elif args[0] == "conversations":
        assert "Title \\x1b]0;you have been pwned\\x07" in out


def _strings(obj) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in _strings(k) + _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


@pytest.mark.parametrize(("args", "value"), [
    (["conversations", "-c", CONV, "-f", "json"], HOSTILE),
    (["conversations", "-f", "json"], f"Title {TITLE}{BIDI}"),
    (["conversations", "-c", CONV, "-f", "openai"], HOSTILE),
    (["report", "--json"], MODEL),
])
def test_json_outputs_are_escaped_and_keep_the_value(hostile, args, value):
    out = run(args[0], hostile, *args[1:])
    assert UNSAFE.search(out) is None
    assert value in _strings(json.loads(out))  # the value itself comes back whole


def test_privacy_json_is_valid_and_inert(hostile):
    out = run("privacy", hostile, "--json")
    assert UNSAFE.search(out) is None and isinstance(json.loads(out), dict)


def test_written_files_are_inert_too(hostile, tmp_path):
    out = tmp_path / "t.md"
    run("conversations", hostile, "-c", CONV, "-f", "markdown", "-o", out)
    text = out.read_text(encoding="utf-8")
    assert UNSAFE.search(text) is None and "\\x1b]52;c;" in text


def test_import_error_lines_naming_a_hostile_file_are_inert(tmp_path):
    bad = tmp_path / f"export{TITLE}.har"
    bad.write_text('{"log": {"entries": [')
    result = CliRunner().invoke(main, ["import", str(bad), "-o", str(tmp_path / "cap")])
    assert result.exit_code == 1
    assert UNSAFE.search(result.stderr) is None and "export\\x1b]0;you have been pwned\\x07.har" in result.stderr


def test_html_report_keeps_hostile_text_as_text_in_a_browser(hostile, tmp_path):
    from tests import browser

    try:
        browser.chromium_path()
    except browser.ChromiumMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    page = tmp_path / "report.html"
    run("report", hostile, "-f", "html", "-o", page)
    html = page.read_text(encoding="utf-8")
    assert "<script>window.pwned" not in html and "<img src=x" not in html
    assert UNSAFE.search(html) is None  # even `cat report.html` in a terminal is safe
    with browser.open_page(page) as s:
        p = s.page
        assert p.evaluate("window.pwned") is None and p.locator("img").count() == 0
        assert p.title().startswith("chatwire report")
        text = p.evaluate("document.body.textContent")  # SVG chart labels included
        assert "e<img src=x onerror=window.pwned=1>\\x1b]0;t\\x07" in text  # the event name, as text
        assert "gpt-4o\\x1b]0;you have been pwned\\x07" in text  # the model name, as text
        assert "<script>window.pwned=1</script> after" in text  # the answer, as text
        assert s.requests == [] and s.console_errors == []


def _tmux(sock: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["tmux", "-L", sock, "-f", "/dev/null", *args], capture_output=True, text=True, timeout=30)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed: the real-terminal check needs it")
def test_a_real_terminal_gets_no_clipboard_and_no_title(hostile, tmp_path):
    """tmux with ``set-clipboard on`` turns OSC 52 into a paste buffer and OSC 0 into the pane title.

    The control run prints the raw answer and must set both (the oracle works); the run of
    ``analyze conversations`` must set neither."""
    analyze = Path(sys.executable).parent / "analyze"
    raw = tmp_path / "raw.txt"
    raw.write_text(HOSTILE, encoding="utf-8")

    def in_tmux(command: str) -> tuple[str, str]:
        sock = f"chatwire-test-{uuid.uuid4().hex[:8]}"
        done = tmp_path / f"done-{sock}"
        try:
            _tmux(sock, "new-session", "-d", "-x", "200", "-y", "50", "sh")
            _tmux(sock, "set", "-g", "set-clipboard", "on")
            _tmux(sock, "set", "-g", "allow-rename", "on")
            _tmux(sock, "send-keys", f"{command}; touch {done}", "Enter")
            deadline = time.monotonic() + 60
            while not done.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert done.exists(), "the command in tmux did not finish"
            time.sleep(0.3)  # let tmux parse the last output
            buffers = _tmux(sock, "list-buffers", "-F", "#{buffer_sample}").stdout
            title = _tmux(sock, "display-message", "-p", "#{pane_title}").stdout.strip()
            return buffers, title
        finally:
            _tmux(sock, "kill-server")

    env = "TERM=xterm-256color"
    buffers, title = in_tmux(f"{env} cat {raw}")
    assert "rm -rf" in buffers and title == "you have been pwned", (buffers, title)  # the oracle
    buffers, title = in_tmux(f"{env} {analyze} conversations {hostile} -c {CONV}")
    assert "rm -rf" not in buffers and title != "you have been pwned", (buffers, title)


def test_log_lines_of_a_real_run_are_inert(tmp_path):
    """A warning that quotes message ids from the capture (a parent loop) goes through the CLI's
    log handler, in a real process (pytest's own handlers would hide it in-process)."""
    from tests.capture_factory import message_row

    a, b = f"m{TITLE}a", f"m{CLIPBOARD}b"
    rows = {"messages": [
        message_row(CONV, a, b, "user", "one", source="mapping", flow_id="r1", seen_at=T0),
        message_row(CONV, b, a, "assistant", "two", source="mapping", flow_id="r1", seen_at=T0),
    ]}
    cap = make_capture(tmp_path / "loop.parquet", rows)
    proc = subprocess.run([sys.executable, "-c", "from analyzer.cli import main; main()", "conversations", str(cap),
                           "-c", CONV], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "parent loop through" in proc.stderr  # the warning was logged …
    assert UNSAFE.search(proc.stderr) is None and "\\x1b]" in proc.stderr  # … inert
    assert UNSAFE.search(proc.stdout) is None
