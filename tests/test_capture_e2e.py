"""End to end: a real mitmdump with the capture addon between a real client and our origin."""

from __future__ import annotations

import signal
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pyarrow.dataset as ds
import pytest

from analyzer.redact import PLACEHOLDER
from analyzer.schema import TABLES
from analyzer.store import load_capture
from analyzer.streams.conversation import ConversationStream
from analyzer.streams.sse import parse_sse
from tests.origin import formats
from tests.origin.session import SECRET_VALUES, SECRETS, run_session

ROOT = Path(__file__).resolve().parent.parent
ADDON = ROOT / "addons" / "chatgpt_capture.py"


def trust(proxy) -> ssl.SSLContext:
    """A client TLS context that trusts this mitmdump's CA."""
    return ssl.create_default_context(cafile=str(proxy.ca_path))


def all_strings(capture_path: Path) -> str:
    """Every string cell of every table, decoded (Parquet pages are compressed, so a byte scan alone
    would miss a secret), plus the raw bytes of every file as latin-1."""
    pieces = []
    for name in TABLES:
        table = ds.dataset(capture_path / name, format="parquet").to_table()
        for column in table.columns:
            if str(column.type) == "string":
                pieces.extend(v for v in column.to_pylist() if v)
    for path in capture_path.rglob("*"):
        if path.is_file():
            pieces.append(path.read_bytes().decode("latin-1"))
    return "\n".join(pieces)


