"""Serving captures back (``analyze serve``) and replaying web conversations against an API
(``analyze replay``)."""
