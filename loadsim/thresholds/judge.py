"""Judging thresholds while a run goes (windows, ``abort_on_fail``) and at its end (:class:`Verdict`).

:class:`Judge` is driven by run time alone: the engine calls :meth:`Judge.after_window`
with the run time reached, and the judge reads a :class:`~loadsim.thresholds.measures.Sample`
when it needs one. So the same code judges a wall-clock run and a 48-hour virtual one,
and its tests step it on a virtual clock.

* A windowed threshold (``every 5m``) is measured over each whole window of run time
  ``[k*W, (k+1)*W)`` as the run crosses its end; it fails if any window fails, and reports
  its worst window. A run shorter than one window is judged as one window. Windows with
  no data (no sends finished, no latency) are skipped: a lull is not a failure.
* A threshold over the whole run is measured on the cumulative sample.
* ``abort_on_fail``: after every window whose run time is at least ``delay_abort_eval``,
  the cumulative value (or, for a windowed threshold, the last whole window) is checked;
  the first failure calls ``on_abort`` once. The run stops at that window, so within the
  delay plus one tick of the moment the threshold fails.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loadsim.thresholds.expr import Threshold
from loadsim.thresholds.measures import Sample, measure

EXIT_THRESHOLDS = 99
"""Exit code when any threshold failed (k6's, so CI scripts written for k6 gate the same way)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether one threshold held, and what was measured."""

    threshold: Threshold
    ok: bool
    value: float
    """The whole run's value, or the worst window's; NaN when there was no data."""
    windows: int = 0
    """Windows judged (windowed thresholds)."""
    failed_windows: int = 0
    worst_window: float | None = None
    """Run time at which the worst window started."""

    @property
    def shown(self) -> str:
        """The measured value as a person reads it: ``p(95)=612ms``, ``rate=0.31%``."""
        return f"{self.threshold.aggregate}={format_value(self.threshold, self.value)}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for the run summary (NaN as null)."""
        out = self.threshold.to_dict()
        out |= {"ok": self.ok, "value": None if math.isnan(self.value) else self.value}
        if self.threshold.window is not None:
            out |= {
                "windows": self.windows,
                "failed_windows": self.failed_windows,
                "worst_window_start": self.worst_window,
            }
        return out


def from_summary(thresholds: Sequence[Threshold], summary: Mapping[str, Any]) -> list[Verdict]:
    """The verdicts a run summary carries, back as :class:`Verdict` (for the end-of-run table and exit code)."""
    out = []
    for th, d in zip(thresholds, summary.get("thresholds", ()), strict=False):
        value = math.nan if d.get("value") is None else float(d["value"])
        out.append(
            Verdict(
                th, bool(d["ok"]), value, d.get("windows", 0), d.get("failed_windows", 0), d.get("worst_window_start")
            )
        )
    return out


def format_value(threshold: Threshold, value: float) -> str:
    """A measured value in the threshold's own units."""
    if math.isnan(value):
        return "no data"
    family, agg = threshold.family, threshold.aggregation
    if family.startswith("latency"):
        return f"{value * 1000:.0f}ms" if value < 10 else f"{value:.2f}s"
    if agg in ("rate", "ratio"):
        return f"{value * 100:.3g}%"
    if agg == "value":
        return f"{value:.4g}/s"
    return f"{value:,.0f}"


@dataclass(slots=True)
class _Window:
    """One window length's progress: where the current window started, and its sample there."""

    length: float
    start: Sample


@dataclass(slots=True)
class _Tally:
    """A windowed threshold's windows so far."""

    windows: int = 0
    failed: int = 0
    worst: float = math.nan
    worst_at: float | None = None
    last_failed: bool = False


class Judge:
    """Judges ``thresholds`` over a run; feed it :meth:`after_window`, read :meth:`verdicts` at the end."""

    def __init__(
        self,
        thresholds: Sequence[Threshold],
        read: Callable[[float], Sample],
        *,
        on_abort: Callable[[Verdict], None] | None = None,
    ) -> None:
        self.thresholds = tuple(thresholds)
        self.read = read
        """Reads the run's cumulative sample at run time ``t`` (views are fine: the judge copies what it keeps)."""
        self.on_abort = on_abort
        self.aborted: Verdict | None = None
        """The threshold that stopped the run, if one did."""
        zero = read(0.0).frozen() if self.thresholds else None
        lengths = sorted({th.window for th in self.thresholds if th.window is not None})
        self._windows = {w: _Window(w, zero) for w in lengths if zero is not None}
        self._tallies = {i: _Tally() for i, th in enumerate(self.thresholds) if th.window is not None}
        self._abortable = [i for i, th in enumerate(self.thresholds) if th.abort_on_fail]

    def after_window(self, t: float, *_: object) -> None:
        """The run reached run time ``t``: close the windows that ended, then check abort thresholds."""
        if not self.thresholds:
            return
        sample: Sample | None = None
        for window in self._windows.values():
            if t >= window.start.t + window.length:
                sample = sample or self.read(t).frozen()
                self._close(window, sample)
        if self.aborted is None and self._abortable:
            self._check_abort(t, sample)

    def _close(self, window: _Window, end: Sample) -> None:
        """Judge the window(s) that ended by ``end.t`` (a long tick may close several as one)."""
        for i, tally in self._tallies.items():
            th = self.thresholds[i]
            if th.window != window.length:
                continue
            value = measure(th, end, window.start)
            if math.isnan(value):
                tally.last_failed = False
                continue
            tally.windows += 1
            tally.last_failed = not th.passes(value)
            tally.failed += tally.last_failed
            if math.isnan(tally.worst) or th.worse(value, tally.worst):
                tally.worst, tally.worst_at = value, window.start.t
        # The next window starts at the boundary the run crossed (whole windows, aligned on run time 0).
        crossed = math.floor(end.t / window.length) * window.length
        window.start = end if crossed == end.t else _at(end, crossed)

    def _check_abort(self, t: float, sample: Sample | None) -> None:
        for i in self._abortable:
            th = self.thresholds[i]
            if t < th.delay_abort_eval:
                continue
            if th.window is not None:
                tally = self._tallies[i]
                failed = tally.last_failed
                value = tally.worst
            else:
                sample = sample or self.read(t)
                value = measure(th, sample)
                failed = not math.isnan(value) and not th.passes(value)
            if failed:
                self.aborted = Verdict(th, ok=False, value=value)
                if self.on_abort is not None:
                    self.on_abort(self.aborted)
                return

    def verdicts(self, end: Sample) -> list[Verdict]:
        """Every threshold judged over the run that ended with ``end`` (the final, drained sample)."""
        out = []
        for i, th in enumerate(self.thresholds):
            if th.window is None:
                value = measure(th, end)
                out.append(Verdict(th, th.passes(value), value))
                continue
            tally = self._tallies[i]
            if tally.windows == 0:
                # Shorter than one window (or every window empty): the run is the one window.
                value = measure(th, end)
                out.append(Verdict(th, th.passes(value), value, windows=1, failed_windows=int(not th.passes(value))))
                continue
            out.append(Verdict(th, tally.failed == 0, tally.worst, tally.windows, tally.failed, tally.worst_at))
        return out


def _at(sample: Sample, t: float) -> Sample:
    """``sample`` standing for the window that starts at ``t`` (its figures are those at ``sample.t``)."""
    from dataclasses import replace

    return replace(sample, t=t)
