"""Benchmark: latency the capture addon adds to each streamed event, and extraction throughput.

Runs, in one process tree on loopback, a minimal SSE origin (bench/sse_origin.py) and three
mitmdump instances side by side: the baseline addon that only sets ``stream = True``, the chatwire
addon, and the chatwire addon while a second client floods it with analytics posts (so the writer
flushes continuously: the GIL contention the issue asks about). Rounds alternate between them so
machine noise hits all alike. Each event carries its send time; added latency = arrival at the
client − send time at the origin, minus nothing (same clock). Then the flow file written during the
run is replayed with ``mitmdump -nr`` with and without the addon to measure extraction throughput.

    .venv/bin/python bench/capture_latency.py [--streams 40] [--events 100] [--gap-ms 5]

``--watch`` measures the watch channel (``capture_watch``) instead: four proxies in the same rounds
(no addon; the addon with the channel off; on, with a real ``analyze watch`` process listening; on,
with nobody listening, so every datagram is dropped), ``--runs`` runs of ``--streams`` streams
each, configurations alternating stream by stream in an order that rotates every round; it reports
each run's p50/p99 and their ratios, and ``--docs docs/benchmarks.md`` writes the result into that
file's watch section (between its ``watch-bench`` markers).

    .venv/bin/python bench/capture_latency.py --watch [--runs 5] [--streams 20] [--docs docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
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
from _common import BIN, ROOT, free_port, pct, rss_mib, start_mitmdump, start_origin, stream_once  # noqa: E402


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=40, help="streams per configuration")
    ap.add_argument("--events", type=int, default=100, help="events per stream")
    ap.add_argument("--gap-ms", type=float, default=5.0, help="gap between events at the origin")
    ap.add_argument("--extract-streams", type=int, default=300,
                    help="streams recorded into the flow file used for the extraction measurement")
    ap.add_argument("--watch", action="store_true",
                    help="measure the watch channel instead (capture_watch): no addon, channel off, "
                         "on with `analyze watch` listening, on with nobody listening")
    ap.add_argument("--runs", type=int, default=5, help="with --watch: runs, each of --streams rounds")
    ap.add_argument("--docs", type=Path, default=None,
                    help="with --watch: write the result into this markdown file's watch-bench section")
    args = ap.parse_args()
    if args.watch:
        watch_bench(args)
        return
    if args.docs is not None:
        ap.error("--docs goes with --watch")

    tmp = Path(tempfile.mkdtemp(prefix="chatwire-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        origin_proc, origin = start_origin(tmp)
        procs.append(origin_proc)
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
        for p in (base, cap, busy, base_busy):
            p.send_signal(signal.SIGINT)
            p.wait(timeout=60)

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


# -- the watch channel's cost (--watch) ------------------------------------------------------------

NO_ADDON, WATCH_OFF, WATCHED, DROPPED = ("no addon (stream only)", "chatwire, watch off",
                                         "chatwire, watch on, `analyze watch` listening",
                                         "chatwire, watch on, nobody listening (dropped)")
WATCH_CONFIGS = (NO_ADDON, WATCH_OFF, WATCHED, DROPPED)
DOCS_START, DOCS_END = "<!-- watch-bench:start -->", "<!-- watch-bench:end -->"


def rotated(items: tuple, k: int) -> tuple:
    """``items`` starting at position ``k`` (mod its length): each round puts another one first."""
    k %= len(items)
    return items[k:] + items[:k]


def summarize_watch(runs: list[dict[str, list[float]]]) -> dict:
    """Per run, p50/p99/mean of each configuration's added latency and the ratios that matter:
    watch on / watch off (the channel's cost) and watch off / no addon (the addon's); then the
    median, min and max of each ratio over the runs."""
    per_run = []
    for run in runs:
        stats = {k: pct(v) for k, v in run.items()}
        ratios = {}
        for stat in ("p50", "p99", "mean"):
            ratios[f"{WATCHED} / {WATCH_OFF} {stat}"] = stats[WATCHED][stat] / stats[WATCH_OFF][stat]
            ratios[f"{DROPPED} / {WATCH_OFF} {stat}"] = stats[DROPPED][stat] / stats[WATCH_OFF][stat]
            ratios[f"{WATCH_OFF} / {NO_ADDON} {stat}"] = stats[WATCH_OFF][stat] / stats[NO_ADDON][stat]
        per_run.append({"stats": stats, "ratios": ratios})
    spread = {}
    for key in per_run[0]["ratios"]:
        values = [r["ratios"][key] for r in per_run]
        spread[key] = {"median": float(np.median(values)), "min": min(values), "max": max(values)}
    pooled = {k: pct([x for run in runs for x in run[k]]) for k in runs[0]}
    return {"runs": per_run, "ratios": spread, "pooled": pooled}


def watch_markdown(summary: dict, meta: dict) -> str:
    """The docs section's body: what ran, where, and the figures."""
    lines = [
        f"Command: `{meta['command']}`",
        f"Machine: {meta['machine']}, {meta['date']}, load average {meta['load_before']:.2f} before and "
        f"{meta['load_after']:.2f} after (1 min); {meta['n_runs']} runs × {meta['streams']} streams × "
        f"{meta['events']} events per configuration, {meta['gap_ms']} ms apart; {meta['elapsed_s']:.0f} s.",
        "",
        "Ratios over the runs (median [min – max]); 1.00 is no difference:",
        "",
        "| ratio | p50 | p99 | mean |",
        "|---|---|---|---|",
    ]
    for label, (a, b) in (("watch on, listened / watch off", (WATCHED, WATCH_OFF)),
                          ("watch on, nobody listening / watch off", (DROPPED, WATCH_OFF)),
                          ("watch off (the addon) / no addon", (WATCH_OFF, NO_ADDON))):
        cells = []
        for stat in ("p50", "p99", "mean"):
            r = summary["ratios"][f"{a} / {b} {stat}"]
            cells.append(f"{r['median']:.2f} [{r['min']:.2f} – {r['max']:.2f}]")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Added latency per event, all runs pooled (ms):", "",
              "| configuration | events | p50 | p99 | mean | max | p50 − watch off | p99 − watch off |",
              "|---|---|---|---|---|---|---|---|"]
    off = summary["pooled"][WATCH_OFF]
    for k, st in summary["pooled"].items():
        lines.append(f"| {k} | {st['n']} | {st['p50']:.3f} | {st['p99']:.3f} | {st['mean']:.3f} | {st['max']:.3f} "
                     f"| {st['p50'] - off['p50']:+.3f} | {st['p99'] - off['p99']:+.3f} |")
    lines += ["", "Per run, p99 ms (" + " / ".join(WATCH_CONFIGS) + "): "
              + "; ".join(" / ".join(f"{r['stats'][k]['p99']:.2f}" for k in WATCH_CONFIGS) for r in summary["runs"])
              + ".", "",
              f"The watcher received {meta['watch_records']} records "
              f"({meta['watch_records'] / max(meta['elapsed_s'], 1e-9):.1f}/s over the whole run)."]
    return "\n".join(lines) + "\n"


