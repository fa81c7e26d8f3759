"""Soak benchmark: hundreds of thousands of flows through the capture addon, watching for drift.

The mix, per cycle: a streamed conversation answer, a latency beacon, a Segment batch, a Statsig post
and a non-streamed chat completion. Reported per minute, so drift shows as a slope from the first
minute to the last: RSS, open file descriptors, the added latency per streamed event (median, p99),
each next to the stream-only baseline addon (tests/origin/stream_only_addon.py) in the same run.

Two drivers (docs/benchmarks.md says what each measures):

- default, the addon's hooks: two processes, one with the chatwire addon (its real pipeline, writer
  and Parquet parts) and one with the baseline, call ``requestheaders`` / ``responseheaders`` / the
  stream callable per chunk / ``response`` as mitmproxy does; added latency = the wall time of the
  per-chunk call.
- ``--through-mitmdump``: flood processes send the mix over sockets through a real mitmdump with
  the addon, while a probe alternates short streams through it and a baseline mitmdump (arrival at
  the client − the origin's send time, as in bench/capture_latency.py); then the baseline gets the
  same flood for ``--baseline-flood-s`` seconds.

    .venv/bin/python bench/soak.py [--flows 500000]
    .venv/bin/python bench/soak.py --through-mitmdump [--flows 500000] [--workers 2] [--connections 8]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
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

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from capture_latency import ROOT, rss_mib, start_mitmdump, stream_once, wait_port  # noqa: E402

BEACON = json.dumps({"server_request_id": "0123456789abcdef-AMS", "model": "m", "count_tokens": 10,
                     "ts_first_token_ms": 100.0, "ts_total_request_ms": 900.0}).encode()
SEGMENT = json.dumps({"batch": [{"type": "track", "event": f"e{i}", "anonymousId": "a", "messageId": str(i),
                                 "context": {"page": {"path": "/c/abc12345"}}} for i in range(5)]}).encode()
STATSIG = json.dumps({"events": [{"eventName": "chatgpt_web_prompt", "user": {"userID": "u"}, "time": 1,
                                  "metadata": {"k": "v"}}], "statsigMetadata": {"sdkType": "js"}}).encode()
CHAT = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hello"}]}).encode()
CONVERSATION = json.dumps({"action": "next", "messages": []}).encode()
STREAM_EVENTS = 10  # per flood stream, sent back to back by the origin


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


CYCLE = [
    (f"/backend-api/f/conversation?n={STREAM_EVENTS}&gap_ms=0", CONVERSATION, "text/event-stream"),
    ("/backend-api/lat/r", BEACON, "application/json"),
    ("/ces/v1/b", SEGMENT, "application/json"),
    ("/v1/rgstr?k=client-key", STATSIG, "application/json"),
    ("/v1/chat/completions", CHAT, "application/json"),
]


async def _one_connection(proxy_port: int, origin_port: int, counter, stop, quota: int) -> None:
    """HTTP/1.1 keep-alive through the plain HTTP proxy on a bare asyncio stream, the flows of
    ``CYCLE`` in turn: cheap enough that the flood measures the proxy, not the client."""
    import asyncio

    host = f"127.0.0.1:{origin_port}".encode()
    reader = writer = None
    while not stop.is_set():
        for path, body, accept in CYCLE:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
                writer.write(b"POST http://%s%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                             b"Accept: %s\r\nContent-Length: %d\r\n\r\n%s"
                             % (host, path.encode(), host, accept.encode(), len(body), body))
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
                if "transfer-encoding: chunked" in head:
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                        await reader.readexactly(size + 2)
                        if size == 0:
                            break
                else:
                    length = next((int(line.split(":", 1)[1]) for line in head.split("\r\n")
                                   if line.startswith("content-length:")), 0)
                    await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.05)
                continue
            with counter.get_lock():
                counter.value += 1
                done = quota and counter.value >= quota
            if done:
                stop.set()
            if stop.is_set():
                break
    if writer is not None:
        writer.close()


def flood_worker(proxy_port: int, origin_port: int, counter, stop, quota: int, connections: int) -> None:
    """Send mixed flows on ``connections`` concurrent connections until ``stop`` is set or ``counter``
    reaches ``quota`` (0: no quota)."""
    import asyncio

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    async def run() -> None:
        await asyncio.gather(*(_one_connection(proxy_port, origin_port, counter, stop, quota)
                               for _ in range(connections)))

    asyncio.run(run())


def percentiles(values: list[float]) -> tuple[float, float, int]:
    if not values:
        return float("nan"), float("nan"), 0
    arr = np.asarray(values)
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99)), len(arr)


def main_mitmdump(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description="the soak through real mitmdump processes")
    ap.add_argument("--flows", type=int, default=500_000, help="flows to send through the addon")
    ap.add_argument("--workers", type=int, default=2, help="flood processes")
    ap.add_argument("--connections", type=int, default=8, help="concurrent connections per flood process")
    ap.add_argument("--probe-every", type=float, default=1.0, help="seconds between probe streams")
    ap.add_argument("--probe-events", type=int, default=20, help="events per probe stream")
    ap.add_argument("--probe-gap-ms", type=float, default=5.0)
    ap.add_argument("--sample-every", type=float, default=10.0, help="seconds between RSS/fd samples")
    ap.add_argument("--baseline-flood-s", type=float, default=60.0,
                    help="seconds of the same flood through the baseline at the end")
    ap.add_argument("--keep", type=Path, help="keep the capture and the per-probe records in this directory")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="chatwire-soak-"))
    procs: list[subprocess.Popen] = []
    try:
        port_file = tmp / "origin.port"
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "bench" / "sse_origin.py"), str(port_file)]))
        while not port_file.exists() or not port_file.read_text():
            time.sleep(0.05)
        origin = int(port_file.read_text())
        wait_port(origin)
        capture = tmp / "soak.parquet"
        addon, addon_port = start_mitmdump(tmp, "addon", ROOT / "addons" / "chatgpt_capture.py",
                                           ["--set", f"capture_path={capture}"])
        base, base_port = start_mitmdump(tmp, "baseline", ROOT / "tests" / "origin" / "stream_only_addon.py", [])
        procs += [addon, base]
        probes = {"addon": httpx.Client(proxy=f"http://127.0.0.1:{addon_port}", timeout=60),
                  "baseline": httpx.Client(proxy=f"http://127.0.0.1:{base_port}", timeout=60)}
        for client in probes.values():  # warm-up: connections, imports, the writer's first parts
            stream_once(client, origin, 5, 1)

        records: list[dict] = []   # {"t", "proxy", "phase", "lat_ms"}
        samples: list[dict] = []   # {"t", "flows", "rss_mib", "fds"}
        counter = mp.Value("q", 0)
        stop = mp.Event()
        phase = {"name": "soak"}
        t0 = time.time()

        def probe_loop(done: threading.Event) -> None:
            turn = 0
            while not done.is_set():
                name = ("addon", "baseline")[turn % 2]
                turn += 1
                try:
                    lats = stream_once(probes[name], origin, args.probe_events, args.probe_gap_ms)
                except httpx.HTTPError:
                    continue
                now = time.time()
                records.extend({"t": now - t0, "proxy": name, "phase": phase["name"], "lat_ms": x} for x in lats)
                done.wait(args.probe_every / 2)

        def sample_loop(done: threading.Event) -> None:
            while not done.is_set():
                samples.append({"t": time.time() - t0, "flows": counter.value, "rss_mib": rss_mib(addon.pid),
                                "fds": fd_count(addon.pid)})
                done.wait(args.sample_every)

        probe_done, sample_done = threading.Event(), threading.Event()
        threads = [threading.Thread(target=probe_loop, args=(probe_done,), daemon=True),
                   threading.Thread(target=sample_loop, args=(sample_done,), daemon=True)]
        for thread in threads:
            thread.start()
        workers = [mp.Process(target=flood_worker, args=(addon_port, origin, counter, stop, args.flows,
                                                           args.connections))
                   for _ in range(args.workers)]
        for worker in workers:
            worker.start()
        last_report = 0.0
        while not stop.is_set():
            stop.wait(5)
            if time.time() - last_report > 60:
                last_report = time.time()
                print(f"[{time.time() - t0:7.0f} s] {counter.value:,} flows", file=sys.stderr, flush=True)
        for worker in workers:
            worker.join(60)
        soak_s = time.time() - t0
        soak_flows = counter.value
        samples.append({"t": soak_s, "flows": soak_flows, "rss_mib": rss_mib(addon.pid), "fds": fd_count(addon.pid)})
        sample_done.set()

        # The same flood through the baseline, for the latency under equal load.
        phase["name"] = "baseline-flood"
        base_counter, base_stop = mp.Value("q", 0), mp.Event()
        base_workers = [mp.Process(target=flood_worker, args=(base_port, origin, base_counter, base_stop, 0,
                                                                args.connections))
                        for _ in range(args.workers)]
        for worker in base_workers:
            worker.start()
        time.sleep(args.baseline_flood_s)
        base_stop.set()
        for worker in base_workers:
            worker.join(60)
        probe_done.set()
        for thread in threads:
            thread.join(30)
        for client in probes.values():
            client.close()

        stop_t = time.time()
        addon.send_signal(signal.SIGINT)
        addon.wait(timeout=1800)
        stop_s = time.time() - stop_t
        base.send_signal(signal.SIGINT)
        base.wait(timeout=60)

        sys.path.insert(0, str(ROOT))
        from analyzer.store import load_capture

        cap = load_capture(capture)
        counts = cap.counts()
        kinds = cap.table("flows", ["kind"]).kind.value_counts().to_dict()

        print(f"# soak: {platform.node()} ({os.cpu_count()} cores, Python {platform.python_version()}, "
              f"{platform.platform()}), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(t0))}")
        print(f"flood: {args.workers} processes × {args.connections} connections, {soak_flows:,} flows through the addon in {soak_s:.0f} s "
              f"({soak_flows / soak_s:,.0f} flows/s); probe streams of {args.probe_events} events, "
              f"{args.probe_gap_ms} ms apart, every {args.probe_every / 2:.1f} s alternating addon/baseline")
        print(f"capture: {counts['flows']:,} flows rows ({kinds}), {counts['stream_events']:,} stream_events; "
              f"clean stop (extract the queue, compact) took {stop_s:.1f} s\n")
        print("| minute | flows so far | RSS MiB | open fds | addon p50 ms | addon p99 ms | baseline p50 ms | "
              "baseline p99 ms | p50 ratio | p99 ratio |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        minutes = int(soak_s // 60) + 1
        rows = []
        for m in range(minutes):
            window = [r for r in records if r["phase"] == "soak" and m * 60 <= r["t"] < (m + 1) * 60]
            a50, a99, _ = percentiles([r["lat_ms"] for r in window if r["proxy"] == "addon"])
            b50, b99, _ = percentiles([r["lat_ms"] for r in window if r["proxy"] == "baseline"])
            sample = [s for s in samples if s["t"] < (m + 1) * 60]
            last = sample[-1] if sample else samples[0]
            rows.append((m + 1, last["flows"], last["rss_mib"], last["fds"], a50, a99, b50, b99))
            print(f"| {m + 1} | {last['flows']:,} | {last['rss_mib']:.0f} | {last['fds']} | {a50:.3f} | {a99:.3f} | "
                  f"{b50:.3f} | {b99:.3f} | {a50 / b50:.2f} | {a99 / b99:.2f} |")
        base_flood = [r for r in records if r["phase"] == "baseline-flood"]
        f50, f99, fn = percentiles([r["lat_ms"] for r in base_flood if r["proxy"] == "baseline"])
        full = [r for r in rows if r[0] * 60 <= soak_s] or rows  # minutes the soak ran to the end of
        first, last = full[0], full[-1]
        soak_addon = [r["lat_ms"] for r in records if r["phase"] == "soak" and r["proxy"] == "addon"]
        s50, s99, sn = percentiles(soak_addon)
        print(f"\nfirst → last full minute: RSS {first[2]:.0f} → {last[2]:.0f} MiB, fds {first[3]} → {last[3]}, "
              f"addon p50 {first[4]:.3f} → {last[4]:.3f} ms, p99 {first[5]:.3f} → {last[5]:.3f} ms")
        print(f"whole soak, addon under the flood: p50 {s50:.3f} ms, p99 {s99:.3f} ms ({sn} events); "
              f"baseline under the same flood ({args.baseline_flood_s:.0f} s, {base_counter.value:,} flows): "
              f"p50 {f50:.3f} ms, p99 {f99:.3f} ms ({fn} events); ratio p50 {s50 / f50:.2f}, p99 {s99 / f99:.2f}")
        rss = [s["rss_mib"] for s in samples]
        fds = [s["fds"] for s in samples]
        print(f"RSS samples: min {min(rss):.0f}, max {max(rss):.0f} MiB; fds min {min(fds)}, max {max(fds)} "
              f"({len(samples)} samples every {args.sample_every:.0f} s)")
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            (args.keep / "soak-records.json").write_text(json.dumps({"records": records, "samples": samples}))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


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
    elif argv[:1] == ["--through-mitmdump"]:
        main_mitmdump(argv[1:])
    else:
        main_hooks(argv)


if __name__ == "__main__":
    main()