@pytest.mark.parametrize(("http2", "encoding"), [(False, None), (True, "gzip")], ids=["http1-plain", "http2-gzip"])
def test_session_is_captured_whole_timed_and_redacted(tmp_path, origin, mitmdump_factory, http2, encoding):
    capture_path = tmp_path / "live.parquet"
    proxy = mitmdump_factory(script=ADDON, options={"capture_path": capture_path, "capture_flush_ms": 200})
    since = len(origin.log())
    record = run_session(origin.url, proxy=proxy.proxy_url, verify=trust(proxy), http2=http2,
                         formats=("legacy", "v1", "ws2024", "celsius"), delays=(120, 15), encoding=encoding)
    assert proxy.stop() == 0
    assert "Traceback" not in proxy.log_text()
    capture = load_capture(capture_path)
    flows = capture.table("flows")
    turns = capture.table("conversation_turns")
    events = capture.table("stream_events")

    # Every conversation POST is a turn; what the client read is what was recorded.
    posted = [s for s in record.conversation_streams if s.fmt in ("legacy", "v1")]
    by_ray = turns.set_index("cf_ray")
    for stream in posted:
        turn = by_ray.loc[stream.cf_ray]
        assert turn.stream_format == stream.fmt
        assert turn.assistant_text == stream.text
        assert turn.status == "finished_successfully" and turn.finish_type == "stop"
        assert turn.conversation_id == stream.conversation_id
        assert turn.n_text_events == len(stream.text_times)
        assert (flows.set_index("flow_id").loc[turn.flow_id, "http_version"]) == ("HTTP/2.0" if http2 else "HTTP/1.1")
    # WebSocket answers (2024 web pubsub and 2025 celsius) feed the same tables.
    ws_turns = turns[turns.flow_id.str.contains("#")]
    ws_streams = [s for s in record.conversation_streams if s.fmt in ("ws2024", "celsius")]
    assert sorted(ws_turns.assistant_text) == sorted(s.text for s in ws_streams)

    # Arrival times: each event's proxy arrival is at or just after the origin sent it, and the
    # client got it within a few ms of that (the proxy does not hold the stream back).
    origin_events = [r for r in origin.log(since) if r["kind"] == "event"]
    sent = {(r["cf_ray"], r["index"]): r["t"] for r in origin_events}
    sent_before = {(r["cf_ray"], r["index"]): r["t_before"] for r in origin_events}
    lags_proxy, lags_client, early = [], [], []
    flow_ray = flows.set_index("flow_id")["cf_ray"]
    for flow_id, group in events[events.flow_id.isin(turns.flow_id)].groupby("flow_id"):
        if flow_id not in flow_ray.index:
            continue
        ray = flow_ray.loc[flow_id]
        ordered = group.sort_values("seq")
        for seq, at in zip(ordered["seq"], ordered["at"], strict=True):
            if (ray, seq) in sent:
                lags_proxy.append((at.timestamp() - sent[(ray, seq)]) * 1000)
                early.append((at.timestamp() - sent_before[(ray, seq)]) * 1000)
    for stream in posted:
        for index, event in enumerate(stream.events):
            if (stream.cf_ray, index) in sent:
                lags_client.append((event.t - sent[(stream.cf_ray, index)]) * 1000)
    turn_rays = set(turns.cf_ray.dropna())
    assert len(lags_proxy) == sum(1 for r in origin_events if r["cf_ray"] in turn_rays)
    # Never before the origin began to send it (the origin also stamps after its server took the
    # event, and a loaded machine may run the proxy in between: that stamp can be later than arrival).
    assert min(early) > -1 and statistics.median(lags_proxy) < 25
    assert statistics.median(lags_client) < 25 and max(lags_client) < 500

    # TTFT against the origin's own send log, not a schedule: the request start (proxy) lies between the
    # client's send and the origin's receipt; the first text event reached the proxy between the
    # origin's send of it and the client's receipt of it. Hence, per turn:
    #   (first text sent − request received at the origin) − 10 ms ≤ ttft ≤ first text at the client − client's send
    requests = {r["cf_ray"]: r for r in origin.log(since) if r["kind"] == "request" and r.get("cf_ray")}
    for stream in posted:
        turn = by_ray.loc[stream.cf_ray]
        first_text = min(r["index"] for r in origin_events if r["cf_ray"] == stream.cf_ray and r["text"])
        low = (sent[(stream.cf_ray, first_text)] - requests[stream.cf_ray]["t"]) * 1000 - 10
        high = (stream.text_times[0] - stream.started_at) * 1000
        assert low <= turn.ttft_ms <= high, (stream.cf_ray, low, turn.ttft_ms, high)
        assert turn.e2e_ms > turn.ttft_ms

    # Beacons, analytics, reads and API calls.
    beacons = capture.table("latency_beacons")
    assert sorted(beacons.server_request_id) == sorted(b["server_request_id"] for b in record.beacons)
    assert set(beacons.server_request_id) <= set(turns.cf_ray.dropna()) | {None}
    segment = capture.table("segment_events")
    expected_segment = sum(len(p["body"].get("batch", [p["body"]])) for p in record.segment_payloads)
    assert len(segment) == expected_segment and segment.conversation_id.notna().any()
    statsig = capture.table("statsig_events")
    assert len(statsig) == sum(len(p["body"]["events"]) for p in record.statsig_payloads)
    assert capture.table("conversation_reads").conversation_id.isin(record.conversation_ids.values()).all()
    api = capture.table("api_calls")
    assert sorted(api.endpoint) == ["/v1/chat/completions"] * 2 + ["/v1/responses"] * 2
    assert api[api.stream].ttft_ms.notna().all() and (api.total_tokens > 0).all()
    assert capture.table("errors").empty, capture.table("errors").to_dict("records")

    # Redaction: no secret the client sent, nor the server's resume token, is anywhere on disk.
    blob = all_strings(capture_path)
    for secret in [*SECRETS, *formats.SERVER_SECRETS]:
        assert secret not in blob, secret[:12]
    assert PLACEHOLDER in blob


def test_redaction_off_keeps_secrets_and_warns(tmp_path, origin, mitmdump_factory):
    capture_path = tmp_path / "raw.parquet"
    proxy = mitmdump_factory(script=ADDON, options={"capture_path": capture_path, "capture_redact": False})
    run_session(origin.url, proxy=proxy.proxy_url, verify=trust(proxy), formats=("v1",), n_turns=1,
                analytics=False, api=False)
    proxy.stop()
    assert "capture_redact is off" in proxy.log_text()
    blob = all_strings(capture_path)
    # Every secret this session sent where a table keeps it, not merely one of them: not the API key
    # (no API calls here) nor the body's arkose token (a conversation POST's body is not stored whole).
    kept = [v for k, v in SECRET_VALUES.items() if k not in ("api_key", "arkose_body")]
    missing = [secret[:12] for secret in kept if secret not in blob]
    assert not missing, missing


