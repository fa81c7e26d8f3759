"""Secrets, fuzzed: random secret-shaped values in every header, cookie, query and body field the
formats carry credentials in, sent through one live mitmdump with the capture addon. None of them may
be in any byte of the capture (every string cell decoded, every file's raw bytes) nor in any report
(``analyze report`` in every format, ``analyze conversations`` listed and rebuilt in every format).

Every value is checked, not "some": each secret and a 16-character slice from its middle.
"""

from __future__ import annotations

import json
import random
import ssl
import string
import time
import uuid
from pathlib import Path

import httpx
import pyarrow.dataset as ds
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from analyzer.cli import main as cli
from analyzer.schema import TABLES
from analyzer.store import load_capture
from tests.origin.mitm import run_mitmdump

ROOT = Path(__file__).resolve().parent.parent
ADDON = ROOT / "addons" / "chatgpt_capture.py"
N_EXAMPLES = 8  # one mitmdump for all of them: about 3 s each on the shared 2-core machine, reports included

_rng = random.SystemRandom()
B64URL = string.ascii_letters + string.digits + "-_"
BEARER_CHARS = B64URL + "._~+/="
COOKIE_CHARS = B64URL + ".%~!*'()"


def chars(alphabet: str, lo: int, hi: int) -> st.SearchStrategy[str]:
    """Hypothesis picks the length and the characters; a random tail of 16 makes every value unique,
    so that a value shrunk to ``000…`` cannot be found in the capture by chance."""
    return st.builds(lambda text: text + "".join(_rng.choice(alphabet) for _ in range(16)),
                     st.text(alphabet=alphabet, min_size=max(lo - 16, 0), max_size=max(hi - 16, 0)))


jwt = st.builds(lambda a, b, c: f"eyJ{a}.eyJ{b}.{c}", chars(B64URL, 12, 40), chars(B64URL, 16, 90), chars(B64URL, 16, 43))
api_key = st.builds(lambda p, k: f"sk-{p}{k}", st.sampled_from(["", "proj-", "svcacct-", "admin-"]), chars(B64URL, 24, 64))
bearer = st.one_of(jwt, api_key, chars(BEARER_CHARS, 24, 80))
cookie_value = st.one_of(jwt, chars(COOKIE_CHARS, 24, 120))
sentinel = st.one_of(st.builds(lambda k: "gAAAAAB" + k, chars(B64URL, 40, 160)), jwt)
opaque = chars(B64URL, 24, 64)

SECRETS = st.fixed_dictionaries({
    "authorization": bearer,
    "api_authorization": api_key,
    "x_api_key": api_key,
    "session_cookie": cookie_value,
    "csrf_cookie": cookie_value,
    "cf_clearance": cookie_value,
    "puid": cookie_value,
    "requirements_token": sentinel,
    "proof_token": sentinel,
    "turnstile_token": sentinel,
    "so_token": sentinel,
    "prepare_token": sentinel,
    "conduit": st.one_of(jwt, opaque),
    "device_token": opaque,
    "sig": opaque,
    "access_token_q": st.one_of(jwt, opaque),
    "token_q": opaque,
    "arkose_token": opaque,
    "body_conduit_token": opaque,
    "pasted_api_key": api_key,       # a user pastes a key into the chat
    "pasted_jwt": jwt,
    "api_body_key": opaque,
    "segment_token": opaque,
    "statsig_secret": opaque,
})

# Parts too short or too common to be a meaningful probe are not checked on their own.
PREFIXES = ("sk-proj-", "sk-svcacct-", "sk-admin-", "sk-", "gAAAAAB", "eyJ")


def probes(secret: str) -> list[str]:
    """The secret, its core without a well-known prefix, and its last 16 characters (a redaction
    that kept a value's end would leave those)."""
    core = secret
    for prefix in PREFIXES:
        if core.startswith(prefix):
            core = core[len(prefix):]
            break
    return list({secret, core, secret[-16:]})


