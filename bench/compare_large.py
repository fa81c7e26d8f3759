"""Time ``analyze compare`` on two large captures, beside the two ``analyze report`` runs it replaces.

Makes (or reuses) three captures with ``bench/make_large_capture.py``: A (seed 7), B (seed 8, every
TTFT +``--shift-ms``: a slower vantage) and C (seed 9, no shift: the same distribution as A).
Then, alternately, ``--runs`` times each, as separate processes over the same files:

* ``analyze compare A B --format json`` (all four metrics, all answers as one group),
* ``analyze compare A B --by model --format json``,
* baseline from the same run: ``analyze report A --format json`` plus ``analyze report B --format
  json`` (what getting both sides' percentiles costs today, with no statistics at all),

recording wall time and peak RSS (``wait4``) of every process. Checks, at the full size too: A vs
B calls TTFT and E2E ``slower`` with the 95% interval holding the planted shift; A vs C calls
TTFT ``no detectable difference`` (a false change there is reported, as it can happen at rate
alpha). With ``--docs`` it rewrites the ``## analyze compare on two large captures`` section of
``docs/benchmarks.md``.

Usage (10,000,000 stream events per capture: 100,000 turns × 100 events):
    python bench/compare_large.py --dir captures/compare-bench --runs 3 --docs docs/benchmarks.md
Small check (seconds):
    python bench/compare_large.py --dir /tmp/compare-small --turns 2000 --beacons 20000 --runs 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECTION = "## analyze compare on two large captures"
sys.path.insert(0, str(HERE))


def measure(cmd: list[str]) -> tuple[float, int]:
    """Run ``cmd``; return (wall seconds, peak RSS bytes) of that process alone."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} … failed with exit code {code}")
    return wall, usage.ru_maxrss * 1024  # ru_maxrss is in KiB on Linux


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def make_captures(root: Path, turns: int, events_per_turn: int, beacons: int, shift_ms: float) -> dict[str, Path]:
    """A, B (shifted) and C (same distribution as A) under ``root``, made once and reused after."""
    from make_large_capture import make

    spec = {"a": (7, 0.0), "b": (8, shift_ms), "c": (9, 0.0)}
    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, (seed, shift) in spec.items():
        path = root / f"{name}.parquet"
        stamp = path / ".bench-spec.json"
        want = {"turns": turns, "events_per_turn": events_per_turn, "beacons": beacons, "seed": seed, "shift": shift}
        if not (stamp.exists() and json.loads(stamp.read_text()) == want):
            t = time.perf_counter()
            make(path, turns, events_per_turn, beacons, 2_000, seed=seed, ttft_shift_ms=shift)
            stamp.write_text(json.dumps(want))
            print(f"made {path} in {time.perf_counter() - t:.1f}s", flush=True)
        paths[name] = path
    return paths


def stage_times(a: Path, b: Path) -> dict[str, float]:
    """In this process: seconds to build each side's per-answer frame, and for the statistics."""
    from analyzer.compare import comparison
    from analyzer.compare.answers import answer_metrics
    from analyzer.compare.stats import mann_whitney
    from analyzer.store import load_capture

    mann_whitney([1.0, 2.0], [3.0, 4.0])  # import scipy.stats outside the timed part (it takes ~1 s)
    t0 = time.perf_counter()
    fa = answer_metrics(load_capture(a))
    fb = answer_metrics(load_capture(b))
    t1 = time.perf_counter()
    settings = comparison.Settings(tuple(comparison.METRICS), None)
    comparison.compare_frames(fa, fb, comparison.side(fa, [str(a)], None), comparison.side(fb, [str(b)], None),
                              settings)
    t2 = time.perf_counter()
    by_model = comparison.Settings(tuple(comparison.METRICS), "model")
    comparison.compare_frames(fa, fb, comparison.side(fa, [str(a)], None), comparison.side(fb, [str(b)], None),
                              by_model)
    t3 = time.perf_counter()
    return {"answers": t1 - t0, "stats": t2 - t1, "stats_by_model": t3 - t2, "n_a": len(fa), "n_b": len(fb)}


def write_section(doc: Path, body: str) -> None:
    """Replace (or append) this benchmark's section of ``doc``, leaving every other section alone."""
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Benchmarks\n"
    block = f"{SECTION}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: block + "\n", text, count=1).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + block
    doc.write_text(text, encoding="utf-8")


