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
