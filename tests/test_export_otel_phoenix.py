"""``analyze export otel`` read by a third-party receiver: Arize Phoenix, started by the test.

Phoenix (``arize-phoenix`` from PyPI) takes OTLP/HTTP protobuf on ``/v1/traces`` and keeps the spans
in its own SQLite database; the test reads them back through its REST API
(``GET /v1/projects/{project}/spans``) and checks them against the hand-worked capture of
tests/test_export_otel.py and against the ids the file export writes. Phoenix reads the GenAI
conventions itself: it files a ``gen_ai.operation.name = chat`` span as an ``LLM`` span, the
conversation id as its ``session.id``, the usage as ``llm.token_count.*``. It keeps no OTLP
SpanKind (its ``span_kind`` is the OpenInference one), so CLIENT is checked in the OTLP itself.

The file output is read by a real consumer too: every line parsed strictly by opentelemetry-proto's
``json_format.Parse`` into an ``ExportTraceServiceRequest`` (no unknown field allowed), then handed
to Phoenix as it is (Phoenix takes protobuf only, not OTLP/JSON, on ``/v1/traces``: the parsed
request is serialized unchanged).

Phoenix is installed once into its own venv, ``~/.cache/chatwire-tests/phoenix``
(``CHATWIRE_PHOENIX_CACHE``), never into the project's: its dependencies are heavy. It runs on
loopback only, with a temporary working directory, telemetry and external resources off. If it
cannot be installed the test fails; ``CHATWIRE_SKIP_PHOENIX=1`` skips it on purpose.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from analyzer.cli import main
from tests.capture_factory import T0, make_capture
from tests.test_export_otel import C1, _attrs, _rows, _spans

PHOENIX_VERSION = "20.26.1"  # the release this test was written against

pytestmark = pytest.mark.slow


def _cache() -> Path:
    return Path(os.environ.get("CHATWIRE_PHOENIX_CACHE") or Path.home() / ".cache" / "chatwire-tests" / "phoenix")


def _installed_version(venv: Path) -> str | None:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    proc = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('arize-phoenix'))"],
                          capture_output=True, text=True, timeout=120)
    return proc.stdout.strip() if proc.returncode == 0 else None


@pytest.fixture(scope="session")
def phoenix_venv() -> Path:
    """A venv of its own holding ``arize-phoenix``, created and installed when absent."""
    if os.environ.get("CHATWIRE_SKIP_PHOENIX") == "1":
        pytest.skip("CHATWIRE_SKIP_PHOENIX=1: the Arize Phoenix receiver test is switched off")
    venv = _cache()
    if _installed_version(venv) != PHOENIX_VERSION:
        venv.parent.mkdir(parents=True, exist_ok=True)
        if not (venv / "bin" / "python").exists():
            made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True,
                                  timeout=300)
            if made.returncode != 0:
                pytest.fail(f"could not create the Phoenix venv at {venv}:\n{made.stderr[-2000:]}")
        proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                               f"arize-phoenix=={PHOENIX_VERSION}"], capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            pytest.fail(f"pip install arize-phoenix=={PHOENIX_VERSION} failed:\n{proc.stderr[-3000:]}")
        if _installed_version(venv) != PHOENIX_VERSION:
            pytest.fail(f"{venv} does not hold arize-phoenix {PHOENIX_VERSION} after pip install")
    return venv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def phoenix(phoenix_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``phoenix serve`` on free loopback ports, a fresh database each test (the ids are the same
    in every export: a second copy of a span is one Phoenix already has); yields its base URL."""
    workdir = tmp_path_factory.mktemp("phoenix")
    port, grpc_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHOENIX_", "OTEL_"))} | {
        "PHOENIX_WORKING_DIR": str(workdir), "PHOENIX_HOST": "127.0.0.1", "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(grpc_port), "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false", "PHOENIX_DISABLE_AGENT_ASSISTANT": "true",
    }
    log = open(workdir / "phoenix.log", "w")  # noqa: SIM115 (open while the server runs)
    proc = subprocess.Popen([str(phoenix_venv / "bin" / "phoenix"), "serve"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail(f"phoenix serve exited with {proc.returncode}:\n{(workdir / 'phoenix.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"phoenix serve not up after 240 s:\n{(workdir / 'phoenix.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        log.close()


def _phoenix_spans(url: str, project: str, n: int, timeout: float = 60) -> dict[str, dict]:
    """Phoenix's own spans of ``project`` by chatwire flow id, once ``n`` have been stored
    (Phoenix inserts what it received in batches, a moment later)."""
    deadline = time.monotonic() + timeout
    spans: list[dict] = []
    while time.monotonic() < deadline:
        response = httpx.get(f"{url}/v1/projects/{project}/spans", params={"limit": 1000}, timeout=10)
        if response.status_code == 200:
            spans = response.json()["data"]
            if len(spans) >= n:
                break
        time.sleep(0.5)
    assert len(spans) == n, f"Phoenix holds {len(spans)} spans in {project}, not {n}"
    return {s["attributes"]["chatwire.flow_id"]: s for s in spans}


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _file_lines(capture_path: Path, tmp_path: Path) -> list[str]:
    out = tmp_path / "traces.jsonl"
    result = CliRunner().invoke(main, ["export", "otel", str(capture_path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out.read_text().splitlines()


def _strict_parse(line: str) -> ExportTraceServiceRequest:
    """One OTLP/JSON line into the official message, unknown fields refused. OTLP/JSON writes ids
    as hex where proto3's JSON mapping has base64 (the one difference the OTLP spec makes)."""
    def ids(node):
        if isinstance(node, dict):
            return {k: base64.b64encode(bytes.fromhex(v)).decode() if k in ("traceId", "spanId", "parentSpanId")
                    else ids(v) for k, v in node.items()}
        if isinstance(node, list):
            return [ids(v) for v in node]
        return node

    return json_format.Parse(json.dumps(ids(json.loads(line))), ExportTraceServiceRequest(),
                             ignore_unknown_fields=False)


# The first test to run installs Phoenix into its venv (minutes on a fresh machine): a long timeout.
@pytest.mark.timeout(2400)
def test_phoenix_stores_the_spans_with_their_times_attributes_events_and_ids(phoenix, tmp_path):
    capture_path = make_capture(tmp_path / "cap.parquet", _rows())
    lines = _file_lines(capture_path, tmp_path)
    file_requests = [_strict_parse(line) for line in lines if '"resourceSpans"' in line]
    file_spans = _spans(file_requests)
    assert len(file_spans) == 7 and all(s.kind == 3 for s in file_spans.values())  # SPAN_KIND_CLIENT

    result = CliRunner().invoke(main, ["export", "otel", str(capture_path), "--endpoint", f"{phoenix}/v1/traces"])
    assert result.exit_code == 0, result.output
    assert "spans only" in result.output
    stored = _phoenix_spans(phoenix, "default", 7)
    assert set(stored) == set(file_spans)

    for flow_id, span in stored.items():
        mine = file_spans[flow_id]
        # The deterministic ids of the file export, as Phoenix keeps them (hex).
        assert span["context"]["trace_id"] == mine.trace_id.hex()
        assert span["context"]["span_id"] == mine.span_id.hex()
        assert span["parent_id"] is None
        assert span["name"] == mine.name
        assert abs(_epoch(span["start_time"]) * 1e9 - mine.start_time_unix_nano) < 2_000
        assert abs(_epoch(span["end_time"]) * 1e9 - mine.end_time_unix_nano) < 2_000
        # Phoenix's reading of the GenAI conventions: every span is an LLM call.
        assert span["span_kind"] == "LLM"
        # Every attribute we sent came through with its value and type.
        assert {k: v for k, v in span["attributes"].items() if k in _attrs(mine.attributes)} == _attrs(mine.attributes)
        assert [e["name"] for e in span["events"]] == [e.name for e in mine.events]

    f1 = stored["F1"]
    a = f1["attributes"]
    assert f1["name"] == "chat gpt-4o"
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.conversation.id"] == C1 and a["gen_ai.request.model"] == "gpt-4o"
    assert a["gen_ai.request.stream"] is True and a["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.8)
    assert a["gen_ai.response.finish_reasons"] == ["stop"] and a["server.port"] == 443
    assert a["session.id"] == C1 and a["llm.model_name"] == "gpt-4o"  # Phoenix's own names for them
    assert abs(_epoch(f1["start_time"]) - T0) < 1e-5 and abs(_epoch(f1["end_time"]) - (T0 + 1.3)) < 1e-5
    # The five stream events at the hand-worked offsets (800, 840, 900, 1000, 1300 ms).
    assert [round((_epoch(e["timestamp"]) - T0) * 1000) for e in f1["events"]] == [800, 840, 900, 1000, 1300]
    assert f1["events"][4]["attributes"]["chatwire.event.type"] == "done"
    assert stored["F1"]["context"]["trace_id"] == stored["F2"]["context"]["trace_id"]
    assert stored["K1"]["context"]["trace_id"] == stored["K2"]["context"]["trace_id"]

    a1 = stored["A1"]["attributes"]
    assert a1["gen_ai.usage.input_tokens"] == 12 and a1["gen_ai.usage.output_tokens"] == 5
    assert a1["llm.token_count.prompt"] == 12 and a1["llm.token_count.completion"] == 5
    assert a1["gen_ai.response.id"] == "chatcmpl-1"
    assert "gen_ai.usage.input_tokens" not in stored["A2"]["attributes"]
    f3 = stored["F3"]
    assert f3["status_code"] == "ERROR" and f3["attributes"]["error.type"] == "500"
    assert stored["F1"]["status_code"] == "UNSET"


@pytest.mark.timeout(2400)
def test_phoenix_takes_the_file_lines_as_they_were_written(phoenix, tmp_path):
    """The OTLP/JSON file, parsed strictly and posted to Phoenix as protobuf (it takes no JSON)."""
    capture_path = make_capture(tmp_path / "cap.parquet", _rows())
    requests = [_strict_parse(line) for line in _file_lines(capture_path, tmp_path) if '"resourceSpans"' in line]
    assert len(requests) == 5  # one line per trace
    for request in requests:
        response = httpx.post(f"{phoenix}/v1/traces", content=request.SerializeToString(), timeout=30,
                              headers={"content-type": "application/x-protobuf"})
        assert response.status_code == 200, response.text
    stored = _phoenix_spans(phoenix, "default", 7)
    file_spans = _spans(requests)
    for flow_id, span in stored.items():
        mine = file_spans[flow_id]
        assert (span["context"]["trace_id"], span["context"]["span_id"]) == (mine.trace_id.hex(), mine.span_id.hex())
        assert span["name"] == mine.name and len(span["events"]) == len(mine.events)
    assert stored["A1"]["attributes"]["gen_ai.usage.output_tokens"] == 5
