"""The pure parts of ``analyze bench``: workload building, schedules, metrics — against hand-worked values."""

from __future__ import annotations

import json
import statistics

import pytest

from analyzer.bench.metrics import (
    RequestRecord,
    bootstrap_median_diff,
    context_bucket,
    lag_degraded,
    parse_slo,
    slo_ok,
    summarize,
    time_series,
)
from analyzer.bench.runner import live_context
from analyzer.bench.schedule import (
    Knobs,
    arrival_offsets,
    open_loop_plan,
    phase,
    session_starts,
    think_time_s,
)
from analyzer.bench.workload import (
    BenchTurn,
    Session,
    api_sessions,
    clone_sessions,
    request_messages,
    select_sessions,
)

T = 1_000_000.0


def _turn(session: str, index: int, sent: float | None, think: float | None = None, **kw) -> BenchTurn:
    return BenchTurn(session_id=session, turn_index=index, user_text=f"q{index}",
                     messages=[{"role": "user", "content": f"q{index}"}], sent_at=sent, think_s=think, **kw)


# ---------------------------------------------------------------- schedules


def test_constant_arrivals_are_k_over_rate():
    assert arrival_offsets(4, "constant", 4.0) == [0.0, 0.25, 0.5, 0.75]


def test_poisson_arrivals_are_seeded_with_mean_gap_one_over_rate():
    a = arrival_offsets(20_000, "poisson", 50.0, seed=7)
    assert a == arrival_offsets(20_000, "poisson", 50.0, seed=7)
    assert a != arrival_offsets(20_000, "poisson", 50.0, seed=8)
    gaps = [y - x for x, y in zip(a, a[1:], strict=False)]
    assert a[0] == 0.0 and min(gaps) > 0
    assert statistics.fmean(gaps) == pytest.approx(1 / 50.0, rel=0.03)
    # Exponential gaps: the standard deviation equals the mean.
    assert statistics.pstdev(gaps) == pytest.approx(1 / 50.0, rel=0.05)


def test_timestamps_schedule_keeps_recorded_times_divided_by_speed_plus_clone_shift():
    s1 = Session("s1", "api", [_turn("s1", 1, T), _turn("s1", 2, T + 10)])
    s2 = Session("s2", "api", [_turn("s2", 1, T + 4)])
    knobs = Knobs(schedule="timestamps", speed=2.0)
    plan = open_loop_plan([(s1, 0.0), (s2, 1.5)], knobs)
    # s1: 0 and 10/2; s2: 4/2 + its 1.5 s shift.
    assert [(p.offset_s, p.session_index, p.turn_position) for p in plan] == [(0.0, 0, 0), (3.5, 1, 0), (5.0, 0, 1)]
    assert open_loop_plan([(s1, 0.0), (s2, 1.5)], Knobs(schedule="timestamps", speed=2.0, duration_s=4.0))[-1].offset_s == 3.5


def test_rate_schedules_send_the_turns_in_recorded_order():
    s1 = Session("s1", "api", [_turn("s1", 1, T + 5)])
    s2 = Session("s2", "api", [_turn("s2", 1, T), _turn("s2", 2, T + 9)])
    plan = open_loop_plan([(s1, 0.0), (s2, 0.0)], Knobs(schedule="constant", rate=2.0))
    assert [(p.offset_s, p.session_index, p.turn_position) for p in plan] == [(0.0, 1, 0), (0.5, 0, 0), (1.0, 1, 1)]


def test_session_starts_and_think_time_knobs():
    s1 = Session("s1", "web", [_turn("s1", 1, T + 30), _turn("s1", 2, T + 100, think=30.0)])
    s2 = Session("s2", "web", [_turn("s2", 1, T + 10)])
    knobs = Knobs(schedule="session", speed=2.0, think_scale=0.5, think_max_s=10.0)
    assert session_starts([(s1, 0.0), (s2, 0.25)], knobs) == [10.0, 0.25]
    # 30 s × 0.5 = 15 s, capped at 10 s, then ÷ speed 2.
    assert think_time_s(s1.turns[1], knobs) == 5.0
    assert think_time_s(s1.turns[0], knobs) == 0.0  # a first turn never waits
    assert think_time_s(_turn("x", 2, None, None), knobs) == 0.0


