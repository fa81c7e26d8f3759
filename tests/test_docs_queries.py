"""The "Querying a capture without chatwire" examples of docs/schema.md, run as they are written.

Each example is the code block after a ``<!-- docs-query: NAME -->`` marker. ``make_campaign``
writes the dataset the examples expect (two vantage points, date-partitioned, through chatwire's
own ``CaptureWriter``) with hand-picked TTFTs, so every number checked below is worked out by hand
here, not by chatwire. The Spark example is extracted the same way (``doc_query("spark")``) and
run by the Spark tests: it defines ``ttft_p50`` (rows model, n, ttft_p50_ms, as
``TTFT_P50_FROM_DEC_1``) and ``events_per_capture`` (rows capture_id, events, label, as
``EVENTS_PER_LABEL``) on ``make_campaign``'s dataset, run from its directory.
"""

from __future__ import annotations

import calendar
import re
from pathlib import Path

import duckdb
import pytest

from analyzer.store import CaptureWriter, load_capture

DOC = Path(__file__).resolve().parent.parent / "docs" / "schema.md"

# (model, ttft_ms, UTC day) per turn; fra also has a turn on 30 November that date filters drop.
FRA_TURNS = [("gpt-a", 100.0, "2026-12-01"), ("gpt-a", 300.0, "2026-12-01"), ("gpt-b", 40.0, "2026-12-01"),
             ("gpt-a", 5000.0, "2026-11-30")]
IAD_TURNS = [("gpt-a", 200.0, "2026-12-01"), ("gpt-b", 60.0, "2026-12-01"), ("gpt-b", 80.0, "2026-12-01")]
FRA_EVENTS_PER_TURN, IAD_EVENTS_PER_TURN = 3, 2
# Worked by hand from the turns above (numpy's linear percentile; the examples' own names):
# from 1 December, every vantage point: gpt-a 100, 300, 200 -> 200; gpt-b 40, 60, 80 -> 60.
TTFT_P50_FROM_DEC_1 = {"gpt-a": (3, 200.0), "gpt-b": (3, 60.0)}  # model -> (n, p50 ms)
# fra alone, every day: gpt-a 100, 300, 5000 -> 300; gpt-b 40.
FRA_TTFT_P50 = {"gpt-a": 300.0, "gpt-b": 40.0}
EVENTS_PER_LABEL = {"fra": 4 * FRA_EVENTS_PER_TURN, "iad": 3 * IAD_EVENTS_PER_TURN}  # 12, 6


def doc_query(name: str, text: str | None = None) -> tuple[str, str]:
    """``(language, code)`` of the block marked ``<!-- docs-query: name -->`` in docs/schema.md."""
    text = DOC.read_text(encoding="utf-8") if text is None else text
    match = re.search(rf"<!-- docs-query: {re.escape(name)} -->\s*```(\w+)\n(.*?)\n```", text, re.S)
    if match is None:
        raise AssertionError(f"docs/schema.md has no code block marked <!-- docs-query: {name} -->")
    return match.group(1), match.group(2)


def _epoch(day: str, seconds: float) -> float:
    return calendar.timegm(tuple(map(int, day.split("-"))) + (0, 0, 0)) + seconds


def make_campaign(cwd: Path) -> dict[str, str]:
    """``cwd/captures/campaign/{fra,iad}/2026-12-01.parquet``; returns label -> capture_id."""
    ids = {}
    for label, turns, per_turn in (("fra", FRA_TURNS, FRA_EVENTS_PER_TURN), ("iad", IAD_TURNS, IAD_EVENTS_PER_TURN)):
        path = cwd / "captures" / "campaign" / label / "2026-12-01.parquet"
        with CaptureWriter(path, label=label, partition="date", source="live") as writer:
            for i, (model, ttft, day) in enumerate(turns):
                fid = f"{label}-{i}"
                at = _epoch(day, 3600.0 * (i + 1))
                writer.add({
                    "flows": [{"flow_id": fid, "kind": "conversation", "started_at": at}],
                    "conversation_turns": [{"flow_id": fid, "model_slug": model, "ttft_ms": ttft, "started_at": at}],
                    "stream_events": [{"flow_id": fid, "seq": s, "at": at + s} for s in range(per_turn)],
                }, at=at)
            ids[label] = writer.capture_id
    return ids


@pytest.fixture
def campaign(tmp_path, monkeypatch):
    ids = make_campaign(tmp_path)
    monkeypatch.chdir(tmp_path)  # the examples name paths relative to where they run
    return ids


def test_the_campaign_is_what_the_examples_describe(campaign, tmp_path):
    root = tmp_path / "captures" / "campaign"
    assert {p.name for p in (root / "fra" / "2026-12-01.parquet" / "stream_events").iterdir()} >= \
        {"date=2026-11-30", "date=2026-12-01"}
    cap = load_capture(root)
    assert sorted(cap.captures()["label"]) == ["fra", "iad"]
    assert len(cap.table("stream_events")) == 4 * FRA_EVENTS_PER_TURN + 3 * IAD_EVENTS_PER_TURN


def test_pandas_example(campaign):
    lang, code = doc_query("pandas")
    assert lang == "python"
    scope: dict = {}
    exec(compile(code, "docs/schema.md:pandas", "exec"), scope)
    assert scope["ttft_p50"].to_dict() == FRA_TTFT_P50
    per_capture = scope["events_per_capture"]
    assert per_capture.loc[campaign["fra"]].tolist() == [EVENTS_PER_LABEL["fra"], "fra"]
    assert per_capture.loc[campaign["iad"]].tolist() == [EVENTS_PER_LABEL["iad"], "iad"]
    assert len(per_capture) == 2


def test_pyarrow_example(campaign):
    lang, code = doc_query("pyarrow")
    assert lang == "python"
    scope: dict = {}
    exec(compile(code, "docs/schema.md:pyarrow", "exec"), scope)
    counts = dict(zip(*scope["events_per_capture_on_day"].to_pydict().values(), strict=True))
    assert counts == {campaign["fra"]: 3 * FRA_EVENTS_PER_TURN, campaign["iad"]: 3 * IAD_EVENTS_PER_TURN}
    assert scope["ttft_p50"] == FRA_TTFT_P50


def test_duckdb_example(campaign):
    lang, code = doc_query("duckdb")
    assert lang == "sql"
    statements = [s.strip() for s in code.split(";") if s.strip()]
    assert len(statements) == 2
    con = duckdb.connect()
    assert con.execute(statements[0]).fetchall() == [(m, n, p50) for m, (n, p50) in TTFT_P50_FROM_DEC_1.items()]
    assert con.execute(statements[1]).fetchall() == [(campaign[label], label, n) for label, n in EVENTS_PER_LABEL.items()]


def test_every_marked_block_is_found():
    names = re.findall(r"<!-- docs-query: (\w+) -->", DOC.read_text(encoding="utf-8"))
    assert names == ["pandas", "pyarrow", "duckdb", "spark"]
    assert doc_query("spark")[0] == "python"
