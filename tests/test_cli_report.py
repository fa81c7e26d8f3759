"""``analyze report`` through click's runner (every format), a golden Markdown report, bad input,
and one run of the installed console script in a real subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from analyzer.cli import main
from tests.golden import GOLDEN, check_golden
from tests.test_latency import known_rows, write_capture
from tests.test_telemetry import telemetry_rows


@pytest.fixture(scope="module")
def capture_path(tmp_path_factory) -> Path:
    return write_capture(tmp_path_factory.mktemp("cli") / "full.parquet", known_rows() | telemetry_rows())


def run(*args: str):
    return CliRunner().invoke(main, ["report", *args], catch_exceptions=False)


def test_markdown_matchescheck_golden(capture_path):
    result = run(str(capture_path), "--format", "markdown")
    assert result.exit_code == 0, result.output
    check_golden("report_known.md", result.output.replace(str(capture_path), "CAPTURE"))


def test_markdown_of_an_empty_capture_matchescheck_golden(tmp_path):
    path = write_capture(tmp_path / "empty.parquet", {})
    result = run(str(path), "--format", "markdown")
    assert result.exit_code == 0
    check_golden("report_empty.md", result.output.replace(str(path), "CAPTURE"))


def test_text_is_the_default(capture_path):
    result = run(str(capture_path))
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0] == f"chatwire report: {capture_path}"
    assert "TTFT" in result.output and "ITL" in result.output
    assert max(map(len, lines)) <= 80


def test_json_has_exactly_the_top_level_keys(capture_path):
    for args in (["--format", "json"], ["--json"]):
        result = run(str(capture_path), *args)
        assert result.exit_code == 0
        data = json.loads(result.output)
        assert list(data) == ["capture", "conversations", "latency", "telemetry", "codex"]
        assert data["latency"]["matched"]["pairs"] == 3


def test_output_file_is_written(capture_path, tmp_path):
    out = tmp_path / "report.json"
    result = run(str(capture_path), "-f", "json", "-o", str(out))
    assert result.exit_code == 0 and result.output == ""
    assert json.loads(out.read_text())["capture"]["flows"] == 10


def test_several_captures_combine(capture_path, tmp_path):
    # Another day's analytics (other flows) adds up; the same flows again would be counted once.
    later = {table: [row | {"flow_id": "later-" + row["flow_id"]} for row in rows]
             for table, rows in telemetry_rows().items()}
    other = write_capture(tmp_path / "other.parquet", later)
    data = json.loads(run(str(capture_path), str(other), "--json").output)
    assert data["telemetry"]["segment"]["events"] == 6
    assert data["capture"]["paths"] == [str(capture_path), str(other)]
    same = write_capture(tmp_path / "same.parquet", telemetry_rows())
    assert json.loads(run(str(capture_path), str(same), "--json").output)["telemetry"]["segment"]["events"] == 3


@pytest.mark.parametrize("case", ["missing", "file", "not_a_capture", "missing_table"])
def test_bad_input_is_one_clear_line(case, capture_path, tmp_path):
    if case == "missing":
        path, expect = tmp_path / "nope.parquet", "does not exist"
    elif case == "file":
        path, expect = tmp_path / "flows.har", "not a capture"
        path.write_text("{}")
    elif case == "not_a_capture":
        path, expect = tmp_path / "photos", "not a capture"
        path.mkdir()
        (path / "cat.jpg").write_bytes(b"\xff\xd8")
    else:
        path, expect = tmp_path / "partial.parquet", "missing table(s): latency_beacons"
        shutil.copytree(capture_path, path)
        shutil.rmtree(path / "latency_beacons")
    out = tmp_path / "report.txt"
    result = CliRunner().invoke(main, ["report", str(path), "-o", str(out)])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ") and str(path) in lines[0] and expect in lines[0]
    assert not out.exists()  # no half-written output


def test_unreadable_table_is_one_clear_line(capture_path, tmp_path):
    path = tmp_path / "corrupt.parquet"
    shutil.copytree(capture_path, path)
    for part in (path / "stream_events").glob("*.parquet"):
        part.write_bytes(b"this is not parquet")
    result = CliRunner().invoke(main, ["report", str(path)])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "stream_events" in lines[0], result.output


def test_console_script_in_a_subprocess(capture_path):
    script = Path(sys.executable).with_name("analyze")
    proc = subprocess.run([str(script), "report", str(capture_path), "--format", "markdown"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.replace(str(capture_path), "CAPTURE") == (GOLDEN / "report_known.md").read_text()
