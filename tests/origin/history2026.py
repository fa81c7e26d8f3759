"""Origin routes for the 2026 history formats (guide 6b, 6e). See tests.origin.server.ROUTE_MODULES.

- ``GET /backend-api/conversations/<id>?include_has_versions=true&num_turns=N`` (plural): the newest
  page of the active branch (root → ``current_node``) of a conversation the origin keeps
  (``app.conversations``); ``GET …/conversations/<id>/messages?before=<start_cursor>&num_turns=N``:
  the page before it. A *turn* is a user message and the messages after it up to the next user
  message (the hidden system message belongs to the first turn). Within a page messages are
  **oldest first**: the source names the older page's cursor ``start_cursor`` and asks for it
  with ``before=``, so a page starts at its oldest message. Each message carries a parent
  reference: its ``metadata.parent_id`` where that names the tree parent, else a top-level
  ``parent_id`` field (the hidden system message, whose parent is the message-less root). The
  newest page has the top-level keys the source lists; older pages only ``conversation_id``,
  ``messages`` and ``page_info`` (the source does not say; this exercises a sparse page).
- ``POST /backend-api/f/conversation`` whose body has ``system_hints: ["picture_v2"]``: an
  image-generation turn. The v1 stream adds a ``model_editable_context`` message, the call to the
  image tool and the tool's ``multimodal_text`` message ``in_progress``; the finished tool message
  (an ``image_asset_pointer`` part with size and generation metadata) reaches the celsius socket
  as ``conversation-update`` frames (``async-task-start``, then ``async-task-update-message``
  ``x-origin-image-ms`` ms later, default 300) for a client subscribed to the topic
  ``conversations``. The tree holds the finished messages at once, as it does for text answers.
- ``GET /backend-api/files/download/<file id>``: ``{status, download_url, file_name, …}``, the URL
  signed with ``sig=`` (a credential); ``GET /backend-api/estuary/content?…&sig=…`` serves the
  bytes when the signature matches.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from tests.origin import formats as F

if TYPE_CHECKING:
    from tests.origin.server import OriginApp, Request, Send

IMAGE_TOOL = "t2uay3k.sj1i4kz"
IMAGE_MODEL = "gpt-image-1"
UPDATES_TOPIC = "conversations"
DEFAULT_IMAGE_MS = 300.0
# Signs download URLs; tests scan captures for signatures made with it.
SIG_KEY = b"origin-test-estuary-signing-key"
# A 1x1 PNG: what estuary/content serves.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")

_PAGE = re.compile(r"/backend-(?:api|anon)/conversations/([^/]+)(/messages)?")
_DOWNLOAD = re.compile(r"/backend-api/files/download/([^/]+)")


# ---------------------------------------------------------------------------------------------
# Pages (pure)


def cursor_for(message_id: str) -> str:
    return "cur_" + base64.urlsafe_b64encode(message_id.encode()).decode().rstrip("=")


def message_of_cursor(cursor: str) -> str | None:
    if not cursor.startswith("cur_"):
        return None
    raw = cursor[4:]
    try:
        return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def turns_of(tree: F.ConversationTree) -> list[list[str]]:
    """The active branch's message ids (root excluded) grouped into turns, oldest first."""
    ids = [i for i in tree.branch() if tree.nodes[i].message is not None]
    groups: list[list[str]] = []
    for node_id in ids:
        if not groups or (tree.role_of(node_id) == "user" and any(tree.role_of(i) == "user" for i in groups[-1])):
            groups.append([])
        groups[-1].append(node_id)
    return groups


def page_message(tree: F.ConversationTree, node_id: str) -> dict:
    """A message as a page lists it: the stored message, plus ``parent_id`` when its metadata does
    not name the tree parent."""
    node = tree.nodes[node_id]
    message = json.loads(json.dumps(node.message))
    if (message.get("metadata") or {}).get("parent_id") != node.parent:
        message["parent_id"] = node.parent
    return message


