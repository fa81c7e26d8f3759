"""Shared fixtures: the local origin (stand-in for chatgpt.com / the OpenAI API) and real mitmdump processes.

Fixtures:

- ``origin`` (session): HTTPS origin (HTTP/2 + HTTP/1.1 by ALPN) in a subprocess; ``origin.url``,
  ``origin.verify`` (its CA file, for direct clients), ``origin.log(since)``.
- ``origin_plain`` (session): the same over plain HTTP (HTTP/1.1 and h2c).
- ``mitm_confdir`` (session): one mitmproxy confdir, so the CA is generated once per test session.
- ``mitmdump_factory`` (function): ``start(script=None, options={}, flow_file=None, ...)`` →
  :class:`tests.origin.mitm.MitmdumpProcess` (``.proxy_url``, ``.ca_path``, ``.stop()``, ``.kill()``,
  ``.log_text()``); every process started is stopped at teardown.
- ``mitmdump`` (function): a plain mitmdump (no script) from the factory.

Nothing here needs Chromium or the shared samples folder; the HTML-report tests fail (never skip) when
no Chromium can be found.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.origin.certs import CertPaths, generate_certs
from tests.origin.mitm import MitmdumpProcess, run_mitmdump
from tests.origin.server import OriginHandle, start_origin

STREAM_ONLY_ADDON = Path(__file__).parent / "origin" / "stream_only_addon.py"


@pytest.fixture(scope="session")
def origin_certs(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    """CA + server certificate for the TLS origin."""
    return generate_certs(tmp_path_factory.mktemp("origin-certs"))


@pytest.fixture(scope="session")
def origin(tmp_path_factory: pytest.TempPathFactory, origin_certs: CertPaths) -> Iterator[OriginHandle]:
    """The HTTPS origin (HTTP/1.1 and HTTP/2), shared by the whole test session."""
    handle = start_origin(tls=True, certs=origin_certs, workdir=tmp_path_factory.mktemp("origin-tls"))
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def origin_plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OriginHandle]:
    """The plain-HTTP origin, shared by the whole test session."""
    handle = start_origin(tls=False, workdir=tmp_path_factory.mktemp("origin-plain"))
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def mitm_confdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mitmproxy's confdir for this test session (``mitmproxy-ca-cert.pem`` appears here)."""
    return tmp_path_factory.mktemp("mitm-confdir")


@pytest.fixture
def mitmdump_factory(tmp_path: Path, mitm_confdir: Path) -> Iterator[Callable[..., MitmdumpProcess]]:
    """Start real mitmdump processes: ``start(script=None, options=None, flow_file=None, ...)``."""
    started: list[MitmdumpProcess] = []

    def start(script: Path | str | None = None, options: dict[str, Any] | None = None, **kwargs: Any
              ) -> MitmdumpProcess:
        kwargs.setdefault("confdir", mitm_confdir)
        proc = run_mitmdump(tmp_path, script=script, options=options, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop(timeout=15)  # SIGINT, then SIGKILL if it hangs


@pytest.fixture
def mitmdump(mitmdump_factory: Callable[..., MitmdumpProcess]) -> MitmdumpProcess:
    """A plain mitmdump (no script), stopped at teardown."""
    return mitmdump_factory()
