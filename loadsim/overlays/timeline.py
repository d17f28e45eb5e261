"""The fault timeline: overlays placed on the run's time line, composed at any moment.

An overlay is a scenario over a window: start, duration, optional ramp in and
out, and a magnitude. Its intensity at run time ``t`` is a trapezoid::

    x(t) = magnitude * min(1, (t - start) / ramp_in, (end - t) / ramp_out)   inside [start, end)

Several overlays may be active at once; they apply in the order they were
given, each to the state the previous one produced, so an error scenario during
a latency scenario adds its errors to the slow traffic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from loadsim.overlays.scenarios import Scenario
from loadsim.overlays.state import RunState

MAX_MAGNITUDE = 10.0
"""Strongest an overlay may act (its intensity's plateau)."""


@dataclass(frozen=True, slots=True)
class Overlay:
    """A scenario over a window of run time."""

    scenario: Scenario
    start: float
    duration: float
    ramp_in: float = 0.0
    ramp_out: float = 0.0
    magnitude: float = 1.0
    options: Mapping[str, Any] = field(default_factory=dict)
    """The scenario's options, defaults filled in."""

    @property
    def end(self) -> float:
        """When the window closes (run time)."""
        return self.start + self.duration

    @property
    def name(self) -> str:
        """The scenario's name."""
        return self.scenario.name

    def intensity(self, t: float) -> float:
        """How strongly the overlay acts at ``t`` (0 outside its window)."""
        if not self.start <= t < self.end:
            return 0.0
        x = 1.0
        if self.ramp_in > 0:
            x = min(x, (t - self.start) / self.ramp_in)
        if self.ramp_out > 0:
            x = min(x, (self.end - t) / self.ramp_out)
        return self.magnitude * max(x, 0.0)

    def describe(self) -> dict[str, Any]:
        """The overlay's parameters, for logs and ``loadsim check``."""
        return {
            "scenario": self.name,
            "start_seconds": self.start,
            "duration_seconds": None if math.isinf(self.duration) else self.duration,
            "ramp_in_seconds": self.ramp_in,
            "ramp_out_seconds": self.ramp_out,
            "magnitude": self.magnitude,
            "options": dict(self.options),
        }


@dataclass(frozen=True, slots=True)
class Active:
    """An overlay acting at some moment, with its intensity."""

    index: int
    """Its place in the timeline (stable for the run)."""
    overlay: Overlay
    intensity: float


class Timeline:
    """All overlays of a run: the state at ``t`` depends on ``t`` and the overlays alone.

    Overlays planned in a profile are fixed; a drill or a control API can also start one
    now, open-ended, and stop it later (:meth:`start_now`, :meth:`stop_now`). Overlays are
    only ever appended or shortened, so indices stay stable for the run.
    """

    def __init__(self, overlays: Sequence[Overlay] = ()) -> None:
        self.overlays: list[Overlay] = list(overlays)

    def __bool__(self) -> bool:
        return bool(self.overlays)

    def active(self, t: float) -> list[Active]:
        """Overlays acting at ``t``, in the order given."""
        out = []
        for i, ov in enumerate(self.overlays):
            x = ov.intensity(t)
            if x > 0:
                out.append(Active(i, ov, x))
        return out

    def start_now(
        self, scenario: Scenario, t: float, options: Mapping[str, Any] | None = None, magnitude: float = 1.0
    ) -> Overlay:
        """Start ``scenario`` at run time ``t`` until stopped; options are checked against the scenario's limits."""
        problems = scenario.option_problems(options or {})
        if problems:
            raise ValueError("; ".join(f"{key}: {why}" for key, why in problems))
        if not (math.isfinite(magnitude) and 0 < magnitude <= MAX_MAGNITUDE):
            msg = f"magnitude must be > 0 and <= {MAX_MAGNITUDE:g}, got {magnitude!r}"
            raise ValueError(msg)
        overlay = Overlay(scenario, t, math.inf, magnitude=magnitude, options={**scenario.options, **(options or {})})
        self.overlays.append(overlay)
        return overlay

    def stop_now(self, name: str, t: float) -> int:
        """End every overlay of scenario ``name`` still open at ``t``; returns how many."""
        stopped = 0
        for i, ov in enumerate(self.overlays):
            if ov.name == name and ov.start <= t < ov.end:
                self.overlays[i] = replace(ov, duration=max(t - ov.start, 0.0))
                stopped += 1
        return stopped

    def state_at(self, base: RunState, t: float) -> tuple[RunState, list[Active]]:
        """The state in force at ``t``: ``base`` with every active overlay applied."""
        active = self.active(t)
        state = base
        for a in active:
            state = a.overlay.scenario.apply(state, a.intensity, a.overlay.options)
        return state, active
