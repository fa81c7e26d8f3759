"""Golden files: the one switch for every golden test.

``CHATWIRE_UPDATE_GOLDEN=1 .venv/bin/pytest …`` rewrites the files under tests/golden/ from what the
code now prints (review the diff before committing); without it, a difference fails the test.
"""

from __future__ import annotations

import os
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"
SWITCH = "CHATWIRE_UPDATE_GOLDEN"


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get(SWITCH):
        path.parent.mkdir(exist_ok=True)
        path.write_text(actual, encoding="utf-8")
    assert path.exists(), f"{path} is missing; {SWITCH}=1 writes it"
    assert actual == path.read_text(encoding="utf-8"), f"{name} changed; {SWITCH}=1 rewrites it"
