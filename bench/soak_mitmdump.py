"""Soak through a real mitmdump: hundreds of thousands of mixed flows, RSS / descriptors / added latency over time.

A fast local origin (bench/sse_origin.py), two real mitmdump processes — ``mitmdump -s
addons/chatgpt_capture.py`` (the capture addon, writing a real Parquet capture) and ``mitmdump -s
tests/origin/stream_only_addon.py`` (plain mitmdump: only ``stream = True``, the baseline) — and
flood processes with a pool of keep-alive HTTP/1.1 connections sending the mix, in turn: a streamed
conversation answer, an API chat-completions stream, a latency beacon, a Segment batch and a
Statsig post (every request with a bearer token and cookies, so redaction runs on each).

The flood and a probe alternate between the two proxies in short windows (``--window-s`` through
the addon, ``--baseline-window-s`` through the baseline), so both see the same load and the same
machine noise within each minute. The probe streams conversation
answers whose every event carries the origin's send time: added latency per event = its arrival at
the client − the origin's send time (one clock). Every ``--sample-every`` seconds, and at the end of
every window, the RSS (/proc/PID/status) and open descriptors (/proc/PID/fd) of both mitmdumps are
read. The slopes use the samples at the end of the baseline's windows, when the addon's mitmdump
has been idle for a window: a leak stays, the flood's live connections are gone.

Flat means the least-squares slope over the run (after the first ``--warmup`` share) projects less
than the stated bound from start to end: RSS growth against flows, descriptor growth against flows,
and the change of the per-minute added latency (addon − baseline, p50 and p99) from the first
minute to the last. A verdict is printed; the summary goes to ``--out`` (JSON) and, with
``--docs docs/benchmarks.md``, the "## Soak through mitmdump" section is rewritten.

    .venv/bin/python bench/soak_mitmdump.py [--flows 500000] [--docs docs/benchmarks.md]
    .venv/bin/python bench/soak_mitmdump.py --flows 5000 --window-s 5 --baseline-window-s 5 --minute-s 10
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing as mp
import os
import shlex
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
from _common import (  # noqa: E402
    BASELINE_ADDON,
    BEACON,
    CAPTURE_ADDON,
    CHAT_STREAM,
    CONVERSATION,
    ROOT,
    SEGMENT,
    STATSIG,
    STREAM_EVENTS,
    cpu_seconds,
    fd_count,
    machine,
    replace_docs_section,
    rss_mib,
    start_mitmdump,
    start_origin,
    stream_once,
)

DOCS_HEADING = "Soak through mitmdump"
PROXIES = ("addon", "baseline")

# One cycle of the flood: (path, body, accept).
CYCLE = [
    (f"/backend-api/f/conversation?n={STREAM_EVENTS}&gap_ms=0", CONVERSATION, "text/event-stream"),
    (f"/v1/chat/completions?n={STREAM_EVENTS}", CHAT_STREAM, "text/event-stream"),
    ("/backend-api/lat/r", BEACON, "application/json"),
    ("/ces/v1/b", SEGMENT, "application/json"),
    ("/v1/rgstr?k=client-key", STATSIG, "application/json"),
]


async def _connection(ports: tuple[int, int], origin: int, active, counts, stop, quota: int,
                      interval: float) -> None:
    """One keep-alive HTTP/1.1 connection through whichever proxy is ``active``, the flows of ``CYCLE``
    in turn, on a bare asyncio stream: cheap enough that the flood measures the proxy, not the client.
    ``interval`` > 0: at most one flow per that many seconds."""
    host = f"127.0.0.1:{origin}".encode()
    reader = writer = None
    current = -1
    next_at = time.monotonic()
    while not stop.is_set():
        for path, body, accept in CYCLE:
            if interval:
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            target = active.value
            try:
                if writer is not None and target != current:  # the window moved on: reconnect
                    writer.close()
                    reader = writer = None
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", ports[target])
                    current = target
                writer.write(b"POST http://%s%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                             b"Accept: %s\r\nAuthorization: Bearer soak-not-a-secret\r\nCookie: a=b; c=d\r\n"
                             b"Content-Length: %d\r\n\r\n%s"
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
            with counts.get_lock():
                counts[current] += 1
                done = counts[0] >= quota
            if done:
                stop.set()
            if stop.is_set():
                break
    if writer is not None:
        writer.close()


def flood_worker(ports: tuple[int, int], origin: int, active, counts, stop, quota: int, connections: int,
                 interval: float) -> None:
    """``connections`` concurrent connections until ``stop`` is set or the addon has had ``quota`` flows."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    async def run() -> None:
        await asyncio.gather(*(_connection(ports, origin, active, counts, stop, quota, interval)
                               for _ in range(connections)))

    asyncio.run(run())


