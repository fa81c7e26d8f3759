"""chatwire's library: everything the ``analyze`` CLI and the mitmproxy addon do, for notebooks too.

    >>> import analyzer
    >>> capture = analyzer.load_capture("captures/sample.parquet")
    >>> report = analyzer.build_report(capture)            # the dict behind `analyze report --format json`
    >>> analyzer.list_conversations(capture)                # a DataFrame
    >>> capture.table("stream_events")                      # any table, as a DataFrame

Names are imported lazily so that the addon, which needs only the extraction path, starts fast.
"""

from __future__ import annotations

from analyzer.lazy_exports import lazy_getattr

_EXPORTS = {
    "load_capture": "analyzer.store",
    "Capture": "analyzer.store",
    "CaptureError": "analyzer.store",
    "CaptureWriter": "analyzer.store",
    "TABLES": "analyzer.schema",
    "extract_flow": "analyzer.extract",
    "build_report": "analyzer.analysis.report",
    "turn_latency": "analyzer.analysis.latency",
    "itl_gaps": "analyzer.analysis.latency",
    "beacon_matches": "analyzer.analysis.latency",
    "stats": "analyzer.analysis.latency",
    "list_conversations": "analyzer.analysis.conversations",
    "build_conversation": "analyzer.analysis.conversations",
    "import_sources": "analyzer.importer",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr("analyzer", _EXPORTS)
