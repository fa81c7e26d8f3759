"""Product analytics in a capture: Segment and Statsig events, the 2026 metric series and logs
(``telemetry_metrics``, ``telemetry_logs``), the identifiers they carry, and the conversations they name.

The identifiers table answers a privacy reviewer's question, "which identifier goes to which host":
one entry per (identifier kind, host) with how many distinct values and events carried it, and
``hosts``: every host that received at least one of the same values (so a value shared across hosts
shows up as a link). Identifiers come from columns (Segment ``userId``/``anonymousId``, Statsig
``userID``/``stableID``/``sid``, Datadog ``session_id``/``usr.id``), from keys found inside the JSON of
Segment ``context``/``properties``, Statsig ``custom_ids`` and the metrics' and logs' attributes
(``workspace_id``, ``deviceID``, OTel ``session.id``, …), and from the request headers the web app and
the Codex CLI send with every call (``Oai-Device-Id``, ``Chatgpt-Account-Id``, ``Oai-Session-Id``),
each extracted with one vectorised regex pass.
"""

from __future__ import annotations

import logging
import re

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from analyzer.analysis.latency import isin
from analyzer.schema import TABLES
from analyzer.store import Capture, CaptureError

log = logging.getLogger(__name__)

COLUMNS: dict[str, list[str]] = {
    "segment_events": [
        "flow_id", "host", "type", "event", "user_id", "anonymous_id", "page_path", "conversation_id",
        "properties", "context",
    ],
    "statsig_events": ["flow_id", "host", "event_name", "user_id", "stable_id", "custom_ids", "current_page",
                       "conversation_id", "session_id"],
    "telemetry_metrics": ["flow_id", "host", "source", "name", "attributes", "resource"],
    "telemetry_logs": ["flow_id", "host", "status", "service", "message", "session_id", "user_id",
                       "conversation_id", "attributes"],
    "flows": ["flow_id", "host", "request_headers"],
}

# Identifier kinds in report order; JSON keys are normalised (lower case, no '_'/'-') and looked up here.
KINDS = ("user_id", "anonymous_id", "stable_id", "workspace_id", "account_id", "device_id", "session_id")
KEY_TO_KIND = {
    "userid": "user_id", "anonymousid": "anonymous_id", "stableid": "stable_id",
    "workspaceid": "workspace_id", "accountid": "account_id", "deviceid": "device_id", "oaidid": "device_id",
    "sessionid": "session_id",
}
# A string-valued JSON member whose key names an identifier, anywhere in the document (nested too);
# ``.`` as in OpenTelemetry's ``session.id``.
ID_MEMBER = re.compile(
    r'"(?P<key>user[._]?id|anonymous[._]?id|stable[._]?id|workspace[._]?id|account[._]?id|device[._]?id'
    r'|oai-did|session[._]?id)"'
    r'\s*:\s*"(?P<value>[^"\\]+)"',
    re.IGNORECASE,
)
# Identifier request headers (guide 6d; also the Codex CLI's chatgpt-account-id), in the flows
# table's ``request_headers`` JSON (``[["name", "value"], ...]``).
_ID_HEADER = re.compile(
    r'\["(?P<key>oai-device-id|chatgpt-account-id|oai-session-id)",\s*"(?P<value>[^"\\]+)"\]', re.IGNORECASE)
_HEADER_TO_KIND = {"oai-device-id": "device_id", "chatgpt-account-id": "account_id", "oai-session-id": "session_id"}
_CONVERSATION_IN_PATH = r"/c/([0-9A-Za-z][0-9A-Za-z-]{7,})"
UNKNOWN_HOST = "(unknown)"
IDENTIFIER_COLUMNS = ["kind", "host", "distinct_values", "events", "hosts", "sources"]


