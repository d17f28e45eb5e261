"""Threshold expressions: what k6 users write (``p(95)<500ms``, ``rate<0.01``), read into :class:`Threshold`.

A threshold names one of the run's own measures and a bound on one aggregation of it::

    [thresholds]
    errors = ["rate<0.01"]                              # errors / finished sends
    latency = ["p(95)<500ms", "p(99)<2s every 5m"]      # every 5-minute window must pass
    drops = ["count==0"]
    achieved_rate = [{ threshold = "ratio>0.95", abort_on_fail = true, delay_abort_eval = "1m" }]
    [thresholds.reason]
    gmail_5xx = ["count<100"]

and on the command line ``--threshold METRIC:EXPR``, e.g. ``--threshold 'latency:p(95)<500ms every 5m'``
or ``--threshold 'errors:rate<0.05, abort_on_fail, delay_abort_eval=30s'``.

The grammar is k6's (an aggregation, an operator, a value) with two additions k6 lacks:
units on values (a bare latency is milliseconds, as in k6; ``%`` on ratios) and ``every
DURATION`` for a bound that must hold in each window of run time, not only over the run.
Parsing raises :class:`ValueError` with a message meant to follow ``file: key:``, so the
profile and the CLI report a bad expression the same way, before anything runs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from loadsim.units import format_duration, parse_duration, parse_rate

OPERATORS = ("<=", ">=", "==", "!=", "<", ">")


@dataclass(frozen=True, slots=True)
class Metric:
    """A measure thresholds can name, and the aggregations it has."""

    name: str
    aggregations: tuple[str, ...]
    help: str
    http_only: bool = False


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("errors", ("rate", "count"), "sends that did not succeed: rate (of finished) or count"),
        Metric("latency", ("p", "med", "max"), "latency (HTTP: from the request's actual start): p(N), med, max"),
        Metric(
            "latency_intended",
            ("p", "med", "max"),
            "HTTP latency from the intended start (free of coordinated omission): p(N), med, max",
            http_only=True,
        ),
        Metric("achieved_rate", ("ratio", "value"), "starts per second: ratio (of the target) or value (per second)"),
        Metric("drops", ("count", "rate"), "arrivals dropped at max_in_flight: count or rate (of scheduled)"),
        Metric("reason", ("count", "rate"), "finished sends of one reason (reason.NAME): count or rate (of finished)"),
    )
}
"""The measures, by name; ``reason`` is written ``reason.NAME``."""

OPTION_KEYS = ("threshold", "window", "abort_on_fail", "delay_abort_eval")
"""Keys of a threshold written as a table (k6's object form, in snake case)."""

_EXPR = re.compile(
    r"^\s*(?P<agg>p\(\s*(?P<q>[0-9]+(?:\.[0-9]+)?)\s*\)|[a-z_]+)\s*"
    r"(?P<op><=|>=|==|!=|<|>)\s*(?P<value>[^\s,]+)"
    r"(?:\s+every\s+(?P<window>[^\s,]+))?\s*$"
)
_LATENCY_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_NUMBER = re.compile(r"^(?P<n>[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)(?P<unit>[a-z%/]*)$")


@dataclass(frozen=True, slots=True)
class Threshold:
    """One bound on one aggregation of one measure, checked at the end of a run (and in each window)."""

    metric: str
    """``errors``, ``latency``, ``latency_intended``, ``achieved_rate``, ``drops`` or ``reason.NAME``."""
    aggregation: str
    """``rate``, ``count``, ``p``, ``med``, ``max``, ``ratio`` or ``value``."""
    op: str
    bound: float
    """In base units: seconds for latency, a fraction for ratios and rates, per second for ``value``."""
    expression: str
    """The expression as written (whitespace tidied), for people."""
    quantile: float = math.nan
    """For ``p(N)``: N / 100."""
    window: float | None = None
    """Run-time window length: the bound must hold in every window (None: over the whole run)."""
    abort_on_fail: bool = False
    """Stop the run (drain, summary, exit code) as soon as the bound fails."""
    delay_abort_eval: float = 0.0
    """Run time before a failure may abort the run (k6's ``delayAbortEval``)."""

    @property
    def family(self) -> str:
        """The measure without its reason: ``reason`` for ``reason.gmail_5xx``."""
        return self.metric.split(".", 1)[0]

    @property
    def reason(self) -> str | None:
        """The reason of a ``reason.NAME`` threshold."""
        return self.metric.split(".", 1)[1] if "." in self.metric else None

    @property
    def label(self) -> str:
        """``metric expression`` with its options, as the summary table shows it."""
        extras = []
        if self.abort_on_fail:
            delay = f" after {format_duration(self.delay_abort_eval)}" if self.delay_abort_eval else ""
            extras.append(f"abort_on_fail{delay}")
        return f"{self.metric} {self.expression}" + (f" ({', '.join(extras)})" if extras else "")

    @property
    def aggregate(self) -> str:
        """The aggregation as written: ``p(95)``, ``rate``..."""
        return f"p({self.quantile * 100:g})" if self.aggregation == "p" else self.aggregation

    def passes(self, value: float) -> bool:
        """Whether a measured value meets the bound (a NaN, no data, never does)."""
        if math.isnan(value):
            return False
        return {
            "<": value < self.bound,
            "<=": value <= self.bound,
            ">": value > self.bound,
            ">=": value >= self.bound,
            "==": value == self.bound,
            "!=": value != self.bound,
        }[self.op]

    def worse(self, a: float, b: float) -> bool:
        """Whether ``a`` is further on the failing side than ``b`` (to report the worst window)."""
        if math.isnan(b):
            return not math.isnan(a)
        if math.isnan(a):
            return False
        if self.op in ("<", "<="):
            return a > b
        if self.op in (">", ">="):
            return a < b
        return abs(a - self.bound) > abs(b - self.bound) if self.op == "==" else False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for the run summary."""
        return {
            "metric": self.metric,
            "threshold": self.expression,
            "window_seconds": self.window,
            "abort_on_fail": self.abort_on_fail,
            "delay_abort_eval_seconds": self.delay_abort_eval,
        }


def metric_problem(metric: str) -> str | None:
    """Why ``metric`` is not a measure thresholds know (None when it is)."""
    family, _, reason = metric.partition(".")
    if family not in METRICS:
        names = ", ".join(n if n != "reason" else "reason.NAME" for n in METRICS)
        return f"unknown measure {metric!r}; expected one of: {names}"
    if family == "reason" and not re.fullmatch(r"[A-Za-z0-9_]+", reason):
        return "expected reason.NAME, e.g. reason.gmail_5xx"
    if family != "reason" and reason:
        return f"unknown measure {metric!r}; only reason takes a .NAME"
    return None


def parse_threshold(metric: str, item: object) -> Threshold:
    """A threshold on ``metric`` from a string (``"p(95)<500ms"``) or a table (``{threshold = ...}``)."""
    if (why := metric_problem(metric)) is not None:
        raise ValueError(why)
    if isinstance(item, str):
        return _from_text(metric, item)
    if isinstance(item, Mapping):
        return _from_table(metric, item)
    msg = f'expected an expression such as "p(95)<500ms" or a table with threshold = ..., got {type(item).__name__}'
    raise ValueError(msg)


def parse_option(text: str) -> Threshold:
    """``--threshold METRIC:EXPR[, abort_on_fail][, delay_abort_eval=DURATION]``."""
    metric, sep, rest = text.partition(":")
    if not sep or not metric.strip():
        msg = f"expected METRIC:EXPRESSION such as latency:p(95)<500ms, got {text!r}"
        raise ValueError(msg)
    return parse_threshold(metric.strip(), rest)


def _from_text(metric: str, text: str) -> Threshold:
    expression, *options = (part.strip() for part in text.split(","))
    table: dict[str, object] = {"threshold": expression}
    for option in options:
        key, eq, value = (s.strip() for s in option.partition("="))
        if key == "abort_on_fail" and not eq:
            table["abort_on_fail"] = True
        elif key == "delay_abort_eval" and eq:
            table["delay_abort_eval"] = value
        else:
            msg = f"unknown option {option!r} after the expression; expected abort_on_fail or delay_abort_eval=DURATION"
            raise ValueError(msg)
    return _from_table(metric, table)


def _from_table(metric: str, table: Mapping[Any, Any]) -> Threshold:
    unknown = sorted(str(k) for k in table if k not in OPTION_KEYS)
    if unknown:
        msg = f"unknown key {', '.join(map(repr, unknown))}; expected: {', '.join(OPTION_KEYS)}"
        raise ValueError(msg)
    text = table.get("threshold")
    if not isinstance(text, str):
        msg = 'needs threshold = "EXPRESSION", e.g. threshold = "p(95)<500ms"'
        raise ValueError(msg)  # noqa: TRY004 - pydantic reports ValueError as a validation problem
    abort = table.get("abort_on_fail", False)
    if not isinstance(abort, bool):
        msg = f"abort_on_fail must be true or false, got {abort!r}"
        raise ValueError(msg)  # noqa: TRY004 - pydantic reports ValueError as a validation problem
    threshold = _expression(metric, text)
    updates: dict[str, Any] = {"abort_on_fail": abort}
    if "window" in table:
        if threshold.window is not None:
            msg = "the window is given twice (every ... and window = ...); keep one"
            raise ValueError(msg)
        updates["window"] = _window(table["window"])
    if "delay_abort_eval" in table:
        if not abort:
            msg = "delay_abort_eval goes with abort_on_fail"
            raise ValueError(msg)
        updates["delay_abort_eval"] = parse_duration(table["delay_abort_eval"])
    return replace(threshold, **updates)


def _window(value: object) -> float:
    if not isinstance(value, str | int | float):
        msg = f"window must be a duration such as 5m, got {value!r}"
        raise ValueError(msg)  # noqa: TRY004 - pydantic reports ValueError as a validation problem
    seconds = parse_duration(value)
    if seconds <= 0:
        msg = f"window must be > 0, got {value!r}"
        raise ValueError(msg)
    return seconds


def _expression(metric: str, text: str) -> Threshold:
    family = metric.split(".", 1)[0]
    allowed = METRICS[family].aggregations
    shown = ", ".join("p(N)" if a == "p" else a for a in allowed)
    m = _EXPR.match(text.lower())
    if m is None:
        msg = f"expected AGGREGATION OP VALUE [every DURATION] such as {_example(family)}, got {text!r}"
        raise ValueError(msg)
    agg = "p" if m["q"] is not None else m["agg"]
    if agg not in allowed:
        msg = f"{metric} has no aggregation {m['agg']!r}; expected one of: {shown}"
        raise ValueError(msg)
    quantile = math.nan
    if agg == "p":
        quantile = float(m["q"]) / 100
        if not 0 < quantile <= 1:
            msg = f"p(N) needs 0 < N <= 100, got p({m['q']})"
            raise ValueError(msg)
    elif agg == "med":
        agg, quantile = "p", 0.5
    bound = _value(family, agg, m["value"])
    window = None if m["window"] is None else _window(m["window"])
    tidy = f"{m['agg']}{m['op']}{m['value']}" + ("" if window is None else f" every {m['window']}")
    return Threshold(metric, agg, m["op"], bound, tidy, quantile, window)


def _value(family: str, agg: str, text: str) -> float:
    """The bound in base units: seconds, fractions, counts or per second."""
    if family in ("latency", "latency_intended"):
        m = _NUMBER.match(text)
        unit = m["unit"] if m else "?"
        if m is None or unit not in ("", *_LATENCY_UNITS):
            msg = f"expected a latency such as 500ms, 1.5s or 500 (milliseconds, as in k6), got {text!r}"
            raise ValueError(msg)
        return float(m["n"]) * _LATENCY_UNITS[unit or "ms"]
    if agg == "value":
        try:
            return float(text) if _NUMBER.match(text) and "/" not in text and text[-1].isdigit() else parse_rate(text)
        except ValueError:
            msg = f"expected a rate such as 40 or 40/s, got {text!r}"
            raise ValueError(msg) from None
    m = _NUMBER.match(text)
    if agg == "count":
        if m is None or m["unit"]:
            msg = f"expected a count such as 0 or 100, got {text!r}"
            raise ValueError(msg)
        return float(m["n"])
    if m is None or m["unit"] not in ("", "%"):
        msg = f"expected a fraction such as 0.01 or 1%, got {text!r}"
        raise ValueError(msg)
    return float(m["n"]) / (100 if m["unit"] == "%" else 1)


def _example(family: str) -> str:
    return {
        "errors": "rate<0.01",
        "latency": "p(95)<500ms",
        "latency_intended": "p(99)<1s",
        "achieved_rate": "ratio>0.95",
        "drops": "count==0",
        "reason": "count<100",
    }[family]
