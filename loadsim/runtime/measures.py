"""The run's measures for thresholds and the live view, read from whichever driver the run has.

Each driver keeps its outcomes its own way (the simulated driver in a
:class:`~loadsim.sinks.summary.RunSummary`, the HTTP driver in HdrHistograms and a tally
of results); :func:`sample_reader` turns either into the same cumulative
:class:`~loadsim.thresholds.Sample`. Histogram counts are read as views, not copied: a
sample costs a few attribute reads, and only the samples a judge keeps are copied.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from loadsim.model import catalog
from loadsim.runtime.factory import Run
from loadsim.sinks.summary import LatencyQuantiles, RunSummary
from loadsim.thresholds import Histogram, Sample

Reader = Callable[[float], Sample]
"""The run's cumulative sample at run time ``t``."""

SIM_REASONS = frozenset({c.name for c in catalog.CLASSES} | {c.reason for c in catalog.CLASSES if c.reason})
"""What ``reason.NAME`` may name with the simulated driver: a relay reason label or an outcome class."""
HTTP_RESULTS = (
    "2xx",
    "5xx",
    "timeout",
    "connection_error",
    "stale_connection",
    "truncated",
    "oversize",
    "abandoned",
    "render_error",
)
"""HTTP result classes ``reason.NAME`` may name, besides ``4xx_NNN`` and ``status_NNN``."""


def reason_problem(name: str, *, http: bool) -> str | None:
    """Why ``reason.NAME`` names nothing the driver counts (None when it does)."""
    if http:
        if name in HTTP_RESULTS or re.fullmatch(r"(?:4xx|status)_[0-9]{3}", name):
            return None
        return f"unknown HTTP result {name!r}; expected one of: {', '.join(HTTP_RESULTS)}, 4xx_NNN, status_NNN"
    if name in SIM_REASONS:
        return None
    return f"unknown reason {name!r}; expected one of: {', '.join(sorted(SIM_REASONS))}"


_SIM_ERROR_REASONS = frozenset(c.reason for c in catalog.CLASSES if c.reason)


def error_reasons(run: Run) -> Callable[[str], bool]:
    """Which names in a sample's reasons are kinds of error, to list in the live view."""
    if run.summary is not None:
        return _SIM_ERROR_REASONS.__contains__
    return lambda name: name != "2xx"


def sample_reader(run: Run) -> Reader:
    """How to read ``run``'s sample: from its summary (simulated driver) or its HTTP results."""
    if run.summary is not None:
        return _SimReader(run, run.summary)
    return _HttpReader(run)


class _SimReader:
    def __init__(self, run: Run, summary: RunSummary) -> None:
        self.engine = run.engine
        self.summary = summary
        self.values = LatencyQuantiles.values()
        self._names = [(c.name, c.reason) for c in catalog.CLASSES]

    def __call__(self, t: float) -> Sample:
        c = self.engine.counts
        classes = self.summary.class_counts
        executions = int(classes[catalog.IS_EXECUTION].sum())
        finished = int(classes.sum())
        reasons: dict[str, int] = {}
        for (name, reason), n in zip(self._names, classes.tolist(), strict=True):
            reasons[name] = n
            if reason and reason != name:
                reasons[reason] = reasons.get(reason, 0) + n
        return Sample(
            t=t,
            expected=self.engine.plan.expected_sends(0.0, t),
            scheduled=c.scheduled,
            started=c.started,
            dropped=c.dropped + c.behind,  # not started: at max_in_flight, or the machine behind
            finished=finished,
            # The summary's error ratio: every outcome but ok, over executions (see RunSummary.to_dict).
            errors=finished - int(classes[catalog.OK]),
            error_base=executions,
            reasons=reasons,
            latency={"latency": Histogram(self.summary.latency.counts, self.values)},
        )


class _HttpReader:
    def __init__(self, run: Run) -> None:
        driver: Any = run.driver  # the HTTP driver: its results are its own, not the engine's interface
        self.engine = run.engine
        self.driver = driver
        self.values = hdr_values(driver.results.actual)

    def __call__(self, t: float) -> Sample:
        c = self.engine.counts
        results = self.driver.results
        tally = dict(results.results)
        finished = sum(n for k, n in tally.items() if k != "abandoned")
        errors = sum(n for k, n in tally.items() if k not in ("2xx", "abandoned"))
        latency = {}
        for name, h in (("latency", results.actual), ("latency_intended", results.intended)):
            counts = hdr_counts(h)
            if counts is not None:
                latency[name] = Histogram(counts, self.values, hdr=True)
        return Sample(
            t=t,
            expected=self.engine.plan.expected_sends(0.0, t),
            scheduled=c.scheduled,
            started=c.started,
            dropped=c.dropped + c.behind,  # not started: at max_in_flight, or the machine behind
            finished=finished,
            errors=errors,
            error_base=finished,
            reasons=tally,
            latency=latency,
        )


def hdr_counts(h: Any) -> NDArray[np.int64] | None:
    """An HdrHistogram's counts as a numpy view (None if its layout is not the expected one)."""
    try:
        view = np.ctypeslib.as_array(h.counts)
    except (TypeError, ValueError, AttributeError):
        return None
    if view.ndim != 1 or len(view) != h.counts_len:
        return None
    return view.view(np.int64) if view.dtype == np.uint64 else None


def hdr_values(h: Any) -> NDArray[np.float64]:
    """What ``get_value_at_percentile`` reports for each counts index, in seconds (the histogram records us).

    HdrHistogram's own formulas (``get_value_from_index``, then ``get_highest_equivalent_value``),
    in numpy: one array for the run instead of a Python loop over 20,000 buckets per quantile.
    """
    index = np.arange(h.counts_len, dtype=np.int64)
    bucket = (index >> h.sub_bucket_half_count_magnitude) - 1
    sub = (index & (h.sub_bucket_half_count - 1)) + h.sub_bucket_half_count
    first = bucket < 0
    sub[first] -= h.sub_bucket_half_count
    bucket[first] = 0
    lowest = sub << (bucket + h.unit_magnitude)
    highest = lowest + (np.int64(1) << (bucket + h.unit_magnitude)) - 1
    return np.asarray(highest, dtype=np.float64) / 1e6