def capture_text(path: Path) -> str:
    """Every string cell of every table, decoded (Parquet pages are compressed, a byte scan alone would
    miss a secret), plus every file's raw bytes as latin-1."""
    pieces = []
    for name in TABLES:
        table = ds.dataset(path / name, format="parquet").to_table()
        for column in table.columns:
            if str(column.type) == "string":
                pieces.extend(v for v in column.to_pylist() if v)
    for file in path.rglob("*"):
        if file.is_file():
            pieces.append(file.read_bytes().decode("latin-1"))
    return "\n".join(pieces)


def send_all(proxy, origin, s: dict[str, str]) -> int:
    """One request of every kind that carries credentials, with the secrets where the formats put
    them. Returns how many flows the capture should gain."""
    cookies = (f"__Secure-next-auth.session-token={s['session_cookie']}; __Host-next-auth.csrf-token="
               f"{s['csrf_cookie']}; cf_clearance={s['cf_clearance']}; _puid={s['puid']}; oai-did={uuid.uuid4()}")
    web = {"authorization": f"Bearer {s['authorization']}", "cookie": cookies,
           "openai-sentinel-chat-requirements-token": s["requirements_token"],
           "openai-sentinel-proof-token": s["proof_token"],
           "openai-sentinel-turnstile-token": s["turnstile_token"],
           "OpenAI-Sentinel-SO-Token": s["so_token"],
           "OpenAI-Sentinel-Chat-Requirements-Prepare-Token": s["prepare_token"],
           "x-conduit-token": s["conduit"], "oai-device-id": str(uuid.uuid4()),
           "x-openai-target-path": "/backend-api/f/conversation", "oai-echo-logs": "0,1",
           "accept": "text/event-stream", "x-origin-delays-ms": "2,1"}
    user_text = f"here is my key {s['pasted_api_key']} and a token {s['pasted_jwt']}, keep them safe"
    conversation = {"action": "next", "parent_message_id": "client-created-root", "model": "auto",
                    "arkose_token": s["arkose_token"], "conduit_token": s["body_conduit_token"],
                    "messages": [{"id": str(uuid.uuid4()), "author": {"role": "user"},
                                  "content": {"content_type": "text", "parts": [user_text]}}]}
    verify = ssl.create_default_context(cafile=str(proxy.ca_path))
    with httpx.Client(proxy=proxy.proxy_url, verify=verify, timeout=30, http2=True) as client:
        base = origin.url
        answer = client.post(f"{base}/backend-api/f/conversation", json=conversation, headers=web)
        assert answer.status_code == 200 and b"[DONE]" in answer.content
        client.post(f"{base}/backend-api/f/conversation/prepare", json={"conversation_id": None},
                    headers={**web, "accept": "application/json"})
        client.post(f"{base}/v1/chat/completions",
                    json={"model": "gpt-4o-mini", "stream": True, "api_key": s["api_body_key"],
                          "messages": [{"role": "user", "content": user_text}]},
                    headers={"authorization": f"Bearer {s['api_authorization']}", "x-api-key": s["x_api_key"]})
        client.post(f"{base}/ces/v1/b", headers={"cookie": cookies},
                    json={"batch": [{"type": "track", "event": "fuzz", "anonymousId": "anon",
                                     "messageId": str(uuid.uuid4()),
                                     "properties": {"session_token": s["segment_token"], "text": user_text},
                                     "context": {"page": {"path": "/c/abc"}}}]})
        client.post(f"{base}/v1/rgstr?k=client-public&st=javascript-client", headers={"cookie": cookies},
                    json={"events": [{"eventName": "fuzz", "user": {"userID": "u", "customIDs": {
                        "stableID": "s"}}, "time": int(time.time() * 1000),
                        "metadata": {"secret": s["statsig_secret"], "note": user_text}}]})
        # signed download URLs and token-bearing queries on paths chatwire does not parse
        client.get(f"{base}/backend-api/estuary/content?id=file-{uuid.uuid4().hex}&ts=1&p=fs&sig={s['sig']}",
                   headers={"cookie": cookies})
        client.get(f"{base}/client/hubs/conversations?access_token={s['access_token_q']}&token={s['token_q']}",
                   headers={"authorization": f"Bearer {s['authorization']}"})
        client.get(f"{base}/backend-api/conversation/{uuid.uuid4()}?device_token={s['device_token']}",
                   headers={"cookie": cookies})
    return 8


