"""Comparing tables from two routes to the same capture (live, flow file, HAR): row order aside."""

from __future__ import annotations

import pandas as pd


def rows_in_order(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its rows in one canonical order (sorted on every column's text), index reset."""
    df = df.reset_index(drop=True)
    return df.loc[df.astype(str).sort_values(list(df.columns)).index].reset_index(drop=True)
