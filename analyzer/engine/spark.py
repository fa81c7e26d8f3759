"""The Spark engine (``pyspark``): the same queries on a cluster, or on ``local[2]``.

The session runs in UTC (day and hour groups), without its web UI, with few shuffle partitions
(a report's groups are small); Arrow moves results to pandas.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Sequence

import pandas as pd
import pyarrow as pa

from analyzer.engine.base import SPARK, Engine

DEFAULT_MASTER = "local[2]"


def spark_session(master: str = DEFAULT_MASTER, *, app_name: str = "chatwire"):
    """A (shared) Spark session configured for the report."""
    from pyspark.sql import SparkSession

    # Python workers run this interpreter, not whatever python3 is first on PATH (the same minor
    # version is required); set before the JVM starts.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    session = (SparkSession.builder.master(master).appName(app_name)
            # Python workers (registered frames) run this interpreter, not whatever python3 is on PATH.
            .config("spark.pyspark.python", sys.executable)
            .config("spark.pyspark.driver.python", sys.executable)
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "4")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
            .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.sql.ansi.enabled", "false")  # nulls, not errors, on a bad cast: as DuckDB
            .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    return session


def _spark_type(typ: pa.DataType):
    from pyspark.sql import types as T

    if pa.types.is_timestamp(typ):
        return T.TimestampType()
    return {pa.string(): T.StringType(), pa.float64(): T.DoubleType(), pa.int64(): T.LongType(),
            pa.bool_(): T.BooleanType()}[typ]


def spark_schema(schema: pa.Schema):
    from pyspark.sql import types as T

    return T.StructType([T.StructField(f.name, _spark_type(f.type), True) for f in schema])


class SparkEngine(Engine):
    """Spark through ``pyspark``: ``session`` (shared, left running) or one started on ``master``."""

    dialect = SPARK

    def __init__(self, *, master: str = DEFAULT_MASTER, session=None) -> None:
        if session is None:
            from pyspark.sql import SparkSession

            session = SparkSession.getActiveSession()  # a notebook's (or a test's) session is left running
            self._owns = session is None
            self.spark = session if session is not None else spark_session(master)
        else:
            self._owns, self.spark = False, session
        self._prefix = f"cw{uuid.uuid4().hex[:8]}_"  # views of engines sharing one session stay apart
        self._views: list[str] = []
        self._cached: list = []
        self._by_name: dict = {}

    def _name(self, name: str) -> str:
        return name  # temp views are per session: names are kept readable; see close()

    def register_parts(self, name: str, parts: Sequence[tuple[str, Sequence[str]]], schema: pa.Schema) -> None:
        from pyspark.sql import functions as F

        frames = []
        struct = spark_schema(schema)
        for capture_name, files in parts:
            if files:
                # An explicit schema: a column that older parts lack is read as null.
                frames.append(self.spark.read.schema(struct).parquet(*files)
                              .withColumn("_capture", F.lit(capture_name)))
        if frames:
            df = frames[0]
            for more in frames[1:]:
                df = df.unionByName(more)
        else:
            df = self.spark.createDataFrame([], struct).withColumn("_capture", F.lit(None).cast("string"))
        df.createOrReplaceTempView(name)
        self._views.append(name)

    def register_frame(self, name: str, frame: pd.DataFrame, schema: pa.Schema) -> None:
        table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
        struct = spark_schema(schema)
        # From Arrow, batches go to the JVM as they are (no Python worker, no pandas round trip).
        df = self.spark.createDataFrame(table, schema=struct) if table.num_rows else self.spark.createDataFrame([], struct)
        df.createOrReplaceTempView(name)
        self._views.append(name)

    def materialize(self, name: str, query: str) -> None:
        df = self.spark.sql(query).persist()
        self._cached.append(df)
        self._by_name[name] = df
        df.createOrReplaceTempView(name)
        self._views.append(name)

    def view(self, name: str, query: str) -> None:
        self.spark.sql(query).createOrReplaceTempView(name)
        self._views.append(name)

    def drop(self, name: str) -> None:
        # Spark's persist is lazy: a later table built from this one still needs it until computed, so
        # the cached result is only released at close() (unpersisting here would recompute it).
        pass

    def sql(self, query: str) -> pd.DataFrame:
        df = self.spark.sql(query)
        timestamps = [f.name for f in df.schema.fields if f.dataType.typeName() == "timestamp"]
        out = df.toPandas()
        for column in timestamps:  # the session runs in UTC: naive results are UTC
            out[column] = pd.to_datetime(out[column]).dt.tz_localize("UTC")
        return out

    def close(self) -> None:
        for df in self._cached:
            df.unpersist()
        for view in set(self._views):
            self.spark.catalog.dropTempView(view)
        if self._owns:
            self.spark.stop()
