"""The DuckDB engine: embedded, nothing to start, out of core (``memory_limit`` and a private spill
directory), the report's default."""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import time
from collections.abc import Sequence

import pandas as pd
import pyarrow as pa

from analyzer.engine.base import DUCKDB, Engine, empty_select, sql_type

DEFAULT_MEMORY_LIMIT = "1GB"
log = logging.getLogger(__name__)
_FIRST_SOURCE = re.compile(r"\bFROM\s+(\w+)", re.IGNORECASE)  # the first table a query names (for -vv)


_UNITS = {"": 1, "b": 1, "byte": 1, "bytes": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def _size_bytes(text: str) -> int:
    """DuckDB's printed memory limit (``953.6 MiB``) in bytes."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", text or "")
    if not m or m.group(2).lower() not in _UNITS:
        return DEFAULT_HOLISTIC_BYTES
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


DEFAULT_HOLISTIC_BYTES = 1024**3  # a limit DuckDB prints in a way we do not read: as the default 1 GB


class DuckDBEngine(Engine):
    """DuckDB in this process. ``memory_limit`` caps what its operators hold (joins, windows and
    percentiles spill to ``temp_directory``, a private directory removed by :meth:`close`)."""

    dialect = DUCKDB

    def __init__(self, *, memory_limit: str = DEFAULT_MEMORY_LIMIT, threads: int | None = None) -> None:
        import duckdb

        self._tmp = tempfile.mkdtemp(prefix="chatwire-duckdb-")  # 0700: spilled rows hold traffic
        self.con = duckdb.connect(config={"memory_limit": memory_limit, "temp_directory": self._tmp,
                                          # Order is never relied on (every query orders itself).
                                          "preserve_insertion_order": False})
        # DuckDB draws its progress bar on stdout, tty or not: a report piped to a file would be
        # JSON with a progress bar in it.
        self.con.execute("SET enable_progress_bar = false")
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        self.con.execute("SET TimeZone = 'UTC'")
        limit = self.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]  # fetchall: no result left open
        self.holistic_max_rows = max(1, _size_bytes(limit) // 64)

    def register_parts(self, name: str, parts: Sequence[tuple[str, Sequence[str]]], schema: pa.Schema) -> None:
        import pyarrow.parquet as pq

        selects = []
        for capture_name, files in parts:
            if not files:
                continue
            present: set[str] = set()
            for f in files:
                present.update(pq.read_schema(f).names)
            cols = ", ".join(
                (f'CAST("{f.name}" AS {sql_type(self.dialect, f.type)}) AS "{f.name}"' if f.name in present
                 else f'CAST(NULL AS {sql_type(self.dialect, f.type)}) AS "{f.name}"') for f in schema)
            file_list = "[" + ", ".join(DUCKDB.literal(f) for f in files) + "]"
            selects.append(f"SELECT {cols}, {DUCKDB.literal(capture_name)} AS _capture "
                           f"FROM read_parquet({file_list}, union_by_name = true)")
        query = " UNION ALL ".join(selects) if selects else empty_select(self.dialect, schema)
        self.con.execute(f"CREATE OR REPLACE VIEW {name} AS {query}")

    def register_frame(self, name: str, frame: pd.DataFrame, schema: pa.Schema) -> None:
        table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
        # Copied into a temp table: under memory_limit (it spills), where a registered Arrow table
        # would stay in Python's heap for as long as the engine lives.
        self.con.register(f"_frame_{name}", table)
        try:
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM _frame_{name}")
        finally:
            self.con.unregister(f"_frame_{name}")

    def materialize(self, name: str, query: str) -> None:
        started = time.perf_counter()
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {query}")
        log.debug("table %s in %.3f s", name, time.perf_counter() - started)  # analyze -vv: where the time goes

    def view(self, name: str, query: str) -> None:
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {query}")

    def drop(self, name: str) -> None:
        self.con.execute(f"DROP TABLE IF EXISTS {name}")

    def sql(self, query: str) -> pd.DataFrame:
        started = time.perf_counter()
        out = self.con.execute(query).df()
        source = _FIRST_SOURCE.search(query)
        log.debug("query over %s, %d rows, in %.3f s", source[1] if source else "?", len(out),
                  time.perf_counter() - started)
        return out

    def close(self) -> None:
        try:
            self.con.close()
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)
