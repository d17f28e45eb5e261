"""The engine: one absolute-time loop over windows, open model, batched.

Each window ``[t0, t1)`` the engine waits until ``t1`` on its clock, draws the
window's arrivals, samples all their outcomes in one call, records what
happened at start, adds the executions to the in-flight set and records every
send due by ``t1``. Arrivals never wait for completions; when more than
``max_in_flight`` sends are in flight, new arrivals are dropped and counted,
never queued. At the end, sends in flight get ``grace`` seconds to finish;
what is still in flight then is counted as abandoned, not lost silently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from loadsim.arrivals import Arrivals
from loadsim.clock import Clock
from loadsim.engine.inflight import InFlight
from loadsim.engine.seeds import RunRandom
from loadsim.model.controller import ControllerHeartbeat
from loadsim.model.sampler import Executions, OutcomeModel
from loadsim.overlays.state import RunState
from loadsim.plan import RunPlan
from loadsim.sinks.health import HealthMetrics
from loadsim.sinks.relay_metrics import RelayMetrics
from loadsim.sinks.summary import RunSummary
from loadsim.types import Sink, WindowObserver

_NO_STARTS = Executions(
    cls=np.empty(0, dtype=np.int8), latency=np.empty(0, dtype=np.float64), done_at=np.empty(0, dtype=np.float64)
)


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended."""

    run_seconds: float
    """Run time reached by the schedule (not counting the drain)."""
    stopped_early: bool
    abandoned: int


