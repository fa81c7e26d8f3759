"""Time ``analyze report --format html`` against ``--format json`` on the large benchmark capture.

The issue's budget: the HTML report is written in under 2× the time of the JSON report, and the
file stays under 5 MB. Each run is a fresh subprocess (start-up, capture load, report, write), the
two formats alternate so that a busy shared machine slows both alike, and the median of ``--runs``
is compared. Exits 1 when a budget is missed.

Usage:
    python bench/html_report.py                      # captures/large.parquet, made if missing
    python bench/html_report.py /tmp/large.parquet --runs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_RATIO = 2.0
MAX_BYTES = 5 * 1024 * 1024


def _command(fmt: str, capture: Path, out: Path) -> list[str]:
    analyze = str(Path(sys.executable).with_name("analyze"))
    return [analyze, "report", str(capture), "--format", fmt, "-o", str(out)]


def _timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("capture", nargs="?", type=Path, default=ROOT / "captures" / "large.parquet")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not args.capture.exists():
        print(f"{args.capture} is missing: making it with bench/make_large_capture.py (default size)")
        subprocess.run([sys.executable, str(ROOT / "bench" / "make_large_capture.py"), str(args.capture)],
                       check=True, cwd=ROOT)
    with tempfile.TemporaryDirectory(prefix="chatwire-bench-") as tmp:
        outs = {"json": Path(tmp) / "report.json", "html": Path(tmp) / "report.html"}
        times: dict[str, list[float]] = {"json": [], "html": []}
        _timed(_command("json", args.capture, outs["json"]))  # warm the page cache and matplotlib's font cache
        _timed(_command("html", args.capture, outs["html"]))
        for _ in range(args.runs):
            for fmt in ("json", "html"):
                times[fmt].append(_timed(_command(fmt, args.capture, outs[fmt])))
        size = os.path.getsize(outs["html"])
    json_s, html_s = statistics.median(times["json"]), statistics.median(times["html"])
    ratio = html_s / json_s
    print(f"capture {args.capture}; `analyze report --format json|html`; median of {args.runs} runs each")
    print("| format | seconds (median) | runs | file |")
    print("|---|---:|---:|---:|")
    print(f"| json | {json_s:.2f} | {', '.join(f'{t:.2f}' for t in times['json'])} | |")
    print(f"| html | {html_s:.2f} | {', '.join(f'{t:.2f}' for t in times['html'])} | {size / 1e6:.2f} MB |")
    print(f"html / json = {ratio:.2f} (budget < {MAX_RATIO}); file {size:,} bytes (budget < {MAX_BYTES:,})")
    ok = ratio < MAX_RATIO and size < MAX_BYTES
    print("OK" if ok else "OVER BUDGET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
