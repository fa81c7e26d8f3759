"""Options shared by several commands, so every command spells them the same way."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import click

from analyzer.inert import inert, inert_json


def capture_arguments(func: Callable) -> Callable:
    """One or more CAPTURE directories, combined, opened as an ``analyzer.store.Capture``.

    A capture that cannot be read — found missing here, or a damaged part found when the command
    reads a table (``analyzer.store.reader`` raises CaptureError) — ends the command with one line
    naming the file and exit status 1, whichever command it is."""

    @click.argument("capture_paths", metavar="CAPTURE...", nargs=-1, required=True, type=click.Path())
    @functools.wraps(func)
    def wrapper(*args, capture_paths, **kwargs):
        from analyzer.store import CaptureError, load_capture  # pandas: imported when a command runs

        try:
            capture = load_capture(capture_paths)
        except CaptureError as exc:
            raise click.ClickException(inert(exc)) from exc
        try:
            return func(*args, capture=capture, **kwargs)
        except CaptureError as exc:
            raise click.ClickException(inert(exc)) from exc

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


def echo(text: str = "", *, err: bool = False, nl: bool = True) -> None:
    """``click.echo`` of a line that may hold text from traffic: always made ``inert`` first.

    Every command prints through this (or ``write_output``), so no control character from a
    capture reaches the terminal."""
    click.echo(inert(text), err=err, nl=nl)


def safe_text(text: str, fmt: str) -> str:
    """A command's whole output made inert for its format: JSON keeps its value (``inert_json``),
    HTML is escaped already by its template, everything else goes through ``inert``."""
    if fmt in ("json", "openai"):
        return inert_json(text)
    if fmt == "html":
        return text
    return inert(text)


def write_output(text: str, output: str | None, fmt: str = "text", *, mode: int | None = None) -> None:
    """Print ``text`` (made safe for ``fmt``) or write it atomically to ``output``: never a
    half-written file, and a new file is private (``mode``, default 0600) whatever the umask."""
    from analyzer.store.files import write_file_atomic

    text = safe_text(text, fmt)
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
        return
    write_file_atomic(output, text.encode("utf-8"), mode=mode)


def mode_option(func: Callable) -> Callable:
    """``--mode``: the permission bits of the files a command creates (octal, default 0600)."""
    return click.option(
        "--mode", "file_mode", type=OctalMode(), default=None, metavar="OCTAL",
        help="Permissions of the files written, e.g. 0640 to share with the group (default 0600; "
             "directories get x where r is set).",
    )(func)


class OctalMode(click.ParamType):
    name = "octal"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            mode = int(str(value), 8)
        except ValueError:
            self.fail(f"{value!r} is not an octal file mode such as 0600 or 0640", param, ctx)
        if not 0 <= mode <= 0o777:
            self.fail(f"{value!r} is not a file mode between 000 and 777", param, ctx)
        return mode


def engine_options(func: Callable) -> Callable:
    """``--engine duckdb|spark``, ``--spark-master URL``, ``--memory-limit SIZE``: where the metric
    queries run (``analyzer.engine``). Passed to the command as ``engine_options`` (a dict)."""

    @click.option("--engine", "engine_name", type=click.Choice(["duckdb", "spark"]), default="duckdb",
                  show_default=True, help="Query engine of the metrics: embedded DuckDB, or Spark (pyspark).")
    @click.option("--spark-master", default=None, metavar="URL",
                  help="Spark master for --engine spark (default local[2]).")
    @click.option("--memory-limit", default="1GB", show_default=True, metavar="SIZE",
                  help="DuckDB's memory cap (e.g. 512MB, 2GB); beyond it, it spills to a private temp directory.")
    @functools.wraps(func)
    def wrapper(*args, engine_name, spark_master, memory_limit, **kwargs):
        if spark_master and engine_name != "spark":
            raise click.UsageError("--spark-master needs --engine spark")
        options: dict = {"engine": engine_name}
        if engine_name == "spark":
            options["spark_master"] = spark_master
        else:
            options["memory_limit"] = memory_limit
        try:
            return func(*args, engine_options=options, **kwargs)
        except click.ClickException:
            raise
        except Exception as exc:
            message = engine_error_message(exc, kwargs.get("capture"), options)
            if message is None:
                raise
            raise click.ClickException(inert(message)) from exc

    return wrapper


def engine_error_message(exc: BaseException, capture, options: dict) -> str | None:
    """One line for an error the query engine raised (DuckDB out of memory, a Spark job that
    failed), naming the capture; ``None`` for anything else (a bug: its traceback is kept)."""
    module = type(exc).__module__ or ""
    if not (module.startswith(("duckdb", "_duckdb", "py4j", "pyspark"))):
        return None
    where = ", ".join(str(p) for p in capture.paths) if capture is not None else "capture"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    if len(first) > 200:
        first = first[:197] + "..."
    if type(exc).__name__ == "OutOfMemoryException" or "OutOfMemoryError" in str(exc)[:2000]:
        if options.get("engine") == "duckdb":
            return (f"{where}: the engine ran out of memory at --memory-limit {options.get('memory_limit')} "
                    f"({first}); raise --memory-limit")
        return f"{where}: the Spark engine ran out of memory ({first}); give the driver/executors more memory"
    return f"{where}: the {options.get('engine', 'query')} engine failed: {first}"
