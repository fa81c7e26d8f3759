"""Soak benchmark: hundreds of thousands of flows through the capture addon, watching for drift.

The mix, per cycle: a streamed conversation answer, a latency beacon, a Segment batch, a Statsig post
and a non-streamed chat completion. Reported per minute, so drift shows as a slope from the first
minute to the last: RSS, open file descriptors, the added latency per streamed event (median, p99),
each next to the stream-only baseline addon (tests/origin/stream_only_addon.py) in the same run.

This driver calls the addon's hooks in process: two processes, one with the chatwire addon (its
real pipeline, writer and Parquet parts) and one with the baseline, call ``requestheaders`` /
``responseheaders`` / the stream callable per chunk / ``response`` as mitmproxy does; added
latency = the wall time of the per-chunk call. bench/soak_mitmdump.py is the same soak through a
real mitmdump, timed at the client against the origin's send time (docs/benchmarks.md says what
each measures).

    .venv/bin/python bench/soak.py [--flows 500000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BEACON, CHAT, CONVERSATION, ROOT, SEGMENT, STATSIG, STREAM_EVENTS, fd_count, rss_mib  # noqa: E402

CYCLE = [
    (f"/backend-api/f/conversation?n={STREAM_EVENTS}&gap_ms=0", CONVERSATION, "text/event-stream"),
    ("/backend-api/lat/r", BEACON, "application/json"),
    ("/ces/v1/b", SEGMENT, "application/json"),
    ("/v1/rgstr?k=client-key", STATSIG, "application/json"),
    ("/v1/chat/completions", CHAT, "application/json"),
]


# ---------------------------------------------------------------------------------------------
# The hooks driver: the addon's own hooks, called as mitmproxy calls them, without the network


def _flow(path: str, body: bytes, content_type: str, response_body: bytes = b""):
    from mitmproxy import http
    from mitmproxy.test import tflow

    now = time.time()
    request = http.Request.make("POST", f"https://chatgpt.com{path}", body,
                                {"content-type": "application/json", "accept": "text/event-stream"
                                 if content_type == "text/event-stream" else "application/json",
                                 "authorization": "Bearer soak-not-a-secret", "cookie": "a=b"})
    request.timestamp_start = request.timestamp_end = now
    flow = tflow.tflow(req=request)
    flow.response = http.Response.make(200, response_body, {"content-type": content_type})
    flow.response.timestamp_start = now
    return flow


def _stream_chunks(n: int) -> list[bytes]:
    first = {"v": {"message": {"id": "a", "author": {"role": "assistant"}, "content": {
        "content_type": "text", "parts": [""]}, "status": "in_progress", "metadata": {}}, "conversation_id": "c"}}
    out = [b"event: delta_encoding\ndata: \"v1\"\n\n", b"event: delta\ndata: " + json.dumps(first).encode() + b"\n\n"]
    out += [b"event: delta\ndata: " + json.dumps({"p": "/message/content/parts/0", "o": "append", "v": f" w{i}"}).encode()
            + b"\n\n" for i in range(n)]
    out.append(b"data: [DONE]\n\n")
    return out


def hooks_role(role: str, flows: int, minute_s: float, out) -> None:
    """Run the mixed flows through the addon's hooks (``role`` addon) or the stream-only baseline's,
    writing one JSON line per minute: flows so far, RSS, open fds, per-chunk hook time p50/p99."""
    from mitmproxy.test import taddons

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    chunks = _stream_chunks(STREAM_EVENTS)
    analytics = [(path, body) for path, body, accept in CYCLE if accept != "text/event-stream"]
    stream_path = "/backend-api/f/conversation"
    lat: list[float] = []
    n = 0
    tmp = Path(tempfile.mkdtemp(prefix=f"chatwire-soak-{role}-"))
    if role == "addon":
        sys.path.insert(0, str(ROOT))
        from analyzer.capture.addon import ChatGPTCapture

        addon = ChatGPTCapture()
    else:
        import importlib.util

        spec = importlib.util.spec_from_file_location("stream_only", ROOT / "tests" / "origin" / "stream_only_addon.py")
        addon = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(addon)
    with taddons.context(addon) as tctx:
        if role == "addon":
            tctx.configure(addon, capture_path=str(tmp / "soak.parquet"))
        t0 = time.time()
        next_minute = t0 + minute_s
        while (flows == 0 or n < flows) and not stopping.is_set():
            # one stream, then the analytics posts
            flow = _flow(stream_path, CONVERSATION, "text/event-stream")
            for hook in ("requestheaders", "responseheaders"):
                if hasattr(addon, hook):
                    getattr(addon, hook)(flow)
            stream = flow.response.stream
            for chunk in chunks:
                start = time.perf_counter()
                if callable(stream):
                    stream(chunk)
                lat.append((time.perf_counter() - start) * 1000)
            if callable(stream):
                stream(b"")
            else:
                flow.response.content = b"".join(chunks)
            flow.response.timestamp_end = time.time()
            if hasattr(addon, "response"):
                addon.response(flow)
            n += 1
            for path, body in analytics:
                flow = _flow(path, body, "application/json", b'{"ok":true}')
                flow.response.timestamp_end = time.time()
                for hook in ("requestheaders", "responseheaders", "response"):
                    if hasattr(addon, hook):
                        getattr(addon, hook)(flow)
                n += 1
            if role == "addon":  # the proxy would not wait; here the driver must not outrun extraction
                while addon.pipeline._queue.qsize() > 2000:
                    time.sleep(0.01)
            else:  # about the addon's pace, rather than a core spinning for nothing on a shared machine
                time.sleep(0.02)
            if time.time() >= next_minute:
                next_minute += minute_s
                arr = np.asarray(lat)
                out.write(json.dumps({"role": role, "t": time.time() - t0, "flows": n, "rss_mib": rss_mib(os.getpid()),
                                      "fds": fd_count(os.getpid()), "p50": float(np.percentile(arr, 50)),
                                      "p99": float(np.percentile(arr, 99)), "n": len(arr)}) + "\n")
                out.flush()
                lat = []
        stop_t = time.time()
        if role == "addon":
            addon.done()
        arr = np.asarray(lat) if lat else np.asarray([0.0])
        final = {"role": role, "final": True, "t": time.time() - t0, "flows": n, "stop_s": time.time() - stop_t,
                 "rss_mib": rss_mib(os.getpid()), "fds": fd_count(os.getpid()),
                 "p50": float(np.percentile(arr, 50)), "p99": float(np.percentile(arr, 99)), "n": len(lat)}
        if role == "addon":
            from analyzer.store import load_capture

            final["rows"] = load_capture(tmp / "soak.parquet").counts()
        out.write(json.dumps(final) + "\n")
        out.flush()
    shutil.rmtree(tmp, ignore_errors=True)


def main_hooks(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description="the soak through the addon's hooks, in process")
    ap.add_argument("--flows", type=int, default=500_000, help="flows through the addon")
    ap.add_argument("--minute-s", type=float, default=60.0, help="length of a reporting window")
    args = ap.parse_args(argv)
    cmd = [sys.executable, __file__, "--role"]
    extra = ["--flows", str(args.flows), "--minute-s", str(args.minute_s)]
    addon = subprocess.Popen(cmd + ["addon", *extra], stdout=subprocess.PIPE, text=True)
    base = subprocess.Popen(cmd + ["baseline", "--flows", "0", "--minute-s", str(args.minute_s)],
                            stdout=subprocess.PIPE, text=True)
    t0 = time.time()
    addon_lines = [json.loads(line) for line in addon.stdout]
    addon.wait()
    base.send_signal(signal.SIGTERM)
    base_lines = [json.loads(line) for line in base.stdout]
    base.wait()
    minutes = [x for x in addon_lines if not x.get("final")]
    final = next(x for x in addon_lines if x.get("final"))
    base_min = [x for x in base_lines if not x.get("final")]
    print(f"# soak (hooks): {platform.node()} ({os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.platform()}), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(t0))}")
    print(f"{final['flows']:,} flows through the addon's hooks in {final['t']:.0f} s "
          f"({final['flows'] / final['t']:,.0f} flows/s, paced by extraction); clean stop {final['stop_s']:.1f} s; "
          f"rows: {final.get('rows')}\n")
    print("| minute | flows | RSS MiB | open fds | addon p50 ms | addon p99 ms | baseline p50 ms | baseline p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, m in enumerate(minutes):
        b = base_min[i] if i < len(base_min) else {"p50": float("nan"), "p99": float("nan")}
        print(f"| {i + 1} | {m['flows']:,} | {m['rss_mib']:.0f} | {m['fds']} | {m['p50']:.4f} | {m['p99']:.4f} | "
              f"{b['p50']:.4f} | {b['p99']:.4f} |")
    if minutes:
        first, last = minutes[0], minutes[-1]
        print(f"\nfirst → last minute: RSS {first['rss_mib']:.0f} → {last['rss_mib']:.0f} MiB, fds {first['fds']} → "
              f"{last['fds']}, per-chunk p50 {first['p50']:.4f} → {last['p50']:.4f} ms, p99 {first['p99']:.4f} → "
              f"{last['p99']:.4f} ms")
        med = lambda key, rows: float(np.median([r[key] for r in rows]))  # noqa: E731
        print(f"medians over the minutes: addon p50 {med('p50', minutes):.4f} ms, p99 {med('p99', minutes):.4f} ms; "
              f"baseline p50 {med('p50', base_min):.4f} ms, p99 {med('p99', base_min):.4f} ms")


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["--role"]:
        ap = argparse.ArgumentParser()
        ap.add_argument("--role", choices=("addon", "baseline"))
        ap.add_argument("--flows", type=int)
        ap.add_argument("--minute-s", type=float)
        args = ap.parse_args(argv)
        hooks_role(args.role, args.flows, args.minute_s, sys.stdout)
    else:
        main_hooks(argv)


if __name__ == "__main__":
    main()