def test_phases_leave_out_warmup_and_cooldown():
    knobs = Knobs(schedule="constant", rate=1.0, warmup_s=1.0, cooldown_s=2.0)
    assert [phase(o, 10.0, knobs) for o in (0.5, 1.0, 5.0, 8.0, 8.5, 10.0)] == [
        "warmup", "steady", "steady", "steady", "cooldown", "cooldown"]


def test_no_warmup_means_no_request_is_one():
    # A concurrency worker's first send can be meant a fraction of a millisecond before the run's
    # start (asyncio's timer wakes early): without --warmup it is steady all the same.
    assert phase(-0.0004, 10.0, Knobs(schedule="concurrency", concurrency=2)) == "steady"


def test_knobs_refuse_what_cannot_run():
    with pytest.raises(ValueError, match="needs --rate"):
        Knobs(schedule="poisson")
    with pytest.raises(ValueError, match="needs --concurrency"):
        Knobs(schedule="concurrency")
    with pytest.raises(ValueError, match="unknown schedule"):
        Knobs(schedule="burst")


# ---------------------------------------------------------------- workload


def _call(fid: str, at: float, messages: list[dict], answer: str, **kw) -> dict:
    return {"flow_id": fid, "started_at": at, "request_json": json.dumps({"model": "m", "messages": messages}),
            "response_text": answer, "ttft_ms": 200.0, "e2e_ms": 1200.0, "completion_tokens": 11, "model": "m", **kw}


def test_api_calls_that_resend_the_history_are_one_session():
    sys_m = {"role": "system", "content": "be brief"}
    u1, a1, u2 = ({"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                  {"role": "user", "content": "how are you?"})
    calls = [
        _call("c2", T + 30, [sys_m, u1, a1, u2], "fine"),
        _call("c1", T, [sys_m, u1], "hello"),
        _call("c3", T + 5, [{"role": "user", "content": [{"type": "text", "text": "other"}]}], "hello world",
              completion_tokens=None, n_text_events=4),
        _call("c4", T + 6, [{"role": "user", "content": "no text kept"}], None, completion_tokens=None, n_text_events=4),
    ]
    sessions = api_sessions(calls, {"c1": 40.0})
    assert [s.session_id for s in sessions] == ["api:c1", "api:c3", "api:c4"]
    first, other, textless = sessions
    assert [t.source_flow_id for t in first.turns] == ["c1", "c2"]
    assert [t.turn_index for t in first.turns] == [1, 2]
    # think = c2's send − (c1's send + its 1.2 s answer)
    assert first.turns[1].think_s == pytest.approx(30 - 1.2)
    assert first.turns[0].think_s is None
    assert first.turns[1].prefix == [sys_m] and first.turns[1].user_text == "how are you?"
    assert (first.turns[0].answer_tokens, first.turns[0].tokens_source) == (11, "usage")
    assert first.turns[0].captured == {"ttft_ms": 200.0, "e2e_ms": 1200.0, "itl_p50_ms": 40.0, "tpot_ms": 100.0}
    # Without usage the answer text is counted: "hello world" is 2 o200k tokens (ids 24912, 2375),
    # whatever the number of text events; without text, the text events are the length.
    assert (other.turns[0].answer_tokens, other.turns[0].tokens_source) == (2, "tokenizer")
    assert (textless.turns[0].answer_tokens, textless.turns[0].tokens_source) == (4, "text_events")
    assert other.turns[0].messages == [{"role": "user", "content": "other"}]


def test_request_messages_reads_chat_and_responses_bodies():
    assert request_messages(json.dumps({"input": "hey", "instructions": "sys"})) == [
        {"role": "system", "content": "sys"}, {"role": "user", "content": "hey"}]
    assert request_messages(json.dumps({"input": [{"role": "developer", "content": "d"},
                                                  {"role": "user", "content": [{"type": "input_text", "text": "q"}]}]})) == [
        {"role": "system", "content": "d"}, {"role": "user", "content": "q"}]
    assert request_messages("not json") is None and request_messages(None) is None


def test_selection_and_clones():
    s1 = Session("conv-a", "web", [_turn("conv-a", 1, T), _turn("conv-a", 2, T + 100)])
    s2 = Session("conv-b", "web", [_turn("conv-b", 1, T + 50)])
    assert [s.session_id for s in select_sessions([s2, s1])] == ["conv-a", "conv-b"]
    assert [s.session_id for s in select_sessions([s1, s2], conversation="conv-b")] == ["conv-b"]
    windowed = select_sessions([s1, s2], since=T + 40, until=T + 60)
    assert [(s.session_id, len(s.turns)) for s in windowed] == [("conv-b", 1)]
    assert len(select_sessions([s1, s2], sample=1, seed=3)) == 1
    clones = clone_sessions([s1], 3, jitter_s=2.0, seed=1)
    assert [c.session_id for c, _ in clones] == ["conv-a", "conv-a#1", "conv-a#2"]
    assert clones[0][1] == 0.0 and all(0.0 <= shift <= 2.0 for _, shift in clones[1:])
    assert clones[2][0].turns[1].session_id == "conv-a#2" and s1.turns[1].session_id == "conv-a"


def test_live_context_uses_the_servers_answers():
    t1 = _turn("s", 1, T, answer_text="captured one")
    t2 = _turn("s", 2, T + 1, answer_text="captured two")
    t3 = _turn("s", 3, T + 2)
    t1.prefix = t2.prefix = t3.prefix = [{"role": "system", "content": "sys"}]
    assert live_context(t3, [(t1, "live one"), (t2, None)]) == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "q1"}, {"role": "assistant", "content": "live one"},
        {"role": "user", "content": "q2"}, {"role": "assistant", "content": "captured two"},
        {"role": "user", "content": "q3"},
    ]


