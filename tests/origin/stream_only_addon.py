"""mitmproxy addon that only streams response bodies through (no capture): the benchmark baseline.

Plain mitmdump buffers a whole response before passing it on, which turns an SSE answer into one
late burst. Streaming every response keeps the origin's timing, so this is what a capture addon's
overhead is measured against.
"""

from mitmproxy import http


def responseheaders(flow: http.HTTPFlow) -> None:
    """Pass the body through chunk by chunk as it arrives."""
    if flow.response is not None:
        flow.response.stream = True