def test_all_flows_option(tmp_path, origin, mitmdump_factory):
    for all_flows in (False, True):
        capture_path = tmp_path / f"all-{all_flows}.parquet"
        proxy = mitmdump_factory(script=ADDON, options={"capture_path": capture_path, "capture_all_flows": all_flows})
        with httpx.Client(proxy=proxy.proxy_url, verify=trust(proxy)) as client:
            client.get(f"{origin.url}/backend-api/conversations?offset=0&limit=28")
            client.get(f"{origin.url}/nothing-here")
        proxy.stop()
        kinds = list(load_capture(capture_path).table("flows").kind)
        assert kinds == (["other", "other"] if all_flows else [])


def test_bad_bodies_pass_through_and_become_errors(tmp_path, origin, mitmdump_factory):
    capture_path = tmp_path / "bad.parquet"
    proxy = mitmdump_factory(script=ADDON, options={"capture_path": capture_path})
    big = b'{"server_request_id": "' + b"x" * (50 * 1024 * 1024) + b'"'  # 50 MB, truncated JSON
    with httpx.Client(proxy=proxy.proxy_url, verify=trust(proxy), timeout=60) as client:
        garbage = client.post(f"{origin.url}/backend-api/lat/r", content=bytes(range(256)) * 40)
        truncated = client.post(f"{origin.url}/ces/v1/b", content=b'{"batch": [{"type": "tr')
        huge = client.post(f"{origin.url}/backend-api/lat/r", content=big)
        bad_gzip = client.post(f"{origin.url}/v1/rgstr?k=x&gz=1", content=b"\x1f\x8bnot really gzip")
    assert [r.status_code for r in (garbage, truncated, huge)] == [200, 200, 200] and bad_gzip.status_code == 202
    proxy.stop()
    assert "Traceback" not in proxy.log_text()
    capture = load_capture(capture_path)
    errors = capture.table("errors")
    assert len(capture.table("flows")) == 4 and len(set(errors.flow_id)) == 4
    assert set(errors.stage) == {"request"}


def test_kill_9_keeps_every_flow_that_ended_before_the_flush_interval(tmp_path, origin, mitmdump_factory):
    capture_path = tmp_path / "crash.parquet"
    flush_ms = 300
    proxy = mitmdump_factory(script=ADDON, options={"capture_path": capture_path, "capture_flush_ms": flush_ms})
    record = run_session(origin.url, proxy=proxy.proxy_url, verify=trust(proxy), formats=("v1",),
                         n_turns=2, delays=(30, 5))
    ended = time.time()
    # A stream still running at the kill: it may be lost, the rest may not.
    stop = threading.Event()

    def slow_stream() -> None:
        try:
            with httpx.Client(proxy=proxy.proxy_url, verify=trust(proxy), timeout=30) as client, \
                    client.stream("POST", f"{origin.url}/backend-api/f/conversation", json={"action": "next", "messages": []},
                                  headers={"x-origin-delays-ms": "50,200"}) as response:
                for _ in response.iter_bytes():
                    if stop.is_set():
                        return
        except httpx.HTTPError:
            pass

    thread = threading.Thread(target=slow_stream)
    thread.start()
    time.sleep(max(0.0, ended + 2 * flush_ms / 1000 - time.time()))
    proxy.kill()
    stop.set()
    thread.join(10)
    capture = load_capture(capture_path)  # reads without repair
    turns = capture.table("conversation_turns")
    assert set(record.cf_rays) <= set(turns.cf_ray)
    assert len(capture.table("latency_beacons")) == len(record.beacons)
    assert len(capture.table("api_calls")) == 4


