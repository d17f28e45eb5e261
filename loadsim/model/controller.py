"""The rollout controller's heartbeat: a run every 10 minutes, as the real controller cron does.

The relay's controller pushes ``rollout_controller_runs_total``,
``rollout_controller_changes_total`` and ``rollout_controller_percent`` once per
run. In a dry-run observation window it decides ``hold`` every time. A healthy
default never fails a run, because ``RolloutControllerFailing`` fires on a
single failed run in 15 minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from loadsim.contract import CONTROLLER_RESULTS, CONTROLLER_RUN_STATUSES


@dataclass(frozen=True, slots=True)
class ControllerParams:
    """How the simulated controller behaves."""

    interval: float = 600.0
    percent: float = 0.0
    result: str = "hold"
    failure_probability: float = 0.0
    """Chance that a run fails (as ``prom_unreachable`` or ``redis_error``, evenly)."""
    running: bool = True
    """False stops the heartbeat (the controller died)."""


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
            self.next_run += params.interval
        return ran
