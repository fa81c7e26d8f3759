"""Who hung up: answers cut off mid-stream by the client, the origin, an HTTP/2 reset or the proxy's own
stop, through a real mitmdump with the capture addon and real clients (httpx, a raw h2 client).

Each cut answer must be a row (conversation_turns, or api_calls for the API) with the text that did
reach the proxy and an ``end_status`` naming who ended it. The oracle is the origin's send log: the
events it sent before the cut (and, for a client's hang-up, what the client had read by then).
"""

from __future__ import annotations

import json
import signal
import ssl
import threading
import time
import uuid
from pathlib import Path

import httpx
import pandas as pd
import pytest

from analyzer.store import load_capture
from tests.h2_client import H2Client
from tests.origin.mitm import run_mitmdump

ROOT = Path(__file__).resolve().parent.parent
ADDON = ROOT / "addons" / "chatgpt_capture.py"
CONVERSATION = "/backend-api/f/conversation"
SLOW = "40,40"  # ms to the first text event, ms between text events


def body(text: str) -> dict:
    return {"action": "next", "parent_message_id": "client-created-root", "model": "auto",
            "messages": [{"id": str(uuid.uuid4()), "author": {"role": "user"},
                          "content": {"content_type": "text", "parts": [text]}}]}


def sent_events(origin, cf_ray: str) -> list[dict]:
    """The origin's ``event`` records of one response, in order (waiting a moment for the last)."""
    deadline = time.monotonic() + 5
    records: list[dict] = []
    while time.monotonic() < deadline:
        records = [r for r in origin.log() if r.get("cf_ray") == cf_ray]
        if any(r["kind"] in ("drop", "reset") for r in records) or any(
                r["kind"] == "request" for r in records) and not any(r["kind"] == "event" for r in records):
            break
        time.sleep(0.05)
    return sorted((r for r in records if r["kind"] == "event"), key=lambda r: r["index"])


def planned_events(origin, cf_ray: str) -> int:
    """How many events the origin meant to send in that response (its request record says)."""
    return next(r["n_events"] for r in origin.log() if r.get("cf_ray") == cf_ray and r["kind"] == "request")


def cut_of(origin, cf_ray: str) -> dict | None:
    return next((r for r in origin.log() if r.get("cf_ray") == cf_ray and r["kind"] in ("drop", "reset")), None)


def text_of(events: list[dict]) -> str:
    return "".join(e["text"] or "" for e in events)


def capture_rows(path: Path):
    capture = load_capture(path)
    return (capture.table("flows").set_index("flow_id"), capture.table("conversation_turns"),
            capture.table("api_calls"), capture.table("errors"))


def turn_by_ray(flows, turns, cf_ray: str):
    flow_id = flows.index[flows.cf_ray == cf_ray]
    assert len(flow_id) == 1, f"no single flow for {cf_ray}"
    match = turns[turns.flow_id == flow_id[0]]
    assert len(match) == 1, "the cut answer lost its row"
    return match.iloc[0]


def covered_prefix(sent: list[dict], raw: bytes) -> int:
    """How many of the origin's events the client's bytes hold whole; they must be a prefix of what
    the origin sent (nothing added, nothing reordered)."""
    assert b"".join(e["data"].encode() for e in sent).startswith(raw), "the client read bytes the origin never sent"
    n, pos = 0, 0
    for event in sent:
        pos += len(event["data"].encode())
        if pos > len(raw):
            break
        n += 1
    return n


@pytest.fixture(scope="module")
def live(tmp_path_factory, mitm_confdir):
    """One capturing mitmdump for the tests that leave it running: they read the capture as it grows."""
    tmp = tmp_path_factory.mktemp("hangups")
    process = run_mitmdump(tmp, script=ADDON, options={"capture_path": tmp / "live.parquet", "capture_flush_ms": 200},
                           confdir=mitm_confdir)
    process.capture = tmp / "live.parquet"
    yield process
    assert process.stop() == 0
    assert "Traceback" not in process.log_text()


