"""The rollout controller's settings, and its heartbeat mode: a run every 10 minutes, as the real cron does.

Two modes. ``heartbeat`` (the default) only pushes what a dry-run controller
pushes: ``rollout_controller_runs_total``, ``rollout_controller_changes_total``
and ``rollout_controller_percent`` once per run, deciding ``hold`` every time. A
healthy default never fails a run, because ``RolloutControllerFailing`` fires on
a single failed run in 15 minutes. ``policy`` puts the relay's real controller in
the loop (:mod:`loadsim.rollout`, :mod:`loadsim.drivers.controller`): it reads the
simulated SLOs, decides, and its percent gates the traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal, Protocol

import numpy as np
from annotated_types import Le
from pydantic import ConfigDict, Field

from loadsim.contract import CONTROLLER_RESULTS, CONTROLLER_RUN_STATUSES
from loadsim.units import Positive, Probability, Seconds, SecondsOrZero

Percent = Annotated[int, Field(ge=0, le=100)]
MIN_INTERVAL = 1.0
"""Shortest time between two controller runs (seconds of run time, after the time scale)."""


@dataclass(frozen=True, slots=True)
class ControllerParams:
    """How the simulated controller behaves (``[controller]`` in a profile)."""

    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")

    mode: Literal["heartbeat", "policy"] = "heartbeat"
    """``heartbeat``: push a dry run's series every interval. ``policy``: decide on the SLOs, gate the traffic."""
    interval: Seconds = 600.0
    """Seconds between runs (the real cron: 10 minutes)."""
    percent: Percent = 0
    """The rollout percent at the start (heartbeat: the percent it pushes)."""
    result: Literal["promote", "rollback", "hold"] = "hold"
    """Heartbeat mode: the result every run pushes."""
    failure_probability: Probability = 0.0
    """Chance that a run fails (as ``prom_unreachable`` or ``redis_error``, evenly)."""
    running: bool = True
    """False stops the controller (it died); the controller-stalled overlay sets it."""
    fidelity: Literal["as-implemented", "as-intended"] = "as-implemented"
    """Policy mode: the relay's controller as its code runs (bugs included), or as its runbooks mean it."""
    dry_run: bool = False
    """Policy mode: decide and log, but change nothing (the percent stays, dwell never engages)."""
    dwell: SecondsOrZero = 900.0
    """Policy mode: no change within this long of the last one (rollbacks included)."""
    cooldown: SecondsOrZero = 3600.0
    """Policy mode: no promotion within this long of a rollback."""
    paused: bool = False
    """Policy mode: every run exits at once, pushing nothing."""
    time_scale: Annotated[Positive, Le(1000)] = 1.0
    """Divides the interval, the queries' windows, the dwell and the cooldown (for time-scaled rules)."""

    def __post_init__(self) -> None:
        # A run per engine window at most is what the heartbeat and the policy loop are built for;
        # an interval of (nearly) nothing would have them loop without end inside one window.
        if self.interval / self.time_scale < MIN_INTERVAL:
            msg = (
                f"interval / time_scale must be at least {MIN_INTERVAL:g}s (a controller run every second at most), "
                f"got {self.interval:g}s / {self.time_scale:g}"
            )
            raise ValueError(msg)


class ControllerSink(Protocol):
    """Where controller runs are recorded."""

    def record_controller_run(self, status: int, result: int, percent: float) -> None:
        """Count one run."""
        ...


class ControllerHeartbeat:
    """Emits one run per interval of run time; the first run is at t = 0."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.next_run = 0.0

    def advance(self, t: float, params: ControllerParams, sink: ControllerSink) -> int:
        """Record every run due before ``t``; returns how many ran."""
        ran = 0
        while self.next_run < t:
            if params.running:
                status = 0
                if params.failure_probability > 0 and self.rng.random() < params.failure_probability:
                    status = 1 + int(self.rng.integers(0, len(CONTROLLER_RUN_STATUSES) - 1))
                sink.record_controller_run(status, CONTROLLER_RESULTS.index(params.result), params.percent)
                ran += 1
            self.next_run += params.interval / params.time_scale
        return ran
