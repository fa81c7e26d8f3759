"""``analyze export``: a capture in other tools' formats (``otel``: OpenTelemetry GenAI traces and metrics)."""

from __future__ import annotations

import click

from analyzer.cli.options import capture_arguments, write_output
from analyzer.inert import inert


@click.group("export")
def command() -> None:
    """Export a capture into another tool's format.

    \b
    Example:
        analyze export otel captures/sample.parquet -o traces.jsonl
    """


@command.command("otel")
@capture_arguments
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write OTLP/JSON lines to this file (what a Collector's otlpjsonfile receiver reads).")
@click.option("--endpoint", metavar="URL", default=None,
              help="Send OTLP/HTTP protobuf to this base URL (…/v1/traces and …/v1/metrics are added), "
                   "or spans only to a URL ending in /v1/traces (a trace store such as Arize Phoenix).")
@click.option("--content", is_flag=True,
              help="Include message text (user and assistant) and streamed text deltas. Off by default.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds per --endpoint request.")
def otel(capture, output: str | None, endpoint: str | None, content: bool, timeout: float) -> None:
    """Export the turns and API calls of CAPTURE as OpenTelemetry GenAI spans and metrics.

    One CLIENT span per conversation turn and per API call, with the capture's own timestamps,
    one trace per conversation; the GenAI client histograms alongside. docs/export.md maps
    every attribute to the column it comes from. Message text is left out unless --content.

    \b
    Examples:
        analyze export otel captures/sample.parquet -o traces.jsonl
        analyze export otel captures/sample.parquet --endpoint http://127.0.0.1:4318
        analyze export otel captures/sample.parquet --endpoint http://127.0.0.1:6006/v1/traces
    """
    from analyzer.export import otel as otel_lib
    from analyzer.store import CaptureError

    if (output is None) == (endpoint is None):
        raise click.UsageError("give exactly one of -o FILE or --endpoint URL")
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise click.UsageError(f"--endpoint {endpoint}: not an http:// or https:// URL")
    try:
        found = otel_lib.answers(capture, content=content)
    except CaptureError as exc:
        raise click.ClickException(inert(str(exc))) from exc
    spans = otel_lib.build_spans(found)
    metrics = otel_lib.build_metrics(found)
    if output is not None:
        # "json": each line is a JSON document, so text from traffic is escaped, not altered.
        write_output(otel_lib.to_jsonl(spans, metrics), output, "json")
        where = output
    else:
        try:
            otel_lib.send(spans, metrics, endpoint, timeout=timeout)
        except otel_lib.ExportError as exc:
            raise click.ClickException(inert(str(exc))) from exc
        where = endpoint + (" (spans only: a /v1/traces URL)" if otel_lib.is_traces_url(endpoint) else "")
    n_traces = len({s.context.trace_id for s in spans})
    click.echo(inert(f"exported {len(spans)} spans in {n_traces} traces to {where}"), err=True)
