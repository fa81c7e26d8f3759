"""docs/schema.md and analyzer/schema.py describe the same tables, columns and types.

Each table is a ``### <table>`` section of docs/schema.md whose Markdown column tables list
``| `column` | type | meaning |``. A failure names every column that is in one and not the other, or
whose documented type differs, so whoever adds a column knows exactly which row to write.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

from analyzer.schema import TABLES

DOC = Path(__file__).resolve().parent.parent / "docs" / "schema.md"
# A row's first cell names one column or several (`a`, `b`, `c`), all of the row's type.
_ROW = re.compile(r"^\|\s*(`[^`]+`(?:\s*,\s*`[^`]+`)*)\s*\|\s*([^|]+?)\s*\|")


def documented_tables(text: str) -> dict[str, dict[str, str]]:
    """``{table: {column: documented type}}`` from the ``### <name>`` sections that have a column table."""
    tables: dict[str, dict[str, str]] = {}
    section: str | None = None
    in_table = False
    for line in text.splitlines():
        heading = re.match(r"^#{2,3}\s+`?([A-Za-z0-9_]+)`?\s*$", line)
        if line.startswith("#"):
            section, in_table = (heading.group(1) if heading and line.startswith("### ") else None), False
            continue
        if section is None:
            continue
        if re.match(r"^\|\s*column\s*\|\s*type\s*\|", line):
            # every column table of a section counts (a section may add columns in a later table)
            tables.setdefault(section, {})
            in_table = True
            continue
        if in_table:
            row = _ROW.match(line)
            if row:
                for name in re.findall(r"`([^`]+)`", row.group(1)):
                    tables[section][name] = row.group(2)
            elif not line.startswith("|"):
                in_table = False
    return tables


def doc_type(arrow_type: pa.DataType) -> str:
    """How docs/schema.md spells an Arrow type."""
    if pa.types.is_timestamp(arrow_type):
        return "timestamp"
    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_float64(arrow_type):
        return "float64"  # Arrow prints it "double"
    return str(arrow_type)


def problems(text: str) -> list[str]:
    docs = documented_tables(text)
    out = []
    for table, schema in TABLES.items():
        if table not in docs:
            out.append(f"table {table}: in analyzer/schema.py, but docs/schema.md has no '### {table}' section "
                       f"with a '| column | type | meaning |' table")
            continue
        documented = docs[table]
        for field in schema:
            want = doc_type(field.type)
            if field.name not in documented:
                out.append(f"column {table}.{field.name} ({want}): in analyzer/schema.py, not documented; add "
                           f"'| `{field.name}` | {want} | … |' under '### {table}' in docs/schema.md")
            elif documented[field.name].split(" (")[0].strip() != want:
                out.append(f"column {table}.{field.name}: docs/schema.md says {documented[field.name]!r}, "
                           f"analyzer/schema.py says {want}")
        for name in documented:
            if name not in schema.names:
                out.append(f"column {table}.{name}: documented in docs/schema.md, not in analyzer/schema.py")
    for table in docs:
        if table not in TABLES:
            out.append(f"table {table}: documented in docs/schema.md, not in analyzer/schema.py")
    return out


def test_documented_columns_match_the_schema():
    found = problems(DOC.read_text(encoding="utf-8"))
    assert not found, "docs/schema.md and analyzer/schema.py disagree:\n  " + "\n  ".join(found)


def test_the_check_names_the_column_that_is_missing():
    """The check itself, on a hand-made page: one table documented with a column missing, one typo'd type,
    one column too many."""
    page = "\n".join([
        "### flows", "", "| column | type | meaning |", "|---|---|---|",
        *[f"| `{f.name}` | {doc_type(f.type)} | x |" for f in TABLES["flows"] if f.name != "cf_ray"],
        "| `ghost` | string | x |", "",
        "### errors", "", "| column | type | meaning |", "|---|---|---|",
        "| `flow_id` | string | x |", "| `stage` | string (JSON) | x |", "| `error` | int64 | x |",
        "| `at` | timestamp | x |", "",
    ])
    found = problems(page)
    assert "column flows.cf_ray (string): in analyzer/schema.py, not documented; add '| `cf_ray` | string | … |' " \
           "under '### flows' in docs/schema.md" in found
    assert "column flows.ghost: documented in docs/schema.md, not in analyzer/schema.py" in found
    assert "column errors.error: docs/schema.md says 'int64', analyzer/schema.py says string" in found
    assert not any("errors.stage" in p for p in found)  # "string (JSON)" is a string
    assert any(p.startswith("table conversation_turns: in analyzer/schema.py, but docs/schema.md has no") for p in found)
