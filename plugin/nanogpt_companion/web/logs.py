"""Log hygiene for the HTTP server.

aiohttp logs every malformed request (a header line too long, a broken request line, bad chunking) as
an ERROR with an 11-line traceback of its own parser. That is a client's mistake or a port scanner, not
a fault of the service, and a handful of them would bury real errors. They become one INFO line that
names the peer and the kind of problem; the request's bytes are never quoted (they may hold a token).
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError

SERVER_LOGGER = "aiohttp.server"


class OneLineBadRequests(logging.Filter):
    """Turns aiohttp's traceback for a malformed request into one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        peer = args[0] if args else "?"
        record.msg = "refused a malformed HTTP request from %s (%s, HTTP %s)"
        record.args = (peer, type(exc).__name__, exc.code)
        record.exc_info = None
        record.exc_text = None
        if record.levelno > logging.INFO:
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
            return logging.getLogger(record.name).isEnabledFor(logging.INFO)
        return True


def install_log_filters() -> None:
    """Once per process, by the command line that configures logging."""
    logger = logging.getLogger(SERVER_LOGGER)
    if not any(isinstance(f, OneLineBadRequests) for f in logger.filters):
        logger.addFilter(OneLineBadRequests())
