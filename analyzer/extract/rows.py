"""The extractors' output: rows per table."""

from __future__ import annotations

from analyzer.schema import TABLES

Rows = dict[str, list[dict]]


def new_rows() -> Rows:
    return {name: [] for name in TABLES}
