"""Product analytics in a capture: Segment and Statsig events, the 2026 metric series and logs
(``telemetry_metrics``, ``telemetry_logs``), the identifiers they carry, and the conversations they name.

The identifiers table answers a privacy reviewer's question, "which identifier goes to which host":
one entry per (identifier kind, host) with how many distinct values and events carried it, and
``hosts``: every host that received at least one of the same values (so a value shared across hosts
shows up as a link). Identifiers come from columns (Segment ``userId``/``anonymousId``, Statsig
``userID``/``stableID``/``sid``, Datadog ``session_id``/``usr.id``), from keys found inside the JSON of
Segment ``context``/``properties``, Statsig ``custom_ids`` and the metrics' and logs' attributes
(``workspace_id``, ``deviceID``, OTel ``session.id``, …), and from the request headers the web app and
the Codex CLI send with every call (``Oai-Device-Id``, ``Chatgpt-Account-Id``, ``Oai-Session-Id``).
The identifiers and the report's link counts are queries run by the engine (``analyzer.engine``):
the regexes below, given to DuckDB's RE2 or Spark's java.util.regex, find the JSON members and
headers; nothing per event is held in Python.
"""

from __future__ import annotations

import logging
import re

import pandas as pd

from analyzer.store import Capture

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


# -- identifiers, by the engine ------------------------------------------------------------------
#
# One query finds every sighting (source, event, host, kind, value) in the columns and, with the
# regexes above, inside the JSON columns and the request headers; the identifiers table and the
# report's link counts are GROUP BY queries over it. Nothing per event comes back to Python, so an
# egress proxy's year of analytics costs the engine's memory limit, not the report's.

def _sql_regex(pattern: re.Pattern) -> str:
    """A Python pattern for RE2 (DuckDB) and java.util.regex (Spark): groups unnamed, case folded."""
    return "(?i)" + re.sub(r"\(\?P<\w+>", "(", pattern.pattern)


def _kind_case(key_sql: str, mapping: dict[str, str], normalise: bool) -> str:
    """``CASE`` mapping a matched key to its identifier kind (NULL: not one we know)."""
    key = f"lower({key_sql})"
    if normalise:  # as KEY_TO_KIND's keys: no '.', '_' or '-'
        key = f"replace(replace(replace({key}, '.', ''), '_', ''), '-', '')"
    whens = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in mapping.items())
    return f"CASE {key} {whens} END"


# (table, source name, identifier columns -> kind, JSON columns searched with ID_MEMBER)
_SIGHTING_SOURCES = (
    ("segment_events", "segment", {"user_id": "user_id", "anonymous_id": "anonymous_id"}, ("context", "properties")),
    ("statsig_events", "statsig", {"user_id": "user_id", "stable_id": "stable_id", "session_id": "session_id"},
     ("custom_ids",)),
    ("telemetry_metrics", "metrics", {}, ("attributes", "resource")),
    ("telemetry_logs", "logs", {"session_id": "session_id", "user_id": "user_id"}, ("attributes",)),
)


def _engine_for(capture: Capture, engine=None):
    """(engine, multi, own): ``engine`` (an Engine over ``capture``, or a Metrics) or a DuckDB one opened here."""
    from analyzer.engine import Engine, Metrics, open_engine

    if isinstance(engine, Metrics):
        return engine.engine, engine.multi, False
    if isinstance(engine, Engine):
        return engine, len(capture.paths) > 1, False
    opened = open_engine("duckdb")
    opened.register_capture(capture)
    return opened, len(capture.paths) > 1, True


