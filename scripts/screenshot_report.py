"""Regenerate docs/report.png: the HTML report of a capture, as headless Chromium shows it.

Renders ``analyze report --format html`` for CAPTURE (the same ``render_html`` the CLI calls),
opens it from disk with every network request blocked, opens the newest conversation's
transcript, and takes a full-page screenshot ~1280 px wide. Fails if the page tried to load
anything or logged a console error. Needs Debian's ``chromium`` and the dev extra (playwright).

    .venv/bin/python scripts/make_sample_capture.py            # captures/sample.parquet
    .venv/bin/python scripts/screenshot_report.py [CAPTURE] [-o docs/report.png] [--dark]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analyzer.analysis.html_report import RASTER_N, render_html  # noqa: E402
from analyzer.store import load_capture  # noqa: E402
from tests.browser import open_page  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("capture", nargs="?", default=str(ROOT / "captures" / "sample.parquet"))
    parser.add_argument("-o", "--output", default=str(ROOT / "docs" / "report.png"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--raster-n", type=int, default=RASTER_N)
    parser.add_argument("--dark", action="store_true", help="Screenshot the dark colour scheme.")
    args = parser.parse_args()
    html = render_html(load_capture(args.capture), raster_n=args.raster_n)
    with tempfile.TemporaryDirectory(prefix="chatwire-shot-") as tmp:
        page_path = Path(tmp) / "report.html"
        page_path.write_text(html, encoding="utf-8")
        with open_page(page_path, width=args.width, color_scheme="dark" if args.dark else "light") as session:
            first = session.page.locator("tr.conv").first
            if first.count():
                first.locator("button.toggle").click()
            session.page.screenshot(path=args.output, full_page=True)
            if session.requests or session.console_errors:
                print(f"the page is not self-contained: requests {session.requests}, "
                      f"console errors {session.console_errors}", file=sys.stderr)
                return 1
    print(f"wrote {args.output} ({len(html):,} bytes of HTML from {args.capture})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