@pytest.fixture
def proxy(tmp_path, mitmdump_factory):
    """A capturing mitmdump of this test's own, for the tests that stop it."""
    capture = tmp_path / "hangups.parquet"
    process = mitmdump_factory(script=ADDON, options={"capture_path": capture, "capture_flush_ms": 200})
    process.capture = capture
    return process


def wait_for(proxy, table: str, cf_rays: list[str], timeout: float = 15.0):
    """The capture once ``table`` has a row for each of ``cf_rays`` (written ~flush_ms after the flow ended)."""
    deadline = time.monotonic() + timeout
    while True:
        flows, turns, calls, errors = capture_rows(proxy.capture)
        rows = turns if table == "conversation_turns" else calls
        ids = set(flows.index[flows.cf_ray.isin(cf_rays)])
        if len(ids) == len(cf_rays) and ids <= set(rows.flow_id):
            return flows, turns, calls, errors
        if time.monotonic() > deadline:
            raise AssertionError(f"no {table} row for {cf_rays} after {timeout} s")
        time.sleep(0.1)


def trust(proxy) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(proxy.ca_path))


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
def test_client_closing_mid_answer_is_client_closed_with_the_text_that_arrived(origin, live, http2):
    raw = b""
    with httpx.Client(proxy=live.proxy_url, verify=trust(live), http2=http2, timeout=20) as client, \
            client.stream("POST", origin.url + CONVERSATION, json=body("close the tab"),
                          headers={"x-origin-delays-ms": SLOW, "accept": "text/event-stream"}) as response:
        ray = response.headers["cf-ray"]
        for chunk in response.iter_raw():
            raw += chunk
            if raw.count(b"\n\n") >= 9:  # the head and a few words of the answer
                break  # the tab closes: leaving both blocks closes the stream and the connection
    flows, turns, _, errors = wait_for(live, "conversation_turns", [ray])
    turn = turn_by_ray(flows, turns, ray)
    sent = sent_events(origin, ray)
    assert turn.end_status == "client_closed"
    # what the proxy recorded is what the origin sent up to some event, and at least what the client read
    read = covered_prefix(sent, raw)
    recorded = turn.n_events
    # (the origin may go on sending into the void: hypercorn does not tell it the proxy went away)
    assert 9 <= read <= recorded <= len(sent) and recorded < planned_events(origin, ray)
    assert turn.assistant_text == text_of(sent[:recorded])
    assert text_of(sent[:read]) and turn.assistant_text.startswith(text_of(sent[:read]))
    assert turn.status == "in_progress" and turn.error == "stream ended without [DONE]"
    assert not errors.flow_id.eq(turn.flow_id).any()


def test_http2_stream_cancel_is_client_closed_and_the_connection_lives_on(origin, live):
    payload = json.dumps(body("stop generating")).encode()
    with H2Client(live.proxy_url, "127.0.0.1", origin.port, str(live.ca_path)) as client:
        sid = client.request("POST", CONVERSATION, payload, {"content-type": "application/json",
                                                             "accept": "text/event-stream",
                                                             "x-origin-delays-ms": SLOW})
        frames = client.read_data(sid, 4)
        ray = client.headers[sid]["cf-ray"]
        client.cancel(sid)  # RST_STREAM (CANCEL), as a browser closing the tab on a shared connection
        time.sleep(0.3)
        status, health = client.get("/_origin/health")  # the same connection, still usable
    assert status == 200 and json.loads(health) == {"ok": True}
    flows, turns, _, _ = wait_for(live, "conversation_turns", [ray])
    turn = turn_by_ray(flows, turns, ray)
    sent = sent_events(origin, ray)
    assert turn.end_status == "client_closed"
    assert "stream reset" in flows.loc[turn.flow_id, "error"]
    read = covered_prefix(sent, b"".join(frames))
    assert read <= turn.n_events <= len(sent)
    assert turn.assistant_text == text_of(sent[:turn.n_events])


