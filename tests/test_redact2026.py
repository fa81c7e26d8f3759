"""The 2026 credentials are redacted (guide 6c-6e): ``x-conduit-token``, the new sentinel tokens,
bearer tokens on WebSocket upgrades and the Codex backend, ``sig=`` of signed URLs wherever the
URL is, ``conduit_token`` in the prepare answer. Device and account ids are identifiers: kept.

The end-to-end test sends each secret through a real mitmdump and scans every string cell and
every byte of the capture for it (``tests.test_capture_e2e.all_strings``).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import httpx
import pytest

from analyzer.importer import import_sources
from analyzer.redact import PLACEHOLDER, redact_headers, redact_json, redact_query, redact_string
from tests.origin import formats
from tests.origin import telemetry2026 as T
from tests.test_capture_e2e import ADDON, all_strings

SIG = "Zm9vYmFyU2lnU2VjcmV0MTIzNDU2Nzg5MA"
URL = f"https://chatgpt.com/backend-api/estuary/content?id=file_00000000a1b2&ts=490731&p=fs&cid=1&sig={SIG}&v=0"


@pytest.mark.parametrize("text", [
    URL,
    f'{{"download_url": "{URL}"}}',
    URL.replace("&", "\\u0026"),  # JSON-escaped, as Go and some encoders write it
    URL.replace("&", "&amp;"),  # in HTML
    "https://chatgpt.com/auth?next=" + URL.replace(":", "%3A").replace("/", "%2F").replace("?", "%3F")
    .replace("=", "%3D").replace("&", "%26"),  # a URL inside another URL's query
    f"/estuary/content?sig={SIG} of file_00000000a1b2",
])
def test_sig_values_are_scrubbed_wherever_the_url_is(text):
    out = redact_string(text)
    assert SIG not in out and PLACEHOLDER in out
    assert "file_00000000a1b2" in out  # the rest of the URL stays


def test_sig_scrub_keeps_what_is_not_a_signature():
    for text in ("design=flat&signal=on", "sig", "the sig= was empty&", "signature of the design"):
        assert redact_string(text) == text
    assert redact_query(f"id=1&sig={SIG}&Sig=x") == f"id=1&sig={PLACEHOLDER}&Sig={PLACEHOLDER}"


def test_new_credential_headers_go_and_identifier_headers_stay():
    headers = [("x-conduit-token", "ct-1"), ("OpenAI-Sentinel-SO-Token", "so-1"),
               ("OpenAI-Sentinel-Chat-Requirements-Prepare-Token", "prep-1"),
               ("Authorization", "Bearer ws-upgrade-token-1"), ("Oai-Device-Id", T.DEVICE_ID),
               ("Chatgpt-Account-Id", T.ACCOUNT_ID), ("Oai-Session-Id", T.SESSION_ID),
               ("X-Oai-Turn-Trace-Id", "trace-1"), ("Referer", URL)]
    out = dict(redact_headers(headers))
    for name in ("x-conduit-token", "OpenAI-Sentinel-SO-Token", "OpenAI-Sentinel-Chat-Requirements-Prepare-Token",
                 "Authorization"):
        assert out[name] == PLACEHOLDER, name
    assert (out["Oai-Device-Id"], out["Chatgpt-Account-Id"], out["Oai-Session-Id"]) == (
        T.DEVICE_ID, T.ACCOUNT_ID, T.SESSION_ID)
    assert out["X-Oai-Turn-Trace-Id"] == "trace-1"
    assert SIG not in out["Referer"] and "estuary/content" in out["Referer"]
    assert redact_json({"status": "ok", "conduit_token": "ct-2"}) == {"status": "ok", "conduit_token": PLACEHOLDER}


SECRETS = {
    "bearer": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZWRhY3QtMjAyNiJ9.QmVhcmVyMjAyNlNlY3JldA",
    "so_token": "SentinelSoTokenSecret.5c2e8a0f",
    "prepare_token": "gAAAAABPrepareTokenSecret71d3e9",
    "ws_bearer": "WsUpgradeBearerSecret0a9b8c7d6e5f",
    "codex_bearer": "CodexBearerSecret.e4d3c2b1a0f9",
    "sig_ollama": "OllamaEchoedSigSecret4f3e2d1c",
    "sig_segment": "SegmentPropertySigSecret9a8b7c",
    "sig_encoded": "PercentEncodedSigSecret1b2c3d",
    "sig_log": "DatadogMessageSigSecret5e6f7a",
    "sig_referer": "RefererHeaderSigSecret8b9c0d",
}


async def _websocket(url: str, proxy: str, ctx: ssl.SSLContext) -> str:
    async with aiohttp.ClientSession() as session, session.ws_connect(
            url, proxy=proxy, ssl=ctx, headers={"Authorization": f"Bearer {SECRETS['ws_bearer']}"}) as ws:
        await ws.send_str(json.dumps({"type": "ping"}))
        reply = await ws.receive(timeout=10)
        await ws.close()
        return reply.data


@pytest.mark.slow
def test_no_2026_secret_reaches_the_capture(tmp_path, origin, mitmdump_factory, mitm_confdir):
    capture_path, flows_path = tmp_path / "cap.parquet", tmp_path / "raw.mitm"
    proxy = mitmdump_factory(script=ADDON, options={"capture_path": capture_path, "capture_flush_ms": 200,
                                                    "capture_all_flows": True}, flow_file=flows_path)
    ctx = ssl.create_default_context(cafile=str(proxy.ca_path))
    base = origin.url
    ids = {"oai-device-id": T.DEVICE_ID, "chatgpt-account-id": T.ACCOUNT_ID, "oai-session-id": T.SESSION_ID}
    with httpx.Client(proxy=proxy.proxy_url, verify=ctx, timeout=30) as client:
        prepared = client.post(base + "/backend-api/f/conversation/prepare", json={"action": "next", "model": "auto"},
                               headers={"authorization": f"Bearer {SECRETS['bearer']}", **ids}).json()
        conduit = prepared["conduit_token"]
        assert len(conduit) > 16
        answer = client.post(base + "/backend-api/f/conversation", headers={
            "accept": "text/event-stream", "authorization": f"Bearer {SECRETS['bearer']}", "x-conduit-token": conduit,
            "openai-sentinel-so-token": SECRETS["so_token"], "x-origin-delays-ms": "5,1",
            "openai-sentinel-chat-requirements-prepare-token": SECRETS["prepare_token"], **ids,
            "referer": f"https://chatgpt.com/c/x?img=1&sig={SECRETS['sig_referer']}"},
            json={"action": "next", "model": "gpt-5-6", "supported_encodings": ["v1"], "parent_message_id":
                  "client-created-root", "messages": [{"id": "m1", "author": {"role": "user"},
                                                       "content": {"content_type": "text", "parts": ["hi"]}}]})
        assert answer.status_code == 200
        download = client.get(base + "/backend-api/files/download/file_00000000a1b2",
                              headers={"authorization": f"Bearer {SECRETS['bearer']}"}).json()
        file_sig = parse_qs(urlsplit(download["download_url"]).query)["sig"][0]
        assert len(file_sig) >= 16
        client.get(download["download_url"].replace("https://127.0.0.1", base.rsplit(":", 1)[0]))
        codex = client.post(base + "/backend-api/codex/responses", json={"model": "gpt-5.6-codex", "input": "hi",
                                                                         "stream": True},
                            headers={"authorization": f"Bearer {SECRETS['codex_bearer']}", "accept": "text/event-stream",
                                     "chatgpt-account-id": T.ACCOUNT_ID, "x-origin-delays-ms": "5,1"})
        assert codex.status_code == 200
        echoed = f"https://files.oaiusercontent.com/file-x?se=2026-12-01&sp=r&sig={SECRETS['sig_ollama']}"
        chat = client.post(base + "/api/chat", json={"model": "llama3.2", "messages": [
            {"role": "user", "content": f"echo: see {echoed} now"}]}, headers={"x-origin-delays-ms": "5,1"})
        assert SECRETS["sig_ollama"] in chat.text
        nested = f"https%3A%2F%2Fchatgpt.com%2Festuary%2Fcontent%3Fid%3D1%26sig%3D{SECRETS['sig_encoded']}%26v%3D0"
        client.post(base + "/ces/v1/t", json={"type": "track", "event": "Image Viewed", "anonymousId": "anon-1",
                                              "properties": {"url": f"{URL}&x=1&sig={SECRETS['sig_segment']}",
                                                             "next": f"/auth?return={nested}"}})
        logs = T.datadog_logs("https://chatgpt.com/", 1_790_000_000)
        logs[0]["message"] = f"image load failed https://x/estuary/content?id=2&amp;sig={SECRETS['sig_log']}"
        client.post(base + T.datadog_intake_path(), content=T.ndjson(logs))
    reply = asyncio.run(_websocket(base.replace("https", "wss") + "/celsius/ws/user", proxy.proxy_url, ctx))
    assert json.loads(reply) == {"type": "pong"}
    assert proxy.stop() == 0 and "Traceback" not in proxy.log_text()

    secrets = [*SECRETS.items(), ("conduit", conduit), ("file_sig", file_sig),
               *(("server", s) for s in formats.SERVER_SECRETS)]
    # the raw flow file holds them all (so the scan below could find them), …
    raw = flows_path.read_bytes().decode("latin-1")
    assert all(secret in raw for name, secret in secrets if name not in ("file_sig", "server")), "control"
    # … the live capture and its imports (the flow file, and mitmproxy's HAR export of it) none
    har = tmp_path / "raw.har"
    subprocess.run([str(Path(sys.executable).parent / "mitmdump"), "-q", "-nr", str(flows_path),
                    "--set", f"hardump={har}", "--set", f"confdir={mitm_confdir}"], check=True, timeout=120,
                   stdout=subprocess.DEVNULL)
    import_sources([flows_path], tmp_path / "from_flows.parquet", all_flows=True)
    import_sources([har], tmp_path / "from_har.parquet", all_flows=True)
    for path in (capture_path, tmp_path / "from_flows.parquet", tmp_path / "from_har.parquet"):
        blob = all_strings(path)
        for name, secret in secrets:
            assert secret not in blob, (path.name, name)
        assert T.DEVICE_ID in blob and T.ACCOUNT_ID in blob and T.SESSION_ID in blob  # identifiers, kept
    from analyzer.store import load_capture

    capture = load_capture(capture_path)
    flows = capture.table("flows")
    # every flow is there (nothing was dropped to hide a secret), the WebSocket upgrade included
    assert {"/backend-api/f/conversation/prepare", "/backend-api/files/download/file_00000000a1b2",
            "/backend-api/estuary/content", "/celsius/ws/user", "/api/chat", "/ces/v1/t"} <= set(flows.path)
    ws = flows[flows.path == "/celsius/ws/user"].iloc[0]
    assert ["Authorization", PLACEHOLDER] in json.loads(ws.request_headers)
    assert "sig=" + PLACEHOLDER in flows[flows.path == "/backend-api/estuary/content"].iloc[0].query
    assert capture.table("api_calls").set_index("endpoint").loc["/api/chat", "response_text"].count(PLACEHOLDER) == 1
