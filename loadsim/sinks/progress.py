"""Progress while a run goes: a live status line on a terminal, a JSON event otherwise.

The status line shows achieved against target rate, errors, latency p95,
elapsed and remaining run time; it is redrawn once a second of wall time. Off a
terminal (a container, CI) a ``progress`` log event goes out every 60 s instead.
It reads the run through :class:`Reading` values, so it knows nothing of plans,
engines or drivers: the same progress serves every driver.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from loadsim.clock import Clock
from loadsim.units import format_duration


@dataclass(frozen=True, slots=True)
class Reading:
    """The run's figures at one moment."""

    started: int
    finished: int
    errors: int
    p95: float
    """Latency p95 of what finished so far (NaN when nothing has)."""
    percent: int | None = None
    """The rollout percent gating the traffic (controller policy mode)."""


class Progress:
    """Reports on a run; call :meth:`maybe_report` after each window (it is cheap)."""

    def __init__(
        self,
        duration: float,
        expected: Callable[[float, float], float],
        read: Callable[[], Reading],
        clock: Clock,
        *,
        mode: str,
        logger: Any,
        stream: TextIO | None = None,
    ) -> None:
        self.duration = duration
        self.expected = expected
        self.read = read
        self.clock = clock
        """Wall time for the report interval (a virtual run reports once a second of real time too)."""
        self.stream = stream or sys.stderr
        self.mode = ("line" if self.stream.isatty() else "json") if mode == "auto" else mode
        self.logger = logger
        self.interval = 1.0 if self.mode == "line" else 60.0
        self._last_wall = clock.now()
        self._last_t = 0.0
        self._last_started = 0

    def maybe_report(self, t: float, *_: object) -> None:
        """Report if the interval of wall time has passed."""
        if self.mode == "off":
            return
        now = self.clock.now()
        if now - self._last_wall < self.interval:
            return
        self.report(t, now)

    def report(self, t: float, now: float | None = None) -> None:
        """Report now."""
        now = self.clock.now() if now is None else now
        r = self.read()
        dt = t - self._last_t
        achieved = (r.started - self._last_started) / dt if dt > 0 else 0.0
        target = self.expected(self._last_t, t) / dt if dt > 0 else 0.0
        self._last_wall, self._last_t, self._last_started = now, t, r.started
        error_pct = 100.0 * r.errors / r.finished if r.finished else 0.0
        left = max(self.duration - t, 0.0)
        if self.mode == "line":
            line = (
                f"\r{format_duration(t):>7} / {format_duration(self.duration)}  "
                f"rate {achieved:8.2f}/s (target {target:8.2f}/s)  sends {r.started:>12,}  "
                f"errors {error_pct:5.2f}%  p95 {r.p95:6.3f}s  "
                + ("" if r.percent is None else f"rollout {r.percent:>3}%  ")
                + f"left {format_duration(left)}   "
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
                sends=r.started,
                errors=r.errors,
                error_pct=round(error_pct, 3),
                latency_p95=None if math.isnan(r.p95) else round(r.p95, 4),
                **({} if r.percent is None else {"rollout_percent": r.percent}),
            )

    def close(self) -> None:
        """End the status line."""
        if self.mode == "line":
            self.stream.write("\n")
            self.stream.flush()
