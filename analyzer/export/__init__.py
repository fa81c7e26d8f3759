"""Exports of a capture into other tools' formats (``analyze export …``)."""