def _count_parts(directory: Path) -> int:
    """Published part files of one table (the writer adds one per flush that had rows)."""
    try:
        return sum(1 for e in os.scandir(directory) if e.name.endswith(".parquet") and not e.name.startswith("."))
    except OSError:
        return 0


def _cost(samples: list[dict], lo: float, hi: float) -> dict:
    """The addon's mitmdump between two times: CPU ms per flow through it (all threads, and the
    event loop's alone), flows per second while it was the active proxy, and the plain mitmdump's CPU
    ms per flow beside it (the same machine's speed: a host that slows both moves both)."""
    inside = [s for s in samples if lo <= s["t"] <= hi and "cpu_addon" in s]  # older runs did not sample CPU
    if len(inside) < 2:
        return {}
    a, b = inside[0], inside[-1]
    flows = b["flows_addon"] - a["flows_addon"]
    # A sample notes the proxy active when it was taken: the one of the interval it ends.
    active = sum(y["t"] - x["t"] for x, y in itertools.pairwise(inside) if y.get("active") == "addon")
    if flows <= 0:
        return {"parts": b.get("parts")}
    base_flows = b.get("flows_baseline", 0) - a.get("flows_baseline", 0)
    base_cpu = (b["cpu_baseline"] - a["cpu_baseline"]) * 1000 / base_flows \
        if base_flows > 0 and "cpu_baseline" in a else float("nan")
    return {"cpu_ms_per_flow": (b["cpu_addon"] - a["cpu_addon"]) * 1000 / flows,
            "main_ms_per_flow": (b["cpu_addon_main"] - a["cpu_addon_main"]) * 1000 / flows,
            "flows_per_s": flows / active if active else float("nan"), "parts": b.get("parts"),
            "baseline_cpu_ms_per_flow": base_cpu}


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def projected_change(x: list[float], y: list[float]) -> float:
    """Least-squares slope of y on x times the span of x: how much y grew from the first x to the last."""
    return projected_change_ci(x, y)[0]


def projected_change_ci(x: list[float], y: list[float]) -> tuple[float, float, float]:
    """:func:`projected_change` and its 95% confidence interval (the slope's standard error from the
    residuals, normal quantile): how far the noise of the points lets the change be from the estimate."""
    if len(x) < 2 or max(x) == min(x):
        return 0.0, 0.0, 0.0
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    slope, intercept = np.polyfit(xa, ya, 1)
    span = float(xa.max() - xa.min())
    if len(xa) < 3:
        return float(slope * span), float("nan"), float("nan")
    residual = ya - (slope * xa + intercept)
    se = float(np.sqrt(residual @ residual / (len(xa) - 2) / ((xa - xa.mean()) @ (xa - xa.mean()))))
    return float(slope * span), float((slope - 1.96 * se) * span), float((slope + 1.96 * se) * span)


