"""The fault timeline: overlays placed on the run's time line, composed at any moment.

An overlay is a scenario over a window: start, duration, optional ramp in and
out, and a magnitude. Its intensity at run time ``t`` is a trapezoid::

    x(t) = magnitude * min(1, (t - start) / ramp_in, (end - t) / ramp_out)   inside [start, end)

Several overlays may be active at once; they apply in the order they were
given, each to the state the previous one produced, so an error scenario during
a latency scenario adds its errors to the slow traffic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loadsim.overlays.scenarios import Scenario
from loadsim.overlays.state import RunState


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
            "duration_seconds": self.duration,
            "ramp_in_seconds": self.ramp_in,
            "ramp_out_seconds": self.ramp_out,
            "magnitude": self.magnitude,
            "options": dict(self.options),
        }


@dataclass(frozen=True, slots=True)
class Active:
    """An overlay acting at some moment, with its intensity."""

    overlay: Overlay
    intensity: float


class Timeline:
    """All overlays of a run; pure: the state at ``t`` depends on ``t`` alone."""

    def __init__(self, overlays: Sequence[Overlay] = ()) -> None:
        self.overlays = tuple(overlays)

    def __bool__(self) -> bool:
        return bool(self.overlays)

    def active(self, t: float) -> list[Active]:
        """Overlays acting at ``t``, in the order given."""
        out = []
        for ov in self.overlays:
            x = ov.intensity(t)
            if x > 0:
                out.append(Active(ov, x))
        return out

    def state_at(self, base: RunState, t: float) -> tuple[RunState, list[Active]]:
        """The state in force at ``t``: ``base`` with every active overlay applied."""
        active = self.active(t)
        state = base
        for a in active:
            state = a.overlay.scenario.apply(state, a.intensity, a.overlay.options)
        return state, active