# ---------------------------------------------------------------- metrics


def _rec(**kw) -> RequestRecord:
    base = dict(run_id="r", flow_id="f", session_id="s", turn_index=1, intended_at=100.0, sent_at=100.010,
                token_times=[100.110, 100.130, 100.170], visible_times=[100.130, 100.170], ended_at=100.200,
                output_tokens=6)
    base.update(kw)
    return RequestRecord(**base)


def test_request_metrics_by_hand():
    r = _rec()
    assert r.schedule_lag_ms == pytest.approx(10.0)
    assert r.ttft_ms == pytest.approx(100.0)
    assert r.ttft_from_intended_ms == pytest.approx(110.0)
    assert r.ttfv_ms == pytest.approx(120.0)  # the first chunk was reasoning
    assert r.e2e_ms == pytest.approx(190.0) and r.e2e_from_intended_ms == pytest.approx(200.0)
    assert r.tpot_ms == pytest.approx((190.0 - 100.0) / 5)
    assert r.itl_ms == pytest.approx([20.0, 40.0])
    assert r.itl_per_token_ms == pytest.approx([10.0, 20.0])  # 6 tokens over 3 chunks: 2 per chunk
    assert _rec(output_tokens=None).tokens == 3  # no usage: one token per chunk
    failed = _rec(error="HTTP 500: boom", error_kind="http_5xx")
    assert not failed.ok and failed.e2e_ms is None and failed.tpot_ms is None


def test_slo_and_goodput_follow_vllm():
    assert parse_slo("ttft=105,tpot=20") == {"ttft": 105.0, "tpot": 20.0}
    for bad in ("ttft", "itl=3", "ttft=x", "e2e=-1"):
        with pytest.raises(ValueError):
            parse_slo(bad)
    assert slo_ok(_rec(), {"ttft": 105.0}) is False  # 110 ms from the intended send
    assert slo_ok(_rec(), {"ttft": 110.5, "tpot": 18.5, "e2e": 200.5}) is True
    assert slo_ok(_rec(), {}) is None
    assert slo_ok(_rec(error="x"), {"ttft": 1e9}) is False
    records = [_rec(session_id="a", turn_index=1), _rec(session_id="a", turn_index=2, intended_at=99.0),
               _rec(session_id="b", turn_index=1)]
    summary = summarize(records, slo={"ttft": 111.0})
    # a's second turn was meant 1 s earlier: 1110 ms from its intended send.
    assert summary["goodput"]["requests_met"] == 2
    assert summary["goodput"]["share"] == pytest.approx(2 / 3)
    assert (summary["goodput"]["conversations_met"], summary["goodput"]["conversations"]) == (1, 2)
    assert summary["ttft_ms"]["p50"] == pytest.approx(100.0)
    assert summary["itl_ms"]["n"] == 6
    assert set(summary["by_turn_index"]) == {"1", "2"}