def _prepare_sightings(engine, multi: bool) -> None:
    """Tables ``tel_<source>`` (each event with a row id, ``host`` filled) and ``id_sightings``,
    once per engine."""
    if engine.prepared("sightings"):
        return
    d = engine.dialect
    member, header = d.literal(_sql_regex(ID_MEMBER)), d.literal(_sql_regex(_ID_HEADER))
    selects = []
    for table, source, columns, json_columns in _SIGHTING_SOURCES:
        cols = ", ".join(COLUMNS[table])
        rows = f"SELECT {'DISTINCT ' if multi else ''}{cols} FROM {table}"  # combined captures: once
        # Row ids are drawn once, in a kept table: every sighting of an event names the same one.
        engine.materialize(f"tel_{source}", f"""
            SELECT CAST({d.row_id} AS STRING) AS _event, {", ".join(c for c in COLUMNS[table] if c != "host")},
                   COALESCE(host, '{UNKNOWN_HOST}') AS host FROM ({rows}) r""")
        for column, kind in columns.items():
            selects.append(f"SELECT '{source}' AS source, _event AS event, host, '{kind}' AS kind, CAST({column} AS STRING) "
                           f"AS value FROM tel_{source} WHERE {column} IS NOT NULL AND CAST({column} AS STRING) <> ''")
        for column in json_columns:
            selects.append(f"""
                SELECT '{source}' AS source, _event AS event, host,
                       {_kind_case(f"regexp_extract(m, {member}, 1)", KEY_TO_KIND, True)} AS kind,
                       regexp_extract(m, {member}, 2) AS value
                FROM (SELECT _event, host, {d.explode.format(x=f"regexp_extract_all({column}, {member}, 0)")} AS m
                      FROM tel_{source} WHERE {column} IS NOT NULL) j""")
    # Identifier request headers; the flow is the event. The LIKE keeps the regex off most flows.
    flows = (f"SELECT {'DISTINCT ' if multi else ''}flow_id, host, request_headers FROM flows "
             "WHERE lower(request_headers) LIKE '%-id\"%'")
    selects.append(f"""
        SELECT 'headers' AS source, flow_id AS event, COALESCE(host, '{UNKNOWN_HOST}') AS host,
               {_kind_case(f"regexp_extract(m, {header}, 1)", _HEADER_TO_KIND, False)} AS kind,
               regexp_extract(m, {header}, 2) AS value
        FROM (SELECT flow_id, host, {d.explode.format(x=f"regexp_extract_all(request_headers, {header}, 0)")} AS m
              FROM ({flows}) f) h""")
    # Kept first, filtered after: a filter over the union is pushed into its branches, where it runs
    # every regex a second time (2.2x the time, measured on DuckDB).
    engine.materialize("id_found", " UNION ALL ".join(selects))
    # The same id in a column and again in the JSON of one event is one sighting.
    engine.materialize("id_sightings", """
        SELECT DISTINCT source, event, host, kind, value FROM id_found
        WHERE kind IS NOT NULL AND value IS NOT NULL AND value <> ''""")
    engine.drop("id_found")
    engine.mark_prepared("sightings")


def identifier_sightings(capture: Capture, engine=None) -> pd.DataFrame:
    """Long form: one row per (source, event, kind, value) with the host the event went to; ``event``
    is a row id within its source (a flow id for ``headers``). ``engine``: an Engine over the
    capture or a Metrics (default: DuckDB, opened for the call)."""
    eng, multi, own = _engine_for(capture, engine)
    try:
        _prepare_sightings(eng, multi)
        out = eng.sql("SELECT source, event, host, kind, value FROM id_sightings ORDER BY source, event, kind, value")
    finally:
        if own:
            eng.close()
    return out.astype({c: "object" for c in out.columns})


def identifiers(capture: Capture, engine=None) -> pd.DataFrame:
    """One row per (identifier kind, host): distinct_values, events, hosts (every host that received
    one of the same values, itself included), sources; kinds in :data:`KINDS` order, then hosts."""
    eng, multi, own = _engine_for(capture, engine)
    try:
        _prepare_sightings(eng, multi)
        counts = eng.sql("""
            SELECT s.kind, s.host, s.distinct_values, e.events FROM (
                SELECT kind, host, count(DISTINCT value) AS distinct_values FROM id_sightings GROUP BY kind, host) s
            JOIN (SELECT kind, host, count(*) AS events FROM (SELECT DISTINCT kind, host, source, event
                  FROM id_sightings) x GROUP BY kind, host) e ON e.kind = s.kind AND e.host = s.host""")
        sources = eng.sql("SELECT DISTINCT kind, host, source FROM id_sightings")
        # Hosts sharing a value: every (kind, value, host) paired with each host of that (kind, value).
        shared = eng.sql("""
            SELECT DISTINCT a.kind, a.host, b.host AS other FROM (SELECT DISTINCT kind, value, host FROM id_sightings) a
            JOIN (SELECT DISTINCT kind, value, host FROM id_sightings) b ON b.kind = a.kind AND b.value = a.value""")
    finally:
        if own:
            eng.close()
    if counts.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in IDENTIFIER_COLUMNS})
    by_sources: dict[tuple, set] = {}
    for k, h, src in zip(sources["kind"], sources["host"], sources["source"], strict=True):
        by_sources.setdefault((k, h), set()).add(src)
    by_hosts: dict[tuple, set] = {}
    for k, h, other in zip(shared["kind"], shared["host"], shared["other"], strict=True):
        by_hosts.setdefault((k, h), set()).add(other)
    order = {k: i for i, k in enumerate(KINDS)}
    rows = sorted(zip(counts["kind"], counts["host"], counts["distinct_values"], counts["events"], strict=True),
                  key=lambda r: (order.get(r[0], len(KINDS)), r[0], r[1]))
    return pd.DataFrame({
        "kind": [r[0] for r in rows], "host": [r[1] for r in rows],
        "distinct_values": pd.Series([int(r[2]) for r in rows], dtype="int64"),
        "events": pd.Series([int(r[3]) for r in rows], dtype="int64"),
        "hosts": [sorted(by_hosts.get((r[0], r[1]), ())) for r in rows],
        "sources": [sorted(by_sources.get((r[0], r[1]), ())) for r in rows],
    })[IDENTIFIER_COLUMNS]


