"""``analyze compact``: merge a capture's many small part files into one per table."""

from __future__ import annotations

import click

from analyzer.cli.options import capture_arguments, echo
from analyzer.inert import inert
from analyzer.store import Capture
from analyzer.store.compact import compact_capture
from analyzer.store.files import describe_os_error


@click.command("compact")
@capture_arguments
def command(capture: Capture) -> None:
    """Merge the part files of each table of CAPTURE into one (crash-safe; rows unchanged).

    A live capture writes a small part file per table at every flush; a clean stop of the addon
    compacts already, this does it for a capture whose proxy was killed, or after imports.

    \b
    Example:
        analyze compact captures/mine.parquet
    """
    for path in capture.paths:
        # A damaged part raises CaptureError before anything is merged: capture_arguments makes it
        # one line and exit status 1; the capture is left exactly as it was.
        try:
            merged_parts = compact_capture(path)
        except OSError as exc:  # a full disk mid-merge: the merge removed its own leftovers
            raise click.ClickException(inert(f"cannot compact {path}: {describe_os_error(exc)}; "
                                             f"its parts are as they were")) from exc
        for name, merged in merged_parts.items():
            if merged:
                echo(f"{path}/{name}: {merged} parts merged into 1")
