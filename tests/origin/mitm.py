"""Run a real ``mitmdump`` subprocess for tests: free port, per-session CA, optional script and options."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MITMDUMP = Path(sys.executable).parent / "mitmdump"
_LISTENING = re.compile(r"proxy listening at .*?:(\d+)")


@dataclass
class MitmdumpProcess:
    """A running mitmdump: ``proxy_url`` to send traffic through, ``ca_path`` to trust."""

    proc: subprocess.Popen
    port: int
    confdir: Path
    log_path: Path
    flow_file: Path | None
    args: list[str]

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ca_path(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        """Everything mitmdump wrote to stdout and stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20.0) -> int:
        """Ask mitmdump to shut down (addons' ``done`` hooks run on SIGINT); SIGKILL after ``timeout``."""
        if self.alive:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def kill(self) -> int:
        """SIGKILL: no shutdown hooks run (what a crash looks like to the capture)."""
        if self.alive:
            self.proc.kill()
            self.proc.wait(10)
        return self.proc.returncode

    def __enter__(self) -> MitmdumpProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _option_args(options: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in options.items():
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            text = ("true" if v else "false") if isinstance(v, bool) else str(v)
            out += ["--set", f"{key}={text}"]
    return out


def run_mitmdump(tmp_path: Path, *, script: Path | str | None = None, options: Mapping[str, Any] | None = None,
                 confdir: Path | None = None, flow_file: Path | str | None = None,
                 extra_args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                 timeout: float = 30.0) -> MitmdumpProcess:
    """Start mitmdump on a free port of 127.0.0.1 and wait until it accepts connections.

    ``confdir`` holds the CA (generated on first use; default ``tmp_path/mitm-confdir``); ``script``
    is passed with ``-s``; ``options`` become ``--set k=v``; ``flow_file`` is written with ``-w``.
    The caller stops it (``stop()``/``kill()``) — the ``mitmdump_factory`` fixture does that for you.
    """
    tmp_path = Path(tmp_path)
    confdir = Path(confdir) if confdir else tmp_path / "mitm-confdir"
    confdir.mkdir(parents=True, exist_ok=True)
    n = len(list(tmp_path.glob("mitmdump-*.log")))
    log_path = tmp_path / f"mitmdump-{n}.log"
    args = [str(MITMDUMP), "--listen-host", "127.0.0.1", "--listen-port", "0",
            "--set", f"confdir={confdir}", "--set", "ssl_insecure=true"]
    if script:
        args += ["-s", str(script)]
    if flow_file:
        args += ["-w", str(flow_file)]
    args += _option_args(options or {}) + list(extra_args)
    full_env = {**os.environ, **(env or {})}
    # The project root on the path, so scripts can import analyzer/ and tests/ from a source checkout.
    root = str(Path(__file__).resolve().parents[2])
    full_env["PYTHONPATH"] = root + os.pathsep + full_env.get("PYTHONPATH", "")
    log_fh = open(log_path, "wb")  # noqa: SIM115 - the child owns it; closed below
    proc = subprocess.Popen(args, stdout=log_fh, stderr=subprocess.STDOUT, env=full_env, cwd=tmp_path,
                            start_new_session=True)
    log_fh.close()
    m = MitmdumpProcess(proc, 0, confdir, log_path, Path(flow_file) if flow_file else None, args)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _LISTENING.search(m.log_text())
        if found:
            m.port = int(found.group(1))
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", m.port), timeout=2):
                if m.ca_path.exists():
                    return m
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    m.kill()
    raise RuntimeError(f"mitmdump did not start ({' '.join(args)}):\n{m.log_text()[-3000:]}")


@contextlib.contextmanager
def mitmdump(tmp_path: Path, **kwargs: Any) -> Iterator[MitmdumpProcess]:
    """``run_mitmdump`` as a context manager that always stops the process."""
    m = run_mitmdump(tmp_path, **kwargs)
    try:
        yield m
    finally:
        m.stop()


def export_har(flows_path: Path | str, har: Path | str, confdir: Path | str) -> Path:
    """mitmproxy's own HAR export of a flow file (``mitmdump -nr FLOWS --set hardump=HAR``)."""
    subprocess.run([str(MITMDUMP), "-q", "-nr", str(flows_path), "--set", f"hardump={har}",
                    "--set", f"confdir={confdir}"], check=True, env=dict(os.environ), timeout=120,
                   stdout=subprocess.DEVNULL)
    return Path(har)
