"""Thresholds judged over a run: the judge hooked after every window, an abort that stops the run, the verdicts.

The judging itself is :class:`loadsim.thresholds.Judge` (pure, driven by run time); this
module connects it to a running engine: ``abort_on_fail`` asks the engine to stop (what
is in flight drains as after a signal), the live view shows what failed, and the
summary gets the verdicts as new fields (a run without thresholds keeps its summary as it was).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from loadsim.engine.loop import Engine
from loadsim.runtime.measures import Reader
from loadsim.runtime.view import RunView
from loadsim.thresholds import Judge, Threshold, Verdict


class Judging:
    """Judges ``thresholds`` on ``engine``'s run; :meth:`fields` adds the verdicts to the summary."""

    def __init__(self, thresholds: Sequence[Threshold], read: Reader, engine: Engine, log: Any) -> None:
        self.engine = engine
        self.log = log
        self.read = read
        self.view: RunView | None = None
        self.judge = Judge(thresholds, read, on_abort=self._abort)
        if thresholds:
            engine.after_window.append(self._after_window)

    def _after_window(self, t: float, *_: object) -> None:
        # The drain moves the engine's time on past the run's end: no window of the run ends there,
        # and what finishes then is judged with the run (the final sample), not as a window of its own.
        if self.engine.stop_requested or t > self.engine.plan.duration:
            return
        self.judge.after_window(t)

    def _abort(self, verdict: Verdict) -> None:
        th = verdict.threshold
        value = None if math.isnan(verdict.value) else verdict.value
        self.log.warning("threshold.abort", threshold=th.label, value=value, run_seconds=round(self.engine.t, 3))
        if self.view is not None:
            self.view.failing.append(f"{th.metric} {th.expression} ({verdict.shown})")
            self.view.stopping_why = f"threshold {th.metric} {th.expression}"
        self.engine.request_stop()

    def verdicts(self, run_seconds: float) -> list[Verdict]:
        """Every threshold over the finished (drained) run."""
        return self.judge.verdicts(self.read(run_seconds))

    def fields(self, verdicts: Sequence[Verdict]) -> dict[str, Any]:
        """The summary's threshold fields (none when the run has no thresholds)."""
        if not self.judge.thresholds:
            return {}
        out: dict[str, Any] = {
            "thresholds": [v.to_dict() for v in verdicts],
            "thresholds_ok": all(v.ok for v in verdicts),
        }
        if self.judge.aborted is not None:
            out["aborted_by_threshold"] = self.judge.aborted.threshold.label
        return out
