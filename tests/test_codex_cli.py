"""The real Codex CLI (``npm install @openai/codex``) runs a whole turn through a real mitmdump, offline.

``codex exec --json`` talks to the local origin as if it were chatgpt.com: a model provider in
``CODEX_HOME/config.toml`` (``base_url = …/backend-api/codex``, ``wire_api = "responses"``,
``requires_openai_auth = true``), ``chatgpt_base_url``, and an ``auth.json`` with unsigned test tokens.
It reaches the origin through mitmdump as its HTTPS proxy (``HTTPS_PROXY``; the WebSocket too) and trusts
mitmproxy's CA through ``CODEX_CA_CERTIFICATE``. Each transport the CLI can use is tried: the WebSocket
(``supports_websockets = true``), the HTTP POST, the WebSocket refused with 426 (the CLI then falls
back to the POST), and a turn of three calls on one socket (warm-up, an answer that has the CLI run a
command, the answer to its output). The oracle is the origin's send log and the CLI's own output.

The CLI is installed once into ``~/.cache/chatwire-tests/codex`` (``CHATWIRE_CODEX_CACHE``) and reused.
If it cannot be installed the test fails; ``CHATWIRE_SKIP_CODEX_CLI=1`` skips it on purpose.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from analyzer.store import load_capture
from tests.test_capture_e2e import all_strings

ROOT = Path(__file__).resolve().parent.parent
ADDON = ROOT / "addons" / "chatgpt_capture.py"
CODEX_VERSION = "0.171"  # the release the origin's answers were checked against
RESPONSES = "/backend-api/codex/responses"
ACCOUNT_ID = "acct-chatwire-test-0001"
REFRESH_TOKEN = "rt_chatwire_test_refresh_token_0001"
PROMPT = "Say hello to the origin"
TOOL_MARK = "chatwire-tool-ran"
TRANSPORTS = {
    # transport: (supports_websockets, provider http_headers the origin reads on the handshake / POST)
    "websocket": (True, {}),
    "http": (False, {}),
    # the answer zstd-encoded, flushed per event (the CLI sends accept-encoding: zstd,gzip)
    "http-zstd": (False, {"x-origin-encoding": "zstd"}),
    "websocket-426": (True, {"x-origin-ws": "426"}),
    # the first answer asks the CLI to run a command; the CLI sends its output back on the same socket
    "websocket-tool": (True, {"x-origin-codex-tool": f"echo {TOOL_MARK}"}),
}

pytestmark = pytest.mark.slow


def _cache() -> Path:
    return Path(os.environ.get("CHATWIRE_CODEX_CACHE") or Path.home() / ".cache" / "chatwire-tests" / "codex")


def _version(binary: Path) -> str | None:
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"(\d+\.\d+)\.\d+", out)
    return match.group(1) if match else None


@pytest.fixture(scope="session")
def codex_cli() -> Path:
    """The ``codex`` launcher of the npm package, installed into the cache dir when absent."""
    if os.environ.get("CHATWIRE_SKIP_CODEX_CLI") == "1":
        pytest.skip("CHATWIRE_SKIP_CODEX_CLI=1: the real Codex CLI test is switched off")
    cache = _cache()
    binary = cache / "node_modules" / ".bin" / "codex"
    if _version(binary) != CODEX_VERSION:
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm not found: the Codex CLI test needs node and npm (apt-get install -y nodejs npm)")
        cache.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(cache),
                               f"@openai/codex@{CODEX_VERSION}"], capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            pytest.fail(f"npm install @openai/codex@{CODEX_VERSION} failed:\n{proc.stderr[-3000:]}")
        if _version(binary) != CODEX_VERSION:
            pytest.fail(f"{binary} does not run as Codex CLI {CODEX_VERSION} after npm install")
    return binary


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned_jwt(claims: dict) -> str:
    """A JWT the CLI can read its claims from; the signature is not one (no service checks it here)."""
    head = _b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{head}.{_b64url(json.dumps(claims).encode())}.{_b64url(os.urandom(24))}"


def _codex_home(path: Path, origin_url: str, transport: str) -> dict[str, str]:
    """``CODEX_HOME`` with auth.json and config.toml; returns the tokens written."""
    path.mkdir(parents=True)
    claims = {"email": "codex-test@example.invalid", "exp": int(time.time()) + 3 * 86400,
              "https://api.openai.com/auth": {"chatgpt_plan_type": "plus", "chatgpt_user_id": "user-chatwire-test",
                                              "chatgpt_account_id": ACCOUNT_ID}}
    tokens = {"id_token": _unsigned_jwt(claims), "access_token": _unsigned_jwt({**claims, "scp": ["openid"]}),
              "refresh_token": REFRESH_TOKEN, "account_id": ACCOUNT_ID}
    auth = {"auth_mode": "chatgpt", "OPENAI_API_KEY": None, "tokens": tokens,
            "last_refresh": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (path / "auth.json").write_text(json.dumps(auth))
    websockets, extra = TRANSPORTS[transport]
    headers = "{ " + ", ".join(f'"{k}" = "{v}"' for k, v in extra.items()) + " }"
    (path / "config.toml").write_text(f"""\
