"""Every log record from the ``analyzer`` loggers made inert, in one place, whoever prints it.

A log line can quote traffic: an exception raised on a hostile body, a traceback whose message
carries an answer's text, a header value. mitmproxy's terminal log (and any other handler) prints
records as they come, so ``ESC ] 52 … BEL`` in a message would reach the user's terminal. The
``analyzer`` logger gets one handler, ``InertRecords``, that prints nothing: it rewrites each record
in place — the message with its arguments, the formatted exception and stack — through
``analyzer.inert.inert``, before the record propagates to the root logger's handlers (mitmproxy's
termlog, the CLI's stderr handler).

Why a handler and not a filter: a logger's filters see only the records logged on that very
logger, not those of its children (``analyzer.capture.addon`` …); its handlers see them all.
"""

from __future__ import annotations

import logging

from analyzer.inert import inert

ROOT_LOGGER = "analyzer"
_FORMATTER = logging.Formatter()


def make_record_inert(record: logging.LogRecord) -> None:
    """Fold message, arguments, exception and stack into one inert message (in place).

    The exception is formatted here and dropped from the record: mitmproxy's formatter formats
    ``exc_info`` itself and would print it raw."""
    try:
        text = record.getMessage()
    except Exception:  # a bad format string must not cost the line
        text = f"{record.msg!s} {record.args!r}"
    if record.exc_info:
        text = f"{text}\n{_FORMATTER.formatException(record.exc_info)}"
    elif record.exc_text:
        text = f"{text}\n{record.exc_text}"
    if record.stack_info:
        text = f"{text}\n{record.stack_info}"
    record.msg, record.args = inert(text), ()
    record.exc_info = record.exc_text = record.stack_info = None


class InertRecords(logging.Handler):
    """Not an output: makes each record passing through the ``analyzer`` logger inert for the handlers above it."""

    def handle(self, record: logging.LogRecord) -> bool:
        make_record_inert(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:  # handle() does the work; nothing is written
        pass


def install(name: str = ROOT_LOGGER) -> InertRecords:
    """Put ``InertRecords`` on the ``name`` logger once (idempotent: loading the addon twice adds one)."""
    logger = logging.getLogger(name)
    for handler in logger.handlers:
        if isinstance(handler, InertRecords):
            return handler
    handler = InertRecords()
    logger.addHandler(handler)
    return handler
