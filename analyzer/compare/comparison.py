"""Two sets of answers in, one :class:`CompareResult` out: the samples per metric and group, and the
statistics of :mod:`analyzer.compare.stats` on each pair. No I/O: the frames come from
:mod:`analyzer.compare.answers` (and, for ``--where``, :mod:`analyzer.compare.where`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analyzer.compare import stats

# --metric name -> the per-answer column compared (one value per answer: docs/metrics.md).
METRICS: dict[str, str] = {"ttft": "ttft_ms", "itl": "itl_p50_ms", "tpot": "tpot_ms", "e2e": "e2e_ms"}
ALL_GROUP = "all"
UNKNOWN_GROUP = "unknown"


@dataclass(frozen=True)
class Side:
    """What one side of the comparison is: the paths read, the filter applied, how many answers."""

    paths: tuple[str, ...]
    where: str | None
    answers: int
    captures: tuple[str, ...]

    def as_dict(self) -> dict:
        return {"paths": list(self.paths), "where": self.where, "answers": self.answers,
                "captures": list(self.captures)}


@dataclass(frozen=True)
class Settings:
    """How the statistics were run (all of it goes into the output, so a result can be redone)."""

    metrics: tuple[str, ...]
    by: str | None
    alpha: float = stats.DEFAULT_ALPHA
    resamples: int = stats.DEFAULT_RESAMPLES
    seed: int = stats.DEFAULT_SEED
    min_n: int = stats.DEFAULT_MIN_N

    def as_dict(self) -> dict:
        return {"metrics": list(self.metrics), "by": self.by, "alpha": self.alpha, "resamples": self.resamples,
                "seed": self.seed, "min_n": self.min_n, "correction": stats.CORRECTION,
                "confidence": 0.95, "test": "mann-whitney-u two-sided", "interval": "percentile bootstrap"}


@dataclass
class CompareResult:
    a: Side
    b: Side
    settings: Settings
    comparisons: list[stats.Comparison]
    # (metric, group) -> (A values, B values): kept for the HTML page's CDFs.
    samples: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)


def parse_metrics(text: str) -> tuple[str, ...]:
    """``"ttft,itl"`` -> ``("ttft", "itl")``; ValueError naming an unknown metric."""
    names = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise ValueError(f"unknown metric {', '.join(unknown) or repr(text)}: choose from {', '.join(METRICS)}")
    return names


def side(frame: pd.DataFrame, paths: Sequence[str], where: str | None) -> Side:
    caps = tuple(sorted(str(c) for c in frame["capture"].dropna().unique())) if len(frame) else ()
    return Side(tuple(str(p) for p in paths), where, int(len(frame)), caps)


def _group_rows(frame: pd.DataFrame, by: str | None) -> dict[str, np.ndarray]:
    """Group name -> row positions in ``frame`` (``unknown`` for null or empty keys; ``all`` without ``by``)."""
    if by is None:
        return {ALL_GROUP: np.arange(len(frame))}
    values = frame[by].astype("str").reset_index(drop=True)
    keys = values.mask(values.isna() | (values == ""), UNKNOWN_GROUP).fillna(UNKNOWN_GROUP)
    return {str(k): np.asarray(v, dtype="int64") for k, v in keys.groupby(keys, sort=False).indices.items()}


def compare_frames(a: pd.DataFrame, b: pd.DataFrame, a_side: Side, b_side: Side,
                   settings: Settings) -> CompareResult:
    """Every (metric, group) pair of ``a`` and ``b`` compared; groups are the union of both sides'."""
    # Row positions of each group, found once (an hourly grouping of a month has hundreds of groups).
    rows_a, rows_b = _group_rows(a, settings.by), _group_rows(b, settings.by)
    groups = sorted(set(rows_a) | set(rows_b)) if settings.by else [ALL_GROUP]
    none = np.empty(0, dtype="int64")
    samples: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for metric in settings.metrics:
        column = METRICS[metric]
        va = a[column].to_numpy(dtype="float64", na_value=np.nan)
        vb = b[column].to_numpy(dtype="float64", na_value=np.nan)
        for group in groups:
            samples[(metric, group)] = (stats.finite(va[rows_a.get(group, none)]),
                                        stats.finite(vb[rows_b.get(group, none)]))
    comparisons = stats.compare_all(
        [(m, g, sa, sb) for (m, g), (sa, sb) in samples.items()],
        alpha=settings.alpha, resamples=settings.resamples, seed=settings.seed, min_n=settings.min_n)
    return CompareResult(a_side, b_side, settings, comparisons, samples)


def as_dict(result: CompareResult) -> dict:
    """The JSON document of ``analyze compare`` (docs/compare.md describes every field)."""

    def summary(s: stats.Summary) -> dict:
        return {"n": s.n, "p50": s.p50, "p90": s.p90}

    counts = {v: 0 for v in stats.VERDICTS}
    for c in result.comparisons:
        counts[c.verdict] += 1
    return {
        "a": result.a.as_dict(),
        "b": result.b.as_dict(),
        "settings": result.settings.as_dict(),
        "comparisons": [
            {"metric": c.metric, "group": c.group, "a": summary(c.a), "b": summary(c.b),
             "diff_p50_ms": c.diff_p50, "ci95_ms": list(c.ci95) if c.ci95 else None,
             "p_value": c.p_value, "verdict": c.verdict}
            for c in result.comparisons
        ],
        "verdicts": counts,
    }
