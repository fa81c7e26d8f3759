"""Resumed streams, stop, stream status and the 2026 v1 events (guide 6c, 6d).

Pure parts against hand-worked streams; then a real mitmdump with the capture addon (and ``-w``)
between the scripted session's resume step and the origin, checked against the origin's own send
log, and the same answers from the flow file and from a HAR export of it.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from analyzer.analysis.conversations import build_conversation, list_conversations
from analyzer.analysis.latency import compute_latency, conversation_turns
from analyzer.analysis.report import build_report
from analyzer.analysis.resume import merge_resumes, resume_pairs, resumed_stream_events
from analyzer.cli import main as cli_main
from analyzer.extract import extract_flow
from analyzer.importer import import_sources
from analyzer.recognise import recognise
from analyzer.store import load_capture
from analyzer.streams.conversation import ConversationStream
from analyzer.streams.delta_v1 import apply_delta
from tests.flows_factory import make_flow
from tests.origin import formats as F
from tests.test_import_flowfile import _free_port, _mitmdump, _wait_port

REPO = Path(__file__).resolve().parent.parent
DELAYS = (40, 8)


def sse_events(wire: list[F.WireEvent]) -> list[tuple[str | None, str]]:
    """(event name, data) of each SSE event of ``wire``, as the parser would give them."""
    out = []
    for ev in wire:
        name, data = None, []
        for line in ev.data.decode().strip("\n").split("\n"):
            key, _, value = line.partition(": ")
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)
        out.append((name, "\n".join(data)))
    return out


def a_turn(tokens: list[str]) -> F.Turn:
    user = F.user_message("u1", "hi", parent_id="sys", create_time=1.0)
    return F.Turn(conversation_id="c1", assistant_id="a1", assistant_parent="u1", tokens=tokens, create_time=1.0,
                  model_slug="gpt-5-6", server_model_slug="gpt-5-6", system=F.system_message("sys"), user=user,
                  title="Hi", turn_exchange_id="x1")


TOKENS = ["One", " two", " three", " four", " five", " six", " seven", " eight", " nine."]


# ------------------------------------------------------------------------------- pure parts


def test_remove_op_and_carried_over_keys():
    root = {"message": {"metadata": {"a": 1, "b": 2}, "content": {"parts": ["x", "y"]}}}
    root = apply_delta(root, "/message/metadata/a", "remove", None)
    root = apply_delta(root, "/message/content/parts/1", "remove", None)
    assert root == {"message": {"metadata": {"b": 2}, "content": {"parts": ["x"]}}}
    stream = ConversationStream()
    stream.feed('"v1"', "delta_encoding")
    start = {"id": "a1", "author": {"role": "assistant"}, "content": {"content_type": "text", "parts": [""]},
             "metadata": {"hint": "x"}, "recipient": "all"}
    stream.feed(json.dumps({"p": "", "o": "add", "v": {"message": start}, "c": 3}), "delta")
    assert stream.feed(json.dumps({"p": "/message/content/parts/0", "o": "append", "v": "Hel"}), "delta").text == "Hel"
    assert stream.feed(json.dumps({"v": "lo"}), "delta").text == "lo"
    # A remove without "v" (and without "event: delta") is still a delta; its p and o carry over…
    info = stream.feed(json.dumps({"p": "/message/metadata/hint", "o": "remove"}), None)
    assert info.type == "delta" and "hint" not in stream.messages["a1"]["metadata"]
    # …so text after it names p and o again, and "v" never carried over.
    assert stream.feed(json.dumps({"p": "/message/content/parts/0", "o": "append", "v": "!"}), "delta").text == "!"
    assert stream._last_c == 3
    assert stream.answer()["content"]["parts"] == ["Hello!"]


def test_2026_events_are_typed_text_is_right_and_the_parent_follows_the_patch():
    turn = a_turn(TOKENS)
    wire = F.v1_events_2026(turn, first_ms=100, gap_ms=10)
    stream = ConversationStream()
    infos = [stream.feed(data, name) for name, data in sse_events(wire)]
    # the origin's own record of the text each event carries is the oracle
    assert [i.text or "" for i in infos] == [ev.text for ev in wire]
    kinds = {i.type for i in infos}
    assert {"safety_review_update", "streaming_parent_patch", "main_stream_complete", "conversation_async_status",
            "content_references_patch", "writing_blocks_metadata_patch", "perf_stats", "toast", "beacon",
            "resume_conversation_token"} <= kinds
    assert stream.answer()["content"]["parts"] == ["".join(TOKENS)]
    assert "streaming_hint" not in stream.answer()["metadata"]  # added, then removed
    # declared under the system message, moved under the user message by streaming_parent_patch
    assert stream.messages["a1"]["metadata"]["parent_id"] == "u1"
    assert stream.resume_token_kind == "topic" and stream.main_completed
    assert stream.safety_review == {"active": False, "protection_type": "cyber", "message": None}
    assert stream.perf_events[0]["stats"] == {"time_to_first_token_ms": 100, "total_time_ms": 180,
                                              "output_tokens": 9}


@pytest.mark.parametrize("cut", [12, 13, 14, 15, 16, 17, 19, 22])
def test_a_resumed_flow_continues_the_text_it_never_saw_start(cut):
    """Cut anywhere in the answer: the first flow's text plus the resume's is the whole answer."""
    wire = F.v1_events_2026(a_turn(TOKENS), first_ms=100, gap_ms=10)
    events = sse_events(wire)
    first, rest = ConversationStream(), ConversationStream(resumed=True)
    text_a = "".join(i.text or "" for i in (first.feed(d, n) for n, d in events[:cut]))
    infos = [rest.feed(d, n) for n, d in events[cut:]]
    text_b = "".join(i.text or "" for i in infos)
    assert text_a + text_b == "".join(TOKENS)
    assert not rest.errors
    answer = rest.answer()
    assert answer["status"] == "finished_successfully" and answer["content"]["parts"] == [text_b]
    assert answer["metadata"]["finish_details"] == {"type": "stop"}


@pytest.mark.parametrize(("method", "path", "kind"), [
    ("POST", "/backend-api/stop_conversation", "stream_control"),
    ("POST", "/backend-anon/stop_conversation", "stream_control"),
    ("GET", "/backend-api/conversation/6790a1b2-0000-4000-8000-000000000001/stream_status", "stream_control"),
    ("GET", "/backend-api/conversation/6790a1b2-0000-4000-8000-000000000001", "conversation_read"),
    ("POST", "/backend-api/f/conversation/resume", "conversation"),
    ("GET", "/backend-api/stop_conversation", None),
])
def test_recognised(method, path, kind):
    assert recognise(method, path) == kind


def test_stream_controls_rows_and_a_failed_resume_row():
    cid = "6790a1b2-0000-4000-8000-000000000001"
    status = extract_flow(make_flow("GET", f"/backend-api/conversation/{cid}/stream_status", status=404,
                                    response_body='{"detail": "not found"}'), source="test")
    assert [(r["kind"], r["conversation_id"], r["status"], r["status_code"]) for r in status["stream_controls"]] \
        == [("stream_status", cid, "UNAVAILABLE", 404)]
    stop = extract_flow(make_flow("POST", "/backend-api/stop_conversation",
                                  body={"conversation_id": cid, "exclude_async_types": []},
                                  response_body='{"status": "ok", "last_message_id": "a1"}'), source="test")
    row = stop["stream_controls"][0]
    assert (row["kind"], row["status"], row["last_message_id"]) == ("stop", "ok", "a1")
    assert json.loads(row["extra"]) == {"request.exclude_async_types": []}
    gone = extract_flow(make_flow("POST", "/backend-api/f/conversation/resume", status=410,
                                  body={"conversation_id": cid, "offset": 7},
                                  response_body='{"errorCode": "persisted_final_available", "detail": "stored"}'),
                        source="test")
    turn = gone["conversation_turns"][0]
    assert (turn["status"], turn["error_code"], turn["resume_offset"], turn["error"]) == (
        "error", "persisted_final_available", 7, "stored")
    assert gone["errors"] == []


def test_2026_events_on_a_celsius_socket():
    """The same v1 lines ride the celsius WebSocket: perf_stats rows, no false 'without [DONE]'."""
    from mitmproxy import websocket

    turn = a_turn(TOKENS)
    wire = F.v1_events_2026(turn, first_ms=100, gap_ms=10)
    frames = F.celsius_frames([ev for ev in wire if ev.kind != "done"], "topic-1")  # ends with the topic's done
    flow = make_flow("GET", "/celsius/ws/user", status=101, response_body=b"", start=10.0)
    flow.websocket = websocket.WebSocketData()
    flow.websocket.messages.append(websocket.WebSocketMessage(1, True, b'{"type":"subscribe"}', 10.5))
    for i, frame in enumerate(frames):
        flow.websocket.messages.append(websocket.WebSocketMessage(1, False, frame.data, 11.0 + i * 0.01))
    rows = extract_flow(flow, source="test")
    answer = rows["conversation_turns"][0]
    assert answer["assistant_text"] == "".join(TOKENS) and answer["error"] is None
    assert answer["resume_token_kind"] == "topic"
    assert {(r["metric"], r["value"]) for r in rows["perf_stats"]} == {
        ("stats.time_to_first_token_ms", 100.0), ("stats.total_time_ms", 180.0), ("stats.output_tokens", 9.0)}
    assert {m["parent_id"] for m in rows["messages"] if m["message_id"] == "a1"} == {"u1"}


def _turn_row(flow_id, at, **kw):
    row = {"flow_id": flow_id, "conversation_id": "c1", "started_at": pd.Timestamp(at, unit="s", tz="UTC"),
           "path": "/backend-api/f/conversation", "stream_format": "v1", "n_events": 10, "n_text_events": 4,
           "ttft_ms": 100.0, "e2e_ms": 400.0, "assistant_message_id": "a1", "assistant_text": "Hello",
           "status": "in_progress", "finish_type": None, "error": "stream ended without [DONE]",
           "error_code": None, "resume_offset": None, "next_offset": 10}
    row.update(kw)
    return row


def test_merge_resumes_by_hand():
    resume = "/backend-api/f/conversation/resume"
    turns = pd.DataFrame([
        _turn_row("post", 100.0),
        # 404 without a token: no events
        _turn_row("r1", 101.0, path=resume, stream_format="json", n_events=0, n_text_events=0, ttft_ms=None,
                  e2e_ms=None, assistant_message_id=None, assistant_text=None, status="error",
                  error="{'code': 'tokenless_resume_unavailable'}", error_code="tokenless_resume_unavailable",
                  resume_offset=None, next_offset=None),
        # continues from 10 and breaks again after 3 events
        _turn_row("r2", 102.0, path=resume, n_events=3, n_text_events=2, ttft_ms=50.0, e2e_ms=60.0,
                  assistant_message_id=None, assistant_text=" wor", resume_offset=10, next_offset=13),
        # asks from 12: one event repeated; ends the answer
        _turn_row("r3", 103.0, path=resume, n_events=5, n_text_events=2, ttft_ms=30.0, e2e_ms=90.0,
                  assistant_message_id=None, assistant_text="ld.", status="finished_successfully",
                  finish_type="stop", error=None, resume_offset=12, next_offset=17),
        _turn_row("next", 200.0, assistant_message_id="a2", assistant_text="Other", status="finished_successfully",
                  error=None),
    ])
    pairs = resume_pairs(turns)
    assert list(pairs["flow_id"]) == ["r1", "r2", "r3"] and set(pairs["into_flow_id"]) == {"post"}
    assert list(pairs["shift_ms"]) == [1000.0, 2000.0, 3000.0]
    merged = merge_resumes(turns, pairs).set_index("flow_id")
    assert list(merged.index) == ["post", "next"]
    row = merged.loc["post"]
    assert row["assistant_text"] == "Hello world."
    assert row["status"] == "finished_successfully" and row["finish_type"] == "stop" and row["error"] is None
    assert row["ttft_ms"] == 100.0 and row["e2e_ms"] == 3000.0 + 90.0
    assert row["n_resumes"] == 3 and row["resume_error"] == "tokenless_resume_unavailable"
    # gaps: post ends at 400 ms, r2's first text at 2000+50; r2 ends at 2060, r3's first text at 3030
    assert row["resume_gap_ms"] == pytest.approx((2050 - 400) + (3030 - 2060))
    assert row["resume_events_lost"] == -1
    assert row["n_events"] == 18 and row["n_text_events"] == 8
    assert merged.loc["next", "n_resumes"] == 0


# ------------------------------------------------------------------------------- through mitmdump


@pytest.fixture(scope="module")
def resumed_session(tmp_path_factory):
    """The session's resume step through mitmdump with the addon, saving flows with -w as well."""
    from tests.origin.server import start_origin
    from tests.origin.session import run_session

    work = tmp_path_factory.mktemp("resume")
    origin = start_origin(tls=True, workdir=work / "origin")
    port = _free_port()
    conf = work / "mitmconf"
    live = work / "live.parquet"
    flows_path = work / "session.mitm"
    cmd = [_mitmdump(), "-q", "--listen-host", "127.0.0.1", "--listen-port", str(port), "--set", f"confdir={conf}",
           "--ssl-insecure", "-s", str(REPO / "addons" / "chatgpt_capture.py"), "--set", f"capture_path={live}",
           "--set", "capture_flush_ms=200", "-w", str(flows_path)]
    log = open(work / "mitmdump.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log)
    try:
        _wait_port(port, proc)
        record = run_session(origin.url, proxy=f"http://127.0.0.1:{port}", verify=str(conf / "mitmproxy-ca-cert.pem"),
                             delays=DELAYS, formats=(), analytics=False, api=False, resume=True)
        sent = origin.log()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        origin.stop()
    assert "Traceback" not in (work / "mitmdump.log").read_text()
    return record, sent, live, flows_path, work



ERROR_CODES = {404: "tokenless_resume_unavailable", 410: "persisted_final_available"}  # what the origin answers


def origin_answers(sent: list[dict]) -> dict[str, dict]:
    """message id -> what the origin did for that answer, from its own send log: ``requests`` (the
    POST, then each resume: rid, path, status, t, cut) and ``events`` per rid (t, text, kind, data)."""
    requests = {r["rid"]: r for r in sent if r["kind"] == "request"}
    answers: dict[str, dict] = defaultdict(lambda: {"requests": [], "events": defaultdict(list)})
    for r in sent:
        if r["kind"] == "request" and r.get("message_id") and "conversation" in r["path"]:
            answers[r["message_id"]]["requests"].append(r)
        elif r["kind"] == "event" and requests.get(r["rid"], {}).get("message_id"):
            answers[requests[r["rid"]]["message_id"]]["events"][r["rid"]].append(r)
    return dict(answers)


def _text(answer: dict) -> str:
    return "".join(e["text"] for req in answer["requests"] for e in answer["events"][req["rid"]])


def _streamed(answer: dict) -> list[dict]:
    return [req for req in answer["requests"] if answer["events"][req["rid"]]]


def check_turns(merged: pd.DataFrame, answers: dict[str, dict], record, *, timed: bool) -> None:
    """The merged turns against the origin's send log (and what the session did)."""
    assert len(merged) == len(answers) == 5  # no resume flow is a turn of its own
    by_message = merged.set_index("assistant_message_id")
    stopped = {s.message_id for s in record.conversation_streams if s.stopped}
    for mid, answer in answers.items():
        row = by_message.loc[mid]
        post, resumes = answer["requests"][0], answer["requests"][1:]
        assert post["path"].endswith("/f/conversation") and all(r["path"].endswith("/resume") for r in resumes)
        assert row["assistant_text"] == _text(answer)
        assert row["n_resumes"] == len(resumes)
        failed = [ERROR_CODES[r["status"]] for r in resumes if r["status"] != 200]
        assert (None if pd.isna(row["resume_error"]) else row["resume_error"]) == (",".join(failed) or None)
        last_events = answer["events"][_streamed(answer)[-1]["rid"]]
        done = last_events[-1]["event_kind"] == "done"
        assert row["status"] == ("finished_successfully" if done else "in_progress")
        assert bool(row["stopped_by_user"]) == (mid in stopped)
        assert row["n_text_events"] == sum(1 for r in answer["events"].values() for e in r if e["text"])
        if not timed:
            continue
        events = [e for req in answer["requests"] for e in answer["events"][req["rid"]]]
        first_text = next(e["t"] for e in events if e["text"])
        # The proxy sees the request before the origin and each event after it: never less, and
        # not much more on a loaded machine.
        origin_ttft = (first_text - post["t"]) * 1000
        origin_e2e = (events[-1]["t"] - post["t"]) * 1000
        assert origin_ttft <= row["ttft_ms"] <= origin_ttft + 1500
        assert origin_e2e <= row["e2e_ms"] <= origin_e2e + 1500
        parts = _streamed(answer)
        if len(parts) > 1:
            origin_gap = 0.0
            for before, after in zip(parts, parts[1:], strict=False):
                evs = answer["events"][after["rid"]]
                resumed_at = next((e["t"] for e in evs if e["text"]), evs[-1]["t"])
                origin_gap += (resumed_at - answer["events"][before["rid"]][-1]["t"]) * 1000
            # A resume's first text goes out DELAYS[0] after its request: a floor the proxy cannot beat
            # (less 2 ms a resume: asyncio runs a timer up to its clock resolution early). A part that
            # carries no text (a cut after a few metadata events) is sent at once: its floor is 0.
            with_text = sum(1 for part in parts[1:] if any(e["text"] for e in answer["events"][part["rid"]]))
            assert row["resume_gap_ms"] >= (DELAYS[0] - 2) * with_text
            assert abs(row["resume_gap_ms"] - origin_gap) < 1000
            assert row["resume_events_lost"] == 0
        else:
            assert pd.isna(row["resume_gap_ms"])


def test_live_capture_joins_resumed_answers_into_one_turn(resumed_session):
    record, sent, live, _, _ = resumed_session
    cap = load_capture(live)
    answers = origin_answers(sent)
    assert not cap.table("errors").query("stage == 'stream'").shape[0]
    check_turns(conversation_turns(cap, all_columns=True), answers, record, timed=True)
    # The stored rows stay one per flow: the join is analysis's.
    stored = cap.table("conversation_turns")
    assert len(stored) == sum(len(a["requests"]) for a in answers.values())
    assert stored["path"].str.endswith("/resume").sum() == 6
    # stream_status and stop are rows of their own and land on their turn.
    controls = cap.table("stream_controls")
    assert sorted(controls["kind"]) == ["stop", "stream_status", "stream_status"]
    assert list(controls.query("kind == 'stream_status'").sort_values("at")["status"]) == record.stream_statuses
    merged = conversation_turns(cap, all_columns=True)
    assert merged["stream_status"].dropna().tolist() == ["COMPLETE"]
    stop = controls.query("kind == 'stop'").iloc[0]
    assert stop["last_message_id"] == merged.loc[merged["stopped_by_user"], "assistant_message_id"].item()


def test_live_latency_counts_every_part_and_no_gap_across_a_break(resumed_session):
    record, sent, live, _, _ = resumed_session
    cap = load_capture(live)
    answers = origin_answers(sent)
    frames = compute_latency(cap)
    turns = frames["turns"].set_index("flow_id")
    merged = conversation_turns(cap, all_columns=True).set_index("assistant_message_id")
    gaps = frames["itl_gaps"]["flow_id"].astype(str).value_counts()
    for mid, answer in answers.items():
        flow_id = merged.loc[mid, "flow_id"]
        per_part = [sum(1 for e in answer["events"][r["rid"]] if e["text"]) for r in _streamed(answer)]
        assert turns.loc[flow_id, "n_text_events"] == sum(per_part)
        assert gaps.get(flow_id, 0) == sum(n - 1 for n in per_part if n)


def test_stream_events_in_order_across_the_flows(resumed_session):
    _, sent, live, _, _ = resumed_session
    cap = load_capture(live)
    answers = origin_answers(sent)
    turns = cap.table("conversation_turns")
    pairs = resume_pairs(turns)
    joined = resumed_stream_events(cap.table("stream_events"), pairs)
    merged = conversation_turns(cap, all_columns=True).set_index("assistant_message_id")
    for mid, answer in answers.items():
        if len(_streamed(answer)) < 2:
            continue
        rows = joined[joined["turn_flow_id"] == merged.loc[mid, "flow_id"]]
        sent_events = [e for req in answer["requests"] for e in answer["events"][req["rid"]]]
        assert list(rows["turn_seq"]) == list(range(len(sent_events)))
        kinds = ["delta" if e["event_kind"] == "thought" else e["event_kind"] for e in sent_events]
        assert list(rows["type"]) == kinds
        assert "".join(rows["text"].fillna("")) == _text(answer)
        assert rows["turn_offset_ms"].is_monotonic_increasing


def test_2026_events_perf_stats_and_the_tree(resumed_session):
    record, sent, live, _, _ = resumed_session
    cap = load_capture(live)
    events = cap.table("stream_events")
    assert {"safety_review_update", "streaming_parent_patch", "main_stream_complete", "conversation_async_status",
            "content_references_patch", "writing_blocks_metadata_patch", "perf_stats", "toast",
            "beacon"} <= set(events["type"])
    # perf_stats rows hold exactly the numbers the origin sent.
    sent_perf = [json.loads(e["data"][len("data: "):]) for e in sent
                 if e["kind"] == "event" and e.get("event_kind") == "perf_stats"]
    perf = cap.table("perf_stats")
    assert len(sent_perf) == 2 and len(perf) == 3 * len(sent_perf)
    for obj in sent_perf:
        mine = perf[perf["message_id"] == obj["message_id"]].set_index("metric")["value"]
        assert mine.to_dict() == {f"stats.{k}": float(v) for k, v in obj["stats"].items()}
    report = build_report(cap)
    server = report["latency"]["server_reported"]
    assert server["answers"] == 2 and server["metrics"]["stats.time_to_first_token_ms"]["p50"] == DELAYS[0]
    assert report["conversations"]["resumes"] | {"resume_gap_ms": None} == {
        "resumed_turns": 4, "resumes": 6, "failed_resumes": 2, "stopped_by_user": 1, "resume_gap_ms": None}
    assert report["conversations"]["turns"] == 5
    # The tree: every answer under its user message (the 2026 answers were declared under the
    # message before and moved by streaming_parent_patch), with the whole text once resumed.
    cid = record.conversation_ids["resume"]
    streams = {s.message_id: s for s in record.conversation_streams if s.conversation_id == cid}
    stream_rows = cap.table("messages").query("source == 'stream' and role == 'assistant'")
    for mid, s in streams.items():
        assert set(stream_rows.loc[stream_rows["message_id"] == mid, "parent_id"]) == {s.user_message_id}
    conv = build_conversation(cap, cid)
    mapping = record.mappings[cid]["mapping"]
    for mid, s in streams.items():
        node = conv.nodes[mid]
        assert node.parent == s.user_message_id == mapping[mid]["parent"]
        assert node.text == "".join(mapping[mid]["message"]["content"]["parts"])  # the 410 / stopped ones too
    listing = list_conversations(cap).set_index("conversation_id")
    assert listing.loc[cid, "turns"] == 4
    # The celsius chat followed over HTTP got its title from the resume (the POST ended at the hand-off).
    from tests.origin.session import RESUME_TEXTS

    assert listing.loc[record.conversation_ids["resume_sse_endpoint"], "title"] == F.title_for(RESUME_TEXTS[4])


def test_the_tree_from_the_streams_alone_has_the_whole_resumed_text(resumed_session):
    from analyzer.analysis.conversations import (
        MESSAGE_COLUMNS,
        TURN_COLUMNS,
        conversation_from_frames,
        with_resumes,
    )

    record, sent, live, _, _ = resumed_session
    cap = load_capture(live)
    cid = record.conversation_ids["resume"]
    messages = cap.table("messages", MESSAGE_COLUMNS).query("source != 'mapping'")
    messages, turns = with_resumes(messages, cap.table("conversation_turns", TURN_COLUMNS))
    conv = conversation_from_frames(messages, turns, cid)
    answers = origin_answers(sent)
    for s in record.conversation_streams:
        if s.conversation_id == cid:
            assert conv.nodes[s.message_id].parent == s.user_message_id
            assert conv.nodes[s.message_id].text == _text(answers[s.message_id]) == s.text


def test_cli_shows_the_resumed_turns(resumed_session):
    record, _, live, _, _ = resumed_session
    out = CliRunner().invoke(cli_main, ["report", str(live), "-f", "markdown"])
    assert out.exit_code == 0, out.output
    assert "4 turns resumed after a broken stream (6 resumes, 2 failed)" in out.output
    assert "1 turn stopped by the user" in out.output and "stats.time_to_first_token_ms" in out.output
    html = CliRunner().invoke(cli_main, ["report", str(live), "-f", "html"])
    assert html.exit_code == 0
    section = html.output[html.output.index('<section id="perf-stats"'):]
    section = section[:section.index("</section>")]
    assert "<td>stats.time_to_first_token_ms</td>" in section and f"<td class=\"num\">{DELAYS[0]:.1f}</td>" in section
    assert "<td>ts_first_token_ms</td>" in section  # beside the beacons
    cid = record.conversation_ids["resume"]
    conv = CliRunner().invoke(cli_main, ["conversations", str(live), "-c", cid, "-f", "json"])
    assert conv.exit_code == 0
    a = next(s for s in record.conversation_streams if s.conversation_id == cid and s.resumes)
    assert a.text in [n["text"] for n in json.loads(conv.output)["nodes"]]


def _view(cap) -> pd.DataFrame:
    cols = ["assistant_message_id", "assistant_text", "status", "n_resumes", "resume_error", "stopped_by_user",
            "stream_status", "n_text_events"]
    return conversation_turns(cap, all_columns=True)[cols].sort_values("assistant_message_id").reset_index(drop=True)


def test_flow_file_gives_the_same_resumed_turns(resumed_session, tmp_path):
    record, sent, live, flows_path, _ = resumed_session
    imported = tmp_path / "imported.parquet"
    summary = import_sources([flows_path], imported)
    assert summary.errors == []
    live_cap, imp_cap = load_capture(live), load_capture(imported)
    pd.testing.assert_frame_equal(_view(live_cap), _view(imp_cap))
    check_turns(conversation_turns(imp_cap, all_columns=True), origin_answers(sent), record, timed=True)
    for name in ("stream_controls", "perf_stats"):  # each capture run has its own capture_id
        live_rows, imp_rows = live_cap.table(name).drop(columns=["capture_id"]), imp_cap.table(name).drop(columns=["capture_id"])
        pd.testing.assert_frame_equal(live_rows.sort_values(list(live_rows.columns[:3])).reset_index(drop=True),
                                      imp_rows.sort_values(list(imp_rows.columns[:3])).reset_index(drop=True))


def test_har_export_gives_the_same_resumed_turns(resumed_session, tmp_path):
    record, sent, live, flows_path, work = resumed_session
    har = tmp_path / "export.har"
    subprocess.run([_mitmdump(), "-q", "-nr", str(flows_path), "--set", f"hardump={har}",
                    "--set", f"confdir={work / 'mitmconf'}"], check=True, timeout=120, stdout=subprocess.DEVNULL)
    imported = tmp_path / "from_har.parquet"
    assert import_sources([har], imported).errors == []
    cap = load_capture(imported)
    pd.testing.assert_frame_equal(_view(load_capture(live)), _view(cap))
    check_turns(conversation_turns(cap, all_columns=True), origin_answers(sent), record, timed=False)
