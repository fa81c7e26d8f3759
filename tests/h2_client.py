"""A raw HTTP/2 client (the ``h2`` library over a TLS socket) for what httpx cannot do: cancel one
stream with RST_STREAM, the way a browser does when a tab is closed, while the connection lives on.

    with H2Client(proxy_url, "127.0.0.1", port, cafile) as client:
        sid = client.post(path, body, headers)
        chunks = client.read_data(sid, n=3)      # the first 3 DATA frames
        client.cancel(sid)                       # RST_STREAM (CANCEL)
        status, body = client.get("/_origin/health")   # the same connection serves the next request
"""

from __future__ import annotations

import ssl

import h2.config
import h2.connection
import h2.errors
import h2.events

from tests.origin.session import connect_tunnel


class H2Client:
    def __init__(self, proxy_url: str, host: str, port: int, cafile: str, timeout: float = 15.0) -> None:
        raw = connect_tunnel(proxy_url, host, port, timeout=timeout)
        context = ssl.create_default_context(cafile=cafile)
        context.set_alpn_protocols(["h2"])
        self.sock = context.wrap_socket(raw, server_hostname=host)
        if self.sock.selected_alpn_protocol() != "h2":
            raise ConnectionError("the proxy did not agree to HTTP/2")
        self.authority = f"{host}:{port}"
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self._flush()
        self.data: dict[int, list[bytes]] = {}
        self.headers: dict[int, dict[str, str]] = {}
        self.ended: set[int] = set()
        self.reset: dict[int, int] = {}

    def _flush(self) -> None:
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> int:
        sid = self.conn.get_next_available_stream_id()
        head = [(":method", method), (":scheme", "https"), (":authority", self.authority), (":path", path)]
        head += [(k.lower(), v) for k, v in (headers or {}).items()]
        if body:
            head.append(("content-length", str(len(body))))
        self.conn.send_headers(sid, head, end_stream=not body)
        if body:
            self.conn.send_data(sid, body, end_stream=True)
        self._flush()
        self.data[sid] = []
        return sid

    def _pump(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        for event in self.conn.receive_data(chunk):
            if isinstance(event, h2.events.ResponseReceived):
                self.headers[event.stream_id] = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                self.data.setdefault(event.stream_id, []).append(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.ended.add(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self.reset[event.stream_id] = event.error_code
        self._flush()

    def read_data(self, sid: int, n: int) -> list[bytes]:
        """Wait for the first ``n`` DATA frames of stream ``sid`` (fewer if it ends first)."""
        while len(self.data[sid]) < n and sid not in self.ended and sid not in self.reset:
            self._pump()
        return list(self.data[sid])

    def cancel(self, sid: int) -> None:
        """RST_STREAM (CANCEL) on ``sid``: what a browser sends when the page stops reading."""
        self.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        self._flush()

    def get(self, path: str) -> tuple[int, bytes]:
        sid = self.request("GET", path)
        while sid not in self.ended and sid not in self.reset:
            self._pump()
        return int(self.headers.get(sid, {}).get(":status", 0)), b"".join(self.data[sid])

    def close(self) -> None:
        try:
            self.conn.close_connection()
            self._flush()
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
