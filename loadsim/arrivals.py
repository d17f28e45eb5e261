"""Arrival processes: when sends start, drawn window by window from a schedule.

An arrival process turns the schedule's expected count over a window into
concrete start times. It never looks at completions (open model): how many
sends start depends on the schedule and the random stream alone.

* ``poisson``: the count in a window is Poisson with mean ``schedule.expected``;
  the times are uniform inside the window. Start times are returned unsorted
  because nothing downstream needs them in order, and sorting would cost more
  than everything else per send.
* ``even``: one arrival each time the cumulative expected count crosses a whole
  number, so a constant 2/s gives arrivals exactly 0.5 s apart and the count
  over any window is within one of its expectation.
"""

from __future__ import annotations

import math
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from loadsim.schedule import Schedule


class ArrivalKind(StrEnum):
    """How arrivals are spread in time."""

    POISSON = "poisson"
    EVEN = "even"


class Arrivals:
    """Draws start times window by window; windows must be consecutive."""

    def __init__(self, schedule: Schedule, kind: ArrivalKind, rng: np.random.Generator) -> None:
        self.schedule = schedule
        self.kind = kind
        self.rng = rng
        self.cumulative_expected = 0.0
        """Expected arrivals since the run's start; the phase of ``even`` arrivals."""

    def count(self, t0: float, t1: float, scale: float = 1.0) -> int:
        """How many arrivals fall in ``[t0, t1)``, without their times (a window dropped unsampled).

        ``even`` arrivals keep their phase exactly as :meth:`draw` would; a Poisson window
        draws its count alone (no times), so its random stream moves on by less.
        """
        expected = self.schedule.expected(t0, t1) * scale
        start_l = self.cumulative_expected
        self.cumulative_expected += expected
        if expected <= 0.0:
            return 0
        if self.kind is ArrivalKind.POISSON:
            return int(self.rng.poisson(expected))
        return max(0, math.ceil(self.cumulative_expected - 1e-9) - math.ceil(start_l - 1e-9))

    def draw(self, t0: float, t1: float, scale: float = 1.0) -> NDArray[np.float64]:
        """Start times in ``[t0, t1)``; ``scale`` multiplies the schedule (overlays such as a traffic drop)."""
        expected = self.schedule.expected(t0, t1) * scale
        start_l = self.cumulative_expected
        self.cumulative_expected += expected
        if expected <= 0.0:
            return np.empty(0, dtype=np.float64)
        width = t1 - t0
        if self.kind is ArrivalKind.POISSON:
            n = int(self.rng.poisson(expected))
            return t0 + self.rng.random(n) * width
        # The cumulative sum of window integrals drifts by float rounding (50 x 100 windows can
        # give 5000.0000001); a tolerance keeps whole-number crossings where they belong.
        first = math.ceil(start_l - 1e-9)
        last = math.ceil(self.cumulative_expected - 1e-9)  # exclusive
        k = np.arange(first, last, dtype=np.float64)
        return t0 + (k - start_l) / expected * width