def _dedupe(capture: Capture, frame: pd.DataFrame) -> pd.DataFrame:
    # Combined captures may repeat a flow (live capture + its flow-file import share flow ids).
    return frame.drop_duplicates(ignore_index=True) if len(capture.paths) > 1 and len(frame) else frame


def _events(capture: Capture, table: str, page_column: str) -> pd.DataFrame:
    """An analytics table with ``host`` filled and ``conversation_id`` also taken from the page."""
    frame = _dedupe(capture, capture.table(table, COLUMNS[table])).copy()
    frame["host"] = frame["host"].fillna(UNKNOWN_HOST)
    from_page = frame[page_column].astype("str").str.extract(_CONVERSATION_IN_PATH, expand=False)
    frame["conversation_id"] = frame["conversation_id"].fillna(from_page)
    return frame


def segment_events(capture: Capture) -> pd.DataFrame:
    """Segment events with ``host`` filled and ``conversation_id`` also taken from ``page_path``."""
    return _events(capture, "segment_events", "page_path")


def statsig_events(capture: Capture) -> pd.DataFrame:
    """Statsig events with ``host`` filled and ``conversation_id`` also taken from ``current_page``."""
    return _events(capture, "statsig_events", "current_page")


def telemetry_metrics(capture: Capture) -> pd.DataFrame:
    """Metric data points (Segment series, statsc, OTLP) with ``host`` filled."""
    frame = _dedupe(capture, capture.table("telemetry_metrics", COLUMNS["telemetry_metrics"])).copy()
    frame["host"] = frame["host"].fillna(UNKNOWN_HOST)
    return frame


def telemetry_logs(capture: Capture) -> pd.DataFrame:
    """Log records (Datadog browser logs) with ``host`` filled."""
    frame = _dedupe(capture, capture.table("telemetry_logs", COLUMNS["telemetry_logs"])).copy()
    frame["host"] = frame["host"].fillna(UNKNOWN_HOST)
    return frame


def _from_headers(capture: Capture) -> pd.DataFrame:
    """Identifier request headers: one sighting per (flow, header value); the flow id is the event.
    Only the flows whose headers name an identifier leave the Parquet scan (a capture's flows, each
    with its headers, would not fit in memory)."""
    files = capture.part_files("flows")
    empty = pd.DataFrame(columns=["event", "host", "kind", "value", "source"])
    if not files:
        return empty
    headers = pc.field("request_headers")
    try:
        flows = ds.dataset(files, schema=TABLES["flows"], format="parquet").to_table(
            columns=COLUMNS["flows"], filter=pc.match_substring(headers, "-id", ignore_case=True)
            & pc.match_substring_regex(headers, _ID_HEADER.pattern, ignore_case=True)).to_pandas()
    except (pa.ArrowInvalid, OSError) as exc:  # as Capture.arrow: damage inside a part whose footer is whole
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CaptureError(f"{capture.paths[0]}: table flows cannot be read: {first}") from exc
    if len(capture.paths) > 1 and len(flows):
        flows = flows.drop_duplicates("flow_id", ignore_index=True)
    text = flows["request_headers"].astype("str")
    if text.empty:
        return empty
    found = text.str.extractall(_ID_HEADER)
    if found.empty:
        return empty
    rows = found.index.get_level_values(0)
    return pd.DataFrame({"event": flows.loc[rows, "flow_id"].to_numpy(),
                         "host": flows.loc[rows, "host"].fillna(UNKNOWN_HOST).to_numpy(),
                         "kind": found["key"].str.lower().map(_HEADER_TO_KIND).to_numpy(),
                         "value": found["value"].to_numpy(), "source": "headers"})


def _from_columns(frame: pd.DataFrame, source: str, columns: dict[str, str]) -> pd.DataFrame:
    parts = []
    for column, kind in columns.items():
        vals = frame[column]
        ok = vals.notna() & (vals.astype("str") != "")
        parts.append(pd.DataFrame({"event": frame.index[ok], "host": frame["host"][ok].to_numpy(),
                                   "kind": kind, "value": vals[ok].astype("str").to_numpy()}))
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["event", "host", "kind", "value"])
    out["source"] = source
    return out


