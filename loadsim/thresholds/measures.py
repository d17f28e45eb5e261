"""The run's measures at one moment (:class:`Sample`), and one threshold's value between two moments.

Every measure is kept cumulative, so the value over any stretch of run time is the
difference of two samples: the whole run is ``(None, end)``, a window ``(start, end)``.
Latency is a histogram of counts per bucket (:class:`Histogram`) for the same reason: the
counts of a window are the difference of two snapshots, and a quantile of them costs one
``cumsum`` and one ``searchsorted``, whatever the run's length.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from loadsim.thresholds.expr import Threshold


@dataclass(frozen=True, slots=True)
class Histogram:
    """Latency counts per bucket, and the value (seconds) each bucket reports.

    ``hdr`` picks HdrHistogram's rule for the rank of a quantile (``int(q * n + 0.5)``, at
    least 1) over the summary histogram's (the first bucket whose cumulative count reaches
    ``q * n``), so a whole-run quantile here is the value each driver's summary reports.
    """

    counts: NDArray[np.int64]
    values: NDArray[np.float64]
    hdr: bool = False

    def frozen(self) -> Histogram:
        """A copy of the counts (a sample may hold a view of live ones)."""
        return Histogram(self.counts.astype(np.int64, copy=True), self.values, self.hdr)

    def since(self, start: Histogram | None) -> NDArray[np.int64]:
        """Counts added after ``start`` (all of them when None)."""
        counts = self.counts.astype(np.int64, copy=False)
        return counts if start is None else counts - start.counts.astype(np.int64, copy=False)

    def quantile(self, q: float, start: Histogram | None = None) -> float:
        """The ``q`` quantile of what was added after ``start``; NaN when nothing was."""
        cumulative = np.cumsum(self.since(start))
        total = int(cumulative[-1]) if len(cumulative) else 0
        if total <= 0:
            return math.nan
        rank = max(int(q * total + 0.5), 1) if self.hdr else q * total
        i = int(np.searchsorted(cumulative, rank, side="left"))
        return float(self.values[min(i, len(self.values) - 1)])

    def maximum(self, start: Histogram | None = None) -> float:
        """The highest bucket with counts added after ``start``; NaN when none."""
        nonzero = np.flatnonzero(self.since(start))
        return float(self.values[nonzero[-1]]) if len(nonzero) else math.nan


@dataclass(frozen=True, slots=True)
class Sample:
    """The run's cumulative measures at run time ``t``."""

    t: float
    expected: float
    """Arrivals the schedule expects over ``[0, t)``."""
    scheduled: int = 0
    started: int = 0
    dropped: int = 0
    finished: int = 0
    """Sends (requests) with an outcome: the base of reason rates."""
    errors: int = 0
    error_base: int = 0
    """What the error ratio divides by (each driver's summary says which outcomes count)."""
    reasons: Mapping[str, int] = field(default_factory=dict)
    latency: Mapping[str, Histogram] = field(default_factory=dict)
    """``latency``, and ``latency_intended`` with the HTTP driver."""

    def frozen(self) -> Sample:
        """A sample that no later window changes (histogram counts copied)."""
        latency = {k: h.frozen() for k, h in self.latency.items()}
        return Sample(
            self.t,
            self.expected,
            self.scheduled,
            self.started,
            self.dropped,
            self.finished,
            self.errors,
            self.error_base,
            dict(self.reasons),
            latency,
        )


EMPTY = Sample(0.0, 0.0)


def measure(threshold: Threshold, end: Sample, start: Sample | None = None) -> float:  # noqa: PLR0911 - one line per measure
    """``threshold``'s aggregation over ``(start, end]`` (the whole run when ``start`` is None); NaN: no data."""
    s = start or EMPTY
    family, agg = threshold.family, threshold.aggregation
    if family in ("latency", "latency_intended"):
        h = end.latency.get(family)
        if h is None:
            return math.nan
        h0 = None if start is None else start.latency.get(family)
        return h.maximum(h0) if agg == "max" else h.quantile(threshold.quantile, h0)
    if family == "errors":
        errors = end.errors - s.errors
        return float(errors) if agg == "count" else _ratio(errors, end.error_base - s.error_base)
    if family == "drops":
        dropped = end.dropped - s.dropped
        return float(dropped) if agg == "count" else _ratio(dropped, end.scheduled - s.scheduled)
    if family == "achieved_rate":
        started = end.started - s.started
        if agg == "ratio":
            return _ratio(started, end.expected - s.expected)
        return _ratio(started, end.t - s.t)
    reason = threshold.reason or ""
    n = end.reasons.get(reason, 0) - s.reasons.get(reason, 0)
    return float(n) if agg == "count" else _ratio(n, end.finished - s.finished)


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole > 0 else math.nan
