"""Benchmark of `analyze import` on a large HAR, beside the JSON-parsing floor and `mitmdump -nr`.

Every measurement runs in a fresh subprocess, so each peak RSS is its own. Rows:

- floor: the fastest available way to just load the file with Python (stdlib ``json``, ``orjson``
  when installed, ``ijson`` streaming on yajl's C parser);
- reader: the importer's reading alone (hash, stream entries, convert the ones that could be
  ChatGPT traffic into mitmproxy flows), no extraction, no writing;
- import: the whole ``import_sources`` (read, extract, redact, write Parquet);
- ``mitmdump -nr FILE.har`` with no addon (mitmproxy's own HAR reader).

Usage:
    python bench/import_har.py [--mb 220] [--small-mb 55] [--har PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, time
mode, path, out = sys.argv[1], sys.argv[2], sys.argv[3]
t = time.perf_counter()
n = 0
if mode == "json":
    with open(path, "rb") as fh:
        n = len(json.loads(fh.read())["log"]["entries"])
elif mode == "orjson":
    import orjson
    with open(path, "rb") as fh:
        n = len(orjson.loads(fh.read())["log"]["entries"])
elif mode == "ijson":
    import ijson
    with open(path, "rb") as fh:
        n = sum(1 for _ in ijson.items(fh, "log.entries.item", use_float=True, buf_size=1 << 20))
elif mode == "reader":
    from pathlib import Path
    from analyzer.importer import might_be_ours
    from analyzer.sources import find_sources, iter_items
    (source,), _, _ = find_sources([path])
    n = sum(1 for _ in iter_items(source, keep=might_be_ours))
elif mode == "import":
    from analyzer.importer import import_sources
    s = import_sources([path], out)
    n = s.flows_read + len(s.errors)
print(json.dumps({"seconds": time.perf_counter() - t, "entries": n,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def child(mode: str, har: Path, out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(har), str(out)], capture_output=True,
                          text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def mitmdump_nr(har: Path) -> dict:
    exe = Path(sys.executable).parent / "mitmdump"
    conf = tempfile.mkdtemp(prefix="bench-mitm-")
    t = time.perf_counter()
    subprocess.run([str(exe), "-q", "-nr", str(har), "--set", f"confdir={conf}"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - t
    shutil.rmtree(conf, ignore_errors=True)
    return {"seconds": seconds, "entries": None,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def have(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=220.0, help="size of the large HAR (default 220)")
    parser.add_argument("--small-mb", type=float, default=55.0, help="a smaller HAR, to see memory vs size")
    parser.add_argument("--har", type=Path, help="use this HAR instead of generating one")
    parser.add_argument("--no-mitmdump", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    from make_large_har import write_har

    work = Path(tempfile.mkdtemp(prefix="bench-import-"))
    try:
        files = []
        if args.har:
            files.append(args.har)
        else:
            for mb in (args.small_mb, args.mb):
                path = work / f"large-{int(mb)}.har"
                write_har(path, int(mb * 1_000_000))
                files.append(path)
        rows = []
        for har in files:
            size = har.stat().st_size
            modes = ["json", *(["orjson"] if have("orjson") else []), "ijson", "reader", "import"]
            results = {m: child(m, har, work / f"cap-{m}-{size}") for m in modes}
            if not args.no_mitmdump:
                results["mitmdump -nr"] = mitmdump_nr(har)
            floor = min(results[m]["seconds"] for m in ("json", "orjson", "ijson") if m in results)
            entries = results["import"]["entries"]
            for mode, r in results.items():
                rows.append((size / 1e6, mode, r["seconds"], size / 1e6 / r["seconds"], entries / r["seconds"],
                             r["seconds"] / floor, r["peak_rss_mb"]))
            shutil.rmtree(work / f"cap-import-{size}", ignore_errors=True)
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores")
        print("| HAR MB | what | seconds | MB/s | entries/s | × floor | peak RSS MB |")
        print("|---:|---|---:|---:|---:|---:|---:|")
        for mb, mode, sec, mbs, eps, ratio, rss in rows:
            print(f"| {mb:.0f} | {mode} | {sec:.2f} | {mbs:.1f} | {eps:,.0f} | {ratio:.1f} | {rss:.0f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
