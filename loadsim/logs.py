"""Structured logging: one JSON object per line on stdout, secrets never written.

The level comes from ``--log-level`` or ``LOADSIM_LOG_LEVEL`` (default ``info``).
Every event goes through :func:`loadsim.redaction.redact_data` before rendering:
a value under a credential-named key (token, password, secret, authorization) is
``"***"``, and credentials inside any string, at any depth (a URL's userinfo, a
bearer token, a remembered secret), are masked. Records of the standard ``logging``
module (aiohttp's server, asyncio) go to standard error through the same masking
(:func:`configure`), with their tracebacks.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from loadsim.redaction import redact as redact_text
from loadsim.redaction import redact_data

LEVELS = ("debug", "info", "warning", "error")


def redact(_logger: object, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Structlog processor: hide credentials, at any depth of the event."""
    for key, value in list(event.items()):
        event[key] = redact_data(value, key)
    return event


class RedactingFormatter(logging.Formatter):
    """A ``logging`` formatter whose output (message and traceback) goes through the one redaction."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes (as ``logging.lastResort`` does)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        return


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
    # Libraries log through the standard module (aiohttp's "Error handling request" with its
    # traceback): one handler on the root logger, to standard error, redacted. Replaced, not
    # added, when configure runs again.
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h.formatter, RedactingFormatter)]:
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)


def get_logger(**bind: Any) -> Any:
    """A logger bound with ``bind``."""
    return structlog.get_logger("loadsim").bind(**bind)
