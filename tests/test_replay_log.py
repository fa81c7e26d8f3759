"""``analyze replay`` closes its API client on the loop that opened it: the log says nothing of it.

(Its output capture is private under ``umask 000`` too.)

A client left open past ``asyncio.run`` has its connections closed by the garbage collector on a
closed loop, which asyncio logs as "Task exception was never retrieved … Event loop is closed";
the run still passes. So this looks at the log of a real ``analyze replay`` process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from analyzer.store import load_capture
from tests.capture_factory import make_capture
from tests.replay_api_server import ApiTestServer
from tests.test_private_files import assert_all
from tests.test_replay import KEY, QUESTIONS, conversation_rows


def test_replay_log_has_no_unclosed_client_noise(tmp_path):
    capture = make_capture(tmp_path / "web.parquet", conversation_rows())
    out = tmp_path / "replay.parquet"
    server = ApiTestServer(ttft_ms=20.0, gap_ms=5.0).start()
    try:
        proc = subprocess.run(
            [sys.executable, "-X", "dev", "-c", "from analyzer.cli import main; main()", "-v", "replay",
             str(capture), "--conversation", "conv-r", "--base-url", server.url("ok"), "--model", "m",
             "--api-key-env", "CHATWIRE_TEST_KEY", "--concurrency", "3", "-o", str(out)],
            env={"CHATWIRE_TEST_KEY": KEY, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
            timeout=120, cwd=Path(__file__).resolve().parent.parent,
            preexec_fn=lambda: os.umask(0),  # and its output is private all the same
        )
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr
    assert len(server.requests) == len(QUESTIONS)  # the run did talk to the API
    for noise in ("Event loop is closed", "never retrieved", "Traceback", "Unclosed", "ResourceWarning"):
        assert noise not in proc.stderr, proc.stderr
    assert len(load_capture(out).table("api_calls")) == len(QUESTIONS)
    assert_all(out, 0o600)
