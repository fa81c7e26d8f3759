"""The engine layer (DuckDB): the one SQL statistic against an independent NumPy oracle, the report's
numbers on a generated capture against NumPy over the raw Parquet columns, ``--by`` groups (each
group's numbers = the report of that group's capture alone), ``answer_metrics`` by hand, and the
out-of-core settings (memory limit, private spill directory removed afterwards).
"""

from __future__ import annotations

import copy
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from analyzer.analysis.html_report import render_html
from analyzer.analysis.latency import latency_report
from analyzer.analysis.report import build_report
from analyzer.cli import main as cli
from analyzer.engine import GROUP_KEYS, answer_metrics, open_engine, open_metrics, stats
from analyzer.store import load_capture
from tests.test_latency import LEGACY, known_rows, write_capture

ROOT = Path(__file__).resolve().parents[1]
DAY_S = 86400.0


def approx(x):
    return pytest.approx(x, rel=1e-12, abs=1e-9)


def np_stats(values) -> dict:
    """The independent oracle: NumPy's linear percentiles of the finite values."""
    arr = np.asarray(values, dtype="float64")
    arr = arr[np.isfinite(arr)]
    if not arr.size:
        return {"n": 0, "mean": None, "min": None, "p50": None, "p90": None, "p95": None, "p99": None, "max": None}
    p50, p90, p95, p99 = np.percentile(arr, [50, 90, 95, 99])
    return {"n": int(arr.size), "mean": float(arr.mean()), "min": float(arr.min()), "p50": p50, "p90": p90,
            "p95": p95, "p99": p99, "max": float(arr.max())}


def assert_stats(got: dict, want: dict) -> None:
    assert got["n"] == want["n"]
    for key in ("mean", "min", "p50", "p90", "p95", "p99", "max"):
        assert (got[key] is None) == (want[key] is None), key
        if want[key] is not None:
            assert got[key] == approx(want[key]), key


