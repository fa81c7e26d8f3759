"""Benchmark: latency the capture addon adds to each streamed event, and extraction throughput.

Runs, in one process tree on loopback, a minimal SSE origin (bench/sse_origin.py) and three
mitmdump instances side by side: the baseline addon that only sets ``stream = True``, the chatwire
addon, and the chatwire addon while a second client floods it with analytics posts (so the writer
flushes continuously: the GIL contention the issue asks about). Rounds alternate between them so
machine noise hits all alike. Each event carries its send time; added latency = arrival at the
client − send time at the origin, minus nothing (same clock). Then the flow file written during the
run is replayed with ``mitmdump -nr`` with and without the addon to measure extraction throughput.

    .venv/bin/python bench/capture_latency.py [--streams 40] [--events 100] [--gap-ms 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} never opened")


def start_mitmdump(tmp: Path, name: str, script: Path, extra: list[str]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cmd = [str(BIN / "mitmdump"), "-q", "--listen-host", "127.0.0.1", "-p", str(port),
           "--set", f"confdir={tmp / 'conf'}", "-s", str(script), *extra]
    proc = subprocess.Popen(cmd, stdout=open(tmp / f"{name}.log", "w"), stderr=subprocess.STDOUT)
    wait_port(port)
    return proc, port


def stream_once(client: httpx.Client, origin: int, n: int, gap_ms: float) -> list[float]:
    """Added latency (ms) of every delta event of one stream."""
    out = []
    url = f"http://127.0.0.1:{origin}/backend-api/f/conversation?n={n}&gap_ms={gap_ms}"
    with client.stream("POST", url, json={"action": "next", "messages": []},
                       headers={"accept": "text/event-stream"}) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                now = time.time()
                out.append((now - json.loads(line[6:])["t"]) * 1000)
    return out


def flood(stop: threading.Event, proxy: int, origin: int, counter: list[int]) -> None:
    beacon = {"server_request_id": "0123456789abcdef-AMS", "model": "m", "count_tokens": 10,
              "ts_first_token_ms": 100.0, "ts_total_request_ms": 900.0}
    batch = {"batch": [{"type": "track", "event": f"e{i}", "anonymousId": "a", "messageId": str(i),
                        "context": {"page": {"path": "/c/abc12345"}}} for i in range(20)]}
    with httpx.Client(proxy=f"http://127.0.0.1:{proxy}") as client:
        while not stop.is_set():
            client.post(f"http://127.0.0.1:{origin}/backend-api/lat/r", json=beacon)
            client.post(f"http://127.0.0.1:{origin}/ces/v1/b", json=batch)
            counter[0] += 2


def rss_mib(pid: int) -> float:
    """Resident memory of a process (Linux /proc), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float]) -> dict:
    arr = np.asarray(values)
    return {"n": len(arr), "p50": float(np.percentile(arr, 50)), "p99": float(np.percentile(arr, 99)),
            "mean": float(arr.mean()), "max": float(arr.max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=40, help="streams per configuration")
    ap.add_argument("--events", type=int, default=100, help="events per stream")
    ap.add_argument("--gap-ms", type=float, default=5.0, help="gap between events at the origin")
    ap.add_argument("--extract-streams", type=int, default=300,
                    help="streams recorded into the flow file used for the extraction measurement")
    ap.add_argument("--watch", action="store_true",
                    help="also measure the addon with its watch channel on (capture_watch), with a "
                         "listener draining it and with nobody listening")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="chatwire-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        port_file = tmp / "origin.port"
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "bench" / "sse_origin.py"), str(port_file)]))
        while not port_file.exists() or not port_file.read_text():
            time.sleep(0.05)
        origin = int(port_file.read_text())
        wait_port(origin)
        addon = ROOT / "addons" / "chatgpt_capture.py"
        base, base_port = start_mitmdump(tmp, "baseline", ROOT / "tests" / "origin" / "stream_only_addon.py", [])
        cap, cap_port = start_mitmdump(tmp, "addon", addon, ["--set", f"capture_path={tmp / 'cap.parquet'}"])
        busy, busy_port = start_mitmdump(tmp, "addon_busy", addon, ["--set", f"capture_path={tmp / 'busy.parquet'}",
                                                                   "--set", "capture_flush_ms=200"])
        base_busy, base_busy_port = start_mitmdump(tmp, "baseline_busy", ROOT / "tests" / "origin" / "stream_only_addon.py", [])
        procs += [base, cap, busy, base_busy]
        configs = {"direct (no proxy)": None, "mitmdump, stream only (baseline)": base_port,
                   "mitmdump + chatwire addon": cap_port,
                   "baseline under analytics load": base_busy_port,
                   "chatwire under analytics load (writer busy)": busy_port}
        watch_stop = threading.Event()
        watch_received = [0]
        if args.watch:
            # The watch channel on: one addon whose datagrams a listener drains, one that sends to
            # a port nobody listens on (the datagrams are dropped by the kernel).
            listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            listener.bind(("127.0.0.1", 0))
            listener.settimeout(0.2)
            deaf = free_port()

            def drain_watch() -> None:
                while not watch_stop.is_set():
                    try:
                        listener.recv(65536)
                        watch_received[0] += 1
                    except TimeoutError:
                        pass

            threading.Thread(target=drain_watch, daemon=True).start()
            for name, target in (("watch_deaf", deaf), ("watch_listened", listener.getsockname()[1])):
                proc, port = start_mitmdump(tmp, name, addon, ["--set", f"capture_path={tmp / (name + '.parquet')}",
                                                              "--set", f"capture_watch=127.0.0.1:{target}"])
                procs.append(proc)
                label = ("chatwire + watch channel (listener draining)" if name == "watch_listened"
                         else "chatwire + watch channel (nobody listening)")
                configs[label] = port
        clients = {k: httpx.Client(proxy=f"http://127.0.0.1:{p}" if p else None, timeout=60) for k, p in configs.items()}
        stop, counter, base_counter = threading.Event(), [0], [0]
        flooders = [threading.Thread(target=flood, args=(stop, port, origin, n), daemon=True)
                    for port, n in ((busy_port, counter), (base_busy_port, base_counter))]
        for flooder in flooders:
            flooder.start()
        results: dict[str, list[float]] = {k: [] for k in configs}
        for c in clients.values():  # warm-up: connections, CA generation, imports
            stream_once(c, origin, 5, 1)
        rss_start = rss_mib(cap.pid)
        t0 = time.time()
        for _ in range(args.streams):
            for k, c in clients.items():
                results[k] += stream_once(c, origin, args.events, args.gap_ms)
        elapsed = time.time() - t0
        rss_end, rss_busy_end = rss_mib(cap.pid), rss_mib(busy.pid)
        stop.set()
        for flooder in flooders:
            flooder.join()
        for c in clients.values():
            c.close()
        for p in (base, cap, busy, base_busy, *procs[5:]):
            p.send_signal(signal.SIGINT)
            p.wait(timeout=60)
        watch_stop.set()

        stats = {k: pct(v) for k, v in results.items()}
        baseline = stats["mitmdump, stream only (baseline)"]

        # Extraction throughput: record a flow file with the addon (so it keeps its chunk timing),
        # then replay it with and without the addon.
        writer, writer_port = start_mitmdump(tmp, "flowfile", addon, ["--set", f"capture_path={tmp / 'w.parquet'}",
                                                                      "-w", str(tmp / "flows.mitm")])
        procs.append(writer)
        with httpx.Client(proxy=f"http://127.0.0.1:{writer_port}", timeout=60) as client:
            for _ in range(args.extract_streams):
                stream_once(client, origin, args.events, 0.0)
        writer.send_signal(signal.SIGINT)
        writer.wait(timeout=60)

        def timed(cmd: list[str]) -> float:
            start = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return time.perf_counter() - start

        flows_file = tmp / "flows.mitm"
        plain_s = timed([str(BIN / "mitmdump"), "-q", "-n", "-r", str(flows_file), "--set", f"confdir={tmp / 'conf'}"])
        out_cap = tmp / "replayed.parquet"
        addon_s = timed([str(BIN / "mitmdump"), "-q", "-n", "-r", str(flows_file), "--set", f"confdir={tmp / 'conf'}",
                         "-s", str(addon), "--set", f"capture_path={out_cap}"])
        sys.path.insert(0, str(ROOT))
        from analyzer.store import load_capture

        n_events = len(load_capture(out_cap).table("stream_events", ["seq"]))
        n_flows = len(load_capture(out_cap).table("flows", ["flow_id"]))

        print(f"# capture_latency: {platform.node()} ({os.cpu_count()} cores, {platform.python_version()}, "
              f"{platform.platform()}), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        print(f"{args.streams} streams × {args.events} events per configuration, {args.gap_ms} ms apart, "
              f"rounds interleaved; {elapsed:.1f} s\n")
        print("| configuration | events | p50 ms | p99 ms | mean ms | max ms | p99 − baseline p99 |")
        print("|---|---|---|---|---|---|---|")
        for k, s in stats.items():
            delta = s["p99"] - baseline["p99"]
            print(f"| {k} | {s['n']} | {s['p50']:.3f} | {s['p99']:.3f} | {s['mean']:.3f} | {s['max']:.3f} | {delta:+.3f} |")
        ratio = stats["mitmdump + chatwire addon"]["p99"] / baseline["p99"]
        busy_ratio = (stats["chatwire under analytics load (writer busy)"]["p99"]
                      / stats["baseline under analytics load"]["p99"])
        print(f"\np99 ratio addon / baseline: {ratio:.2f}; under analytics load (addon writing "
              f"{counter[0]} flows, baseline passing {base_counter[0]}): {busy_ratio:.2f}")
        if args.watch:
            for k in ("chatwire + watch channel (listener draining)", "chatwire + watch channel (nobody listening)"):
                print(f"p99 ratio {k} / addon without it: "
                      f"{stats[k]['p99'] / stats['mitmdump + chatwire addon']['p99']:.2f}")
            print(f"watch records received by the listener: {watch_received[0]}")
        print(f"\nRSS of the addon's mitmdump: {rss_start:.0f} MiB after warm-up, {rss_end:.0f} MiB after "
              f"{args.streams} streams; the busy one ended at {rss_busy_end:.0f} MiB after {counter[0]} flows.")
        print(f"\nExtraction: `mitmdump -nr` of {n_flows} flows / {n_events} stream events: "
              f"{plain_s:.2f} s without addon, {addon_s:.2f} s with it "
              f"({n_events / addon_s:,.0f} events/s overall; "
              f"{n_events / max(addon_s - plain_s, 1e-9):,.0f} events/s for the addon's share)")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
