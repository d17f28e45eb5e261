"""The engine: one absolute-time loop over windows, open model, for every driver.

Each window ``[t0, t1)`` the engine waits on its clock until the driver's
hand-over time (the window's end for the simulated driver, a little before its
start for the HTTP driver), works out the parameters in force (overlays
applied), draws the window's arrivals and hands them to the driver. Arrivals
never wait for completions: how many there are depends on the schedule, the
overlays and the random stream alone; a driver drops (and counts) what it
cannot start, never queues it. At the end, what is in flight gets ``grace``
seconds to finish; what is still out then is counted as abandoned, never lost
silently.

The engine owns the run's state: the run time reached, the overlays (started
and stopped through :meth:`Engine.start_overlay` and :meth:`Engine.stop_overlay`,
never by editing the plan), the parameters in force (:attr:`Engine.state`) and
the run's counts. Checkpoints ask it, and the driver, for snapshots.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from loadsim.arrivals import Arrivals
from loadsim.clock import Clock
from loadsim.engine.driver import NO_COUNTS, Counts, Driver, FloatArray, Part, Window
from loadsim.engine.seeds import RunRandom
from loadsim.overlays.scenarios import SCENARIOS
from loadsim.overlays.state import RunState
from loadsim.overlays.timeline import Active, Overlay, Timeline
from loadsim.plan import RunPlan
from loadsim.sinks.health import HealthMetrics

MAX_BATCH = 1 << 20
"""Most arrivals handed to a driver in one call (expected count), or its own ``max_batch`` if lower:
a window expecting more is split into equal pieces, with a yield to the event loop between two,
so memory stays bounded (about 100 bytes per simulated send while it is sampled: 100 MB a piece)
and signals, ``/healthz`` and ``/metrics`` are served within one piece's work (about 0.1 s at
10 M sends/s) at any rate."""
MAX_LAG = 1.0
"""How far (seconds, at least one tick) the wall clock may run ahead of the windows handed over.

A window that ended longer ago than this is not sampled: its arrivals are counted as
``behind`` (dropped because the machine could not keep up), so a run that is offered more
than it can do drops the excess and stays on time, never queues it and falls ever later."""
BEHIND_WARN_EVERY = 60.0
"""Seconds of run time between two ``engine.behind`` warnings while the machine keeps falling behind."""
INTERRUPTIBLE = 0.5
"""Waits longer than this (seconds) also end when the run is asked to stop (a tick of 10 s)."""
_NO_ARRIVALS: FloatArray = np.empty(0, dtype=np.float64)

WindowObserver = Callable[[float, float, FloatArray], None]
"""Called with ``(t0, t1, start_times)`` for every window, before the driver: per-second counts, plots, tests."""
AfterWindow = Callable[[float, RunState], None]
"""Called with the run time reached and the parameters in force after every window (scrape recorders, progress)."""


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended."""

    run_seconds: float
    """Run time reached by the schedule (not counting the drain)."""
    stopped_early: bool
    abandoned: int


@dataclass(slots=True)
class RunCounts:
    """The run's totals, whatever the driver."""

    scheduled: int = 0
    """Arrivals whose time came: started, dropped (in flight), or dropped behind (the machine was late)."""
    started: int = 0
    dropped: int = 0
    completed: int = 0
    abandoned: int = 0
    missed: int = 0
    """Arrivals the schedule expected while the run was down (between a checkpoint and a restart)."""
    behind: int = 0
    """Arrivals dropped because the machine could not keep up with the schedule (never sampled)."""

    def snapshot(self) -> Part:
        return asdict(self), {}

    def restore(self, part: Part) -> None:
        for f in fields(self):
            setattr(self, f.name, int(part[0].get(f.name, 0)))