def page(tree: F.ConversationTree, num_turns: int, before: str | None = None) -> tuple[list[dict], dict] | None:
    """(messages oldest first, page_info) of the page of ``num_turns`` turns ending before the
    cursor ``before`` (the newest page without it); None for a cursor that is not on the branch."""
    groups = turns_of(tree)
    end = len(groups)
    if before is not None:
        target = message_of_cursor(before)
        starts = [g[0] for g in groups]
        if target not in starts:
            return None
        end = starts.index(target)
    start = max(end - max(num_turns, 1), 0)
    chosen = [i for g in groups[start:end] for i in g]
    info = {"start_cursor": cursor_for(chosen[0]) if chosen else None,
            "end_cursor": cursor_for(chosen[-1]) if chosen else None,
            "has_previous_page": start > 0, "has_next_page": end < len(groups)}
    return [page_message(tree, i) for i in chosen], info


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def newest_page_body(tree: F.ConversationTree, messages: list[dict], info: dict) -> dict:
    """The body of ``GET …/conversations/<id>``: every top-level key the 2026 source lists."""
    return {
        "conversation_id": tree.conversation_id, "conversation_origin": None, "conversation_template_id": None,
        "create_time": _iso(tree.create_time), "current_node": tree.current_node, "default_model_slug": "auto",
        "gizmo_id": None, "gizmo_type": None, "is_archived": False, "is_do_not_remember": False,
        "is_read_only": False, "is_starred": False, "is_study_mode": False, "is_temporary_chat": False,
        "memory_scope": "global_enabled", "messages": messages, "moderation_results": [], "owner": None,
        "page_info": info, "pinned_time": None, "plugin_ids": None, "sectioned_conversation": None,
        "sugar_item_id": None, "sugar_item_visible": False, "title": tree.title, "update_time": _iso(tree.update_time),
        "voice": None, "context_scopes": [], "context_truncation_continuation": None, "disabled_tool_ids": [],
        "safe_urls": [], "blocked_urls": [], "async_status": None, "atlas_mode_enabled": False,
    }


# ---------------------------------------------------------------------------------------------
# Image generation (pure parts)


def _hex(*parts: object) -> str:
    return hashlib.sha256("\x00".join(map(str, parts)).encode()).hexdigest()


def image_part(prompt: str, task_id: str) -> dict:
    """An ``image_asset_pointer`` part, deterministic in the prompt and task."""
    digest = _hex("image", prompt, task_id)
    width, height = (1024, 1536) if int(digest[0], 16) % 2 else (1536, 1024)
    return {
        "content_type": "image_asset_pointer", "asset_pointer": f"sediment://file_{digest[:32]}",
        "size_bytes": 200_000 + int(digest[1:6], 16) % 2_000_000, "width": width, "height": height,
        "fovea": None,
        "metadata": {"dalle": None, "gizmo": None, "generation": {
            "gen_id": f"gen_{digest[32:48]}", "gen_size": "xlimage", "seed": None, "parent_gen_id": None,
            "height": height, "width": width, "transparent_background": False,
            "serialization_title": "Image Generation Output", "orientation": None},
            "container_pixel_height": height, "container_pixel_width": width, "emu_omit_glimpse_image": None,
            "emu_patches_override": None, "lpe_keep_patch_ijhw": None, "sanitized": True,
            "asset_pointer_link": None, "watermarked_asset_pointer": None},
    }


def file_id_of(asset_pointer: str) -> str:
    return asset_pointer.rsplit("/", 1)[-1]


def image_messages(prompt: str, parent: str, now: float, task_id: str) -> dict[str, dict]:
    """The messages of an image turn under the user message ``parent``: ``context``
    (model_editable_context), ``call`` (assistant → image tool), ``tool_started`` and ``tool``
    (the tool's message in progress and finished; same id)."""
    context_id, call_id, tool_id = (str(uuid.uuid5(uuid.NAMESPACE_URL, f"{task_id}/{k}")) for k in "abc")
    context = F.make_message(context_id, "assistant", "", create_time=now,
                             metadata={"parent_id": parent, "is_visually_hidden_from_conversation": True})
    context["content"] = {"content_type": "model_editable_context", "model_set_context": "",
                          "repository": None, "repo_summary": None, "structured_context": None}
    call = F.make_message(call_id, "assistant", "", create_time=now, recipient=IMAGE_TOOL, end_turn=False,
                          metadata={"parent_id": context_id, "model_slug": F.V1_DEFAULT_MODEL})
    call["content"] = {"content_type": "code", "language": "json",
                       "text": json.dumps({"prompt": prompt, "size": "1024x1536", "n": 1})}
    meta = {"parent_id": call_id, "model_slug": IMAGE_MODEL, "async_task_id": task_id,
            "async_task_type": "image_gen", "image_gen_title": F.title_for(prompt)}

    def tool(status: str, parts: list) -> dict:
        msg = F.make_message(tool_id, "tool", "", create_time=now, status=status, metadata=dict(meta),
                             content_type="multimodal_text")
        msg["author"] = {"role": "tool", "name": IMAGE_TOOL, "metadata": {}}
        msg["content"] = {"content_type": "multimodal_text", "parts": parts}
        return msg

    return {"context": context, "call": call, "tool_started": tool("in_progress", []),
            "tool": tool("finished_successfully", [image_part(prompt, task_id)])}


