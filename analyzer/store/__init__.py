"""Where tables live on disk: the crash-safe Parquet writer and the capture reader.

Names are imported lazily, so that importing the package (the CLI's start, ``analyze --help``) does
not import the reader's pandas.
"""

from __future__ import annotations

from analyzer.lazy_exports import lazy_getattr

_EXPORTS = {
    "Capture": "analyzer.store.reader",
    "CaptureError": "analyzer.store.reader",
    "load_capture": "analyzer.store.reader",
    "CaptureWriter": "analyzer.store.writer",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr("analyzer.store", _EXPORTS)
