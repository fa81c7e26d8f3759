"""``analyze compare``: two captures (or two filters of one dataset) compared per metric and group,
with a verdict that does not call noise a change."""

from __future__ import annotations

import click

from analyzer.cli.options import format_option, output_option, write_output


@click.command("compare")
@click.argument("paths", metavar="[A B | DATASET...]", nargs=-1, type=click.Path())
@click.option("--a", "a_paths", multiple=True, type=click.Path(), metavar="CAPTURE",
              help="A capture (or glob) of side A; repeat for several read as one.")
@click.option("--b", "b_paths", multiple=True, type=click.Path(), metavar="CAPTURE",
              help="A capture (or glob) of side B; repeat for several read as one.")
@click.option("--where-a", default=None, metavar="SQL",
              help="Side A = the answers of DATASET for which this SQL boolean expression is true.")
@click.option("--where-b", default=None, metavar="SQL",
              help="Side B = the answers of DATASET for which this SQL boolean expression is true.")
@click.option("--by", default=None,
              type=click.Choice(["model", "capture", "label", "day", "hour", "host", "stream_format", "kind"]),
              help="Compare each group on its own (default: all answers as one group).")
@click.option("--metric", "metrics", default="ttft,itl,tpot,e2e", show_default=True, metavar="LIST",
              help="Comma-separated metrics: ttft, itl (per-answer median gap), tpot, e2e.")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05,
              show_default=True, help="Family-wise error rate (Holm-corrected over the comparisons).")
@click.option("--resamples", type=click.IntRange(100), default=2000, show_default=True,
              help="Bootstrap resamples for the 95% interval.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap random seed.")
@click.option("--min-n", type=click.IntRange(2), default=5, show_default=True,
              help="Fewer answers than this on a side: 'insufficient data'.")
@format_option(["text", "markdown", "json", "html"])
@output_option
def command(paths: tuple[str, ...], a_paths: tuple[str, ...], b_paths: tuple[str, ...], where_a: str | None,
            where_b: str | None, by: str | None, metrics: str, alpha: float, resamples: int, seed: int,
            min_n: int, fmt: str, output: str | None) -> None:
    """Compare the latency of answers in A and B: slower, faster, or no detectable difference.

    Sides are given one of three ways: two positional captures A B; ``--a``/``--b`` (repeatable,
    several captures per side); or one DATASET (one or more captures) with ``--where-a`` and
    ``--where-b``, SQL boolean expressions over the per-answer columns (model, capture, label, day,
    hour, host, stream_format, kind, started_at, ttft_ms, …: docs/compare.md).

    Per metric and group: n, p50, p90 of each side, B − A of the medians with a bootstrap 95%
    interval, a Mann-Whitney U p-value (Holm-adjusted), and the verdict.

    \b
    Examples:
        analyze compare captures/monday.parquet captures/tuesday.parquet
        analyze compare --a fra1.parquet --a fra2.parquet --b iad1.parquet --by model
        analyze compare captures/all.parquet --where-a "model = 'gpt-4o'" --where-b "model = 'gpt-5-2'"
        analyze compare A.parquet B.parquet --metric ttft,e2e --format html -o compare.html
    """
    from analyzer.compare import comparison, render
    from analyzer.compare.answers import answer_metrics
    from analyzer.compare.where import WhereError, select_rows
    from analyzer.inert import inert
    from analyzer.store import CaptureError, load_capture

    try:
        metric_names = comparison.parse_metrics(metrics)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    filtered = where_a is not None or where_b is not None
    if filtered:
        if where_a is None or where_b is None:
            raise click.ClickException("--where-a and --where-b go together: give both")
        if a_paths or b_paths:
            raise click.ClickException("--where-a/--where-b filter one DATASET: give it as arguments, not --a/--b")
        if not paths:
            raise click.ClickException("--where-a/--where-b need a DATASET (one or more captures)")
    elif a_paths or b_paths:
        if paths:
            raise click.ClickException("give the sides either as A B or with --a/--b, not both")
        if not a_paths or not b_paths:
            raise click.ClickException("--a and --b go together: give at least one capture for each side")
    elif len(paths) != 2:
        raise click.ClickException(f"expected two captures A B (got {len(paths)}); several per side: --a/--b; "
                                   f"one dataset: --where-a/--where-b")
    settings = comparison.Settings(metric_names, by, alpha, resamples, seed, min_n)

    def answers(side_paths: tuple[str, ...]):
        return answer_metrics(load_capture(side_paths), by=by)

    try:
        if filtered:
            frame = answers(paths)
            try:
                a_frame, b_frame = select_rows(frame, where_a), select_rows(frame, where_b)
            except WhereError as exc:
                raise click.ClickException(inert(exc)) from exc
            a_side = comparison.side(a_frame, paths, where_a)
            b_side = comparison.side(b_frame, paths, where_b)
        else:
            side_a, side_b = (a_paths, b_paths) if a_paths else ((paths[0],), (paths[1],))
            a_frame, b_frame = answers(side_a), answers(side_b)
            a_side, b_side = comparison.side(a_frame, side_a, None), comparison.side(b_frame, side_b, None)
        result = comparison.compare_frames(a_frame, b_frame, a_side, b_side, settings)
    except CaptureError as exc:
        raise click.ClickException(inert(exc)) from exc
    write_output(render.render(result, fmt), output, fmt)
