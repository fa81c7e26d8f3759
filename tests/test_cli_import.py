"""`analyze import` on the command line: summary, exit codes, one-line errors, warnings, progress."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from analyzer.cli import main
from analyzer.cli.importer import ProgressBar
from analyzer.store import load_capture

FIXTURES = Path(__file__).parent / "fixtures" / "har"


def run(*args: str):
    return CliRunner().invoke(main, ["import", *args])


def test_import_prints_a_one_line_summary(tmp_path):
    out = tmp_path / "cap.parquet"
    result = run(str(FIXTURES / "chrome.har"), str(FIXTURES / "safari.har"), "-o", str(out))
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("14 flows read from 2 har file(s); 13 recognised (conversation 5,")
    assert lines[0].endswith(f"; 0 errors -> {out}")
    assert load_capture(out).counts()["latency_beacons"] == 2


def test_directory_source_and_reimport(tmp_path):
    src = tmp_path / "exports"
    src.mkdir()
    (src / "a.har").write_bytes((FIXTURES / "firefox.har").read_bytes())
    (src / "README.txt").write_text("HARs from last week")
    out = tmp_path / "cap"
    first = run(str(src), "-o", str(out))
    assert first.exit_code == 0
    assert "5 recognised" in first.stdout and "1 file(s) skipped (neither HAR nor flows)" in first.stdout
    again = run(str(src), "-o", str(out))
    assert again.exit_code == 0 and "0 recognised; 5 already in the capture" in again.stdout


def test_bad_input_alone_exits_non_zero_with_one_line(tmp_path):
    bad = tmp_path / "page.html"
    bad.write_text("<html></html>")
    result = run(str(bad), "-o", str(tmp_path / "cap"))
    assert result.exit_code == 1
    assert result.stderr == f"Error: nothing imported: {bad}: not a HAR file or a mitmproxy flow file\n"
    assert not (tmp_path / "cap").exists()


def test_damaged_and_good_inputs_import_the_good_and_exit_non_zero(tmp_path):
    bad = tmp_path / "broken.har"
    bad.write_text('{"log": {"entries": [')
    result = run(str(bad), str(FIXTURES / "firefox.har"), "-o", str(tmp_path / "cap"))
    assert result.exit_code == 1
    assert (f"error: {bad}: truncated file: the JSON ends after 0 complete entries "
            f"(in entry 0, at byte 21, the end of the file)\n") in result.stderr
    assert "5 recognised" in result.stdout and "; 1 error ->" in result.stdout
    assert result.stderr.endswith(f"Error: 1 damaged input file(s), whole entries kept: {bad}\n")
    errors = load_capture(tmp_path / "cap").table("errors")
    assert list(errors["stage"]) == ["import"] and "at byte 21" in errors["error"].iloc[0]


def test_output_that_is_not_a_capture(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "x.txt").write_text("mine")
    result = run(str(FIXTURES / "firefox.har"), "-o", str(tmp_path / "notes"))
    assert result.exit_code == 1
    assert "exists and is not a capture" in result.stderr
    assert os.listdir(tmp_path / "notes") == ["x.txt"]


def test_no_redact_warns(tmp_path):
    result = run(str(FIXTURES / "firefox.har"), "-o", str(tmp_path / "cap"), "--no-redact")
    assert result.exit_code == 0
    assert result.stderr.startswith("warning: --no-redact")


def test_real_subprocess_without_a_terminal_has_no_progress_bar(tmp_path):
    analyze = Path(sys.executable).parent / "analyze"
    cmd = [str(analyze)] if analyze.exists() else [sys.executable, "-m", "analyzer.cli"]
    proc = subprocess.run([*cmd, "import", str(FIXTURES / "chrome.har"), "-o", str(tmp_path / "cap")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # stderr is a pipe: no bar, no noise
    assert "7 recognised" in proc.stdout


class FakeTTY:
    """A text sink standing in for a terminal's stderr (the bar only ever writes to it)."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, s: str) -> None:
        self.text += s

    def flush(self) -> None:
        pass


def test_progress_bar_draws_bytes_read_over_total():
    sink = FakeTTY()
    bar = ProgressBar(sink, delay=0.0)
    bar(50_000_000, 200_000_000)
    bar(200_000_000, 200_000_000)
    bar.finish()
    assert " 25% 50.0/200.0 MB" in sink.text and "100% 200.0/200.0 MB" in sink.text
    assert sink.text.endswith("\n")


def test_progress_bar_silent_for_quick_imports():
    sink = FakeTTY()
    bar = ProgressBar(sink, delay=60.0)
    bar(10, 10)
    bar.finish()
    assert sink.text == ""
