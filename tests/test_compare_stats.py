"""The statistics of ``analyze compare`` (analyzer/compare/stats.py), checked against numbers worked
out by hand, against the exact bootstrap distribution of the median, and by simulation: two samples
of one distribution must (almost) never be called a change; a planted shift must be found."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analyzer.compare import stats


def test_hand_worked_small_example():
    # A = 10 20 30 40 50, B = 35 45 55 65 75: medians 30 and 55, so B − A = 25.
    # U of B against A counts pairs with b > a: 35 beats 3 (10, 20, 30), 45 beats 4, 55/65/75 beat 5 → U = 22.
    # Exact null distribution (no ties, n = m = 5): the C(10, 5) = 252 orderings are equally likely;
    # U ≥ 22 means a "deficit" 25 − U of 0..3, i.e. partitions of 0, 1, 2, 3 into ≤ 5 parts ≤ 5:
    # 1 + 1 + 2 + 3 = 7 orderings. Two-sided p = 2 · 7/252 = 14/252 ≈ 0.0556 > 0.05.
    a, b = [10, 20, 30, 40, 50], [35, 45, 55, 65, 75]
    r = stats.two_sample(a, b, resamples=2000, seed=1)
    assert (r.a.n, r.a.p50, r.b.n, r.b.p50) == (5, 30.0, 5, 55.0)
    # p90 by hand, linear between closest ranks: rank 0.9 · 4 = 3.6 → 40 + 0.6 · 10 = 46; 65 + 6 = 71.
    assert r.a.p90 == pytest.approx(46.0) and r.b.p90 == pytest.approx(71.0)
    assert r.diff_p50 == 25.0
    assert r.u_statistic == 22.0
    assert r.p_value == pytest.approx(14 / 252, rel=1e-12)
    # A bootstrap median is one of the sample values, so the interval's ends are differences of them.
    lo, hi = r.ci95
    assert lo <= 25.0 <= hi
    assert {lo, hi} <= {bv - av for av in a for bv in b}
    # Visible shift, but n = 5 and p > alpha: not called a change.
    [c] = stats.compare_all([("ttft", "all", a, b)], resamples=2000, seed=1)
    assert c.verdict == stats.NO_DIFFERENCE and c.p_value == pytest.approx(14 / 252)


def test_hand_worked_with_ties_and_even_n():
    # A = 1 2 2 4, B = 2 3 5 6 (even n: median = mean of the middle two): 2 and 4, B − A = 2.
    # U: b=2 ties two 2s and beats 1 → 1 + 2·½ = 2; b=3 beats 1,2,2 → 3; b=5 and b=6 beat all 4 → U = 2+3+4+4 = 13.
    r = stats.two_sample([1, 2, 2, 4], [2, 3, 5, 6], min_n=4)
    assert (r.a.p50, r.b.p50, r.diff_p50) == (2.0, 4.0, 2.0)
    assert r.u_statistic == 13.0
    assert 0 < r.p_value <= 1


def test_holm_by_hand():
    # m = 3, sorted 0.01, 0.03, 0.04 → 3·0.01 = 0.03, 2·0.03 = 0.06, 1·0.04 = 0.04 → running max 0.06.
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm([]) == []


def test_insufficient_data_below_min_n_and_left_out_of_the_family():
    rng = np.random.default_rng(3)
    big_a, big_b = rng.normal(100, 5, 200), rng.normal(150, 5, 200)
    out = stats.compare_all([("ttft", "x", [1, 2, 3, 4], [5, 6, 7, 8, 9]), ("ttft", "y", big_a, big_b),
                             ("ttft", "z", [], [1, 2, 3, 4, 5, 6])], min_n=5)
    assert [c.verdict for c in out] == [stats.INSUFFICIENT, stats.SLOWER, stats.INSUFFICIENT]
    assert out[0].ci95 is None and out[0].p_value is None and out[0].diff_p50 == 4.5  # 7 − 2.5: shown, not tested
    assert out[2].diff_p50 is None and out[2].a.n == 0 and out[2].a.p50 is None
    # Only one comparison had enough data: Holm over a family of one leaves its p-value as it is.
    assert out[1].p_value == out[1].p_raw


def test_nan_values_are_dropped():
    r = stats.two_sample([1, np.nan, 2, 3, np.inf, 4, 5], [2, 3, 4, 5, 6], min_n=5)
    assert r.a.n == 5 and r.a.p50 == 3.0


def _exact_odd_median_cdf(x: np.ndarray) -> np.ndarray:
    """P(bootstrap median ≤ x₍ⱼ₎) for odd n: at least k = (n+1)/2 of n draws fall on the j smallest
    values, each draw with probability j/n (a binomial tail, summed by hand)."""
    n = x.size
    k = (n + 1) // 2
    out = []
    for j in range(1, n + 1):
        q = j / n
        out.append(sum(math.comb(n, i) * q**i * (1 - q) ** (n - i) for i in range(k, n + 1)))
    return np.array(out)


def test_order_statistic_bootstrap_has_the_exact_distribution():
    x = np.array([3.0, 7.0, 8.0, 15.0, 21.0, 40.0, 41.0])  # n = 7, sorted, distinct
    medians = stats.bootstrap_medians(x, 200_000, np.random.default_rng(11))
    empirical = np.array([(medians <= v).mean() for v in x])
    assert np.abs(empirical - _exact_odd_median_cdf(x)).max() < 0.005
    assert set(np.unique(medians)) <= set(x)


def test_order_statistic_bootstrap_matches_brute_force_resampling_for_even_n():
    x = np.array([5.0, 1.0, 9.0, 2.0, 14.0, 3.0])  # n = 6: medians are means of two sample values
    rng = np.random.default_rng(5)
    fast = stats.bootstrap_medians(x, 100_000, rng)
    brute = np.median(x[rng.integers(0, x.size, size=(100_000, x.size))], axis=1)
    support = np.union1d(np.unique(fast), np.unique(brute))
    f = np.array([(fast == s).mean() for s in support])
    g = np.array([(brute == s).mean() for s in support])
    assert np.abs(f - g).max() < 0.006
    assert abs(fast.mean() - brute.mean()) < 0.05


def test_bootstrap_is_reproducible_with_a_seed():
    rng = np.random.default_rng(0)
    a, b = rng.exponential(100, 300), rng.exponential(100, 300)
    assert stats.median_diff_ci(a, b, seed=42) == stats.median_diff_ci(a, b, seed=42)
    assert stats.median_diff_ci(a, b, seed=42) != stats.median_diff_ci(a, b, seed=43)


def _latencies(rng: np.random.Generator, n: int) -> np.ndarray:
    """Right-skewed, latency-like: 300 ms plus a log-normal tail (median ≈ 300 + e^5.5 ≈ 545 ms)."""
    return 300.0 + rng.lognormal(5.5, 0.6, n)


def test_same_distribution_is_almost_never_called_a_change():
    # 400 independent runs, each a family of 4 metrics × 2 groups drawn from one distribution on
    # both sides. Holm controls the family-wise rate at alpha: a run with any "slower"/"faster" in
    # it should happen in at most ~5% of runs (binomial sd over 400 runs ≈ 1.1 points).
    false_runs = 0
    false_single = 0
    for seed in range(400):
        rng = np.random.default_rng(10_000 + seed)
        family = [(m, g, _latencies(rng, 60), _latencies(rng, 60)) for m in ("ttft", "itl", "tpot", "e2e")
                  for g in ("x", "y")]
        out = stats.compare_all(family, resamples=500, seed=seed)
        called = [c.verdict in (stats.SLOWER, stats.FASTER) for c in out]
        false_runs += any(called)
        false_single += called[0]
    assert false_runs / 400 <= 0.08
    assert false_single / 400 <= 0.03  # one comparison of eight: far below alpha after Holm


def test_single_comparison_false_change_rate_is_at_most_alpha():
    calls = 0
    for seed in range(600):
        rng = np.random.default_rng(seed)
        [c] = stats.compare_all([("ttft", "all", _latencies(rng, 40), _latencies(rng, 40))], resamples=500,
                                seed=seed)
        calls += c.verdict != stats.NO_DIFFERENCE
    assert calls / 600 <= 0.05 + 2.5 * math.sqrt(0.05 * 0.95 / 600)


@pytest.mark.parametrize("shift", [80.0, -80.0])
def test_planted_shift_is_detected_and_inside_the_interval(shift):
    found = 0
    covered = 0
    for seed in range(50):
        rng = np.random.default_rng(500 + seed)
        a = _latencies(rng, 300)
        b = _latencies(rng, 300) + shift
        [c] = stats.compare_all([("ttft", "all", a, b)], seed=seed)
        found += c.verdict == (stats.SLOWER if shift > 0 else stats.FASTER)
        covered += c.ci95[0] <= shift <= c.ci95[1]
    assert found >= 45  # power well above 90% for this shift and n
    assert covered >= 43  # nominal 95% coverage of the true difference of medians


def test_identical_constant_samples_are_no_difference_and_constant_shift_is_found():
    [same, shifted] = stats.compare_all([("ttft", "all", [100.0] * 20, [100.0] * 20),
                                         ("e2e", "all", [100.0] * 20, [250.0] * 20)])
    assert same.verdict == stats.NO_DIFFERENCE and same.ci95 == (0.0, 0.0)
    assert shifted.verdict == stats.SLOWER and shifted.ci95 == (150.0, 150.0) and shifted.diff_p50 == 150.0
