"""The ``analyze`` command line: a thin shell over the ``analyzer`` library.

Each command lives in its own module under ``analyzer/cli/`` and exposes a click command
named ``command``; this module only assembles them.
"""

from __future__ import annotations

import importlib
import logging

import click

# Command name -> the module under analyzer.cli that provides it (as ``command``).
COMMANDS = {"tables": "summary", "report": "report", "conversations": "conversations", "privacy": "privacy",
            "import": "importer", "serve": "serve", "replay": "replay", "bench": "bench", "compact": "compact",
            "watch": "watch", "export": "export", "compare": "compare"}


class LazyGroup(click.Group):
    """Imports a command's module when the command is looked up: ``analyze report`` does not import
    what ``analyze watch`` needs (mitmproxy, textual), a few hundred milliseconds of every run."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)  # click's own order for --help

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        return importlib.import_module(f"analyzer.cli.{module}").command if module else None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="chatwire")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Analyse, import and replay ChatGPT and OpenAI-API traffic captures.

    \b
    Example:
        analyze report captures/sample.parquet
    """
    from analyzer import log_safety
    from analyzer.inert import InertFormatter

    log_safety.install()  # every analyzer record inert, its traceback too, whatever handler prints it

    level = logging.WARNING - 10 * verbose
    handler = logging.StreamHandler()
    # Log lines can quote traffic (a flow id, an API's error text): inert, like every other output.
    handler.setFormatter(InertFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=max(level, logging.DEBUG), handlers=[handler])
