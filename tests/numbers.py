"""Comparing report dicts whose floats come from a parallel SQL engine.

DuckDB sums in parallel, so a mean may differ in its last bit between two runs over the same rows;
every other value (counts, percentiles, strings) must be identical.
"""

from __future__ import annotations

from typing import Any

import pytest


def same_report(got: Any, want: Any, rel: float = 1e-12) -> bool:
    """``got == want`` with floats compared to ``rel``; raises AssertionError naming the first difference."""
    _compare(got, want, "", rel)
    return True


def _compare(got: Any, want: Any, where: str, rel: float) -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), f"{where or '.'}: keys {got!r} vs {want!r}"
        for key in want:
            _compare(got[key], want[key], f"{where}.{key}", rel)
    elif isinstance(want, list | tuple):
        assert isinstance(got, list | tuple) and len(got) == len(want), f"{where}: {got!r} vs {want!r}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _compare(g, w, f"{where}[{i}]", rel)
    elif isinstance(want, float) and not isinstance(want, bool):
        assert got == pytest.approx(want, rel=rel, abs=1e-9), f"{where}: {got!r} vs {want!r}"
    else:
        assert got == want, f"{where}: {got!r} vs {want!r}"
