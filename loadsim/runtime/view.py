"""Progress for a run: the live view on a terminal, the plain line on a dumb one, JSON events elsewhere.

:func:`progress` picks the kind from ``--progress`` (``auto`` looks at stderr, ``TERM``
and the width) and enters it on the run's exit stack. JSON progress is
:class:`~loadsim.sinks.progress.Progress`, unchanged. The live view and the plain line are
a :class:`RunView`: after each window the engine hands over (cheap: two clock reads)
it redraws at most every ``interval`` of wall time, from the engine's counts, the
run's :class:`~loadsim.thresholds.Sample` and the pusher. While it is on screen, log
lines are diverted to print above it.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections import deque
from collections.abc import Callable
from typing import Any, TextIO

from loadsim.clock import Clock
from loadsim.engine.loop import Engine
from loadsim.logs import LogOutput
from loadsim.runtime.measures import Reader
from loadsim.sinks.live_view import (
    Drain,
    OverlayView,
    Screen,
    ViewState,
    choose,
    plain_line,
    render_run,
    screen_for,
    shown,
)
from loadsim.sinks.progress import Progress, Reading
from loadsim.sinks.pushgateway import Pusher
from loadsim.thresholds import Sample

REDRAW = 0.25
"""Wall seconds between redraws: smooth enough to read, cheap enough at any rate (see README)."""
RING_STEP = 5.0
"""Run seconds between the snapshots behind the last-minute figures."""
SPAN = 60.0
"""The last minute: how far back the latency and error figures look."""


class RunView:
    """Fills a :class:`ViewState` from a running engine and shows it; call :meth:`after_window`."""

    def __init__(
        self,
        engine: Engine,
        read: Reader,
        screen: Screen[ViewState],
        wall: Clock,
        *,
        title: str,
        pusher: Pusher | None = None,
        is_error_reason: Callable[[str], bool] = lambda _: True,
        interval: float = REDRAW,
    ) -> None:
        self.engine = engine
        self.read = read
        self.screen = screen
        self.wall = wall
        self.title = title
        self.pusher = pusher
        self.is_error_reason = is_error_reason
        self.interval = interval
        self.failing: list[str] = []
        """Set by whoever judges thresholds: shown in red while non-empty."""
        self.stopping_why = "signal"
        self._next = wall.now()
        self._ring: deque[Sample] = deque()
        self._history: deque[float] = deque(maxlen=48)
        self._last = (0.0, 0)
        self._drain_since: float | None = None
        self._stopped_at: float | None = None
        """Run time when the run began to stop (a signal, an abort, or the schedule's end)."""

    def after_window(self, t: float, *_: object) -> None:
        """Redraw if the interval of wall time has passed (the common case returns at once)."""
        now = self.wall.now()
        if now < self._next:
            return
        self._next = now + self.interval
        self.redraw(t)

    def redraw(self, t: float) -> None:
        """Build the state now and show it."""
        self.screen.show(self.state(t))

    def state(self, t: float) -> ViewState:
        """What the view shows at run time ``t``."""
        e = self.engine
        plan = e.plan
        if self._stopped_at is None and (e.stop_requested or e.t >= plan.duration):
            self._stopped_at = min(e.t, plan.duration)
        # Once stopping, run time stands still for the view (the drain moves the engine's clock on).
        t = min(t, plan.duration) if self._stopped_at is None else self._stopped_at
        sample = self.read(t)
        self._remember(sample)
        base = self._ring[0]
        t0, started0 = self._last
        dt = t - t0
        achieved = (sample.started - started0) / dt if dt > 0 else (self._history[-1] if self._history else 0.0)
        target = plan.schedule.expected(t0, t) / dt if dt > 0 else plan.schedule.at(t)
        if dt > 0:
            self._history.append(achieved)
            self._last = (t, sample.started)
        push, push_ok = (None, True) if self.pusher is None else self.pusher.status()[::-1]
        return ViewState(
            title=self.title,
            elapsed=t,
            duration=plan.duration,
            noun=e.driver.noun,
            achieved=achieved,
            target=target,
            history=tuple(self._history),
            started=sample.started,
            dropped=sample.dropped,
            in_flight=e.driver.in_flight(),
            error_ratio=_ratio(sample.errors - base.errors, sample.error_base - base.error_base),
            top_reasons=self._top_reasons(sample, base),
            latency=_latency(sample, base),
            span=max(t - base.t, 0.0),
            overlays=[
                OverlayView(a.overlay.name, a.overlay.end - t, a.intensity) for a in e.active if a.overlay.end > t
            ],
            next_overlay=_next_overlay(e, t) if self._stopped_at is None else None,
            push=push,
            push_ok=push_ok,
            rollout=e.driver.gate_percent(),
            drain=self._drain(),
            failing=tuple(self.failing),
        )

    def _remember(self, sample: Sample) -> None:
        """Keep a snapshot every few seconds of run time, back to a minute before ``sample``."""
        if not self._ring or sample.t - self._ring[-1].t >= RING_STEP:
            self._ring.append(sample.frozen())
        while len(self._ring) > 1 and self._ring[1].t <= sample.t - SPAN:
            self._ring.popleft()

    def _top_reasons(self, sample: Sample, base: Sample) -> list[tuple[str, int]]:
        counts = [
            (name, n - base.reasons.get(name, 0))
            for name, n in sample.reasons.items()
            if self.is_error_reason(name) and n > base.reasons.get(name, 0)
        ]
        return sorted(counts, key=lambda kv: -kv[1])[:3]

    def _drain(self) -> Drain | None:
        e = self.engine
        if not e.stop_requested and e.t < e.plan.duration:
            return None
        in_flight = e.driver.in_flight()
        if not in_flight:
            return None  # nothing left to wait for (or the drain is over)
        now = e.clock.now()
        if self._drain_since is None:
            self._drain_since = max(now, e.t)
        left = self._drain_since + e.plan.engine.grace - now
        why = self.stopping_why if e.stop_requested else "end"
        return Drain(in_flight, left, why)


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole > 0 else math.nan


def _latency(sample: Sample, base: Sample) -> tuple[float, float, float]:
    h = sample.latency.get("latency_intended") or sample.latency.get("latency")
    if h is None:
        return (math.nan, math.nan, math.nan)
    h0 = base.latency.get("latency_intended") or base.latency.get("latency")
    p50, p95, p99 = (h.quantile(q, h0) for q in (0.5, 0.95, 0.99))
    return (p50, p95, p99)


def _next_overlay(engine: Engine, t: float) -> tuple[str, float] | None:
    upcoming = [ov for ov in engine.timeline.overlays if ov.start > t]
    if not upcoming:
        return None
    first = min(upcoming, key=lambda ov: ov.start)
    return first.name, first.start - t


def progress(
    stack: contextlib.AsyncExitStack,
    engine: Engine,
    read: Reader,
    wall: Clock,
    *,
    mode: str,
    logs: LogOutput | None,
    log: Any,
    pusher: Pusher | None = None,
    is_error_reason: Callable[[str], bool] = lambda _: True,
    stream: TextIO | None = None,
) -> RunView | None:
    """Enter the run's progress on ``stack`` and hook it after every window; the view, if one is shown."""
    stream = stream or sys.stderr
    kind = choose(mode, stream)
    if kind in ("json", "off"):
        plan = engine.plan
        reporter = Progress(
            plan.duration, plan.schedule.expected, lambda: _reading(engine), wall, mode=kind, logger=log, stream=stream
        )
        engine.after_window.append(reporter.maybe_report)
        stack.callback(reporter.close)
        return None
    screen = screen_for(kind, stream, render_run, plain_line)
    plan = engine.plan
    title = f"{plan.name} · {'http' if engine.driver.noun == 'requests' else 'sim'} · seed {plan.seed}"
    if plan.virtual:
        title += " · virtual"
    view = RunView(engine, read, screen, wall, title=title, pusher=pusher, is_error_reason=is_error_reason)
    # Only a log stream on the same terminal goes above the view; a redirected one stays where it is.
    stack.enter_context(shown(screen, logs if logs is not None and logs.is_terminal else None))
    stack.callback(lambda: view.redraw(engine.t))
    engine.after_window.append(view.after_window)
    return view


def _reading(engine: Engine) -> Reading:
    c = engine.counts
    d = engine.driver
    return Reading(c.started, c.completed, d.errors(), d.latency_quantile(0.95), d.gate_percent())
