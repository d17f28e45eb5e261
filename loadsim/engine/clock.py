"""Clocks: the only place loadsim waits.

Everything else takes run time ``t`` (seconds since the run started) as an
argument. The engine asks its clock to wake it at absolute run times; the wall
clock sleeps until that deadline on the event loop (absolute deadlines, so the
long-run rate never drifts however late one wake-up was), the virtual clock
jumps there at once (48 hours of traffic in seconds).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """What the engine needs from time."""

    virtual: bool

    def now(self) -> float:
        """Run time in seconds."""
        ...

    async def sleep_until(self, t: float) -> float:
        """Return at run time ``t`` (or as soon after as possible); returns how late it woke."""
        ...

    def epoch(self) -> float:
        """Unix time that corresponds to run time 0 (for calendar-shaped schedules)."""
        ...


class WallClock:
    """Real time on ``time.monotonic()``, anchored at construction.

    The event loop's own clock is the same CLOCK_MONOTONIC, but uvloop reads it in
    whole milliseconds, which made ``loadsim_tick_lateness_seconds`` under-read by
    up to 1 ms; ``time.monotonic()`` has microseconds. Sleeps still go through the
    loop (``asyncio.sleep``), so waking is as precise as the loop's timers.
    """

    virtual = False

    def __init__(self, origin_offset: float = 0.0) -> None:
        """``origin_offset`` starts the run part-way through (a resumed run)."""
        self._origin = time.monotonic() - origin_offset
        self._epoch = time.time() - origin_offset

    def now(self) -> float:
        return time.monotonic() - self._origin

    async def sleep_until(self, t: float) -> float:
        delay = t - self.now()
        if delay > 0:
            await asyncio.sleep(delay)
        return max(0.0, self.now() - t)

    def epoch(self) -> float:
        return self._epoch


class VirtualClock:
    """Jumps straight to each deadline; yields to the event loop now and then.

    It yields every ``yield_every`` wake-ups so a metrics server on the same
    loop still answers during a virtual run.
    """

    virtual = True

    def __init__(self, epoch: float, start: float = 0.0, yield_every: int = 64) -> None:
        self._now = start
        self._epoch = epoch
        self._yield_every = yield_every
        self._wakes = 0

    def now(self) -> float:
        return self._now

    async def sleep_until(self, t: float) -> float:
        self._now = max(self._now, t)
        self._wakes += 1
        if self._wakes % self._yield_every == 0:
            await asyncio.sleep(0)
        return 0.0

    def epoch(self) -> float:
        return self._epoch
