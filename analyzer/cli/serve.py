"""``analyze serve``: play a capture back over HTTP with its captured timing."""

from __future__ import annotations

import logging
import sys

import click

from analyzer.cli.options import capture_arguments, echo
from analyzer.inert import InertFormatter
from analyzer.store import Capture


@click.command("serve")
@capture_arguments
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but a loopback address lets other machines read the capture.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: a free one, printed at start).")
@click.option("--speed", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Playback speed: 2 halves every pause, 0 sends everything at once.")
@click.option("--loop", is_flag=True, help="When every recording has been served, start over.")
def command(capture: Capture, host: str, port: int, speed: float, loop: bool) -> None:
    """Serve the captured streams again, each event at its captured time.

    Conversation POSTs (/backend-api/conversation and the later paths) get the captured SSE
    stream of the matching turn; /v1/chat/completions and /v1/responses get the captured API
    call; GET /backend-api/conversation/<id> and /v1/models answer from the capture. One line
    per request goes to standard error.

    \b
    Example:
        analyze serve captures/sample.parquet --port 8080 --speed 1
        curl -N -H 'accept: text/event-stream' -d '{"messages": []}' \\
            http://127.0.0.1:8080/backend-api/conversation
    """
    from analyzer.replay.matching import load_catalog
    from analyzer.replay.serve import access_log, run

    catalog = load_catalog(capture)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(InertFormatter("%(asctime)s %(message)s"))  # request paths are the client's
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False

    if not is_loopback(host):
        echo(f"WARNING: --host {host} serves this capture to every machine that can reach this one: the "
             f"conversations in it, unauthenticated. Use --host 127.0.0.1 unless that is what you mean.", err=True)

    def ready(urls: list[str]) -> None:
        spread = sum(1 for r in catalog.web_turns + catalog.api_calls if r.timing != "captured")
        echo(
            f"chatwire: serving {len(catalog.web_turns)} conversation turn(s) and {len(catalog.api_calls)} "
            f"API call(s) on {' '.join(urls)} (speed {speed:g}{', loop' if loop else ''}"
            f"{f', {spread} without per-event times' if spread else ''}); Ctrl-C stops",
        )
        sys.stdout.flush()

    try:
        run(catalog, host, port, speed=speed, loop=loop, ready=ready)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.strip().lower() in ("localhost", "localhost.", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything
