"""Set-up shared by the benchmarks that run real mitmdump processes (capture_latency, soak, soak_mitmdump).

The SSE origin (bench/sse_origin.py) started on a free port, mitmdump processes with an addon,
a probe stream whose events carry the origin's send time, and /proc readings of a process.
"""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CAPTURE_ADDON = ROOT / "addons" / "chatgpt_capture.py"
BASELINE_ADDON = ROOT / "tests" / "origin" / "stream_only_addon.py"  # only sets stream = True


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


def start_origin(tmp: Path) -> tuple[subprocess.Popen, int]:
    """bench/sse_origin.py on a free loopback port: (process, port)."""
    port_file = tmp / "origin.port"
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "sse_origin.py"), str(port_file)])
    deadline = time.time() + 30
    while not port_file.exists() or not port_file.read_text():
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("bench/sse_origin.py did not start")
        time.sleep(0.05)
    port = int(port_file.read_text())
    wait_port(port)
    return proc, port


def start_mitmdump(tmp: Path, name: str, script: Path, extra: list[str]) -> tuple[subprocess.Popen, int]:
    """A mitmdump with ``script`` on a free port, its output in ``tmp/<name>.log``: (process, port)."""
    port = free_port()
    cmd = [str(BIN / "mitmdump"), "-q", "--listen-host", "127.0.0.1", "-p", str(port),
           "--set", f"confdir={tmp / 'conf'}", "-s", str(script), *extra]
    proc = subprocess.Popen(cmd, stdout=open(tmp / f"{name}.log", "w"), stderr=subprocess.STDOUT)
    wait_port(port)
    return proc, port


def stream_once(client: httpx.Client, origin: int, n: int, gap_ms: float) -> list[float]:
    """Added latency (ms) of every delta event of one stream: arrival at the client − the origin's send time."""
    out = []
    url = f"http://127.0.0.1:{origin}/backend-api/f/conversation?n={n}&gap_ms={gap_ms}"
    with client.stream("POST", url, json={"action": "next", "messages": []},
                       headers={"accept": "text/event-stream"}) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                now = time.time()
                out.append((now - json.loads(line[6:])["t"]) * 1000)
    return out


def rss_mib(pid: int) -> float:
    """Resident memory of a process (Linux /proc), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fd_count(pid: int) -> int:
    """Open file descriptors of a process (Linux /proc)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU time of a process (or of one of its threads, ``tid``) from /proc, in seconds."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()  # the name in () may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float]) -> dict:
    arr = np.asarray(values)
    return {"n": len(arr), "p50": float(np.percentile(arr, 50)), "p99": float(np.percentile(arr, 99)),
            "mean": float(arr.mean()), "max": float(arr.max())}


def machine() -> str:
    """One line naming the machine and the software, for a result's header."""
    try:
        load = "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "load unknown"
    return (f"{platform.node()} ({os.cpu_count()} cores, Python {platform.python_version()}, "
            f"{platform.platform()}, {load})")


def replace_docs_section(path: Path, heading: str, body: str) -> None:
    """Rewrite the ``## heading`` section of a Markdown file (to the next ``## `` or the end), or append it."""
    text = path.read_text()
    section = f"## {heading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


# The soak's mix of request bodies (bench/soak.py's hooks driver and bench/soak_mitmdump.py).
BEACON = json.dumps({"server_request_id": "0123456789abcdef-AMS", "model": "m", "count_tokens": 10,
                     "ts_first_token_ms": 100.0, "ts_total_request_ms": 900.0}).encode()
SEGMENT = json.dumps({"batch": [{"type": "track", "event": f"e{i}", "anonymousId": "a", "messageId": str(i),
                                 "context": {"page": {"path": "/c/abc12345"}}} for i in range(5)]}).encode()
STATSIG = json.dumps({"events": [{"eventName": "chatgpt_web_prompt", "user": {"userID": "u"}, "time": 1,
                                  "metadata": {"k": "v"}}], "statsigMetadata": {"sdkType": "js"}}).encode()
CHAT = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hello"}]}).encode()
CHAT_STREAM = json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "hello"}]}).encode()
CONVERSATION = json.dumps({"action": "next", "messages": []}).encode()
STREAM_EVENTS = 10  # per soak stream, sent back to back by the origin
