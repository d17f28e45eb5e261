"""Structured logging: one JSON object per line on stdout, or a human line on a terminal; secrets never written.

The level comes from ``--log-level`` or ``LOADSIM_LOG_LEVEL`` (default ``info``). The
format is JSON (containers, pipes) or structlog's console renderer (a person at a
terminal, severity in colour unless ``NO_COLOR`` is set). Rendered lines go to a
:class:`LogOutput`: a stream, until a live view takes them to print above itself.
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
import threading
from collections.abc import Callable, MutableMapping
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


FORMATS = ("auto", "console", "json")
CONTEXT_KEYS = ("profile", "seed", "virtual", "driver")
"""Bound to every event of a run: the console format leaves them out (the live view's title shows them)."""


class LogOutput:
    """Where rendered log lines go: ``stream``, or whatever :meth:`divert` names (a live view).

    A line is written whole under a lock, so lines from the pusher's thread never interleave.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self._divert: Callable[[str], None] | None = None
        self._lock = threading.Lock()

    def write(self, line: str) -> None:
        """Write one rendered line."""
        with self._lock:
            if self._divert is not None:
                self._divert(line)
                return
            self.stream.write(line + "\n")
            self.stream.flush()

    def divert(self, to: Callable[[str], None] | None) -> None:
        """Send lines to ``to`` from now on (None: back to the stream)."""
        with self._lock:
            self._divert = to

    @property
    def is_terminal(self) -> bool:
        """Whether lines end up on a terminal."""
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())


class _LineLogger:
    """structlog's logger: hands each rendered line to a :class:`LogOutput`."""

    def __init__(self, output: LogOutput) -> None:
        self._output = output

    def msg(self, message: str) -> None:
        self._output.write(message)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def no_color() -> bool:
    """Whether the user asked for no colour (https://no-color.org: set and not empty)."""
    return bool(os.environ.get("NO_COLOR"))


def resolve_format(fmt: str, output: LogOutput) -> str:
    """``auto`` is ``console`` on a terminal and ``json`` anywhere else."""
    if fmt != "auto":
        return fmt
    return "console" if output.is_terminal else "json"


BRIEF_EVENTS = {"run.summary": ("run_seconds", "wall_seconds", "stopped_early", "thresholds_ok")}
"""Events whose whole payload a person reads elsewhere (the end-of-run table): the console keeps these keys."""


def _for_people(_logger: object, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Console format only: no run context on every line, floats rounded, long payloads cut to their gist."""
    for key in CONTEXT_KEYS:
        event.pop(key, None)
    keep = BRIEF_EVENTS.get(event.get("event", ""))
    if keep is not None:
        for key in [k for k in event if k not in (*keep, "event", "level", "timestamp")]:
            del event[key]
    for key, value in event.items():
        if isinstance(value, float):
            event[key] = round(value, 3)
    return event


def configure(
    level: str | None = None,
    stream: TextIO | None = None,
    *,
    fmt: str = "json",
    output: LogOutput | None = None,
) -> LogOutput:
    """Set up structlog; ``level`` falls back to ``LOADSIM_LOG_LEVEL``; returns where lines go.

    ``fmt`` is ``json`` (one object per line, as before), ``console`` (structlog's
    ``ConsoleRenderer``: a person reads it, colours unless ``NO_COLOR``) or ``auto``.
    """
    name = (level or os.environ.get("LOADSIM_LOG_LEVEL") or "info").lower()
    if name not in LEVELS:
        name = "info"
    output = output or LogOutput(stream)
    processors: list[Any] = [structlog.processors.add_log_level]
    if resolve_format(fmt, output) == "console":
        colors = not no_color() and os.environ.get("TERM") != "dumb"
        processors += [
            structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
            redact,
            _for_people,
            structlog.dev.ConsoleRenderer(colors=colors, pad_event_to=20, sort_keys=False),
        ]
    else:
        processors += [
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.JSONRenderer(sort_keys=False),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, name.upper())),
        logger_factory=lambda *_: _LineLogger(output),
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
    return output


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