def update_frame(conversation_id: str, update_type: str, task_id: str, message: dict) -> F.WireEvent:
    """A celsius ``conversation-update`` frame in its topic envelope."""
    frame = {"type": "message", "topic_id": UPDATES_TOPIC, "payload": {
        "type": "conversation-update", "payload": {
            "conversation_id": conversation_id, "update_type": update_type,
            "update_content": {"async_task_id": task_id, "async_task_type": "image_gen", "message": message}}}}
    return F.WireEvent(json.dumps(frame).encode(), kind=update_type)


def image_stream(turn: F.Turn, msgs: dict[str, dict]) -> list[F.WireEvent]:
    """The v1 SSE events of an image turn: echoes, the three new messages, completion, [DONE]."""
    cid = turn.conversation_id
    out = F.v1_head(turn)
    c = (turn.system is not None) + (turn.user is not None)
    for key in ("context", "call", "tool_started"):
        body = {"p": "", "o": "add", "v": {"message": msgs[key], "conversation_id": cid, "error": None}, "c": c}
        out.append(F.WireEvent(F.sse(body, "delta"), kind="delta"))
        c += 1
    if turn.title:
        out.append(F.WireEvent(F.sse({"type": "title_generation", "title": turn.title, "conversation_id": cid}),
                               kind="title_generation"))
    out.append(F.WireEvent(F.sse({"type": "message_stream_complete", "conversation_id": cid}),
                           kind="message_stream_complete"))
    out.append(F.DONE)
    return out


