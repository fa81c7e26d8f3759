"""``analyze watch``: turns as they stream, in a second terminal while mitmdump captures."""

from __future__ import annotations

import select
import signal
import socket
import time

import click

from analyzer.capture.watch import parse_address

DEFAULT_LISTEN = "127.0.0.1:7878"


@click.command("watch")
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, metavar="HOST:PORT",
              help="Loopback UDP address the addon publishes to (mitmdump --set capture_watch=HOST:PORT).")
@click.option("--exit-after", type=float, default=None, metavar="SECONDS",
              help="Stop after this many seconds (default: run until Ctrl-C).")
def command(listen: str, exit_after: float | None) -> None:
    """Show turns live as they stream through a capture.

    \b
    Start the capture with the watch channel on, then this in a second terminal:
        mitmdump -s addons/chatgpt_capture.py --set capture_watch=127.0.0.1:7878
        analyze watch --listen 127.0.0.1:7878
    """
    from rich.console import Console
    from rich.live import Live

    from analyzer.watch.state import WatchState
    from analyzer.watch.view import render

    try:
        address = parse_address(listen)
    except ValueError as exc:
        raise click.BadParameter(str(exc).replace("capture_watch", "--listen"), param_hint="--listen") from None
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind(address)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on udp://{listen}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    state = WatchState()
    # Ctrl-C and SIGTERM both end the view cleanly, even when started in the background by a
    # shell that ignores SIGINT for its children (Python then installs no KeyboardInterrupt).
    previous = {signum: signal.signal(signum, signal.default_int_handler)
                for signum in (signal.SIGINT, signal.SIGTERM)}
    label = f"{address[0]}:{address[1]}"
    deadline = None if exit_after is None else time.monotonic() + exit_after
    try:
        with Live(render(state, listening=label), console=Console(), refresh_per_second=8,
                  auto_refresh=False) as live:
            while deadline is None or time.monotonic() < deadline:
                ready, _, _ = select.select([sock], [], [], 0.125)
                changed = False
                while ready:
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        break
                    state.apply_datagram(data)
                    changed = True
                if changed:
                    live.update(render(state, listening=label), refresh=True)
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
