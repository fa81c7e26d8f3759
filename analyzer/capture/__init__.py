"""Live capture: the mitmproxy addon, the chunk recorder and the background extraction pipeline."""
