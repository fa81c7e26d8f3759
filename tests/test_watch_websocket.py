"""``analyze watch`` for answers streamed over WebSocket: the Codex socket and ChatGPT's hand-off.

The addon's ``websocket_message`` hook appends each frame to the watch channel; its thread splits
the socket into answers as the extractors do. Oracles: the extractor's own split of the same
frames (offline), the origin's send log and what the WebSocket client itself received (live,
through a real mitmdump), rich's recording console, and a real terminal (tmux).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time

import aiohttp
import orjson
import pytest
from rich.console import Console

from analyzer.capture import watch as watch_channel
from analyzer.extract import extract_flow
from analyzer.store import load_capture
from analyzer.watch.state import WatchState, tokens_per_second
from analyzer.watch.view import render
from tests.origin.session import run_session
from tests.test_capture_e2e import ADDON, trust
from tests.test_codex_websocket import FIRST_MS, PATH, _create, _headers, _socket_flow, _until_terminal
from tests.test_watch import drain, udp_listener, watch_in_tmux

PROMPT = "tell me about sockets"


def _publish(frames_flow, port: int) -> None:
    """Feed a finished socket's frames to a publisher as the addon's hooks would, then close it."""
    publisher = watch_channel.WatchPublisher(("127.0.0.1", port))
    for message in frames_flow.websocket.messages:
        publisher.websocket_message(frames_flow, message)
    publisher.socket_ended(frames_flow)
    publisher.close()


def test_codex_socket_answers_split_as_the_extractor_splits_them():
    delta = {"type": "response.output_text.delta", "delta": "Hi"}
    usage = {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8}
    done = {"type": "response.completed",
            "response": {"id": "resp_1", "model": "gpt-5.6-codex", "status": "completed", "output": [],
                         "usage": usage}}
    flow = _socket_flow([
        (True, 1000.0, _create("hello")),
        (False, 1000.2, {"type": "response.created", "response": {"id": "resp_1", "model": "gpt-5.6-codex",
                                                                 "status": "in_progress"}}),
        (False, 1000.3, delta), (False, 1000.35, delta), (False, 1000.4, delta),
        (False, 1000.5, done),
        (False, 1000.6, {"type": "responsesapi.websocket_timing", "timing": {"duration_ms": 100}}),
        (True, 1001.0, {"type": "response.processed", "response_id": "resp_1"}),
        (True, 1001.1, _create("again")),
        (False, 1001.35, delta),  # the socket closes before this answer ends
    ])
    listener = udp_listener()
    _publish(flow, listener.getsockname()[1])
    records = drain(listener, time.time() + 2)
    final = {r["id"]: r for r in records if r["type"] == "stream" and r["done"]}
    calls = {row["flow_id"]: row for row in extract_flow(flow, source="test")["api_calls"]}
    assert set(final) == set(calls) == {f"{flow.id}#0", f"{flow.id}#1"}
    first, second = final[f"{flow.id}#0"], final[f"{flow.id}#1"]
    assert first["kind"] == "codex_websocket" and first["path"] == PATH and first["host"] == "chatgpt.com"
    assert first["model"] == "gpt-5.6-codex" and first["status"] == "completed"
    # Hand-worked from the frames above, and equal to what the extractor wrote for the same call.
    assert first["ttft_ms"] == pytest.approx(300.0) == calls[f"{flow.id}#0"]["ttft_ms"]
    assert first["elapsed_ms"] == pytest.approx(500.0) == calls[f"{flow.id}#0"]["e2e_ms"]
    assert first["n_text_events"] == 3 == calls[f"{flow.id}#0"]["n_text_events"]
    assert first["n_events"] == 5 and first["completion_tokens"] == 3
    assert tokens_per_second(first) == (pytest.approx(2 / 0.2), "usage")  # 3 tokens, 200 ms first to last
    assert second["ttft_ms"] == pytest.approx(250.0) and second["n_text_events"] == 1
    assert second["status"] is None and second["completion_tokens"] is None  # cut off at the close


def _codex_session(origin_url: str, proxy) -> tuple[list[float], list[list[tuple[float, dict]]]]:
    """Warm-up create, then a real one, on one socket through the proxy (as the Codex CLI does)."""
    sent: list[float] = []
    received: list[list[tuple[float, dict]]] = []

    async def session() -> None:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(origin_url.replace("https", "wss") + PATH, proxy=proxy.proxy_url,
                                       ssl=trust(proxy), headers=_headers(), compress=15) as ws:
                sent.append(time.time())
                await ws.send_str(json.dumps(_create("warm up", generate=False)))
                received.append(await _until_terminal(ws))
                sent.append(time.time())
                await ws.send_str(json.dumps(_create(PROMPT, previous_response_id=received[0][-1][1]["response"]["id"])))
                received.append(await _until_terminal(ws))

    asyncio.run(session())
    return sent, received


@pytest.mark.timeout(180)
def test_codex_websocket_answers_are_published_live(tmp_path, origin, mitmdump_factory):
    listener = udp_listener()
    capture_path = tmp_path / "codex-ws.parquet"
    proxy = mitmdump_factory(script=ADDON, options={"capture_path": capture_path, "capture_flush_ms": 200,
                                                    "capture_watch": f"127.0.0.1:{listener.getsockname()[1]}"})
    since = len(origin.log())
    sent, received = _codex_session(origin.url, proxy)
    records = drain(listener, time.time() + 4)
    assert proxy.stop() == 0
    assert "Traceback" not in proxy.log_text()

    socket_id = load_capture(capture_path).table("flows").set_index("kind").loc["codex_websocket"].flow_id
    log = origin.log(since)
    frames = [r for r in log if r["kind"] == "ws_frame"]
    creates = [r for r in log if r["kind"] == "ws_client" and r["type"] == "response.create"]
    streams = [r for r in records if r["type"] == "stream"]
    final = {r["id"]: r for r in streams if r["done"]}
    assert set(final) == {f"{socket_id}#0", f"{socket_id}#1"}
    for n, got in enumerate(received):
        rec = final[f"{socket_id}#{n}"]
        completed = got[-1][1]["response"]
        assert rec["kind"] == "codex_websocket" and rec["path"] == PATH and not rec["lost"]
        assert rec["model"] == completed["model"] == "gpt-5.6-codex" and rec["status"] == "completed"
        assert rec["n_events"] == len(got)  # every server frame of this answer the client read
        assert rec["n_text_events"] == sum(1 for r in frames if r["call"] == n and r["text"])
        assert rec["completion_tokens"] == completed["usage"]["output_tokens"]
    warm, answer = final[f"{socket_id}#0"], final[f"{socket_id}#1"]
    assert warm["n_text_events"] == 0 and warm["ttft_ms"] is None
    assert answer["completion_tokens"] > 3
    # TTFT from the create frame: not before the origin's own first delta (it waited FIRST_MS),
    # not after this client read it.
    first_text = next(r for r in frames if r["call"] == 1 and r["text"])
    client_first = next(t for t, o in received[1] if o["type"] == "response.output_text.delta")
    assert (first_text["t"] - creates[1]["t"]) * 1000 - 5 <= answer["ttft_ms"] <= (client_first - sent[1]) * 1000 + 5
    assert answer["ttft_ms"] >= FIRST_MS * 0.9
    # Progress came while it streamed, not only at the end.
    partial = [r for r in streams if r["id"] == answer["id"] and not r["done"]]
    assert partial and min(r["n_text_events"] for r in partial) < answer["n_text_events"]
    # tok/s: the proxy's rate is within a third of the origin's own (its send log: a delta every
    # GAP_MS of tests/test_codex_websocket.py), however loaded the machine.
    text_sends = [r["t"] for r in frames if r["call"] == 1 and r["text"]]
    assert answer["completion_tokens"] == len(text_sends)  # this origin: one token per delta
    origin_rate = (len(text_sends) - 1) / (text_sends[-1] - text_sends[0])
    rate, source = tokens_per_second(answer)
    assert source == "usage" and rate == pytest.approx(origin_rate, rel=0.35)
    # No prompt or answer text rides the channel.
    wire = b"".join(orjson.dumps(r) for r in records).decode()
    assert PROMPT not in wire and all(r["text"] not in wire for r in frames if len(r["text"] or "") > 3)

    # The table, through rich's recording console: one "api ws" row per answer.
    state = WatchState()
    for record in records:
        state.apply(record)
    console = Console(record=True, width=170, color_system=None)
    console.print(render(state, listening="127.0.0.1:7878"))
    rows = [line for line in console.export_text().splitlines() if f"api ws {PATH}" in line]
    assert len(rows) == 2
    row = rows[1]
    assert "gpt-5.6-codex" in row and "completed" in row
    assert f" {answer['completion_tokens']} " in row and f"{rate:.1f} " in row
    assert f"{answer['ttft_ms']:,.0f}" in row


@pytest.mark.timeout(180)
def test_chatgpt_websocket_handoff_turns_are_published_live(tmp_path, origin, mitmdump_factory):
    listener = udp_listener()
    capture_path = tmp_path / "ws2024.parquet"
    proxy = mitmdump_factory(script=ADDON, options={"capture_path": capture_path, "capture_flush_ms": 200,
                                                    "capture_watch": f"127.0.0.1:{listener.getsockname()[1]}"})
    record = run_session(origin.url, proxy=proxy.proxy_url, verify=trust(proxy), formats=("ws2024",), n_turns=1,
                         delays=(150, 30), analytics=False, api=False)
    records = drain(listener, time.time() + 4)
    assert proxy.stop() == 0
    assert "Traceback" not in proxy.log_text()
    turns = load_capture(capture_path).table("conversation_turns")
    # The answers read off the socket (the POST that handed off is a turn of its own, "handed_off").
    socket_turns = turns[turns.flow_id.str.contains("#")].set_index("flow_id")
    streams = [r for r in records if r["type"] == "stream" and r["kind"] == "conversation_websocket"]
    final = {r["id"]: r for r in streams if r["done"]}
    posted = [s for s in record.conversation_streams if s.fmt == "ws2024"]
    assert len(final) == len(posted) == len(socket_turns) >= 2
    assert set(final) == set(socket_turns.index)  # the extractor's ids, <socket flow id>#<n>
    for seen, rec in zip(posted, sorted(final.values(), key=lambda r: r["started_at"]), strict=True):
        assert rec["n_text_events"] == len(seen.text_times)  # the client's own count
        assert rec["model"] == seen.model_slug and rec["status"] == "finished_successfully"
        assert rec["n_text_events"] == socket_turns.loc[rec["id"]].n_text_events
        # Timed as the extractor times the turn (same frames, same start), and the first text
        # reached the proxy before it reached the client.
        row = socket_turns.loc[rec["id"]]
        assert rec["started_at"] == pytest.approx(row.started_at.timestamp(), abs=1e-3)
        assert rec["ttft_ms"] == pytest.approx(row.ttft_ms, abs=1.0) and rec["ttft_ms"] > 0
        assert rec["started_at"] + rec["ttft_ms"] / 1000 <= seen.text_times[0] + 0.005
        partial = [r for r in streams if r["id"] == rec["id"] and not r["done"]]
        assert partial and min(r["n_text_events"] for r in partial) < rec["n_text_events"]
    console = Console(record=True, width=170, color_system=None)
    state = WatchState()
    for r in records:
        state.apply(r)
    console.print(render(state, listening="127.0.0.1:7878"))
    rows = [line for line in console.export_text().splitlines() if "turn ws " in line]
    assert len(rows) == len(posted)
    assert all(posted[0].model_slug in row and "finished_successfully" in row for row in rows)


@pytest.mark.timeout(180)
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_websocket_answers_in_analyze_watch_in_a_real_terminal(tmp_path, origin, mitmdump_factory):
    with watch_in_tmux("chatwire-watch-ws") as (port, pane):
        proxy = mitmdump_factory(script=ADDON, options={"capture_path": tmp_path / "live.parquet",
                                                        "capture_watch": f"127.0.0.1:{port}"})
        _, received = _codex_session(origin.url, proxy)
        tokens = received[1][-1][1]["response"]["usage"]["output_tokens"]
        n_text = sum(1 for _, o in received[1] if o["type"] == "response.output_text.delta")
        record = run_session(origin.url, proxy=proxy.proxy_url, verify=trust(proxy), formats=("ws2024",),
                             n_turns=1, delays=(120, 20), analytics=False, api=False)
        posted = [s for s in record.conversation_streams if s.fmt == "ws2024"]

        def rows(marker: str) -> list[str]:
            return [line for line in pane().splitlines() if marker in line]

        deadline = time.time() + 20
        while time.time() < deadline and not (
                len([r for r in rows(f"api ws {PATH}") if "completed" in r]) == 2
                and len([r for r in rows("turn ws ") if "finished_successfully" in r]) == len(posted)):
            time.sleep(0.2)
        codex_rows = rows(f"api ws {PATH}")
        assert len(codex_rows) == 2, pane()
        answer = codex_rows[1]
        assert "gpt-5.6-codex" in answer and "completed" in answer
        assert f" {tokens} " in answer and f" {n_text} " in answer  # usage tokens, text events
        turn_rows = rows("turn ws ")
        assert len(turn_rows) == len(posted), pane()
        for row, seen in zip(turn_rows, posted, strict=True):
            assert seen.model_slug in row and "finished_successfully" in row
            assert f" {len(seen.text_times)} " in row
        assert proxy.stop() == 0
