"""Flow-file import: mitmproxy's own flow files, and round trips through mitmdump and save.har."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mitmproxy.io import FlowWriter

from analyzer.importer import ImportFailed, import_sources
from analyzer.schema import TABLES
from analyzer.sources.har import entry_to_flow, file_sha256, har_flow_id
from analyzer.store import load_capture

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "har"


def write_flows_from_har(har: Path, out: Path) -> list:
    """A real mitmproxy flow file holding the flows of a HAR fixture (ids and metadata included)."""
    import json

    entries = json.loads(har.read_text())["log"]["entries"]
    digest = file_sha256(har)
    flows = [entry_to_flow(e, har_flow_id(digest, i)) for i, e in enumerate(entries)]
    with open(out, "wb") as fh:
        writer = FlowWriter(fh)
        for f in flows:
            writer.add(f)
    return flows


def test_flow_file_keeps_ids_and_gives_the_same_rows_as_the_har(tmp_path):
    flows_path = tmp_path / "session.mitm"
    write_flows_from_har(FIXTURES / "chrome.har", flows_path)
    import_sources([FIXTURES / "chrome.har"], tmp_path / "from_har")
    summary = import_sources([flows_path], tmp_path / "from_flows")
    assert summary.files == {"flowfile": 1}
    har_cap, flow_cap = load_capture(tmp_path / "from_har"), load_capture(tmp_path / "from_flows")
    assert set(flow_cap.table("flows")["source"]) == {"flowfile"}
    for name in TABLES:
        if name == "captures":
            continue  # each capture run is its own
        a = har_cap.table(name).drop(columns=["capture_id", *(["source"] if name == "flows" else [])])
        b = flow_cap.table(name).drop(columns=["capture_id", *(["source"] if name == "flows" else [])])
        pd.testing.assert_frame_equal(a, b, check_like=True)


def test_truncated_flow_file_keeps_whole_flows(tmp_path):
    flows_path = tmp_path / "cut.mitm"
    flows = write_flows_from_har(FIXTURES / "firefox.har", flows_path)
    data = flows_path.read_bytes()
    flows_path.write_bytes(data[: len(data) - 100])
    summary = import_sources([flows_path], tmp_path / "cap")
    assert summary.flows_read == len(flows) - 1
    assert len(summary.errors) == 1
    assert summary.errors[0].startswith(f"{flows_path}: truncated or corrupt flow file after {len(flows) - 1} complete flows")
    # Where the damage starts: the end of the last whole flow, i.e. the size of a file of those flows alone.
    whole = tmp_path / "whole.mitm"
    with open(whole, "wb") as fh:
        writer = FlowWriter(fh)
        for f in flows[:-1]:
            writer.add(f)
    assert f"(flow {len(flows) - 1}, at byte {whole.stat().st_size}: " in summary.errors[0]
    errors = load_capture(tmp_path / "cap").table("errors")
    assert list(errors["error"]) == summary.errors and list(errors["stage"]) == ["import"]


def test_empty_file_says_it_is_empty(tmp_path):
    empty = tmp_path / "nothing.har"  # a failed export: 0 bytes, whatever its name says
    empty.write_bytes(b"")
    with pytest.raises(ImportFailed, match=r"nothing imported: .*nothing.har: empty file \(0 bytes\): nothing to import"):
        import_sources([empty], tmp_path / "cap")
    assert not (tmp_path / "cap").exists()


def test_empty_file_in_a_directory_is_skipped(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "nothing.mitm").write_bytes(b"")
    write_flows_from_har(FIXTURES / "firefox.har", tmp_path / "in" / "some.mitm")
    summary = import_sources([tmp_path / "in"], tmp_path / "cap")
    assert summary.skipped_files == [tmp_path / "in" / "nothing.mitm"] and summary.errors == []


def test_corrupt_flow_file_alone_fails(tmp_path):
    bad = tmp_path / "bad.mitm"
    bad.write_bytes(b"12:not a tnetstring at all")
    with pytest.raises(ImportFailed, match=r"^nothing imported: .*bad.mitm: truncated or corrupt flow file after 0"):
        import_sources([bad], tmp_path / "cap")
    assert not (tmp_path / "cap").exists()


# ---------------------------------------------------------------- real tools: mitmdump -w with the addon


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mitmdump exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"mitmdump did not listen on {port}")


def _mitmdump() -> str:
    path = Path(sys.executable).parent / "mitmdump"
    return str(path) if path.exists() else shutil.which("mitmdump") or "mitmdump"


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    df = df.reset_index(drop=True)
    order = df.astype(str).sort_values(list(df.columns)).index
    return df.loc[order].reset_index(drop=True)


@pytest.fixture(scope="module")
def live_session(tmp_path_factory):
    """Run the scripted session through mitmdump with the addon, saving flows with -w as well."""
    pytest.importorskip("tests.origin.session")
    from tests.origin.server import start_origin
    from tests.origin.session import run_session

    work = tmp_path_factory.mktemp("roundtrip")
    origin = start_origin(tls=True, workdir=work / "origin")
    port = _free_port()
    conf = work / "mitmconf"
    live = work / "live.parquet"
    flows_path = work / "session.mitm"
    cmd = [_mitmdump(), "-q", "--listen-host", "127.0.0.1", "--listen-port", str(port), "--set", f"confdir={conf}",
           "--ssl-insecure", "-s", str(REPO / "addons" / "chatgpt_capture.py"), "--set", f"capture_path={live}",
           "--set", "capture_flush_ms=200", "-w", str(flows_path)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(work / "mitmdump.log", "wb"))
    try:
        _wait_port(port, proc)
        run_session(origin.url, proxy=f"http://127.0.0.1:{port}", verify=str(conf / "mitmproxy-ca-cert.pem"),
                    delays=(30, 5), formats=("legacy", "v1", "celsius"), n_turns=2)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        origin.stop()
    return work, live, flows_path


@pytest.mark.slow
def test_mitmdump_flow_file_imports_to_the_live_tables(live_session, tmp_path):
    work, live, flows_path = live_session
    imported = tmp_path / "imported.parquet"
    summary = import_sources([flows_path], imported)
    assert summary.errors == [] and summary.n_recognised > 0
    live_cap, imp_cap = load_capture(live), load_capture(imported)
    assert set(imp_cap.table("flows")["source"]) == {"flowfile"}
    for name in TABLES:
        if name == "captures":
            continue  # each capture run is its own
        a = live_cap.table(name).drop(columns=["capture_id", *(["source"] if name == "flows" else [])])
        b = imp_cap.table(name).drop(columns=["capture_id", *(["source"] if name == "flows" else [])])
        assert len(a) == len(b), name
        pd.testing.assert_frame_equal(_sorted(a), _sorted(b), check_like=True, obj=name)
    # per-event arrival times survived the flow file
    assert imp_cap.table("stream_events")["at"].notna().any()


@pytest.mark.slow
def test_mitmproxy_save_har_imports_to_the_same_conversations(live_session, tmp_path):
    work, live, flows_path = live_session
    har = tmp_path / "export.har"
    env = dict(os.environ)
    subprocess.run([_mitmdump(), "-q", "-nr", str(flows_path), "--set", f"hardump={har}",
                    "--set", f"confdir={work / 'mitmconf'}"], check=True, env=env, timeout=120,
                   stdout=subprocess.DEVNULL)
    imported = tmp_path / "from_har.parquet"
    summary = import_sources([har], imported)
    assert summary.errors == []
    live_cap, har_cap = load_capture(live), load_capture(imported)
    checks = {
        "conversation_turns": ["conversation_id", "assistant_message_id", "assistant_text", "user_text", "status"],
        "messages": ["conversation_id", "message_id", "role", "text"],
        "latency_beacons": ["server_request_id", "model", "ts_first_token_ms", "ts_total_request_ms"],
        "segment_events": ["type", "event", "message_id", "anonymous_id"],
        "statsig_events": ["event_name", "stable_id", "time"],
    }
    for name, columns in checks.items():
        a = live_cap.table(name)[columns].drop_duplicates()
        b = har_cap.table(name)[columns].drop_duplicates()
        assert len(a) > 0, name
        pd.testing.assert_frame_equal(_sorted(a), _sorted(b), obj=name)
    assert har_cap.table("stream_events").query("flow_id.str.contains('#') == False")["at"].isna().all()
