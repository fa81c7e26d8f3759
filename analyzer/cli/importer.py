"""``analyze import``: HAR files and mitmproxy flow files into a capture."""

from __future__ import annotations

import sys
import time
from typing import TextIO

import click

from analyzer.cli.options import echo, mode_option
from analyzer.inert import inert

MAX_ERRORS_SHOWN = 20


class ProgressBar:
    """Bytes read / total on a terminal's stderr; silent for the first moment and off a pipe."""

    def __init__(self, stream: TextIO, *, delay: float = 0.5, width: int = 30) -> None:
        self.stream = stream
        self.delay = delay
        self.width = width
        self.start = time.monotonic()
        self.last_draw = 0.0
        self.drawn = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.start < self.delay or (now - self.last_draw < 0.1 and done < total):
            return
        self.last_draw = now
        frac = done / total if total else 1.0
        filled = int(frac * self.width)
        rate = done / max(now - self.start, 1e-9) / 1e6
        self.stream.write(
            f"\rimporting [{'#' * filled}{'-' * (self.width - filled)}] {frac:4.0%} "
            f"{done / 1e6:.1f}/{total / 1e6:.1f} MB {rate:.1f} MB/s"
        )
        self.stream.flush()
        self.drawn = True

    def finish(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


@click.command("import")
@click.argument("sources", metavar="SOURCE...", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", "capture", required=True, type=click.Path(dir_okay=True, file_okay=False),
              help="The capture to create or append to (a directory).")
@click.option("--no-redact", is_flag=True, help="Keep secrets (tokens, cookies) in the capture.")
@click.option("--all-flows", is_flag=True, help="Keep a flows row for every flow, not just recognised ones.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr (default: when stderr is a terminal).")
@click.option("--label", default=None, metavar="NAME",
              help="A name for this import run (a vantage point, a machine): its captures.label.")
@click.option("--partition", type=click.Choice(["none", "date"]), default="none", show_default=True,
              help="date: write each table under hive-style date=YYYY-MM-DD dirs (the UTC date each flow started).")
@mode_option
def command(sources: tuple[str, ...], capture: str, no_redact: bool, all_flows: bool, progress: bool | None,
            label: str | None, partition: str, file_mode: int | None) -> None:
    """Import HAR files and mitmproxy flow files into CAPTURE.

    Each SOURCE is a HAR export (Chrome, Firefox, Safari, Charles, Fiddler, mitmproxy; .har or
    zlib/gzip-compressed .zhar), a flow file written by `mitmdump -w`, or a directory of them; the
    kind is told from the content. Flows go through the same extraction and redaction as live
    capture. Importing a file again adds nothing.

    \b
    Example:
        analyze import ~/Downloads/chatgpt.com.har flows.mitm -o captures/mine.parquet
        analyze import fra-day1.mitm --label fra --partition date -o captures/campaign.parquet
    """
    from analyzer.importer import ImportFailed, import_sources  # mitmproxy: only when importing

    if no_redact:
        echo("warning: --no-redact: bearer tokens, cookies and other secrets will be stored "
                   "in the capture as they are", err=True)
    show = sys.stderr.isatty() if progress is None else progress
    bar = ProgressBar(sys.stderr) if show else None
    try:
        summary = import_sources(sources, capture, redact=not no_redact, progress=bar, all_flows=all_flows,
                                 mode=file_mode, label=label, partition=partition)
    except ImportFailed as exc:
        if bar:
            bar.finish()
        if exc.summary is not None:
            for line in exc.summary.errors[1:MAX_ERRORS_SHOWN]:
                echo(f"error: {line}", err=True)
        raise click.ClickException(inert(exc)) from exc
    if bar:
        bar.finish()
    for line in summary.errors[:MAX_ERRORS_SHOWN]:
        echo(f"error: {line}", err=True)
    if len(summary.errors) > MAX_ERRORS_SHOWN:
        echo(f"error: … and {len(summary.errors) - MAX_ERRORS_SHOWN} more", err=True)
    echo(summary.line())
    if summary.damaged_files:
        # The whole entries are in the capture; the exit status says that the input was not whole.
        raise click.ClickException(
            inert(f"{len(summary.damaged_files)} damaged input file(s), whole entries kept: "
                  f"{', '.join(str(p) for p in summary.damaged_files)}"))
