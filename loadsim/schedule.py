"""Rate schedules: the target send rate as a pure function of run time.

A schedule is a sequence of segments laid end to end. Each segment knows its
rate at a time and the expected number of arrivals over an interval (the
integral of its rate), which is all the arrival process needs. Nothing here
reads a clock: ``t`` is always seconds since the run started, passed in.

The last segment holds past its nominal end (a ramp stays at its final rate, a
diurnal curve keeps cycling), so a run longer than its schedule never falls to
zero by accident.

Worked example (a 10-minute ramp from 1/s to 5/s, then constant 5/s)::

    ramp:     rate(t) = 1 + (5 - 1) * t / 600        for 0 <= t < 600
    integral over [0, 600) = (1 + 5) / 2 * 600 = 1800 expected arrivals
    constant: rate(t) = 5, integral over [600, 660) = 300
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

SECONDS_PER_DAY = 86_400.0
SECONDS_PER_WEEK = 7 * SECONDS_PER_DAY

FloatArray = NDArray[np.float64]


class Segment(Protocol):
    """One piece of a schedule; ``t`` is seconds since the segment started."""

    def rate(self, t: FloatArray) -> FloatArray:
        """Target rate (sends/s) at each time in ``t``."""
        ...

    def at(self, t: float) -> float:
        """Target rate at one time (the scalar twin of :meth:`rate`, cheap per window)."""
        ...

    def integral(self, a: float, b: float) -> float:
        """Expected arrivals in ``[a, b)``: the integral of :meth:`rate`."""
        ...

    def describe(self) -> str:
        """One line for ``loadsim check``."""
        ...


@dataclass(frozen=True, slots=True)
class Constant:
    """A constant rate."""

    per_second: float

    def rate(self, t: FloatArray) -> FloatArray:
        return np.full_like(t, self.per_second, dtype=np.float64)

    def at(self, t: float) -> float:  # noqa: ARG002 - constant
        return self.per_second

    def integral(self, a: float, b: float) -> float:
        return self.per_second * (b - a)

    def describe(self) -> str:
        return f"constant {self.per_second:g}/s"


@dataclass(frozen=True, slots=True)
class Ramp:
    """A straight line from ``start`` to ``end`` over ``seconds``; holds ``end`` after."""

    start: float
    end: float
    seconds: float

    def rate(self, t: FloatArray) -> FloatArray:
        frac = np.clip(t / self.seconds, 0.0, 1.0)
        return self.start + (self.end - self.start) * frac

    def at(self, t: float) -> float:
        return self.start + (self.end - self.start) * min(max(t / self.seconds, 0.0), 1.0)

    def integral(self, a: float, b: float) -> float:
        # Exact: the rate is linear inside the ramp and constant after it.
        def cumulative(x: float) -> float:
            inside = min(max(x, 0.0), self.seconds)
            slope = (self.end - self.start) / self.seconds
            area = self.start * inside + 0.5 * slope * inside * inside
            return area + self.end * max(x - self.seconds, 0.0)

        return cumulative(b) - cumulative(a)

    def describe(self) -> str:
        return f"ramp {self.start:g}/s -> {self.end:g}/s over {self.seconds:g}s"


@dataclass(frozen=True, slots=True)
class Steps:
    """A staircase: ``rates[i]`` for ``step`` seconds each; holds the last rate after."""

    rates: tuple[float, ...]
    step: float

    def rate(self, t: FloatArray) -> FloatArray:
        idx = np.clip((t // self.step).astype(np.int64), 0, len(self.rates) - 1)
        return np.asarray(self.rates, dtype=np.float64)[idx]

    def at(self, t: float) -> float:
        return self.rates[min(max(int(t // self.step), 0), len(self.rates) - 1)]

    def integral(self, a: float, b: float) -> float:
        total = 0.0
        i = max(int(a // self.step), 0)
        x = a
        while x < b:
            edge = (i + 1) * self.step if i < len(self.rates) - 1 else math.inf
            upper = min(edge, b)
            total += self.rates[min(i, len(self.rates) - 1)] * (upper - x)
            x = upper
            i += 1
        return total

    def describe(self) -> str:
        return f"steps {', '.join(f'{r:g}/s' for r in self.rates)} every {self.step:g}s"


@dataclass(frozen=True, slots=True)
class Diurnal:
    """A daily curve with a business-hours peak and a weekend factor.

    ``rate = trough + (peak - trough) * day_factor * shape(hour)`` where
    ``shape(h) = ((1 + cos(2*pi*(h - peak_hour)/24)) / 2) ** sharpness`` is 1 at
    ``peak_hour`` and 0 twelve hours away, and ``day_factor`` is 1 on weekdays and
    ``weekend_factor`` on Saturday and Sunday. The trough is the floor: with
    trough 1.2/s, peak 6/s, peak hour 14 and sharpness 2, the rate is 6/s at
    14:00, 3.9/s at 10:00 and 18:00, and 1.2/s at 02:00.

    ``week_offset`` is seconds since Monday 00:00 at the segment's start, so the
    curve follows the calendar of the run (fixed for virtual runs, the real
    start time for wall-clock runs).
    """

    trough: float
    peak: float
    peak_hour: float
    sharpness: float
    weekend_factor: float
    week_offset: float

    def rate(self, t: FloatArray) -> FloatArray:
        week_t = np.mod(t + self.week_offset, SECONDS_PER_WEEK)
        hour = np.mod(week_t, SECONDS_PER_DAY) / 3600.0
        weekend = week_t >= 5 * SECONDS_PER_DAY
        day_factor = np.where(weekend, self.weekend_factor, 1.0)
        shape = ((1.0 + np.cos(2.0 * np.pi * (hour - self.peak_hour) / 24.0)) / 2.0) ** self.sharpness
        return self.trough + (self.peak - self.trough) * day_factor * shape

    def at(self, t: float) -> float:
        week_t = math.fmod(t + self.week_offset, SECONDS_PER_WEEK)
        hour = math.fmod(week_t, SECONDS_PER_DAY) / 3600.0
        day_factor = self.weekend_factor if week_t >= 5 * SECONDS_PER_DAY else 1.0
        shape: float = ((1.0 + math.cos(2.0 * math.pi * (hour - self.peak_hour) / 24.0)) / 2.0) ** self.sharpness
        return self.trough + (self.peak - self.trough) * day_factor * shape

    def integral(self, a: float, b: float) -> float:
        # Composite Simpson on pieces of at most 5 minutes: the curve is smooth
        # within a day, and the weekday/weekend edge falls on a piece boundary
        # often enough that the error stays far below Poisson noise. One piece
        # (the common case: one engine window) is done in scalar arithmetic.
        if b <= a:
            return 0.0
        if b - a <= 300.0:
            return (b - a) / 6.0 * (self.at(a) + 4.0 * self.at(0.5 * (a + b)) + self.at(b))
        pieces = max(1, math.ceil((b - a) / 300.0))
        xs = np.linspace(a, b, 2 * pieces + 1)
        ys = self.rate(xs)
        h = (b - a) / (2 * pieces)
        return float(h / 3.0 * (ys[0] + ys[-1] + 4.0 * ys[1:-1:2].sum() + 2.0 * ys[2:-1:2].sum()))

    def describe(self) -> str:
        return (
            f"diurnal {self.trough:g}/s .. {self.peak:g}/s, peak at {self.peak_hour:g}h, "
            f"weekend x{self.weekend_factor:g}"
        )


@dataclass(frozen=True, slots=True)
class Placed:
    """A segment with its place on the run's time line."""

    start: float
    end: float  # math.inf for the last segment
    segment: Segment


