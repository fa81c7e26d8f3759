"""`analyze bench` against a real serving engine on CPU: llama.cpp's OpenAI-compatible server.

A benchmark, not a CI test. It

1. installs `llama-cpp-python[server]` (which compiles llama.cpp: 30-60 min on 2 cores, so nice'd
   and one compile job at a time) and `gguf` into a venv of its own, cached in
   `~/.cache/chatwire-bench/llama-cpp-python` and reused;
2. writes a tiny LLaMA-architecture model with the `gguf` package: random weights, a few layers of
   small width, a byte-level SentencePiece vocabulary (`<unk>`, `<s>`, `</s>` and the 256 byte
   tokens `<0x00>`..`<0xFF>`), with the output rows of everything but printable ASCII set to zero so
   the random model writes readable ASCII and almost never ends early;
3. starts `python -m llama_cpp.server` on it (loopback, one port) and runs the real `analyze bench`
   against it with a captured workload (default: `captures/sample.parquet`) at a few concurrencies;
4. writes the summaries as JSON and, with `--docs docs/benchmarks.md`, a section.

    .venv/bin/python bench/llama_cpp_target.py --concurrency 1,2,4 -o /tmp/llama.json --docs docs/benchmarks.md

Nothing is downloaded at run time: the model is written here, the engine comes from PyPI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path.home() / ".cache" / "chatwire-bench" / "llama-cpp-python"
REQUIREMENT = "llama-cpp-python[server]"
DOCS_START, DOCS_END = "<!-- llama_cpp_target:start -->", "<!-- llama_cpp_target:end -->"

# The model: small enough to answer fast on one core, a real transformer all the same.
DIMS = {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_head_kv": 2, "n_ff": 128, "n_ctx": 4096}


# ---------------------------------------------------------------- the model (runs in the engine's venv)


def write_model(path: Path, seed: int = 0) -> None:
    """A random tiny LLaMA in GGUF, with a byte-level SentencePiece vocabulary."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    d = DIMS
    head_dim = d["n_embd"] // d["n_head"]
    kv_dim = head_dim * d["n_head_kv"]
    tokens = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{b:02X}>".encode() for b in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * 256
    n_vocab = len(tokens)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("chatwire-tiny-random-llama")
    w.add_context_length(d["n_ctx"])
    w.add_embedding_length(d["n_embd"])
    w.add_block_count(d["n_layer"])
    w.add_feed_forward_length(d["n_ff"])
    w.add_head_count(d["n_head"])
    w.add_head_count_kv(d["n_head_kv"])
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * n_vocab)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}<|assistant|>\n")

    def mat(rows: int, cols: int, scale: float | None = None) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * (scale or cols ** -0.5)).astype(np.float32)

    ones = np.ones(d["n_embd"], dtype=np.float32)
    w.add_tensor("token_embd.weight", mat(n_vocab, d["n_embd"], 1.0))
    for i in range(d["n_layer"]):
        w.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        w.add_tensor(f"blk.{i}.attn_q.weight", mat(d["n_embd"], d["n_embd"]))
        w.add_tensor(f"blk.{i}.attn_k.weight", mat(kv_dim, d["n_embd"]))
        w.add_tensor(f"blk.{i}.attn_v.weight", mat(kv_dim, d["n_embd"]))
        w.add_tensor(f"blk.{i}.attn_output.weight", mat(d["n_embd"], d["n_embd"]))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", ones)
        w.add_tensor(f"blk.{i}.ffn_gate.weight", mat(d["n_ff"], d["n_embd"]))
        w.add_tensor(f"blk.{i}.ffn_up.weight", mat(d["n_ff"], d["n_embd"]))
        w.add_tensor(f"blk.{i}.ffn_down.weight", mat(d["n_embd"], d["n_ff"]))
    w.add_tensor("output_norm.weight", ones)
    out = mat(n_vocab, d["n_embd"], 0.5)
    printable = np.zeros(n_vocab, dtype=bool)
    printable[3 + 0x20:3 + 0x7F] = True  # byte tokens of printable ASCII
    out[~printable] = 0.0  # their logit stays 0 while the ASCII ones spread to ±several: EOS is rare
    w.add_tensor("output.weight", out)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---------------------------------------------------------------- the engine


def install(python: str) -> Path:
    """The engine's venv (built once; llama.cpp compiles in the background of everything else)."""
    py = VENV / "bin" / "python"
    ok = py.exists() and subprocess.run([str(py), "-c", "import llama_cpp.server, gguf"],
                                        capture_output=True).returncode == 0
    if not ok:
        print(f"installing {REQUIREMENT} and gguf into {VENV} (compiles llama.cpp: long, once)", flush=True)
        if not py.exists():
            subprocess.run([python, "-m", "venv", str(VENV)], check=True)
        env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": "1",
               "CMAKE_ARGS": "-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"}
        subprocess.run(["nice", "-n", "19", str(VENV / "bin" / "pip"), "install", "-q", REQUIREMENT, "gguf"],
                       env=env, check=True)
    return py


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(py: Path, model: Path, port: int, threads: int, log: Path) -> subprocess.Popen:
    cmd = [str(py), "-m", "llama_cpp.server", "--model", str(model), "--model_alias", "tiny-llama",
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(DIMS["n_ctx"]), "--n_threads", str(threads),
           "--n_batch", "512",
           # Its default cuts the stream in progress when another request comes in: with concurrency > 1
           # every overlapped answer would be a cut stream. Queue them instead, as a serving engine does.
           "--interrupt_requests", "False"]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"llama_cpp.server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit(f"llama_cpp.server did not answer within 120 s:\n{log.read_text()[-3000:]}")


