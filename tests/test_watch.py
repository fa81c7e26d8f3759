"""``analyze watch`` and the addon's watch channel: a real mitmdump, the origin, rich's own harness, tmux."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from rich.console import Console

from analyzer.capture import watch as watch_channel
from analyzer.cli import main
from analyzer.store import load_capture
from analyzer.watch.state import WatchState, tokens_per_second
from analyzer.watch.view import render
from tests.origin.session import SECRETS, run_session
from tests.test_capture_e2e import ADDON, trust

ROOT = Path(__file__).resolve().parent.parent


def udp_listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    return sock


def drain(sock: socket.socket, until: float) -> list[dict]:
    records = []
    while time.time() < until:
        try:
            records.append(orjson.loads(sock.recv(65536)))
        except TimeoutError:
            if records and time.time() > until - 0.5:
                break
    return records


def test_parse_address_takes_loopback_only():
    assert watch_channel.parse_address("127.0.0.1:7878") == ("127.0.0.1", 7878)
    assert watch_channel.parse_address("udp://localhost:9") == ("127.0.0.1", 9)
    assert watch_channel.parse_address("[::1]:7878") == ("::1", 7878)
    for bad in ("10.0.0.1:7878", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:http"):
        with pytest.raises(ValueError):
            watch_channel.parse_address(bad)


@pytest.mark.timeout(180)
def test_live_capture_publishes_progress_that_matches_what_the_client_saw(tmp_path, origin, mitmdump_factory):
    listener = udp_listener()
    port = listener.getsockname()[1]
    capture_path = tmp_path / "live.parquet"
    proxy = mitmdump_factory(script=ADDON, options={"capture_path": capture_path, "capture_flush_ms": 200,
                                                    "capture_watch": f"127.0.0.1:{port}"})
    record = run_session(origin.url, proxy=proxy.proxy_url, verify=trust(proxy), formats=("v1",), n_turns=2,
                         delays=(150, 30))
    records = drain(listener, time.time() + 5)
    assert proxy.stop() == 0
    assert "Traceback" not in proxy.log_text()
    streams = [r for r in records if r["type"] == "stream"]
    final = {r["id"]: r for r in streams if r["done"]}
    turns = [r for r in final.values() if r["kind"] == "conversation"]
    posted = [s for s in record.conversation_streams if s.fmt == "v1"]
    assert len(turns) == len(posted) >= 2
    for seen, rec in zip(posted, sorted(turns, key=lambda r: r["started_at"]), strict=True):
        # The client's own count of text events and the model the stream named.
        assert rec["n_text_events"] == len(seen.text_times) and rec["n_events"] == len(seen.events)
        assert rec["model"] == seen.model_slug and rec["status"] == "finished_successfully"
        # TTFT: the proxy saw the first text event before the client did, after the request began.
        client_ttft = (seen.text_times[0] - seen.started_at) * 1000
        assert 0 < rec["ttft_ms"] <= client_ttft + 5
        assert rec["ttft_ms"] >= 150 * 0.9  # the origin waited 150 ms before the first token
        assert not rec["lost"]
        # Progress records came while it streamed, not only at the end.
        partial = [r for r in streams if r["id"] == rec["id"] and not r["done"]]
        assert partial and min(r["n_text_events"] for r in partial) < rec["n_text_events"]
    api = [r for r in final.values() if r["kind"] == "api"]
    assert api and all(r["n_text_events"] > 0 for r in api)
    # Analytics counts tick up and end at what the capture holds; the beacon is the client's last.
    capture = load_capture(capture_path)
    counts = [r["counts"] for r in records if r["type"] == "analytics"]
    assert counts[-1] == {t: len(capture.table(t)) for t in watch_channel.ANALYTICS_TABLES}
    assert counts[-1]["latency_beacons"] == sum(1 for m, p, _ in record.requests if p == "/backend-api/lat/r")
    assert len({tuple(c.values()) for c in counts}) > 1  # ticking, not one final number
    beacons = [r["beacon"] for r in records if r.get("beacon")]
    assert beacons and beacons[-1]["count_tokens"] == len(posted[-1].text_times)
    # No secret of the session and no answer text rides the channel.
    wire = b"".join(orjson.dumps(r) for r in records).decode()
    for secret in SECRETS:
        assert secret not in wire
    assert all(s.text not in wire for s in posted)


@contextlib.contextmanager
def watch_in_tmux(name: str) -> Iterator[tuple[int, Callable[[], str]]]:
    """``analyze watch`` in a real terminal (a tmux pane): yields its UDP port, once it listens, and
    a function that reads the pane."""
    sock = udp_listener()
    port = sock.getsockname()[1]
    sock.close()
    session = f"{name}-{os.getpid()}"
    analyze = Path(sys.executable).with_name("analyze")
    tmux = ["tmux", "-L", session]
    subprocess.run(tmux + ["new-session", "-d", "-s", session, "-x", "170", "-y", "30",
                           f"{shlex.quote(str(analyze))} watch --listen 127.0.0.1:{port} --exit-after 120"],
                   check=True, env=os.environ | {"TERM": "xterm-256color"})
    try:
        def pane() -> str:
            return subprocess.run(tmux + ["capture-pane", "-p", "-t", session], capture_output=True,
                                  text=True).stdout

        deadline = time.time() + 30
        while "listening on udp://" not in pane() and time.time() < deadline:
            time.sleep(0.2)
        assert "listening on udp://" in pane()
        yield port, pane
    finally:
        subprocess.run(tmux + ["kill-server"], capture_output=True)


def test_the_publisher_drops_rather_than_queues():
    # Nobody listens on this port: sending must neither raise nor block.
    sock = udp_listener()
    port = sock.getsockname()[1]
    sock.close()
    publisher = watch_channel.WatchPublisher(("127.0.0.1", port))
    try:
        for _ in range(50):
            publisher.send({"v": 1, "type": "analytics", "counts": {}})
        # The hand-off deque is bounded: past MAX_PENDING, chunks are dropped and counted.
        publisher._stop = True  # keep the thread from draining while we fill it
        publisher._wake.set()
        publisher._thread.join(timeout=5)

        class Flow:
            id = "f1"

        for _ in range(watch_channel.MAX_PENDING + 10):
            publisher.chunk(Flow, 0.0, b"x")
        assert len(publisher.pending) == watch_channel.MAX_PENDING
        assert publisher.dropped_chunks == 10 and "f1" in publisher._lost
    finally:
        publisher.sock.close()


def stream_record(**kw) -> dict:
    base = {"v": 1, "type": "stream", "id": "f1", "kind": "conversation", "host": "chatgpt.com",
            "path": "/backend-api/f/conversation", "model": "gpt-5-test", "started_at": time.time(),
            "ttft_ms": 412.4, "elapsed_ms": 1412.4, "text_elapsed_ms": 1000.0, "n_bytes": 900, "n_events": 23,
            "n_text_events": 21, "completion_tokens": None, "status": None, "done": False, "lost": False}
    return base | kw


def test_state_and_table_with_richs_recording_console():
    state = WatchState()
    state.apply(stream_record())
    state.apply(stream_record(id="f2", kind="api", path="/v1/chat/completions", model="gpt-4o\x1b[2J",
                              completion_tokens=11, text_elapsed_ms=500.0, done=True, status="stop"))
    state.apply_datagram(orjson.dumps({"v": 1, "type": "analytics", "beacon": {
        "model": "gpt-5-test", "ts_first_token_ms": 400.0, "count_tokens": 21, "ts_total_request_ms": 1500.0},
        "counts": {"latency_beacons": 1, "segment_events": 7, "statsig_events": 3}}))
    state.apply_datagram(orjson.dumps({"v": 1, "type": "analytics",  # a late, older datagram
                                       "counts": {"latency_beacons": 0, "segment_events": 5, "statsig_events": 3}}))
    state.apply_datagram(b"not json")
    # hand-worked: 21 text events over 1000 ms -> 20 gaps/s; 11 tokens over 500 ms -> 20 tok/s
    assert tokens_per_second(state.turns["f1"]) == (20.0, "text_events")
    assert tokens_per_second(state.turns["f2"]) == (20.0, "usage")
    assert state.counts == {"latency_beacons": 1, "segment_events": 7, "statsig_events": 3}
    console = Console(record=True, width=160, color_system=None)
    console.print(render(state, listening="127.0.0.1:7878"))
    text = console.export_text()
    f1 = next(line for line in text.splitlines() if "/backend-api/f/conversation" in line)
    assert "gpt-5-test" in f1 and "412" in f1 and "23" in f1 and "21" in f1 and "20.0*" in f1 and "streaming" in f1
    f2 = next(line for line in text.splitlines() if "/v1/chat/completions" in line)
    assert "11" in f2 and "20.0 " in f2 and "stop" in f2 and "\\x1b[2J" in f2
    assert "\x1b" not in text
    assert "beacons 1 · segment 7 · statsig 3" in text
    assert "last beacon: model gpt-5-test · first token 400 ms · 21 tokens · total 1,500 ms" in text
    assert "1 ignored" in text


def test_a_final_record_is_not_overtaken_by_a_late_partial():
    state = WatchState()
    state.apply(stream_record(done=True, n_text_events=30))
    state.apply(stream_record(done=False, n_text_events=12))
    assert state.turns["f1"]["n_text_events"] == 30


def test_watch_cli_rejects_a_non_loopback_address():
    result = CliRunner().invoke(main, ["watch", "--listen", "192.0.2.1:7878", "--exit-after", "0"])
    assert result.exit_code != 0 and "loopback" in result.output


@pytest.mark.timeout(180)
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_analyze_watch_in_a_real_terminal(tmp_path, origin, mitmdump_factory):
    with watch_in_tmux("chatwire-watch") as (port, pane):
        proxy = mitmdump_factory(script=ADDON, options={"capture_path": tmp_path / "live.parquet",
                                                        "capture_watch": f"127.0.0.1:{port}"})
        record = run_session(origin.url, proxy=proxy.proxy_url, verify=trust(proxy), formats=("v1",),
                             n_turns=1, api=False, delays=(120, 20))
        seen = record.conversation_streams[0]
        deadline = time.time() + 20
        screen = pane()
        while "finished_successfully" not in screen and time.time() < deadline:
            time.sleep(0.2)
            screen = pane()
        row = next(line for line in screen.splitlines() if "/backend-api/f/conversation" in line)
        assert seen.model_slug in row and "finished_successfully" in row
        assert f" {len(seen.text_times)} " in row  # the text events the client counted
        n_beacons = sum(1 for _, path, _ in record.requests if path == "/backend-api/lat/r")
        while f"beacons {n_beacons} " not in screen and time.time() < deadline:
            time.sleep(0.2)
            screen = pane()
        assert n_beacons and f"beacons {n_beacons} " in screen, screen
        assert f"last beacon: model {seen.model_slug}" in screen
        assert proxy.stop() == 0


@pytest.mark.timeout(120)
def test_a_non_loopback_capture_watch_stops_mitmdump_with_one_line(tmp_path):
    mitmdump = Path(sys.executable).with_name("mitmdump")
    proc = subprocess.run(
        [str(mitmdump), "-n", "-s", str(ADDON), "--set", f"capture_path={tmp_path / 'c.parquet'}",
         "--set", "capture_watch=192.0.2.1:7878", "--set", f"confdir={tmp_path / 'conf'}"],
        capture_output=True, text=True, timeout=100, cwd=tmp_path,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "capture_watch must be a loopback address" in out and "Traceback" not in out


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_analyze_watch_ends_cleanly_on_a_signal_even_if_started_with_sigint_ignored(signum):
    """A shell starts background jobs with SIGINT ignored; a supervisor stops with SIGTERM. Both end the view."""
    import signal

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    analyze = Path(sys.executable).with_name("analyze")
    proc = subprocess.Popen([str(analyze), "watch", "--listen", f"127.0.0.1:{port}"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        # Bound once the port answers nothing but is taken: wait for the listener to hold it.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    break
            time.sleep(0.1)
        time.sleep(0.5)  # past the signal handlers' installation, which follows the bind
        proc.send_signal(getattr(signal, signum))
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert b"Traceback" not in err
