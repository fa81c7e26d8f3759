"""A benchmark of `analyze bench`'s load generator itself (figures in docs/benchmarks.md).

A minimal OpenAI-compatible server runs in a process of its own (so it does not share the
generator's GIL) and answers at once, or streams at a fixed gap; it logs, per request, when its
handler had the request and when it wrote the first token. The generator is the real
`analyze bench` command, run as a subprocess on a synthetic capture of one-turn API sessions; its
`bench_requests` rows are joined to the server's log on the response id.

Measured:

1. **rate**: `--schedule constant` at increasing rates against the instant server; schedule lag
   p50/p99 (sent − intended) from the generator, and the highest rate whose lag p99 < 5 ms;
2. **streams**: `--schedule concurrency N` against a server that streams 40 tokens 100 ms apart,
   for increasing N; the peak of streams in flight (by the generator's own times) and the error of
   the inter-chunk gaps against the server's 100 ms;
3. **TTFT error**: for every request, the generator's TTFT minus the server's (first token written −
   request in): what the client adds (loopback trips, parsing), p50/p99.

    .venv/bin/python bench/bench_generator.py [--rates 50,100,200,400] [--streams 100,250,500] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# ---------------------------------------------------------------- the server (own process)


def serve(port: int) -> None:
    from aiohttp import web

    log: list[dict] = []
    n = 0

    async def completions(request: web.Request) -> web.StreamResponse:
        nonlocal n
        received = time.time()
        body = await request.json()
        n += 1
        rid = f"chatcmpl-b{n}"
        # The model name carries the behaviour: "tokens=<n>,gap=<ms>".
        spec = dict(p.split("=") for p in str(body.get("model", "")).split(",") if "=" in p)
        tokens, gap = int(spec.get("tokens", 8)), float(spec.get("gap", 0)) / 1000
        prompt = next((m.get("content") for m in reversed(body.get("messages") or []) if m.get("role") == "user"), None)
        # The ids a peer tool can be joined on: AIPerf's X-Request-ID header, the prompt text.
        entry = {"id": rid, "received_at": received, "first_token_at": None, "token_at": [],
                 "x_request_id": request.headers.get("x-request-id"), "prompt": prompt if isinstance(prompt, str) else None}
        log.append(entry)
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        head = {"id": rid, "object": "chat.completion.chunk", "model": body.get("model")}
        for k in range(tokens):
            if gap and k:
                await asyncio.sleep(gap)
            data = json.dumps({**head, "choices": [{"index": 0, "delta": {"content": f" t{k}"}, "finish_reason": None}]})
            at = time.time()
            if entry["first_token_at"] is None:
                entry["first_token_at"] = at
            entry["token_at"].append(at)
            await resp.write(f"data: {data}\n\n".encode())
        usage = {"prompt_tokens": 3, "completion_tokens": tokens, "total_tokens": tokens + 3}
        tail = json.dumps({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage})
        await resp.write(f"data: {tail}\n\ndata: [DONE]\n\n".encode())
        await resp.write_eof()
        return resp

    async def get_log(request: web.Request) -> web.Response:
        out = list(log)
        log.clear()
        return web.json_response(out)

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "bench"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/log", get_log)
    app.router.add_get("/health", models)  # GuideLLM checks it before a run
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, backlog=4096)


# ---------------------------------------------------------------- the driver


def make_capture(path: Path, n: int) -> None:
    from analyzer.store import CaptureWriter

    t0 = 1_767_225_600.0
    calls = [{"flow_id": f"c{k:06d}", "started_at": t0 + k, "completion_tokens": 8, "response_text": "x",
              "request_json": json.dumps({"model": "m", "messages": [{"role": "user", "content": f"q{k}"}]})}
             for k in range(n)]
    with CaptureWriter(path, source="bench") as writer:
        writer.add({"api_calls": calls})


def fetch_log(port: int) -> dict[str, dict]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/log", timeout=30) as r:
        return {e["id"]: e for e in json.load(r)}


def run_bench(capture: Path, port: int, out: Path, *args: str) -> dict:
    """Run ``analyze bench``; the summary gets ``client_cpu_s``: the CPU time the command used."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    analyze = Path(sys.executable).parent / "analyze"
    cmd = [str(analyze), "bench", str(capture), "--base-url", f"http://127.0.0.1:{port}/v1",
           "--api-key-env", "BENCH_KEY", "-o", str(out), "--format", "json", "--no-progress", *args]
    done = subprocess.run(cmd, env={**os.environ, "BENCH_KEY": "x"}, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"analyze bench failed ({done.returncode}): {done.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = json.loads(done.stdout)
    summary["client_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return summary


def joined(out: Path, log: dict[str, dict]):
    from analyzer.store import load_capture

    cap = load_capture(out)
    req = cap.table("bench_requests")
    ids = cap.table("api_calls").set_index("flow_id")["response_id"]
    req = req.assign(response_id=req["flow_id"].map(ids))
    return req, [(r, log.get(r["response_id"])) for r in req.to_dict("records")]


def run_guidellm(guidellm: str, port: int, rate: float, n: int, tmp: Path, log_port: int) -> dict:
    """GuideLLM at the same constant rate against the same server: its lag (request_start −
    targeted_start), its TTFT, and its TTFT error against the server's log (joined on the response id)."""
    prompts = tmp / "guidellm-prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"q{k}"}) + "\n" for k in range(n)))
    out = tmp / f"guidellm-{rate:g}.json"
    cmd = [guidellm, "run", "--backend", f"kind=openai_http,target=http://127.0.0.1:{port},model=tokens=8",
           "--profile", f"kind=constant,rate={rate:g}", "--data", f"kind=json_file,path={prompts}",
           "--constraint", f"kind=max_requests,count={n}", "--output", f"kind=json,path={out}", "--disable-progress",
           "--disable-console"]
    subprocess.run(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=900,
                   check=True)
    log = fetch_log(log_port)
    reqs = json.loads(out.read_text())["benchmarks"][0]["requests"]["successful"]
    lag = [(r["info"]["timings"]["request_start"] - r["info"]["timings"]["targeted_start"]) * 1000 for r in reqs]
    ttft = [r["time_to_first_token_ms"] for r in reqs if r["time_to_first_token_ms"] is not None]
    err = [r["time_to_first_token_ms"] - (log[r["response_id"]]["first_token_at"] - log[r["response_id"]]["received_at"]) * 1000
           for r in reqs if r.get("response_id") in log and r["time_to_first_token_ms"] is not None]
    return {"n": len(reqs), "lag": lag, "ttft": ttft, "err": err}


def pct(values, q):
    import numpy as np

    return float(np.percentile(values, q)) if len(values) else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="50,100,200,300,400")
    ap.add_argument("--streams", default="100,250,500")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--guidellm", default=None, metavar="PATH",
                    help="GuideLLM's executable (installed in a venv of its own): run it at the same rates")
    ap.add_argument("--only-guidellm", action="store_true", help="skip analyze bench's own runs")
    args = ap.parse_args()
    import socket

    port = args.port
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        for _ in range(100):
            try:
                fetch_log(port)
                break
            except OSError:
                time.sleep(0.1)
        tmp = Path(tempfile.mkdtemp(prefix="bench-generator-"))
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
        if args.guidellm:
            print("\n## GuideLLM at the same rates (instant server, 8 tokens per answer, profile constant)")
            print("| rate /s | requests | lag p50 ms | lag p99 ms | TTFT p50 ms | TTFT p99 ms | TTFT err p50 ms | TTFT err p99 ms |")
            print("|---|---|---|---|---|---|---|---|")
            for rate in [float(r) for r in args.rates.split(",")]:
                g = run_guidellm(args.guidellm, port, rate, int(rate * args.seconds), tmp, port)
                print(f"| {rate:g} | {g['n']} | {pct(g['lag'], 50):.2f} | {pct(g['lag'], 99):.2f} | {pct(g['ttft'], 50):.2f} "
                      f"| {pct(g['ttft'], 99):.2f} | {pct(g['err'], 50):.2f} | {pct(g['err'], 99):.2f} |")
            if args.only_guidellm:
                return
        print("\n## rate (instant server, 8 tokens per answer, --schedule constant)")
        print("| rate /s | requests | lag p50 ms | lag p99 ms | TTFT err p50 ms | TTFT err p99 ms | ok "
              "| client CPU ms/request |")
        print("|---|---|---|---|---|---|---|---|")
        best = None
        cpu_points: list[tuple[int, float]] = []
        for rate in [float(r) for r in args.rates.split(",")]:
            n = int(rate * args.seconds)
            capture = tmp / f"rate-{rate:g}.parquet"
            make_capture(capture, n)
            out = tmp / f"rate-{rate:g}-out.parquet"
            summary = run_bench(capture, port, out, "--schedule", "constant", "--rate", f"{rate:g}",
                                "--model", "tokens=8,gap=0", "--lag-bound", "1e9")
            _, pairs = joined(out, fetch_log(port))
            err = [r["ttft_ms"] - (s["first_token_at"] - s["received_at"]) * 1000 for r, s in pairs
                   if s and r["ttft_ms"] is not None]
            lag = summary["schedule_lag_ms"]
            print(f"| {rate:g} | {n} | {lag['p50']:.2f} | {lag['p99']:.2f} | {pct(err, 50):.2f} | {pct(err, 99):.2f} "
                  f"| {summary['requests']['ok']} | {summary['client_cpu_s'] / n * 1000:.2f} |")
            cpu_points.append((n, summary["client_cpu_s"]))
            if lag["p99"] < 5.0 and summary["requests"]["ok"] == n:
                best = rate
        print(f"\nhighest rate with lag p99 < 5 ms: {best}")
        if len(cpu_points) > 1:
            (n0, c0), (n1, c1) = cpu_points[0], cpu_points[-1]
            print(f"client CPU per request (slope between {n0} and {n1} requests, start-up cancelled out): "
                  f"{(c1 - c0) / (n1 - n0) * 1000:.3f} ms")
        print("\n## streams (40 tokens 100 ms apart, --schedule concurrency N)")
        print("| N | peak in flight | ITL error p50 ms | ITL error p99 ms | TTFT err p99 ms | start lag p99 ms | ok |")
        print("|---|---|---|---|---|---|---|")
        for n in [int(x) for x in args.streams.split(",")]:
            capture = tmp / f"streams-{n}.parquet"
            make_capture(capture, n)
            out = tmp / f"streams-{n}-out.parquet"
            summary = run_bench(capture, port, out, "--schedule", "concurrency", "--concurrency", str(n),
                                "--model", "tokens=40,gap=100", "--lag-bound", "1e9", "--no-max-tokens")
            req, pairs = joined(out, fetch_log(port))
            edges = sorted([(t.timestamp(), 1) for t in req["sent_at"].dropna()]
                           + [(t.timestamp(), -1) for t in req["ended_at"].dropna()], key=lambda e: (e[0], e[1]))
            level = peak = 0
            for _, step in edges:
                level += step
                peak = max(peak, level)
            # Client gap minus the server's own gap between the same two writes.
            from analyzer.store import load_capture

            ev = load_capture(out).table("stream_events")
            ev = ev[ev["text"].notna() & (ev["text"] != "")].sort_values(["flow_id", "seq"])
            by_flow = {fid: list(g["at"].map(lambda t: t.timestamp())) for fid, g in ev.groupby("flow_id")}
            itl_err = []
            for r, s in pairs:
                if not s:
                    continue
                client = by_flow.get(r["flow_id"], [])
                server_t = s["token_at"]
                for k in range(1, min(len(client), len(server_t))):
                    itl_err.append(((client[k] - client[k - 1]) - (server_t[k] - server_t[k - 1])) * 1000)
            err = [r["ttft_ms"] - (s["first_token_at"] - s["received_at"]) * 1000 for r, s in pairs
                   if s and r["ttft_ms"] is not None]
            abs_itl = [abs(e) for e in itl_err]
            print(f"| {n} | {peak} | {pct(abs_itl, 50):.2f} | {pct(abs_itl, 99):.2f} | {pct(err, 99):.2f} "
                  f"| {summary['schedule_lag_ms']['p99']:.2f} | {summary['requests']['ok']} |")
        print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]))
    else:
        main()
