"""Produce captures/sample.parquet by running the real capture addon over a scripted session.

Nothing here is hand-written Parquet: a local stand-in for chatgpt.com (tests/origin) answers a
scripted browser-like session (three conversations in the legacy, v1 and 2025 WebSocket stream
generations, with beacons, Segment and Statsig analytics and a few OpenAI-API calls) that goes
through a real ``mitmdump -s addons/chatgpt_capture.py``.

    .venv/bin/python scripts/make_sample_capture.py [OUTPUT]     (default captures/sample.parquet)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.origin.mitm import mitmdump  # noqa: E402
from tests.origin.server import start_origin  # noqa: E402
from tests.origin.session import run_session  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", default=str(ROOT / "captures" / "sample.parquet"))
    args = parser.parse_args()
    output = Path(args.output)
    with tempfile.TemporaryDirectory(prefix="chatwire-sample-") as tmp:
        tmp_path = Path(tmp)
        capture = tmp_path / "sample.parquet"
        origin = start_origin(tls=True, workdir=tmp_path / "origin")
        try:
            with mitmdump(tmp_path, script=ROOT / "addons" / "chatgpt_capture.py",
                          options={"capture_path": capture, "capture_flush_ms": 500}) as proxy:
                for formats, delays in ((("legacy",), (900, 45)), (("v1",), (450, 22)), (("celsius",), (650, 30))):
                    run_session(origin.url, proxy=proxy.proxy_url, verify=str(proxy.ca_path), http2=True,
                                formats=formats, delays=delays, n_turns=3, analytics=True,
                                api=formats == ("v1",))
            if proxy.proc.returncode not in (0, None):
                raise SystemExit(f"mitmdump failed:\n{proxy.log_text()[-2000:]}")
        finally:
            origin.stop()
        staging = output.with_name(f".{output.name}.new")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(capture, staging)
    shutil.rmtree(output, ignore_errors=True)
    staging.rename(output)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
