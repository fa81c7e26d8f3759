"""``analyze bench`` end to end: the real CLI, a real aiohttp client, the project's test API server.

The server (``tests/replay_api_server.py``, ``/queue``) is a queue model: ``SLOTS`` requests served at
once, one token every ``PER_TOKEN_MS`` from the moment a request gets its slot, so its capacity is
known (SLOTS / (TOKENS × PER_TOKEN_MS)) and overload is real. Its send log (when each request came
in, got a slot, had its first token written) is the oracle for the client's timing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from analyzer.cli import main
from analyzer.store import load_capture
from tests.capture_factory import T0, make_capture
from tests.replay_api_server import ApiTestServer
from tests.test_replay import conversation_rows

KEY = "sk-bench-0123456789abcdef-secret"
SLOTS, PER_TOKEN_MS, TOKENS = 2, 10.0, 8
SERVICE_S = TOKENS * PER_TOKEN_MS / 1000  # 80 ms per request: capacity SLOTS / SERVICE_S = 25 requests/s
N_CALLS = 40


def api_call_rows(n: int) -> dict[str, list[dict]]:
    """``n`` one-turn API sessions, 1 s apart, each answered with TOKENS tokens."""
    calls = []
    for k in range(n):
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"question {k}"}]}
        calls.append({
            "flow_id": f"call-{k:03d}", "host": "api.openai.com", "endpoint": "/v1/chat/completions",
            "model": "gpt-4o-mini", "stream": True, "n_messages": 1, "last_user_text": f"question {k}",
            "response_text": "answer " * TOKENS, "completion_tokens": TOKENS, "prompt_tokens": 2,
            "started_at": T0 + k, "ttft_ms": 300.0, "e2e_ms": 900.0, "request_json": json.dumps(body),
        })
    return {"api_calls": calls}


@pytest.fixture(scope="module")
def api_capture(tmp_path_factory) -> Path:
    return make_capture(tmp_path_factory.mktemp("bench") / "api.parquet", api_call_rows(N_CALLS))


@pytest.fixture(scope="module")
def web_capture(tmp_path_factory) -> Path:
    return make_capture(tmp_path_factory.mktemp("bench") / "web.parquet", conversation_rows())


@pytest.fixture
def server():
    srv = ApiTestServer(slots=SLOTS, per_token_ms=PER_TOKEN_MS, queue_tokens=TOKENS).start()
    yield srv
    srv.stop()


def bench(capture: Path, base_url: str, out: Path, *args: str) -> tuple[int, str, str]:
    cmd = ["bench", str(capture), "--base-url", base_url, "--api-key-env", "CHATWIRE_BENCH_KEY", "-o", str(out), *args]
    result = CliRunner().invoke(main, cmd, env={"CHATWIRE_BENCH_KEY": KEY}, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def requests_table(out: Path):
    return load_capture(out).table("bench_requests").sort_values("intended_at").reset_index(drop=True)


def by_response(server: ApiTestServer, out: Path) -> list[tuple[dict, dict]]:
    """(bench_requests row, the server's send-log row) pairs, joined on the response id."""
    rec = load_capture(out)
    calls = rec.table("api_calls").set_index("flow_id")["response_id"].to_dict()
    log = {e["response_id"]: e for e in server.send_log}
    rows = requests_table(out).to_dict("records")
    return [(r, log[calls[r["flow_id"]]]) for r in rows]


def _epoch(ts) -> float:
    return ts.timestamp()


def quarter_medians(values: list[float]) -> tuple[float, float]:
    q = max(len(values) // 4, 1)
    first, last = sorted(values[:q]), sorted(values[-q:])
    return first[len(first) // 2], last[len(last) // 2]


# ---------------------------------------------------------------- open loop past capacity


def test_open_loop_past_capacity_shows_rising_queue_inclusive_ttft(api_capture, server, tmp_path):
    out = tmp_path / "open.parquet"
    # 60 requests/s against a capacity of 25/s: the server's queue grows for the whole run.
    code, stdout, _ = bench(api_capture, server.url("queue"), out, "--schedule", "constant", "--rate", "60",
                            "--format", "json", "--lag-bound", "1000")
    assert code == 0, stdout
    summary = json.loads(stdout)
    pairs = by_response(server, out)
    assert len(pairs) == N_CALLS and all(r["ok"] for r, _ in pairs)
    # The server really queued: late requests waited for a slot.
    waits = [s["slot_at"] - s["received_at"] for _, s in pairs]
    assert max(waits) > 0.5
    assert max(s["in_service"] for _, s in pairs) <= SLOTS
    ttft = [r["ttft_ms"] for r, _ in pairs]
    early, late = quarter_medians(ttft)
    assert late > early + 400, (early, late)
    # Each TTFT is the server's (first token written − request in) plus the loopback trips, never
    # less; typically a few ms more (the bound is loose: the machine is shared and loaded).
    errors = [r["ttft_ms"] - (s["first_token_at"] - s["received_at"]) * 1000 for r, s in pairs]
    assert min(errors) >= -1.0
    assert statistics.median(errors) < 20.0, sorted(errors)
    assert all(_epoch(r["sent_at"]) <= s["received_at"] + 0.001 for r, s in pairs)
    # With an unlimited pool the client keeps to its schedule: the rise is the server's, not ours.
    lag = summary["schedule_lag_ms"]
    assert lag["n"] == N_CALLS and lag["p50"] < min(60.0, late / 5), (lag, late)
    assert summary["ttft_ms"]["p99"] > 500 and summary["ttft_ms"]["p50"] > 100
    # The intended times are the schedule's: 1/60 s apart.
    intended = [_epoch(r["intended_at"]) for r, _ in pairs]
    gaps = [b - a for a, b in zip(intended, intended[1:], strict=False)]
    assert all(g == pytest.approx(1 / 60, abs=1e-4) for g in gaps)


def test_open_loop_with_a_full_connection_pool_shows_schedule_lag(api_capture, server, tmp_path):
    out = tmp_path / "pool.parquet"
    # Two connections for two slots: requests now wait in the client, which the lag must show.
    code, stdout, _ = bench(api_capture, server.url("queue"), out, "--schedule", "constant", "--rate", "60",
                            "--max-connections", "2")
    assert code == 0, stdout
    assert stdout.startswith("DEGRADED: schedule lag p99")  # the report says so first
    rows = requests_table(out)
    lags = list(rows["schedule_lag_ms"])
    early, late = quarter_medians(lags)
    assert late > early + 400, (early, late)
    # Counted from the written request, TTFT stays the server's service time; from the intended
    # send it carries the whole wait (no coordinated omission).
    assert rows["ttft_ms"].median() < 60
    assert (rows["ttft_from_intended_ms"] >= rows["ttft_ms"] + rows["schedule_lag_ms"] - 0.01).all()
    # (the client's pool is not strictly first-come first-served: look at the late ones' median)
    assert rows["ttft_from_intended_ms"].iloc[-10:].median() > 500
    assert max(e["in_service"] for e in server.send_log) <= SLOTS
    waits = [e["slot_at"] - e["received_at"] for e in server.send_log]
    assert max(waits) < 0.05  # the server never had to queue


# ---------------------------------------------------------------- closed loop


def test_closed_loop_concurrency_never_overshoots(api_capture, server, tmp_path):
    out = tmp_path / "closed.parquet"
    code, stdout, _ = bench(api_capture, server.url("queue"), out, "--schedule", "concurrency", "--concurrency",
                            str(SLOTS), "--format", "json")
    assert code == 0, stdout
    summary = json.loads(stdout)
    rows = requests_table(out)
    assert len(rows) == N_CALLS and rows["ok"].all()
    # At most SLOTS requests in flight at any moment, by the client's own times...
    events = sorted([(_epoch(t), 1) for t in rows["sent_at"]] + [(_epoch(t), -1) for t in rows["ended_at"]],
                    key=lambda e: (e[0], e[1]))
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    assert peak <= SLOTS
    # ...and by the server's: nobody queued, so TTFT stays flat at about one token time.
    assert max(e["in_service"] for e in server.send_log) <= SLOTS
    assert max(e["slot_at"] - e["received_at"] for e in server.send_log) < 0.05
    assert summary["ttft_ms"]["p90"] < 60 and summary["schedule_lag_ms"]["p90"] < 20
    # Closed loop runs at the server's pace: about SLOTS / SERVICE_S requests per second, not more.
    assert summary["throughput"]["requests_per_s"] <= SLOTS / SERVICE_S * 1.05
    assert summary["throughput"]["output_tokens"] == N_CALLS * TOKENS
    # ``degraded`` is left out: it reports the client machine's own scheduling (one descheduled
    # moment of a shared 2-core machine flags a run), not whether the closed loop overshot.
    assert isinstance(summary["degraded"], bool)


def test_session_schedule_waits_for_the_answer_plus_the_think_time(web_capture, server, tmp_path):
    out = tmp_path / "session.parquet"
    # conv-r: turns at T0, T0+120, T0+180; the answers before turns 2 and 3 took 0.8 + 0.5 s and
    # 0.6 + 0.5 s. With --speed 1000 the think times (118.7 s, 58.9 s) become 118.7 ms and 58.9 ms.
    code, stdout, _ = bench(web_capture, server.url("queue"), out, "--schedule", "session", "--speed", "1000",
                            "--model", "m", "--format", "json", "--slo", "ttft=1000")
    assert code == 0, stdout
    summary = json.loads(stdout)
    rows = requests_table(out)
    assert list(rows["turn_index"]) == [1, 2, 3] and set(rows["session_id"]) == {"conv-r"}
    think = [(_epoch(rows["intended_at"][k]) - _epoch(rows["ended_at"][k - 1])) * 1000 for k in (1, 2)]
    assert think == [pytest.approx(118.7, abs=0.01), pytest.approx(58.9, abs=0.01)]
    assert (rows["schedule_lag_ms"] < 50).all()
    # Captured context: the third turn carries the web app's first two answers.
    sent = [r["body"]["messages"] for r in server.requests]
    assert sent[2][-2:] == [{"role": "assistant", "content": "Rome."}, {"role": "user", "content": "And of Germany?"}]
    # The recorded answer length is held with max_tokens: no usage, no beacon, so the answer text's
    # o200k tokens ("Paris" + ".", "Rome" + ".", "Berlin" + ".": 2 each), not the text events the
    # factory cut each answer into (3, 5 and 4 of them).
    assert [r["body"]["max_tokens"] for r in server.requests] == [2, 2, 2]
    assert set(rows["recorded_tokens_source"]) == {"tokenizer"}
    assert summary["goodput"]["conversations_met"] == 1
    vs = summary["versus_capture"]
    assert [t["captured"]["ttft_ms"] for t in vs["turns"]] == [800.0, 600.0, 900.0]
    assert vs["median_difference_ms"]["ttft_ms"]["n"] == 3
    assert vs["median_difference_ms"]["ttft_ms"]["median"] < -500  # the test server is far faster
    for key in ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms", "schedule_lag_ms", "degraded", "throughput", "goodput",
                "by_turn_index", "versus_capture"):
        assert key in summary
    assert set(summary["ttft_ms"]) == {"n", "mean", "min", "p50", "p90", "p95", "p99", "max"}


def test_live_context_sends_the_servers_answers(web_capture, server, tmp_path):
    out = tmp_path / "live.parquet"
    code, stdout, _ = bench(web_capture, server.url("queue"), out, "--schedule", "session", "--speed", "1000",
                            "--context", "live", "--hold-length", "--model", "m")
    assert code == 0, stdout
    bodies = [r["body"] for r in server.requests]
    assert bodies[1]["messages"][1] == {"role": "assistant", "content": " t0 t1"}
    # Context drift, by hand (answers held at their 2 recorded tokens, " t0 t1": 6 characters):
    # turn 2 sends "What is the capital of France?" (30) + " t0 t1" (6) + "And of Italy?" (13) = 49
    # characters, as many as the capture's 30 + "Paris." (6) + 13; turn 3 adds " t0 t1" (6) +
    # "And of Germany?" (15): 70 where the capture had 49 + "Rome." (5) + 15 = 69.
    rows = requests_table(out)
    assert len(rows) == 3
    summary_drift = json.loads(load_capture(out).table("bench_runs")["summary"].iloc[0])["context_drift_pct"]
    assert summary_drift["n"] == 3 and summary_drift["min"] == 0.0  # turn 1 has no history, turn 2 none either
    assert summary_drift["p50"] == 0.0
    assert summary_drift["max"] == pytest.approx((70 - 69) / 69 * 100)
    assert bodies[0]["min_tokens"] == 2 and bodies[0]["ignore_eos"] is True


# ---------------------------------------------------------------- results, secrets, errors


def test_results_are_a_capture_that_report_reads_and_hold_no_key(api_capture, server, tmp_path):
    out = tmp_path / "res.parquet"
    code, stdout, _ = bench(api_capture, server.url("queue"), out, "--schedule", "poisson", "--rate", "100",
                            "--seed", "3", "--warmup", "0.05", "--slo", "ttft=5000,tpot=100")
    assert code == 0, stdout
    rec = load_capture(out)
    runs = rec.table("bench_runs")
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["schedule"] == "poisson" and run["seed"] == 3 and run["n_requests"] == N_CALLS
    assert json.loads(run["knobs"])["rate"] == 100.0
    assert json.loads(run["models"]) == {"ids": ["test-model"]}
    assert "--api-key-env=CHATWIRE_BENCH_KEY" in json.loads(run["command"])
    reqs = rec.table("bench_requests")
    assert set(reqs["run_id"]) == {run["run_id"]}
    assert set(reqs["phase"]) == {"warmup", "steady"}
    assert reqs["slo_ok"].all()
    calls = rec.table("api_calls")
    assert set(calls["flow_id"]) == set(reqs["flow_id"]) and (calls["completion_tokens"] == TOKENS).all()
    assert set(rec.table("flows")["source"]) == {"bench"}
    assert set(rec.table("captures")["source"]) == {"bench"}  # the run is listed as a bench run
    assert len(rec.table("stream_events")) == N_CALLS * (TOKENS + 4)  # role, tokens, finish, usage, [DONE]
    # The key went to the server in the Authorization header, nowhere else; no captured header was sent.
    assert all(r["headers"]["Authorization"] == f"Bearer {KEY}" for r in server.requests)
    assert not any("Cookie" in r["headers"] for r in server.requests)
    assert KEY not in stdout
    for part in out.rglob("*.parquet"):
        assert KEY.encode() not in part.read_bytes()
    result = CliRunner().invoke(main, ["report", str(out), "--format", "json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["latency"]["api"]["ttft_ms"]["n"] == N_CALLS


def test_errors_are_counted_by_kind(api_capture, server, tmp_path):
    out = tmp_path / "bad.parquet"
    code, stdout, _ = bench(api_capture, server.url("bad"), out, "--schedule", "constant", "--rate", "200",
                            "--format", "json", "--sample", "5")
    assert code == 0
    summary = json.loads(stdout)
    assert summary["requests"]["errors"] == {"http_4xx": 5} and summary["requests"]["ok"] == 0
    rows = requests_table(out)
    assert (rows["error"].str.startswith("HTTP 400: model not found")).all()
    out = tmp_path / "drop.parquet"
    code, stdout, _ = bench(api_capture, server.url("drop"), out, "--schedule", "constant", "--rate", "200",
                            "--format", "json", "--sample", "3")
    assert json.loads(stdout)["requests"]["errors"] == {"cut": 3}


@pytest.mark.parametrize("args, message", [
    (["--schedule", "poisson"], "--schedule poisson needs --rate > 0"),
    (["--schedule", "constant", "--rate", "5", "--context", "live"], "--context live needs a closed-loop schedule"),
    (["--slo", "itl=3"], "--slo: 'itl=3' is not ttft=MS"),
])
def test_bad_options_are_one_clear_line(api_capture, tmp_path, args, message):
    code, _, stderr = bench(api_capture, "http://127.0.0.1:9/v1", tmp_path / "x.parquet", *args)
    assert code == 2 and message in stderr
    assert not (tmp_path / "x.parquet").exists()


def test_missing_key_and_empty_workload(api_capture, tmp_path):
    result = CliRunner().invoke(main, ["bench", str(api_capture), "--base-url", "http://127.0.0.1:9/v1",
                                       "-o", str(tmp_path / "o"), "--api-key-env", "CHATWIRE_UNSET_VAR"], env={})
    assert result.exit_code == 1 and "environment variable CHATWIRE_UNSET_VAR is not set" in result.stderr
    code, _, stderr = bench(api_capture, "http://127.0.0.1:9/v1", tmp_path / "y", "--conversation", "nope")
    assert code == 1 and "no conversation turn or API call to send" in stderr
    assert not (tmp_path / "y").exists()


@pytest.mark.slow
def test_ctrl_c_keeps_what_was_done(api_capture, server, tmp_path):
    out = tmp_path / "int.parquet"
    # One request every 0.5 s for 20 s; interrupted after the fifth (about 2.5 s): on a loaded machine
    # the run must still be far from its end when the signal lands.
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "analyze"), "bench", str(api_capture), "--base-url", server.url("queue"),
         "--api-key-env", "CHATWIRE_BENCH_KEY", "-o", str(out), "--schedule", "timestamps", "--speed", "2"],
        env={**os.environ, "CHATWIRE_BENCH_KEY": KEY}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 60
    while len(server.send_log) < 5 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "(interrupted: partial)" in stdout
    rec = load_capture(out)
    assert bool(rec.table("bench_runs")["interrupted"].iloc[0]) is True
    n = len(rec.table("bench_requests"))
    assert 5 <= n < N_CALLS
    assert len(rec.table("api_calls")) == n


def test_export_trace_writes_the_workload_and_sends_nothing(web_capture, tmp_path):
    path = tmp_path / "trace.jsonl"
    result = CliRunner().invoke(main, ["bench", str(web_capture), "--export-trace", "mooncake", str(path)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in path.read_text().splitlines()]
    # conv-r's three turns, at T0, T0+120 s and T0+180 s, with their recorded answer lengths (the
    # answers' o200k tokens: a word and ".", 2 each).
    assert [r["timestamp"] for r in records] == [0, 120_000, 180_000]
    assert [r["output_length"] for r in records] == [2, 2, 2]
    assert "wrote 3 request(s) of 1 session(s) as a trace in mooncake format" in result.stderr
    path = tmp_path / "aiperf.jsonl"
    result = CliRunner().invoke(main, ["bench", str(web_capture), "--export-trace", "aiperf", str(path)])
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r.get("delay") for r in records] == [None, 118_700, 58_900]
    assert records[2]["messages"][-1] == {"role": "user", "content": "And of Germany?"}
    result = CliRunner().invoke(main, ["bench", str(web_capture)])
    assert result.exit_code == 2 and "--base-url and -o OUT are required" in result.stderr


def test_html_page_is_static(web_capture, server, tmp_path):
    out = tmp_path / "html.parquet"
    code, page, _ = bench(web_capture, server.url("queue"), out, "--schedule", "session", "--speed", "1000",
                          "--model", "m", "--format", "html")
    assert code == 0
    assert page.startswith("<!doctype html>") and page.count("<svg") == 4  # over time, in flight, 2 CDFs
    assert "<script" not in page
    assert not re.search(r'(src|href)="?(https?:|//)', page)  # nothing a browser would fetch
    assert "captured" in page and "ttft_from_intended_ms" in page


def test_max_active_caps_the_sessions_at_once(api_capture, server, tmp_path):
    out = tmp_path / "active.parquet"
    # Sessions meant 10 ms apart (1 s ÷ 100), each answer 80 ms: one at a time, so later ones start late.
    code, stdout, _ = bench(api_capture, server.url("queue"), out, "--schedule", "session", "--speed", "100",
                            "--max-active", "1", "--sample", "10", "--format", "json")
    assert code == 0, stdout
    rows = requests_table(out)
    spans = sorted(zip((_epoch(t) for t in rows["sent_at"]), (_epoch(t) for t in rows["ended_at"]), strict=True))
    assert all(nxt[0] >= prev[1] for prev, nxt in zip(spans, spans[1:], strict=False))  # never two at once
    assert max(e["in_service"] for e in server.send_log) == 1
    lags = list(rows["schedule_lag_ms"])
    assert lags[-1] > lags[0] + 300  # the wait for a slot is schedule lag


def test_captures_older_than_the_bench_tables_still_read(web_capture, tmp_path):
    import shutil

    from analyzer.store import CaptureError

    old = tmp_path / "old.parquet"
    shutil.copytree(web_capture, old)
    shutil.rmtree(old / "bench_runs")
    shutil.rmtree(old / "bench_requests")
    rec = load_capture(old)  # written before these tables existed: they read as empty
    assert rec.table("bench_requests").empty and len(rec.table("conversation_turns")) == 4
    shutil.rmtree(old / "messages")  # an original table missing is still damage
    with pytest.raises(CaptureError, match="missing table.*messages"):
        load_capture(old)