def _from_json(frame: pd.DataFrame, source: str, columns: list[str]) -> pd.DataFrame:
    parts = []
    for column in columns:
        text = frame[column].dropna().astype("str")
        if text.empty:
            continue
        found = text.str.extractall(ID_MEMBER)
        if found.empty:
            continue
        rows = found.index.get_level_values(0)
        key = found["key"].str.lower().str.replace(r"[._-]", "", regex=True)
        parts.append(pd.DataFrame({"event": rows, "host": frame.loc[rows, "host"].to_numpy(),
                                   "kind": key.map(KEY_TO_KIND).to_numpy(), "value": found["value"].to_numpy()}))
    if not parts:
        return pd.DataFrame(columns=["event", "host", "kind", "value", "source"])
    out = pd.concat(parts, ignore_index=True)
    out["source"] = source
    return out


def identifier_sightings(capture: Capture) -> pd.DataFrame:
    """Long form: one row per (source, event, kind, value) with the host the event went to."""
    seg = segment_events(capture)
    st = statsig_events(capture)
    metrics = telemetry_metrics(capture)
    logs = telemetry_logs(capture)
    frames = [
        _from_columns(seg, "segment", {"user_id": "user_id", "anonymous_id": "anonymous_id"}),
        _from_json(seg, "segment", ["context", "properties"]),
        _from_columns(st, "statsig", {"user_id": "user_id", "stable_id": "stable_id", "session_id": "session_id"}),
        _from_json(st, "statsig", ["custom_ids"]),
        _from_json(metrics, "metrics", ["attributes", "resource"]),
        _from_columns(logs, "logs", {"session_id": "session_id", "user_id": "user_id"}),
        _from_json(logs, "logs", ["attributes"]),
        _from_headers(capture),
    ]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="str") for c in ("source", "host", "kind", "value")}
                            | {"event": pd.Series(dtype="int64")})
    out = pd.concat(frames, ignore_index=True)
    # The same id in a column and again in the JSON of one event is one sighting.
    return out.drop_duplicates(["source", "event", "kind", "value"], ignore_index=True)


