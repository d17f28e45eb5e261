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
