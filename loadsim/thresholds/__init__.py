"""Thresholds: pass/fail criteria over a run's own measures, as k6 users write them.

The public surface is listed here; the modules behind it are:

* :mod:`~loadsim.thresholds.expr`: the expressions (``p(95)<500ms every 5m``) and the measures they name;
* :mod:`~loadsim.thresholds.measures`: a run's cumulative measures at one moment, and a value between two;
* :mod:`~loadsim.thresholds.judge`: judging while the run goes (windows, ``abort_on_fail``) and at its end.
"""

from __future__ import annotations

from loadsim.thresholds.expr import METRICS, Metric, Threshold, metric_problem, parse_option, parse_threshold
from loadsim.thresholds.judge import EXIT_THRESHOLDS, Judge, Verdict, format_value, from_summary
from loadsim.thresholds.measures import Histogram, Sample, measure

__all__ = [
    "EXIT_THRESHOLDS",
    "METRICS",
    "Histogram",
    "Judge",
    "Metric",
    "Sample",
    "Threshold",
    "Verdict",
    "format_value",
    "from_summary",
    "measure",
    "metric_problem",
    "parse_option",
    "parse_threshold",
]
