"""``--where-a``/``--where-b`` filters (analyzer/compare/where.py): one SQL boolean expression over
the per-answer frame, run by DuckDB with nothing else in reach."""

from __future__ import annotations

import pandas as pd
import pytest

from analyzer.compare.where import WhereError, check_expression, select_rows

FRAME = pd.DataFrame({
    "model": ["gpt-4o", "o3", None, "it's"],
    "label": ["fra", "iad", "fra", None],
    "ttft_ms": [100.0, 250.0, None, 90.0],
})


@pytest.mark.parametrize("expr, rows", [
    ("label = 'fra'", [0, 2]),
    ("label = 'fra' AND ttft_ms > 50", [0]),  # NULL ttft: not selected (SQL's WHERE)
    ("model IN ('o3', 'gpt-4o') OR ttft_ms < 95", [0, 1, 3]),
    ("model = 'it''s'", [3]),  # a doubled quote inside a literal
    ("label = 'a;b' OR label = 'iad'", [1]),  # ';' inside a string literal is part of one expression
    ("coalesce(label, 'none') = 'none'", [3]),
    ("(ttft_ms BETWEEN 80 AND 120)", [0, 3]),
])
def test_selects_rows_by_hand(expr, rows):
    picked = select_rows(FRAME, expr)
    assert picked.equals(FRAME.iloc[rows].reset_index(drop=True))


@pytest.mark.parametrize("expr, message", [
    ("label = 'fra'; DROP TABLE answers", "';' is not allowed"),
    ("label = 'fra' -- and the rest", "comments are not allowed"),
    ("label = 'fra' /* x */", "comments are not allowed"),
    ("1=1) UNION SELECT 1 FROM (SELECT 1", "unbalanced ')'"),
    ("(label = 'fra'", "unbalanced '('"),
    ("label = 'fra", "unterminated string literal"),
    ("   ", "empty filter"),
])
def test_rejects_anything_but_one_expression(expr, message):
    with pytest.raises(WhereError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_expression(expr)
    with pytest.raises(WhereError):
        select_rows(FRAME, expr)


@pytest.mark.parametrize("expr, message", [
    ("no_such = 1", "no_such"),
    ("model", "cannot be evaluated"),  # a string is not a boolean
    ("EXISTS (SELECT * FROM read_csv('/etc/passwd'))", "cannot be evaluated"),  # no file access
    ("EXISTS (SELECT * FROM secret_frame)", "cannot be evaluated"),  # no other Python variable
    ("EXISTS (SELECT * FROM view)", "cannot be evaluated"),  # not even the function's own locals
])
def test_errors_are_one_line_and_nothing_outside_is_reachable(expr, message):
    secret_frame = pd.DataFrame({"x": [1]})  # noqa: F841 - what a replacement scan would find
    with pytest.raises(WhereError, match=message) as info:
        select_rows(FRAME, expr)
    assert "\n" not in str(info.value)
