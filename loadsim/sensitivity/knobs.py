"""What "intensity" means for each alert the sweep can measure: a scenario, the option it turns, its range.

An :class:`Axis` is one scenario with one option swept (the error-rate scenario's
``ratio``, the latency scenario's ``p95``, ...). Alerts on the same axis share their
runs: one run of the error-rate scenario at 3% is judged for the warning and the
critical alike. A :class:`Knob` ties an alert to its axis, the intensity its scenario
was designed with (read from the scenario catalogue, never restated) and the
threshold of its rule.

The threshold is given in the rule's own units (a ratio, seconds of p95, events per
second); :meth:`Knob.threshold_at` turns it into intensity units at a background rate
with the outcome model's expected values, because two of the relay's alerts compare
an absolute rate: ``structured_error_rate_total > 0.1`` per second whatever the
traffic, and ``sanitization changes > 50`` per second, of which healthy traffic
already supplies about 1.6 per send.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loadsim.model import catalog
from loadsim.model.sampler import OutcomeModel
from loadsim.overlays.scenarios import (
    ERR_CRIT,
    ERR_WARN,
    FAST_BURN,
    LAT_CRIT,
    LAT_WARN,
    MIME,
    SANITIZATION,
    SCENARIOS,
    SLOW_BURN,
    VALIDATION,
)
from loadsim.overlays.state import RunState
from loadsim.relayconfig import ALERTS, ALERTS_V2, RECORDING_RULES

V1 = (RECORDING_RULES, ALERTS)
V2 = (RECORDING_RULES, ALERTS_V2)

Level = Callable[[RunState], float]
"""The quantity a rule compares, expected from the outcome model in a given state."""


def _per_second(state: RunState, weights: np.ndarray[Any, Any]) -> float:
    probabilities = OutcomeModel(state.model).class_probabilities
    return float(state.rate * state.arrival_scale * (probabilities @ weights))


def error_ratio(state: RunState) -> float:
    """``job:gmail_send_errors_rate:5m``: errors per second over executions per second, floored at 1/s."""
    errors = _per_second(state, catalog.REASON_MATRIX.sum(axis=1))
    executions = _per_second(state, catalog.IS_EXECUTION.astype(np.float64))
    return errors / max(executions, 1.0)


def structured_per_second(state: RunState) -> float:
    """``job:structured_error_rate_total:5m``: structured errors per second (some codes count twice)."""
    return _per_second(state, catalog.STRUCTURED_MATRIX.sum(axis=1).astype(np.float64))


def sanitization_per_second(state: RunState) -> float:
    """``sum(rate(gmail_html_sanitization_changes_total[5m]))``: changes per built send, per second."""
    built = _per_second(state, catalog.BUILDS_MIME.astype(np.float64))
    return built * sum(state.model.sanitization.means())


def p95(state: RunState) -> float:
    """The Gmail call's p95 as configured (the relay reads it through its buckets: not the same number)."""
    return state.model.latency.p95


@dataclass(frozen=True, slots=True)
class Axis:
    """One scenario with one option swept: the runs that alerts on this axis share."""

    name: str
    scenario: str
    option: str
    """The scenario option the intensity sets, or ``magnitude`` (the overlay's)."""
    unit: str
    low: float
    """Exclusive lower bound of the valid range."""
    high: float
    """Inclusive upper bound."""
    grid: tuple[float, ...]
    level: Level | None = None
    tied: Mapping[str, float] | None = None
    """Other options set in proportion to the intensity (the latency scenario's p50 = p95 / 2)."""

    def valid(self, x: float) -> bool:
        """Whether ``x`` is inside the axis's valid range."""
        return math.isfinite(x) and self.low < x <= self.high

    @property
    def range_text(self) -> str:
        """The valid range, for messages."""
        return f"({self.low:g}, {self.high:g}]{self.unit and ' ' + self.unit}"

    def overlay(self, x: float, start: float, duration: float) -> dict[str, Any]:
        """The profile's overlay entry for intensity ``x``."""
        entry: dict[str, Any] = {"scenario": self.scenario, "start": start, "duration": duration}
        if self.option == "magnitude":
            entry["magnitude"] = x
        else:
            entry["options"] = {self.option: x, **{k: x * f for k, f in (self.tied or {}).items()}}
        return entry

    def designed(self) -> float:
        """The intensity the scenario was written with."""
        return 1.0 if self.option == "magnitude" else float(SCENARIOS[self.scenario].options[self.option])