def identifiers(capture: Capture, sightings: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (identifier kind, host): distinct_values, events, hosts (sharing a value), sources."""
    s = sightings if sightings is not None else identifier_sightings(capture)
    if s.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in IDENTIFIER_COLUMNS})
    grouped = s.groupby(["kind", "host"], sort=False).agg(
        distinct_values=("value", "nunique"),
        sources=("source", lambda v: sorted(set(v))),
    )
    # An event is identified by (source, row): the same row number in Segment and Statsig are two events.
    events = s.drop_duplicates(["kind", "host", "source", "event"]).groupby(["kind", "host"]).size()
    grouped["events"] = events.reindex(grouped.index).to_numpy()
    # Hosts sharing a value: pair every (kind, value, host) with every other host of that (kind, value).
    vh = s[["kind", "value", "host"]].drop_duplicates()
    pairs = vh.merge(vh, on=["kind", "value"], suffixes=("", "_other"))
    shared = pairs.groupby(["kind", "host"])["host_other"].agg(lambda h: sorted(set(h)))
    grouped["hosts"] = shared.reindex(grouped.index).to_numpy()
    out = grouped.reset_index()
    order = {k: i for i, k in enumerate(KINDS)}
    out["_order"] = out["kind"].map(order).fillna(len(KINDS))
    out = out.sort_values(["_order", "kind", "host"], ignore_index=True)
    out["distinct_values"] = out["distinct_values"].astype("int64")
    out["events"] = out["events"].astype("int64")
    return out[IDENTIFIER_COLUMNS]


def captured_conversations(capture: Capture) -> pd.Index:
    """Conversation ids present in ``conversation_turns``, ``messages`` or ``conversation_reads``."""
    ids = pa.chunked_array([chunk for name in ("conversation_turns", "messages", "conversation_reads")
                            for chunk in capture.arrow(name, ["conversation_id"])["conversation_id"].chunks],
                           type=pa.string())
    return pd.Index(pc.unique(ids.drop_null()).to_pandas())


def conversation_links(capture: Capture) -> pd.DataFrame:
    """Analytics events (and log records) that name a conversation: source, flow_id, event,
    conversation_id, captured. A log record's ``event`` is its message; it names the conversation
    of the page it was logged on (``view.url``)."""
    seg = segment_events(capture)
    st = statsig_events(capture)
    logs = telemetry_logs(capture)
    frames = []
    for source, frame, name in (("segment", seg, "event"), ("statsig", st, "event_name"), ("logs", logs, "message")):
        named = frame[frame["conversation_id"].notna()]
        frames.append(pd.DataFrame({"source": source, "flow_id": named["flow_id"].to_numpy(),
                                    "event": named[name].to_numpy(),
                                    "conversation_id": named["conversation_id"].to_numpy()}))
    out = pd.concat(frames, ignore_index=True)
    out["captured"] = isin(out["conversation_id"].astype("str"), captured_conversations(capture).to_series())
    return out


def telemetry_report(capture: Capture, metrics=None) -> dict:
    """The report's ``telemetry`` object: counts by the engine (``metrics``, an
    ``analyzer.engine.Metrics``, or one prepared here), identifiers and links in pandas (regexes)."""
    from analyzer.analysis.report import _metrics

    with _metrics(capture, metrics) as m:
        return _telemetry_report(capture, m)


def _telemetry_report(capture: Capture, m) -> dict:
    links = conversation_links(capture)
    ids = identifiers(capture)

    host = ("host", UNKNOWN_HOST)
    seg = m.counts("segment_events", {"event": ("COALESCE(event, '(' || COALESCE(type, 'unknown') || ')')", "unknown"),
                                      "type": ("type", "unknown"), "host": host}, COLUMNS["segment_events"])
    st = m.counts("statsig_events", {"event": ("event_name", "unknown"), "host": host}, COLUMNS["statsig_events"])
    points = m.counts("telemetry_metrics", {"source": ("source", "unknown"), "name": ("name", "unknown"), "host": host},
                      COLUMNS["telemetry_metrics"])
    logs = m.counts("telemetry_logs", {"status": ("status", "unknown"), "service": ("service", "unknown"),
                                       "host": host}, COLUMNS["telemetry_logs"])
    return {
        "segment": {"events": sum(seg["type"].values()), "by_event": seg["event"], "by_type": seg["type"],
                    "by_host": seg["host"]},
        "statsig": {"events": sum(st["event"].values()), "by_event": st["event"], "by_host": st["host"]},
        "metrics": {"points": sum(points["source"].values()), "by_source": points["source"], "by_name": points["name"],
                    "by_host": points["host"]},
        "logs": {"records": sum(logs["status"].values()), "by_status": logs["status"], "by_service": logs["service"],
                 "by_host": logs["host"]},
        "identifiers": [
            {
                "kind": str(r.kind), "host": str(r.host), "distinct_values": int(r.distinct_values),
                "events": int(r.events), "hosts": [str(h) for h in r.hosts], "sources": [str(s) for s in r.sources],
            }
            for r in ids.itertuples(index=False)
        ],
        "events_naming_a_conversation": int(len(links)),
        "events_in_conversations": int(links["captured"].sum()),
        "conversations_linked": int(links.loc[links["captured"], "conversation_id"].nunique()),
    }


__all__ = [
    "captured_conversations", "conversation_links", "identifier_sightings", "identifiers",
    "segment_events", "statsig_events", "telemetry_logs", "telemetry_metrics", "telemetry_report",
]
