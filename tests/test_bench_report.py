"""``analyze report`` on a bench output: a ``bench`` section per run, in every format, through the CLI.

Two real runs against the queue-model test server go into one capture: a closed-loop one with a lag
bound no run can exceed and an open-loop one held to a lag bound of 0 ms, which no real client
meets, so the first is never degraded and the second always is, however loaded the machine. The section's numbers are checked against the ``bench_requests`` rows by hand
(median, counts, the steady window's rate), not against the code that wrote them.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from click.testing import CliRunner

from analyzer.cli import main
from analyzer.store import load_capture
from tests.capture_factory import make_capture
from tests.replay_api_server import ApiTestServer
from tests.test_bench import KEY, api_call_rows

N = 12


@pytest.fixture(scope="module")
def bench_out(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("bench-report")
    capture = make_capture(tmp / "api.parquet", api_call_rows(N))
    out = tmp / "out.parquet"
    srv = ApiTestServer(slots=2, per_token_ms=5.0, queue_tokens=8).start()
    try:
        # Run 1 can never be degraded (an unreachable lag bound, whatever the machine's load); run 2 always is.
        for args in (["--schedule", "concurrency", "--concurrency", "2", "--slo", "ttft=1000", "--lag-bound", "1e9"],
                     ["--schedule", "constant", "--rate", "40", "--lag-bound", "0"]):
            result = CliRunner().invoke(main, [
                "bench", str(capture), "--base-url", srv.url("queue"), "--api-key-env", "CHATWIRE_BENCH_KEY",
                "-o", str(out), *args], env={"CHATWIRE_BENCH_KEY": KEY}, catch_exceptions=False)
            assert result.exit_code == 0, result.output
    finally:
        srv.stop()
    return out


def report(out: Path, fmt: str) -> str:
    result = CliRunner().invoke(main, ["report", str(out), "--format", fmt], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_json_bench_section_matches_the_request_rows(bench_out):
    rep = json.loads(report(bench_out, "json"))
    runs = rep["bench"]["runs"]
    assert [r["schedule"] for r in runs] == ["concurrency", "constant"]
    assert [r["degraded"] for r in runs] == [False, True]
    assert runs[1]["degraded_reason"].startswith("schedule lag p99")
    assert runs[0]["knobs"]["concurrency"] == 2 and runs[1]["knobs"]["rate"] == 40
    rows = load_capture(bench_out).table("bench_requests")
    for run in runs:
        mine = rows[(rows["run_id"] == run["run_id"]) & (rows["phase"] == "steady") & rows["ok"]]
        assert run["request_rows"] == N and len(mine) == N
        assert run["ttft_ms"]["n"] == N
        assert run["ttft_ms"]["p50"] == pytest.approx(statistics.median(mine["ttft_ms"]))
        assert run["e2e_ms"]["max"] == pytest.approx(mine["e2e_ms"].max())
        assert run["schedule_lag_ms"]["p50"] == pytest.approx(statistics.median(mine["schedule_lag_ms"]))
        window = (mine["ended_at"].max() - mine["sent_at"].min()).total_seconds()
        assert run["throughput"]["requests_per_s"] == pytest.approx(N / window, rel=1e-3)
        assert run["throughput"]["output_tokens"] == N * 8  # the server streams 8 tokens per request
        assert run["output_tokens_source"] == {"usage": N}
    assert runs[0]["goodput"]["requests_met"] == N and runs[1]["goodput"] is None
    # The rest of the report is still there: the requests are API calls.
    assert rep["latency"]["api"]["calls"] == 2 * N


def test_text_markdown_and_html_show_the_degraded_run_first(bench_out):
    for fmt in ("text", "markdown"):
        text = report(bench_out, fmt)
        assert "bench runs" in text.lower() and "1 DEGRADED" in text
        run2 = text.index("Run 2")
        # Within run 2, the DEGRADED line comes before its schedule and its numbers.
        assert text.index("DEGRADED: schedule lag p99", run2) < text.index("schedule constant (rate=40", run2)
        assert text.index("schedule constant", run2) < text.index("ttft_ms", run2)
        assert "schedule concurrency (concurrency=2" in text
        assert "goodput (ttft=1000): 12 requests met the SLOs (100.0%" in text
        # The bench section precedes the report's latency section.
        assert text.lower().index("bench runs") < text.lower().index("openai-api calls")
    page = report(bench_out, "html")
    start = page.index('<section id="bench"')
    section = page[start:page.index("</section>", start)]
    assert section.count('data-degraded="yes"') == 1
    assert section.index("DEGRADED") < section.index("schedule constant")
    assert section.count('<table class="stats bench-stats">') == 2
    assert start < page.index('<section id="summary"')  # the first section of the page


def test_report_without_bench_rows_has_no_bench_key(tmp_path):
    capture = make_capture(tmp_path / "plain.parquet", api_call_rows(2))
    rep = json.loads(report(capture, "json"))
    assert "bench" not in rep
    assert "bench runs" not in report(capture, "text").lower()