def wait_for_flows(path: Path, n: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if path.exists() and len(load_capture(path).table("flows", ["flow_id"])) >= n:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the capture never reached {n} flows")
        time.sleep(0.1)


def leaks(text: str, secrets: list[tuple[str, str]]) -> list[str]:
    """``where: value…`` for each (where, value) of which a probe is in ``text``."""
    return sorted({f"{where}: {value[:8]}…" for where, value in secrets for p in probes(value) if p in text})


@pytest.fixture(scope="module")
def fuzz_proxy(tmp_path_factory, mitm_confdir):
    tmp = tmp_path_factory.mktemp("secrets-fuzz")
    proxy = run_mitmdump(tmp, script=ADDON, confdir=mitm_confdir, options={
        "capture_path": tmp / "fuzz.parquet", "capture_flush_ms": 100, "capture_all_flows": True})
    proxy.capture = tmp / "fuzz.parquet"
    yield proxy
    proxy.stop()


def test_no_fuzzed_secret_reaches_the_capture_or_a_report(origin, fuzz_proxy, tmp_path):
    sent: list[tuple[str, str]] = []
    expected = [0]

    # no shrinking: each example costs seconds of real traffic, and a leak names its field anyway
    @settings(max_examples=N_EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(SECRETS)
    def one_example(secrets: dict[str, str]) -> None:
        values = list(secrets.items())
        sent.extend(values)
        expected[0] += send_all(fuzz_proxy, origin, secrets)
        wait_for_flows(fuzz_proxy.capture, expected[0])
        found = leaks(capture_text(fuzz_proxy.capture), values)
        assert not found, f"secrets in the capture: {found}"

    one_example()
    assert len(sent) >= N_EXAMPLES * 20

    # The capture as the proxy leaves it at a clean stop (compacted), then every report of it.
    assert fuzz_proxy.stop() == 0
    assert "Traceback" not in fuzz_proxy.log_text()
    capture = fuzz_proxy.capture
    turns = load_capture(capture).table("conversation_turns")
    assert len(turns) == N_EXAMPLES and turns.user_text.str.contains("[REDACTED]", regex=False).all()
    assert not leaks(capture_text(capture), sent)
    runner = CliRunner()
    outputs = []
    for fmt in ("text", "markdown", "json", "html"):
        out = tmp_path / f"report.{fmt}"
        result = runner.invoke(cli, ["report", str(capture), "--format", fmt, "-o", str(out)])
        assert result.exit_code == 0, result.output
        outputs.append(out.read_text(encoding="utf-8") + result.output)
    listing = runner.invoke(cli, ["conversations", str(capture)])
    assert listing.exit_code == 0, listing.output
    outputs.append(listing.output)
    for conversation_id in turns.conversation_id.dropna().unique():
        for fmt in ("text", "markdown", "json", "openai"):
            result = runner.invoke(cli, ["conversations", str(capture), "-c", conversation_id, "-f", fmt,
                                         "--branch", "all" if fmt != "openai" else "active"])
            assert result.exit_code == 0, result.output
            assert "[REDACTED]" in result.output  # the pasted key's place is shown, its value is not
            outputs.append(result.output)
    found = leaks("\n".join(outputs), sent)
    assert not found, f"secrets in a report: {found}"
    json.loads(outputs[2])  # the JSON report is whole
