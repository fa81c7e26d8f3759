"""``analyze compare`` end to end: real captures written by the project's writer, the CLI through
CliRunner (and one real subprocess), the HTML page in headless Chromium.

The captures are built with known timings: side B's TTFTs (and so its E2Es, which the factory sets to
TTFT + 500 ms) are side A's shifted by exactly +200 ms, its inter-token gaps are independent draws
from the same distribution as A's. The per-answer adapter is checked against the hand-worked
fixture of test_latency.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from analyzer.cli import main
from analyzer.compare.answers import COLUMNS, answer_metrics
from analyzer.inert import is_inert
from analyzer.store import load_capture
from tests.capture_factory import T0, make_capture, merge, turn
from tests.test_latency import known_rows, write_capture

SHIFT_MS = 200.0
N = 40
COMPARISON_KEYS = {"metric", "group", "a", "b", "diff_p50_ms", "ci95_ms", "p_value", "verdict"}
INJECTED_MODEL = "<img src=x onerror=alert(1)>\x1b]0;pwned\x07"


def _answer(prefix: str, i: int, ttft: float, gaps: np.ndarray, model: str) -> dict:
    """One turn with ``len(gaps) + 1`` timed text events: the first at ``ttft``, then ``gaps`` apart."""
    flow_id = f"{prefix}-{i:04d}"
    at = T0 + i * 30.0
    rows = turn(f"conv-{prefix}-{i}", flow_id=flow_id, at=at, assistant_id=f"m-{flow_id}",
                assistant_text="answer", user_id=f"u-{flow_id}", user_text="question", parent_id="root",
                model=model, ttft_ms=float(ttft), with_events=False)
    offsets = float(ttft) + np.r_[0.0, np.cumsum(gaps)]
    rows["stream_events"] = [
        {"flow_id": flow_id, "seq": seq, "at": at + off / 1000, "offset_ms": float(off), "event": "delta",
         "type": "delta", "message_id": f"m-{flow_id}", "text": f"t{seq}", "n_bytes": 42}
        for seq, off in enumerate(offsets)
    ]
    return rows


def build(path: Path, seed: int, *, gap_seed: int | None = None, shift: float = 0.0, n: int = N,
          models: tuple[str, ...] = ("gpt-4o",)) -> Path:
    """``n`` answers per model: TTFT = 400 + log-normal(5, 0.5) + ``shift`` ms, 6 gaps of 20 + exp(15) ms.

    TTFTs come from ``seed``, gaps from ``gap_seed`` (default ``seed + 100``): two captures with one
    ``seed`` and a ``shift`` have the very same TTFTs moved by ``shift``, so the true difference of
    their medians is exactly ``shift``, while their gaps are independent draws of one distribution."""
    ttft_rng = np.random.default_rng(seed)
    gap_rng = np.random.default_rng(seed + 100 if gap_seed is None else gap_seed)
    fragments = []
    for model in models:
        for _ in range(n):
            ttft = 400.0 + ttft_rng.lognormal(5.0, 0.5) + shift
            fragments.append(_answer(f"{path.stem}-{model[:6]}", len(fragments), ttft,
                                     20.0 + gap_rng.exponential(15.0, 6), model))
    return make_capture(path, merge(*fragments))


def run(*args: str):
    return CliRunner().invoke(main, ["compare", *args], catch_exceptions=False)


def by_metric(doc: dict) -> dict[tuple[str, str], dict]:
    return {(c["metric"], c["group"]): c for c in doc["comparisons"]}


@pytest.fixture(scope="module")
def caps(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("compare")
    return {
        "a": build(d / "a.parquet", seed=1),
        "same": build(d / "same.parquet", seed=2),
        "slow": build(d / "slow.parquet", seed=1, gap_seed=103, shift=SHIFT_MS),
    }


def run_id(path) -> str:
    """The capture id the writer stamped on every row of the capture at ``path`` (one run each here)."""
    [capture_id] = load_capture(path).table("captures")["capture_id"].unique()
    return capture_id


# -- the per-answer adapter, by hand ------------------------------------------------------------


def test_answer_metrics_by_hand(tmp_path):
    frame = answer_metrics(load_capture(write_capture(tmp_path / "known.parquet", known_rows())))
    assert tuple(frame.columns) == COLUMNS
    rows = frame.set_index("flow_id")
    # Turn A's text events at 300, 350, 450, 700 → gaps 50, 100, 250: median 100.
    assert rows.loc["fa", "itl_p50_ms"] == 100.0 and rows.loc["fa", "n_gaps"] == 3
    # Turn B (rows stored out of order) 500, 520, 600, 610 → 20, 80, 10: median 20.
    assert rows.loc["fb", "itl_p50_ms"] == 20.0 and rows.loc["fb", "n_gaps"] == 3
    assert rows.loc["fc", "itl_p50_ms"] == 100.0 and rows.loc["fc", "n_gaps"] == 1
    assert np.isnan(rows.loc["fd", "itl_p50_ms"]) and rows.loc["fd", "n_gaps"] == 0  # HAR: no timing
    # The API call: text at 200, 260, 400 → gaps 60, 140 → median 100; TPOT = 200 / (5 − 1) = 50.
    assert rows.loc["fapi", "kind"] == "api" and rows.loc["fapi", "itl_p50_ms"] == 100.0
    assert rows.loc["fapi", "tpot_ms"] == 50.0 and rows.loc["fapi", "host"] == "api.openai.com"
    assert rows.loc["fa", "ttft_ms"] == 300.0 and rows.loc["fc", "e2e_ms"] == 1150.0
    assert rows.loc["fb", "tpot_ms"] == pytest.approx(110 / 3)
    assert rows.loc["fa", "stream_format"] == "legacy" and rows.loc["fb", "model"] == "gpt-4o"
    assert set(frame["capture"]) == {run_id(tmp_path / "known.parquet")}  # the writer's stamped run id
    # No label on this capture: null here, "unlabelled" from the engine's answer_metrics.
    assert (frame["label"].isna() | (frame["label"] == "unlabelled")).all()
    assert rows.loc["fa", "day"] == "2025-01-02" and rows.loc["fa", "hour"] == "2025-01-02T10:00Z"


# -- verdicts -----------------------------------------------------------------------------------


def test_known_shift_is_slower_and_the_interval_holds_it(caps):
    result = run(str(caps["a"]), str(caps["slow"]), "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    rows = by_metric(doc)
    ttft = rows[("ttft", "all")]
    assert ttft["verdict"] == "slower"
    assert ttft["ci95_ms"][0] <= SHIFT_MS <= ttft["ci95_ms"][1]
    assert ttft["diff_p50_ms"] == pytest.approx(SHIFT_MS) and ttft["ci95_ms"][0] > 0 and ttft["p_value"] < 0.05
    assert ttft["a"]["n"] == ttft["b"]["n"] == N
    # E2E = TTFT + 500 in the factory: the same shift. ITL gaps come from one distribution.
    assert rows[("e2e", "all")]["verdict"] == "slower"
    assert rows[("e2e", "all")]["ci95_ms"][0] <= SHIFT_MS <= rows[("e2e", "all")]["ci95_ms"][1]
    assert rows[("itl", "all")]["verdict"] == "no detectable difference"
    # Swapping the sides turns it into "faster" with the mirrored interval.
    back = by_metric(json.loads(run(str(caps["slow"]), str(caps["a"]), "--format", "json").output))
    assert back[("ttft", "all")]["verdict"] == "faster"
    assert back[("ttft", "all")]["diff_p50_ms"] == pytest.approx(-ttft["diff_p50_ms"])


def test_same_distribution_is_no_detectable_difference(caps):
    doc = json.loads(run(str(caps["a"]), str(caps["same"]), "--format", "json").output)
    assert {c["verdict"] for c in doc["comparisons"]} == {"no detectable difference"}
    assert [c["metric"] for c in doc["comparisons"]] == ["ttft", "itl", "tpot", "e2e"]


def test_json_keys_exactly_and_sides_described(caps):
    doc = json.loads(run(str(caps["a"]), str(caps["slow"]), "--format", "json", "--metric", "ttft,itl").output)
    assert set(doc) >= {"a", "b", "comparisons", "settings"}
    for c in doc["comparisons"]:
        assert set(c) == COMPARISON_KEYS
        assert set(c["a"]) == set(c["b"]) == {"n", "p50", "p90"}
        assert len(c["ci95_ms"]) == 2
    assert doc["a"] == {"paths": [str(caps["a"])], "where": None, "answers": N, "captures": [run_id(caps["a"])]}
    assert doc["b"]["captures"] == [run_id(caps["slow"])]
    assert doc["settings"]["correction"] == "holm" and doc["settings"]["resamples"] == 2000
    assert doc["settings"]["metrics"] == ["ttft", "itl"]


def test_seed_makes_the_interval_reproducible(caps):
    one = run(str(caps["a"]), str(caps["slow"]), "--format", "json", "--seed", "7", "--resamples", "500").output
    two = run(str(caps["a"]), str(caps["slow"]), "--format", "json", "--seed", "7", "--resamples", "500").output
    assert one == two


def test_several_captures_per_side_and_by_model(tmp_path):
    a1 = build(tmp_path / "a1.parquet", seed=11, models=("gpt-4o", "o3"), n=20)
    a2 = build(tmp_path / "a2.parquet", seed=12, models=("gpt-4o", "o3"), n=20)
    b1 = build(tmp_path / "b1.parquet", seed=13, models=("gpt-4o",), n=30, shift=SHIFT_MS)
    b2 = build(tmp_path / "b2.parquet", seed=14, models=("o3",), n=3)
    doc = json.loads(run("--a", str(a1), "--a", str(a2), "--b", str(b1), "--b", str(b2), "--by", "model",
                         "--metric", "ttft", "--format", "json").output)
    rows = by_metric(doc)
    assert doc["a"]["answers"] == 80 and doc["a"]["captures"] == sorted([run_id(a1), run_id(a2)])
    assert doc["b"]["answers"] == 33
    assert rows[("ttft", "gpt-4o")]["verdict"] == "slower" and rows[("ttft", "gpt-4o")]["a"]["n"] == 40
    assert rows[("ttft", "o3")]["verdict"] == "insufficient data"  # 3 answers on side B: below --min-n 5
    assert rows[("ttft", "o3")]["ci95_ms"] is None and rows[("ttft", "o3")]["p_value"] is None


def test_where_filters_on_one_dataset(caps):
    where_a = f"capture = '{run_id(caps['a'])}'"
    doc = json.loads(run(str(caps["a"]), str(caps["slow"]), "--where-a", where_a,
                         "--where-b", f"capture = '{run_id(caps['slow'])}' AND ttft_ms IS NOT NULL",
                         "--metric", "ttft", "--format", "json").output)
    [ttft] = doc["comparisons"]
    assert ttft["verdict"] == "slower" and ttft["a"]["n"] == ttft["b"]["n"] == N
    assert doc["a"]["where"] == where_a
    assert doc["a"]["paths"] == [str(caps["a"]), str(caps["slow"])]
    # The same numbers as the two captures given as A B.
    direct = json.loads(run(str(caps["a"]), str(caps["slow"]), "--metric", "ttft", "--format", "json").output)
    assert direct["comparisons"] == doc["comparisons"]


def test_empty_capture_is_insufficient_data_not_an_error(caps, tmp_path):
    empty = make_capture(tmp_path / "empty.parquet")
    result = run(str(empty), str(caps["a"]), "--format", "json")
    assert result.exit_code == 0
    doc = json.loads(result.output)
    assert doc["a"]["answers"] == 0 and doc["verdicts"]["insufficient data"] == 4
    for c in doc["comparisons"]:
        assert c["a"] == {"n": 0, "p50": None, "p90": None} and c["diff_p50_ms"] is None and c["ci95_ms"] is None
    assert "insufficient data" in run(str(empty), str(empty)).output


# -- formats --------------------------------------------------------------------------------------


def test_text_and_markdown_show_every_comparison(caps):
    text = run(str(caps["a"]), str(caps["slow"])).output
    assert "slower" in text and "no detectable difference" in text and "Holm" in text
    assert text.count("\n  ttft ") == 1 and "  e2e " in text
    md = run(str(caps["a"]), str(caps["slow"]), "--format", "markdown").output
    assert "| metric | group |" in md and md.count("\n| ") == 5  # header + 4 metrics


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("hostile")
    return (build(d / "ha.parquet", seed=21, models=(INJECTED_MODEL, "gpt-4o"), n=12),
            build(d / "hb.parquet", seed=22, models=(INJECTED_MODEL, "gpt-4o"), n=12, shift=SHIFT_MS))


def test_captured_strings_are_inert_in_text_and_json(hostile):
    a, b = hostile
    for fmt in ("text", "markdown", "json"):
        out = run(str(a), str(b), "--by", "model", "--format", fmt).output
        assert is_inert(out) and "\x1b" not in out and "\x07" not in out
    doc = json.loads(run(str(a), str(b), "--by", "model", "--format", "json").output)
    assert INJECTED_MODEL in {c["group"] for c in doc["comparisons"]}  # JSON keeps the value itself


@pytest.fixture(scope="module")
def browser():
    """tests.browser, or a clear failure when Chromium is missing (never a skip)."""
    from tests import browser as b

    try:
        b.chromium_path()
    except b.ChromiumMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    return b


def test_html_page_in_the_browser(hostile, tmp_path, browser):
    a, b = hostile
    page = tmp_path / "compare.html"
    result = run(str(a), str(b), "--by", "model", "--format", "html", "-o", str(page))
    assert result.exit_code == 0 and result.output == ""
    html = page.read_text(encoding="utf-8")
    assert page.stat().st_mode & 0o777 == 0o600
    assert "<img src=x" not in html and "\x1b" not in html and "&lt;img src=x" in html
    with browser.open_page(page) as s:
        p = s.page
        rows = p.locator("#comparisons tbody tr")
        assert rows.count() == 8  # 4 metrics × 2 models
        slower = p.locator("#comparisons tr.slower")
        assert slower.count() >= 2  # TTFT and E2E of gpt-4o (and of the other model) are +200 ms
        assert p.locator("img").count() == 0  # the model name stayed text
        assert INJECTED_MODEL.split("\x1b")[0] in p.locator("#comparisons").inner_text()
        boxes = p.evaluate("""() => [...document.querySelectorAll('section.cdf svg.chart')].map(svg => {
            const r = svg.getBoundingClientRect();
            return {w: r.width, h: r.height, paths: svg.querySelectorAll('path').length,
                    visible: svg.checkVisibility()};
        })""")
        assert len(boxes) == 4
        for box in boxes:
            assert box["visible"] and box["w"] > 300 and box["h"] > 100 and box["paths"] >= 4, box
        assert not s.requests and not s.console_errors


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["{missing}", "{a}"], "no such capture"),
    (["{a}"], "expected two captures A B (got 1)"),
    (["{a}", "--where-a", "model = 'x'; DROP TABLE answers", "--where-b", "true"], "';' is not allowed"),
    (["{a}", "--where-a", "1=1) OR (1=1", "--where-b", "true"], "unbalanced ')'"),
    (["{a}", "--where-a", "no_such_column = 1", "--where-b", "true"], "no_such_column"),
    (["{a}", "--where-a", "model = 'x'"], "--where-a and --where-b go together"),
    (["{a}", "{a}", "--metric", "ttft,latency"], "unknown metric latency"),
    (["--a", "{a}"], "--a and --b go together"),
])
def test_bad_input_is_one_line_and_nonzero(caps, tmp_path, args, message):
    argv = [x.format(a=caps["a"], missing=tmp_path / "nope.parquet") for x in args]
    out = tmp_path / "out.json"
    result = CliRunner().invoke(main, ["compare", *argv, "-o", str(out)])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.output
    assert not out.exists()


def test_real_subprocess_exit_status(caps, tmp_path):
    script = Path(sys.executable).with_name("analyze")
    ok = subprocess.run([str(script), "compare", str(caps["a"]), str(caps["slow"]), "--metric", "ttft",
                         "--format", "json"], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and json.loads(ok.stdout)["comparisons"][0]["verdict"] == "slower"
    bad = subprocess.run([str(script), "compare", str(tmp_path / "gone"), str(caps["a"])], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "gone" in bad.stderr