def run_bench(capture: Path, port: int, out: Path, concurrency: int, extra: list[str]) -> dict:
    analyze = Path(sys.executable).parent / "analyze"
    cmd = [str(analyze), "bench", str(capture), "--base-url", f"http://127.0.0.1:{port}/v1", "--api-key-env",
           "BENCH_KEY", "-o", str(out), "--model", "tiny-llama", "--schedule", "concurrency",
           "--concurrency", str(concurrency), "--format", "json", "--no-progress", *extra]
    t0 = time.time()
    done = subprocess.run(cmd, env={**os.environ, "BENCH_KEY": "x"}, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"analyze bench failed ({done.returncode}): {done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    summary["wall_s"] = time.time() - t0
    return summary


def render_docs(result: dict) -> str:
    m = result["machine"]

    def f(v, d=1):
        return "-" if v is None else f"{v:.{d}f}"

    lines = [DOCS_START, "", "### A real engine on CPU: llama.cpp's server (`bench/llama_cpp_target.py`)", "",
             f"Machine: {m['cores']} cores, {m['platform']}; load average {m['load_start']:.1f} at the start, "
             f"{m['load_end']:.1f} at the end. Date: {result['date']}. llama-cpp-python {result['engine_version']}, "
             f"{result['threads']} thread(s). Model: a random LLaMA written with `gguf` "
             f"({', '.join(f'{k} {v}' for k, v in DIMS.items())}, byte-level vocabulary of 259 tokens, F32). "
             f"Workload: `{result['capture']}` × {result['clone']} clones ({result['requests_per_run']} requests), "
             "`--schedule concurrency`, "
             "answer lengths held with `max_tokens`.",
             f"Command: `{result['command']}`. The server runs with `--interrupt_requests False` (its default "
             "cuts the answer in progress when another request arrives: every overlapped stream would be cut); "
             "llama-cpp-python serves one request at a time, so TTFT past concurrency 1 is queue time. The figures "
             "are llama.cpp's on this CPU with a toy model: what `analyze bench` sees of a real queueing engine, "
             "not a model's speed.", "",
             "| concurrency | ok | req/s | output tok/s | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | E2E p50 ms "
             "| lag p99 ms | degraded |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["runs"]:
        s = row["summary"]
        tp = s["throughput"]
        lines.append(f"| {row['concurrency']} | {s['requests']['ok']}/{s['requests']['total']} "
                     f"| {f(tp['requests_per_s'], 2)} | {f(tp['output_tokens_per_s'])} | {f(s['ttft_ms']['p50'])} "
                     f"| {f(s['ttft_ms']['p99'])} | {f(s['tpot_ms']['p50'], 2)} | {f(s['e2e_ms']['p50'])} "
                     f"| {f(s['schedule_lag_ms']['p99'], 2)} | {s['degraded']} |")
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
    ap.add_argument("--capture", type=Path, default=ROOT / "captures" / "sample.parquet")
    ap.add_argument("--concurrency", default="1,2,4")
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads")
    ap.add_argument("--clone", type=int, default=10, help="copies of each captured session (more requests per run)")
    ap.add_argument("--python", default=shutil.which("python3") or sys.executable,
                    help="interpreter for the engine's venv (created once)")
    ap.add_argument("--engine-python", default=None, metavar="PATH",
                    help="an interpreter that already has llama_cpp.server and gguf (skips the install)")
    ap.add_argument("--bench-arg", action="append", default=[], help="extra argument for analyze bench")
    ap.add_argument("-o", "--output", type=Path, default=None)
    ap.add_argument("--docs", type=Path, default=None)
    args = ap.parse_args()
    py = Path(args.engine_python) if args.engine_python else install(args.python)
    tmp = Path(tempfile.mkdtemp(prefix="llama-target-"))
    model = tmp / "tiny-llama.gguf"
    subprocess.run([str(py), __file__, "--write-model", str(model)], check=True)
    port = free_port()
    version = subprocess.run([str(py), "-c", "import llama_cpp; print(llama_cpp.__version__)"],
                             capture_output=True, text=True).stdout.strip()
    result = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "command": " ".join(["bench/llama_cpp_target.py", *sys.argv[1:]]),
              "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "load_start": os.getloadavg()[0]},
              "engine_version": version, "threads": args.threads, "clone": args.clone, "capture": str(args.capture.relative_to(ROOT))
              if args.capture.is_relative_to(ROOT) else str(args.capture), "runs": []}
    server = start_server(py, model, port, args.threads, tmp / "server.log")
    try:
        for c in [int(x) for x in args.concurrency.split(",") if x]:
            summary = run_bench(args.capture, port, tmp / f"out-{c}.parquet", c,
                                ["--clone", str(args.clone), *args.bench_arg])
            result["requests_per_run"] = summary["requests"]["total"]
            result["runs"].append({"concurrency": c, "summary": summary})
            print(f"concurrency {c}: {summary['requests']['ok']}/{summary['requests']['total']} ok, "
                  f"{summary['throughput']['requests_per_s']} req/s, TTFT p50 {summary['ttft_ms']['p50']} ms",
                  flush=True)
    finally:
        server.terminate()
        server.wait(30)
    result["machine"]["load_end"] = os.getloadavg()[0]
    for row in result["runs"]:  # the per-turn and per-second detail stays in the run's own output
        for key in ("time_series", "versus_capture"):
            row["summary"].pop(key, None)
    text = json.dumps(result, indent=2, default=str)
    if args.output:
        args.output.write_text(text)
    else:
        print(text)
    if args.docs:
        write_docs(args.docs, render_docs(result))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--write-model":
        write_model(Path(sys.argv[2]))
    else:
        main()
