"""``analyze tables``: what a capture holds, table by table, and the capture runs that wrote it."""

from __future__ import annotations

import json

import click
import pandas as pd

from analyzer.cli.options import capture_arguments, echo, format_option, json_flag
from analyzer.schema import TABLES
from analyzer.store import Capture

RUNS_SHOWN = 20  # capture runs listed in the text output (JSON lists them all)
PATHS_SHOWN = 5


def _iso(value) -> str | None:
    return None if value is None or pd.isna(value) else pd.Timestamp(value).isoformat()


def run_records(capture: Capture) -> list[dict]:
    """The capture runs (``Capture.captures()``) as JSON-ready dicts."""
    runs = capture.captures()
    return [{"capture_id": r.capture_id, "label": None if pd.isna(r.label) else r.label,
             "source": None if pd.isna(r.source) else r.source, "started_at": _iso(r.started_at),
             "ended_at": _iso(r.ended_at), "partitioning": None if pd.isna(r.partitioning) else r.partitioning,
             "path": r.path} for r in runs.itertuples(index=False)]


@click.command("tables")
@capture_arguments
@format_option(["text", "json"])
@json_flag
@click.option("--columns", is_flag=True, help="Also list each table's columns and types.")
def command(capture: Capture, fmt: str, as_json: bool, columns: bool) -> None:
    """Row counts of every table in CAPTURE (several captures, a directory of captures or a glob
    are combined), and the capture runs (capture_id, label) that wrote them.

    \b
    Examples:
        analyze tables captures/sample.parquet --columns
        analyze tables 'captures/campaign/**/*.parquet' --format json
    """
    counts = capture.counts()
    runs = run_records(capture)
    if as_json or fmt == "json":
        out = {name: {"rows": counts[name]} for name in TABLES}
        out["captures"]["runs"] = runs  # the captures table's rows, one per run (old captures: their directory)
        if columns:
            for name, schema in TABLES.items():
                out[name]["columns"] = {f.name: str(f.type) for f in schema}
        echo(json.dumps(out, indent=2))
        return
    shown = ", ".join(str(p) for p in capture.paths[:PATHS_SHOWN])
    more = f" and {len(capture.paths) - PATHS_SHOWN} more" if len(capture.paths) > PATHS_SHOWN else ""
    echo(f"capture: {shown}{more}" if len(capture.paths) == 1 else
         f"captures ({len(capture.paths)}): {shown}{more}")
    width = max(len(n) for n in TABLES)
    for name, schema in TABLES.items():
        echo(f"  {name:<{width}}  {counts[name]:>9,} rows")
        if columns:
            for f in schema:
                echo(f"      {f.name:<28} {f.type}")
    echo(f"capture runs: {len(runs)}")
    for run in runs[:RUNS_SHOWN]:
        label = f"label {run['label']}" if run["label"] else "no label"
        span = f"{run['started_at'] or '?'} .. {run['ended_at'] or '(not closed)'}" if run["source"] else "(before capture ids)"
        echo("  " + "  ".join(x for x in (run["capture_id"], label, run["source"], span) if x))
    if len(runs) > RUNS_SHOWN:
        echo(f"  … and {len(runs) - RUNS_SHOWN} more (--format json lists them all)")
