"""The daily and weekly shape: hourly send counts fitted to the profile's diurnal segment, or replayed hour by hour.

The diurnal segment (:class:`loadsim.schedule.Diurnal`) has five parameters: trough,
peak, peak hour, sharpness and weekend factor. Its expected sends in an hour are the
integral of its rate over the hour, evaluated with the schedule's own code on the
window's calendar, so the fitted values are the ones a run would use. Sends per hour
are Poisson under the model (arrivals are), so the fit is a Poisson maximum likelihood;
standard errors come from the Fisher information, inflated by the Pearson dispersion
when the counts vary more than Poisson (quasi-Poisson), so that a curve that fits
worse than the model claims gets wider error bars, not false precision.

When the diurnal form fits poorly (its Pearson test below :data:`~.estimate.POOR_P`),
``auto`` writes the hours as they were instead: a ``steps`` segment of one rate per
hour, which reproduces the window's curve (its incidents included) rather than a shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from loadsim.calibrate import mle
from loadsim.calibrate.estimate import Estimate, Goodness, Row, held
from loadsim.calibrate.goodness import pearson
from loadsim.calibrate.read import HOUR, Window, iso
from loadsim.plan import build_schedule
from loadsim.profile import DiurnalSpec, SegmentSpec, StepsSpec
from loadsim.schedule import SECONDS_PER_DAY, SECONDS_PER_WEEK, Diurnal

Shape = Literal["auto", "diurnal", "hourly"]
MIN_DIURNAL_SECONDS = SECONDS_PER_DAY
"""A diurnal fit needs at least one whole day: the peak hour and sharpness are a day's shape."""
MIN_HOURLY_RATE = 1e-6
"""A profile's rates must be positive; an hour with no sends is written as this (sends/s)."""
GRID = 60
"""Points per hour where the curve is evaluated (each minute's midpoint)."""

FloatArray = NDArray[np.float64]
NAMES = ("trough", "peak", "peak_hour", "sharpness", "weekend_factor")
UNITS = ("/s", "/s", "h", "", "")


@dataclass(frozen=True)
class RateFit:
    """The schedule a calibrated profile runs, and how well it matches the hours."""

    shape: Literal["diurnal", "hourly"]
    why: str
    segment: SegmentSpec
    estimates: list[Estimate]
    goodness: Goodness
    expected: FloatArray
    """Fitted sends per hour of the window (NaN hours included)."""
    curve: tuple[FloatArray, FloatArray]
    """Unix times and fitted rates (sends/s) every 5 minutes, for the plot."""


def fit(window: Window, shape: Shape) -> RateFit:
    """Fit ``shape`` to the window's hours (``auto``: diurnal, or hourly where it fits poorly)."""
    if shape == "hourly":
        return _hourly(window, "asked for (--shape hourly)")
    diurnal = _diurnal(window)
    if shape == "auto" and diurnal.goodness.poor:
        return _hourly(window, f"the diurnal form fits poorly ({diurnal.goodness.verdict()})")
    return diurnal


class _Curve:
    """Expected sends per hour of a diurnal curve on the window's calendar."""

    def __init__(self, window: Window) -> None:
        self.start = float(window.start)
        placed = build_schedule([DiurnalSpec(kind="diurnal", trough=1.0, peak=1.0)], self.start).placed[0].segment
        assert isinstance(placed, Diurnal)
        self.week_offset = placed.week_offset
        offsets = (np.arange(GRID, dtype=np.float64) + 0.5) * (HOUR / GRID)
        self.grid = (window.hour_starts - self.start)[:, None] + offsets[None, :]
        self.keep = ~np.isnan(window.hourly_sends)
        self.counts = window.hourly_sends[self.keep]

    def segment(self, theta: FloatArray) -> Diurnal:
        trough, peak, peak_hour, sharpness, weekend = (float(x) for x in theta)
        return Diurnal(trough, peak, peak_hour, sharpness, weekend, self.week_offset)

    def all_hours(self, theta: FloatArray) -> FloatArray:
        return np.asarray(self.segment(theta).rate(self.grid).mean(axis=1) * HOUR, dtype=np.float64)

    def __call__(self, theta: FloatArray) -> FloatArray:
        return self.all_hours(theta)[self.keep]


