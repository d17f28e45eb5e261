"""Progress while a run goes: a live status line on a terminal, a JSON event otherwise.

The status line shows achieved against target rate, errors, latency p95,
elapsed and remaining run time; it is redrawn once a second of wall time. Off a
terminal (a container, CI) a ``progress`` log event goes out every 60 s instead.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from loadsim.plan import RunPlan
from loadsim.sinks.summary import RunSummary
from loadsim.units import format_duration


class Progress:
    """Reports on a run; call :meth:`maybe_report` after each window (it is cheap)."""

    def __init__(
        self, plan: RunPlan, summary: RunSummary, *, mode: str, logger: Any, stream: TextIO | None = None
    ) -> None:
        self.plan = plan
        self.summary = summary
        self.stream = stream or sys.stderr
        self.mode = ("line" if self.stream.isatty() else "json") if mode == "auto" else mode
        self.logger = logger
        self.interval = 1.0 if self.mode == "line" else 60.0
        self._last_wall = time.monotonic()
        self._last_t = 0.0
        self._last_started = 0

    def maybe_report(self, t: float) -> None:
        """Report if the interval of wall time has passed."""
        if self.mode == "off":
            return
        now = time.monotonic()
        if now - self._last_wall < self.interval:
            return
        self.report(t, now)

    def report(self, t: float, now: float | None = None) -> None:
        """Report now."""
        now = time.monotonic() if now is None else now
        s = self.summary
        dt = t - self._last_t
        achieved = (s.started - self._last_started) / dt if dt > 0 else 0.0
        target = self.plan.schedule.expected(self._last_t, t) / dt if dt > 0 else 0.0
        self._last_wall, self._last_t, self._last_started = now, t, s.started
        error_pct = 100.0 * s.errors / s.finished if s.finished else 0.0
        p95 = s.latency.quantile(0.95)
        left = max(self.plan.duration - t, 0.0)
        if self.mode == "line":
            line = (
                f"\r{format_duration(t):>7} / {format_duration(self.plan.duration)}  "
                f"rate {achieved:8.2f}/s (target {target:8.2f}/s)  sends {s.started:>12,}  "
                f"errors {error_pct:5.2f}%  p95 {p95:6.3f}s  left {format_duration(left)}   "
            )
            self.stream.write(line)
            self.stream.flush()
        else:
            self.logger.info(
                "progress",
                run_seconds=round(t, 1),
                left_seconds=round(left, 1),
                achieved_rate=round(achieved, 3),
                target_rate=round(target, 3),
                sends=s.started,
                errors=s.errors,
                error_pct=round(error_pct, 3),
                latency_p95=None if math.isnan(p95) else round(p95, 4),
            )

    def close(self) -> None:
        """End the status line."""
        if self.mode == "line":
            self.stream.write("\n")
            self.stream.flush()
