"""``analyze report``: latency, conversations and telemetry of a capture, as text, Markdown or JSON."""

from __future__ import annotations

import logging

import click

from analyzer.cli.options import (
    capture_arguments,
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
@mode_option
def command(capture: Capture, fmt: str, as_json: bool, output: str | None, raster_n: int,
            file_mode: int | None) -> None:
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
    """
    # Imported here so that `analyze --help` stays quick (pandas is heavy).
    from analyzer.analysis.render_report import render
    from analyzer.analysis.report import build_report

    if as_json:
        fmt = "json"
    # A damaged capture part raises CaptureError here: capture_arguments makes it one line.
    if fmt == "html":
        # render_html builds the report from the same frames its charts use: one pass over events.
        from analyzer.analysis.html_report import render_html

        text = render_html(capture, raster_n=raster_n)
    else:
        text = render(build_report(capture), fmt)
    write_output(text, output, fmt, mode=file_mode)
