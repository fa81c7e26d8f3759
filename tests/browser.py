"""Headless Chromium for tests and scripts: open a local file with every network request blocked.

Uses Playwright's Python package to speak the DevTools protocol to Debian's ``chromium`` (never a
browser Playwright downloads: ``playwright install`` cannot work offline). ``.ci/run`` installs the
``chromium`` package. Where no Chromium is found, :func:`chromium_path` raises
:class:`ChromiumMissing` with a message that says how to install it: a browser test must fail
loudly there, never pass or skip silently.

    with open_page(Path("report.html")) as page:
        page.page.click("tr.conv")
        assert not page.requests and not page.console_errors
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio",
]


class ChromiumMissing(RuntimeError):
    """No Chromium executable on this machine."""


def chromium_path() -> str:
    """``$CHROMIUM_PATH``, ``/usr/bin/chromium`` or the first Chromium on ``PATH``; ChromiumMissing if none."""
    env = os.environ.get("CHROMIUM_PATH")
    if env:
        if not os.access(env, os.X_OK):
            raise ChromiumMissing(f"CHROMIUM_PATH={env} is not an executable file")
        return env
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise ChromiumMissing(
        "headless Chromium is needed for this test but none was found (/usr/bin/chromium or chromium on PATH); "
        "install it with `apt-get install -y chromium` (.ci/run does) or set CHROMIUM_PATH"
    )


@dataclass
class PageSession:
    """An open page plus what it tried to do: ``requests`` that were blocked, ``console_errors``."""

    page: object  # playwright.sync_api.Page
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)


@contextmanager
def open_page(path: Path, *, width: int = 1280, height: int = 900, color_scheme: str = "light"
              ) -> Iterator[PageSession]:
    """Open ``path`` (file://) in a fresh headless Chromium profile with every other request aborted.

    Anything the page asks for that is not the page itself (a script, font, image, stylesheet,
    fetch, prefetch …) is aborted and recorded in ``requests``; console errors and uncaught page
    errors are recorded in ``console_errors``.
    """
    executable = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        raise ChromiumMissing("the playwright Python package is missing: pip install -e '.[dev]'") from exc
    url = path.resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="chatwire-chromium-") as profile, sync_playwright() as pw:
        # launch_persistent_context: a fresh --user-data-dir we own, removed afterwards.
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=executable, headless=True, args=FLAGS,
            viewport={"width": width, "height": height}, color_scheme=color_scheme,
            offline=True, service_workers="block",
        )
        try:
            session = PageSession(page=None)

            def route(r) -> None:
                if r.request.url == url:
                    r.continue_()
                else:
                    session.requests.append(r.request.url)
                    r.abort()

            context.route("**/*", route)
            page = context.pages[0] if context.pages else context.new_page()
            session.page = page
            page.on("console", lambda m: session.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: session.console_errors.append(f"uncaught: {e}"))
            page.on("requestfailed", lambda r: None if r.url == url or r.url in session.requests
                    else session.requests.append(r.url))
            page.goto(url, wait_until="load")
            yield session
        finally:
            context.close()


__all__ = ["FLAGS", "ChromiumMissing", "PageSession", "chromium_path", "open_page"]
