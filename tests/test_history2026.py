"""Paged history, image messages, celsius conversation-update frames, file-download answers (guide 6b, 6e).

Unit tests on hand-built bodies first (values worked out by hand), then the whole path: the
origin's conversations read page by page through a real mitmdump, checked against the origin's
own conversation tree, and the same from the ``-w`` flow file and from a HAR of it.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pandas as pd
import pytest
from click.testing import CliRunner
from mitmproxy.test import tflow
from mitmproxy.websocket import WebSocketMessage
from wsproto.frame_protocol import Opcode

from analyzer import recognise as kinds
from analyzer.analysis import build_conversation
from analyzer.analysis.conversations import conversation_from_frames
from analyzer.cli import main as cli
from analyzer.extract import extract_flow
from analyzer.importer import import_sources
from analyzer.store import load_capture
from analyzer.streams.websocket import conversation_updates, is_conversation_frame
from tests.flows_factory import make_flow
from tests.origin import formats as F
from tests.origin import history2026 as H

ROOT = Path(__file__).resolve().parent.parent
ADDON = ROOT / "addons" / "chatgpt_capture.py"
CID = "6a1b2c3d-0000-4000-8000-00000000c1d0"


# ---------------------------------------------------------------------------------------------
# Recognition


@pytest.mark.parametrize(("method", "path", "kind"), [
    ("GET", f"/backend-api/conversations/{CID}?include_has_versions=true&num_turns=10", kinds.CONVERSATION_PAGE),
    ("GET", f"/backend-api/conversations/{CID}/messages?before=cur_x&num_turns=10", kinds.CONVERSATION_PAGE),
    ("GET", "/backend-api/conversations?offset=0&limit=28", None),  # the list is not a page
    ("GET", f"/backend-api/conversation/{CID}", kinds.CONVERSATION_READ),  # the mapping read stays
    ("GET", "/backend-api/files/download/file_00000000abc?conversation_id=x&inline=false", kinds.FILE_DOWNLOAD),
    ("GET", "/backend-api/estuary/content?id=file_1&sig=abc", None),
    ("POST", f"/backend-api/conversations/{CID}", None),
    ("GET", "/backend-api/conversations/archived?offset=0", None),  # a word, not an id
])
def test_recognition(method, path, kind):
    assert kinds.recognise(method, path) == kind


# ---------------------------------------------------------------------------------------------
# A page by hand


def _msg(mid, role, text, **kw):
    m = {"id": mid, "author": {"role": role}, "content": {"content_type": "text", "parts": [text]},
         "metadata": kw.pop("metadata", {}), "status": "finished_successfully"}
    m.update(kw)
    return m


IMAGE = {"content_type": "image_asset_pointer", "asset_pointer": "sediment://file_abc", "size_bytes": 123456,
         "width": 1024, "height": 1536, "fovea": None,
         "metadata": {"generation": {"gen_id": "gen_1", "seed": 7, "gen_size": "xlimage"}, "sanitized": True}}


def _page_flow(body, path=f"/backend-api/conversations/{CID}?include_has_versions=true&num_turns=2", status=200):
    return make_flow("GET", path, response_body=json.dumps(body), status=status, start=1_790_000_000.0)


def test_page_becomes_a_read_and_messages_with_parents_from_the_page():
    body = {
        "conversation_id": CID, "title": "Paged", "current_node": "m4", "create_time": "2026-10-04T10:00:00Z",
        "update_time": 1_791_000_000.5, "default_model_slug": "gpt-5-6", "is_do_not_remember": True,
        "is_temporary_chat": False, "async_status": 4, "gizmo_id": None, "atlas_mode_enabled": False,
        "page_info": {"start_cursor": "c1", "end_cursor": "c4", "has_previous_page": True, "has_next_page": False,
                      "total": 9},
        "messages": [
            _msg("m1", "user", "hello", parent_id="root", metadata={"parent_id": "stale"}),  # own parent wins
            _msg("m2", "assistant", "hi", metadata={"parent_id": "m1"}),
            _msg("m3", "user", "draw"),  # neither: inferred from the page order
            {"id": "m4", "author": {"role": "tool", "name": "t2uay3k.sj1i4kz"}, "status": "finished_successfully",
             "content": {"content_type": "multimodal_text", "parts": [IMAGE, "caption"]},
             "metadata": {"parent_id": "m3"}},
        ],
    }
    rows = extract_flow(_page_flow(body), source="test")
    assert rows["errors"] == []
    assert rows["flows"][0]["kind"] == "conversation_page"
    [read] = rows["conversation_reads"]
    assert read["read_type"] == "page" and read["conversation_id"] == CID and read["n_messages"] == 4
    assert (read["start_cursor"], read["end_cursor"], read["has_previous_page"], read["has_next_page"]) == \
        ("c1", "c4", True, False)
    assert read["num_turns"] == 2 and read["before_cursor"] is None and read.get("n_nodes") is None
    assert read["create_time"] == 1_791_108_000.0 and read["update_time"] == 1_791_000_000.5
    assert (read["default_model_slug"], read["is_do_not_remember"], read["is_temporary_chat"], read["async_status"]) \
        == ("gpt-5-6", True, False, 4)
    # unknown top-level and page_info keys are kept, known ones are not repeated
    assert json.loads(read["extra"]) == {"gizmo_id": None, "atlas_mode_enabled": False, "page_info": {"total": 9}}
    msgs = {m["message_id"]: m for m in rows["messages"]}
    assert {m: r["parent_id"] for m, r in msgs.items()} == {"m1": "root", "m2": "m1", "m3": "m2", "m4": "m3"}
    assert {r["source"] for r in msgs.values()} == {"page"}
    assert msgs["m4"]["text"] == "caption" and msgs["m4"]["author_name"] == "t2uay3k.sj1i4kz"
    assert json.loads(msgs["m4"]["images"]) == [{"asset_pointer": "sediment://file_abc", "size_bytes": 123456,
                                                 "width": 1024, "height": 1536, "metadata": IMAGE["metadata"]}]
    assert msgs["m1"]["images"] is None


def test_unexpected_metadata_types_go_to_extra_not_to_their_columns():
    body = {"conversation_id": CID, "messages": [], "page_info": None, "is_temporary_chat": "yes",
            "async_status": "STREAMING", "default_model_slug": 5, "access_token": "tok-secret-123"}
    [read] = extract_flow(_page_flow(body), source="test")["conversation_reads"]
    assert read.get("is_temporary_chat") is None and read.get("async_status") is None
    assert read.get("default_model_slug") is None and read["n_messages"] == 0
    assert json.loads(read["extra"]) == {"is_temporary_chat": "yes", "async_status": "STREAMING",
                                         "default_model_slug": 5, "access_token": "[REDACTED]"}


def test_page_of_mapping_style_nodes_is_read_too():
    body = {"conversation_id": CID, "messages": [
        {"id": "n1", "parent": "root", "children": ["n2"], "message": _msg("m1", "user", "hi")},
        {"id": "n2", "parent": "m1", "message": {k: v for k, v in _msg("m2", "assistant", "yo").items() if k != "id"}},
    ], "page_info": {}}
    rows = extract_flow(_page_flow(body), source="test")
    assert [(m["message_id"], m["parent_id"], m["text"]) for m in rows["messages"]] == [
        ("m1", "root", "hi"), ("n2", "m1", "yo")]


def test_older_page_takes_its_id_from_the_path_and_records_the_cursor():
    body = {"messages": [_msg("m0", "system", "")], "page_info": {"start_cursor": "c0", "end_cursor": "c0",
                                                                  "has_previous_page": False, "has_next_page": True}}
    rows = extract_flow(_page_flow(body, f"/backend-api/conversations/{CID}/messages?before=c1&num_turns=2"),
                        source="test")
    [read] = rows["conversation_reads"]
    assert read["conversation_id"] == CID and read["before_cursor"] == "c1" and read["has_next_page"] is True
    assert read["current_node"] is None and read["extra"] is None
    assert rows["messages"][0]["parent_id"] is None  # the first of a page with no reference: unknown


def test_page_without_messages_is_an_error_row_and_a_404_is_nothing():
    rows = extract_flow(_page_flow({"detail": "odd"}), source="test")
    assert rows["conversation_reads"] == [] and rows["errors"][0]["error"] == "history page without a messages list"
    rows = extract_flow(_page_flow({"detail": {"code": "conversation_not_found"}}, status=404), source="test")
    assert rows["errors"] == [] and rows["conversation_reads"] == [] and len(rows["flows"]) == 1


def test_mapping_read_gets_the_same_metadata_columns():
    tree = F.ConversationTree.new(CID, "root", "sys", 1_790_000_000.0)
    tree.add(F.user_message("u1", "hi", parent_id="sys", create_time=1_790_000_001.0), "sys")
    body = {**tree.to_json(), "is_do_not_remember": False, "memory_scope": "global_enabled"}
    rows = extract_flow(make_flow("GET", f"/backend-api/conversation/{CID}", response_body=json.dumps(body)),
                        source="test")
    [read] = rows["conversation_reads"]
    assert read["read_type"] == "mapping" and read["n_nodes"] == 3 and read["n_messages"] == 2
    assert read["default_model_slug"] == "auto" and read["is_archived"] is False
    assert json.loads(read["extra"])["memory_scope"] == "global_enabled"
    assert {m["source"] for m in rows["messages"]} == {"mapping"}


# ---------------------------------------------------------------------------------------------
# conversation-update frames


def _update(update_type, message, wrapped=True):
    inner = {"type": "conversation-update", "payload": {
        "conversation_id": CID, "update_type": update_type,
        "update_content": {"async_task_id": "task_1", "message": message}}}
    return json.dumps({"type": "message", "topic_id": "conversations", "payload": inner} if wrapped else inner)


def test_conversation_update_frames_in_both_shapes():
    tool = {"id": "t1", "author": {"role": "tool"}, "content": {"content_type": "multimodal_text", "parts": [IMAGE]}}
    for wrapped in (True, False):
        [update] = conversation_updates(_update("async-task-update-message", tool, wrapped))
        assert update["update_type"] == "async-task-update-message"
        assert update["update_content"]["message"]["id"] == "t1"
    assert conversation_updates("[" + _update("async-task-start", tool) + "," + _update("x", tool, False) + "]")
    frame = F.celsius_frames([F.WireEvent(b'data: {"v": 1}\n\n')], "topic")[0].data
    assert conversation_updates(frame) == [] and is_conversation_frame(frame)
    assert conversation_updates('{"type": "pong"}') == [] and not is_conversation_frame('{"type": "pong"}')
    assert conversation_updates(b"\xff\xfe") == [] and conversation_updates('{"conversation-update": ') == []


def _socket(frames, start=1_790_000_000.0):
    flow = tflow.twebsocketflow(messages=False)
    flow.websocket.messages = []
    for i, (from_client, text) in enumerate(frames):
        msg = WebSocketMessage(Opcode.TEXT, from_client, text.encode(), start + i)
        flow.websocket.messages.append(msg)
    return flow


def test_socket_with_only_updates_gives_update_messages():
    started = {"id": "t1", "author": {"role": "tool", "name": "t2uay3k.sj1i4kz"}, "status": "in_progress",
               "content": {"content_type": "multimodal_text", "parts": []}, "metadata": {"parent_id": "c1"}}
    done = {**started, "status": "finished_successfully",
            "content": {"content_type": "multimodal_text", "parts": [IMAGE]}}
    flow = _socket([(True, '{"type":"subscribe","topic_id":"conversations"}'),
                    (False, _update("async-task-start", started)),
                    (False, '{"type":"pong"}'),
                    (False, _update("async-task-update-message", done))])
    rows = extract_flow(flow, source="test")
    assert rows["flows"][0]["kind"] == "conversation_websocket" and rows["errors"] == []
    assert rows["conversation_turns"] == []
    got = [(m["message_id"], m["status"], m["source"], m["flow_id"], m["parent_id"], m["conversation_id"])
           for m in rows["messages"]]
    assert got == [("t1", "in_progress", "update", flow.id, "c1", CID),
                   ("t1", "finished_successfully", "update", flow.id, "c1", CID)]
    assert rows["messages"][0]["images"] is None
    assert json.loads(rows["messages"][1]["images"])[0]["asset_pointer"] == "sediment://file_abc"
    assert rows["messages"][1]["seen_at"] == flow.websocket.messages[3].timestamp
    updates = [(u["frame"], u["update_type"], u["async_task_id"], u["message_id"], u["message_status"], u["at"],
                u["conversation_id"], u["extra"]) for u in rows["conversation_updates"]]
    assert updates == [(1, "async-task-start", "task_1", "t1", "in_progress", 1_790_000_001.0, CID, None),
                       (3, "async-task-update-message", "task_1", "t1", "finished_successfully", 1_790_000_003.0,
                        CID, None)]


def test_update_without_a_message_keeps_its_content():
    title = json.dumps({"type": "conversation-update", "payload": {
        "conversation_id": CID, "update_type": "title-update", "update_content": {"title": "Lighthouse"},
        "sequence": 7}})
    rows = extract_flow(_socket([(False, title)]), source="test")
    [update] = rows["conversation_updates"]
    assert update["update_type"] == "title-update" and update["message_id"] is None and rows["messages"] == []
    assert json.loads(update["extra"]) == {"sequence": 7, "update_content": {"title": "Lighthouse"}}


# ---------------------------------------------------------------------------------------------
# File downloads


def test_file_download_url_is_stored_without_its_signature():
    url = "https://chatgpt.com/backend-api/estuary/content?id=file_1&ts=1790000000&p=fs&cid=1&sig=deadbeef99&v=0"
    body = {"status": "success", "download_url": url, "metadata": {}, "file_name": "a.png",
            "creation_time": "2026-10-04T10:00:00Z"}
    flow = make_flow("GET", "/backend-api/files/download/file_1?inline=false", response_body=json.dumps(body))
    [row] = extract_flow(flow, source="test")["file_downloads"]
    assert row["file_id"] == "file_1" and row["status"] == "success" and row["file_name"] == "a.png"
    assert row["download_url"] == url.replace("sig=deadbeef99", "sig=[REDACTED]")
    assert row["creation_time"] == 1_791_108_000.0 and json.loads(row["extra"]) == {"metadata": {}}
    [raw] = extract_flow(flow, source="test", redact=False)["file_downloads"]
    assert raw["download_url"] == url


# ---------------------------------------------------------------------------------------------
# The origin's pages (against its own tree)


def _tree(n_turns: int) -> F.ConversationTree:
    tree = F.ConversationTree.new(CID, "root", "sys", 1_790_000_000.0)
    parent = "sys"
    for i in range(n_turns):
        tree.add(F.user_message(f"u{i}", f"q{i}", parent_id=parent, create_time=1_790_000_000.0 + i), parent)
        tree.add(F.make_message(f"a{i}", "assistant", f"r{i}", create_time=1_790_000_000.5 + i,
                                metadata={"parent_id": f"u{i}"}), f"u{i}")
        parent = f"a{i}"
    return tree


def test_origin_pages_cover_the_active_branch_oldest_first():
    tree = _tree(5)
    newest, info = H.page(tree, 2)
    assert [m["id"] for m in newest] == ["u3", "a3", "u4", "a4"]
    assert info["has_previous_page"] and not info["has_next_page"]
    assert H.message_of_cursor(info["start_cursor"]) == "u3" and H.message_of_cursor(info["end_cursor"]) == "a4"
    second, info2 = H.page(tree, 2, info["start_cursor"])
    assert [m["id"] for m in second] == ["u1", "a1", "u2", "a2"] and info2["has_next_page"]
    first, info3 = H.page(tree, 2, info2["start_cursor"])
    assert [m["id"] for m in first] == ["sys", "u0", "a0"] and not info3["has_previous_page"]
    # the system message names its parent (the message-less root) itself; the others by metadata
    assert first[0]["parent_id"] == "root" and "parent_id" not in first[1]
    assert H.page(tree, 2, "cur_bm90LWhlcmU") is None  # a cursor not on the branch


# ---------------------------------------------------------------------------------------------
# Through a real mitmdump, then from the flow file and from a HAR


def _cid_of(sse: str) -> str:
    return re.search(r'"conversation_id": "([0-9a-f-]{36})"', sse).group(1)


def _post(client, body, headers):
    r = client.post("/backend-api/f/conversation", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return r.text


@pytest.fixture(scope="module")
def history_capture(tmp_path_factory, origin, mitm_confdir):
    """A chat of three text turns, a mapping read, an image turn and one more text turn, its celsius update frames, all its history
    pages (two turns a page) and one file download, through mitmdump with the addon and ``-w``."""
    from tests.origin.mitm import run_mitmdump
    from tests.origin.session import WSClient

    work = tmp_path_factory.mktemp("history")
    live = work / "live.parquet"
    # every flow gets a row (capture_all_flows), so the estuary GET's signed query is on disk too
    proxy = run_mitmdump(work, script=ADDON, options={"capture_path": live, "capture_flush_ms": 200,
                                                      "capture_all_flows": True},
                         confdir=mitm_confdir, flow_file=work / "flows.mitm")
    ca = ssl.create_default_context(cafile=str(proxy.ca_path))
    since = len(origin.log())
    seen: dict = {"pages": [], "frames": []}
    headers = {"content-type": "application/json", "accept": "text/event-stream",
               "authorization": "Bearer test-access-token-history", "x-origin-delays-ms": "20,5",
               "x-origin-image-ms": "150"}
    try:
        with httpx.Client(base_url=origin.url, proxy=proxy.proxy_url, verify=ca, timeout=30) as client:
            cid = None
            for text in ["first question", "second question", "third question"]:
                body = {"action": "next", "parent_message_id": "client-created-root", "model": "auto",
                        "supported_encodings": ["v1"], "messages": [{
                            "id": str(uuid.uuid4()), "author": {"role": "user"},
                            "content": {"content_type": "text", "parts": [text]}}]}
                if cid:
                    body["conversation_id"] = cid
                    body.pop("parent_message_id")
                cid = _cid_of(_post(client, body, headers))
            # an older statement of the tree (a singular mapping read) joins the pages later
            assert client.get(f"/backend-api/conversation/{cid}", headers=headers).status_code == 200
            image_body = {"action": "next", "conversation_id": cid, "model": "auto", "system_hints": ["picture_v2"],
                          "supported_encodings": ["v1"], "messages": [{
                              "id": str(uuid.uuid4()), "author": {"role": "user"},
                              "content": {"content_type": "text", "parts": ["draw a lighthouse"]}}]}
            seen["image_sse"] = _post(client, image_body, headers)
            _post(client, {"action": "next", "conversation_id": cid, "model": "auto", "supported_encodings": ["v1"],
                           "messages": [{"id": str(uuid.uuid4()), "author": {"role": "user"},
                                         "content": {"content_type": "text", "parts": ["fourth question"]}}]},
                  headers)
            url = client.get("/backend-api/celsius/ws/user", headers=headers).json()["websocket_url"]
            ws = WSClient(url, proxy=proxy.proxy_url, verify=ca)
            ws.send_text(json.dumps({"type": "subscribe", "topic_id": "conversations"}))
            for t, text in ws.messages():
                seen["frames"].append((t, json.loads(text)))
                if len(seen["frames"]) == 2:
                    break
            ws.close()
            r = client.get(f"/backend-api/conversations/{cid}?include_has_versions=true&num_turns=2", headers=headers)
            seen["pages"].append(r.json())
            while seen["pages"][-1]["page_info"]["has_previous_page"]:
                before = seen["pages"][-1]["page_info"]["start_cursor"]
                r = client.get(f"/backend-api/conversations/{cid}/messages?before={before}&num_turns=2",
                               headers=headers)
                seen["pages"].append(r.json())
            assert client.get("/backend-api/conversations?offset=0&limit=28", headers=headers).status_code == 200
            tool = seen["frames"][-1][1]["payload"]["payload"]["update_content"]["message"]
            file_id = H.file_id_of(tool["content"]["parts"][0]["asset_pointer"])
            download = client.get(f"/backend-api/files/download/{file_id}?inline=false", headers=headers).json()
            seen["download"] = download
            signed = urlsplit(download["download_url"])
            image = client.get(f"{signed.path}?{signed.query}", headers=headers)
            assert image.status_code == 200 and image.content == H.PNG  # the URL works: its sig is real
        time.sleep(0.5)
    finally:
        assert proxy.stop() == 0
    assert "Traceback" not in proxy.log_text()
    # The oracle: the origin's own tree, read directly (not through the proxy).
    oracle = httpx.get(f"{origin.url}/backend-api/conversation/{cid}", verify=origin.verify).json()
    # The same flows from the flow file, and from a HAR mitmproxy writes of it.
    from_flows = work / "flowfile.parquet"
    assert import_sources([work / "flows.mitm"], from_flows, all_flows=True).errors == []
    har = work / "flows.har"
    subprocess.run([str(Path(sys.executable).parent / "mitmdump"), "-q", "-nr", str(work / "flows.mitm"),
                    "--set", f"hardump={har}", "--set", f"confdir={mitm_confdir}"], check=True, timeout=120,
                   stdout=subprocess.DEVNULL)
    from_har = work / "har.parquet"
    assert import_sources([har], from_har, all_flows=True).errors == []
    seen["origin_log"] = origin.log(since)
    return {"cid": cid, "oracle": oracle, "seen": seen, "captures": {"live": live, "flowfile": from_flows,
                                                                      "har": from_har}}


def _branch(oracle: dict) -> list[str]:
    mapping, out, node = oracle["mapping"], [], oracle["current_node"]
    while node is not None:
        if mapping[node]["message"] is not None:
            out.append(node)
        node = mapping[node]["parent"]
    return out[::-1]


SOURCES = ["live", "flowfile", "har"]


@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES)
def test_pages_become_reads_with_the_cursors_the_client_got(history_capture, source):
    cap = load_capture(history_capture["captures"][source])
    assert cap.table("errors").empty, cap.table("errors").to_dict("records")
    pages = history_capture["seen"]["pages"]
    reads = cap.table("conversation_reads")
    reads = reads[reads.read_type == "page"].sort_values("read_at", kind="stable")
    assert len(pages) == 3 and len(reads) == 3
    assert list(reads.start_cursor) == [p["page_info"]["start_cursor"] for p in pages]
    assert list(reads.end_cursor) == [p["page_info"]["end_cursor"] for p in pages]
    assert list(reads.has_previous_page) == [True, True, False]
    assert list(reads.before_cursor.fillna("-")) == ["-"] + [p["page_info"]["start_cursor"] for p in pages[:-1]]
    assert list(reads.n_messages) == [len(p["messages"]) for p in pages] and set(reads.num_turns) == {2}
    newest = reads.iloc[0]
    assert newest.current_node == history_capture["oracle"]["current_node"]
    assert newest.default_model_slug == "auto" and newest.is_temporary_chat == False  # noqa: E712
    assert {"gizmo_id", "memory_scope", "atlas_mode_enabled", "safe_urls"} <= set(json.loads(newest.extra))
    assert set(reads.conversation_id) == {history_capture["cid"]}
    flows = cap.table("flows")
    # the list read is not a page (not recognised at all: kind other)
    assert list(flows[flows.path == "/backend-api/conversations"].kind) == ["other"]
    assert sorted(flows[flows.kind == "conversation_page"]["query"].str.contains("before=")) == [False, True, True]


@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES)
def test_page_messages_are_the_origins_branch_with_its_parents(history_capture, source):
    cap = load_capture(history_capture["captures"][source])
    oracle = history_capture["oracle"]
    mapping = oracle["mapping"]
    page_rows = cap.table("messages").query("source == 'page'")
    want = {mid: mapping[mid]["parent"] for mid in _branch(oracle)}
    assert dict(zip(page_rows.message_id, page_rows.parent_id, strict=True)) == want
    assert len(page_rows) == len(want)  # each message on exactly one page
    texts = dict(zip(page_rows.message_id, page_rows.text, strict=True))
    for mid in want:
        content = mapping[mid]["message"]["content"]
        if "parts" in content:  # text stays text: the string parts, images left out
            assert texts[mid] == "".join(p for p in content["parts"] if isinstance(p, str))
        else:  # the image tool call (code) and model_editable_context
            assert texts[mid] == content.get("text", "")


def _oracle_images(oracle: dict) -> dict[str, list]:
    out = {}
    for mid, node in oracle["mapping"].items():
        parts = ((node["message"] or {}).get("content") or {}).get("parts") or []
        images = [{k: p[k] for k in ("asset_pointer", "size_bytes", "width", "height", "metadata")}
                  for p in parts if isinstance(p, dict) and p.get("content_type") == "image_asset_pointer"]
        if images:
            out[mid] = images
    return out


@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES)
def test_image_messages_from_stream_socket_and_page(history_capture, source):
    cap = load_capture(history_capture["captures"][source])
    oracle = history_capture["oracle"]
    images = _oracle_images(oracle)
    [(tool_id, tool_images)] = images.items()
    msgs = cap.table("messages")
    with_images = msgs[msgs.images.notna()]
    # the finished tool message: on the socket's update frame and on the page, never fetched
    assert sorted(with_images.source) == ["page", "update"]
    for value in with_images.images:
        assert json.loads(value) == tool_images
    assert tool_images[0]["metadata"]["generation"]["gen_id"].startswith("gen_")
    updates = msgs[msgs.source == "update"].sort_values("seen_at", kind="stable")
    task_rows = cap.table("conversation_updates").sort_values("at", kind="stable")
    sent = [f["payload"]["payload"] for _, f in history_capture["seen"]["frames"]]
    assert list(task_rows.update_type) == [p["update_type"] for p in sent] == \
        ["async-task-start", "async-task-update-message"]
    assert list(task_rows.async_task_id) == [p["update_content"]["async_task_id"] for p in sent]
    assert set(task_rows.async_task_type) == {"image_gen"} and list(task_rows.message_id) == [tool_id, tool_id]
    assert list(task_rows["at"]) == list(updates.seen_at)
    assert list(updates.message_id) == [tool_id, tool_id]
    assert list(updates.status) == ["in_progress", "finished_successfully"]
    assert set(updates.conversation_id) == {history_capture["cid"]}
    # update frames' arrival times: the client got them; the second one the origin's delay later
    frames = history_capture["seen"]["frames"]
    if source != "har":
        gap = (updates.seen_at.iloc[1] - updates.seen_at.iloc[0]).total_seconds() * 1000
        assert gap == pytest.approx((frames[1][0] - frames[0][0]) * 1000, abs=100) and gap >= 100
    # the stream carried the model_editable_context message, the call and the tool's start
    stream = msgs[(msgs.source == "stream") & msgs.conversation_id.eq(history_capture["cid"])]
    by_type = dict(zip(stream.content_type, stream.role, strict=False))
    assert by_type["model_editable_context"] == "assistant" and by_type["multimodal_text"] == "tool"
    tool_stream = stream[stream.message_id == tool_id]
    assert list(tool_stream.status) == ["in_progress"] and tool_stream.images.isna().all()


@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES)
def test_conversation_tree_from_pages_streams_and_updates_is_the_origins(history_capture, source):
    cap = load_capture(history_capture["captures"][source])
    oracle = history_capture["oracle"]
    branch = _branch(oracle)
    conv = build_conversation(cap, history_capture["cid"])
    assert conv.current_node == oracle["current_node"]
    active = conv.active_branch()
    assert [n.id for n in active] == branch
    root_children = {mid for mid, n in oracle["mapping"].items() if n["parent"] == next(
        k for k, v in oracle["mapping"].items() if v["parent"] is None)}
    for node in active:
        want = oracle["mapping"][node.id]["parent"]
        assert node.parent == (None if node.id in root_children else want)
    first_user = next(n for n in active if n.role == "user")
    assert set(first_user.sources) == {"mapping", "page", "stream", "request"}
    tool = next(n for n in active if n.role == "tool")
    assert tool.status == "finished_successfully" and set(tool.sources) >= {"page", "update", "stream"}
    # pages alone rebuild the same branch (no stream, no mapping read)
    messages, turns = cap.table("messages"), cap.table("conversation_turns").iloc[0:0]
    pages_only = conversation_from_frames(messages[messages.source == "page"], turns, history_capture["cid"],
                                          cap.table("conversation_reads"))
    assert [n.id for n in pages_only.active_branch()] == branch


@pytest.mark.slow
def test_analyze_conversations_json_from_pages(history_capture):
    out = CliRunner().invoke(cli, ["conversations", str(history_capture["captures"]["live"]), "-c",
                                   history_capture["cid"], "--format", "json"])
    assert out.exit_code == 0, out.output
    nodes = json.loads(out.output)["nodes"]
    assert [n["id"] for n in nodes] == _branch(history_capture["oracle"])
    [(tool_id, images)] = _oracle_images(history_capture["oracle"]).items()
    assert {n["id"]: n.get("images") for n in nodes if n.get("images")} == {tool_id: images}
    # the transcript shows the image by its size and pointer, never its bytes
    out = CliRunner().invoke(cli, ["conversations", str(history_capture["captures"]["live"]), "-c",
                                   history_capture["cid"], "--format", "markdown"])
    assert out.exit_code == 0, out.output
    image = images[0]
    line = f"- `[image {image['width']}×{image['height']}, {image['size_bytes'] / 1000:,.0f} KB, " \
           f"{image['asset_pointer']}]`"
    assert line in out.output.splitlines()
    assert "Tool [multimodal_text]" in out.output and "*(no text)*" not in out.output.split(line)[0][-200:]


@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES)
def test_signed_download_url_never_reaches_disk(history_capture, source):
    path = history_capture["captures"][source]
    cap = load_capture(path)
    url = history_capture["seen"]["download"]["download_url"]
    sig = re.search(r"sig=([0-9a-f]+)", url).group(1)
    [row] = cap.table("file_downloads").to_dict("records")
    assert row["download_url"] == url.replace(f"sig={sig}", "sig=[REDACTED]")
    assert row["file_name"] == row["file_id"] + ".png"
    # the estuary GET itself (the browser fetching the image, a flow chatwire only lists)
    [estuary] = cap.table("flows").query("path == '/backend-api/estuary/content'").to_dict("records")
    assert "sig=[REDACTED]" in estuary["query"] and estuary["kind"] == "other"
    blob = b"".join(p.read_bytes() for p in Path(path).rglob("*") if p.is_file())
    strings = "\n".join(str(v) for name in ("file_downloads", "flows", "messages") for v in
                        pd.DataFrame(cap.table(name)).astype(str).to_numpy().ravel())
    assert sig not in strings and sig.encode() not in blob


def test_image_lines_keep_a_hostile_pointer_inert():
    from analyzer.analysis.conversations import Node, image_lines

    node = Node("t", None, [], "tool", "multimodal_text", "", None, None,
                images=[{"asset_pointer": "sediment://file_1`](javascript:x)\x1b[31m", "width": 2, "height": 3,
                         "size_bytes": 1500}, {"asset_pointer": None}])
    assert image_lines(node) == ["[image 2×3, 2 KB, sediment://file_1???javascript:x???31m]", "[image ?]"]


def test_stream_message_with_image_parts_gets_images():
    tool = {"id": "t1", "author": {"role": "tool", "name": "t2uay3k.sj1i4kz"}, "status": "finished_successfully",
            "content": {"content_type": "multimodal_text", "parts": [IMAGE]}, "metadata": {"parent_id": "c1"}}
    sse = (b'event: delta_encoding\ndata: "v1"\n\n'
           + F.sse({"p": "", "o": "add", "v": {"message": tool, "conversation_id": CID}, "c": 0}, "delta")
           + b"data: [DONE]\n\n")
    flow = make_flow("POST", "/backend-api/f/conversation", body={"action": "next", "conversation_id": CID},
                     response_body=sse, content_type="text/event-stream", chunk_times=[0.1, 0.2])
    rows = extract_flow(flow, source="test")
    [row] = [m for m in rows["messages"] if m["source"] == "stream"]
    assert row["message_id"] == "t1" and row["text"] == ""
    assert json.loads(row["images"])[0]["size_bytes"] == 123456


@pytest.mark.slow
@pytest.mark.parametrize("source", ["live", "flowfile"])
def test_image_task_time_from_the_tables_matches_the_origins_log(history_capture, source):
    """image_task_ms (docs/metrics.md) from the tables, against the origin's own send log."""
    cap = load_capture(history_capture["captures"][source])
    done = cap.table("conversation_updates").query(
        "update_type == 'async-task-update-message' and message_status == 'finished_successfully'")
    [row] = done.to_dict("records")
    msgs = cap.table("messages")
    [stream_flow] = msgs[(msgs.source == "stream") & (msgs.message_id == row["message_id"])].flow_id
    turns = cap.table("conversation_turns").set_index("flow_id")
    image_task_ms = (row["at"] - turns.loc[stream_flow, "started_at"]).total_seconds() * 1000
    log = history_capture["seen"]["origin_log"]
    [post] = [r for r in log if r["kind"] == "request" and r.get("image_task") == row["async_task_id"]]
    [frame] = [r for r in log if r["kind"] == "ws_frame" and r["event_kind"] == "async-task-update-message"]
    origin_ms = (frame["t"] - post["t"]) * 1000
    # the proxy sees the request a little before the origin and the frame a little after it
    assert origin_ms > 150 and origin_ms - 50 < image_task_ms < origin_ms + 500


