"""The watch-channel benchmark's pure parts (bench/capture_latency.py --watch), on hand-worked numbers,
and the script itself at a tiny size: four real mitmdump processes and a real `analyze watch`."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("capture_latency", ROOT / "bench" / "capture_latency.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _run(no_addon, off, watched, dropped) -> dict[str, list[float]]:
    return {bench.NO_ADDON: no_addon, bench.WATCH_OFF: off, bench.WATCHED: watched, bench.DROPPED: dropped}


def test_each_round_puts_another_configuration_first():
    orders = [bench.rotated(bench.WATCH_CONFIGS, k) for k in range(4)]
    assert [o[0] for o in orders] == list(bench.WATCH_CONFIGS)
    assert all(sorted(o) == sorted(bench.WATCH_CONFIGS) for o in orders)
    assert bench.rotated(bench.WATCH_CONFIGS, 5) == orders[1]


def test_ratios_per_run_then_their_median_and_spread():
    # run 1: p50s 1, 2, 3, 4 (medians of 3 values each) -> watched/off 1.5, dropped/off 2.0, off/no 2.0
    # run 2: p50s 1, 2, 2, 2                             -> watched/off 1.0, dropped/off 1.0, off/no 2.0
    one = _run([0.5, 1, 1.5], [1.5, 2, 2.5], [2.5, 3, 3.5], [3.5, 4, 4.5])
    two = _run([1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2])
    summary = bench.summarize_watch([one, two])
    ratios = summary["ratios"]
    watched = ratios[f"{bench.WATCHED} / {bench.WATCH_OFF} p50"]
    assert watched == {"median": pytest.approx(1.25), "min": pytest.approx(1.0), "max": pytest.approx(1.5)}
    dropped = ratios[f"{bench.DROPPED} / {bench.WATCH_OFF} p50"]
    assert (dropped["median"], dropped["min"], dropped["max"]) == pytest.approx((1.5, 1.0, 2.0))
    addon = ratios[f"{bench.WATCH_OFF} / {bench.NO_ADDON} mean"]
    assert addon["median"] == pytest.approx(2.0) and addon["min"] == pytest.approx(2.0)
    assert summary["pooled"][bench.WATCH_OFF]["n"] == 6
    assert summary["pooled"][bench.WATCH_OFF]["p50"] == pytest.approx(2.0)


def test_the_docs_writer_replaces_only_its_section():
    text = f"# B\n\nbefore\n\n{bench.DOCS_START}\nold figures\n{bench.DOCS_END}\n\nafter\n"
    out = bench.replace_docs_section(text, "new figures\n")
    assert out == f"# B\n\nbefore\n\n{bench.DOCS_START}\nnew figures\n{bench.DOCS_END}\n\nafter\n"
    assert bench.replace_docs_section(out, "again\n").count(bench.DOCS_START) == 1
    with pytest.raises(ValueError, match="watch-bench"):
        bench.replace_docs_section("# no markers\n", "x")


def test_the_docs_have_the_section_to_fill():
    docs = (ROOT / "docs" / "benchmarks.md").read_text()
    assert docs.count(bench.DOCS_START) == 1 and docs.count(bench.DOCS_END) == 1
    assert "bench/capture_latency.py --watch" in docs


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_script_runs_at_a_tiny_size_and_writes_its_section(tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text(f"# Benchmarks\n\n{bench.DOCS_START}\nto fill\n{bench.DOCS_END}\n\nkept\n")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "capture_latency.py"), "--watch", "--runs", "2",
                           "--streams", "2", "--events", "10", "--gap-ms", "2", "--docs", str(docs)],
                          capture_output=True, text=True, timeout=280, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = docs.read_text()
    assert "to fill" not in text and text.endswith("kept\n")
    assert "| watch on, listened / watch off |" in text and "| watch on, nobody listening / watch off |" in text
    # 2 runs x 2 streams x 10 events through each of the four proxies
    for label in bench.WATCH_CONFIGS:
        assert f"| {label} | 40 |" in text
    assert "The watcher received" in text and "The watcher received 0 records" not in text
