"""Structured logging: one JSON object per line on stdout, secrets never written.

The level comes from ``--log-level`` or ``LOADSIM_LOG_LEVEL`` (default ``info``).
Any event key that looks like a credential (token, password, secret,
authorization, basic auth) is replaced by ``"***"`` before rendering, and so is
the password part of any URL.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

LEVELS = ("debug", "info", "warning", "error")
_SECRET_KEY = re.compile(r"token|password|passwd|secret|authorization|api_key|apikey|credential", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]+):[^@/\s]+@", re.IGNORECASE)


def redact(_logger: object, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Structlog processor: hide credential-looking values."""
    for key, value in list(event.items()):
        if _SECRET_KEY.search(key):
            event[key] = "***"
        elif isinstance(value, str) and "@" in value:
            event[key] = _URL_PASSWORD.sub(r"\g<scheme>\g<user>:***@", value)
    return event


def configure(level: str | None = None, stream: TextIO | None = None) -> None:
    """Set up structlog for JSON lines; ``level`` falls back to ``LOADSIM_LOG_LEVEL``."""
    name = (level or os.environ.get("LOADSIM_LOG_LEVEL") or "info").lower()
    if name not in LEVELS:
        name = "info"
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, name.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=False,
    )


def get_logger(**bind: Any) -> Any:
    """A logger bound with ``bind``."""
    return structlog.get_logger("loadsim").bind(**bind)


class _OneLine(logging.Handler):
    """aiohttp's server log as loadsim events: one JSON line each, never a traceback.

    aiohttp logs every malformed request (a port scan, a TLS hello on a plain port, a header
    without a colon) as "Error handling request" with the parser's traceback on stderr.
    Here a client's mistake is an ``http.bad_request`` event naming the peer and the
    problem; an error in a handler is an ``http.handler_error`` with the exception's type and
    message, without the traceback (its frames can hold request headers, credentials included).
    """

    def __init__(self, component: str) -> None:
        super().__init__(logging.DEBUG)
        self.component = component

    def emit(self, record: logging.LogRecord) -> None:
        log = get_logger(component=self.component)
        exc = record.exc_info[1] if record.exc_info else None
        # Rendered here in one line: no handler after this one (a user's, a test runner's) prints the traceback.
        record.exc_info, record.exc_text = None, None
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else None
        if exc is None:
            log.info("http.server", message=record.getMessage())
            return
        code = getattr(exc, "code", None)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(code, int) and 400 <= code < 500:
            log.info("http.bad_request", remote=remote, status=code, error=first[:200])
            return
        log.error("http.handler_error", remote=remote, error=f"{type(exc).__name__}: {first[:200]}")


def http_server_logger(component: str) -> logging.Logger:
    """The logger an aiohttp server of loadsim's gets (``AppRunner(..., logger=...)``): one line per event."""
    logger = logging.getLogger(f"loadsim.http.{component}")
    if not any(isinstance(h, _OneLine) for h in logger.handlers):
        logger.addHandler(_OneLine(component))
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    return logger
