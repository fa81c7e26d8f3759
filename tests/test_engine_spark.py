"""DuckDB and Spark give the same report: the same SQL (``analyzer.engine.metrics``) on a real local
Spark (``local[2]``, one session for the module), on the fixture captures and on a generated
multi-capture dataset, grouped and not.

Equal means: counts, keys, strings, min and max identical; percentiles equal to 1e-12 relative
(both engines compute the exact linear percentile, they round the interpolation differently in
the last bit); means within 1e-9 relative (summation order). Needs a Java runtime: found on PATH or
in JAVA_HOME, else installed from Debian's packages when running as root.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from analyzer.analysis.report import build_report
from analyzer.engine import open_metrics
from analyzer.store import load_capture
from tests.test_latency import known_rows, write_capture
from tests.test_telemetry import telemetry_rows

# pyspark warns about pandas 3 on every conversion; the numbers are asserted below.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.filterwarnings("ignore::UserWarning")]
ROOT = Path(__file__).resolve().parents[1]
STAT_KEYS = {"n", "mean", "min", "p50", "p90", "p95", "p99", "max"}


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "default-jre-headless"], check=True)
        found = shutil.which("java")
    if not found:
        pytest.fail("no Java runtime for Spark: install default-jre-headless (or set JAVA_HOME)")
    return found


@pytest.fixture(scope="module")
def spark():
    _java()
    from analyzer.engine.spark import spark_session

    warnings.filterwarnings("ignore", message=".*pandas >= 3.0.0.*")
    session = spark_session("local[2]", app_name="chatwire-tests")
    yield session
    session.stop()


def assert_same(duck, spark, path="report"):
    """Walk both reports (see the module docstring for what "same" means)."""
    if isinstance(duck, dict):
        assert isinstance(spark, dict) and list(duck) == list(spark), path
        is_stats = set(duck) == STAT_KEYS
        for key in duck:
            if is_stats and key in ("mean", "p50", "p90", "p95", "p99") and duck[key] is not None:
                rel = 1e-9 if key == "mean" else 1e-12
                assert spark[key] is not None and math.isclose(duck[key], spark[key], rel_tol=rel, abs_tol=1e-12), (
                    f"{path}.{key}: {duck[key]!r} != {spark[key]!r}")
            else:
                assert_same(duck[key], spark[key], f"{path}.{key}")
    elif isinstance(duck, list):
        assert isinstance(spark, list) and len(duck) == len(spark), path
        for i, (a, b) in enumerate(zip(duck, spark, strict=True)):
            assert_same(a, b, f"{path}[{i}]")
    else:
        assert duck == spark, f"{path}: {duck!r} != {spark!r}"


def _both(spark, paths, by=None) -> tuple[dict, dict]:
    cap = load_capture(paths)
    duck = build_report(cap, by=by)
    metrics = open_metrics(cap, "spark", by=by, spark_session=spark)
    try:
        return duck, build_report(cap, metrics)
    finally:
        metrics.close()


def test_known_fixture_and_its_combined_copy(spark, tmp_path):
    rows = known_rows() | telemetry_rows()  # the identifiers' regexes run as RE2 and as java.util.regex
    first = write_capture(tmp_path / "live.parquet", rows)
    again = write_capture(tmp_path / "import.parquet", rows)  # the same flows again: counted once
    duck, sp = _both(spark, [first])
    assert duck["latency"]["observed"]["itl_ms"]["n"] == 7  # hand-worked in tests/test_latency.py
    # hand-worked in tests/test_telemetry.py
    assert len(duck["telemetry"]["identifiers"]) == 10 and duck["telemetry"]["events_naming_a_conversation"] == 4
    assert_same(duck, sp)
    duck, sp = _both(spark, [first, again], by="model")
    assert duck["latency"]["observed"]["turns"] == 4
    assert_same(duck, sp)


def test_generated_multi_capture_dataset_by_capture(spark, tmp_path):
    paths = []
    for i in range(2):
        path = tmp_path / f"proxy{i}.parquet"
        subprocess.run([sys.executable, str(ROOT / "bench" / "make_large_capture.py"), str(path), "--turns", "120",
                        "--beacons", "300", "--analytics", "30", "--seed", str(11 + i), "--id-offset",
                        str(i * 10_000_000)], check=True, cwd=ROOT, capture_output=True)
        paths.append(path)
    duck, sp = _both(spark, paths, by="capture")
    assert list(duck["latency"]["by"]["groups"]) == ["proxy0.parquet", "proxy1.parquet"]
    assert duck["latency"]["observed"]["turns"] == 240
    assert_same(duck, sp)


def test_cli_engine_spark(spark, tmp_path):
    import json

    from click.testing import CliRunner

    from analyzer.cli import main as cli

    path = write_capture(tmp_path / "cap.parquet", known_rows())
    res = CliRunner().invoke(cli, ["report", str(path), "--engine", "spark", "--spark-master", "local[2]", "--json"])
    assert res.exit_code == 0, res.output
    assert_same(build_report(load_capture(path)), json.loads(res.output))
    assert spark.sparkContext._jsc is not None  # the module's session was reused, not stopped


@pytest.mark.timeout(900)  # a Spark job per rank pass, on a loaded machine
def test_out_of_core_percentiles_on_adversarial_groups_match_numpy(spark, tmp_path, monkeypatch):
    """The rank passes of analyzer.engine.metrics.exact_quantiles on Spark: NumPy's numbers (its
    ties, NULL group, ±inf, NaN and 1.5e308 behave as on DuckDB)."""
    import numpy as np

    from tests.quantile_cases import adversarial_groups, engine_stats

    groups = adversarial_groups()
    metrics = open_metrics(load_capture(write_capture(tmp_path / "empty.parquet", {})), "spark", spark_session=spark)
    try:
        got = engine_stats(metrics, groups, monkeypatch, bins=16, exact_max=64)  # 7 passes
    finally:
        metrics.close()
    assert set(got) == set(groups)
    for key, values in groups.items():
        finite = values[np.isfinite(values)]
        assert got[key]["n"] == finite.size, key
        if finite.size:
            want = np.percentile(finite, [50, 90, 95, 99])
            for name, w in zip(("p50", "p90", "p95", "p99"), want, strict=True):
                assert math.isclose(got[key][name], w, rel_tol=1e-12, abs_tol=1e-12), (key, name)
            assert (got[key]["min"], got[key]["max"]) == (finite.min(), finite.max())


@pytest.mark.timeout(900)
def test_groups_sharing_cells_match_numpy(spark, tmp_path, monkeypatch):
    """Groups that are unions of shared cells (how the pooled and per-model ITL are counted) on
    Spark: NumPy's percentiles, as on DuckDB (tests/test_engine.py)."""
    from analyzer.engine import open_engine
    from tests.quantile_cases import check_unions, union_stats

    engine = open_engine("spark", spark_session=spark)
    try:
        got, values = union_stats(engine, monkeypatch, bins=16, exact_max=64)
    finally:
        engine.close()
    check_unions(got, values)


def test_spark_string_literals_are_the_text_exactly(spark):
    from analyzer.engine.base import SPARK
    from tests.test_engine import HOSTILE_LITERALS

    for text in HOSTILE_LITERALS:
        assert spark.sql(f"SELECT {SPARK.literal(text)} AS s").collect()[0]["s"] == text