def replace_docs_section(text: str, body: str) -> str:
    """``text`` with what stands between the watch-bench markers replaced by ``body``."""
    pattern = re.compile(re.escape(DOCS_START) + r".*?" + re.escape(DOCS_END), re.S)
    if not pattern.search(text):
        raise ValueError(f"no {DOCS_START} … {DOCS_END} section to fill")
    return pattern.sub(lambda _: f"{DOCS_START}\n{body}{DOCS_END}", text, count=1)


def watch_bench(args: argparse.Namespace) -> None:
    """Added latency per event with the watch channel off, on and listened, on and unheard, and
    with no addon at all, in the same rounds."""
    if args.runs < 1 or args.streams < 1:
        raise SystemExit("--runs and --streams must be at least 1")
    if args.docs is not None and DOCS_START not in args.docs.read_text():
        raise SystemExit(f"{args.docs}: no {DOCS_START} marker to write the result under")
    tmp = Path(tempfile.mkdtemp(prefix="chatwire-bench-watch-"))
    procs: list[subprocess.Popen] = []
    watcher = None
    try:
        origin_proc, origin = start_origin(tmp)
        procs.append(origin_proc)
        addon = ROOT / "addons" / "chatgpt_capture.py"
        watch_port, deaf_port = free_port(), free_port()
        # The real watcher, in its own process as a user runs it (no terminal: it renders at the end).
        watcher = subprocess.Popen([str(BIN / "analyze"), "watch", "--listen", f"127.0.0.1:{watch_port}"],
                                   stdout=open(tmp / "watcher.out", "w"), stderr=subprocess.STDOUT)
        ports = {}
        for name, script, extra in (
                (NO_ADDON, ROOT / "tests" / "origin" / "stream_only_addon.py", []),
                (WATCH_OFF, addon, ["--set", f"capture_path={tmp / 'off.parquet'}"]),
                (WATCHED, addon, ["--set", f"capture_path={tmp / 'watched.parquet'}",
                                  "--set", f"capture_watch=127.0.0.1:{watch_port}"]),
                (DROPPED, addon, ["--set", f"capture_path={tmp / 'dropped.parquet'}",
                                  "--set", f"capture_watch=127.0.0.1:{deaf_port}"])):
            proc, ports[name] = start_mitmdump(tmp, re.sub(r"\W+", "_", name), script, extra)
            procs.append(proc)
        clients = {k: httpx.Client(proxy=f"http://127.0.0.1:{p}", timeout=60) for k, p in ports.items()}
        for c in clients.values():  # warm-up: connections, CA generation, imports
            stream_once(c, origin, 5, 1)
        load_before = os.getloadavg()[0]
        t0 = time.time()
        runs = []
        for run in range(args.runs):
            results: dict[str, list[float]] = {k: [] for k in WATCH_CONFIGS}
            for i in range(args.streams):
                for k in rotated(WATCH_CONFIGS, run * args.streams + i):
                    results[k] += stream_once(clients[k], origin, args.events, args.gap_ms)
            runs.append(results)
            print(f"run {run + 1}/{args.runs}: p99 " + " / ".join(f"{pct(results[k])['p99']:.2f}"
                                                                   for k in WATCH_CONFIGS) + " ms", file=sys.stderr)
        elapsed = time.time() - t0
        load_after = os.getloadavg()[0]
        for c in clients.values():
            c.close()
        for p in procs[1:]:
            p.send_signal(signal.SIGINT)
            p.wait(timeout=60)
        watcher.send_signal(signal.SIGINT)
        watcher.wait(timeout=30)
        found = re.findall(r"(\d+) records", (tmp / "watcher.out").read_text())
        summary = summarize_watch(runs)
        import mitmproxy.version

        meta = {"command": " ".join([".venv/bin/python bench/capture_latency.py", *sys.argv[1:]]),
                "machine": f"{platform.node()} ({os.cpu_count()} cores, Linux {platform.release()}, "
                           f"Python {platform.python_version()}, mitmproxy {mitmproxy.version.VERSION})",
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_before": load_before,
                "load_after": load_after, "n_runs": args.runs, "streams": args.streams, "events": args.events,
                "gap_ms": args.gap_ms, "elapsed_s": elapsed, "watch_records": int(found[-1]) if found else 0}
        body = watch_markdown(summary, meta)
        print(body)
        if args.docs is not None:
            args.docs.write_text(replace_docs_section(args.docs.read_text(), body))
            print(f"wrote the watch section of {args.docs}", file=sys.stderr)
    finally:
        for p in [*procs, *([watcher] if watcher else [])]:
            if p.poll() is None:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
