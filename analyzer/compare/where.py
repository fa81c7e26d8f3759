"""``--where-a`` / ``--where-b``: one SQL boolean expression over the per-answer columns, run by DuckDB.

The expression is checked before it runs: a single expression, so no ``;``, no comment (``--``,
``/*``) and parentheses that balance outside string literals (an expression cannot close the
``WHERE (…)`` it is put in). It runs in an in-memory DuckDB connection that sees only the answers
frame, with external access (files, extensions, HTTP) and scans of Python variables switched off.
"""

from __future__ import annotations

import pandas as pd


class WhereError(ValueError):
    """A filter that is not a single boolean SQL expression over the answer columns (one line)."""


def check_expression(expr: str) -> str:
    """``expr`` stripped, or WhereError saying why it is not a single expression."""
    text = expr.strip()
    if not text:
        raise WhereError("empty filter expression")
    depth = 0
    quote: str | None = None
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == quote:
                if i + 1 < len(text) and text[i + 1] == quote:  # '' or "" inside a literal
                    i += 1
                else:
                    quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == ";":
            raise WhereError("a filter is one SQL expression: ';' is not allowed")
        elif text.startswith("--", i) or text.startswith("/*", i):
            raise WhereError("a filter is one SQL expression: comments are not allowed")
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise WhereError("unbalanced ')' in the filter expression")
        i += 1
    if quote:
        raise WhereError("unterminated string literal in the filter expression")
    if depth:
        raise WhereError("unbalanced '(' in the filter expression")
    return text


def select_rows(frame: pd.DataFrame, expr: str) -> pd.DataFrame:
    """The rows of ``frame`` for which ``expr`` is true (NULL counts as false, as in SQL's WHERE)."""
    import duckdb

    text = check_expression(expr)
    rows = frame.reset_index(drop=True)
    # Only the columns an expression may name, plus the row number to take the rows back with.
    view = rows.assign(_row=range(len(rows)))
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET enable_progress_bar = false")  # DuckDB draws it on stdout
        con.register("answers", view)
        con.execute("SET enable_external_access = false")
        con.execute("SET python_enable_replacements = false")  # no other Python variable is a table
        con.execute("SET lock_configuration = true")
        try:
            picked = con.execute(f"SELECT _row FROM answers WHERE ({text})").fetchnumpy()["_row"]
        except duckdb.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WhereError(f"filter {text!r} cannot be evaluated: {first}") from exc
    finally:
        con.close()
    return rows.iloc[sorted(picked.tolist())].reset_index(drop=True)