class Schedule:
    """Segments laid end to end; the last one holds for the rest of the run."""

    def __init__(self, segments: Sequence[tuple[Segment, float | None]]) -> None:
        """``segments`` are ``(segment, seconds)``; ``seconds`` may be None only for the last."""
        if not segments:
            msg = "a schedule needs at least one segment"
            raise ValueError(msg)
        placed: list[Placed] = []
        start = 0.0
        for i, (seg, seconds) in enumerate(segments):
            last = i == len(segments) - 1
            if seconds is None and not last:
                msg = f"segment {i} needs a duration (only the last may run open-ended)"
                raise ValueError(msg)
            end = math.inf if last else start + float(seconds or 0.0)
            placed.append(Placed(start, end, seg))
            start = end
        self.placed: tuple[Placed, ...] = tuple(placed)

    def rate(self, t: FloatArray | float) -> FloatArray:
        """Target rate at each run time in ``t``."""
        ts = np.atleast_1d(np.asarray(t, dtype=np.float64))
        out = np.zeros_like(ts)
        for p in self.placed:
            mask = (ts >= p.start) & (ts < p.end)
            if mask.any():
                out[mask] = p.segment.rate(ts[mask] - p.start)
        return out

    def at(self, t: float) -> float:
        """Target rate at one run time."""
        for p in self.placed:
            if p.start <= t < p.end:
                return p.segment.at(t - p.start)
        return 0.0

    def expected(self, t0: float, t1: float) -> float:
        """Expected arrivals in ``[t0, t1)`` of run time."""
        total = 0.0
        for p in self.placed:
            a, b = max(t0, p.start), min(t1, p.end)
            if b > a:
                total += p.segment.integral(a - p.start, b - p.start)
        return total

    def describe(self) -> list[str]:
        """One line per segment, with its place on the time line."""
        lines = []
        for p in self.placed:
            end = "end of run" if math.isinf(p.end) else f"{p.end:g}s"
            lines.append(f"{p.start:g}s .. {end}: {p.segment.describe()}")
        return lines
