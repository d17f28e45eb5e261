"""No credential reaches an output: one function, :func:`redact`, that every output goes through.

Secrets reach loadsim in URLs (``http://user:pass@host``, for the Pushgateway, the
target, Prometheus, Alertmanager, a fake Gmail), in bearer tokens (``--token-env``,
``--token-file``) and, for fake-gmail, in the requests it is sent. They can come back
out in many places: a log event, a one-line problem, the summary (on the terminal
and in ``--summary-json``), the drill's score card, a report, an exception message
from a library, a traceback from aiohttp's server. Masking each of those where it is
written would miss the next one, so there is one function, used by all of them:

* :func:`redact` masks, in any text: the userinfo of every URL (up to the *last*
  ``@`` of its authority, so a password that contains ``@`` is masked whole), the
  value of ``Authorization`` and ``Proxy-Authorization`` headers, ``Bearer`` and
  ``Basic`` credentials, credential-named query parameters (``access_token=``,
  ``password=``...), and every secret value loadsim was told about with
  :func:`remember` (a token read from a file, a URL's password decoded), wherever it
  appears;
* :func:`redact_data` applies it to every string inside a JSON-ready structure, and
  masks values under credential-named keys;
* :func:`redacted_output` routes ``sys.stdout`` and ``sys.stderr`` through it for the
  whole of a command, so what any code prints (``print``, structlog, the ``logging``
  module, tracebacks, warnings) is masked without each writer having to remember.
  Files loadsim writes (summary, score card, report) go through :func:`redact` too.

The remembered secrets are process-wide on purpose: standard output is process-wide,
and a secret learnt while parsing options must be masked in a traceback printed by a
library an hour later.
"""

from __future__ import annotations

import contextlib
import re
import sys
import traceback
from collections.abc import Iterator
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

MASK = "***"

_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?P<info>[^\s/?#\"'<>`\\]*)@", re.IGNORECASE)
"""A URL's userinfo: greedy up to the last ``@`` before the authority ends, so ``p@ss`` is masked whole."""
_AUTH_HEADER = re.compile(
    r"(?P<name>\b(?:proxy-)?authorization)(?P<sep>[\"']?\s*[:=,]\s*(?:b?[\"'])?)(?P<value>[^\r\n\"']+)", re.IGNORECASE
)
_SCHEME_CREDENTIAL = re.compile(
    r"(?P<scheme>\b(?:bearer|basic))(?P<sep>\s+)(?P<value>[A-Za-z0-9._~+/=:-]{6,})", re.IGNORECASE
)
_QUERY_CREDENTIAL = re.compile(
    r"(?P<name>[?&;](?:access_token|id_token|refresh_token|token|password|passwd|pwd|secret|client_secret"
    r"|api_key|apikey|key|auth|sig|signature)=)(?P<value>[^&;#\s\"']+)",
    re.IGNORECASE,
)
SECRET_KEY = re.compile(r"token|password|passwd|secret|authorization|api_key|apikey|credential", re.IGNORECASE)
"""Keys whose string values are credentials, whatever they look like."""
_NOT_SECRET_KEY = re.compile(r"^(oauth_token_missing|token_env|token_file)$")
"""Keys that match :data:`SECRET_KEY` but name no credential (a reason label, an option naming a source)."""
MIN_REMEMBERED = 6
"""Shorter values are not masked wherever they appear: ``abc`` would be masked in every word that has it."""

_remembered: set[str] = set()


def remember(*values: str | None) -> None:
    """Mask these values wherever they appear from now on (too short ones only in their usual places)."""
    for value in values:
        if value and len(value) >= MIN_REMEMBERED:
            _remembered.add(value)


def remember_url(url: str) -> None:
    """Remember the credentials of ``url`` (its password, raw and decoded; a lone username, which may be a token)."""
    try:
        parts = urlsplit(url.strip())
        username, password = parts.username, parts.password
    except ValueError:
        match = _URL_USERINFO.search(url)
        if match is None:
            return
        username, _, password = match.group("info").partition(":")
    if password is not None and password != "":
        remember(password, unquote(password))
    elif username:
        remember(username, unquote(username))


def remember_in(texts: Any) -> None:
    """Remember the credentials of every URL in ``texts`` (a string, or any nesting of lists and dicts of them)."""
    if isinstance(texts, str):
        for match in _URL_USERINFO.finditer(texts):
            remember_url(texts[match.start() :])
    elif isinstance(texts, dict):
        for value in texts.values():
            remember_in(value)
    elif isinstance(texts, list | tuple | set):
        for value in texts:
            remember_in(value)


def _userinfo(match: re.Match[str]) -> str:
    info = match.group("info")
    user, colon, _ = info.partition(":")
    shown = f"{user}:{MASK}" if colon and user else MASK
    return f"{match.group('scheme')}{shown}@"


def redact(text: str) -> str:
    """``text`` with every credential masked (see the module's docstring for what counts as one)."""
    if not text:
        return text
    for secret in sorted(_remembered, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    if "@" in text:
        text = _URL_USERINFO.sub(_userinfo, text)
    if "uthorization" in text or "UTHORIZATION" in text:
        text = _AUTH_HEADER.sub(lambda m: f"{m.group('name')}{m.group('sep')}{MASK}", text)
    text = _SCHEME_CREDENTIAL.sub(lambda m: f"{m.group('scheme')}{m.group('sep')}{MASK}", text)
    if "=" in text:
        text = _QUERY_CREDENTIAL.sub(lambda m: f"{m.group('name')}{MASK}", text)
    return text


def redact_data(value: Any, key: str = "") -> Any:
    """``value`` (JSON-ready: dicts, lists, strings, numbers) with :func:`redact` applied to every string.

    A string under a credential-named key (``token``, ``password``...) is masked whole.
    """
    if isinstance(value, str):
        if key and SECRET_KEY.search(key) and not _NOT_SECRET_KEY.match(key):
            return MASK
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_data(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_data(v, key) for v in value]
    return value


class RedactingStream:
    r"""A text stream that passes everything written to it through :func:`redact`, a line at a time.

    Whole lines are redacted, so a URL written in two pieces (``print`` writes its
    arguments one by one) is still seen whole; a partial line goes out on ``flush``
    (a progress line redrawn with ``\r``) or once it is long. Everything else
    (``isatty``, ``fileno``, ``encoding``) is the wrapped stream's.
    """

    MAX_PENDING = 1 << 16

    def __init__(self, raw: TextIO) -> None:
        self.raw = raw
        self._pending = ""

    def write(self, text: str) -> int:
        pending = self._pending + text
        head, newline, tail = pending.rpartition("\n")
        if newline:
            self.raw.write(redact(head + newline))
            pending = tail
        if len(pending) > self.MAX_PENDING:
            self.raw.write(redact(pending))
            pending = ""
        self._pending = pending
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._pending:
            self.raw.write(redact(self._pending))
            self._pending = ""
        self.raw.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


@contextlib.contextmanager
def redacted_output() -> Iterator[None]:
    """For the duration: ``sys.stdout`` and ``sys.stderr`` redact what is written to them.

    An exception that escapes is printed here, redacted, and raised again as
    ``SystemExit(1)``: printed by the interpreter after this returns it would not be.
    """
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(out), RedactingStream(err)
    try:
        yield
    except (SystemExit, KeyboardInterrupt, GeneratorExit):
        raise
    except BaseException:  # noqa: BLE001 - any escaping error is printed here, redacted (see above)
        traceback.print_exc()
        raise SystemExit(1) from None
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        sys.stdout, sys.stderr = out, err