@pytest.mark.parametrize(("http2", "fail", "expected"), [
    (False, "drop-mid-stream", "server_closed"),
    (True, "drop-mid-stream", "server_closed"),
    (True, "reset-mid-stream", "reset"),
], ids=["http1-drop", "http2-drop", "http2-rst-stream"])
def test_origin_cutting_the_answer_is_server_closed_or_reset(origin, live, http2, fail, expected):
    raw = b""
    with httpx.Client(proxy=live.proxy_url, verify=trust(live), http2=http2, timeout=20) as client:
        with pytest.raises(httpx.HTTPError), client.stream(
                "POST", origin.url + CONVERSATION, json=body("the origin fails"),
                headers={"x-origin-delays-ms": SLOW, "x-origin-fail": fail, "accept": "text/event-stream"}) as r:
            ray = r.headers["cf-ray"]
            for chunk in r.iter_raw():
                raw += chunk
        # the proxy passes the origin's failure on and goes on serving
        assert client.get(origin.url + "/_origin/health").json() == {"ok": True}
    flows, turns, _, errors = wait_for(live, "conversation_turns", [ray])
    turn = turn_by_ray(flows, turns, ray)
    sent = sent_events(origin, ray)
    cut = cut_of(origin, ray)
    assert cut is not None and cut["kind"] == ("reset" if expected == "reset" else "drop")
    assert [e["index"] for e in sent] == list(range(cut["index"]))  # the origin's own account of the cut
    assert turn.end_status == expected
    # everything the origin sent before the cut reached the proxy and the client, and nothing else
    assert turn.n_events == len(sent) and turn.assistant_text == text_of(sent)
    assert raw == b"".join(e["data"].encode() for e in sent)
    assert turn.status == "in_progress" and turn.error == "stream ended without [DONE]"
    assert flows.loc[turn.flow_id, "error"]
    assert not errors.flow_id.eq(turn.flow_id).any()


def test_api_stream_cut_by_the_origin_is_an_api_call_with_its_partial_text(origin, live):
    request = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "count to ten"}]}
    with httpx.Client(proxy=live.proxy_url, verify=trust(live), timeout=20) as client:
        with pytest.raises(httpx.HTTPError), client.stream(
                "POST", origin.url + "/v1/chat/completions", json=request,
                headers={"x-origin-delays-ms": SLOW, "x-origin-fail": "drop-mid-stream"}) as r:
            ray = r.headers["cf-ray"]
            for _ in r.iter_raw():
                pass
        complete = client.post(origin.url + "/v1/chat/completions", json=request,
                               headers={"x-origin-delays-ms": "5,1"})
        complete_ray = complete.headers["cf-ray"]
    flows, _, calls, _ = wait_for(live, "api_calls", [ray, complete_ray])
    cut_call = turn_by_ray(flows, calls, ray)
    sent = sent_events(origin, ray)
    assert cut_call.end_status == "server_closed"
    assert cut_call.response_text == text_of(sent) and cut_call.n_events == len(sent)
    assert cut_call.error and "peer closed" in cut_call.error
    whole = turn_by_ray(flows, calls, complete_ray)
    assert whole.end_status == "complete" and whole.response_text == text_of(sent_events(origin, complete_ray))
    assert pd.isna(whole.error)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_proxy_stopped_with_answers_half_read_writes_them(origin, proxy, sig):
    seen: dict[str, bytes] = {}
    rays: dict[str, str] = {}
    flowing = {"web": threading.Event(), "api": threading.Event()}

    def read(name: str, path: str, payload: dict) -> None:
        got = b""
        try:
            with httpx.Client(proxy=proxy.proxy_url, verify=trust(proxy), timeout=20) as client, \
                    client.stream("POST", origin.url + path, json=payload,
                                  headers={"x-origin-delays-ms": "40,150", "accept": "text/event-stream"}) as r:
                rays[name] = r.headers["cf-ray"]
                for chunk in r.iter_raw():
                    got += chunk
                    if got.count(b"\n\n") >= 8:
                        flowing[name].set()
        except httpx.HTTPError:
            pass
        seen[name] = got

    threads = [threading.Thread(target=read, args=("web", CONVERSATION, body("stop the proxy"))),
               threading.Thread(target=read, args=("api", "/v1/chat/completions",
                                                   {"model": "m", "stream": True,
                                                    "messages": [{"role": "user", "content": "hi"}]}))]
    for thread in threads:
        thread.start()
    assert all(event.wait(15) for event in flowing.values())  # both answers are flowing
    assert proxy.stop(sig) == 0
    for thread in threads:
        thread.join(15)
    assert "Traceback" not in proxy.log_text()
    flows, turns, calls, _ = capture_rows(proxy.capture)
    turn = turn_by_ray(flows, turns, rays["web"])
    call = turn_by_ray(flows, calls, rays["api"])
    assert turn.end_status == call.end_status == "proxy_stopped"
    for row, name, n_text in ((turn, "web", turn.n_events), (call, "api", call.n_events)):
        sent = sent_events(origin, rays[name])
        read = covered_prefix(sent, seen[name])
        assert 0 < read <= n_text <= len(sent) and n_text < planned_events(origin, rays[name])  # more was to come
        text = row.assistant_text if name == "web" else row.response_text
        assert text == text_of(sent[:n_text])
    assert turn.error == "stream ended without [DONE]"


