"""A privacy audit of a capture, in the vocabulary of web privacy measurement (OpenWPM, Blacklight).

Four views, each a DataFrame (documented field by field in docs/privacy.md):

- ``hosts``: every host the capture saw, by registrable domain (eTLD+1 from the Public Suffix List
  snapshot that ships inside ``tldextract``; nothing is fetched), first or third party relative to the
  site, its owner where known, and the analytics services whose formats went to it.
- ``identifiers``: every identifier sent — cookie names, user / anonymous / stable / device / session /
  account / workspace ids in headers, query strings and analytics bodies — with where it was seen
  (host, endpoint, field), a salted hash of its value, and first and last seen.
- ``links``: one identifier value that went to more than one host (identifier sharing).
- ``fingerprint``: the fingerprinting surface the page sends (user agent, screen and page size, pixel
  ratio, timezone, locale, dark mode…) from request headers, the conversation requests'
  ``client_contextual_info`` and the analytics contexts.

``privacy_diff`` compares two audits (say, a capture with and without "do not remember"). Everything
reads the capture's tables; nothing re-parses raw traffic. Values are never shown, only salted
hashes: the salt is random per audit unless given, so hashes match within one audit (and across the
two sides of a diff) but cannot be looked up elsewhere.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl

import pandas as pd

from analyzer.analysis.telemetry import ID_MEMBER, KEY_TO_KIND, UNKNOWN_HOST
from analyzer.redact import PLACEHOLDER
from analyzer.store import Capture

HOST_COLUMNS = ["host", "registrable_domain", "party", "owner", "processors", "flows", "kinds",
                "identifier_kinds", "first_seen", "last_seen"]
IDENTIFIER_COLUMNS = ["kind", "name", "location", "field", "host", "registrable_domain", "party", "recipient",
                      "endpoints",
                      "value_hash", "n", "first_seen", "last_seen"]
_NO_VALUE = "\0"  # stands for "value redacted or not recorded" while grouping
LINK_COLUMNS = ["kind", "value_hash", "recipients", "n_recipients", "hosts", "n_domains", "cross_party", "fields"]
FINGERPRINT_COLUMNS = ["attribute", "value", "hosts", "sources", "n"]

# Owners of registrable domains, for the domains this traffic talks to (extend freely).
OWNERS: dict[str, str] = {
    "chatgpt.com": "OpenAI", "openai.com": "OpenAI", "oaistatic.com": "OpenAI", "oaiusercontent.com": "OpenAI",
    "sora.com": "OpenAI",
    "statsigapi.net": "Statsig", "statsig.com": "Statsig", "featuregates.org": "Statsig",
    "prodregistryv2.org": "Statsig", "featureassets.org": "Statsig", "statsigcdn.com": "Statsig",
    "segment.io": "Segment (Twilio)", "segment.com": "Segment (Twilio)", "segmentapis.com": "Segment (Twilio)",
    "datadoghq.com": "Datadog", "datadoghq.eu": "Datadog", "browser-intake-datadoghq.com": "Datadog",
    "sentry.io": "Sentry", "ingest.sentry.io": "Sentry",
    "cloudflare.com": "Cloudflare", "cloudflareinsights.com": "Cloudflare",
    "google-analytics.com": "Google", "googletagmanager.com": "Google", "doubleclick.net": "Google",
    "google.com": "Google", "gstatic.com": "Google", "googleapis.com": "Google",
    "intercom.io": "Intercom", "intercomcdn.com": "Intercom",
    "azure.com": "Microsoft", "windows.net": "Microsoft", "microsoft.com": "Microsoft",
    "arkoselabs.com": "Arkose Labs", "hcaptcha.com": "Intuition Machines (hCaptcha)",
    "stripe.com": "Stripe", "stripe.network": "Stripe",
}
# Which analytics service's format a flow kind is: a first-party host that receives one is a
# proxied third-party endpoint (ChatGPT sends Segment through chatgpt.com/ces/, Statsig through
# ab.chatgpt.com), which a domain-only audit would call first party.
PROCESSORS: dict[str, str] = {"segment": "Segment", "statsig": "Statsig", "segment_metrics": "Segment",
                              "datadog_logs": "Datadog", "otlp_metrics": "OpenTelemetry"}

# Request header names that carry an identifier, by kind. Others are found by name shape below.
_HEADER_KINDS = {
    "oai-device-id": "device_id", "oai-did": "device_id", "oai-session-id": "session_id",
    "chatgpt-account-id": "account_id", "openai-organization": "account_id", "openai-project": "account_id",
    "x-client-request-id": None, "x-request-id": None, "x-oai-turn-trace-id": None,  # per request, not a person
}
_ID_NAME = re.compile(
    r"^(?:.*[_-])?(?P<kind>user|anonymous|anon|stable|device|session|account|workspace|client)[_-]?id$", re.I)
_SHORT_QUERY_IDS = {"sid": "session_id", "uid": "user_id", "did": "device_id", "cid": "client_id",
                    "stableid": "stable_id"}
# Cookie names that are known identifiers (the rest are listed as kind "cookie").
_COOKIE_KINDS = {
    "oai-did": "device_id", "ajs_anonymous_id": "anonymous_id", "ajs_user_id": "user_id",
    "statsig_stable_id": "stable_id", "_cfuvid": "device_id", "__cf_bm": "bot_management",
    "oai-sc": "session_id", "_dd_s": "session_id", "_ga": "device_id",
}
_SESSION_COOKIE = re.compile(r"session|auth|sid$", re.I)

# Fingerprinting attributes: (normalised key → attribute). Keys are lower case with '_'/'-' removed.
_FINGERPRINT_KEYS = {
    "useragent": "user_agent", "screenwidth": "screen_width", "screenheight": "screen_height",
    "pagewidth": "page_width", "pageheight": "page_height", "pixelratio": "pixel_ratio",
    "devicepixelratio": "pixel_ratio", "density": "pixel_ratio", "timezone": "timezone",
    "timezoneoffsetmin": "timezone_offset_min", "locale": "locale", "language": "locale",
    "isdarkmode": "dark_mode", "darkmode": "dark_mode", "platform": "platform",
    "viewportwidth": "page_width", "viewportheight": "page_height",
}
_FINGERPRINT_HEADERS = {
    "user-agent": "user_agent", "accept-language": "accept_language", "sec-ch-ua": "client_hints_brands",
    "sec-ch-ua-platform": "platform", "sec-ch-ua-mobile": "mobile",
}


@functools.cache
def _extractor():
    import tldextract

    # The suffix list snapshot inside the package, no cache directory, no download.
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def registrable_domain(host: str | None) -> str:
    """eTLD+1 of a host (``ab.chatgpt.com`` → ``chatgpt.com``); an IP address or a bare name is itself."""
    if not host or host == UNKNOWN_HOST:
        return UNKNOWN_HOST
    host = host.strip().lower().rstrip(".")
    if host.startswith("["):  # IPv6 literal
        return host
    result = _extractor()(host)
    return result.top_domain_under_public_suffix or result.domain or host


def value_hash(salt: str, kind: str, value: str) -> str:
    """A salted SHA-256 of an identifier value (16 hex digits): equal values hash alike within one audit."""
    return hashlib.sha256(f"{salt}\0{kind}\0{value}".encode()).hexdigest()[:16]


@dataclass
class PrivacyAudit:
    site: str
    hosts: pd.DataFrame
    identifiers: pd.DataFrame
    links: pd.DataFrame
    fingerprint: pd.DataFrame

    def to_dict(self) -> dict:
        return {"site": self.site, "hosts": _records(self.hosts), "identifiers": _records(self.identifiers),
                "links": _records(self.links), "fingerprint": _records(self.fingerprint)}


def _records(frame: pd.DataFrame) -> list[dict]:
    out = []
    for row in frame.to_dict("records"):
        clean = {}
        for key, value in row.items():
            if isinstance(value, pd.Timestamp):
                value = value.isoformat()
            elif isinstance(value, float) and pd.isna(value):
                value = None
            elif value is pd.NaT:
                value = None
            elif hasattr(value, "item"):  # numpy scalars
                value = value.item()
            clean[key] = value
        out.append(clean)
    return out


# -- sightings -----------------------------------------------------------------------------------

def _flows(capture: Capture) -> pd.DataFrame:
    flows = capture.table("flows", ["flow_id", "kind", "host", "path", "query", "started_at",
                                    "request_headers", "response_headers"])
    flows = flows.drop_duplicates("flow_id", ignore_index=True)
    flows["host"] = flows["host"].fillna(UNKNOWN_HOST)
    return flows


def _header_pairs(text: str | None) -> list[tuple[str, str]]:
    if not isinstance(text, str) or not text:  # null cells come as None or NaN
        return []
    try:
        pairs = json.loads(text)
    except ValueError:
        return []
    return [(str(p[0]), str(p[1])) for p in pairs if isinstance(p, list) and len(p) == 2]


def _id_kind_of_name(name: str) -> str | None:
    match = _ID_NAME.match(name)
    if match:
        kind = match.group("kind").lower()
        return {"anon": "anonymous"}.get(kind, kind) + "_id"
    return _SHORT_QUERY_IDS.get(name.lower())


def _cookie_kind(name: str) -> str:
    kind = _COOKIE_KINDS.get(name.lower())
    if kind:
        return kind
    return "session_cookie" if _SESSION_COOKIE.search(name) else "cookie"


def _sighting(kind, name, location, field, group, value) -> dict:
    return {"kind": kind, "name": name, "location": location, "field": field, "host": group.host,
            "endpoint": group.path, "processor": None, "value": value, "n": group.n, "first": group.first,
            "last": group.last}


def _header_groups(flows: pd.DataFrame) -> pd.DataFrame:
    """Flows with the same host, path, headers and query, once each with their count and time span.

    A browser sends the same headers (cookies, device id) with most requests: parsing each distinct
    combination once keeps the audit fast on captures of millions of flows."""
    keys = ["host", "path", "query", "request_headers", "response_headers"]
    present = flows[flows[["query", "request_headers", "response_headers"]].notna().any(axis=1)]
    if present.empty:
        return pd.DataFrame(columns=[*keys, "n", "first", "last"])
    return (present[[*keys, "started_at"]].fillna({k: "" for k in keys})
            .groupby(keys, sort=False)["started_at"].agg(n="size", first="min", last="max").reset_index())


def _flow_sightings(groups: pd.DataFrame) -> list[dict]:
    """Identifiers in request headers, cookies (names; values are redacted), Set-Cookie and queries."""
    found: list[dict] = []
    for group in groups.itertuples(index=False):
        for name, value in _header_pairs(group.request_headers):
            lower = name.lower()
            if lower == "cookie":
                for part in value.split(";"):
                    cname, _, cvalue = part.strip().partition("=")
                    if cname:
                        found.append(_sighting(_cookie_kind(cname), cname, "cookie", f"cookie:{cname}", group,
                                               cvalue))
                continue
            kind = _HEADER_KINDS[lower] if lower in _HEADER_KINDS else _id_kind_of_name(lower)
            if kind:
                found.append(_sighting(kind, lower, "header", f"header:{lower}", group, value))
        for name, value in _header_pairs(group.response_headers):
            if name.lower() == "set-cookie":
                cname = value.split(";", 1)[0].partition("=")[0].strip()
                if cname:
                    found.append(_sighting(_cookie_kind(cname), cname, "set_cookie", f"set-cookie:{cname}", group,
                                           None))
        if group.query:
            for name, value in parse_qsl(group.query, keep_blank_values=True):
                kind = _id_kind_of_name(name)
                if kind:
                    found.append(_sighting(kind, name, "query", f"query:{name}", group, value))
    return found


# Analytics tables: (table, time column, {column: kind}, JSON columns searched for id members).
# The service a body is addressed to is its processor, whichever host received it.
# (table, analytics service or None = by the flow's kind, time column, id columns, JSON columns)
_BODY_SOURCES: tuple[tuple[str, str | None, str, dict[str, str], tuple[str, ...]], ...] = (
    ("segment_events", "Segment", "sent_at", {"user_id": "user_id", "anonymous_id": "anonymous_id"},
     ("context", "properties")),
    ("statsig_events", "Statsig", "sent_at", {"user_id": "user_id", "stable_id": "stable_id",
                                              "session_id": "session_id"},
     ("custom_ids", "metadata")),
    ("telemetry_metrics", None, "sent_at", {}, ("attributes", "resource")),
    ("telemetry_logs", "Datadog", "sent_at", {"session_id": "session_id", "user_id": "user_id"}, ("attributes",)),
)


def _body_sightings(capture: Capture, flows: pd.DataFrame) -> list[dict]:
    endpoint = flows.set_index("flow_id")["path"]
    kind_of = flows.set_index("flow_id")["kind"]
    found: list[dict] = []
    for table, processor, time_column, id_columns, json_columns in _BODY_SOURCES:
        columns = ["flow_id", "host", time_column, *id_columns, *json_columns]
        frame = capture.table(table, columns).drop_duplicates(ignore_index=True)
        if frame.empty:
            continue
        frame["host"] = frame["host"].fillna(UNKNOWN_HOST)
        frame["endpoint"] = frame["flow_id"].map(endpoint)
        frame["processor"] = processor if processor else frame["flow_id"].map(kind_of).map(PROCESSORS)
        for row in frame.itertuples(index=False):
            at = getattr(row, time_column)
            proc = row.processor if isinstance(row.processor, str) else None
            base = {"host": row.host, "endpoint": row.endpoint, "processor": proc, "n": 1, "first": at,
                    "last": at}
            for column, kind in id_columns.items():
                value = getattr(row, column)
                if isinstance(value, str) and value:
                    found.append({**base, "kind": kind, "name": column, "location": "body",
                                  "field": f"{table}.{column}", "value": value})
            for column in json_columns:
                text = getattr(row, column)
                if not isinstance(text, str) or not text:
                    continue
                for match in ID_MEMBER.finditer(text):
                    key = match.group("key")
                    kind = KEY_TO_KIND.get(re.sub(r"[._-]", "", key.lower()), "other_id")
                    found.append({**base, "kind": kind, "name": key, "location": "body",
                                  "field": f"{table}.{column}:{key}", "value": match.group("value")})
    return found


_SIGHTING_COLUMNS = ["kind", "name", "location", "field", "host", "endpoint", "processor", "value", "n", "first",
                     "last"]


def _sightings(capture: Capture, flows: pd.DataFrame, groups: pd.DataFrame) -> pd.DataFrame:
    frame = pd.DataFrame(_flow_sightings(groups) + _body_sightings(capture, flows), columns=_SIGHTING_COLUMNS)
    frame["value"] = frame["value"].astype("object").where(~frame["value"].isin([PLACEHOLDER, ""]), None)
    return frame


def identifier_sightings(capture: Capture) -> pd.DataFrame:
    """Long form: kind, name, location, field, host, endpoint, processor (the analytics service an
    analytics body is addressed to, else None), value, and n / first / last (how many requests or
    events carried it, and when). ``value`` is the raw value (None where it was redacted or not
    recorded); the audit only ever shows it hashed."""
    flows = _flows(capture)
    return _sightings(capture, flows, _header_groups(flows))


# -- the audit -------------------------------------------------------------------------------------

def _site_of(flows: pd.DataFrame, site: str | None) -> str:
    if site:
        return registrable_domain(site)
    own = flows[flows["kind"].astype("str").str.startswith("conversation")]
    pool = own if len(own) else flows
    if pool.empty:
        return UNKNOWN_HOST
    return registrable_domain(pool["host"].value_counts().index[0])


def _party(domain: str, site: str) -> str:
    return "first" if domain == site else "third"


def _sorted_set(values: Iterable) -> list:
    return sorted({str(v) for v in values if v is not None and not (isinstance(v, float) and pd.isna(v))})


def hosts_table(flows: pd.DataFrame, sightings: pd.DataFrame, site: str, extra_hosts: pd.DataFrame) -> pd.DataFrame:
    seen = pd.concat([flows[["host", "kind", "started_at"]].rename(columns={"started_at": "at"}),
                      extra_hosts], ignore_index=True)
    if seen.empty:
        return pd.DataFrame(columns=HOST_COLUMNS)
    rows = []
    ids = sightings.groupby("host")["kind"].agg(_sorted_set) if len(sightings) else pd.Series(dtype=object)
    n_flows = flows.groupby("host")["flow_id"].nunique()
    for host, group in seen.groupby("host", sort=True):
        domain = registrable_domain(host)
        kinds = _sorted_set(group["kind"])
        rows.append({
            "host": host, "registrable_domain": domain, "party": _party(domain, site),
            "owner": OWNERS.get(domain), "processors": _sorted_set(PROCESSORS.get(k) for k in kinds),
            "flows": int(n_flows.get(host, 0)), "kinds": kinds,
            "identifier_kinds": ids.get(host, []), "first_seen": group["at"].min(), "last_seen": group["at"].max(),
        })
    out = pd.DataFrame(rows, columns=HOST_COLUMNS)
    return out.sort_values(["party", "registrable_domain", "host"], ignore_index=True)


def identifiers_table(sightings: pd.DataFrame, site: str, salt: str) -> pd.DataFrame:
    if sightings.empty:
        return pd.DataFrame(columns=IDENTIFIER_COLUMNS)
    s = sightings.copy()
    s["value_hash"] = [None if pd.isna(v) else value_hash(salt, k, str(v))
                       for k, v in zip(s["kind"], s["value"], strict=True)]
    s["registrable_domain"] = s["host"].map(registrable_domain)
    s["party"] = s["registrable_domain"].map(lambda d: _party(d, site))
    s["value_hash"] = s["value_hash"].fillna(_NO_VALUE)  # groupby keys must not be null
    s["endpoint"] = s["endpoint"].astype("object").fillna("")
    # Who received it: the analytics service a body is for, else the owner of the host's domain.
    s["recipient"] = s["processor"].fillna(s["registrable_domain"].map(lambda d: OWNERS.get(d, d)))
    keys = ["kind", "name", "location", "field", "host", "registrable_domain", "party", "recipient", "value_hash"]
    grouped = s.groupby(keys, sort=True).agg(
        endpoints=("endpoint", lambda e: _sorted_set(x for x in e if x)), n=("n", "sum"),
        first_seen=("first", "min"), last_seen=("last", "max")).reset_index()
    grouped["n"] = grouped["n"].astype("int64")
    grouped["value_hash"] = grouped["value_hash"].astype("object").where(grouped["value_hash"] != _NO_VALUE, None)
    return grouped[IDENTIFIER_COLUMNS]


def links_table(identifiers: pd.DataFrame) -> pd.DataFrame:
    """Identifier values that reached more than one recipient (or host): identifier sharing."""
    hashed = identifiers[identifiers["value_hash"].notna()]
    rows = []
    for (kind, digest), group in hashed.groupby(["kind", "value_hash"], sort=True):
        recipients, hosts = _sorted_set(group["recipient"]), _sorted_set(group["host"])
        if len(recipients) < 2 and len(hosts) < 2:
            continue
        domains = _sorted_set(group["registrable_domain"])
        rows.append({"kind": kind, "value_hash": digest, "recipients": recipients, "n_recipients": len(recipients),
                     "hosts": hosts, "n_domains": len(domains), "cross_party": len(recipients) > 1 or len(domains) > 1,
                     "fields": _sorted_set(group["field"])})
    out = pd.DataFrame(rows, columns=LINK_COLUMNS)
    return out.sort_values(["cross_party", "n_recipients"], ascending=False, ignore_index=True)


def _walk(value, prefix: str = ""):
    """(normalised key, scalar value) of every member of a JSON value, nested too."""
    if isinstance(value, dict):
        for key, item in value.items():
            norm = str(key).lower().replace("_", "").replace("-", "")
            if isinstance(item, (dict, list)):
                yield from _walk(item, norm)
            else:
                yield norm, item
                if prefix == "screen" and norm in ("width", "height"):
                    yield "screen" + norm, item


def _fingerprint_sightings(capture: Capture, flows: pd.DataFrame, groups: pd.DataFrame) -> list[dict]:
    found = []
    for group in groups.itertuples(index=False):
        for name, value in _header_pairs(group.request_headers):
            attribute = _FINGERPRINT_HEADERS.get(name.lower())
            if attribute and value and value != PLACEHOLDER:
                found.append({"attribute": attribute, "value": value, "host": group.host,
                              "source": f"header:{name.lower()}", "n": group.n})
    sources = (
        ("conversation_turns", "client_contextual_info", None),
        ("segment_events", "context", "host"),
    )
    host_of = flows.set_index("flow_id")["host"]
    for table, column, host_column in sources:
        columns = ["flow_id", column] + ([host_column] if host_column else [])
        frame = capture.table(table, columns).dropna(subset=[column]).drop_duplicates(ignore_index=True)
        for row in frame.itertuples(index=False):
            host = getattr(row, host_column) if host_column else host_of.get(row.flow_id, UNKNOWN_HOST)
            try:
                obj = json.loads(getattr(row, column))
            except ValueError:
                continue
            for key, value in _walk(obj):
                attribute = _FINGERPRINT_KEYS.get(key)
                if attribute and value is not None and value != "":
                    found.append({"attribute": attribute, "value": json.dumps(value) if isinstance(value, bool)
                                  else str(value), "host": host or UNKNOWN_HOST, "source": f"{table}.{column}",
                                  "n": 1})
    return found


def fingerprint_table(capture: Capture, flows: pd.DataFrame, groups: pd.DataFrame) -> pd.DataFrame:
    found = pd.DataFrame(_fingerprint_sightings(capture, flows, groups),
                         columns=["attribute", "value", "host", "source", "n"])
    if found.empty:
        return pd.DataFrame(columns=FINGERPRINT_COLUMNS)
    out = found.groupby(["attribute", "value"], sort=True).agg(
        hosts=("host", _sorted_set), sources=("source", _sorted_set), n=("n", "sum")).reset_index()
    out["n"] = out["n"].astype("int64")
    return out[FINGERPRINT_COLUMNS]


def privacy_audit(capture: Capture, *, site: str | None = None, salt: str | None = None) -> PrivacyAudit:
    """The audit of one capture. ``site``: the first party (default: the host of its conversations)."""
    salt = salt if salt is not None else secrets.token_hex(16)
    flows = _flows(capture)
    groups = _header_groups(flows)
    sightings = _sightings(capture, flows, groups)
    the_site = _site_of(flows, site)
    analytics_hosts = []
    for table in ("segment_events", "statsig_events"):
        frame = capture.table(table, ["host", "sent_at"]).rename(columns={"sent_at": "at"})
        frame["kind"] = table.split("_", 1)[0]
        analytics_hosts.append(frame.dropna(subset=["host"]))
    extra = pd.concat(analytics_hosts, ignore_index=True)
    extra = extra[~extra["host"].isin(flows["host"])]  # hosts whose flow rows are not in this capture
    identifiers = identifiers_table(sightings, the_site, salt)
    return PrivacyAudit(
        site=the_site,
        hosts=hosts_table(flows, sightings, the_site, extra),
        identifiers=identifiers,
        links=links_table(identifiers),
        fingerprint=fingerprint_table(capture, flows, groups),
    )


def privacy_diff(a: PrivacyAudit, b: PrivacyAudit) -> dict:
    """What one capture sent that the other did not: hosts, identifier fields per host, fingerprint values.

    Both audits must have been made with the same salt for identifier values to compare."""
    def keyed(frame: pd.DataFrame, columns: list[str]) -> set[tuple]:
        return set(frame[columns].astype("str").itertuples(index=False, name=None)) if len(frame) else set()

    def side(columns: list[str], fa: pd.DataFrame, fb: pd.DataFrame) -> dict:
        ka, kb = keyed(fa, columns), keyed(fb, columns)
        return {"only_a": [dict(zip(columns, k, strict=True)) for k in sorted(ka - kb)],
                "only_b": [dict(zip(columns, k, strict=True)) for k in sorted(kb - ka)]}

    return {
        "hosts": side(["host", "party"], a.hosts, b.hosts),
        "identifiers": side(["kind", "field", "host"], a.identifiers, b.identifiers),
        "identifier_values": side(["kind", "field", "host", "value_hash"],
                                  a.identifiers.dropna(subset=["value_hash"]),
                                  b.identifiers.dropna(subset=["value_hash"])),
        "fingerprint": side(["attribute", "value"], a.fingerprint, b.fingerprint),
    }


__all__ = ["PrivacyAudit", "identifier_sightings", "privacy_audit", "privacy_diff", "registrable_domain",
           "value_hash"]