def _verdicts(doc: dict) -> dict[tuple[str, str], dict]:
    return {(c["metric"], c["group"]): c for c in doc["comparisons"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("captures/compare-bench"),
                        help="where the captures are made (and reused on the next run)")
    parser.add_argument("--turns", type=int, default=100_000)
    parser.add_argument("--events-per-turn", type=int, default=100)
    parser.add_argument("--beacons", type=int, default=1_000_000)
    parser.add_argument("--shift-ms", type=float, default=50.0, help="TTFT shift of capture B")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--docs", type=Path, default=None, help="rewrite this benchmark's section of this file")
    args = parser.parse_args()

    caps = make_captures(args.dir, args.turns, args.events_per_turn, args.beacons, args.shift_ms)
    analyze = str(Path(sys.executable).with_name("analyze"))
    tmp = Path(tempfile.mkdtemp(prefix="chatwire-bench-compare-"))
    ab_json, model_json, ac_json = tmp / "ab.json", tmp / "ab_model.json", tmp / "ac.json"
    cmds = {
        "compare": [analyze, "compare", str(caps["a"]), str(caps["b"]), "--format", "json", "-o", str(ab_json)],
        "compare --by model": [analyze, "compare", str(caps["a"]), str(caps["b"]), "--by", "model",
                               "--format", "json", "-o", str(model_json)],
        "report A": [analyze, "report", str(caps["a"]), "--format", "json", "-o", str(tmp / "ra.json")],
        "report B": [analyze, "report", str(caps["b"]), "--format", "json", "-o", str(tmp / "rb.json")],
    }
    runs: dict[str, list[tuple[float, int]]] = {k: [] for k in cmds}
    for i in range(args.runs):
        order = list(cmds.items())
        for name, cmd in order if i % 2 == 0 else order[::-1]:
            runs[name].append(measure(cmd))
            print(f"run {i + 1} {name}: {runs[name][-1][0]:.2f}s, peak RSS {_mib(runs[name][-1][1])}", flush=True)
    measure([analyze, "compare", str(caps["a"]), str(caps["c"]), "--format", "json", "-o", str(ac_json)])
    stages = stage_times(caps["a"], caps["b"])

    ab, ac = _verdicts(json.loads(ab_json.read_text())), _verdicts(json.loads(ac_json.read_text()))
    problems = []
    for metric in ("ttft", "e2e"):
        c = ab[(metric, "all")]
        lo, hi = c["ci95_ms"]
        if c["verdict"] != "slower" or not lo <= args.shift_ms <= hi:
            problems.append(f"A vs B {metric}: {c['verdict']}, CI [{lo:.2f}, {hi:.2f}] (planted +{args.shift_ms:g})")
    same = ac[("ttft", "all")]
    n_model = len(json.loads(model_json.read_text())["comparisons"])

    def med(name: str) -> float:
        return statistics.median(r[0] for r in runs[name])

    def rss(name: str) -> int:
        return max(r[1] for r in runs[name])

    reports = med("report A") + med("report B")
    ttft = ab[("ttft", "all")]
    events = args.turns * args.events_per_turn
    lines = [
        f"Run on {platform.node() or 'this machine'}: {os.cpu_count()} CPU(s), Python {platform.python_version()}; "
        f"`python bench/compare_large.py --dir {args.dir} --turns {args.turns} --runs {args.runs}`"
        f" on captures made by `bench/make_large_capture.py` ({args.turns:,} turns and {events:,} stream events "
        f"each; B: seed 8 with every TTFT +{args.shift_ms:g} ms, A: seed 7).",
        "",
        "| | wall time (median of runs) | peak RSS |",
        "|---|---:|---:|",
        f"| `analyze compare A B --format json` (4 metrics) | {med('compare'):.2f} s | {_mib(rss('compare'))} |",
        f"| `analyze compare A B --by model --format json` ({n_model} comparisons) | {med('compare --by model'):.2f} s "
        f"| {_mib(rss('compare --by model'))} |",
        f"| baseline: `analyze report A` + `analyze report B` (JSON) | {reports:.2f} s "
        f"| {_mib(max(rss('report A'), rss('report B')))} |",
        f"| ratio compare / two reports | **{med('compare') / reports:.2f}×** | |",
        "",
        f"All whole processes (interpreter start and imports included). Inside one process: building both "
        f"sides' per-answer frames ({stages['n_a']:,} + {stages['n_b']:,} answers) took {stages['answers']:.2f} s, "
        f"the statistics (2,000 bootstrap resamples and a Mann-Whitney U per comparison) {stages['stats']:.2f} s for "
        f"4 comparisons and {stages['stats_by_model']:.2f} s by model (scipy imported beforehand).",
        "",
        f"Verdicts: A vs B TTFT {ttft['verdict']}, B − A = {ttft['diff_p50_ms']:+.2f} ms, 95% CI "
        f"[{ttft['ci95_ms'][0]:+.2f}, {ttft['ci95_ms'][1]:+.2f}] (planted +{args.shift_ms:g} ms); A vs C "
        f"(same distribution, another seed) TTFT {same['verdict']}, B − A = {same['diff_p50_ms']:+.2f} ms.",
    ]
    body = "\n".join(lines)
    print()
    print(body)
    if args.docs:
        write_section(args.docs, body)
        print(f"\nwrote the '{SECTION}' section of {args.docs}")
    if same["verdict"] != "no detectable difference":
        print(f"note: A vs C TTFT was called {same['verdict']} (p = {same['p_value']}): a false change, "
              f"expected in at most alpha of such runs", file=sys.stderr)
    if problems:
        raise SystemExit("planted shift not found: " + "; ".join(problems))


if __name__ == "__main__":
    main()
