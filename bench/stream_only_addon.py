"""Baseline for the capture benchmark: streams event-stream responses and does nothing else."""

from mitmproxy import http


class StreamOnly:
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response and flow.response.headers.get("content-type", "").startswith("text/event-stream"):
            flow.response.stream = True


addons = [StreamOnly()]