def test_one_socket_with_an_answer_and_updates_given_out_as_they_arrive():
    """The page's one celsius socket carries stream items and conversation updates interleaved;
    the live pipeline reads it frame by frame: each update is given out once, right away."""
    from analyzer.extract import WebSocketAnswers, extract_finished_answers

    turn = F.Turn(conversation_id=CID, assistant_id="a1", assistant_parent="u1", tokens=["Hel", "lo."],
                  create_time=1_790_000_000.0, model_slug="gpt-5-2", server_model_slug="gpt-5-2")
    inner = [F.WireEvent(b'event: delta_encoding\ndata: "v1"\n\n')] + F.v1_body(turn, explicit_add=True)
    items = [(False, f.data.decode()) for f in F.celsius_frames(inner, "topic-1")]
    tool = {"id": "t1", "author": {"role": "tool"}, "status": "finished_successfully",
            "content": {"content_type": "multimodal_text", "parts": [IMAGE]}}
    frames = [(True, '{"type":"subscribe","topic_id":"topic-1"}')] + items[:3] + \
        [(False, _update("async-task-update-message", tool))] + items[3:]
    full = _socket(frames)
    live = _socket(frames[:5])  # up to and including the update frame
    live.id = full.id
    answers = WebSocketAnswers(live)
    first = extract_finished_answers(answers)
    assert [m["source"] for m in first["messages"]] == ["update"] and len(first["conversation_updates"]) == 1
    assert first["conversation_turns"] == []  # the answer is not finished yet
    live.websocket.messages.extend(full.websocket.messages[5:])
    rest = extract_flow(live, source="test", websocket_answers=answers)
    assert rest["conversation_updates"] == [] and "update" not in {m["source"] for m in rest["messages"]}
    [answer] = rest["conversation_turns"]
    assert answer["assistant_text"] == "Hello." and answer["error"] is None
    # the same socket read at once (an import) gives the same rows
    once = extract_flow(full, source="test")
    assert len(once["conversation_updates"]) == 1 and once["conversation_turns"][0]["assistant_text"] == "Hello."
