"""Where tables live on disk: the crash-safe Parquet writer and the capture reader."""

from analyzer.store.reader import Capture, CaptureError, load_capture
from analyzer.store.writer import CaptureWriter

__all__ = ["Capture", "CaptureError", "CaptureWriter", "load_capture"]
