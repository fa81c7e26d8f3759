"""The mitmproxy addon: records ChatGPT and OpenAI-API traffic into a Parquet capture.

Load it with ``mitmdump -s addons/chatgpt_capture.py --set capture_path=CAPTURE``. It never
changes a flow the client sees and never lets an exception reach mitmproxy.
"""

from __future__ import annotations

import collections
import functools
import logging
from collections.abc import Sequence
from typing import Any

from mitmproxy import ctx, http
from mitmproxy.connection import ConnectionState

from analyzer import log_safety
from analyzer.capture.pipeline import CapturePipeline
from analyzer.capture.recorder import ChunkRecorder
from analyzer.capture.watch import WatchPublisher, parse_address
from analyzer.extract.common import METADATA_KEY
from analyzer.extract.ending import CLOSED_FIRST_KEY, END_KEY, PROXY_STOPPED
from analyzer.recognise import is_ndjson_stream, is_stream_answer, might_stream, recognise
from analyzer.store.writer import PARTITIONINGS

log = logging.getLogger(__name__)

DEFAULT_CAPTURE_PATH = "captures/capture.parquet"
# Rows held in memory while writing fails: a few hundred MB at most (a row is a dict of ~1 kB).
DEFAULT_HOLD_ROWS = 200_000


def parse_mode(text: str) -> int | None:
    """``"0640"`` -> 0o640; None if it is not an octal mode between 000 and 777."""
    try:
        mode = int(str(text).strip(), 8)
    except ValueError:
        return None
    return mode if 0 <= mode <= 0o777 else None


def _guarded(hook):
    """No exception from the addon reaches mitmproxy: log it and let the flow pass."""

    @functools.wraps(hook)
    def wrapper(self, *args: Any) -> None:
        try:
            hook(self, *args)
        except Exception:
            log.exception("chatwire: %s hook failed (the flow passes through unchanged)", hook.__name__)

    return wrapper


