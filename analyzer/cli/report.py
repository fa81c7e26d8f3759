"""``analyze report``: latency, conversations and telemetry of a capture, as text, Markdown or JSON."""

from __future__ import annotations

import logging

import click

from analyzer.cli.options import (
    capture_arguments,
    engine_options,
    format_option,
    json_flag,
    mode_option,
    output_option,
    write_output,
)
from analyzer.store import Capture

log = logging.getLogger(__name__)


@click.command("report")
@capture_arguments
@format_option(["text", "markdown", "json", "html"])
@json_flag
@output_option
@click.option("--raster-n", type=click.IntRange(min=0), default=50, show_default=True,
              help="html: how many answers (the newest) the stream raster draws.")
@click.option("--by", "by", type=click.Choice(["capture", "label", "day", "hour", "model", "host", "stream_format"]),
              default=None, help="Group every latency table (and the HTML charts) by this key.")
@engine_options
@mode_option
def command(capture: Capture, fmt: str, as_json: bool, output: str | None, raster_n: int, by: str | None,
            engine_options: dict, file_mode: int | None) -> None:
    """Summarise CAPTURE: latency first, then conversations, flows and telemetry.

    Several CAPTURE directories are read as one. ``text`` is for a terminal, ``markdown`` for
    pasting into an issue, ``json`` for programs (its keys are documented in docs/report.md),
    ``html`` for one self-contained page with charts that opens offline.

    \b
    Examples:
        analyze report captures/sample.parquet
        analyze report captures/monday.parquet captures/tuesday.parquet --format markdown -o report.md
        analyze report captures/sample.parquet --json | jq .latency.observed.ttft_ms
        analyze report captures/sample.parquet --format html -o report.html
        analyze report captures/*.parquet --by capture --format markdown
        analyze report captures/big.parquet --memory-limit 2GB --json
        analyze report captures/big.parquet --engine spark --spark-master spark://head:7077
    """
    # Imported here so that `analyze --help` stays quick (pandas is heavy).
    from analyzer.analysis.render_report import render
    from analyzer.analysis.report import build_report
    from analyzer.engine import EngineError

    if as_json:
        fmt = "json"
    # A damaged capture part raises CaptureError here: capture_arguments makes it one line.
    try:
        if fmt == "html":
            # render_html builds the report from the same engine tables its charts use: one pass over events.
            from analyzer.analysis.html_report import render_html

            text = render_html(capture, raster_n=raster_n, by=by, **engine_options)
        else:
            text = render(build_report(capture, by=by, **engine_options), fmt)
    except EngineError as exc:
        raise click.ClickException(str(exc)) from exc
    write_output(text, output, fmt, mode=file_mode)
