"""Write a large, realistic Chrome-shaped HAR of ChatGPT traffic for the import benchmark.

The mix per simulated turn: a streamed conversation answer (delta-encoding v1, ~200 events), a
legacy cumulative-snapshot answer every fourth turn, a latency beacon, a Segment batch, a gzip
Statsig post, a conversation read-back (mapping JSON), and unrelated page traffic (a script and
a base64 image) that the importer must read and skip. Entries are written one at a time, so the
generator itself needs little memory whatever the size.

Usage:
    python bench/make_large_har.py /tmp/large.har --mb 220
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import random
import uuid
from datetime import UTC, datetime
from pathlib import Path

WORDS = ("the quick brown fox jumps over a lazy dog while model tokens stream in small pieces "
         "latency beacon segment statsig conversation assistant answer").split()


def _headers(pairs: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in pairs.items()]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _entry(ts: float, method: str, url: str, req_headers: dict, post: dict | None, status: int,
           resp_headers: dict, content: dict, rng: random.Random, resource_type: str = "fetch") -> dict:
    wait = rng.uniform(80, 900)
    receive = rng.uniform(1, 4000)
    timings = {"blocked": rng.uniform(0.5, 3), "dns": -1, "ssl": -1, "connect": -1,
               "send": 0.2, "wait": wait, "receive": receive, "_blocked_queueing": 0.4}
    request = {"method": method, "url": url, "httpVersion": "h3", "headers": _headers(req_headers),
               "queryString": [], "cookies": [], "headersSize": -1, "bodySize": 0}
    if post is not None:
        request["postData"] = post
        request["bodySize"] = len(post.get("text", ""))
    return {
        "_initiator": {"type": "script"}, "_priority": "High", "_resourceType": resource_type,
        "cache": {}, "connection": "443", "pageref": "page_1", "request": request,
        "response": {"status": status, "statusText": "", "httpVersion": "h3", "headers": _headers(resp_headers),
                     "cookies": [], "content": content, "redirectURL": "", "headersSize": -1, "bodySize": -1,
                     "_transferSize": 1000, "_error": None},
        "serverIPAddress": "104.18.32.47", "startedDateTime": _iso(ts),
        "time": sum(v for k, v in timings.items() if v > 0 and k in ("blocked", "send", "wait", "receive")),
        "timings": timings,
    }


def _text(rng: random.Random, n: int) -> list[str]:
    return [(" " if i else "") + rng.choice(WORDS) for i in range(n)]


def _v1_stream(rng: random.Random, conv: str, user_id: str, asst_id: str, n_tokens: int) -> str:
    def ev(data: object, name: str | None = None) -> str:
        head = f"event: {name}\n" if name else ""
        return f"{head}data: {json.dumps(data)}\n\n"

    msg = {"id": asst_id, "author": {"role": "assistant", "name": None, "metadata": {}},
           "create_time": 1769267363.2, "content": {"content_type": "text", "parts": [""]},
           "status": "in_progress", "end_turn": None, "weight": 1.0,
           "metadata": {"model_slug": "gpt-5-2", "parent_id": user_id}, "recipient": "all"}
    out = [ev("v1", "delta_encoding"),
           ev({"p": "", "o": "add", "v": {"message": msg, "conversation_id": conv}, "c": 2}, "delta"),
           ev({"type": "message_marker", "message_id": asst_id, "marker": "user_visible_token", "event": "first"})]
    tokens = _text(rng, n_tokens)
    out.append(ev({"p": "/message/content/parts/0", "o": "append", "v": tokens[0]}, "delta"))
    out.extend(ev({"v": t}, "delta") for t in tokens[1:])
    out.append(ev({"p": "", "o": "patch", "v": [
        {"p": "/message/status", "o": "replace", "v": "finished_successfully"},
        {"p": "/message/end_turn", "o": "replace", "v": True},
        {"p": "/message/metadata", "o": "append", "v": {"finish_details": {"type": "stop"}}}]}, "delta"))
    out.append(ev({"type": "message_stream_complete", "conversation_id": conv}))
    out.append("data: [DONE]\n\n")
    return "".join(out)


def _legacy_stream(rng: random.Random, conv: str, user_id: str, asst_id: str, n_tokens: int) -> str:
    parts = []
    text = ""
    for i, tok in enumerate(_text(rng, n_tokens)):
        text += tok
        last = i == n_tokens - 1
        parts.append("data: " + json.dumps({"message": {
            "id": asst_id, "author": {"role": "assistant"}, "create_time": 1705653353.8,
            "content": {"content_type": "text", "parts": [text]},
            "status": "finished_successfully" if last else "in_progress", "end_turn": True if last else None,
            "metadata": {"model_slug": "text-davinci-002-render-sha", "parent_id": user_id,
                         **({"finish_details": {"type": "stop"}} if last else {})}},
            "conversation_id": conv, "error": None}) + "\n\n")
    parts.append("data: [DONE]\n\n")
    return "".join(parts)


def turn_entries(rng: random.Random, ts: float) -> list[dict]:
    """All entries of one simulated turn, starting at ``ts``."""
    conv = str(uuid.UUID(int=rng.getrandbits(128)))
    user_id = str(uuid.UUID(int=rng.getrandbits(128)))
    asst_id = str(uuid.UUID(int=rng.getrandbits(128)))
    cf_ray = f"{rng.getrandbits(64):016x}-AMS"
    legacy = rng.random() < 0.25
    user_text = " ".join(_text(rng, 12)).strip()
    body = {"action": "next", "conversation_id": conv, "parent_message_id": "client-created-root",
            "model": "auto", "messages": [{"id": user_id, "author": {"role": "user"},
                                           "content": {"content_type": "text", "parts": [user_text]}}]}
    sse = (_legacy_stream(rng, conv, user_id, asst_id, 60) if legacy
           else _v1_stream(rng, conv, user_id, asst_id, rng.randint(150, 400)))
    path = "/backend-api/conversation" if legacy else "/backend-api/f/conversation"
    entries = [_entry(
        ts, "POST", "https://chatgpt.com" + path,
        {"accept": "text/event-stream", "content-type": "application/json",
         "authorization": "Bearer eyJhbGciOi.secret.token", "cookie": "__Secure-next-auth.session-token=abc"},
        {"mimeType": "application/json", "text": json.dumps(body)}, 200,
        {"content-type": "text/event-stream; charset=utf-8", "content-encoding": "br", "cf-ray": cf_ray},
        {"size": len(sse), "mimeType": "text/event-stream", "text": sse}, rng)]
    beacon = {"server_request_id": cf_ray, "model": "gpt-5-2", "preflight_time_ms": 0.1, "count_tokens": 300,
              "ts_first_token_ms": rng.uniform(300, 2000), "ts_max_token_time_ms": 400,
              "ts_mean_token_without_first_ms": 20.0, "ts_median_token_without_first_ms": 18.0,
              "ts_min_token_time_ms": 0.1, "ts_p95_token_without_first_ms": 60.0,
              "ts_p99_token_without_first_ms": 90.0, "ts_std_dev_token_ms": 12.0, "ts_total_request_ms": 9000.0}
    entries.append(_entry(ts + 10, "POST", "https://chatgpt.com/backend-api/lat/r",
                          {"content-type": "application/json"},
                          {"mimeType": "application/json", "text": json.dumps(beacon)}, 200,
                          {"content-type": "application/json"},
                          {"size": 2, "mimeType": "application/json", "text": "{}"}, rng))
    batch = {"batch": [{"type": "track", "event": f"event {i}", "userId": "user-abc", "anonymousId": "anon-1",
                        "messageId": f"ajs-{rng.getrandbits(64):x}", "timestamp": _iso(ts + 11),
                        "properties": {"conversation_id": conv},
                        "context": {"page": {"path": f"/c/{conv}"}, "userAgent": "Mozilla/5.0"}}
                       for i in range(5)], "sentAt": _iso(ts + 11), "writeKey": "wk"}
    entries.append(_entry(ts + 11, "POST", "https://chatgpt.com/ces/v1/b", {"content-type": "application/json"},
                          {"mimeType": "application/json", "text": json.dumps(batch)}, 200,
                          {"content-type": "application/json"},
                          {"size": 14, "mimeType": "application/json", "text": '{"success":true}'}, rng))
    statsig = {"events": [{"eventName": "chatgpt_prompt_sent", "user": {"userID": "user-abc"},
                           "time": int(ts * 1000), "metadata": {"conversation_id": conv},
                           "statsigMetadata": {"currentPage": f"https://chatgpt.com/c/{conv}"}}],
               "statsigMetadata": {"sdkType": "js-client", "sdkVersion": "3.12.0", "stableID": "stable-1"}}
    gz = gzip.compress(json.dumps(statsig).encode(), mtime=0)
    entries.append(_entry(ts + 12, "POST", "https://ab.chatgpt.com/v1/rgstr?k=client-key&st=javascript-client&gz=1",
                          {"content-type": "text/plain"},
                          {"mimeType": "text/plain", "text": base64.b64encode(gz).decode(), "encoding": "base64"},
                          202, {"content-type": "application/json"},
                          {"size": 16, "mimeType": "application/json", "text": '{"success":true}'}, rng))
    mapping = {"title": "A chat", "current_node": asst_id, "mapping": {
        "root": {"id": "root", "message": None, "parent": None, "children": [user_id]},
        user_id: {"id": user_id, "parent": "root", "children": [asst_id], "message": body["messages"][0]},
        asst_id: {"id": asst_id, "parent": user_id, "children": [], "message": {
            "id": asst_id, "author": {"role": "assistant"},
            "content": {"content_type": "text", "parts": [" ".join(_text(rng, 200))]}}}}}
    entries.append(_entry(ts + 13, "GET", f"https://chatgpt.com/backend-api/conversation/{conv}", {}, None, 200,
                          {"content-type": "application/json"},
                          {"size": 0, "mimeType": "application/json", "text": json.dumps(mapping)}, rng))
    script = "function f(){return 1}\n" * rng.randint(500, 2500)
    entries.append(_entry(ts + 14, "GET", f"https://cdn.oaistatic.com/assets/{rng.getrandbits(32):x}.js", {}, None,
                          200, {"content-type": "application/javascript"},
                          {"size": len(script), "mimeType": "application/javascript", "text": script}, rng, "script"))
    image = base64.b64encode(rng.randbytes(rng.randint(5_000, 40_000))).decode()
    entries.append(_entry(ts + 15, "GET", "https://chatgpt.com/favicon.png", {}, None, 200,
                          {"content-type": "image/png"},
                          {"size": len(image) * 3 // 4, "mimeType": "image/png", "text": image, "encoding": "base64"},
                          rng, "image"))
    return entries


def write_har(path: Path, target_bytes: int, seed: int = 1) -> tuple[int, int]:
    """Write entries until the file is at least ``target_bytes``; returns (bytes, entries)."""
    rng = random.Random(seed)
    ts = 1769267000.0
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        header = {"version": "1.2", "creator": {"name": "WebInspector", "version": "537.36"},
                  "pages": [{"startedDateTime": _iso(ts), "id": "page_1", "title": "https://chatgpt.com/",
                             "pageTimings": {"onContentLoad": -1, "onLoad": -1}}]}
        # The header without its closing brace, then the entries streamed into the open list.
        fh.write('{"log": ' + json.dumps(header)[:-1] + ',\n"entries": [\n')
        while fh.tell() < target_bytes:
            for entry in turn_entries(rng, ts):
                fh.write((",\n" if n else "") + json.dumps(entry, indent=2))
                n += 1
            ts += 30
        fh.write("\n]}}\n")
        size = fh.tell()
    return size, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--mb", type=float, default=220.0, help="target size in MB (default 220)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    size, n = write_har(args.path, int(args.mb * 1_000_000), args.seed)
    print(f"{args.path}: {size / 1e6:.1f} MB, {n} entries")


if __name__ == "__main__":
    main()
