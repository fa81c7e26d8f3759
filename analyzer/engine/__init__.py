"""Query engines for the report's metrics: DuckDB (default, embedded, out of core) and Spark.

Notebook use::

    from analyzer.store import load_capture
    from analyzer.engine import answer_metrics, open_metrics

    capture = load_capture("captures/sample.parquet")
    per_answer = answer_metrics(capture)             # pandas: one row per turn or API call
    m = open_metrics(capture, engine="duckdb")       # or engine="spark", master="local[2]"
    m.latency_block()["observed"]["ttft_ms"]         # the report's numbers
    m.engine.sql("SELECT model, count(*) FROM answers GROUP BY model")   # any SQL over the tables

Every table of the capture is a view of its name; the metric tables (``answers``, ``gap_answers``,
``answer_text``, ``beacons`` …) are described in ``analyzer.engine.metrics`` and docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from analyzer.engine.base import DUCKDB, SPARK, Dialect, Engine
from analyzer.engine.metrics import ANSWER_COLUMNS, GROUP_KEYS, STATS_KEYS, Metrics

ENGINES = ("duckdb", "spark")


class EngineError(Exception):
    """An engine that cannot start (a bad option, pyspark or Java missing); the message is one line."""


def open_engine(engine: str = "duckdb", *, memory_limit: str | None = None, spark_master: str | None = None,
                spark_session: Any = None, threads: int | None = None) -> Engine:
    """A new engine: ``duckdb`` (``memory_limit``, e.g. ``1GB``) or ``spark`` (``spark_master``, default
    ``local[2]``, or an existing ``spark_session``)."""
    if engine == "duckdb":
        import duckdb

        from analyzer.engine.duck import DEFAULT_MEMORY_LIMIT, DuckDBEngine

        try:
            return DuckDBEngine(memory_limit=memory_limit or DEFAULT_MEMORY_LIMIT, threads=threads)
        except duckdb.Error as exc:
            raise EngineError(f"DuckDB cannot start: {str(exc).splitlines()[0]}") from exc
    if engine == "spark":
        try:
            from analyzer.engine.spark import DEFAULT_MASTER, SparkEngine

            return SparkEngine(master=spark_master or DEFAULT_MASTER, session=spark_session)
        except ImportError as exc:
            raise EngineError(f"--engine spark needs pyspark ({exc}): pip install pyspark") from exc
        except Exception as exc:  # py4j: no Java, an unreachable master
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise EngineError(f"Spark cannot start ({first}): it needs a Java runtime (java on PATH or "
                              f"JAVA_HOME) and a reachable --spark-master") from exc
    raise ValueError(f"unknown engine {engine!r} (one of {', '.join(ENGINES)})")


def open_metrics(capture, engine: str | Engine = "duckdb", *, by: str | None = None, **options) -> Metrics:
    """The report's metric tables of ``capture`` prepared on an engine (a name or an open Engine)."""
    if isinstance(engine, Engine):
        return Metrics(capture, engine, by=by, close_engine=False)
    return Metrics(capture, open_engine(engine, **options), by=by)


def answer_metrics(capture, by: str | None = None, engine: str | Engine = "duckdb", **options) -> pd.DataFrame:
    """One row per answer (conversation turn or API call): flow_id, kind (``turn`` | ``api``),
    conversation_id, model, capture, label, day, hour, host, stream_format, started_at, ttft_ms,
    e2e_ms, tpot_ms, itl_p50_ms (that answer's median gap), n_gaps. ``by`` (one of GROUP_KEYS) is
    accepted for symmetry with the report; every group key is a column anyway."""
    metrics = open_metrics(capture, engine, by=by, **options)
    try:
        return metrics.answer_metrics()
    finally:
        metrics.close()


_STATS_CON = None


def stats(values: Iterable[float] | pd.Series) -> dict[str, int | float | None]:
    """The report's statistic of an in-memory sequence (by the same SQL, on an in-memory DuckDB)."""
    import threading

    import duckdb
    import numpy as np
    import pyarrow as pa

    from analyzer.engine.metrics import FINITE, STAT_FRACTIONS, stats_from

    global _STATS_CON
    if _STATS_CON is None:
        _STATS_CON = (duckdb.connect(), threading.Lock())
        _STATS_CON[0].execute("SET enable_progress_bar = false")  # DuckDB draws it on stdout
    con, lock = _STATS_CON
    if isinstance(values, pd.Series | pd.Index):
        arr = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    else:
        arr = np.asarray(values, dtype="float64")
    table = pa.table({"v": pa.array(arr, pa.float64(), from_pandas=True)})
    v = f"(CASE WHEN {FINITE.format(x='v')} THEN v END)"
    with lock:
        cur = con.cursor()
        try:
            cur.register("_values", table)
            row = cur.execute(f"SELECT count({v}), avg({v}), min({v}), max({v}), {DUCKDB.q(v, STAT_FRACTIONS)} "
                              "FROM _values").fetchone()
        finally:
            cur.close()
    return stats_from(*row)


__all__ = ["ANSWER_COLUMNS", "DUCKDB", "ENGINES", "EngineError", "GROUP_KEYS", "SPARK", "STATS_KEYS", "Dialect", "Engine", "Metrics",
           "answer_metrics", "open_engine", "open_metrics", "stats"]
