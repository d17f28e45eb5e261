"""What overlays can change: the run's parameters at one moment, never a metric value.

Every scenario is a pure function from a :class:`RunState` (and its intensity,
0 to 1) to a new one. The engine samples with the state in force for each
window, so counters stay cumulative and histograms stay whole whatever the
overlays do.
"""

from __future__ import annotations

from dataclasses import dataclass

from loadsim.model.controller import ControllerParams
from loadsim.model.params import ModelParams


@dataclass(frozen=True, slots=True)
class RunState:
    """The parameters in force at one moment of a run."""

    model: ModelParams
    controller: ControllerParams
    arrival_scale: float = 1.0
    """Multiplies the schedule's rate (a traffic drop)."""
    controller_visible: bool = True
    """False removes the controller's series from the exposition."""
    exposition_up: bool = True
    """False makes ``/metrics`` stop answering and pushes stop (metrics missing)."""
    rate: float = 0.0
    """The schedule's rate at this moment, for scenarios defined per second."""
