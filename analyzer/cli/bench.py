"""``analyze bench``: replay whole captured workloads against an OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid

import click

from analyzer.cli.options import capture_arguments, format_option


def _epoch(text: str | None, name: str) -> float | None:
    if text is None:
        return None
    from datetime import UTC, datetime

    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 time (e.g. 2026-01-31T12:00:00Z)",
                                 param_hint=name) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


@click.command("bench")
@capture_arguments
@click.option("--base-url", default=None, metavar="URL",
              help="The server's base URL, e.g. http://localhost:8000/v1 (required unless --export-trace).")
@click.option("--model", default=None, metavar="M", help="Model to ask (default: each turn's captured model).")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True, metavar="NAME",
              help="Environment variable that holds the API key (never printed, never recorded).")
@click.option("-o", "--output", "out_capture", default=None, type=click.Path(file_okay=False), metavar="OUT",
              help="Record the run into this capture (created or added to; required unless --export-trace).")
@click.option("--export-trace", nargs=2, type=(click.Choice(["mooncake", "aiperf"]), click.Path(dir_okay=False)),
              default=None, metavar="FORMAT FILE",
              help="Write the workload as a mooncake or aiperf (mooncake_trace with sessions) JSONL trace; send nothing.")
@click.option("--schedule", type=click.Choice(["timestamps", "session", "poisson", "constant", "concurrency"]),
              default="session", show_default=True, help="When requests are sent (see docs/bench.md).")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None, help="poisson/constant: requests per second.")
@click.option("--concurrency", type=click.IntRange(1), default=None, help="concurrency: sessions in flight at once.")
@click.option("--speed", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Divide recorded times and think times by this.")
@click.option("--think-scale", type=click.FloatRange(min=0), default=1.0, show_default=True, help="Multiply think times.")
@click.option("--think-max", type=click.FloatRange(min=0), default=None, metavar="S", help="Cap a think time (seconds).")
@click.option("--clone", type=click.IntRange(1), default=1, show_default=True, help="Copies of each session.")
@click.option("--jitter", type=click.FloatRange(min=0), default=0.0, show_default=True, metavar="S",
              help="A copy starts up to S seconds after its original.")
@click.option("--max-active", type=click.IntRange(1), default=None, help="session: sessions active at once.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None, metavar="S",
              help="Start no request after S seconds.")
@click.option("--warmup", type=click.FloatRange(min=0), default=0.0, metavar="S",
              help="Requests meant for the first S seconds are marked warm-up and left out of the statistics.")
@click.option("--cooldown", type=click.FloatRange(min=0), default=0.0, metavar="S",
              help="Requests meant for the last S seconds are marked cool-down and left out.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for poisson, --sample and --jitter.")
@click.option("--sample", type=click.IntRange(1), default=None, metavar="N", help="N sessions drawn at random.")
@click.option("--conversation", "conversation_id", default=None, metavar="ID", help="Only this session (id prefix).")
@click.option("--since", default=None, metavar="TIME", help="Only turns sent at or after this ISO time.")
@click.option("--until", default=None, metavar="TIME", help="Only turns sent before this ISO time.")
@click.option("--context", type=click.Choice(["captured", "live"]), default="captured", show_default=True,
              help="History sent with each turn: the captured answers, or the server's own (closed loop only).")
@click.option("--hold-length", is_flag=True,
              help="Also send min_tokens and ignore_eos (vLLM, SGLang) so answers are as long as recorded.")
@click.option("--no-max-tokens", is_flag=True, help="Do not send the recorded answer length as max_tokens.")
@click.option("--slo", default=None, metavar="ttft=MS,tpot=MS,e2e=MS", help="SLOs for goodput (any subset).")
@click.option("--lag-bound", "lag_bound_ms", type=click.FloatRange(min=0), default=10.0, show_default=True,
              metavar="MS", help="Flag the run degraded when schedule lag p99 exceeds this.")
@click.option("--max-connections", type=click.IntRange(0), default=0, show_default=True,
              help="Connection pool size (0: unlimited). A full pool delays sends: that shows as lag.")
@click.option("--timeout", type=click.FloatRange(min=1), default=600.0, show_default=True, help="Seconds per request.")
@click.option("--progress/--no-progress", default=None, help="A progress bar on stderr (default: when it is a terminal).")
@format_option(["text", "json", "html"])
def command(capture, base_url, model, api_key_env, out_capture, schedule, rate, concurrency, speed, think_scale,
            think_max, clone, jitter, max_active, duration, warmup, cooldown, seed, sample, conversation_id, since,
            until, context, hold_length, no_max_tokens, slo, lag_bound_ms, max_connections, timeout, progress,
            fmt, export_trace) -> None:
    """Replay the captures' sessions against an OpenAI-compatible server as a load test.

    Every conversation (web turns on their active branch) and every captured API call becomes a
    session of turns with its captured context, recorded answer length, send time and think time.
    The schedule decides when each is sent; each request's intended send time, the moment its
    bytes were written, and every chunk are recorded into OUT (api_calls, stream_events,
    bench_runs, bench_requests), which `analyze report` reads. Ctrl-C stops and keeps what was done.

    \b
    Example:
        OPENAI_API_KEY=… analyze bench captures/sample.parquet --base-url http://localhost:8000/v1 \\
            --schedule poisson --rate 20 --slo ttft=500,tpot=50 -o captures/bench.parquet
    """
    from analyzer.bench.metrics import parse_slo
    from analyzer.bench.schedule import CLOSED_LOOP, Knobs
    from analyzer.bench.workload import clone_sessions, load_workload, select_sessions

    source = ", ".join(str(p) for p in capture.paths)
    if export_trace is None and (base_url is None or out_capture is None):
        raise click.UsageError("--base-url and -o OUT are required (unless --export-trace FORMAT FILE)")
    if export_trace is not None:
        _export(capture, source, export_trace, conversation_id, since, until, sample, seed, clone, jitter)
        return
    api_key = os.environ.get(api_key_env)
    if not api_key:
        raise click.ClickException(
            f"environment variable {api_key_env} is not set: it must hold the API key "
            f"(any non-empty value for a server that needs none; --api-key-env names another variable)")
    try:
        knobs = Knobs(schedule=schedule, rate=rate, concurrency=concurrency, speed=speed, think_scale=think_scale,
                      think_max_s=think_max, clone=clone, jitter_s=jitter, max_active=max_active, duration_s=duration,
                      warmup_s=warmup, cooldown_s=cooldown, seed=seed)
        slos = parse_slo(slo)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if context == "live" and schedule not in CLOSED_LOOP:
        raise click.UsageError("--context live needs a closed-loop schedule (session or concurrency): "
                               "each turn waits for the server's previous answer")
    sessions = select_sessions(load_workload(capture), conversation=conversation_id, since=_epoch(since, "--since"),
                               until=_epoch(until, "--until"), sample=sample, seed=seed)
    if not sessions:
        raise click.ClickException(f"{source}: no conversation turn or API call to send"
                                   + (" (after --conversation/--since/--until)" if conversation_id or since or until else ""))
    workload = clone_sessions(sessions, clone, jitter, seed)
    n_turns = sum(len(s.turns) for s, _ in workload)
    captured = {(s.session_id, t.turn_index): t.captured for s in sessions for t in s.turns}
    base_url_shown = _without_userinfo(base_url)
    ctx = click.get_current_context()
    argv = ["analyze", "bench", *map(str, capture.paths)] + [
        f"--{k.replace('_', '-')}={base_url_shown if k == 'base_url' else v}"
        for k, v in sorted(ctx.params.items()) if v not in (None, False) and k != "capture_paths"
    ]
    show_progress = sys.stderr.isatty() if progress is None else progress
    summary, interrupted, records, started_at = _run(
        workload, knobs, base_url=base_url, api_key=api_key, model=model, context=context, hold_length=hold_length,
        max_tokens=not no_max_tokens, slos=slos, lag_bound_ms=lag_bound_ms, max_connections=max_connections,
        timeout=timeout, out_capture=out_capture, captured=captured, argv=argv, n_turns=n_turns,
        show_progress=show_progress,
    )
    if fmt == "json":
        click.echo(json.dumps(summary, indent=2, ensure_ascii=False, default=str))
    elif fmt == "html":
        from analyzer.bench.html import render_html

        title = f"analyze bench: {len(sessions)} session(s) against {base_url_shown}, schedule {schedule}"
        click.echo(render_html(summary, records, captured, title=title, started_at=started_at), nl=False)
    else:
        from analyzer.bench.results import render_text

        header = (f"bench of {len(sessions)} session(s) × {clone} ({n_turns} turn(s)) against {base_url_shown}, "
                  f"schedule {schedule}")
        click.echo(render_text(summary, header=header), nl=False)
        click.echo(f"recorded into {out_capture}" + (" (interrupted: partial)" if interrupted else ""))
    if interrupted:
        sys.exit(130)


def _export(capture, source, export_trace, conversation_id, since, until, sample, seed, clone, jitter) -> None:
    from analyzer.bench.export import export_trace as render
    from analyzer.bench.workload import clone_sessions, load_workload, select_sessions
    from analyzer.cli.options import write_output

    fmt, path = export_trace
    sessions = select_sessions(load_workload(capture), conversation=conversation_id, since=_epoch(since, "--since"),
                               until=_epoch(until, "--until"), sample=sample, seed=seed)
    if not sessions:
        raise click.ClickException(f"{source}: no conversation turn or API call to export")
    copies = clone_sessions(sessions, clone, jitter, seed)
    for session, shift in copies:  # a copy is a deep copy: moving its times leaves the original alone
        for turn in session.turns if shift else ():
            turn.sent_at = None if turn.sent_at is None else turn.sent_at + shift
    sessions = [s for s, _ in copies]
    write_output(render(sessions, fmt), path)
    n = sum(len(s.turns) for s in sessions)
    click.echo(f"wrote {n} request(s) of {len(sessions)} session(s) as a trace in {fmt} format to {path}", err=True)


def _without_userinfo(url: str) -> str:
    """``url`` without a ``user:password@`` part: credentials in a URL are not recorded either."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _loop_factory():
    """uvloop's event loop where it is installed (it sends and parses more per core), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _run(workload, knobs, *, base_url, api_key, model, context, hold_length, max_tokens, slos, lag_bound_ms,
         max_connections, timeout, out_capture, captured, argv, n_turns, show_progress) -> tuple[dict, bool, list, float]:
    from analyzer.bench.loadgen import Clock, LoadGenerator
    from analyzer.bench.metrics import summarize
    from analyzer.bench.results import RowSink, request_row, run_row
    from analyzer.bench.runner import Run
    from analyzer.bench.tokenizer import fill_output_tokens
    from analyzer.store import CaptureWriter

    run_id = str(uuid.uuid4())
    clock = Clock()
    writer = CaptureWriter(out_capture, flush_ms=1000, source="bench")
    sink = RowSink(writer)
    bar = click.progressbar(length=n_turns, label="requests", file=sys.stderr) if show_progress else None
    models: dict = {}

    def on_result(result) -> None:
        sink.put(result)
        if bar is not None:
            bar.update(1)

    generator = LoadGenerator(base_url, api_key, run_id=run_id, clock=clock, timeout_s=timeout,
                              max_connections=max_connections)
    run = Run(generator, workload, knobs, model=model, context=context, hold_length=hold_length,
              max_tokens=max_tokens, on_result=on_result)

    async def main() -> None:
        async with generator:
            models.update(await generator.models())
            await run.run()

    interrupted = False
    started = time.time()
    try:
        if bar is not None:
            bar.__enter__()
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(main())
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
        run.mark_phases()
        records = sorted(run.records, key=lambda r: r.intended_at)
        fill_output_tokens(records)  # answers without usage: counted now, not during the run
        summary = summarize(records, slo=slos, lag_bound_ms=lag_bound_ms, captured=captured,
                            started_at=run.started_at)
        summary = {"run_id": run_id, "interrupted": interrupted, "models": models, **summary}
        sink.close()
        for failure in sink.failed:
            click.echo(f"warning: a request's capture rows could not be built: {failure}", err=True)
        writer.add({
            "bench_requests": [request_row(r, slos) for r in records],
            "bench_runs": [run_row(run_id=run_id, started_at=started, ended_at=time.time(), command=argv,
                                   base_url=_without_userinfo(base_url), knobs=knobs.to_dict(), models=models,
                                   n_requests=len(records), summary=summary, interrupted=interrupted)],
        })
        writer.close()
    return summary, interrupted, records, run.started_at