def sign(file_id: str, ts: int) -> str:
    return hmac.new(SIG_KEY, f"{file_id}:{ts}".encode(), hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------------------------------
# Routes


async def handle_http(app: OriginApp, req: Request, send: Send) -> bool:
    """Answer the request and return True, or return False to leave it to the other routes."""
    m = _PAGE.fullmatch(req.path)
    if m and req.method == "GET":
        await _page(app, req, send, m.group(1), older=bool(m.group(2)))
        return True
    m = _DOWNLOAD.fullmatch(req.path)
    if m and req.method == "GET":
        ts = int(time.time())
        file_id = m.group(1)
        url = (f"https://{req.host}/backend-api/estuary/content?id={file_id}&ts={ts}&p=fs&cid=1"
               f"&sig={sign(file_id, ts)}&v=0")
        app._log_request(req, 200, file_id=file_id)
        await app._json(send, 200, {"status": "success", "download_url": url, "metadata": {},
                                    "file_name": f"{file_id}.png", "creation_time": _iso(ts)})
        return True
    if req.path == "/backend-api/estuary/content" and req.method == "GET":
        q = req.query
        ok = hmac.compare_digest(q.get("sig", ""), sign(q.get("id", ""), int(q.get("ts", "0") or 0)))
        app._log_request(req, 200 if ok else 403)
        if ok:
            await app._bytes(send, 200, PNG, "image/png")
        else:
            await app._json(send, 403, {"detail": "bad signature"})
        return True
    if req.path == "/backend-api/f/conversation" and req.method == "POST":
        body = req.json()
        if isinstance(body, dict) and "picture_v2" in (body.get("system_hints") or []):
            await _image_turn(app, req, send, body)
            return True
    return False


async def _page(app: OriginApp, req: Request, send: Send, conversation_id: str, *, older: bool) -> None:
    tree = app.conversations.get(conversation_id)
    try:
        num_turns = int(req.query.get("num_turns", "10"))
    except ValueError:
        num_turns = 10
    before = req.query.get("before") if older else None
    result = page(tree, num_turns, before) if tree is not None and (before or not older) else None
    if result is None:
        app._log_request(req, 404)
        await app._json(send, 404, {"detail": {"code": "conversation_not_found",
                                               "message": f"Can't load conversation {conversation_id}"}})
        return
    messages, info = result
    body = {"conversation_id": conversation_id, "messages": messages, "page_info": info} if older \
        else newest_page_body(tree, messages, info)
    app._log_request(req, 200, conversation_id=conversation_id, n_messages=len(messages), **info)
    await app._json(send, 200, body, [("cf-ray", _ray())])


def _ray() -> str:
    from tests.origin.server import new_cf_ray

    return new_cf_ray()


async def _image_turn(app: OriginApp, req: Request, send: Send, body: dict) -> None:
    now = time.time()
    cid = body.get("conversation_id") if isinstance(body.get("conversation_id"), str) else None
    parent = body.get("parent_message_id") if isinstance(body.get("parent_message_id"), str) else None
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    user_in = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    content = user_in.get("content") if isinstance(user_in.get("content"), dict) else {}
    prompt = "".join(p for p in content.get("parts") or [] if isinstance(p, str))
    user_id = str(user_in.get("id") or uuid.uuid4())
    if cid:
        tree = app.conversations.get(cid)
        if tree is None:
            app._log_request(req, 404)
            await app._json(send, 404, {"detail": f"Can't load conversation {cid}"})
            return
        attach = parent if parent in tree.nodes else tree.current_node
        system = None
    else:
        cid = str(uuid.uuid4())
        tree = F.ConversationTree.new(cid, parent or str(uuid.uuid4()), str(uuid.uuid4()), now)
        attach = tree.nodes[tree.root_id].children[0]
        system = tree.nodes[attach].message
    user = F.user_message(user_id, prompt, parent_id=attach, create_time=now)
    tree.add(user, attach)
    task_id = "task_" + _hex("task", cid, user_id)[:24]
    msgs = image_messages(prompt, user_id, now, task_id)
    for key in ("context", "call", "tool"):
        tree.add(msgs[key], msgs[key]["metadata"]["parent_id"])
    turn = F.Turn(conversation_id=cid, assistant_id=msgs["call"]["id"], assistant_parent=user_id, tokens=[],
                  create_time=now, model_slug=F.V1_DEFAULT_MODEL, server_model_slug=F.V1_DEFAULT_MODEL,
                  system=system, user=user, turn_exchange_id=str(uuid.uuid4()))
    if system is not None:
        turn.title = tree.title = F.title_for(prompt)
    tree.update_time = now
    app.conversations[cid] = tree
    try:
        delay_ms = max(float(req.headers.get("x-origin-image-ms", DEFAULT_IMAGE_MS)), 0.0)
    except ValueError:
        delay_ms = DEFAULT_IMAGE_MS
    app.async_updates.append((delay_ms, [
        update_frame(cid, "async-task-start", task_id, msgs["tool_started"]),
        update_frame(cid, "async-task-update-message", task_id, msgs["tool"]),
    ]))
    await app.stream(req, send, image_stream(turn, msgs), cf_ray=_ray(),
                     extra={"conversation_id": cid, "format": "v1", "image_task": task_id,
                            "message_id": msgs["tool"]["id"]})


async def celsius_subscribe(app: OriginApp, topic_id: str, send: Send, path: str) -> bool:
    """Send the queued ``conversation-update`` frames to a subscriber of ``conversations``
    (True: handled). Each task's start goes at once, its finished message ``delay`` ms later."""
    if topic_id != UPDATES_TOPIC:
        return False
    queued, app.async_updates = app.async_updates, []
    for delay_ms, frames in queued:
        for i, frame in enumerate(frames):
            if i:
                await asyncio.sleep(delay_ms / 1000)
            await send({"type": "websocket.send", "text": frame.data.decode()})
            app.log.add(kind="ws_frame", key=topic_id, path=path, index=i, t=time.time(), n_bytes=len(frame.data),
                        text="", event_kind=frame.kind, data=frame.data.decode())
    return True