class ChatGPTCapture:
    """Times event-stream answers chunk by chunk as they pass, and hands finished flows on.

    Every event-stream answer passes through chunk by chunk, recognised or not: a proxy that
    buffered one would break the client's streaming."""

    def __init__(self) -> None:
        self.pipeline: CapturePipeline | None = None
        self.watch: WatchPublisher | None = None  # progress records for `analyze watch`, off by default
        # error can follow response for the same flow (a reset after the last byte): submit once.
        self._submitted: collections.OrderedDict[str, None] = collections.OrderedDict()
        # Recognised flows not yet ended: a clean stop writes them (mitmproxy runs their error
        # hooks only after ``done``, when the capture is closed).
        self._in_flight: dict[str, http.HTTPFlow] = {}

    def _submit(self, flow: http.HTTPFlow) -> None:
        self._in_flight.pop(flow.id, None)
        if self.pipeline is None or flow.id in self._submitted:
            return
        self._submitted[flow.id] = None
        if len(self._submitted) > 10_000:
            self._submitted.popitem(last=False)
        self.pipeline.submit(flow)

    def load(self, loader) -> None:
        # Log lines can quote traffic (an exception on a hostile body): inert before mitmproxy prints them.
        log_safety.install()
        loader.add_option("capture_path", str, DEFAULT_CAPTURE_PATH,
                          "Capture directory to write (Parquet tables, one sub-directory each).")
        loader.add_option("capture_flush_ms", int, 1000,
                          "Flows that ended more than this many milliseconds ago are on disk.")
        loader.add_option("capture_redact", bool, True,
                          "Replace credentials (auth headers, cookies, tokens, API keys) before writing.")
        loader.add_option("capture_all_flows", bool, False,
                          "Write a flows row for every flow, not only the recognised ones.")
        loader.add_option("capture_mode", str, "0600",
                          "Permissions (octal) of the capture's files, whatever the umask; directories get x "
                          "where r is set (0600: 0700). 0640 shares the capture with the group, deliberately.")
        loader.add_option("capture_hold_rows", int, DEFAULT_HOLD_ROWS,
                          "While writing fails (a full disk), hold up to this many rows in memory to write "
                          "when it works again; rows beyond are dropped and counted.")
        loader.add_option("capture_label", str, "",
                          "A name for this capture run (a vantage point or machine, e.g. fra): its "
                          "captures.label, and the start of its capture_id; empty: none (the host name).")
        loader.add_option("capture_partition", str, "none",
                          "none, or date: each table's parts go into hive-style date=YYYY-MM-DD sub-directories "
                          "(UTC date of the flow's start), so that engines prune by date.")
        loader.add_option("capture_watch", str, "",
                          "Publish live progress for `analyze watch` to this loopback UDP HOST:PORT "
                          "(e.g. 127.0.0.1:7878); empty: off. Records are dropped when nobody listens.")

    def _configure_watch(self) -> None:
        if self.watch is not None:
            self.watch.close()
            self.watch = None
        if not ctx.options.capture_watch:
            return
        try:
            self.watch = WatchPublisher(parse_address(ctx.options.capture_watch))
        except (ValueError, OSError) as exc:
            log.error("chatwire: %s", exc)
            return
        log.info("chatwire: publishing live progress to udp://%s:%d", *self.watch.address)

    def configure(self, updated: set[str]) -> None:
        if "capture_watch" in updated:
            self._configure_watch()
        keys = {"capture_path", "capture_flush_ms", "capture_redact", "capture_all_flows", "capture_mode",
                "capture_hold_rows", "capture_label", "capture_partition"}
        if self.pipeline is not None and not (updated & keys):
            return
        if ctx.options.capture_flush_ms <= 0:
            # An error logged at start-up makes mitmdump exit, with this one line and no traceback.
            log.error("chatwire: capture_flush_ms must be a positive number of milliseconds, not %s",
                      ctx.options.capture_flush_ms)
            return
        mode = parse_mode(ctx.options.capture_mode)
        if mode is None:
            log.error("chatwire: capture_mode must be an octal file mode such as 0600 or 0640, not %r",
                      ctx.options.capture_mode)
            return
        if ctx.options.capture_hold_rows < 0:
            log.error("chatwire: capture_hold_rows must be 0 or more, not %s", ctx.options.capture_hold_rows)
            return
        if ctx.options.capture_partition not in PARTITIONINGS:
            log.error("chatwire: capture_partition must be one of %s, not %r", ", ".join(PARTITIONINGS),
                      ctx.options.capture_partition)
            return
        if self.pipeline is not None:
            self.pipeline.close()
        if mode & 0o077:
            log.warning("chatwire: capture_mode is %04o: others than you can read the capture at %s",
                        mode, ctx.options.capture_path)
        if not ctx.options.capture_redact:
            log.warning("chatwire: capture_redact is off: credentials will be written to %s",
                        ctx.options.capture_path)
        try:
            self.pipeline = CapturePipeline(
                ctx.options.capture_path,
                flush_ms=ctx.options.capture_flush_ms,
                redact=ctx.options.capture_redact,
                all_flows=ctx.options.capture_all_flows,
                mode=mode,
                max_held_rows=ctx.options.capture_hold_rows,
                label=ctx.options.capture_label.strip() or None,
                partition=ctx.options.capture_partition,
            )
        except OSError as exc:  # an unwritable path: one clear line (mitmdump exits at start-up)
            self.pipeline = None
            log.error("chatwire: cannot write the capture at %s: %s", ctx.options.capture_path, exc.strerror or exc)
            return
        log.info("chatwire: capturing to %s (capture_id %s)", self.pipeline.path, self.pipeline.writer.capture_id)

    @_guarded
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if self.pipeline is not None and recognise(flow.request.method, flow.request.path) is not None:
            self._in_flight[flow.id] = flow

    @_guarded
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None:
            return
        content_type = response.headers.get("content-type")
        if not (is_stream_answer(content_type, flow.request.headers.get("accept"))
                or is_ndjson_stream(flow.request.method, flow.request.path, content_type)):
            return
        if response.raw_content is not None:
            # A flow read from a file (mitmdump -nr) already has its body and its per-chunk
            # timing: a new recorder would replace that timing with an empty one.
            return
        existing = response.stream
        if might_stream(flow.request.method, flow.request.path):
            response.stream = ChunkRecorder(flow, existing if callable(existing) else None, self.watch)
        elif not existing:
            # Not ours, but plain mitmproxy would buffer it whole (mitmproxy issue #4469):
            # pass the bytes through untouched as they come.
            response.stream = True

    @_guarded
    def response(self, flow: http.HTTPFlow) -> None:
        if flow.websocket is None:
            self._submit(flow)
            if self.watch is not None:
                self.watch.flow_finished(flow)
        else:
            self._in_flight.pop(flow.id, None)  # a socket: its end is websocket_end

    @_guarded
    def error(self, flow: http.HTTPFlow) -> None:
        if flow.id in self._submitted:
            return  # ended already (an error after the last byte): its rows are being written
        # Who hung up: mitmproxy's message does not always say (HTTP/2 words both sides alike),
        # the connections' states now do. Noted in the flow, so a -w file made later keeps it.
        side = _closed_first(flow)
        if side:
            flow.metadata.setdefault(METADATA_KEY, {})[CLOSED_FIRST_KEY] = side
        # A stream cut off mid-way: keep what did arrive.
        if flow.response is not None and isinstance(flow.response.stream, ChunkRecorder):
            flow.response.stream.finish()
        if flow.websocket is None:
            self._submit(flow)

    @_guarded
    def websocket_message(self, flow: http.HTTPFlow) -> None:
        # Only a queue put here: the worker decides whether the frame finished an answer.
        if self.pipeline is not None and flow.websocket is not None and not flow.websocket.messages[-1].from_client:
            self.pipeline.submit_frame(flow)
        if self.watch is not None and flow.websocket is not None:
            self.watch.websocket_message(flow, flow.websocket.messages[-1])  # a deque append

    @_guarded
    def websocket_end(self, flow: http.HTTPFlow) -> None:
        self._submit(flow)
        if self.watch is not None:
            self.watch.socket_ended(flow)

    def done(self) -> None:
        if self.watch is not None:
            self.watch.close()
            self.watch = None
        if self.pipeline is not None:
            try:
                self._stop_in_flight()
            except Exception:
                log.exception("chatwire: could not write the flows in flight at the stop")
            try:
                self.pipeline.close()
            except Exception:
                log.exception("chatwire: final flush failed")
            self.pipeline = None


    def _stop_in_flight(self) -> None:
        """A clean stop with answers half-read: each becomes a row with what did arrive."""
        in_flight = list(self._in_flight.values())
        if in_flight:
            log.info("chatwire: writing %d flow(s) still in flight at the stop", len(in_flight))
        for flow in in_flight:
            flow.metadata.setdefault(METADATA_KEY, {})[END_KEY] = PROXY_STOPPED
            if flow.response is not None and isinstance(flow.response.stream, ChunkRecorder):
                flow.response.stream.finish()
            self._submit(flow)


def _closed_first(flow: http.HTTPFlow) -> str | None:
    """``client`` or ``server``: the one connection that had stopped reading when the error came."""
    client_gone = not (flow.client_conn.state & ConnectionState.CAN_READ)
    server = flow.server_conn  # never opened (timestamp_start None): it cannot have hung up
    server_gone = server.timestamp_start is not None and not (server.state & ConnectionState.CAN_READ)
    if client_gone and not server_gone:
        return "client"
    if server_gone and not client_gone:
        return "server"
    return None


def addons() -> Sequence[object]:
    return [ChatGPTCapture()]