class Engine:
    """Runs a plan's schedule and overlays on a clock, through one driver."""

    def __init__(
        self,
        plan: RunPlan,
        clock: Clock,
        random: RunRandom,
        driver: Driver,
        health: HealthMetrics,
        *,
        observers: Sequence[WindowObserver] = (),
        after_window: Sequence[AfterWindow] = (),
        log: Any = None,
    ) -> None:
        self.plan = plan
        self.clock = clock
        self.random = random
        self.driver = driver
        self.health = health
        self.observers = tuple(observers)
        self.after_window = list(after_window)
        self.log = log
        self.counts = RunCounts()
        self.timeline = Timeline(plan.timeline.overlays)
        """The run's overlays: the plan's, then any started while it runs."""
        self.base_state = RunState(model=plan.model, controller=plan.controller)
        self.state = self.base_state
        """The parameters in force in the last window (overlays applied)."""
        self.active: list[Active] = []
        for ov in self.timeline.overlays:
            health.overlay_active.labels(overlay=ov.name).set(0.0)
        self._announced: dict[int, float] = {}
        """Overlays (by index in the timeline) active in the last window, with their intensity."""
        self.arrivals = Arrivals(plan.schedule, plan.arrivals, random.arrivals)
        self.t = 0.0
        """Run time up to which every window has been handed to the driver."""
        self._stop_requested = False
        self._stopped = asyncio.Event()
        self._stopped_at = float("inf")
        """Run time at which the stop was asked for (arrivals after it never come due)."""
        self.max_lag = max(MAX_LAG, plan.tick)
        self._behind_since: float | None = None
        """Run time at which the current stretch of dropped windows began (None when on time)."""
        self._behind_dropped = 0
        self._warned_at: float | None = None

    # -- control -----------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Hand over no more windows; what is in flight still drains."""
        if not self._stop_requested:
            self._stop_requested = True
            self._stopped_at = self.clock.now()
            self._stopped.set()
            self.driver.request_stop()

    async def wait_stopped(self) -> None:
        """Return once :meth:`request_stop` has been called."""
        await self._stopped.wait()

    @property
    def stop_requested(self) -> bool:
        """Whether :meth:`request_stop` was called."""
        return self._stop_requested

    @property
    def running(self) -> bool:
        """Still working through its schedule (what ``/readyz`` reports)."""
        return not self._stop_requested and self.t < self.plan.duration

    def start_overlay(self, scenario: str, options: Mapping[str, Any] | None = None, magnitude: float = 1.0) -> Overlay:
        """Start ``scenario`` now, until :meth:`stop_overlay`; raises ValueError for bad options."""
        overlay = self.timeline.start_now(SCENARIOS[scenario], self.t, options, magnitude)
        self.health.overlay_active.labels(overlay=overlay.name).set(0.0)
        return overlay

    def stop_overlay(self, scenario: str) -> int:
        """End every open overlay of ``scenario`` now; returns how many."""
        return self.timeline.stop_now(scenario, self.t)

    def skip_to(self, t: float) -> int:
        """Resume at run time ``t`` after downtime; returns the number of arrivals missed.

        The schedule's arrivals in between are counted as missed (never generated in
        a burst), and the driver forgets what was due in between. Only the run's own
        time counts: a run resumed after its end missed the arrivals up to its end, no more.
        """
        if t <= self.t:
            return 0
        end = min(t, self.plan.duration)
        expected = self.plan.schedule.expected(self.t, end) if self.t < end else 0.0
        self.arrivals.cumulative_expected += expected
        missed = round(expected)
        self.counts.missed += missed
        self.health.missed.inc(missed)
        self.driver.skip_to(t)
        self.t = t
        return missed

    # -- state ---------------------------------------------------------------------------------

    def snapshot(self) -> Part:
        """The engine's own position: run time, arrival phase, counts and every random stream.

        The driver settles first, so the counts include everything it accounted for so far
        and its own snapshot (taken next) agrees with them.
        """
        self._add(self.driver.settle(self.t))
        counts, _ = self.counts.snapshot()
        meta = {
            "t": self.t,
            "arrivals_cumulative_expected": self.arrivals.cumulative_expected,
            "counts": counts,
            "random": {name: gen.bit_generator.state for name, gen in self.random.generators().items()},
            "health": self.health.state(),
        }
        return meta, {}

    def restore(self, part: Part) -> None:
        meta = part[0]
        self.t = float(meta["t"])
        self.arrivals.cumulative_expected = float(meta["arrivals_cumulative_expected"])
        self.counts.restore((meta["counts"], {}))
        for name, gen in self.random.generators().items():
            gen.bit_generator.state = meta["random"][name]
        # loadsim's own counters continue too (prometheus-client counters only go up from 0).
        c, h = self.counts, self.health
        h.scheduled.inc(c.scheduled)
        h.started.inc(c.started)
        h.dropped.inc(c.dropped)
        h.completed.inc(c.completed)
        h.abandoned.inc(c.abandoned)
        h.missed.inc(c.missed)
        h.behind.inc(c.behind)
        if "health" in meta:  # state files written before it was kept start these from zero
            h.load_state(meta["health"])
        h.run_seconds.set(self.t)
        h.in_flight.set(self.driver.in_flight())

    # -- the loop ------------------------------------------------------------------------------

    def state_at(self, t: float) -> tuple[RunState, list[Active]]:
        """The parameters in force at ``t`` (overlays applied) and the overlays acting."""
        if not self.timeline:
            return self.base_state, []
        base = replace(self.base_state, rate=self.plan.schedule.at(t))
        state, active = self.timeline.state_at(base, t)
        self._announce(active, t)
        return state, active

    def _announce(self, active: list[Active], t: float) -> None:
        """Ground truth: the overlay gauge and a log event at each overlay's start and end."""
        now = {a.index: a.intensity for a in active}
        for i in now.keys() | self._announced.keys():
            overlay = self.timeline.overlays[i]
            before, after = self._announced.get(i), now.get(i)
            if before != after:
                self.health.overlay_active.labels(overlay=overlay.name).set(after or 0.0)
            if before is None and self.log is not None:
                self.log.info("overlay.start", run_seconds=t, **overlay.describe())
            elif after is None and self.log is not None:
                self.log.info("overlay.end", run_seconds=t, scenario=overlay.name)
        self._announced = now

    def step(self, t0: float, t1: float) -> None:
        """Hand the window ``[t0, t1)`` to the driver: parameters, arrivals, accounting."""
        state, active = self.state_at(0.5 * (t0 + t1))
        self.state, self.active = state, active
        starts = self.arrivals.draw(t0, t1, state.arrival_scale)
        for observe in self.observers:
            observe(t0, t1, starts)
        counts = self.driver.window(Window(t0, t1, starts, state, active))
        self._account(counts, t1)

    def _account(self, counts: Counts, t1: float) -> None:
        self._add(counts)
        self.health.run_seconds.set(t1)
        self.t = max(self.t, t1)
        for after in self.after_window:
            after(self.t, self.state)

    def _add(self, counts: Counts) -> None:
        # An arrival is scheduled once its time has come: then the driver started it or dropped it.
        # (The HTTP driver is handed windows ahead of time; what a stop withdraws never came due.)
        c, h = self.counts, self.health
        due = counts.started + counts.dropped + counts.behind
        c.scheduled += due
        h.scheduled.inc(due)
        if counts.behind:
            self._warn_behind(self.t, None, counts.behind)  # the driver's own (requests due too long ago)
            c.behind += counts.behind
            h.behind.inc(counts.behind)
        c.started += counts.started
        c.dropped += counts.dropped
        c.completed += counts.completed
        c.abandoned += counts.abandoned
        h.started.inc(counts.started)
        if counts.dropped:
            h.dropped.inc(counts.dropped)
        h.completed.inc(counts.completed)
        if counts.abandoned:
            h.abandoned.inc(counts.abandoned)
        if counts.missed:
            c.missed += counts.missed
            h.missed.inc(counts.missed)
        h.in_flight.set(self.driver.in_flight())

    async def run(self) -> RunResult:
        """Run the schedule to its end (or until stopped), then drain."""
        duration = self.plan.duration
        tick = self.plan.tick
        target = self.plan.schedule.at
        t0 = self.t
        while t0 < duration and not self._stop_requested:
            t1 = min(t0 + tick, duration)
            wake = self.driver.handover(t0, t1)
            lateness = await self._wait(wake)
            if self._stop_requested:
                if wake < t1:
                    break  # a window handed over before it ends has not begun: it never will
                # Taken once passed (the simulated driver): what passed of it before the stop happened.
                t1 = min(t1, self._stopped_at)
                if t1 <= t0:
                    break
            self.health.lateness.observe(lateness)
            self.health.target_rate.set(target(t1))
            if not self.clock.virtual and self.clock.now() - t1 > self.max_lag:
                self._drop_behind(t0, t1)
            else:
                self._caught_up(t0)
                await self._advance(t0, t1)
            t0 = t1
        self._caught_up(t0)
        run_seconds = min(self.t, duration)
        if self._stop_requested:
            # Windows are handed to the HTTP driver ahead of time: a stop ends run time where it came.
            run_seconds = max(min(run_seconds, self._stopped_at), 0.0)
        abandoned = await self.drain()
        return RunResult(run_seconds=run_seconds, stopped_early=self._stop_requested, abandoned=abandoned)

    async def _wait(self, wake: float) -> float:
        """Sleep until ``wake`` on the clock; a long wait also ends when the run is asked to stop."""
        if self.clock.virtual or wake - self.clock.now() <= INTERRUPTIBLE:
            return await self.clock.sleep_until(wake)
        sleeper = asyncio.ensure_future(self.clock.sleep_until(wake))
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait((sleeper, stopped), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not sleeper.done():
                sleeper.cancel()
        return sleeper.result() if sleeper.done() and not sleeper.cancelled() else 0.0

    async def _advance(self, t0: float, t1: float) -> None:
        """Hand ``[t0, t1)`` over in pieces of at most :data:`MAX_BATCH` expected arrivals, yielding between."""
        # Overlays only ever scale arrivals down (traffic-drop), so the schedule alone bounds a piece.
        pieces = max(1, math.ceil(self.plan.schedule.expected(t0, t1) / min(MAX_BATCH, self.driver.max_batch)))
        if pieces == 1:
            self.step(t0, t1)
            return
        width = (t1 - t0) / pieces
        for k in range(pieces):
            self.step(t0 + k * width, t1 if k == pieces - 1 else t0 + (k + 1) * width)
            await asyncio.sleep(0)  # a yield: signals, /healthz and /metrics are served between pieces
            if self._stop_requested:
                return

    def _drop_behind(self, t0: float, t1: float) -> None:
        """The machine is more than ``max_lag`` behind: count the window's arrivals as dropped, sample none.

        The driver still gets the (empty) window, so completions, the controller and fault
        windows move on with run time. An overloaded run falls behind again soon after each
        catch-up, so it is warned at the first stretch and then at most once a minute
        (:data:`BEHIND_WARN_EVERY`), each warning with the total dropped so far.
        """
        state, active = self.state_at(0.5 * (t0 + t1))
        self.state, self.active = state, active
        n = self.arrivals.count(t0, t1, state.arrival_scale)
        if self._behind_since is None:
            self._behind_since = t0
            self._behind_dropped = 0
        self._behind_dropped += n
        self._warn_behind(t0, self.clock.now() - t1, n)
        counts = self.driver.window(Window(t0, t1, _NO_ARRIVALS, state, active))
        self._account(replace(counts, behind=counts.behind + n), t1)

    def _warn_behind(self, t: float, lag: float | None, dropping: int) -> None:
        """Say that arrivals are dropped because the machine is behind: at first, then once a minute at most."""
        if self.log is None or (self._warned_at is not None and t - self._warned_at < BEHIND_WARN_EVERY):
            return
        self._warned_at = t
        self.log.warning(
            "engine.behind",
            run_seconds=round(t, 3),
            lag_seconds=None if lag is None else round(lag, 3),
            max_lag_seconds=self.max_lag,
            dropped_behind=self.counts.behind + dropping,
            note="the machine cannot keep up with the schedule: arrivals this late are dropped and counted "
            "(loadsim_arrivals_behind_total), never queued",
        )

    def _caught_up(self, t: float) -> None:
        """End a stretch of dropped windows (logged at debug level: an overloaded run has many)."""
        if self._behind_since is None:
            return
        if self.log is not None:
            self.log.debug(
                "engine.caught_up",
                run_seconds=round(t, 3),
                behind_seconds=round(t - self._behind_since, 3),
                dropped=self._behind_dropped,
            )
        self._behind_since = None

    async def drain(self) -> int:
        """Let what is in flight finish for up to ``grace`` seconds; returns how many were abandoned."""
        grace = self.plan.engine.grace
        tick = self.plan.tick
        deadline = max(self.t, self.clock.now()) + grace
        t = max(self.t, self.clock.now())
        while self.driver.in_flight() and t < deadline:
            t1 = min(t + tick, deadline)
            if self.clock.virtual:
                t1 = min(max(t1, self.driver.next_due()), deadline)
            await self.clock.sleep_until(t1)
            t = t1
            self._account(self.driver.settle(t1), t1)
        abandoned = await self.driver.abandon()
        last = self.driver.settle(t)  # what finished while abandoning
        if last != NO_COUNTS:
            self._account(last, t)
        if abandoned:
            self.counts.abandoned += abandoned
            self.health.abandoned.inc(abandoned)
        self.health.in_flight.set(self.driver.in_flight())
        return abandoned

    def summary(self, *, run_seconds: float, wall_seconds: float, stopped_early: bool) -> dict[str, Any]:
        """The run's summary: counts, rates, and the driver's outcomes."""
        c = self.counts
        target = self.plan.expected_sends(0.0, run_seconds)
        out: dict[str, Any] = {
            "run_seconds": run_seconds,
            "wall_seconds": round(wall_seconds, 3),
            self.driver.noun: {
                "target": round(target, 1),
                "scheduled": c.scheduled,
                "started": c.started,
                "dropped": c.dropped,
                "finished": c.completed,
                "abandoned": c.abandoned,
                "missed_while_down": c.missed,
                "dropped_behind": c.behind,
            },
            "achieved_rate_per_s": c.started / run_seconds if run_seconds > 0 else 0.0,
            "target_rate_per_s": target / run_seconds if run_seconds > 0 else 0.0,
        }
        out.update(self.driver.report())
        out.update(profile=self.plan.name, seed=self.plan.seed, virtual=self.plan.virtual, stopped_early=stopped_early)
        return out