_CAPTURED_CONVERSATIONS = """
    SELECT DISTINCT conversation_id FROM (
        SELECT conversation_id FROM conversation_turns UNION ALL SELECT conversation_id FROM messages
        UNION ALL SELECT conversation_id FROM conversation_reads) x
    WHERE conversation_id IS NOT NULL"""


def _link_rows(engine) -> str:
    """The query of every analytics event (and log record) that names a conversation: source,
    flow_id, event, conversation_id (a column, else the page's ``/c/<id>``), captured."""
    in_path = engine.dialect.literal(_CONVERSATION_IN_PATH)

    def named(column: str, page: str) -> str:
        return f"COALESCE({column}, NULLIF(regexp_extract({page}, {in_path}, 1), ''))"

    return f"""
        SELECT n.source, n.flow_id, n.event, n.conversation_id, k.conversation_id IS NOT NULL AS captured
        FROM (SELECT 'segment' AS source, flow_id, event, {named('conversation_id', 'page_path')} AS conversation_id
              FROM tel_segment
              UNION ALL SELECT 'statsig', flow_id, event_name, {named('conversation_id', 'current_page')}
              FROM tel_statsig
              UNION ALL SELECT 'logs', flow_id, message, conversation_id FROM tel_logs) n
        LEFT JOIN ({_CAPTURED_CONVERSATIONS}) k ON k.conversation_id = n.conversation_id
        WHERE n.conversation_id IS NOT NULL"""


def _link_counts(engine) -> dict[str, int]:
    """The report's three link counts (after :func:`_prepare_sightings`): events naming a
    conversation, those naming a captured one, and how many captured conversations they name."""
    row = engine.sql(f"""
        SELECT count(*) AS naming, sum(CASE WHEN captured THEN 1 ELSE 0 END) AS inside,
               count(DISTINCT CASE WHEN captured THEN conversation_id END) AS linked
        FROM ({_link_rows(engine)}) l""").iloc[0]
    inside = row["inside"]
    return {"events_naming_a_conversation": int(row["naming"]),
            "events_in_conversations": 0 if inside is None or pd.isna(inside) else int(inside),
            "conversations_linked": int(row["linked"])}


def captured_conversations(capture: Capture, engine=None) -> pd.Index:
    """Conversation ids present in ``conversation_turns``, ``messages`` or ``conversation_reads``
    (sorted): the set an analytics event's conversation is looked up in, by the same query."""
    eng, _, own = _engine_for(capture, engine)
    try:
        out = eng.sql(f"SELECT conversation_id FROM ({_CAPTURED_CONVERSATIONS}) c ORDER BY conversation_id")
    finally:
        if own:
            eng.close()
    return pd.Index(out["conversation_id"].astype(object), name=None)


def conversation_links(capture: Capture, engine=None) -> pd.DataFrame:
    """Analytics events (and log records) that name a conversation: source, flow_id, event,
    conversation_id, captured. A log record's ``event`` is its message; it names the conversation
    of the page it was logged on (``view.url``). One row per event: for a notebook (the report counts
    them in the engine)."""
    eng, multi, own = _engine_for(capture, engine)
    try:
        _prepare_sightings(eng, multi)
        out = eng.sql(f"SELECT * FROM ({_link_rows(eng)}) l ORDER BY source, flow_id, conversation_id")
    finally:
        if own:
            eng.close()
    out["captured"] = out["captured"].astype(bool)
    return out


def telemetry_report(capture: Capture, metrics=None) -> dict:
    """The report's ``telemetry`` object, every number by the engine (``metrics``, an
    ``analyzer.engine.Metrics``, or one prepared here): counts, identifiers and links."""
    from analyzer.analysis.report import _metrics

    with _metrics(capture, metrics) as m:
        return _telemetry_report(capture, m)


def _telemetry_report(capture: Capture, m) -> dict:
    ids = identifiers(capture, m)  # prepares the tel_* tables _link_counts reads
    links = _link_counts(m.engine)

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
        **links,
    }


__all__ = [
    "captured_conversations", "conversation_links", "identifier_sightings", "identifiers",
    "segment_events", "statsig_events", "telemetry_logs", "telemetry_metrics", "telemetry_report",
]