def _diurnal(window: Window) -> RateFit:
    curve = _Curve(window)
    y = curve.counts
    week_t = np.mod(window.hour_starts + HOUR / 2 + 3 * SECONDS_PER_DAY, SECONDS_PER_WEEK)[curve.keep]
    hour_of_day = np.floor(np.mod(week_t, SECONDS_PER_DAY) / HOUR)
    weekend = week_t >= 5 * SECONDS_PER_DAY
    rate = y / HOUR
    has_weekend, has_weekday = bool(weekend.any()), bool((~weekend).any())
    typical = ~weekend if has_weekday else np.ones_like(weekend)
    trough0 = max(float(np.quantile(rate, 0.05)), 1e-4)
    by_hour = np.array(
        [
            float(rate[typical & (hour_of_day == h)].mean()) if np.any(typical & (hour_of_day == h)) else 0.0
            for h in range(24)
        ]
    )
    peak_hour0 = float(np.argmax(by_hour)) + 0.5
    peak0 = max(float(by_hour.max()), trough0 * 1.01)
    fixed_weekend = None
    if has_weekend and has_weekday:
        weekend0 = float(np.clip((rate[weekend].max() - trough0) / max(peak0 - trough0, 1e-9), 0.02, 2.0))
    else:
        # Weekdays and weekends both needed to tell the factor from the peak: held at the model's default.
        fixed_weekend = float(DiurnalSpec.model_fields["weekend_factor"].default)
        weekend0 = fixed_weekend

    def natural(x: FloatArray) -> FloatArray:
        trough = math.exp(x[0])
        weekend_factor = fixed_weekend if fixed_weekend is not None else math.exp(x[4])
        return np.array([trough, trough + math.exp(x[1]), x[2], math.exp(x[3]), weekend_factor])

    def objective(x: FloatArray) -> float:
        if not np.all(np.isfinite(x)) or abs(x[2] - peak_hour0) > 12 or abs(x[3]) > 5:
            return math.inf
        return mle.poisson_deviance(y, curve(natural(x)))

    starts = [
        np.array([math.log(trough0), math.log(peak0 - trough0), peak_hour0, math.log(s), math.log(weekend0)])
        for s in (1.0, 2.5)
    ]
    theta = natural(mle.minimise(objective, starts))
    theta[2] = theta[2] % 24.0
    expected_all = curve.all_hours(theta)
    expected = expected_all[curve.keep]
    pearson_x2 = float(np.sum((y - expected) ** 2 / expected))
    free = 5 if fixed_weekend is None else 4
    dispersion = pearson_x2 / max(len(y) - free, 1)
    if fixed_weekend is None:
        se = mle.standard_errors(curve, theta, dispersion)
    else:
        se4 = mle.standard_errors(lambda t: curve(np.append(t, fixed_weekend)), theta[:4], dispersion)
        se = np.append(se4, np.nan)
    how = "Poisson MLE, Fisher information" + (f" x dispersion {dispersion:.2f}" if dispersion > 1 else "")
    estimates = [
        Estimate(f"schedule.diurnal.{name}", float(value), float(s), unit, how)
        for name, value, s, unit in zip(NAMES[:4], theta[:4], se[:4], UNITS[:4], strict=True)
    ]
    if fixed_weekend is None:
        estimates.append(Estimate("schedule.diurnal.weekend_factor", float(theta[4]), float(se[4]), "", how))
    else:
        why = "no weekend hour in the window" if not has_weekend else "no weekday hour in the window"
        estimates.append(held("schedule.diurnal.weekend_factor", fixed_weekend, "", why))
    spec = DiurnalSpec(
        kind="diurnal",
        trough=float(theta[0]),
        peak=float(theta[1]),
        peak_hour=float(theta[2]),
        sharpness=float(theta[3]),
        weekend_factor=float(theta[4]),
    )
    excess = math.sqrt(max(0.0, float(np.sum((y - expected) ** 2 - expected)) / float(np.sum(expected**2))))
    goodness = pearson(
        "sends per hour (diurnal)",
        _rows(window, expected_all),
        free,
        f"hourly misfit beyond Poisson noise {excess:.1%} RMS",
        total_fixed=False,
    )
    return RateFit(
        "diurnal",
        "the diurnal form fits" if not goodness.poor else "asked for (--shape diurnal), though it fits poorly",
        spec,
        estimates,
        goodness,
        expected_all,
        _curve_points(window, curve.segment(theta)),
    )


def _hourly(window: Window, why: str) -> RateFit:
    counts = np.nan_to_num(window.hourly_sends, nan=0.0)
    rates = [max(float(n) / HOUR, MIN_HOURLY_RATE) for n in counts]
    spec = StepsSpec(kind="steps", rates=rates, step=HOUR)
    total = float(counts.sum())
    estimates = [
        Estimate(
            "schedule.steps.rates",
            total / (len(counts) * HOUR),
            math.sqrt(total) / (len(counts) * HOUR),
            "/s",
            f"{len(counts)} hourly rates, each the hour's sends / 3600 (± sqrt(sends) / 3600); the mean shown",
        )
    ]
    expected = np.array(rates) * HOUR
    goodness = pearson(
        "sends per hour (hourly)",
        _rows(window, expected),
        len(counts),
        "replayed: each hour is its own rate",
        total_fixed=False,
    )
    t = window.hour_starts
    return RateFit(
        "hourly",
        why,
        spec,
        estimates,
        goodness,
        expected,
        (np.repeat(t, 2) + np.tile([0.0, HOUR], len(t)), np.repeat(expected / HOUR, 2)),
    )


def _rows(window: Window, expected: FloatArray) -> tuple[Row, ...]:
    return tuple(
        Row(iso(t)[:13] + "h", float(n), float(e))
        for t, n, e in zip(window.hour_starts, window.hourly_sends, expected, strict=True)
        if not math.isnan(n)
    )


def _curve_points(window: Window, segment: Diurnal) -> tuple[FloatArray, FloatArray]:
    t = np.arange(window.start, window.end + 1.0, 300.0)
    return t, np.asarray(segment.rate(t - window.start), dtype=np.float64)