class Engine:
    """Runs a plan on a clock, feeding the relay metrics, health metrics and summary."""

    def __init__(  # noqa: PLR0917 - each collaborator is injected once, in data-flow order
        self,
        plan: RunPlan,
        clock: Clock,
        random: RunRandom,
        relay: RelayMetrics,
        health: HealthMetrics,
        summary: RunSummary,
        *,
        sinks: Sequence[Sink] = (),
        observers: Sequence[WindowObserver] = (),
        on_window: Callable[[float], None] | None = None,
        log: Any = None,
    ) -> None:
        self.plan = plan
        self.clock = clock
        self.random = random
        self.relay = relay
        self.health = health
        self.summary = summary
        self.sinks: tuple[Sink, ...] = (relay, summary, *sinks)
        self.observers = tuple(observers)
        self.on_window = on_window
        self.log = log
        self.base_state = RunState(model=plan.model, controller=plan.controller)
        self._base_model = self.model = OutcomeModel(plan.model)
        for ov in plan.timeline.overlays:
            health.overlay_active.labels(overlay=ov.name).set(0.0)
        self._models: dict[tuple[tuple[int, float], ...], OutcomeModel] = {}
        self._active: dict[int, float] = {}
        """Overlays (by index in the timeline) active in the last window, with their intensity."""
        self.arrivals = Arrivals(plan.schedule, plan.arrivals, random.arrivals)
        self.inflight = InFlight()
        self.controller = ControllerHeartbeat(random.controller)
        self.t = 0.0
        """Run time up to which every window has been processed."""
        self._stop_requested = False

    def skip_to(self, t: float) -> int:
        """Resume at run time ``t`` after downtime; returns the number of arrivals missed.

        The schedule's arrivals in between are counted as missed (never generated in a
        burst), and the controller's runs in between are skipped.
        """
        if t <= self.t:
            return 0
        expected = self.plan.schedule.expected(self.t, t)
        self.arrivals.cumulative_expected += expected
        missed = round(expected)
        self.summary.missed += missed
        self.health.missed.inc(missed)
        interval = self.plan.controller.interval
        while self.controller.next_run < t:
            self.controller.next_run += interval
        self.t = t
        return missed

    def request_stop(self) -> None:
        """Stop drawing arrivals at the next window; in-flight sends still drain."""
        self._stop_requested = True

    @property
    def stop_requested(self) -> bool:
        """Whether :meth:`request_stop` was called."""
        return self._stop_requested

    def state_at(self, t: float) -> RunState:
        """The parameters in force at ``t`` (overlays applied), with their model ready."""
        timeline = self.plan.timeline
        if not timeline:
            return self.base_state
        base = replace(self.base_state, rate=self.plan.schedule.at(t))
        state, active = timeline.state_at(base, t)
        now = {a.index: a.intensity for a in active}
        self._announce(now, t)
        if active:
            key = tuple(sorted((i, round(x, 3)) for i, x in now.items()))
            model = self._models.get(key)
            if model is None:
                if len(self._models) > 256:
                    self._models.clear()
                model = self._models[key] = OutcomeModel(state.model)
            self.model = model
        else:
            self.model = self._base_model
        return state

    def _announce(self, now: dict[int, float], t: float) -> None:
        """Ground truth: the overlay gauge and a log event at each overlay's start and end."""
        for i in now.keys() | self._active.keys():
            overlay = self.plan.timeline.overlays[i]
            before, after = self._active.get(i), now.get(i)
            if before != after:
                self.health.overlay_active.labels(overlay=overlay.name).set(after or 0.0)
            if before is None and self.log is not None:
                self.log.info("overlay.start", run_seconds=t, **overlay.describe())
            elif after is None and self.log is not None:
                self.log.info("overlay.end", run_seconds=t, scenario=overlay.name)
        self._active = now

    def step(self, t0: float, t1: float) -> None:
        """Process the window ``[t0, t1)``: arrivals, outcomes, completions, heartbeat."""
        state = self.state_at(0.5 * (t0 + t1))
        self.relay.controller_visible = state.controller_visible
        self.relay.exposition_up = state.exposition_up
        starts = self.arrivals.draw(t0, t1, state.arrival_scale)
        scheduled = len(starts)
        room = self.plan.engine.max_in_flight - len(self.inflight)
        dropped = max(0, scheduled - room)
        if dropped:
            starts = starts[: max(room, 0)]
        for observe in self.observers:
            observe(t0, t1, starts)
        effects, executions = self.model.sample(self.random.outcomes, starts)
        due = self.inflight.add_and_pop_due(executions, t1)
        for sink in self.sinks:
            sink.record_starts(effects)
            sink.record_executions(due)
        self.controller.advance(t1, state.controller, self.relay)
        self._account(scheduled, len(starts), dropped, len(due) + int(effects.guard_counts.sum()), t1)

    def complete_until(self, t1: float) -> None:
        """Record completions due by ``t1`` without drawing arrivals (the drain)."""
        due = self.inflight.add_and_pop_due(_NO_STARTS, t1)
        for sink in self.sinks:
            sink.record_executions(due)
        self._account(0, 0, 0, len(due), t1)

    def _account(self, scheduled: int, started: int, dropped: int, completed: int, t1: float) -> None:
        s, h = self.summary, self.health
        s.scheduled += scheduled
        s.started += started
        s.dropped += dropped
        h.scheduled.inc(scheduled)
        h.started.inc(started)
        if dropped:
            h.dropped.inc(dropped)
        h.completed.inc(completed)
        h.in_flight.set(len(self.inflight))
        h.run_seconds.set(t1)
        self.t = t1

    async def run(self) -> RunResult:
        """Run the schedule to its end (or until stopped), then drain."""
        duration = self.plan.duration
        tick = self.plan.tick
        target = self.plan.schedule.at
        t0 = self.t
        while t0 < duration and not self._stop_requested:
            t1 = min(t0 + tick, duration)
            lateness = await self.clock.sleep_until(t1)
            self.health.lateness.observe(lateness)
            self.health.target_rate.set(target(t1))
            self.step(t0, t1)
            if self.on_window is not None:
                self.on_window(t1)
            t0 = t1
        run_seconds = self.t
        abandoned = await self.drain()
        return RunResult(run_seconds=run_seconds, stopped_early=self._stop_requested, abandoned=abandoned)

    async def drain(self) -> int:
        """Let sends in flight finish for up to ``grace`` seconds; returns how many were abandoned."""
        deadline = self.t + self.plan.engine.grace
        while len(self.inflight) and self.t < deadline:
            t1 = min(self.t + self.plan.tick, deadline)
            if self.clock.virtual:
                t1 = min(max(t1, self.inflight.next_due()), deadline)
            await self.clock.sleep_until(t1)
            self.complete_until(t1)
            if self.on_window is not None:
                self.on_window(t1)
        abandoned = len(self.inflight.abandon())
        if abandoned:
            self.summary.abandoned += abandoned
            self.health.abandoned.inc(abandoned)
            self.health.in_flight.set(0)
        return abandoned