# -- the statistic ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 100_003])
def test_sql_statistic_is_numpys_linear_method(n):
    rng = np.random.default_rng(n)
    values = rng.lognormal(3, 1.2, size=n)
    values[rng.integers(0, n, size=max(n // 50, 0))] = np.nan  # NaN, inf and nulls are left out
    if n > 10:
        values[:3] = [np.inf, -np.inf, np.nan]
    assert_stats(stats(values), np_stats(values))
    assert stats([]) == np_stats([]) == stats([np.nan, np.inf])


# -- the report on a generated capture, against NumPy over the raw columns --------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("engine") / "gen.parquet"
    subprocess.run([sys.executable, str(ROOT / "bench" / "make_large_capture.py"), str(path), "--turns", "400",
                    "--beacons", "900", "--analytics", "50"], check=True, cwd=ROOT, capture_output=True)
    return path


def _read(path: Path, table: str, columns: list[str]) -> dict[str, np.ndarray]:
    t = pq.ParquetDataset(str(path / table)).read(columns=columns)
    return {c: t.column(c).to_numpy(zero_copy_only=False) for c in columns}


def test_report_numbers_are_numpys_on_the_raw_columns(generated):
    ev = _read(generated, "stream_events", ["flow_id", "seq", "offset_ms", "text"])
    text = np.array([t is not None and len(t) > 0 for t in ev["text"]]) & np.isfinite(ev["offset_ms"].astype(float))
    order = np.lexsort((ev["seq"][text], ev["flow_id"][text]))
    flows, offsets = ev["flow_id"][text][order], ev["offset_ms"][text][order].astype(float)
    same = flows[1:] == flows[:-1]
    gaps = np.diff(offsets)[same]
    turns = _read(generated, "conversation_turns", ["ttft_ms", "e2e_ms"])
    beacons = _read(generated, "latency_beacons", ["ts_first_token_ms", "count_tokens"])

    lat = latency_report(load_capture(generated))
    assert_stats(lat["observed"]["itl_ms"], np_stats(gaps))
    assert_stats(lat["observed"]["ttft_ms"], np_stats(turns["ttft_ms"]))
    assert_stats(lat["observed"]["e2e_ms"], np_stats(turns["e2e_ms"]))
    assert_stats(lat["client_reported"]["ts_first_token_ms"], np_stats(beacons["ts_first_token_ms"]))
    assert lat["client_reported"]["beacons"] == len(beacons["count_tokens"])
    assert sum(b["observed"]["itl_ms"]["n"] for b in lat["by_model"].values()) == len(gaps)


def test_memory_limit_and_private_spill_directory(generated):
    engine = open_engine("duckdb", memory_limit="256MB")
    limit = engine.con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert limit.replace(" ", "").upper().startswith(("256", "244"))  # DuckDB prints MiB
    # The engine's own percentile up to an eighth of the limit in values (8 bytes each): 244.1 MiB / 64.
    assert engine.holistic_max_rows == int(244.1 * 1024**2) // 64
    spill = engine.con.execute("SELECT current_setting('temp_directory')").fetchone()[0]
    assert stat.S_IMODE(os.stat(spill).st_mode) == 0o700
    metrics = open_metrics(load_capture(generated), engine)
    assert metrics.latency_block()["observed"]["turns"] == 400
    engine.close()
    assert not os.path.exists(spill)


# -- --by ------------------------------------------------------------------------------------------


def _renamed(rows: dict[str, list[dict]], prefix: str, shift_s: float) -> dict[str, list[dict]]:
    """The known fixture as another capture: its own flow ids, cf-rays, and a day later."""
    out = copy.deepcopy(rows)
    for table in out.values():
        for row in table:
            for key in ("flow_id", "cf_ray", "server_request_id"):
                if row.get(key):
                    row[key] = prefix + row[key]
            for key in ("started_at", "ended_at", "sent_at", "at"):
                if isinstance(row.get(key), float):
                    row[key] += shift_s
    return out


@pytest.fixture(scope="module")
def two_captures(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("by")
    first = write_capture(base / "monday.parquet", known_rows())
    second = write_capture(base / "tuesday.parquet", _renamed(known_rows(), "t-", DAY_S))
    return first, second


def _run_id(path: Path) -> str:
    """The capture_id its writer stamped on every row of the capture at ``path`` (its group under --by capture)."""
    return load_capture(path).captures()["capture_id"].item()


def _tables(lat: dict) -> dict:
    return {"observed": lat["observed"], "client_reported": lat["client_reported"], "api": {
        k: v for k, v in lat["api"].items() if k != "usage_by_model"}}


def test_by_capture_groups_are_each_captures_own_report(two_captures):
    first, second = two_captures
    both = build_report(load_capture([first, second]), by="capture")["latency"]
    assert both["by"]["key"] == "capture"
    # each capture run is its group, keyed by the capture_id its writer stamped on every row
    run_of = {path: load_capture(path).captures()["capture_id"].item() for path in (first, second)}
    assert set(both["by"]["groups"]) == set(run_of.values())
    for path in (first, second):
        alone = _tables(latency_report(load_capture(path)))
        assert both["by"]["groups"][run_of[path]] == alone
    # The pooled tables are the union: twice the turns of one capture.
    assert both["observed"]["turns"] == 2 * latency_report(load_capture(first))["observed"]["turns"]


def test_by_day_and_by_model(two_captures):
    first, second = two_captures
    cap = load_capture([first, second])
    by_day = build_report(cap, by="day")["latency"]["by"]["groups"]
    assert list(by_day) == ["2025-01-02", "2025-01-03"]  # UTC days of the answers' starts
    assert by_day["2025-01-03"]["observed"] == latency_report(load_capture(second))["observed"]
    lat = build_report(cap, by="model")["latency"]
    # by_model files turns and beacons; the groups also hold the API calls' model
    assert set(lat["by_model"]) == {LEGACY, "gpt-4o"} and set(lat["by"]["groups"]) == {LEGACY, "gpt-4o", "gpt-4o-mini"}
    for model, block in lat["by_model"].items():
        assert lat["by"]["groups"][model]["observed"] == block["observed"]
        assert lat["by"]["groups"][model]["client_reported"] == block["client_reported"]
    hours = build_report(cap, by="hour")["latency"]["by"]["groups"]
    assert "2025-01-02T10:00Z" in hours and sum(g["observed"]["turns"] for g in hours.values()) == 8


def test_by_host_and_stream_format(two_captures):
    cap = load_capture(list(two_captures))
    hosts = build_report(cap, by="host")["latency"]["by"]["groups"]
    assert hosts["chatgpt.com"]["observed"]["turns"] == 8 and hosts["api.openai.com"]["api"]["calls"] == 4
    formats = build_report(cap, by="stream_format")["latency"]["by"]["groups"]
    assert formats["v1"]["observed"]["turns"] == 6 and formats["legacy"]["observed"]["turns"] == 2
    assert formats["api_chat_completions"]["api"]["calls"] == 4


def test_by_label_joins_the_captures_table(two_captures, tmp_path):
    from analyzer.schema import rows_to_table
    from analyzer.store.writer import write_part

    first, second = two_captures
    rows = {"first": known_rows(), "second": _renamed(known_rows(), "t-", DAY_S)}
    paths = []
    for name, label in (("first", "frankfurt"), ("second", "virginia")):
        for table in rows[name].values():
            for row in table:
                row["capture_id"] = f"cap-{name}"
        path = write_capture(tmp_path / f"{name}.parquet", rows[name])
        (path / "captures").mkdir(exist_ok=True)
        write_part(path / "captures", rows_to_table("captures", [{"capture_id": f"cap-{name}", "label": label}]),
                   "part-000000.parquet")
        paths.append(path)
    groups = build_report(load_capture(paths), by="label")["latency"]["by"]["groups"]
    assert set(groups) == {"frankfurt", "virginia"}
    assert groups["virginia"]["observed"] == latency_report(load_capture(second))["observed"]


def test_by_label_without_labels_is_unlabelled(two_captures):
    groups = build_report(load_capture(two_captures[0]), by="label")["latency"]["by"]["groups"]
    assert list(groups) == ["unlabelled"]


# -- per-answer frame ------------------------------------------------------------------------------


def test_answer_metrics_by_hand(two_captures):
    a = answer_metrics(load_capture(two_captures[0])).set_index("flow_id")
    assert list(a.columns) == ["kind", "conversation_id", "model", "capture", "label", "day", "hour", "host",
                               "stream_format", "started_at", "ttft_ms", "e2e_ms", "tpot_ms", "itl_p50_ms", "n_gaps"]
    # Turn A: gaps 50, 100, 250 -> median 100; turn B: 20, 80, 10 -> 20; the API call: 60, 140 -> 100.
    assert (a.loc["fa", "itl_p50_ms"], a.loc["fa", "n_gaps"]) == (100.0, 3)
    assert (a.loc["fb", "itl_p50_ms"], a.loc["fb", "n_gaps"]) == (20.0, 3)
    assert a.loc["fapi", "kind"] == "api" and a.loc["fapi", "itl_p50_ms"] == 100.0
    assert a.loc["fa", "tpot_ms"] == approx(400 / 3) and a.loc["fa", "ttft_ms"] == 300.0
    assert a.loc["fd", "n_gaps"] == 0 and np.isnan(a.loc["fd", "ttft_ms"])
    assert a.loc["fa", "capture"] == _run_id(two_captures[0]) and a.loc["fa", "day"] == "2025-01-02"
    assert a.loc["fa", "host"] == "chatgpt.com" and a.loc["fapi", "host"] == "api.openai.com"


# -- the CLI ---------------------------------------------------------------------------------------


def test_cli_by_capture_json_and_text(two_captures):
    first, second = two_captures
    runner = CliRunner()
    res = runner.invoke(cli, ["report", str(first), str(second), "--by", "capture", "--json",
                              "--memory-limit", "512MB"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    mon, tue = _run_id(first), _run_id(second)
    assert set(report["latency"]["by"]["groups"]) == {mon, tue}
    text = runner.invoke(cli, ["report", str(first), str(second), "--by", "capture"])
    assert text.exit_code == 0 and f"capture = {mon}" in text.output and f"capture = {tue}" in text.output
    md = runner.invoke(cli, ["report", str(first), "--by", "model", "--format", "markdown"])
    assert md.exit_code == 0 and f"#### model = {LEGACY}" in md.output
    bad = runner.invoke(cli, ["report", str(first), "--spark-master", "local[1]"])
    assert bad.exit_code != 0 and "--engine spark" in bad.output
    bad = runner.invoke(cli, ["report", str(first), "--memory-limit", "lots"])
    assert bad.exit_code == 1 and bad.output.startswith("Error: DuckDB cannot start") and len(bad.output.splitlines()) == 1


def test_report_without_by_has_todays_keys(two_captures):
    lat = build_report(load_capture(two_captures[0]))["latency"]
    assert list(lat) == ["observed", "client_reported", "server_reported", "matched", "by_model", "api", "local_models"]


def test_html_by_group_draws_one_line_per_group_and_over_time(two_captures):
    html = render_html(load_capture(list(two_captures)), by="capture", raster_n=5)
    mon, tue = (_run_id(p) for p in two_captures)
    assert 'id="over-time"' in html and f"{mon} · proxy" in html and f"{tue} · proxy" in html
    assert f"TTFT p50 · {mon}" in html and f"ITL p50 · {tue}" in html
    assert GROUP_KEYS == ("capture", "label", "day", "hour", "model", "host", "stream_format")


# -- an engine that runs out of memory -------------------------------------------------------------


def test_out_of_memory_is_one_line_naming_the_capture(generated):
    """DuckDB really runs out at a tiny --memory-limit: one line, exit 1, no traceback."""
    result = CliRunner().invoke(cli, ["report", str(generated), "--memory-limit", "2MB", "--json"])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: {generated}: the engine ran out of memory at --memory-limit 2MB (")
    assert lines[0].endswith("raise --memory-limit")
    assert "Traceback" not in result.output


# -- the out-of-core percentiles on values built to break them ------------------------------------


@pytest.mark.parametrize("bins", ["fixed", "adaptive"])
def test_out_of_core_percentiles_are_numpys_on_adversarial_groups(tmp_path, monkeypatch, bins):
    """Fixed: 7 bins an interval, each rank several passes. Adaptive: the default's bins per pass
    (as many as CELL_BUDGET allows, up to MAX_BINS), most ranks found in two passes."""
    from tests.quantile_cases import adversarial_groups, engine_stats

    groups = adversarial_groups()
    metrics = open_metrics(load_capture(write_capture(tmp_path / "empty.parquet", {})), "duckdb")
    got = engine_stats(metrics, groups, monkeypatch,
                       **({"bins": 2048, "cell_budget": 1_000_000} if bins == "adaptive" else {}))
    metrics.close()
    assert set(got) == set(groups)
    for key, values in groups.items():
        want = np_stats(values)
        if key is not None and key.startswith("wide"):  # a sum of ±1.5e308 cancels: its mean is no test of the percentiles
            want["mean"] = got[key]["mean"]
        assert_stats(got[key], want)
        for q in ("min", "p50", "p90", "p95", "p99", "max"):  # an exact rank is the value itself
            if want[q] is not None and want[q] in values:
                assert got[key][q] == want[q], (key, q)
    assert got["two"]["p50"] == 2.0 and got["one"]["p99"] == 42.5 and got["on_a_rank"]["p90"] == 45.0
    assert got["non_finite"]["n"] == 3 and got["only_non_finite"]["n"] == 0


@pytest.mark.parametrize("bins", ["fixed", "adaptive"])
@pytest.mark.parametrize("range_filter", [0, 10**6])
def test_groups_sharing_cells_get_numpys_percentiles(tmp_path, monkeypatch, bins, range_filter):
    """Groups that are unions of cells (the pooled ITL and the per-model ITL share the (kind, model)
    cells; the first pass counts each cell once and sums a group's bins): every union, overlapping or
    not, of ties, signs, ±1e300 and a long tail, is NumPy's; later passes filtered by the (cell, bin)
    semi-join (0) or by comparisons on the value."""
    from tests.quantile_cases import check_unions, union_stats

    engine = open_engine("duckdb")
    try:
        got, values = union_stats(engine, monkeypatch, range_filter=range_filter,
                                  **({"bins": 64, "cell_budget": 1_000_000} if bins == "adaptive" else {}))
    finally:
        engine.close()
    check_unions(got, values)


def test_a_range_that_overflows_is_binned_not_fetched(monkeypatch):
    """±1.5e308 beside 50,000 ordinary values: max − min overflows to inf. The passes still cut the
    range into bins (no pass brings back more than its bins, or EXACT_MAX values), and the
    percentiles are NumPy's."""
    from analyzer.engine import metrics as engine_metrics
    from analyzer.engine.metrics import STAT_FRACTIONS, exact_quantiles
    from tests.quantile_cases import CELL_SCHEMA

    rng = np.random.default_rng(3)
    values = np.concatenate([[-1.5e308, 1.5e308], rng.normal(0, 1, 50_000)])
    monkeypatch.setattr(engine_metrics, "CELL_BUDGET", 1000)
    engine = open_engine("duckdb")
    sizes: list[int] = []
    run = engine.sql

    def counted(query):
        out = run(query)
        sizes.append(len(out))
        return out

    try:
        engine.register_frame("wide_values", pd.DataFrame({"cell": np.zeros(values.size, dtype="int64"), "v": values}),
                              CELL_SCHEMA)
        engine.sql = counted
        got = exact_quantiles(engine, "SELECT cell, v FROM wide_values",
                              {"g": (values.size, float(values.min()), float(values.max()), [0])}, STAT_FRACTIONS)
    finally:
        engine.close()
    assert sizes and max(sizes) <= max(1000, engine_metrics.EXACT_MAX) * 2, sizes
    for g, w in zip(got["g"], np.percentile(values, [50, 90, 95, 99]), strict=True):
        assert g == pytest.approx(w, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("by", [None, "model", "hour"])
def test_rank_passes_give_the_report_of_the_engines_own_percentile(generated, two_captures, monkeypatch, by):
    """Sources above the engine's holistic_max_rows take the rank passes: forced on every statistic (with small
    bins, so each rank takes several passes), the whole report is the one-query report's."""
    from analyzer.engine import metrics as engine_metrics
    from tests.numbers import same_report

    for capture in (load_capture(generated), load_capture(list(two_captures))):
        want = build_report(capture, by=by)
        monkeypatch.setattr(engine_metrics, "HOLISTIC_MAX", 0)
        monkeypatch.setattr(engine_metrics, "QUANTILE_BINS", 16)
        monkeypatch.setattr(engine_metrics, "CELL_BUDGET", 0)
        monkeypatch.setattr(engine_metrics, "EXACT_MAX", 8)
        got = build_report(capture, by=by)
        monkeypatch.undo()
        assert same_report(got, want)
        assert got["latency"]["observed"]["itl_ms"]["n"] > 0


# -- the dialect's string literals ------------------------------------------------------------------

HOSTILE_LITERALS = ["it's", r'"(?i)\"a\\b\s*"', "\\", "'; DROP TABLE x; --", r"[^\"\\]+", "\\'"]


def test_duckdb_string_literals_are_the_text_exactly():
    """What a regex given to the engine must survive: quotes and backslashes, unchanged."""
    import duckdb

    from analyzer.engine.base import DUCKDB

    con = duckdb.connect()
    for text in HOSTILE_LITERALS:
        assert con.execute(f"SELECT {DUCKDB.literal(text)}").fetchone()[0] == text


def test_duckdb_draws_no_progress_bar_on_stdout():
    """DuckDB draws its bar on stdout after 2 s whether stdout is a terminal or not: JSON piped to a
    file would hold it. Off on every connection chatwire opens; a query of several seconds in a child
    process writes nothing to stdout."""
    from analyzer.engine import open_engine

    engine = open_engine("duckdb")
    try:
        assert engine.con.execute("SELECT current_setting('enable_progress_bar')").fetchone()[0] is False
    finally:
        engine.close()
    child = ("from analyzer.engine import open_engine\n"
             "e = open_engine('duckdb')\n"
             "e.sql('SELECT sum(hash(i)) AS s FROM range(1500000000) t(i)')\n")
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, timeout=300, check=True)
    assert out.stdout == b""
