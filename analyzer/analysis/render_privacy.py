"""Render a privacy audit (``analyzer.analysis.privacy``) as text, Markdown or JSON.

The numbers live in the audit; this module only lays them out, with the report's own blocks so
that text and Markdown show the same content.
"""

from __future__ import annotations

import json

from analyzer.analysis.privacy import PrivacyAudit
from analyzer.analysis.render_report import Block, Heading, Para, Table, blocks_to_markdown, blocks_to_text

FORMATS = ("text", "markdown", "json")


def _list(values) -> str:
    return ", ".join(str(v) for v in values) if values else "-"


def _when(value) -> str:
    return "-" if value is None or str(value) in ("NaT", "None") else str(value)[:19].replace("T", " ")


def audit_blocks(audit: PrivacyAudit, diff: dict | None = None) -> list[Block]:
    blocks: list[Block] = [Heading(f"Privacy audit of {audit.site}", 1)]
    hosts = audit.hosts
    third = hosts[hosts["party"] == "third"] if len(hosts) else hosts
    blocks.append(Para(f"{len(hosts)} host(s) in {hosts['registrable_domain'].nunique() if len(hosts) else 0} "
                       f"registrable domain(s); {len(third)} third-party host(s). Parties by eTLD+1 relative to "
                       f"{audit.site}; 'processors' names the analytics services whose formats a host received."))
    blocks.append(Heading("Hosts"))
    blocks.append(Table(
        ["host", "party", "owner", "processors", "flows", "identifiers"],
        [[r.host, r.party, r.owner or "-", _list(r.processors), str(r.flows), _list(r.identifier_kinds)]
         for r in hosts.itertuples(index=False)],
        align="llllrl", wrap_last=True) if len(hosts) else Para("No hosts."))
    blocks.append(Heading("Identifiers sent"))
    ids = audit.identifiers
    if len(ids):
        blocks.append(Table(
            ["kind", "field", "host", "recipient", "value", "n"],
            [[r.kind, r.field, r.host, r.recipient, r.value_hash or "(redacted)", str(r.n)]
             for r in ids.itertuples(index=False)], align="lllllr"))
        blocks.append(Para("Values are salted hashes: equal values hash alike within this audit only."))
    else:
        blocks.append(Para("No identifiers found."))
    blocks.append(Heading("Identifier sharing"))
    links = audit.links
    if len(links):
        blocks.append(Table(
            ["kind", "value", "hosts", "recipients"],
            [[r.kind, r.value_hash, _list(r.hosts), _list(r.recipients)]
             for r in links.itertuples(index=False)], align="llll", wrap_last=True))
    else:
        blocks.append(Para("No identifier value went to more than one recipient."))
    blocks.append(Heading("Fingerprinting surface"))
    fp = audit.fingerprint
    if len(fp):
        blocks.append(Table(
            ["attribute", "value", "hosts", "n"],
            [[r.attribute, r.value, _list(r.hosts), str(r.n)] for r in fp.itertuples(index=False)],
            align="lllr"))
    else:
        blocks.append(Para("No fingerprinting attributes found."))
    if diff is not None:
        blocks.append(Heading("Difference to the other capture"))
        for section, label in (("hosts", "hosts"), ("identifiers", "identifier fields"),
                               ("identifier_values", "identifier values"), ("fingerprint", "fingerprint values")):
            only_a, only_b = diff[section]["only_a"], diff[section]["only_b"]
            blocks.append(Para(f"{label}: {len(only_a)} only in this capture, {len(only_b)} only in the other."))
            rows = [["this"] + list(map(str, d.values())) for d in only_a] + \
                   [["other"] + list(map(str, d.values())) for d in only_b]
            if rows:
                headers = ["only in"] + list((only_a or only_b)[0].keys())
                blocks.append(Table(headers, rows, align="l" * len(headers)))
    return blocks


def render_audit(audit: PrivacyAudit, fmt: str = "text", diff: dict | None = None) -> str:
    if fmt == "json":
        obj = audit.to_dict()
        if diff is not None:
            obj["diff"] = diff
        return json.dumps(obj, indent=2, ensure_ascii=False, default=str, allow_nan=False) + "\n"
    blocks = audit_blocks(audit, diff)
    if fmt == "markdown":
        return blocks_to_markdown(blocks)
    if fmt == "text":
        return blocks_to_text(blocks)
    raise ValueError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")


__all__ = ["FORMATS", "audit_blocks", "render_audit"]
