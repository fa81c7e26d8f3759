"""``analyze replay``: ask an OpenAI-compatible API what the web app was asked, and compare."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import click

from analyzer.cli.options import capture_arguments, echo, format_option, mode_option
from analyzer.inert import inert_json


@click.command("replay")
@capture_arguments
@click.option("--conversation", "conversation_id", required=True, metavar="ID",
              help="The conversation to replay (a full id or a unique prefix).")
@click.option("--base-url", required=True, metavar="URL",
              help="The API's base URL, e.g. https://api.openai.com/v1 or http://localhost:11434/v1.")
@click.option("--model", default=None, metavar="M",
              help="Model to ask (default: the model the web app answered each turn with).")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True, metavar="NAME",
              help="Environment variable that holds the API key (never printed, never recorded).")
@click.option("--context", type=click.Choice(["captured", "live"]), default="captured", show_default=True,
              help="History sent with each turn: the web app's answers, or the API's own (sequential).")
@click.option("--concurrency", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Turns in flight at once (captured context only).")
@click.option("--retries", default=3, show_default=True, type=click.IntRange(0, 20),
              help="Retries per turn after a network error, 408/409/429 or 5xx.")
@click.option("--timeout", default=600.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds before one call is given up.")
@click.option("-o", "--output", "out_capture", type=click.Path(file_okay=False), default=None,
              metavar="OUT_CAPTURE", help="Record every call into this capture (created or added to).")
@format_option(["text", "json"])
@mode_option
def command(capture, conversation_id: str, base_url: str, model: str | None, api_key_env: str, context: str,
            concurrency: int, retries: int, timeout: float, out_capture: str | None, fmt: str,
            file_mode: int | None) -> None:
    """Replay a captured web conversation against an OpenAI-compatible API, turn by turn.

    Each user message of the conversation's active branch is sent (streamed, usage included) with
    the context rebuilt from the branch; the table puts the web app's TTFT, ITL p50, tokens/s and
    answer length beside the API's. With -o every call is recorded as a capture that
    `analyze report` reads. Ctrl-C stops and keeps what was recorded.

    \b
    Example:
        OPENAI_API_KEY=… analyze replay captures/sample.parquet --conversation 6790a1b2 \\
            --base-url https://api.openai.com/v1 --model gpt-4o-mini -o captures/replay.parquet
    """
    from analyzer.analysis.conversations import ConversationNotFound, build_conversation
    from analyzer.replay.compare import render_table, to_json
    from analyzer.replay.replay import Replayer, make_client, plan_turns, web_sides
    from analyzer.store import CaptureWriter

    source = capture.paths[0]
    api_key = os.environ.get(api_key_env)
    if not api_key:
        raise click.ClickException(
            f"environment variable {api_key_env} is not set: it must hold the API key "
            f"(any non-empty value for a server that needs none; --api-key-env names another variable)"
        )
    try:
        conv = build_conversation(capture, conversation_id)
    except ConversationNotFound as exc:
        raise click.ClickException(f"{source}: {exc}") from exc
    plans = plan_turns(conv, web_sides(capture, conv))
    if not plans:
        raise click.ClickException(f"{source}: conversation {conv.conversation_id} has no user message to replay")
    if context == "live" and concurrency > 1:
        echo("note: --context live sends turns one after the other; --concurrency ignored", err=True)

    writer = CaptureWriter(out_capture, flush_ms=1000, mode=file_mode, source="replay") if out_capture else None
    client = make_client(base_url, api_key, timeout=timeout)
    replayer = Replayer(client, writer=writer, model=model, retries=retries)
    interrupted = False
    async def run_and_close() -> None:
        # The client's connections are closed on the loop that opened them: closed after
        # asyncio.run they log "Task exception was never retrieved … Event loop is closed".
        try:
            await replayer.run(plans, context=context, concurrency=concurrency)
        finally:
            await client.close()

    try:
        asyncio.run(run_and_close())
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if writer is not None:
            writer.close()
    turns = [replayer.results[k] for k in sorted(replayer.results)]
    meta = {"conversation_id": conv.conversation_id, "base_url": base_url, "context": context,
            "model": model, "out_capture": out_capture, "interrupted": interrupted}
    if fmt == "json":
        echo(inert_json(json.dumps(to_json(turns, **meta), indent=2, ensure_ascii=False, default=str)))
    else:
        title = conv.title or conv.conversation_id
        header = f"replay of {title!r} ({conv.conversation_id}) against {base_url}, context {context}\n"
        echo(render_table(turns, header=header), nl=False)
        if out_capture:
            echo(f"recorded into {out_capture}" + (" (interrupted: partial)" if interrupted else ""))
    if interrupted:
        sys.exit(130)
    if any(t.api is None or t.api.error for t in turns):
        sys.exit(1)
