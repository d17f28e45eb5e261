"""Parsing the human units users write: durations (``30s``, ``15m``, ``48h``) and rates (``1/s``).

Both parsers raise :class:`ValueError` with a message meant to be shown after
``file: key:``, so they can be used from profile validation and from the CLI alike.
"""

from __future__ import annotations

import math
import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_RATE = re.compile(r"(\d+(?:\.\d+)?(?:e[+-]?\d+)?)\s*(?:req|sends?)?\s*/\s*(s|sec|m|min|h|hr|d)")
_RATE_UNIT_SECONDS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hr": 3600.0, "d": 86400.0}

DURATION_HELP = "a duration such as 30s, 15m, 48h, 1h30m or 250ms"
RATE_HELP = "a rate such as 1/s, 0.5/s, 60/m or 1req/s"

MAX_SECONDS = 366 * 86_400.0
"""The longest duration loadsim takes (366 days): longer runs, windows or waits are refused.

Every duration ends up in float arithmetic on run time (counts, timers, integrals): a
bound keeps sums such as ``rate x duration`` exact and finite, and no soak needs more."""
MIN_SECONDS = 1e-6
"""The shortest non-zero duration (one microsecond): lognormals built from two quantiles stay
finite (their sigma is bounded by ``ln(MAX_SECONDS / MIN_SECONDS)``), and clocks can tell it apart."""
MAX_RATE = 1e8
"""The highest rate loadsim schedules: 100,000,000 per second.

One core simulates about 10 M sends/s; anything above is dropped and counted at run time
(the machine cannot keep up), and far above it the arithmetic breaks (a window's Poisson
mean overflows). Ten times what one core can do is room enough for any real load."""
MAX_TEXT = 64
"""Longest duration or rate text parsed: a longer one is not a duration anyone meant."""


def parse_duration(text: str | float) -> float:
    """Return seconds for ``text``; plain numbers are taken as seconds.

    >>> parse_duration("1h30m")
    5400.0
    >>> parse_duration("250ms")
    0.25
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        cleaned = _text(text, DURATION_HELP)
        if cleaned.startswith("-") and _DURATION_WHOLE.fullmatch(cleaned[1:]):
            msg = f"must be >= 0, got {text!r}"
            raise ValueError(msg)
        if not _DURATION_WHOLE.fullmatch(cleaned):
            msg = f"expected {DURATION_HELP}, got {text!r}"
            raise ValueError(msg)
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(cleaned))
    if seconds < 0:
        msg = f"must be >= 0, got {text!r}"
        raise ValueError(msg)
    if not math.isfinite(seconds):
        msg = f"expected {DURATION_HELP}, got {text!r}"
        raise ValueError(msg)
    if seconds > MAX_SECONDS:
        msg = f"must be at most 366d, got {text!r}"
        raise ValueError(msg)
    if 0 < seconds < MIN_SECONDS:
        msg = f"must be 0 or at least 0.000001 (one microsecond), got {text!r}"
        raise ValueError(msg)
    return seconds


def _text(value: object, expected: str) -> str:
    """``value`` as cleaned text, or ValueError naming what it was (a TOML date, a list...)."""
    if not isinstance(value, str):
        # ValueError, not TypeError: pydantic reports a ValueError as a validation problem (one line)
        # and lets anything else through as a traceback.
        msg = f"expected {expected}, got {_kind(value)}"
        raise ValueError(msg)  # noqa: TRY004 - see above
    if len(value) > MAX_TEXT:
        msg = f"expected {expected}, got {len(value)} characters"
        raise ValueError(msg)
    return value.strip().lower()


def _kind(value: object) -> str:
    """How an unexpected value is shown: a TOML date or time says so, anything else shows itself."""
    import datetime as dt

    if isinstance(value, dt.datetime | dt.date | dt.time):
        return f"a TOML {type(value).__name__} ({value.isoformat()})"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict | list):
        return f"a {'table' if isinstance(value, dict) else 'list'}"
    return repr(value)


def parse_rate(text: str | float) -> float:
    """Return events per second for ``text``; plain numbers are taken as per second.

    >>> parse_rate("60/m")
    1.0
    >>> parse_rate("1req/s")
    1.0
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        rate = float(text)
    else:
        match = _RATE.fullmatch(_text(text, RATE_HELP))
        if match is None:
            msg = f"expected {RATE_HELP}, got {text!r}"
            raise ValueError(msg)
        rate = float(match.group(1)) / _RATE_UNIT_SECONDS[match.group(2)]
    if not math.isfinite(rate) or rate < 0:
        msg = f"expected {RATE_HELP} (not negative), got {text!r}"
        raise ValueError(msg)
    if rate > MAX_RATE:
        msg = f"must be at most {MAX_RATE:.0e}/s (100,000,000/s; one core simulates about 1e7/s), got {text!r}"
        raise ValueError(msg)
    return rate


def format_duration(seconds: float) -> str:
    """Render seconds the way users write them: ``1h05m``, ``42s``, ``250ms``.

    >>> format_duration(3900)
    '1h05m'
    """
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    whole = round(seconds)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


# -- annotated types for validated config (profiles) ----------------------------------------
# They live beside the parsers so config dataclasses anywhere can share them; pydantic reads
# the annotations, plain Python sees a float.
from typing import Annotated  # noqa: E402 - grouped with the types that use it

from annotated_types import Ge, Gt, Le  # noqa: E402
from pydantic import AllowInfNan, BeforeValidator  # noqa: E402

Seconds = Annotated[float, BeforeValidator(parse_duration), Gt(0)]
"""A positive duration: ``"30s"``, ``"250ms"`` or a number of seconds (at most 366 days)."""
SecondsOrZero = Annotated[float, BeforeValidator(parse_duration), Ge(0)]
"""A duration that may be zero."""
PerSecond = Annotated[float, BeforeValidator(parse_rate), Gt(0)]
"""A positive rate: ``"1/s"``, ``"60/m"`` or a number per second (at most ``MAX_RATE``)."""
Probability = Annotated[float, Ge(0), Le(1)]
"""A share between 0 and 1."""
NonNegative = Annotated[float, Ge(0), AllowInfNan(allow_inf_nan=False)]
"""Zero or more, finite (TOML's ``inf`` and ``nan`` are floats too)."""
Positive = Annotated[float, Gt(0), AllowInfNan(allow_inf_nan=False)]
"""More than zero, finite."""