def test_fifty_concurrent_streams_land_on_their_own_flows(tmp_path, origin, mitmdump_factory):
    capture_path = tmp_path / "many.parquet"
    proxy = mitmdump_factory(script=ADDON, options={"capture_path": capture_path})
    received: dict[str, dict] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        question = f"question number {i} about rivers"
        body = {"action": "next", "parent_message_id": "client-created-root", "model": "auto",
                "messages": [{"id": f"u-{i}", "author": {"role": "user"},
                              "content": {"content_type": "text", "parts": [question]}}]}
        try:
            with httpx.Client(proxy=proxy.proxy_url, verify=trust(proxy), timeout=60) as client, \
                    client.stream("POST", f"{origin.url}/backend-api/f/conversation", json=body,
                                  headers={"accept": "text/event-stream", "x-origin-delays-ms": "60,10"}) as response:
                raw = b"".join(response.iter_raw())
                received[question] = {"ray": response.headers["cf-ray"], "raw": raw}
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    proxy.stop()
    assert not errors
    turns = load_capture(capture_path).table("conversation_turns").set_index("user_text")
    events = load_capture(capture_path).table("stream_events")
    assert len(turns) == 50
    per_flow = defaultdict(list)
    for row in events.sort_values(["flow_id", "seq"]).itertuples():
        per_flow[row.flow_id].append(row)
    for question, got in received.items():
        turn = turns.loc[question]
        assert turn.cf_ray == got["ray"]
        # the recorded events are exactly the bytes this client received, in order, with rising times
        rows = per_flow[turn.flow_id]
        assert sum(r.n_bytes for r in rows) == len(got["raw"])
        texts = "".join(r.text for r in rows if isinstance(r.text, str))
        stream = ConversationStream()  # what this very client read, interpreted independently
        client_text = "".join(i.text or "" for i in (stream.feed(e.data, e.event) for e in parse_sse(got["raw"].decode())))
        assert texts == turn.assistant_text == client_text
        offsets = [r.offset_ms for r in rows]
        assert offsets == sorted(offsets)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_clean_stop_writes_everything_at_once(tmp_path, origin, mitmdump_factory, sig):
    capture_path = tmp_path / "stop.parquet"
    # A flush interval far longer than the test: only the stop itself can have written the rows.
    proxy = mitmdump_factory(script=ADDON, options={"capture_path": capture_path, "capture_flush_ms": 600_000})
    record = run_session(origin.url, proxy=proxy.proxy_url, verify=trust(proxy), formats=("v1",), n_turns=2,
                         analytics=False, api=False, delays=(20, 5))
    assert load_capture(capture_path).table("conversation_turns").empty
    assert proxy.stop(sig) == 0
    turns = load_capture(capture_path).table("conversation_turns")
    assert set(record.cf_rays) == set(turns.cf_ray)


def test_answers_on_a_socket_that_stays_open_are_written_as_they_finish(tmp_path, origin, mitmdump_factory):
    """2025–26: the celsius socket stays open all session; a crash must not take its answers along."""
    from tests.origin.session import Session, _secrets

    capture_path = tmp_path / "open-socket.parquet"
    flush_ms = 300
    proxy = mitmdump_factory(script=ADDON, options={"capture_path": capture_path, "capture_flush_ms": flush_ms})
    session = Session(origin.url, proxy=proxy.proxy_url, verify=trust(proxy), http2=False, delays=(40, 5),
                      secrets=_secrets(SECRETS), encoding=None, extra_headers=None, timeout=30)
    try:
        session.chat("celsius", 2)  # the socket is left open
        time.sleep(3 * flush_ms / 1000)
        proxy.kill()
    finally:
        session.close()
    streams = [s for s in session.record.conversation_streams if s.fmt == "celsius"]
    turns = load_capture(capture_path).table("conversation_turns")
    socket_turns = turns[turns.flow_id.str.contains("#")]
    assert sorted(socket_turns.assistant_text) == sorted(s.text for s in streams)
    assert len(socket_turns) == len(set(socket_turns.flow_id)) == len(streams)  # each answer once


@pytest.mark.parametrize(("option", "message"), [
    ("capture_path=/proc/no-such-dir/c.parquet", "cannot write the capture at /proc/no-such-dir/c.parquet"),
    ("capture_flush_ms=0", "capture_flush_ms must be a positive number"),
])
def test_bad_options_stop_mitmdump_with_one_clear_line(tmp_path, option, message):
    mitmdump = Path(sys.executable).parent / "mitmdump"
    proc = subprocess.run([str(mitmdump), "-q", "--listen-port", "0", "--set", f"confdir={tmp_path}",
                           "-s", str(ADDON), "--set", option], capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and message in out and "Traceback" not in out