@dataclass(frozen=True, slots=True)
class Knob:
    """One alert, the axis that drives it, and how its rule's threshold reads in intensity units."""

    alert: str
    axis: Axis
    designed: float
    threshold: float | None
    """In the rule's units (what ``axis.level`` returns); None when the axis has no level."""
    rules: tuple[Path, ...]

    def threshold_at(self, base: RunState) -> float | None:
        """The intensity at which the model's expected level meets the rule's threshold, at ``base``'s rate.

        None when the level is never reached inside the valid range; the axis's low end
        when healthy traffic alone is already above the threshold (it fires without a fault).
        """
        level = self.axis.level
        if level is None or self.threshold is None:
            return None
        scenario = SCENARIOS[self.axis.scenario]

        def at(x: float) -> float:
            overlay = self.axis.overlay(x, 0.0, 1.0)
            if self.axis.option == "magnitude":
                return level(scenario.apply(base, x, scenario.options))
            return level(scenario.apply(base, 1.0, {**scenario.options, **overlay["options"]}))

        lo, hi = self.axis.low + 1e-12 * max(1.0, self.axis.high), self.axis.high
        if at(lo) > self.threshold:
            return self.axis.low
        if at(hi) <= self.threshold:
            return None
        for _ in range(80):  # bisection: the levels are monotone in the intensity
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if at(mid) <= self.threshold else (lo, mid)
        return hi


ERROR_RATIO = Axis(
    "error ratio",
    "error-rate-warn",
    "ratio",
    "",
    0.0,
    0.5,
    (0.005, 0.0075, 0.01, 0.011, 0.0125, 0.014, 0.015, 0.0175, 0.02, 0.03, 0.04, 0.05, 0.055, 0.06, 0.07, 0.08),
    level=error_ratio,
)
LATENCY_P95 = Axis(
    "latency p95",
    "latency-crit",
    "p95",
    "s",
    0.0,
    60.0,
    (0.3, 0.4, 0.45, 0.5, 0.6, 0.85, 1.2, 1.3, 1.4, 1.5, 1.6, 2.0, 2.5, 3.6),
    level=p95,
    tied={"p50": 0.5},
)
VALIDATION_SHARE = Axis(
    "validation share",
    "validation-spike",
    "share",
    "",
    0.0,
    0.5,
    (0.0005, 0.001, 0.0015, 0.0025, 0.005, 0.01, 0.0125, 0.015, 0.0175, 0.02, 0.05, 0.15),
    level=structured_per_second,
)
SANITIZATION_RATE = Axis(
    "sanitization burst",
    "sanitization-spike",
    "per_second",
    "/s",
    0.0,
    10_000.0,
    (10.0, 20.0, 30.0, 35.0, 40.0, 42.0, 44.0, 45.0, 50.0, 60.0, 80.0),
    level=sanitization_per_second,
)
MIME_MAGNITUDE = Axis("mime-slow magnitude", "mime-slow", "magnitude", "", 0.0, 1.0, (0.2, 0.4, 0.6, 0.8, 0.9, 1.0))

KNOBS: dict[str, Knob] = {
    k.alert: k
    for k in (
        Knob(ERR_WARN, ERROR_RATIO, SCENARIOS["error-rate-warn"].options["ratio"], 0.01, V1),
        Knob(ERR_CRIT, ERROR_RATIO, SCENARIOS["error-rate-crit"].options["ratio"], 0.05, V1),
        Knob(FAST_BURN, ERROR_RATIO, SCENARIOS["error-rate-warn"].options["ratio"], 0.01, V2),
        Knob(SLOW_BURN, ERROR_RATIO, SCENARIOS["error-rate-warn"].options["ratio"], 0.01, V2),
        Knob(LAT_WARN, LATENCY_P95, SCENARIOS["latency-warn"].options["p95"], 0.5, V1),
        Knob(LAT_CRIT, LATENCY_P95, SCENARIOS["latency-crit"].options["p95"], 2.0, V1),
        Knob(VALIDATION, VALIDATION_SHARE, SCENARIOS["validation-spike"].options["share"], 0.1, V1),
        Knob(SANITIZATION, SANITIZATION_RATE, SCENARIOS["sanitization-spike"].options["per_second"], 50.0, V1),
        Knob(MIME, MIME_MAGNITUDE, 1.0, None, V1),
    )
}
"""Every alert the sweep can measure. The controller and metrics-missing alerts have no intensity to sweep."""

DEFAULT_ALERTS = (ERR_WARN, ERR_CRIT, LAT_WARN, LAT_CRIT, VALIDATION, SANITIZATION)
"""The five the issue names, and the latency warning (it shares the latency runs, so it costs nothing)."""
