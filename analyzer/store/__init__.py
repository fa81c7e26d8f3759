"""Where tables live on disk: the crash-safe Parquet writer and the capture reader.

Names are imported lazily: the writer (live capture, import) does not need pandas, the reader does.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Capture": "analyzer.store.reader",
    "CaptureError": "analyzer.store.reader",
    "load_capture": "analyzer.store.reader",
    "CaptureWriter": "analyzer.store.writer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'analyzer.store' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
