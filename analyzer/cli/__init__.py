"""The ``analyze`` command line: a thin shell over the ``analyzer`` library.

Each command lives in its own module under ``analyzer/cli/`` and exposes a click command
named ``command``; this module only assembles them.
"""

from __future__ import annotations

import importlib
import logging

import click

# Module name under analyzer.cli -> the command it provides, in the order `--help` lists them.
COMMAND_MODULES = ("summary", "report", "conversations", "privacy", "importer", "serve", "replay", "bench",
                   "compact", "watch", "export", "compare")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"analyzer.cli.{_name}")
    except ModuleNotFoundError as exc:  # a command not built yet in this tree
        if exc.name != f"analyzer.cli.{_name}":
            raise
        continue
    main.add_command(_module.command)
