"""``analyze conversations``: list the conversations of a capture, or rebuild one of them."""

from __future__ import annotations

import json
import shutil

import click

from analyzer.analysis import conversations as conv_lib
from analyzer.cli.options import capture_arguments, format_option, mode_option, output_option, write_output


@click.command("conversations")
@capture_arguments
@click.option("-c", "--conversation", "conversation_id", metavar="ID", default=None,
              help="Rebuild this conversation (full id or a unique prefix); without it, list them all.")
@format_option(["text", "markdown", "json", "openai"])
@click.option("-b", "--branch", type=click.Choice(["active", "all"]), default="active", show_default=True,
              help="active: the branch the user last saw; all: every regeneration and edit.")
@output_option
@mode_option
def command(capture, conversation_id: str | None, fmt: str, branch: str, output: str | None,
            file_mode: int | None) -> None:
    """List the conversations of CAPTURE, or rebuild one as a transcript or a tree.

    The tree is merged from every source in the capture (request messages, streamed answers,
    conversation reads); docs/conversations.md says which copy of a message wins.
    `--format openai` prints the active branch as the `messages` list of a
    `chat.completions.create` call.

    \b
    Examples:
        analyze conversations captures/sample.parquet
        analyze conversations captures/sample.parquet -c 6790a1b2 --format markdown
        analyze conversations captures/sample.parquet -c 6790a1b2 -f json --branch all
        analyze conversations captures/sample.parquet -c 6790a1b2 -f openai -o context.json
    """
    where = capture.paths[0]
    try:
        if conversation_id is None:
            if fmt == "openai":
                raise click.ClickException("--format openai needs --conversation ID (one conversation)")
            listing = conv_lib.list_conversations(capture)
            if fmt == "json":
                text = json.dumps(conv_lib.list_to_json(listing), indent=2, ensure_ascii=False) + "\n"
            elif fmt == "markdown":
                text = conv_lib.render_list_markdown(listing)
            else:
                # Full ids leave little room at 80 columns: use $COLUMNS or the terminal's width, and
                # cut nothing when the output goes to a file or a pipe.
                width = shutil.get_terminal_size((200, 24)).columns
                text = conv_lib.render_list_text(listing, width=max(width, 80))
        else:
            if fmt == "openai" and branch != "active":
                raise click.ClickException("--format openai takes the active branch only (drop --branch all)")
            conv = conv_lib.build_conversation(capture, conversation_id)
            text = {
                "text": lambda: conv_lib.render_text(conv, branch),
                "markdown": lambda: conv_lib.render_markdown(conv, branch),
                "json": lambda: conv_lib.render_json(conv, branch),
                "openai": lambda: conv_lib.render_openai(conv),
            }[fmt]()
    except conv_lib.ConversationNotFound as exc:
        raise click.ClickException(f"{where}: {exc}") from exc
    write_output(text, output, fmt, mode=file_mode)
