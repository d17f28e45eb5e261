"""The sweep's statistics: detection proportions with confidence intervals, censored time-to-detect, false-alarm rates.

Intervals come from scipy, not from formulas typed here: ``binomtest(...).proportion_ci``
gives both the Wilson score interval (shown; good coverage near 0 and 1, where
detection curves spend most of their points) and Clopper-Pearson's exact interval
(kept in the JSON; conservative). A false-alarm rate is a Poisson count over the
exposure, with Garwood's exact interval from the chi-squared quantiles.

Time-to-detect is censored at the deadline: a run that never fired has a time
greater than the deadline, not no time. Its quantiles are taken over every run with
those as +inf (nearest rank, no interpolation), so "p90" is the time within which
90% of faults of that size were caught, and it is ``None`` (shown as ``>deadline``)
when fewer than 90% were.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest, chi2

CONFIDENCE = 0.95


@dataclass(frozen=True, slots=True)
class Proportion:
    """``k`` of ``n``, with Wilson and Clopper-Pearson intervals."""

    k: int
    n: int
    low: float
    high: float
    exact_low: float
    exact_high: float

    @property
    def p(self) -> float:
        """The point estimate k/n."""
        return self.k / self.n if self.n else math.nan


def proportion(k: int, n: int, confidence: float = CONFIDENCE) -> Proportion:
    """``k`` successes of ``n`` trials with their intervals."""
    if n == 0:
        return Proportion(0, 0, math.nan, math.nan, math.nan, math.nan)
    test = binomtest(k, n)
    wilson = test.proportion_ci(confidence, method="wilson")
    exact = test.proportion_ci(confidence, method="exact")
    return Proportion(k, n, float(wilson.low), float(wilson.high), float(exact.low), float(exact.high))


def censored_quantile(times: Sequence[float | None], q: float) -> float | None:
    """The ``q`` quantile of times where None is "not by the deadline" (+inf); None if it is past the deadline."""
    if not times:
        return None
    values = np.array([math.inf if t is None else t for t in times], dtype=np.float64)
    value = float(np.quantile(values, q, method="inverted_cdf"))
    return None if math.isinf(value) else value


@dataclass(frozen=True, slots=True)
class Rate:
    """Events per day over an exposure, with Garwood's exact interval."""

    events: int
    days: float
    low: float
    high: float

    @property
    def per_day(self) -> float:
        """The point estimate."""
        return self.events / self.days if self.days else math.nan


def poisson_rate(events: int, days: float, confidence: float = CONFIDENCE) -> Rate:
    """``events`` over ``days`` of exposure."""
    alpha = 1 - confidence
    low = 0.0 if events == 0 else float(chi2.ppf(alpha / 2, 2 * events)) / 2
    high = float(chi2.ppf(1 - alpha / 2, 2 * events + 2)) / 2
    return Rate(events, days, low / days, high / days)


@dataclass(frozen=True, slots=True)
class Crossing:
    """Where a detection curve reaches a level: an estimate, and the grid points that bracket it."""

    estimate: float | None
    """Linear interpolation of the observed proportions between the two points around the level."""
    low: float | None
    """The highest intensity swept whose whole interval lies below the level (None: none does)."""
    high: float | None
    """The lowest intensity swept whose whole interval lies at or above the level (None: none does)."""
    below_grid: bool = False
    """The curve is already at the level at the lowest intensity swept."""


def crossing(xs: Sequence[float], points: Sequence[Proportion], level: float = 0.9) -> Crossing:
    """The intensity at which detection reaches ``level``, with a confidence interval.

    The interval is read off the grid, not interpolated: below ``low`` every point's
    interval lies under the level and from ``high`` on every point's lies above it, so
    (for a curve that rises with intensity) the level is crossed in ``(low, high]`` with
    at least the intervals' confidence. Interpolating the bands instead would assume the
    curve is linear between grid points, which a detection curve (a step blurred by noise)
    is not; a finer ``--intensity`` grid narrows this interval honestly.
    """
    below = [x for x, p in zip(xs, points, strict=True) if p.high < level]
    above = [x for x, p in zip(xs, points, strict=True) if p.low >= level]
    last_below = max(below) if below else None
    first_above = min((x for x in above if last_below is None or x > last_below), default=None)
    return Crossing(
        estimate=_first_crossing(xs, [p.p for p in points], level),
        low=last_below,
        high=first_above,
        below_grid=bool(points) and points[0].p >= level,
    )


def _first_crossing(xs: Sequence[float], ys: Sequence[float], level: float) -> float | None:
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        if y >= level:
            if i == 0:
                return x
            x0, y0 = xs[i - 1], ys[i - 1]
            return x0 + (x - x0) * (level - y0) / (y - y0)
    return None


def monotone_within(points: Sequence[Proportion]) -> list[int]:
    """Indices where the curve falls by more than its intervals allow (a later point's band lies wholly below).

    Empty for a curve that is non-decreasing within its confidence intervals.
    """
    return [i for i in range(1, len(points)) if any(points[i].high < points[j].low for j in range(i))]
