"""Options shared by several commands, so every command spells them the same way."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import click


def capture_arguments(func: Callable) -> Callable:
    """One or more CAPTURE directories, combined, opened as an ``analyzer.store.Capture``."""

    @click.argument("capture_paths", metavar="CAPTURE...", nargs=-1, required=True, type=click.Path())
    @functools.wraps(func)
    def wrapper(*args, capture_paths, **kwargs):
        from analyzer.store import CaptureError, load_capture  # pandas: imported when a command runs

        try:
            capture = load_capture(capture_paths)
        except CaptureError as exc:
            raise click.ClickException(str(exc)) from exc
        return func(*args, capture=capture, **kwargs)

    return wrapper


def format_option(choices: Sequence[str], default: str = "text") -> Callable:
    return click.option(
        "-f", "--format", "fmt", type=click.Choice(list(choices)), default=default, show_default=True,
        help="Output format.",
    )


def json_flag(func: Callable) -> Callable:
    """``--json`` as a shorthand for ``--format json``."""
    return click.option("--json", "as_json", is_flag=True, help="Shorthand for --format json.")(func)


output_option = click.option(
    "-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
    help="Write to this file instead of standard output (written atomically).",
)


def write_output(text: str, output: str | None) -> None:
    """Print ``text`` or write it atomically to ``output``: never a half-written file."""
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
        return
    import os
    import tempfile

    directory = os.path.dirname(os.path.abspath(output))
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, output)
    except BaseException:
        os.unlink(tmp)
        raise
