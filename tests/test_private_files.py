"""Private by default: every file chatwire creates is 0600 and every directory 0700, whatever the umask.

Each test runs its writer under ``umask 000`` (the worst case: the umask takes nothing away), then
walks what was created. A mode given deliberately (``capture_mode``, ``--mode``) is applied exactly,
under a restrictive umask too. ``analyze serve`` listens on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import os
import select
import ssl
import stat
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from click.testing import CliRunner

from analyzer.cli import main
from analyzer.store import CaptureWriter, load_capture
from analyzer.store.files import dir_mode
from tests.capture_factory import make_capture, merge, turn
from tests.origin.session import run_session

ROOT = Path(__file__).resolve().parent.parent
ADDON = ROOT / "addons" / "chatgpt_capture.py"
HAR = Path(__file__).parent / "fixtures" / "har" / "firefox.har"
T0 = 1_735_812_000.0
CONV = "6790a1b2-0c3d-800a-9f1e-4b2c6d8e0f11"


@contextmanager
def umask(value: int):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    """Permission bits of ``root`` and of everything under it, by path relative to ``root``."""
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for p in root.rglob("*"):
        out[str(p.relative_to(root))] = stat.S_IMODE(p.lstat().st_mode)
    return out


def assert_all(root: Path, file_mode: int) -> None:
    got = modes(root)
    want_dir = dir_mode(file_mode)
    wrong = {p: oct(m) for p, m in got.items()
             if m != ((want_dir if (root / p).is_dir() else file_mode) if p != "." else want_dir)}
    assert not wrong, f"expected files {oct(file_mode)}, directories {oct(want_dir)}; got {wrong}"
    assert any((root / p).is_file() for p in got)  # something was checked


def _rows():
    return merge(turn(CONV, flow_id="f1", at=T0, user_id="u1", user_text="hi", assistant_id="a1",
                      assistant_text="hello", parent_id="client-created-root"))


def test_dir_mode_by_hand():
    assert dir_mode(0o600) == 0o700 and dir_mode(0o640) == 0o750 and dir_mode(0o644) == 0o755
    assert dir_mode(None) == 0o700 and dir_mode(0o000) == 0o000


def test_writer_under_umask_000_is_private_including_parents_and_compaction(tmp_path):
    with umask(0):
        path = tmp_path / "new" / "nested" / "cap.parquet"
        writer = CaptureWriter(path, flush_ms=None)
        for _ in range(3):
            writer.add(_rows())
            writer.flush()
        writer.close(compact=True)
    assert_all(tmp_path / "new", 0o600)
    assert len(load_capture(path).table("flows")) == 3


def test_a_deliberate_mode_is_exact_whatever_the_umask(tmp_path):
    with umask(0o077):
        make_capture_with_mode = CaptureWriter(tmp_path / "shared.parquet", mode=0o640)
        make_capture_with_mode.add(_rows())
        make_capture_with_mode.close(compact=True)
    assert_all(tmp_path / "shared.parquet", 0o640)


def test_cli_outputs_under_umask_000(tmp_path):
    runner = CliRunner()
    with umask(0):
        cap = make_capture(tmp_path / "cap.parquet", _rows())
        assert runner.invoke(main, ["import", str(HAR), "-o", str(tmp_path / "imported")]).exit_code == 0
        assert runner.invoke(main, ["import", str(HAR), "-o", str(tmp_path / "cap.parquet")]).exit_code == 0
        for fmt, name in (("html", "r.html"), ("markdown", "r.md"), ("json", "r.json")):
            assert runner.invoke(main, ["report", str(cap), "-f", fmt, "-o", str(tmp_path / name)]).exit_code == 0
        result = runner.invoke(main, ["conversations", str(cap), "-c", CONV, "-o", str(tmp_path / "c.txt")])
        assert result.exit_code == 0
        assert runner.invoke(main, ["compact", str(cap)]).exit_code == 0
    assert_all(tmp_path / "imported", 0o600)
    assert_all(cap, 0o600)
    for name in ("r.html", "r.md", "r.json", "c.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name


def test_cli_mode_option_shares_deliberately(tmp_path):
    runner = CliRunner()
    with umask(0o077):
        assert runner.invoke(main, ["import", str(HAR), "-o", str(tmp_path / "cap"), "--mode", "0644"]).exit_code == 0
        result = runner.invoke(main, ["report", str(tmp_path / "cap"), "-f", "html", "-o", str(tmp_path / "r.html"),
                                      "--mode", "640"])
        assert result.exit_code == 0, result.output
    assert_all(tmp_path / "cap", 0o644)
    assert stat.S_IMODE((tmp_path / "r.html").stat().st_mode) == 0o640
    bad = runner.invoke(main, ["import", str(HAR), "-o", str(tmp_path / "x"), "--mode", "rw-r--r--"])
    assert bad.exit_code == 2 and "is not an octal file mode" in bad.stderr and not (tmp_path / "x").exists()


def test_live_capture_under_umask_000_is_private(tmp_path, origin, mitmdump_factory):
    capture_path = tmp_path / "captures" / "live.parquet"
    with umask(0):  # mitmdump inherits it
        proxy = mitmdump_factory(script=ADDON, options={"capture_path": capture_path, "capture_flush_ms": 200})
    record = run_session(origin.url, proxy=proxy.proxy_url,
                         verify=ssl.create_default_context(cafile=str(proxy.ca_path)),
                         formats=("v1",), delays=(20, 2), n_turns=1, analytics=False, api=False)
    time.sleep(0.5)  # a flush or two while running: parts written by the timer thread, not only at stop
    assert proxy.stop() == 0
    assert record.conversation_streams
    assert_all(tmp_path / "captures", 0o600)
    assert len(load_capture(capture_path).table("conversation_turns")) == len(record.conversation_streams)


def test_live_capture_mode_option_and_bad_value(tmp_path, origin, mitmdump_factory):
    shared = tmp_path / "shared.parquet"
    proxy = mitmdump_factory(script=ADDON, options={"capture_path": shared, "capture_mode": "0640"})
    assert proxy.stop() == 0
    assert_all(shared, 0o640)
    assert "capture_mode is 0640: others than you can read the capture" in proxy.log_text()
    mitmdump = Path(sys.executable).parent / "mitmdump"
    proc = subprocess.run([str(mitmdump), "-q", "--listen-port", "0", "--set", f"confdir={tmp_path / 'conf'}",
                           "-s", str(ADDON), "--set", f"capture_path={tmp_path / 'bad.parquet'}",
                           "--set", "capture_mode=rwx"], capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out
    assert "capture_mode must be an octal file mode such as 0600 or 0640, not 'rwx'" in out
    assert not (tmp_path / "bad.parquet").exists()


def _serve(capture: Path, *args: str) -> tuple[str, str]:
    """Start ``analyze serve`` on a free port, read until it says where it listens, stop it."""
    proc = subprocess.Popen([sys.executable, "-c", "from analyzer.cli import main; main()", "serve", str(capture),
                             "--port", "0", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)  # never hang the suite on a serve that is stuck
        line = proc.stdout.readline() if ready else ""
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    return line, err


def test_serve_binds_loopback_by_default_and_warns_loudly_otherwise(tmp_path):
    cap = make_capture(tmp_path / "cap.parquet", _rows())
    line, err = _serve(cap)
    assert "on http://127.0.0.1:" in line and "WARNING" not in err
    line, err = _serve(cap, "--host", "0.0.0.0")
    assert "chatwire: serving" in line
    assert err.startswith("WARNING: --host 0.0.0.0 serves this capture to every machine that can reach this one")
