"""A minimal SSE origin for the capture benchmarks: each event carries its own send time.

``python bench/sse_origin.py PORT_FILE`` listens on a free loopback port (written to PORT_FILE).
``POST /backend-api/f/conversation?n=N&gap_ms=G`` streams N v1 delta events, one chunk each,
G ms apart; every event's data holds ``time.time()`` taken just before the write.
``POST …/chat/completions`` with ``"stream": true`` in the body streams N (``?n=``, default 10)
``chat.completion.chunk`` events the same way (an API stream), then ``[DONE]``. Any other POST
answers a small JSON body (used as analytics load).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from urllib.parse import parse_qs, urlsplit

STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')
CHUNKED_SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"


async def _api_stream(writer: asyncio.StreamWriter, n: int, gap: float) -> None:
    """An OpenAI chat-completions stream: ``n`` content chunks, each with its send time ``t``, then ``[DONE]``."""
    writer.write(CHUNKED_SSE_HEAD + b"\r\n")
    await writer.drain()
    start = time.time()
    for i in range(n):
        await asyncio.sleep(max(0.0, start + (i + 1) * gap - time.time()))
        chunk = {"id": "chatcmpl-soak", "object": "chat.completion.chunk", "created": int(start), "model": "m",
                 "choices": [{"index": 0, "delta": {"role": "assistant", "content": f" w{i}"} if i == 0 else
                              {"content": f" w{i}"}, "finish_reason": None}], "t": time.time()}
        body = f"data: {json.dumps(chunk)}\n\n".encode()
        writer.write(b"%x\r\n%s\r\n" % (len(body), body))
        await writer.drain()
    done = b"data: [DONE]\n\n"
    writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
    await writer.drain()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            length = int(headers.get("content-length", "0"))
            body = await reader.readexactly(length) if length else b""
            url = urlsplit(target)
            q = parse_qs(url.query)
            if url.path.endswith("/chat/completions") and STREAM_TRUE.search(body):
                n, gap = int(q.get("n", ["10"])[0]), float(q.get("gap_ms", ["0"])[0]) / 1000
                await _api_stream(writer, n, gap)
            elif url.path.endswith("/conversation"):
                n, gap = int(q.get("n", ["50"])[0]), float(q.get("gap_ms", ["20"])[0]) / 1000
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"transfer-encoding: chunked\r\ncf-ray: 0123456789abcdef-AMS\r\n\r\n")
                await writer.drain()
                start = time.time()
                for i in range(n):
                    await asyncio.sleep(max(0.0, start + (i + 1) * gap - time.time()))
                    data = json.dumps({"p": "/message/content/parts/0", "o": "append", "v": f" w{i}", "t": time.time()})
                    if i == 0:
                        data = json.dumps({"v": {"message": {"id": "a", "author": {"role": "assistant"}, "content": {
                            "content_type": "text", "parts": [""]}, "status": "in_progress", "metadata": {}},
                            "conversation_id": "c"}, "t": time.time()})
                    body = f"event: delta\ndata: {data}\n\n".encode()
                    writer.write(b"%x\r\n%s\r\n" % (len(body), body))
                    await writer.drain()
                done = b"data: [DONE]\n\n"
                writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
                await writer.drain()
            else:
                body = b'{"ok":true}'
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(body), body))
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port_file: str) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    with open(port_file, "w") as fh:
        fh.write(str(server.sockets[0].getsockname()[1]))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
