"""``analyze tables``: what a capture holds, table by table."""

from __future__ import annotations

import json

import click

from analyzer.cli.options import capture_arguments, echo, format_option, json_flag
from analyzer.schema import TABLES
from analyzer.store import Capture


@click.command("tables")
@capture_arguments
@format_option(["text", "json"])
@json_flag
@click.option("--columns", is_flag=True, help="Also list each table's columns and types.")
def command(capture: Capture, fmt: str, as_json: bool, columns: bool) -> None:
    """Row counts of every table in CAPTURE (several captures are combined).

    \b
    Example:
        analyze tables captures/sample.parquet --columns
    """
    counts = capture.counts()
    if as_json or fmt == "json":
        out = {name: {"rows": counts[name]} for name in TABLES}
        if columns:
            for name, schema in TABLES.items():
                out[name]["columns"] = {f.name: str(f.type) for f in schema}
        echo(json.dumps(out, indent=2))
        return
    echo(f"capture: {', '.join(str(p) for p in capture.paths)}")
    width = max(len(n) for n in TABLES)
    for name, schema in TABLES.items():
        echo(f"  {name:<{width}}  {counts[name]:>9,} rows")
        if columns:
            for f in schema:
                echo(f"      {f.name:<28} {f.type}")
