"""bench/compare_large.py at a tiny size: it makes its captures, times real processes, finds the
planted shift and writes its docs section (the full-size run is for an idle machine)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_compare_bench_runs_small(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## other\n\nkept\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compare_large.py"), "--dir", str(tmp_path / "caps"), "--turns", "400",
         "--beacons", "1000", "--shift-ms", "400", "--runs", "1", "--docs", str(doc)],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    text = doc.read_text(encoding="utf-8")
    assert "## other\n\nkept" in text and "## analyze compare on two large captures" in text
    assert "A vs B TTFT slower" in text and "(planted +400 ms)" in text
    assert "| ratio compare / two reports |" in text
