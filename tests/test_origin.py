"""The origin speaks the field guide's formats exactly, on time, over HTTP/1.1, HTTP/2 and WebSockets,
and the scripted session runs through a real mitmdump."""

from __future__ import annotations

import base64
import json
import re
import statistics
import time
import uuid
import zlib

import brotli
import httpx
import openai
import pytest
import zstandard
from mitmproxy.http import HTTPFlow
from mitmproxy.io import FlowReader

from tests.conftest import STREAM_ONLY_ADDON
from tests.origin import formats as F
from tests.origin.server import start_origin
from tests.origin.session import SECRETS, SessionRecord, StreamRecord, run_session

CF_RAY = re.compile(r"^[0-9a-f]{16}-[A-Z]{3}$")
JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")


# ---------------------------------------------------------------------------------------------
# Tiny readers, independent of the code under test


def parse_sse(body: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) per SSE event."""
    out = []
    for block in body.decode().replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        out.append((name, "\n".join(data)))
    return out


def _resolve(doc: dict, pointer: str) -> tuple[object, str | int]:
    parts = [p for p in pointer.split("/") if p][:]
    cur: object = doc
    for p in parts[:-1]:
        cur = cur[int(p)] if isinstance(cur, list) else cur[p]  # type: ignore[index]
    last = parts[-1]
    return cur, (int(last) if isinstance(cur, list) else last)


def apply_v1(state: dict, p: str, o: str, v: object) -> None:
    """The v1 delta rules of the field guide (add, append, replace, patch, truncate)."""
    if o == "patch":
        for sub in v:  # type: ignore[union-attr]
            apply_v1(state, sub["p"], sub["o"], sub["v"])
        return
    if p == "" and o == "add":
        state.clear()
        state.update(v)  # type: ignore[arg-type]
        return
    parent, key = _resolve(state, p)
    if o == "append":
        cur = parent[key]  # type: ignore[index]
        parent[key] = {**cur, **v} if isinstance(cur, dict) else cur + v  # type: ignore[index,operator]
    elif o in ("replace", "add"):
        parent[key] = v  # type: ignore[index]
    elif o == "truncate":
        parent[key] = parent[key][:v]  # type: ignore[index]


def replay_v1(events: list[tuple[str | None, str]]) -> dict[str, dict]:
    """Messages (by id) after applying every delta of a v1 stream."""
    messages: dict[str, dict] = {}
    state: dict = {}
    p = o = ""
    for _name, data in events:
        if data in ("[DONE]", '"v1"'):
            continue
        obj = json.loads(data)
        if "type" in obj and "v" not in obj:
            continue
        if "p" in obj or "o" in obj:
            p, o = obj.get("p", ""), obj.get("o", "")
        elif isinstance(obj.get("v"), dict) and "message" in obj["v"]:
            p, o = "", "add"
        apply_v1(state, p, o, obj["v"])
        if "message" in state:
            messages[state["message"]["id"]] = state["message"]
    return messages


def new_chat_body(text: str, *, parent: str = "client-created-root", model: str = "auto") -> dict:
    return {"action": "next", "parent_message_id": parent, "model": model,
            "messages": [{"id": str(uuid.uuid4()), "author": {"role": "user"},
                          "content": {"content_type": "text", "parts": [text]}}]}


@pytest.fixture(scope="module")
def client(origin) -> httpx.Client:
    with httpx.Client(base_url=origin.url, verify=origin.verify, timeout=30) as c:
        yield c


def events_of(origin, cf_ray: str, kind: str = "event") -> list[dict]:
    """The origin's send records of one response (or WebSocket stream), waiting for the last one:
    the origin logs an event just after handing it to the transport, so a fast client can be first."""
    deadline = time.monotonic() + 5
    while True:
        log = origin.log()
        head = next((r for r in log if r.get("cf_ray") == cf_ray
                     and r.get("kind") == ("request" if kind == "event" else "ws_stream")), {})
        events = sorted((r for r in log if r.get("kind") == kind and r.get("cf_ray") == cf_ray),
                        key=lambda r: r["index"])
        expected = head.get("n_events" if kind == "event" else "n_frames")
        if (expected is not None and len(events) >= expected) or time.monotonic() > deadline:
            return events
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------------
# Formats


def test_legacy_stream_is_cumulative_snapshots(client) -> None:
    text = "How do snapshots work?"
    r = client.post("/backend-api/conversation", json=new_chat_body(text, parent=str(uuid.uuid4()),
                                                                    model=F.LEGACY_MODEL))
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert CF_RAY.match(r.headers["cf-ray"])
    events = parse_sse(r.content)
    assert events[-1] == (None, "[DONE]")
    objs = [json.loads(d) for _, d in events[:-1]]
    system, user = objs[0]["message"], objs[1]["message"]
    assert system["author"]["role"] == "system" and system["metadata"]["is_visually_hidden_from_conversation"]
    assert user["author"]["role"] == "user" and user["content"]["parts"] == [text]
    snaps = [o["message"] for o in objs if "message" in o and o["message"]["author"]["role"] == "assistant"]
    texts = [s["content"]["parts"][0] for s in snaps]
    assert texts[0] == ""
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:], strict=False))
    growing = [b[len(a):] for a, b in zip(texts, texts[1:], strict=False) if b != a]
    assert growing == F.answer_tokens(text)  # one token per event, leading spaces included
    # A non-final snapshot that repeats the text (metadata-only update) exists.
    repeats = [i for i in range(1, len(snaps) - 1) if texts[i] == texts[i - 1]]
    assert repeats and all(snaps[i]["status"] == "in_progress" for i in repeats)
    final = snaps[-1]
    assert final["status"] == "finished_successfully" and final["end_turn"] is True
    assert final["metadata"]["finish_details"] == {"type": "stop"}
    assert final["metadata"]["model_slug"] == F.LEGACY_MODEL
    assert all(s["status"] == "in_progress" for s in snaps[:-1])
    title = [o for o in objs if o.get("type") == "title_generation"]
    assert title and title[0]["title"] == F.title_for(text)
    assert len({o.get("conversation_id") for o in objs}) == 1


def test_v1_stream_follows_delta_rules_and_matches_mapping(client) -> None:
    text = "Explain the delta encoding"
    r = client.post("/backend-api/f/conversation", json=new_chat_body(text))
    events = parse_sse(r.content)
    assert events[0] == ("delta_encoding", '"v1"')
    assert events[-1] == (None, "[DONE]")
    typed = {json.loads(d)["type"]: json.loads(d) for n, d in events[1:-1] if n is None}
    assert JWT.match(typed["resume_conversation_token"]["token"])
    assert {"input_message", "message_marker", "title_generation", "server_ste_metadata",
            "message_stream_complete"} <= set(typed)
    deltas = [json.loads(d) for n, d in events if n == "delta"]
    adds = [d for d in deltas if isinstance(d.get("v"), dict) and "message" in d["v"]]
    assert [d["c"] for d in adds] == [0, 1, 2]
    assert adds[0]["p"] == "" and adds[0]["o"] == "add" and "p" not in adds[1]
    assert [a["v"]["message"]["author"]["role"] for a in adds] == ["system", "user", "assistant"]
    appends = [d for d in deltas if not (isinstance(d.get("v"), dict))]
    assert appends[0] == {"p": "/message/content/parts/0", "o": "append", "v": F.answer_tokens(text)[0]}
    assert all(set(d) == {"v"} for d in appends[1:-1])  # bare continuation deltas
    patch = deltas[-1]
    assert patch["o"] == "patch" and [s["o"] for s in patch["v"]] == ["append", "replace", "replace", "append"]

    messages = replay_v1(events)
    cid = typed["message_stream_complete"]["conversation_id"]
    answer = messages[typed["message_marker"]["message_id"]]
    assert answer["content"]["parts"][0] == "".join(F.answer_tokens(text))
    assert answer["status"] == "finished_successfully" and answer["end_turn"] is True
    assert answer["metadata"]["finish_details"] == {"type": "stop"}
    # Requested "auto": the routed model in server_ste_metadata differs from the message's slug.
    assert typed["server_ste_metadata"]["metadata"]["model_slug"] != answer["metadata"]["model_slug"]

    mapping = client.get(f"/backend-api/conversation/{cid}").json()
    assert mapping["current_node"] == answer["id"]
    stored = mapping["mapping"][answer["id"]]["message"]
    assert stored["content"] == answer["content"] and stored["status"] == answer["status"]
    root = [n for n in mapping["mapping"].values() if n["parent"] is None]
    assert len(root) == 1 and root[0]["message"] is None and root[0]["id"] == "client-created-root"
    # This stream was not broken: a resume finds the answer stored (410), and none works without
    # the conduit token the POST answered with (404), as guide 6c says.
    token = r.headers["x-conduit-token"]
    late = client.post("/backend-api/f/conversation/resume", json={"conversation_id": cid, "offset": 3},
                       headers={"x-conduit-token": token})
    assert late.status_code == 410 and late.json()["errorCode"] == "persisted_final_available"
    tokenless = client.post("/backend-api/f/conversation/resume", json={"conversation_id": cid, "offset": 3})
    assert tokenless.status_code == 404 and tokenless.json()["detail"]["code"] == "tokenless_resume_unavailable"


@pytest.mark.parametrize("cut", [2, 6, 9, 12])
def test_a_cut_v1_stream_resumes_from_its_offset(client, cut) -> None:
    """Cut without [DONE] after ``cut`` events, resumed from there: together the uncut stream."""
    body = new_chat_body("Resume me please")
    r = client.post("/backend-api/f/conversation", json=body,
                    headers={"x-origin-cut-after": str(cut), "x-origin-delays-ms": "5,1"})
    head = parse_sse(r.content)
    assert len(head) == cut and (None, "[DONE]") not in head
    cid = next(json.loads(d)["conversation_id"] for _, d in head if "conversation_id" in d)
    status = client.get(f"/backend-api/conversation/{cid}/stream_status").json()
    assert status == {"status": "IS_STREAMING"}
    rest = parse_sse(client.post("/backend-api/f/conversation/resume", json={"conversation_id": cid, "offset": cut},
                                 headers={"x-conduit-token": r.headers["x-conduit-token"],
                                          "x-origin-delays-ms": "5,1"}).content)
    assert rest[-1] == (None, "[DONE]")
    messages = replay_v1(head + rest)
    mapping = client.get(f"/backend-api/conversation/{cid}").json()
    answer = messages[mapping["current_node"]]
    assert answer["content"] == mapping["mapping"][answer["id"]]["message"]["content"]
    assert client.get(f"/backend-api/conversation/{cid}/stream_status").json() == {"status": "COMPLETE"}
    stop = client.post("/backend-api/stop_conversation", json={"conversation_id": cid, "exclude_async_types": []})
    assert stop.json() == {"status": "ok", "last_message_id": answer["id"]}


def test_reasoning_variant_adds_thoughts_before_the_answer(client) -> None:
    r = client.post("/backend-api/f/conversation", json=new_chat_body("Think first"),
                    headers={"x-origin-reasoning": "1", "x-origin-delays-ms": "5,1"})
    messages = replay_v1(parse_sse(r.content))
    kinds = [m["content"]["content_type"] for m in messages.values()]
    assert kinds == ["text", "text", "thoughts", "reasoning_recap", "text"]
    thoughts = next(m for m in messages.values() if m["content"]["content_type"] == "thoughts")
    assert thoughts["content"]["thoughts"][0]["content"] == "".join(F.thought_tokens("Think first"))
    answer = list(messages.values())[-1]
    cid = json.loads(parse_sse(r.content)[1][1])["conversation_id"]
    mapping = client.get(f"/backend-api/conversation/{cid}").json()["mapping"]
    chain, node = [], answer["id"]
    while node:
        chain.append(mapping[node]["message"]["content"]["content_type"] if mapping[node]["message"] else "root")
        node = mapping[node]["parent"]
    assert chain == ["text", "reasoning_recap", "thoughts", "text", "text", "root"]


def test_continue_and_max_tokens(client) -> None:
    r = client.post("/backend-api/conversation", json=new_chat_body("Cut me short", parent=str(uuid.uuid4())),
                    headers={"x-origin-max-tokens": "3", "x-origin-delays-ms": "5,1"})
    objs = [json.loads(d) for _, d in parse_sse(r.content)[:-1]]
    final = [o["message"] for o in objs if "message" in o][-1]
    assert final["metadata"]["finish_details"] == {"type": "max_tokens"} and final["end_turn"] is False
    assert final["content"]["parts"][0] == "".join(F.answer_tokens("Cut me short")[:3])
    cid = objs[0]["conversation_id"]
    r2 = client.post("/backend-api/conversation", headers={"x-origin-delays-ms": "5,1"}, json={
        "action": "continue", "conversation_id": cid, "parent_message_id": final["id"]})
    cont = [json.loads(d)["message"] for _, d in parse_sse(r2.content)[:-1] if "message" in json.loads(d)]
    assert {m["id"] for m in cont} == {final["id"]}  # the same message grows
    assert cont[-1]["content"]["parts"][0].startswith(final["content"]["parts"][0])
    assert cont[-1]["end_turn"] is True
    mapping = client.get(f"/backend-api/conversation/{cid}").json()
    assert mapping["mapping"][final["id"]]["message"]["content"] == cont[-1]["content"]


def test_chat_completions_wire_and_openai_client(origin, client) -> None:
    req = {"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True},
           "messages": [{"role": "user", "content": "count to three"}]}
    events = parse_sse(client.post("/v1/chat/completions", json=req, headers={"x-origin-delays-ms": "5,1"}).content)
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "gpt-4o-mini" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == len(F.answer_tokens(
        "count to three", variant="api"))
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert all(c["usage"] is None for c in chunks[:-1])
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert text == "".join(F.answer_tokens("count to three", variant="api"))
    no_usage = parse_sse(client.post("/v1/chat/completions", json={**req, "stream_options": None}).content)
    assert all(json.loads(d)["choices"] for _, d in no_usage[:-1])

    api = openai.OpenAI(base_url=origin.url + "/v1", api_key=SECRETS[-1],
                        http_client=httpx.Client(verify=origin.verify))
    streamed = list(api.chat.completions.create(model="gpt-4.1", messages=req["messages"], stream=True,
                                                stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == text
    assert streamed[-1].usage.total_tokens == streamed[-1].usage.prompt_tokens + len(F.answer_tokens(
        "count to three", variant="api"))
    whole = api.chat.completions.create(model="gpt-4.1", messages=req["messages"])
    assert whole.choices[0].message.content == text and whole.model == "gpt-4.1"
    assert whole.choices[0].finish_reason == "stop"


def test_responses_wire_and_openai_client(origin, client) -> None:
    req = {"model": "gpt-4.1", "input": "Say some greetings", "stream": True}
    events = parse_sse(client.post("/v1/responses", json=req, headers={"x-origin-delays-ms": "5,1"}).content)
    names = [n for n, _ in events]
    assert names[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert names[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert "[DONE]" not in [d for _, d in events]
    objs = [json.loads(d) for _, d in events]
    assert [o["type"] for o in objs] == names and [o["sequence_number"] for o in objs] == list(range(len(objs)))
    deltas = "".join(o["delta"] for o in objs if o["type"] == "response.output_text.delta")
    assert deltas == objs[-4]["text"] == "".join(F.answer_tokens("Say some greetings", variant="api"))
    assert objs[-1]["response"]["usage"]["output_tokens"] == len(F.answer_tokens("Say some greetings",
                                                                                 variant="api"))
    api = openai.OpenAI(base_url=origin.url + "/v1", api_key=SECRETS[-1],
                        http_client=httpx.Client(verify=origin.verify))
    assert api.responses.create(model="gpt-4.1", input="Say some greetings").output_text == deltas
    with api.responses.stream(model="gpt-4.1", input="Say some greetings") as stream:
        assert stream.get_final_response().output_text == deltas


def test_429_once_then_success_and_drop_mid_stream(origin, client) -> None:
    api = openai.OpenAI(base_url=origin.url + "/v1", api_key=SECRETS[-1], max_retries=2,
                        http_client=httpx.Client(verify=origin.verify),
                        default_headers={"x-origin-fail": "429-once"})
    unique = f"retry me {uuid.uuid4()}"
    raw = api.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": unique}])
    assert raw.retries_taken == 1 and raw.parse().choices[0].message.content
    statuses = [r["status"] for r in origin.log() if r.get("kind") == "request"
                and r.get("path") == "/v1/chat/completions"][-2:]
    assert statuses == [429, 200]

    got = []
    with pytest.raises(httpx.HTTPError):
        with client.stream("POST", "/backend-api/conversation", json=new_chat_body("drop", parent="r"),
                           headers={"x-origin-fail": "drop-mid-stream", "x-origin-delays-ms": "5,1"}) as r:
            for chunk in r.iter_bytes():
                got.append(chunk)
    body = b"".join(got)
    assert b"data: " in body and b"[DONE]" not in body
    assert client.get("/_origin/health").json() == {"ok": True}  # the server lives on


# ---------------------------------------------------------------------------------------------
# Timing, compression, protocols


def test_delays_are_honoured(origin, client) -> None:
    with client.stream("POST", "/backend-api/f/conversation", json=new_chat_body("timing please"),
                       headers={"x-origin-delays-ms": "200,50"}) as r:
        body = b"".join(r.iter_raw())
        ray = r.headers["cf-ray"]
    sent = events_of(origin, ray)
    request = next(x for x in origin.log() if x.get("kind") == "request" and x.get("cf_ray") == ray)
    text_sent = [e["t"] for e in sent if e["text"]]
    first = text_sent[0] - request["t"]
    gaps = [b - a for a, b in zip(text_sent, text_sent[1:], strict=False)]
    assert 0.15 < first < 0.6, first
    assert 0.035 < statistics.median(gaps) < 0.12, gaps
    # The log holds each event's bytes, in order: together they are the body.
    assert b"".join(e["data"].encode() for e in sent) == body


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_compression_is_flushed_per_event(origin, client, encoding) -> None:
    with client.stream("POST", "/backend-api/conversation", json=new_chat_body("compress me", parent="r"),
                       headers={"x-origin-encoding": encoding, "x-origin-delays-ms": "30,10"}) as r:
        assert r.headers["content-encoding"] == encoding
        raw_chunks = list(r.iter_raw())
        ray = r.headers["cf-ray"]
    raw = b"".join(raw_chunks)
    sent = events_of(origin, ray)
    if encoding in ("gzip", "deflate"):
        d = zlib.decompressobj(31 if encoding == "gzip" else 15)
        decode = d.decompress
    elif encoding == "br":
        decode = brotli.Decompressor().process
    else:
        decode = zstandard.ZstdDecompressor().decompressobj().decompress
    # Cut the body where the origin cut it: every event's own chunk decodes to exactly that event.
    pos = 0
    for e in sent:
        piece = raw[pos:pos + e["n_bytes"]]
        pos += e["n_bytes"]
        assert decode(piece) == e["data"].encode()
    assert pos == len(raw)
    assert len(raw_chunks) > len(sent) // 3  # it really arrived in pieces, not at the end


def test_http2_plain_and_h2c(origin, origin_plain) -> None:
    with httpx.Client(verify=origin.verify, http2=True) as c:
        r = c.post(origin.url + "/backend-api/conversation", json=new_chat_body("h2", parent="r"),
                   headers={"x-origin-delays-ms": "5,1"})
        assert r.http_version == "HTTP/2" and parse_sse(r.content)[-1] == (None, "[DONE]")
    with httpx.Client() as c:
        r = c.post(origin_plain.url + "/v1/chat/completions",
                   json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
        assert r.http_version == "HTTP/1.1" and r.json()["object"] == "chat.completion"
    with httpx.Client(http1=False, http2=True) as c:  # prior knowledge h2c
        r = c.get(origin_plain.url + "/v1/models")
        assert r.http_version == "HTTP/2" and r.json()["object"] == "list"


@pytest.mark.parametrize("body", [
    {"messages": "nope", "model": 5, "parent_message_id": ["x"]},
    {"action": "variant", "conversation_id": 7},
    {"action": "bogus", "messages": [{"content": {"parts": [None, 3, "ok"]}}]},
    {"messages": [None], "supported_encodings": "v1"},
])
def test_odd_conversation_bodies_get_an_answer(client, body) -> None:
    r = client.post("/backend-api/conversation", json=body, headers={"x-origin-delays-ms": "1,0"})
    assert r.status_code in (200, 400, 404), r.text
    if r.status_code == 200:
        assert parse_sse(r.content)[-1] == (None, "[DONE]")


def test_odd_requests_never_crash(origin, client) -> None:
    assert client.get("/nope").status_code == 404 and client.get("/nope").json()["detail"] == "Not Found"
    assert client.post("/backend-api/conversation", content=b"\xff\x00not json").status_code == 400
    assert client.post("/backend-api/conversation", json={"conversation_id": "missing"}).status_code == 404
    assert client.post("/backend-api/conversation", json={"action": "continue", "parent_message_id": "x"}
                       ).status_code == 400
    assert client.post("/v1/chat/completions", json=[1, 2]).status_code == 400
    assert client.post("/backend-api/lat/r", json={}).json() == {}
    assert client.post("/ces/v1/b", json={"batch": []}).json() == {"success": True}
    assert client.post("/ces/statsc/flush", content=b"").status_code == 200
    assert client.post("/any/prefix/v1/rgstr", content=b"zz").status_code == 202
    assert "feature_gates" in client.post("/v1/initialize", content=b"").json()
    big = client.get("/_origin/big", params={"mb": 3})
    assert len(big.content) == 3 * 1024 * 1024
    garbage = client.get("/_origin/garbage", params={"n": 10000})
    assert garbage.headers["content-type"].startswith("text/event-stream") and len(garbage.content) == 10000
    assert client.get("/_origin/health").json() == {"ok": True}


# ---------------------------------------------------------------------------------------------
# The scripted session


def check_session(rec: SessionRecord, formats: tuple[str, ...]) -> None:
    """What every session must show, whatever sits between it and the origin."""
    assert not [r for r in rec.requests if r[2] >= 400], rec.requests
    assert set(rec.conversation_ids) == set(formats)
    for fmt, cid in rec.conversation_ids.items():
        streams = [s for s in rec.conversation_streams if s.fmt == fmt]
        mapping = rec.mappings[cid]
        nodes = mapping["mapping"]
        roots = [n for n in nodes.values() if n["parent"] is None]
        assert len(roots) == 1 and roots[0]["message"] is None
        for n in nodes.values():
            assert all(nodes[c]["parent"] == n["id"] for c in n["children"])
        for s in streams:  # what streamed is what the tree holds
            assert s.conversation_id == cid
            assert nodes[s.message_id]["message"]["content"]["parts"][0] == s.text
            assert s.text == "".join(F.answer_tokens(s.user_text, variant=1 if s.action == "variant" else 0))
        first, variant = [s for s in streams if s.action == "next"][-1], streams[-1]
        assert variant.action == "variant"
        parent = nodes[first.message_id]["parent"]
        assert nodes[variant.message_id]["parent"] == parent  # regenerated: siblings
        assert set(nodes[parent]["children"]) == {first.message_id, variant.message_id}
        assert mapping["current_node"] == variant.message_id
    for s, b in zip(rec.conversation_streams, rec.beacons, strict=True):
        assert CF_RAY.match(s.cf_ray) and b["server_request_id"] == s.cf_ray
        assert b["count_tokens"] == len(s.text_times) > 0
    page = next(p["body"] for p in rec.segment_payloads if p["endpoint"] == "p")
    assert page["context"]["page"]["path"] == f"/c/{rec.conversation_ids[formats[0]]}"


def test_session_against_origin_all_formats(origin) -> None:
    formats = ("legacy", "v1", "ws2024", "celsius")
    rec = run_session(origin.url, verify=origin.verify, formats=formats, delays=(10, 2), n_turns=2)
    check_session(rec, formats)
    ws24 = next(s for s in rec.conversation_streams if s.fmt == "ws2024")
    frame = json.loads(ws24.frames[1].data)
    assert frame["type"] == "message" and frame["from"] == "group" and frame["dataType"] == "json"
    assert base64.b64decode(frame["data"]["body"]).startswith(b"data: ")
    cel = next(s for s in rec.conversation_streams if s.fmt == "celsius")
    item = json.loads(cel.frames[0].data)["payload"]
    assert item["type"] == "conversation-turn-stream" and item["payload"]["type"] == "stream-item"
    assert cel.ws_key and cel.ws_key.startswith("conversation-turn-")


def _lags(origin, s: StreamRecord) -> list[float]:
    kind = "ws_frame" if s.frames else "event"
    sent = events_of(origin, s.cf_ray, kind)
    # The 2024 hub greets with a "connected" system frame that belongs to no answer.
    arrived = [f for f in s.frames if json.loads(f.data).get("type") != "system"] if s.frames else s.events
    assert len(sent) == len(arrived), (s.fmt, s.path)
    return [a.t - e["t"] for a, e in zip(arrived, sent, strict=True)]


@pytest.mark.slow
def test_plain_mitmdump_buffers_but_session_completes(origin, mitmdump_factory, tmp_path) -> None:
    flows_path = tmp_path / "flows.mitm"
    proxy = mitmdump_factory(flow_file=flows_path)
    rec = run_session(origin.url, proxy=proxy.proxy_url, verify=proxy.ca_path,
                      formats=("legacy", "v1"), delays=(60, 15), n_turns=2)
    check_session(rec, ("legacy", "v1"))
    for s in rec.conversation_streams:
        sent = events_of(origin, s.cf_ray)
        # Without streaming, mitmproxy holds the answer back until the origin sent its last event.
        assert min(e.t for e in s.events) >= sent[-1]["t"] - 0.03
    assert proxy.stop() == 0

    # Every request went through the proxy, and every secret the session claims to send was sent.
    with open(flows_path, "rb") as fh:
        flows = [f for f in FlowReader(fh).stream() if isinstance(f, HTTPFlow)]
    assert len(flows) == len(rec.requests)
    sent_bytes = b"".join(bytes(f.request.headers) + (f.request.raw_content or b"") for f in flows)
    assert [s for s in SECRETS if s.encode() not in sent_bytes] == []


@pytest.mark.slow
def test_stream_only_mitmdump_keeps_origin_timing(origin, mitmdump_factory) -> None:
    proxy = mitmdump_factory(script=STREAM_ONLY_ADDON)
    formats = ("legacy", "v1", "ws2024", "celsius")
    rec = run_session(origin.url, proxy=proxy.proxy_url, verify=proxy.ca_path, http2=True,
                      formats=formats, delays=(80, 30), n_turns=2)
    check_session(rec, formats)
    assert {s.http_version for s in rec.conversation_streams} == {"HTTP/2"}
    lags = []
    for s in rec.streams:
        if s.cf_ray is None:
            continue
        stream_lags = _lags(origin, s)
        lags += stream_lags
        sent = events_of(origin, s.cf_ray, "ws_frame" if s.frames else "event")
        # The first text reached the client before the origin had finished: it was not buffered.
        if s.text_times:
            assert s.text_times[0] < sent[-1]["t"], (s.fmt, s.path)
    assert statistics.median(lags) < 0.1, statistics.median(lags)
    assert proxy.stop() == 0


def test_thread_mode_and_log_endpoint(tmp_path) -> None:
    with start_origin(tls=False, mode="thread", workdir=tmp_path, delays=(5, 1)) as o, httpx.Client() as c:
        r = c.post(o.url + "/backend-anon/conversation", json=new_chat_body("anon", parent="r"))
        n_events = len(parse_sse(r.content))
        body = c.get(o.url + "/_origin/log", params={"since": 0}).json()
        sent = [x for x in body["records"] if x["kind"] == "event"]
        assert len(sent) == n_events and body["next"] == len(body["records"])
        assert c.get(o.url + "/_origin/log", params={"since": body["next"]}).json()["records"] == []
        assert o.log() == body["records"]  # in-process handle reads the same log
    lines = (tmp_path / "origin-log.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == body["records"]


def test_reset_mid_stream_is_an_http2_rst_stream_and_the_connection_lives_on(origin) -> None:
    with httpx.Client(base_url=origin.url, verify=origin.verify, http2=True, timeout=10) as h2:
        got = []
        with pytest.raises(httpx.RemoteProtocolError, match="StreamReset"):
            with h2.stream("POST", "/backend-api/f/conversation", json=new_chat_body("reset me"),
                           # a gap before the cut: hypercorn hands DATA to its writer task, and a
                           # RST_STREAM sent at once could overtake the last event still queued
                           headers={"x-origin-fail": "reset-mid-stream", "x-origin-delays-ms": "5,40"}) as r:
                assert r.http_version == "HTTP/2"
                ray = r.headers["cf-ray"]
                got.extend(r.iter_bytes())
        body = b"".join(got)
        sent = events_of(origin, ray)
        reset = [x for x in origin.log() if x.get("kind") == "reset" and x.get("cf_ray") == ray]
        # exactly the events before the reset arrived, then nothing; the reset is logged where it happened
        assert len(reset) == 1 and [e["index"] for e in sent] == list(range(reset[0]["index"]))
        assert body == b"".join(e["data"].encode() for e in sent) and b"[DONE]" not in body
        # a stream reset is not a connection reset: the same connection serves the next request
        assert h2.get("/_origin/health").json() == {"ok": True}
