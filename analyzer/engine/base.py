"""The engine interface: a capture's tables as SQL views, queries in, pandas DataFrames out.

Every metric of the report is one SQL query (``analyzer.engine.metrics``) written once in the SQL
both DuckDB and Spark understand. Where the two dialects differ the query calls an entry of the
small per-engine :class:`Dialect` table below (the percentile function and its array literal, the
date formatting, a list's rows, a row number, how a string literal escapes). Seven entries did not
justify a transpiler dependency (SQLGlot) between the query and the engine: the SQL that runs is the
SQL in the source.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from analyzer.schema import TABLES

# A value is counted by a statistic when it is a finite number: ``abs(x) < Infinity`` is false for
# NULL, ±Infinity and NaN alike in both engines (both order NaN above every other double).
FINITE = "abs({x}) < CAST('Infinity' AS DOUBLE)"


@dataclass(frozen=True)
class Dialect:
    """What differs between the engines' SQL, as format strings."""

    name: str
    quantiles: str  # {x}: value, {qs}: comma-separated fractions -> an array of exact linear percentiles
    day: str  # {ts} -> 'YYYY-MM-DD' (UTC: every session runs in UTC)
    hour: str  # {ts} -> 'YYYY-MM-DDTHH:00Z'
    timestamp_type: str  # the SQL type of a UTC timestamp column
    explode: str  # {x}: a list -> one row per element (in a SELECT list)
    row_id: str  # a number unique to each row of the query it is in (not ordered, not dense)
    backslash_escapes: bool  # whether a backslash escapes in a string literal

    def q(self, x: str, fractions: Sequence[float]) -> str:
        return self.quantiles.format(x=x, qs=", ".join(repr(float(f)) for f in fractions))

    def literal(self, text: str) -> str:
        """``text`` as a string literal (a regular expression's backslashes kept)."""
        if self.backslash_escapes:
            return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
        return "'" + text.replace("'", "''") + "'"


DUCKDB = Dialect(
    name="duckdb",
    # quantile_cont interpolates between closest ranks: NumPy's default ("linear") method. Holistic (it
    # holds a group's values): for sources up to Engine.holistic_max_rows rows; larger ones take rank passes.
    quantiles="quantile_cont({x}, [{qs}])",
    day="strftime({ts}, '%Y-%m-%d')",
    hour="strftime({ts}, '%Y-%m-%dT%H:00Z')",
    timestamp_type="TIMESTAMPTZ",
    explode="unnest({x})",
    row_id="row_number() OVER ()",
    backslash_escapes=False,
)

SPARK = Dialect(
    name="spark",
    # percentile (not percentile_approx) is exact, the same linear interpolation.
    quantiles="percentile({x}, array({qs}))",
    day="date_format({ts}, 'yyyy-MM-dd')",
    hour="date_format({ts}, \"yyyy-MM-dd'T'HH:00'Z'\")",
    timestamp_type="TIMESTAMP",
    explode="explode({x})",
    # one pass, no shuffle (row_number() OVER () would move every row to one partition)
    row_id="monotonically_increasing_id()",
    backslash_escapes=True,  # spark.sql.parser.escapedStringLiterals is false by default
)

SQL_TYPES = {pa.string(): "STRING", pa.float64(): "DOUBLE", pa.int64(): "BIGINT", pa.bool_(): "BOOLEAN"}


def sql_type(dialect: Dialect, typ: pa.DataType) -> str:
    if pa.types.is_timestamp(typ):
        return dialect.timestamp_type
    return SQL_TYPES[typ]


class Engine(abc.ABC):
    """A query engine over one capture's tables (one or several capture directories read as one).

    After :meth:`register_capture` every table of ``analyzer/schema.py`` is a view of that name with
    all of the table's columns (a column missing from older parts reads as null) plus ``_capture``
    (the capture directory's name); a capture of several directories is their union.
    """

    dialect: Dialect
    # The most rows a statistic's source may have for the engine's own (holistic) exact percentile,
    # which holds the values; larger sources take analyzer.engine.metrics.exact_quantiles' passes.
    holistic_max_rows: int = 4_000_000

    @abc.abstractmethod
    def register_parts(self, name: str, parts: Sequence[tuple[str, Sequence[str]]], schema: pa.Schema) -> None:
        """View ``name`` over ``parts`` = [(capture name, part files)], with ``schema``'s columns + ``_capture``."""

    @abc.abstractmethod
    def register_frame(self, name: str, frame: pd.DataFrame, schema: pa.Schema) -> None:
        """A small pandas frame (per-answer rows, the folding map) as table ``name`` with ``schema``."""

    @abc.abstractmethod
    def materialize(self, name: str, query: str) -> None:
        """Run ``query`` once and keep its result as table ``name`` (spilling to disk if it must)."""

    @abc.abstractmethod
    def view(self, name: str, query: str) -> None:
        """``query`` as view ``name`` (run again by every query that reads it)."""

    @abc.abstractmethod
    def drop(self, name: str) -> None:
        """Forget table ``name`` (a materialized result no later query needs: its memory back)."""

    @abc.abstractmethod
    def sql(self, query: str) -> pd.DataFrame:
        """The result of ``query`` as a pandas DataFrame (timestamps tz-aware UTC)."""

    def prepared(self, name: str) -> bool:
        """Whether the tables called ``name`` (a set a caller builds once per engine, such as the
        telemetry sightings) are built: :meth:`mark_prepared` says so once they are."""
        return name in self.__dict__.get("_prepared", ())

    def mark_prepared(self, name: str) -> None:
        self.__dict__.setdefault("_prepared", set()).add(name)

    def close(self) -> None:  # noqa: B027 (optional for a backend)
        """Release what the engine holds (temporary files, views)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def register_capture(self, capture) -> None:
        """Every table of ``capture`` as a view (see the class docstring)."""
        for name, schema in TABLES.items():
            parts = []
            for path in capture.paths:
                single = type(capture)((path,))
                parts.append((path.name, single.part_files(name)))
            self.register_parts(name, parts, schema)
        self.capture = capture


def empty_select(dialect: Dialect, schema: pa.Schema) -> str:
    """A query of no rows with ``schema``'s columns (a table without any part yet)."""
    cols = ", ".join(f'CAST(NULL AS {sql_type(dialect, f.type)}) AS "{f.name}"' for f in schema)
    return f"SELECT {cols}, CAST(NULL AS STRING) AS _capture WHERE 1 = 0"
