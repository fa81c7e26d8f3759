"""``analyze privacy``: which parties a capture's traffic went to, with which identifiers and what
fingerprinting surface; optionally as a difference to a second capture."""

from __future__ import annotations

import click

from analyzer.cli.options import capture_arguments, format_option, json_flag, output_option, write_output
from analyzer.store import Capture, CaptureError


@click.command("privacy")
@capture_arguments
@format_option(["text", "markdown", "json"])
@json_flag
@output_option
@click.option("--site", default=None, metavar="DOMAIN",
              help="The first party (default: the registrable domain the conversations went to).")
@click.option("--against", "against", multiple=True, type=click.Path(), metavar="CAPTURE",
              help="A second capture to compare with (repeat for several directories read as one).")
@click.option("--salt", default=None, metavar="TEXT",
              help="Salt for the value hashes (default: random, so hashes match only within one run).")
def command(capture: Capture, fmt: str, as_json: bool, output: str | None, site: str | None,
            against: tuple[str, ...], salt: str | None) -> None:
    """Audit CAPTURE: hosts by party, identifiers sent, identifier sharing, fingerprinting surface.

    Parties are registrable domains (eTLD+1, from the Public Suffix List shipped with tldextract,
    never fetched); identifier values appear only as salted hashes. With ``--against``, also what
    one capture sent that the other did not (say, with and without "do not remember"). The fields
    are documented in docs/privacy.md.

    \b
    Examples:
        analyze privacy captures/sample.parquet
        analyze privacy captures/sample.parquet --json | jq '.links'
        analyze privacy captures/remember.parquet --against captures/do-not-remember.parquet
    """
    import secrets

    from analyzer.analysis.privacy import privacy_audit, privacy_diff
    from analyzer.analysis.render_privacy import render_audit
    from analyzer.store import load_capture

    if as_json:
        fmt = "json"
    salt = salt if salt is not None else secrets.token_hex(16)  # one salt for both sides of a diff
    try:
        audit = privacy_audit(capture, site=site, salt=salt)
        diff = None
        if against:
            other = privacy_audit(load_capture(against), site=audit.site, salt=salt)
            diff = privacy_diff(audit, other)
    except CaptureError as exc:
        raise click.ClickException(str(exc)) from exc
    write_output(render_audit(audit, fmt, diff), output, fmt)  # fmt: JSON stays valid JSON, text is inert
