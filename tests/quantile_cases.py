"""Groups of values built to break a sloppy out-of-core percentile (``analyzer.engine.metrics.
exact_quantiles``), and the check of one engine's answer against NumPy's on the same values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from analyzer.engine import metrics as engine_metrics
from analyzer.engine.metrics import Metrics

VALUES_SCHEMA = pa.schema([("g", pa.string()), ("v", pa.float64())])


def adversarial_groups() -> dict[str | None, np.ndarray]:
    rng = np.random.default_rng(7)
    edge = np.repeat([1.0, 2.0, 3.0], [40, 35, 25])  # ties straddling the ranks and the bins' edges
    return {
        "one": np.array([42.5]),
        "two": np.array([-3.0, 7.0]),
        "negative": -rng.lognormal(2, 1, size=997),
        "mixed_sign": np.concatenate([-rng.exponential(5, 600), rng.exponential(5, 600), [0.0, -0.0, 0.0]]),
        "ties_on_edges": np.concatenate([edge, np.nextafter(2.0, 3.0) * np.ones(3), np.nextafter(2.0, 1.0) * np.ones(2)]),
        "one_bin_huge_n": np.full(30_000, 13.25),
        "two_values_huge_n": np.repeat([5.0, 5.000000000000001], [20_000, 10_001]),
        "on_a_rank": np.arange(101, dtype="float64") * 0.5,  # (n - 1) * q is an integer for every q
        "eleven": np.arange(11, dtype="float64") ** 3,
        "non_finite": np.array([np.nan, np.inf, -np.inf, 1.0, 4.0, np.nan, 9.0, -np.inf]),
        "only_non_finite": np.array([np.nan, np.inf, -np.inf]),
        "wide": np.concatenate([[-1.5e308, 1.5e308, 5e-324], rng.normal(0, 1e-3, 5000)]),
        "wide_finite": np.concatenate([[-1e300, 1e300], rng.normal(0, 1e-3, 3000)]),
        "long_tail": rng.lognormal(3, 2.5, size=20_000),
        None: np.array([1.0, 2.0, 2.0, 10.0]),  # a NULL group key is a group of its own
    }


def frame_of(groups: dict[str | None, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame({"g": np.concatenate([[k] * len(v) for k, v in groups.items()]).astype(object),
                         "v": np.concatenate(list(groups.values()))})


def engine_stats(metrics: Metrics, groups: dict[str | None, np.ndarray], monkeypatch, *, bins: int = 7,
                 exact_max: int = 5, cell_budget: int = 0) -> dict:
    """Every group's statistic on ``metrics``' engine, with small bins so that each rank takes
    several passes (the default bins would fetch these groups' values at once). ``cell_budget``
    > 0: bins per interval as many as that budget allows (the default's adaptive bins)."""
    monkeypatch.setattr(engine_metrics, "QUANTILE_BINS", bins)
    monkeypatch.setattr(engine_metrics, "CELL_BUDGET", cell_budget)
    monkeypatch.setattr(engine_metrics, "EXACT_MAX", exact_max)
    monkeypatch.setattr(engine_metrics, "HOLISTIC_MAX", 0)  # the rank passes, not the engine's own percentile
    metrics.engine.register_frame("adversarial_values", frame_of(groups), VALUES_SCHEMA)
    frame = metrics.grouped_stats("adversarial_values", {"v": "v"}, ["g"])
    return {(None if not isinstance(g, str) else g): s for g, s in zip(frame["g0"], frame["v"], strict=True)}


CELL_SCHEMA = pa.schema([("cell", pa.int64()), ("v", pa.float64())])
# Groups made of several cells, overlapping as the pooled and per-model ITL do (a cell in several
# groups, groups of one cell beside the union of all), built from the adversarial groups' values.
UNIONS = {
    "all": None,  # every cell
    "signs": ("negative", "mixed_sign", "two"),
    "heavy_ties": ("ties_on_edges", "one_bin_huge_n", "two_values_huge_n"),
    "tail_and_wide": ("long_tail", "wide_finite"),
    "tail_alone": ("long_tail",),
    "empty_and_one": ("only_non_finite", "one"),
}


def union_stats(engine, monkeypatch, *, bins: int = 7, exact_max: int = 5, cell_budget: int = 0,
                range_filter: int | None = None) -> tuple[dict, dict]:
    """(got, values): each of :data:`UNIONS` by ``exact_quantiles`` over shared cells, and its finite
    values, for the check against NumPy. ``range_filter``: the most open intervals a pass filters by
    comparisons (0: always the (cell, bin) semi-join)."""
    from analyzer.engine.metrics import STAT_FRACTIONS, exact_quantiles

    if range_filter is not None:
        monkeypatch.setattr(engine_metrics, "MAX_RANGE_FILTER", range_filter)
    monkeypatch.setattr(engine_metrics, "QUANTILE_BINS", bins)
    monkeypatch.setattr(engine_metrics, "CELL_BUDGET", cell_budget)
    monkeypatch.setattr(engine_metrics, "EXACT_MAX", exact_max)
    groups = {k: v for k, v in adversarial_groups().items() if k is not None}
    cell_of = {name: i for i, name in enumerate(groups)}
    finite = {name: v[np.isfinite(v)] for name, v in groups.items()}
    frame = pd.DataFrame({"cell": np.concatenate([[cell_of[k]] * len(v) for k, v in finite.items()]).astype("int64"),
                          "v": np.concatenate(list(finite.values()))})
    engine.register_frame("cell_values", frame, CELL_SCHEMA)
    values, wanted = {}, {}
    for name, members in UNIONS.items():
        members = tuple(groups) if members is None else members
        v = np.concatenate([finite[m] for m in members])
        values[name] = v
        if v.size:
            wanted[name] = (v.size, float(v.min()), float(v.max()), [cell_of[m] for m in members])
    got = exact_quantiles(engine, "SELECT cell, v FROM cell_values", wanted, STAT_FRACTIONS)
    return got, values


def check_unions(got: dict, values: dict) -> None:
    """Every union's percentiles are NumPy's to 1e-12; a rank that is one of its values, that value."""
    assert set(got) == set(UNIONS)
    for name, qs in got.items():
        want = np.percentile(values[name], [50, 90, 95, 99])
        for g, w in zip(qs, want, strict=True):
            assert abs(g - w) <= 1e-12 * max(1.0, abs(w)), (name, qs, want)
            if np.isin(w, values[name]):
                assert g == w, (name, qs, want)