def summarise(records: list[dict], samples: list[dict], args: argparse.Namespace, run_s: float) -> dict:
    """Per-minute rows and the flatness verdict from the probe records and the /proc samples."""
    minutes = []
    for m in range(int(run_s // args.minute_s) + 1):
        lo, hi = m * args.minute_s, (m + 1) * args.minute_s
        lat = {p: [r["lat_ms"] for r in records if r["proxy"] == p and lo <= r["t"] < hi] for p in PROXIES}
        inside = [s for s in samples if s["t"] < hi and s.get("addon_idle")] or [s for s in samples if s["t"] < hi]
        if not inside or not lat["addon"] or not lat["baseline"]:
            continue
        last = inside[-1]
        row = {"minute": m + 1, "t_mid": (lo + min(hi, run_s)) / 2, "full": hi <= run_s,
               "flows": last["flows_addon"], "rss_mib": last["rss_addon"], "fds": last["fds_addon"],
               "baseline_rss_mib": last["rss_baseline"], "baseline_fds": last["fds_baseline"]}
        for p in PROXIES:
            row[f"{p}_p50"], row[f"{p}_p99"], row[f"{p}_n"] = _p(lat[p], 50), _p(lat[p], 99), len(lat[p])
        row["added_p50"] = row["addon_p50"] - row["baseline_p50"]
        row["added_p99"] = row["addon_p99"] - row["baseline_p99"]
        row.update(_cost(samples, lo, hi))
        minutes.append(row)
    every = {p: [r["lat_ms"] for r in records if r["proxy"] == p] for p in PROXIES}
    whole = {p: {"p50": _p(v, 50), "p99": _p(v, 99), "n": len(v)} for p, v in every.items()}
    return flatness(minutes, samples, args, run_s) | {"whole_run": whole}


def flatness(minutes: list[dict], samples: list[dict], args: argparse.Namespace, run_s: float) -> dict:
    """The slopes and the verdict from the per-minute rows and the /proc samples (``--from-json``
    runs this again on a saved summary)."""
    warm_t = args.warmup * run_s
    idle = [s for s in samples if s.get("addon_idle")]  # at the end of a baseline window
    steady = [s for s in idle if s["t"] >= warm_t]
    if len(steady) < 2:
        steady = [s for s in samples if s["t"] >= warm_t] or samples
    steady_min = [r for r in minutes if r["t_mid"] >= warm_t and r["full"]] or minutes
    rss0 = steady[0]["rss_addon"]
    flows = [s["flows_addon"] for s in steady]
    checks = {
        "rss": {"change": projected_change(flows, [s["rss_addon"] for s in steady]),
                "bound": args.max_rss_growth_pct / 100 * rss0, "unit": "MiB",
                "baseline_change": projected_change([s["flows_baseline"] for s in steady],
                                                    [s["rss_baseline"] for s in steady])},
        "fds": {"change": projected_change(flows, [s["fds_addon"] for s in steady]),
                "bound": float(args.max_fd_growth), "unit": "descriptors",
                "baseline_change": projected_change([s["flows_baseline"] for s in steady],
                                                    [s["fds_baseline"] for s in steady])},
        "added_p50": {"change": projected_change([r["t_mid"] for r in steady_min],
                                                 [r["added_p50"] for r in steady_min]),
                      "bound": args.max_added_p50_growth_ms, "unit": "ms"},
        "added_p99": {"change": projected_change([r["t_mid"] for r in steady_min],
                                                 [r["added_p99"] for r in steady_min]),
                      "bound": args.max_added_p99_growth_ms, "unit": "ms"},
    }
    series = {"rss": (flows, [s["rss_addon"] for s in steady]), "fds": (flows, [s["fds_addon"] for s in steady]),
              "added_p50": ([r["t_mid"] for r in steady_min], [r["added_p50"] for r in steady_min]),
              "added_p99": ([r["t_mid"] for r in steady_min], [r["added_p99"] for r in steady_min])}
    for name, check in checks.items():
        check["flat"] = bool(check["change"] <= check["bound"])
        check["ci95"] = list(projected_change_ci(*series[name])[1:])
    # The addon's CPU per flow relative to plain mitmdump's in the same minute: the host's speed
    # (another tenant, CPU steal) moves both; a cost that grows with the capture moves only the addon's.
    costed = [r for r in steady_min if np.isfinite(r.get("baseline_cpu_ms_per_flow", float("nan")))
              and r.get("baseline_cpu_ms_per_flow", 0) > 0 and "cpu_ms_per_flow" in r]
    cost = None
    if len(costed) >= 3:
        ratio = [r["cpu_ms_per_flow"] / r["baseline_cpu_ms_per_flow"] for r in costed]
        change, lo, hi = projected_change_ci([r["t_mid"] for r in costed], ratio)
        cost = {"first": float(np.mean(ratio[:10])), "last": float(np.mean(ratio[-10:])), "change": change,
                "ci95": [lo, hi], "mean": float(np.mean(ratio)), "minutes": len(costed),
                "addon_cpu_first": float(np.mean([r["cpu_ms_per_flow"] for r in costed[:10]])),
                "addon_cpu_last": float(np.mean([r["cpu_ms_per_flow"] for r in costed[-10:]]))}
    return {"minutes": minutes, "checks": checks, "flat": all(c["flat"] for c in checks.values()),
            "steady_from_s": warm_t, "rss_at_steady_start_mib": rss0, "cost": cost}


def markdown(summary: dict) -> str:
    """The docs/benchmarks.md section for a summary."""
    run, checks, rows = summary["run"], summary["checks"], summary["minutes"]
    shown = rows if len(rows) <= 12 else rows[:3] + rows[9:len(rows) - 3:10] + rows[-3:]
    lines = [
        "`bench/soak_mitmdump.py` sends the soak's mix through real `mitmdump` processes: a fast local",
        "origin (bench/sse_origin.py), `mitmdump -s addons/chatgpt_capture.py` writing a real capture,",
        "and plain mitmdump (`tests/origin/stream_only_addon.py`, only `stream = True`) as the same-run",
        "baseline. Flood processes keep a pool of keep-alive connections sending, in turn, a streamed",
        "conversation answer and an API chat-completions stream (10 events each, back to back), a latency",
        "beacon, a Segment batch and a Statsig post, each with a bearer token and cookies. Flood and probe",
        f"alternate between the two proxies in windows ({run['window_s']:g} s through the addon, "
        f"{run['baseline_window_s']:g} s through the baseline), so each minute has both under",
        "the same load. Added latency per event = its arrival at the client − the origin's send time",
        "(carried in the event), on probe streams of "
        f"{run['probe_events']} events {run['probe_gap_ms']:g} ms apart; RSS and open descriptors of both",
        f"mitmdumps read from /proc every {run['sample_every_s']:g} s and at each window's end; the table's",
        "RSS and fds, and the slopes, are those at the end of the baseline's windows (the addon idle).",
        "The addon's cost per minute: CPU time (/proc/PID/stat, all threads; in brackets its event loop's",
        "thread alone) per flow sent through it, its flows per second while it was the active proxy, and",
        "the `stream_events` part files published so far (one per flush with rows).",
        "",
        f"Command: `{run['command']}`",
        f"Machine: {run['machine']}, {run['date']}.",
        "",
        f"Result: {run['flows_addon']:,} flows through the addon in {run['addon_active_s']:.0f} s of its windows "
        f"({run['addon_flows_per_s']:,.0f} flows/s; {run['flows_baseline']:,} through the baseline at "
        f"{run['baseline_flows_per_s']:,.0f} flows/s in its windows; "
        f"{run['run_s']:.0f} s in all; flood {run['workers']} processes × {run['connections']} connections, "
        + (f"capped at {run['rate_cap']:g} flows/s" if run["rate_cap"] else "as fast as each proxy takes it")
        + f"). Capture: {run['flows_rows']:,} `flows` rows for {run['flows_sent_to_addon']:,} flows sent to the "
        f"addon (rows per table: {', '.join(f'{k} {v:,}' for k, v in run['rows'].items())}); "
        f"clean stop {run['stop_s']:.1f} s.",
        "",
        "| minute | flows | RSS MiB | fds | addon p50 ms | addon p99 ms | baseline p50 ms | baseline p99 ms "
        "| added p50 ms | added p99 ms | CPU ms/flow: addon (its event loop) / baseline | addon flows/s | parts |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in shown:
        cost = (f"{r['cpu_ms_per_flow']:.2f} ({r['main_ms_per_flow']:.2f}) / "
                f"{r.get('baseline_cpu_ms_per_flow', float('nan')):.2f} | {r['flows_per_s']:.0f}"
                if "cpu_ms_per_flow" in r else "– | –")
        lines.append(f"| {r['minute']} | {r['flows']:,} | {r['rss_mib']:.0f} | {r['fds']} | {r['addon_p50']:.2f} | "
                     f"{r['addon_p99']:.2f} | {r['baseline_p50']:.2f} | {r['baseline_p99']:.2f} | "
                     f"{r['added_p50']:+.2f} | {r['added_p99']:+.2f} | {cost} | {r.get('parts') or 0:,} |")
    if len(shown) < len(rows):
        lines.append(f"\n({len(rows)} windows of {run['minute_s']:g} s; every tenth is shown between the first "
                     "and the last three.)")
    lines += ["", f"Flat (least-squares slope from {summary['steady_from_s']:.0f} s to the end, projected over the run):"]
    lines += [f"- {name}: {c['change']:+.2f} {c['unit']}"
              + (f" (95% interval {c['ci95'][0]:+.2f} to {c['ci95'][1]:+.2f})" if c.get("ci95") else "")
              + f", bound {c['bound']:.2f} — {'flat' if c['flat'] else 'NOT flat'}"
              for name, c in checks.items()]
    lines += ["", f"Verdict: **{'flat' if summary['flat'] else 'not flat'}**."]
    cost = summary.get("cost")
    if cost:
        lines += ["", f"The addon's cost per flow against plain mitmdump's in the same minute (CPU ms per flow, addon "
                  f"÷ baseline; not part of the verdict): {cost['first']:.2f}× in the first ten steady minutes, "
                  f"{cost['last']:.2f}× in the last ten (the addon's own {cost['addon_cpu_first']:.2f} → "
                  f"{cost['addon_cpu_last']:.2f} ms); projected change {cost['change']:+.2f} (95% interval "
                  f"{cost['ci95'][0]:+.2f} to {cost['ci95'][1]:+.2f}) over {cost['minutes']} minutes."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=500_000, help="flows to send through the addon's mitmdump")
    ap.add_argument("--workers", type=int, default=2, help="flood processes")
    ap.add_argument("--connections", type=int, default=8, help="keep-alive connections per flood process")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="flows per second in all (0: as fast as the proxy takes them)")
    ap.add_argument("--window-s", type=float, default=30.0, help="seconds of each window through the addon")
    ap.add_argument("--baseline-window-s", type=float, default=10.0,
                    help="seconds of each window through the baseline")
    ap.add_argument("--minute-s", type=float, default=60.0, help="length of a reporting window")
    ap.add_argument("--sample-every", type=float, default=5.0, help="seconds between RSS/fd samples")
    ap.add_argument("--probe-events", type=int, default=20, help="events per probe stream")
    ap.add_argument("--probe-gap-ms", type=float, default=5.0, help="origin's gap between probe events")
    ap.add_argument("--warmup", type=float, default=0.1, help="share of the run left out of the slopes")
    ap.add_argument("--max-rss-growth-pct", type=float, default=10.0)
    ap.add_argument("--max-fd-growth", type=int, default=5)
    ap.add_argument("--max-added-p50-growth-ms", type=float, default=1.0)
    ap.add_argument("--max-added-p99-growth-ms", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "soak_mitmdump.json", help="summary JSON")
    ap.add_argument("--docs", type=Path, help=f"rewrite this Markdown file's '## {DOCS_HEADING}' section")
    ap.add_argument("--from-json", type=Path, help="no run: the verdict and the section again from a saved --out")
    args = ap.parse_args()
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        step = saved["run"]["minute_s"]
        for row in saved["minutes"]:  # the cost columns again from the samples (a run may predate some)
            row.update(_cost(saved["samples"], (row["minute"] - 1) * step, row["minute"] * step))
        saved.update(flatness(saved["minutes"], saved["samples"], args, saved["run"]["run_s"]))
        for name, c in saved["checks"].items():
            print(f"{name}: projected change {c['change']:+.3f} {c['unit']} (95% interval {c['ci95'][0]:+.3f} to "
                  f"{c['ci95'][1]:+.3f}; bound {c['bound']:.3f}): {'flat' if c['flat'] else 'NOT FLAT'}")
        if args.docs:
            replace_docs_section(args.docs, DOCS_HEADING, markdown(saved))
            print(f"rewrote '## {DOCS_HEADING}' in {args.docs}")
        return

    sys.path.insert(0, str(ROOT))
    from analyzer.store import load_capture
    from analyzer.store.files import make_dirs, write_file_atomic

    tmp = Path(tempfile.mkdtemp(prefix="chatwire-soak-mitmdump-"))
    procs: list[subprocess.Popen] = []
    try:
        origin_proc, origin = start_origin(tmp)
        capture = tmp / "soak.parquet"
        addon, addon_port = start_mitmdump(tmp, "addon", CAPTURE_ADDON, ["--set", f"capture_path={capture}"])
        base, base_port = start_mitmdump(tmp, "baseline", BASELINE_ADDON, [])
        procs += [origin_proc, addon, base]
        pids = {"addon": addon.pid, "baseline": base.pid}
        ports = (addon_port, base_port)
        probes = {p: httpx.Client(proxy=f"http://127.0.0.1:{port}", timeout=60) for p, port in zip(PROXIES, ports, strict=True)}
        for client in probes.values():  # warm-up: connections, imports, the writer's first parts
            stream_once(client, origin, 5, 1)
        probe_flows = {"addon": 1, "baseline": 1}

        active = mp.Value("i", 0)          # index into PROXIES: which one flood and probe use now
        counts = mp.Array("q", 2)          # flood flows through each
        stop = mp.Event()
        records: list[dict] = []           # {"t", "proxy", "lat_ms"}
        samples: list[dict] = []
        active_s = [0.0, 0.0]
        t0 = time.time()

        def sample(addon_idle: bool = False) -> None:
            row = {"t": time.time() - t0, "active": PROXIES[active.value], "addon_idle": addon_idle,
                   "flows_addon": counts[0], "flows_baseline": counts[1]}
            for p, pid in pids.items():
                row[f"rss_{p}"], row[f"fds_{p}"] = rss_mib(pid), fd_count(pid)
                row[f"cpu_{p}"] = cpu_seconds(pid)
            row["cpu_addon_main"] = cpu_seconds(pids["addon"], pids["addon"])  # the event loop's thread
            row["parts"] = _count_parts(capture / "stream_events")
            samples.append(row)

        def probe_loop(done: threading.Event) -> None:
            while not done.is_set():
                name = PROXIES[active.value]
                try:
                    lats = stream_once(probes[name], origin, args.probe_events, args.probe_gap_ms)
                except httpx.HTTPError:
                    continue
                probe_flows[name] += 1
                if PROXIES[active.value] == name:  # a probe that straddled a switch is left out
                    now = time.time() - t0
                    records.extend({"t": now, "proxy": name, "lat_ms": x} for x in lats)
                done.wait(0.02)

        def sample_loop(done: threading.Event) -> None:
            while not done.wait(args.sample_every):
                sample()

        sample()
        done = threading.Event()
        threads = [threading.Thread(target=f, args=(done,), daemon=True) for f in (probe_loop, sample_loop)]
        for thread in threads:
            thread.start()
        interval = args.workers * args.connections / args.rate if args.rate > 0 else 0.0
        workers = [mp.Process(target=flood_worker, args=(ports, origin, active, counts, stop, args.flows,
                                                           args.connections, interval)) for _ in range(args.workers)]
        for worker in workers:
            worker.start()
        last_report = time.time()
        while not stop.is_set():
            started = time.time()
            stop.wait(args.window_s if active.value == 0 else args.baseline_window_s)
            active_s[active.value] += time.time() - started
            sample(addon_idle=active.value == 1)
            active.value = 1 - active.value
            if time.time() - last_report > 60:
                last_report = time.time()
                now = time.time() - t0
                cost = _cost(samples, now - 60, now)
                print(f"[{now:7.0f} s] {counts[0]:,} flows through the addon, {counts[1]:,} through the baseline; "
                      f"last minute: {cost.get('cpu_ms_per_flow', float('nan')):.2f} CPU ms/flow "
                      f"({cost.get('main_ms_per_flow', float('nan')):.2f} event loop), "
                      f"{cost.get('flows_per_s', float('nan')):.0f} flows/s, {cost.get('parts') or 0:,} parts",
                      file=sys.stderr, flush=True)
        for worker in workers:
            worker.join(60)
        run_s = time.time() - t0
        sample()
        done.set()
        for thread in threads:
            thread.join(60)
        for client in probes.values():
            client.close()

        stop_t = time.time()
        addon.send_signal(signal.SIGINT)
        addon.wait(timeout=3600)
        stop_s = time.time() - stop_t
        base.send_signal(signal.SIGINT)
        base.wait(timeout=60)

        cap = load_capture(capture)
        rows = {k: v for k, v in cap.counts().items() if v}
        sent = counts[0] + probe_flows["addon"]
        summary = summarise(records, samples, args, run_s)
        summary["run"] = {
            "command": "python bench/soak_mitmdump.py " + shlex.join(sys.argv[1:]),
            "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t0)),
            "flows_addon": counts[0], "flows_baseline": counts[1], "probe_flows": probe_flows,
            "flows_rows": rows.get("flows", 0), "flows_sent_to_addon": sent, "rows": rows,
            "run_s": run_s, "addon_active_s": active_s[0], "addon_flows_per_s": counts[0] / max(active_s[0], 1e-9),
            "baseline_flows_per_s": counts[1] / max(active_s[1], 1e-9), "rate_cap": args.rate or None,
            "workers": args.workers, "connections": args.connections,
            "all_flows_per_s": (counts[0] + counts[1]) / run_s, "stop_s": stop_s,
            "window_s": args.window_s, "baseline_window_s": args.baseline_window_s, "minute_s": args.minute_s, "sample_every_s": args.sample_every,
            "probe_events": args.probe_events, "probe_gap_ms": args.probe_gap_ms,
        }
        summary["samples"] = samples
        make_dirs(args.out.parent)
        write_file_atomic(args.out, json.dumps(summary, indent=1).encode())

        run = summary["run"]
        print(f"# soak through mitmdump: {run['machine']}, {run['date']}")
        print(f"{run['flows_addon']:,} flows through the addon ({run['addon_flows_per_s']:,.0f} flows/s in its "
              f"windows), {run['flows_baseline']:,} through the baseline ({run['baseline_flows_per_s']:,.0f} flows/s "
              f"in its windows), {run_s:.0f} s; clean stop {stop_s:.1f} s")
        print(f"capture: {rows.get('flows', 0):,} flows rows for {sent:,} flows sent to the addon; {rows}")
        print("\n| minute | flows | RSS MiB | fds | addon p50/p99 ms | baseline p50/p99 ms | added p50/p99 ms "
              "| CPU ms/flow (loop) | flows/s | parts |")
        for r in summary["minutes"]:
            print(f"| {r['minute']} | {r['flows']:,} | {r['rss_mib']:.0f} | {r['fds']} | {r['addon_p50']:.2f} / "
                  f"{r['addon_p99']:.2f} | {r['baseline_p50']:.2f} / {r['baseline_p99']:.2f} | "
                  f"{r['added_p50']:+.2f} / {r['added_p99']:+.2f} | {r.get('cpu_ms_per_flow', float('nan')):.2f} "
                  f"({r.get('main_ms_per_flow', float('nan')):.2f}) | {r.get('flows_per_s', float('nan')):.0f} | "
                  f"{r.get('parts') or 0:,} |")
        print()
        for name, c in summary["checks"].items():
            print(f"{name}: projected change {c['change']:+.3f} {c['unit']} (bound {c['bound']:.3f}): "
                  f"{'flat' if c['flat'] else 'NOT FLAT'}")
        verdict = "FLAT" if summary["flat"] else "NOT FLAT"
        if rows.get("flows", 0) < sent:
            verdict += f" (but {sent - rows.get('flows', 0):,} flows have no row)"
        print(f"\nverdict: {verdict}; summary in {args.out}")
        if args.docs:
            replace_docs_section(args.docs, DOCS_HEADING, markdown(summary))
            print(f"rewrote '## {DOCS_HEADING}' in {args.docs}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