def test_complete_answers_are_complete(origin, live):
    with httpx.Client(proxy=live.proxy_url, verify=trust(live), http2=True, timeout=20) as client:
        response = client.post(origin.url + CONVERSATION, json=body("all of it"),
                               headers={"x-origin-delays-ms": "5,1", "accept": "text/event-stream"})
        ray = response.headers["cf-ray"]
    flows, turns, _, _ = wait_for(live, "conversation_turns", [ray])
    turn = turn_by_ray(flows, turns, ray)
    sent = sent_events(origin, ray)
    assert turn.end_status == "complete" and pd.isna(turn.error) and turn.status == "finished_successfully"
    assert turn.n_events == len(sent) and turn.assistant_text == text_of(sent)


# ---------------------------------------------------------------------------------------------
# end_status of flows read back from a file (no live note of which side closed): the message alone


@pytest.mark.parametrize(("error", "client_alpn", "server_alpn", "with_response", "note", "expected"), [
    (None, b"h2", b"h2", True, None, "complete"),
    ("Client disconnected.", b"http/1.1", b"http/1.1", True, None, "client_closed"),
    ("HTTP/1 protocol error: peer closed connection without sending complete message body (incomplete chunked read)",
     b"http/1.1", b"http/1.1", True, None, "server_closed"),
    ("stream reset by client (CANCEL)", b"h2", b"h2", True, None, "client_closed"),
    ("stream reset by client (INTERNAL_ERROR)", b"h2", b"h2", True, None, "reset"),
    ("stream reset by client (CANCEL)", b"http/1.1", b"h2", True, None, "reset"),  # only the server speaks h2
    ("stream reset by client (INTERNAL_ERROR)", b"h2", b"http/1.1", True, None, "client_closed"),
    ("peer closed connection", b"h2", b"h2", True, None, "error"),  # which peer: not known from the file
    ("peer closed connection", b"h2", b"h2", True, "client", "client_closed"),
    ("peer closed connection", b"h2", b"h2", False, "server", "server_closed"),
    ("Connection killed.", b"h2", b"h2", True, None, "killed"),
    ("Server connection to example.com failed: timed out", b"h2", b"h2", False, None, "error"),
])
def test_end_status_from_the_flow_alone(error, client_alpn, server_alpn, with_response, note, expected):
    from mitmproxy.flow import Error
    from mitmproxy.test import tflow

    from analyzer.extract.ending import end_status

    flow = tflow.tflow(resp=with_response)
    flow.client_conn.alpn, flow.server_conn.alpn = client_alpn, server_alpn
    if error:
        flow.error = Error(error)
        if flow.response is not None:
            flow.response.timestamp_end = None  # the body never ended
    if note:
        flow.metadata["chatwire"] = {"closed_first": note}
    assert end_status(flow) == expected


def test_an_error_after_the_last_byte_leaves_the_answer_complete_and_a_stop_marks_it_proxy_stopped():
    from mitmproxy.flow import Error
    from mitmproxy.test import tflow

    from analyzer.extract.ending import end_status

    flow = tflow.tflow(resp=True)
    flow.error = Error("peer closed connection")
    assert flow.response.timestamp_end is not None and end_status(flow) == "complete"
    flow.metadata["chatwire"] = {"end": "proxy_stopped"}
    assert end_status(flow) == "proxy_stopped"