def test_summary_leaves_out_warmup_and_cooldown_and_flags_lag():
    records = [_rec(phase="warmup", sent_at=100.5), _rec(), _rec(phase="cooldown", sent_at=101.0)]
    summary = summarize(records, lag_bound_ms=5.0)
    assert summary["requests"] == {"total": 3, "steady": 1, "ok": 1, "warmup": 1, "cooldown": 1, "errors": {}}
    assert summary["schedule_lag_ms"]["n"] == 1
    assert summary["degraded"] and "schedule lag p99 10.0 ms > bound 5 ms" in summary["degraded_reason"]
    assert not summarize(records, lag_bound_ms=50.0)["degraded"]
    # Throughput over the steady window: one request, 6 tokens, from its send to its end (190 ms).
    assert summary["throughput"]["output_tokens_per_s"] == pytest.approx(6 / 0.190)
    # p99 of 100 lags (linear, rank 0.99 × 99 = 98.01): one outlier stays under, two do not.
    assert not lag_degraded([1.0] * 99 + [100.0], 50.0)
    assert lag_degraded([1.0] * 98 + [100.0] * 2, 50.0) and not lag_degraded([], 1.0)


def test_time_series_and_buckets():
    r = _rec(intended_at=10.4, sent_at=10.5, ended_at=11.5, token_times=[10.6, 11.2], output_tokens=4)
    series = time_series([r], start=10.0)
    assert [b["in_flight"] for b in series] == [0.5, 0.5]
    assert [b["output_tokens_per_s"] for b in series] == [2.0, 2.0]
    assert series[0]["schedule_lag_ms"] == pytest.approx(100.0) and series[1]["schedule_lag_ms"] is None
    assert [context_bucket(n) for n in (None, 0, 1023, 1024, 5000, 20000)] == [None, "<1k", "<1k", "1k-4k", "4k-16k", "16k+"]


def test_bootstrap_interval_of_the_median_difference():
    flat = bootstrap_median_diff([2.0, 2.0, 2.0])
    assert flat == {"n": 3, "median": 2.0, "ci95": [2.0, 2.0]}
    spread = bootstrap_median_diff([1.0, 2.0, 3.0, 4.0, 5.0], seed=1)
    assert spread["median"] == 3.0 and 1.0 <= spread["ci95"][0] <= 3.0 <= spread["ci95"][1] <= 5.0
    assert bootstrap_median_diff([])["median"] is None


# ---------------------------------------------------------------- trace export


def test_block_ids_are_shared_by_equal_prefixes_only():
    from analyzer.bench.export import BlockIds

    ids = BlockIds(block_tokens=2)  # 8-character blocks
    a = ids([{"role": "user", "content": "x" * 20}])  # "<|user|>" + 20 x = 28 chars: 4 blocks
    b = ids([{"role": "user", "content": "x" * 20 + "yyyy"}])
    c = ids([{"role": "user", "content": "z" + "x" * 19}])
    assert a == [0, 1, 2, 3]
    assert b[:3] == a[:3] and b[3] != a[3] and len(b) == 4  # same first 24 characters, then differs
    assert c[0] == 0 and c[1] not in a  # the first block ("<|user|>") is shared, the rest is not


def test_mooncake_and_aiperf_records_by_hand():
    from analyzer.bench.export import export_trace

    s1 = Session("s1", "web", [
        _turn("s1", 1, T + 2.0, answer_tokens=7),
        _turn("s1", 2, T + 12.5, think=4.25, answer_tokens=3),
    ])
    s2 = Session("s2", "api", [_turn("s2", 1, T + 5.0, answer_tokens=None)])
    mooncake = [json.loads(line) for line in export_trace([s2, s1], "mooncake").splitlines()]
    assert [(r["timestamp"], r["output_length"]) for r in mooncake] == [(0, 7), (3000, 0), (10500, 3)]
    assert mooncake[0]["input_length"] == 1  # "q1": 2 characters, one token at 4 per token
    assert all(r["hash_ids"] for r in mooncake) and set(mooncake[0]) == {"timestamp", "input_length", "output_length", "hash_ids"}
    aiperf = [json.loads(line) for line in export_trace([s2, s1], "aiperf").splitlines()]
    assert [(r["session_id"], r.get("timestamp"), r.get("delay")) for r in aiperf] == [
        ("s1", 0, None), ("s1", None, 4250), ("s2", 3000, None)]
    assert aiperf[1]["messages"] == [{"role": "user", "content": "q2"}] and aiperf[1]["output_length"] == 3
    with pytest.raises(ValueError):
        export_trace([s1], "csv")


def test_credentials_in_the_base_url_are_not_recorded():
    from analyzer.cli.bench import _without_userinfo

    assert _without_userinfo("http://user:pw@127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    assert _without_userinfo("https://api.example/v1") == "https://api.example/v1"
