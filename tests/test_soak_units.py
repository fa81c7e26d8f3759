"""The pure parts of bench/soak_mitmdump.py and bench/_common.py, against hand-worked values.

The benchmark itself needs an idle machine (docs/benchmarks.md); its verdict and its docs section
are made by the functions tested here, on samples and probe records chosen by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import _common  # noqa: E402
import soak_mitmdump  # noqa: E402


def test_projected_change_is_slope_times_span():
    # y = 2x + 1 over x 0..10: the line rises by 20.
    assert soak_mitmdump.projected_change([0, 5, 10], [1, 11, 21]) == pytest.approx(20.0)
    # (0,1) (1,3) (2,1) (3,3), least squares by hand: x̄ 1.5, ȳ 2, Σ(x−x̄)(y−ȳ) = 1.5 − 0.5 − 0.5 + 1.5 = 2,
    # Σ(x−x̄)² = 5: slope 0.4, over a span of 3 -> 1.2.
    assert soak_mitmdump.projected_change([0, 1, 2, 3], [1, 3, 1, 3]) == pytest.approx(1.2)
    assert soak_mitmdump.projected_change([4], [9]) == 0.0 and soak_mitmdump.projected_change([2, 2], [1, 5]) == 0.0


def _args(**kw) -> argparse.Namespace:
    base = {"minute_s": 10.0, "warmup": 0.0, "max_rss_growth_pct": 10.0, "max_fd_growth": 5,
            "max_added_p50_growth_ms": 1.0, "max_added_p99_growth_ms": 5.0}
    return argparse.Namespace(**{**base, **kw})


def _samples(rss: list[float], fds: list[int]) -> list[dict]:
    return [{"t": 5.0 + 10 * i, "flows_addon": 1000 * (i + 1), "flows_baseline": 1000 * (i + 1),
             "rss_addon": r, "fds_addon": f, "rss_baseline": 100.0, "fds_baseline": 7}
            for i, (r, f) in enumerate(zip(rss, fds, strict=True))]


def _records(addon: list[list[float]], baseline: list[list[float]]) -> list[dict]:
    out = []
    for m, (a, b) in enumerate(zip(addon, baseline, strict=True)):
        out += [{"t": 10 * m + 1, "proxy": "addon", "lat_ms": x} for x in a]
        out += [{"t": 10 * m + 6, "proxy": "baseline", "lat_ms": x} for x in b]
    return out


def test_summary_flat_run():
    # Three full windows: RSS 200 -> 201 -> 200, fds 9 9 9; addon 1 ms above the baseline every minute.
    summary = soak_mitmdump.summarise(_records([[3, 3, 3]] * 3, [[2, 2, 2]] * 3),
                                      _samples([200, 201, 200], [9, 9, 9]), _args(), run_s=30.0)
    rows = summary["minutes"]
    assert [r["minute"] for r in rows] == [1, 2, 3] and all(r["full"] for r in rows)
    assert [r["added_p50"] for r in rows] == [1.0, 1.0, 1.0]
    assert [r["rss_mib"] for r in rows] == [200, 201, 200] and rows[1]["flows"] == 2000
    checks = summary["checks"]
    assert checks["rss"]["change"] == pytest.approx(0.0) and checks["rss"]["bound"] == pytest.approx(20.0)
    assert checks["fds"]["change"] == pytest.approx(0.0) and summary["flat"]


def test_summary_catches_growth():
    # RSS +30 MiB over the run (bound 10 % of 200 = 20), fds +1 per window; the addon's latency grows
    # by 2 ms a minute while the baseline stays: +4 ms from the first minute to the last (bound 1).
    summary = soak_mitmdump.summarise(_records([[3], [5], [7]], [[2], [2], [2]]),
                                      _samples([200, 215, 230], [9, 10, 11]), _args(), run_s=30.0)
    checks = summary["checks"]
    assert checks["rss"]["change"] == pytest.approx(30.0) and not checks["rss"]["flat"]
    assert checks["fds"]["change"] == pytest.approx(2.0) and checks["fds"]["flat"]
    assert checks["added_p50"]["change"] == pytest.approx(4.0) and not checks["added_p50"]["flat"]
    assert not summary["flat"]


def test_summary_leaves_out_minutes_without_both_proxies_and_partial_ones_from_the_slopes():
    records = _records([[3], [3], [9]], [[2], [2], [2]])
    records = [r for r in records if not (r["proxy"] == "baseline" and r["t"] < 10)]  # minute 1: addon only
    summary = soak_mitmdump.summarise(records, _samples([200, 200, 200], [9, 9, 9]), _args(), run_s=25.0)
    assert [r["minute"] for r in summary["minutes"]] == [2, 3]
    assert summary["minutes"][1]["full"] is False
    # Only minute 2 is full: one point, no slope, however high the partial minute's latency.
    assert summary["checks"]["added_p50"]["change"] == 0.0


def test_replace_docs_section(tmp_path):
    doc = tmp_path / "b.md"
    doc.write_text("# Benchmarks\n\n## A\n\nold a\n\n## Soak through mitmdump\n\nold soak\n\n## C\n\nc\n")
    _common.replace_docs_section(doc, "Soak through mitmdump", "new soak\n\nline 2")
    assert doc.read_text() == "# Benchmarks\n\n## A\n\nold a\n\n## Soak through mitmdump\n\nnew soak\n\nline 2\n\n## C\n\nc\n"
    _common.replace_docs_section(doc, "Missing", "appended")
    assert doc.read_text().endswith("## C\n\nc\n\n## Missing\n\nappended\n")
    _common.replace_docs_section(doc, "Missing", "again")  # last section: to the end of the file
    assert doc.read_text().endswith("## C\n\nc\n\n## Missing\n\nagain\n") and doc.read_text().count("## Missing") == 1


def test_slopes_use_the_samples_with_the_addon_idle():
    # While the flood goes through the addon its descriptors count live connections (9 + 2 × 16),
    # and more of those are caught late in the run; at the end of each baseline window it is idle: 9.
    samples = []
    for i in range(4):
        samples.append({"t": 10.0 * i + 3, "addon_idle": False, "flows_addon": 1000 * i + 500, "flows_baseline": 0,
                        "rss_addon": 200.0, "fds_addon": 9 + 8 * i, "rss_baseline": 100.0, "fds_baseline": 7})
        samples.append({"t": 10.0 * i + 9, "addon_idle": True, "flows_addon": 1000 * (i + 1), "flows_baseline": 0,
                        "rss_addon": 200.0, "fds_addon": 9, "rss_baseline": 100.0, "fds_baseline": 7})
    summary = soak_mitmdump.summarise(_records([[3]] * 4, [[2]] * 4), samples, _args(), run_s=40.0)
    assert summary["checks"]["fds"]["change"] == pytest.approx(0.0) and summary["checks"]["fds"]["flat"]
    assert [r["fds"] for r in summary["minutes"]] == [9, 9, 9, 9]
    # Without the idle samples the same run would look like a leak of 24 descriptors.
    busy = [s for s in samples if not s["addon_idle"]]
    assert soak_mitmdump.summarise(_records([[3]] * 4, [[2]] * 4), busy, _args(), run_s=40.0)["checks"]["fds"][
        "change"] == pytest.approx(24.0)


def test_projected_change_interval_by_hand():
    # A perfect line has no spread: the interval is the change itself.
    change, lo, hi = soak_mitmdump.projected_change_ci([0, 5, 10], [1, 11, 21])
    assert (change, lo, hi) == pytest.approx((20.0, 20.0, 20.0))
    # (0,1) (1,3) (2,1) (3,3): slope 0.4, fitted 1.4 1.8 2.2 2.6, residuals −0.4 1.2 −1.2 0.4, SSR 3.2,
    # s² = 3.2 / 2, SE = √(1.6 / 5) = 0.5657; over the span of 3: 1.2 ± 3 × 1.96 × 0.5657 = 1.2 ± 3.326.
    change, lo, hi = soak_mitmdump.projected_change_ci([0, 1, 2, 3], [1, 3, 1, 3])
    assert change == pytest.approx(1.2) and lo == pytest.approx(1.2 - 3.3262, abs=1e-3)
    assert hi == pytest.approx(1.2 + 3.3262, abs=1e-3)


def test_cost_per_flow_from_the_cpu_samples():
    # 100 flows in 10 s through the addon, 1 s of CPU (0.7 s of it the event loop's thread), then a
    # baseline window of 50 flows costing the plain mitmdump 0.1 s: 10 ms a flow, 7 ms on the loop,
    # 100 flows / 10 s active = 10 flows/s; the baseline 2 ms a flow.
    samples = [{"t": 0.0, "active": "addon", "flows_addon": 0, "flows_baseline": 0, "cpu_addon": 1.0,
                "cpu_addon_main": 0.5, "cpu_baseline": 0.5, "parts": 3},
               {"t": 10.0, "active": "addon", "flows_addon": 100, "flows_baseline": 0, "cpu_addon": 2.0,
                "cpu_addon_main": 1.2, "cpu_baseline": 0.5, "parts": 9},
               {"t": 20.0, "active": "baseline", "flows_addon": 100, "flows_baseline": 50, "cpu_addon": 2.0,
                "cpu_addon_main": 1.2, "cpu_baseline": 0.6, "parts": 9}]
    cost = soak_mitmdump._cost(samples, 0.0, 20.0)
    assert cost == pytest.approx({"cpu_ms_per_flow": 10.0, "main_ms_per_flow": 7.0, "flows_per_s": 10.0, "parts": 9,
                                  "baseline_cpu_ms_per_flow": 2.0})
    assert soak_mitmdump._cost([{"t": 1.0, "flows_addon": 0}], 0.0, 20.0) == {}  # a run that did not sample CPU


def test_cost_ratio_against_the_baseline_in_the_same_minutes():
    # Four minutes; the host slows down (the baseline's CPU per flow 2, 2, 4, 4 ms) and the addon's
    # follows (6, 6, 12, 12): the ratio stays 3, its projected change 0.
    rows = [{"minute": i + 1, "t_mid": 30.0 + 60 * i, "full": True, "added_p50": 1.0, "added_p99": 2.0,
             "cpu_ms_per_flow": c, "baseline_cpu_ms_per_flow": b}
            for i, (c, b) in enumerate([(6, 2), (6, 2), (12, 4), (12, 4)])]
    samples = [{"t": 60.0 * i + 59, "addon_idle": True, "flows_addon": 1000 * (i + 1), "flows_baseline": 500 * (i + 1),
                "rss_addon": 200.0, "fds_addon": 9, "rss_baseline": 100.0, "fds_baseline": 7} for i in range(4)]
    out = soak_mitmdump.flatness(rows, samples, _args(minute_s=60.0), run_s=240.0)
    assert out["cost"]["first"] == pytest.approx(3.0) and out["cost"]["last"] == pytest.approx(3.0)
    assert out["cost"]["change"] == pytest.approx(0.0, abs=1e-9)
    assert (out["cost"]["addon_cpu_first"], out["cost"]["addon_cpu_last"]) == pytest.approx((9.0, 9.0))
