"""Pure stream parsing: bytes with arrival times in, events and text out. No I/O, no mitmproxy."""