model = "gpt-5.6-sol"
model_provider = "chatwire-origin"
chatgpt_base_url = "{origin_url}/backend-api/"
check_for_update_on_startup = false

[model_providers.chatwire-origin]
name = "chatwire local origin"
base_url = "{origin_url}/backend-api/codex"
wire_api = "responses"
requires_openai_auth = true
supports_websockets = {"true" if websockets else "false"}
http_headers = {headers}
""")
    (path / "auth.json").chmod(0o600)
    return tokens


def _events(stdout: str) -> list[dict]:
    out = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


@pytest.mark.timeout(900)
@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_codex_exec_runs_a_turn_through_mitmdump(tmp_path, origin, mitmdump_factory, codex_cli, transport):
    capture_path = tmp_path / "codex-cli.parquet"
    proxy = mitmdump_factory(script=ADDON, options={"capture_path": capture_path, "capture_flush_ms": 200})
    tokens = _codex_home(tmp_path / "codex-home", origin.url, transport)
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}  # no NO_PROXY either
    env.update(CODEX_HOME=str(tmp_path / "codex-home"), HOME=str(tmp_path), HTTPS_PROXY=proxy.proxy_url,
               HTTP_PROXY=proxy.proxy_url, CODEX_CA_CERTIFICATE=str(proxy.ca_path), NO_COLOR="1")
    workdir = tmp_path / "work"
    workdir.mkdir()
    since = len(origin.log())
    proc = subprocess.run([str(codex_cli), "exec", "--json", "--skip-git-repo-check", "--sandbox", "read-only",
                           PROMPT], cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proxy.stop() == 0
    assert "Traceback" not in proxy.log_text()

    cli_events = _events(proc.stdout)
    printed = [e["item"]["text"] for e in cli_events
               if e.get("type") == "item.completed" and e["item"].get("type") == "agent_message"]
    complaints = [e.get("message") or e.get("item", {}).get("message") for e in cli_events
                  if e.get("type") == "error" or e.get("item", {}).get("type") == "error"]
    assert complaints == []  # a 426 too is a quiet fallback (a 403 would be retried five times, with errors)
    log = origin.log(since)
    if transport.startswith("websocket") and transport != "websocket-426":
        sent = [r for r in log if r["kind"] == "ws_frame" and r["path"] == RESPONSES]
        answered = max(r["call"] for r in sent)
        sent = [r for r in sent if r["call"] == answered]
    else:
        posts = [r for r in log if r["kind"] == "request" and r["path"] == RESPONSES and r["method"] == "POST"]
        assert len(posts) == 1
        assert posts[0]["encoding"] == ("zstd" if transport == "http-zstd" else "identity")
        sent = [r for r in log if r["kind"] == "event" and r["rid"] == posts[0]["rid"]]
    origin_text = "".join(r["text"] for r in sent)
    assert origin_text and printed == [origin_text]  # the CLI printed exactly what the origin answered

    capture = load_capture(capture_path)
    flows = capture.table("flows")
    calls = capture.table("api_calls")
    sockets = flows[flows.kind == "codex_websocket"]
    if transport in ("websocket", "websocket-tool"):
        (socket_id,) = sockets.flow_id
        assert sockets.iloc[0].status_code == 101
        # the warm-up create (generate: false) and the turn's create: one row each
        assert sorted(calls.flow_id) == [f"{socket_id}#{n}" for n in range(answered + 1)]
        call = calls.set_index("flow_id").loc[f"{socket_id}#{answered}"]
        warm = calls.set_index("flow_id").loc[f"{socket_id}#0"]
        assert json.loads(warm.request_json).get("generate") is False and warm.response_text == ""
        assert answered == (2 if transport == "websocket-tool" else 1)
    else:
        if transport == "websocket-426":
            # one refused handshake, no retry, then the POST
            assert len(sockets) == 1 and sockets.iloc[0].status_code == 426
            assert sockets.iloc[0].started_at < flows[flows.kind == "api"].iloc[0].started_at
        else:
            assert sockets.empty
        assert len(calls) == 1
        call = calls.set_index("flow_id").iloc[0]
        post = flows.set_index("flow_id").loc[call.name]
        encoding = post.content_encoding if isinstance(post.content_encoding, str) else None
        assert encoding == ("zstd" if transport == "http-zstd" else None)
    assert call.endpoint == RESPONSES and call.model == "gpt-5.6-sol" and call.stream
    assert call.response_text == origin_text and call.finish_reason == "completed"
    if transport == "websocket-tool":  # the create after the tool brings only the new items
        asked_for = calls.set_index("flow_id").loc[f"{socket_id}#1"]
        assert pd.isna(call.last_user_text) and json.loads(call.request_json)["previous_response_id"]
    else:
        asked_for = call
    assert asked_for.last_user_text and PROMPT in asked_for.last_user_text

    events = capture.table("stream_events")
    events = events[events.flow_id == call.name].sort_values("seq")
    assert len(events) == len(sent) and events["at"].notna().all()
    assert list(events["at"]) == sorted(events["at"])
    text_rows = events[events.text.notna() & (events.text != "")]
    assert "".join(text_rows.text) == origin_text and call.n_text_events == len(text_rows)
    # Timed per event: the first text event's offset is the TTFT, and the text events were spread out
    # by the origin's schedule, not all at once.
    first_sent = next(r for r in sent if r["text"])
    assert call.ttft_ms == pytest.approx(text_rows.iloc[0].offset_ms)
    spread = (text_rows["at"].iloc[-1] - text_rows["at"].iloc[0]).total_seconds()
    origin_spread = [r["t"] for r in sent if r["text"]]
    assert spread >= (origin_spread[-1] - origin_spread[0]) * 0.5
    assert call.ttft_ms > 0 and first_sent

    # The headers that group calls into Codex threads and turns are kept; credentials are not.
    answer_flow = call.name.split("#", 1)[0]
    headers = dict(json.loads(flows.set_index("flow_id").loc[answer_flow].request_headers))
    lower = {k.lower(): v for k, v in headers.items()}
    for name in ("session-id", "thread-id", "x-client-request-id", "x-codex-window-id", "x-codex-turn-metadata",
                 "originator", "chatgpt-account-id"):
        assert lower.get(name), name
    assert lower["chatgpt-account-id"] == ACCOUNT_ID and lower["originator"] == "codex_exec"
    assert json.loads(lower["x-codex-turn-metadata"])["thread_id"] == lower["thread-id"]
    everything = all_strings(capture_path)  # every string cell decoded, and every file's bytes
    for secret in (tokens["access_token"], tokens["id_token"], REFRESH_TOKEN):
        assert secret not in everything and secret.split(".")[-1] not in everything
    if transport == "websocket-tool":
        # The CLI ran the command the first answer asked for and sent its output in the next create:
        # the origin received it, the capture has it in that call's request, and the CLI printed it.
        ran = [e["item"] for e in cli_events if e.get("type") == "item.completed"
               and e["item"].get("type") == "command_execution"]
        assert len(ran) == 1 and ran[0]["exit_code"] == 0 and TOOL_MARK in ran[0]["aggregated_output"]
        creates = [r for r in log if r["kind"] == "ws_client" and r["type"] == "response.create"]
        assert [bool(r["tool_output"]) for r in creates] == [False, False, True]
        assert TOOL_MARK in creates[2]["tool_output"]
        by_id = calls.set_index("flow_id")
        asked = by_id.loc[f"{socket_id}#1"]
        assert asked.response_text == "" and asked.n_text_events == 0 and asked.finish_reason == "completed"
        asked_events = capture.table("stream_events")
        asked_types = list(asked_events[asked_events.flow_id == f"{socket_id}#1"].sort_values("seq").type)
        assert "response.function_call_arguments.done" in asked_types
        outputs = [i for i in json.loads(call.request_json)["input"] if i.get("type") == "function_call_output"]
        assert len(outputs) == 1 and TOOL_MARK in outputs[0]["output"]
