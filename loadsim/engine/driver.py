"""What the engine asks of a driver, and what flows between them.

The engine owns time, the schedule, the arrivals and the overlays: each window it
draws the arrival times and the parameters in force, and hands both to its
driver. The driver turns them into outcomes: the simulated driver samples them
in bulk from the outcome model (:mod:`loadsim.drivers.sim`), the HTTP driver
makes real requests (:mod:`loadsim.drivers.http`). Everything else (signals,
metrics server, pushes, checkpoints, progress, the summary) is the same for
both, which is why a driver's interface is this small.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from loadsim.overlays.state import RunState
from loadsim.overlays.timeline import Active

FloatArray = NDArray[np.float64]

Part = tuple[dict[str, Any], dict[str, NDArray[Any]]]
"""A component's checkpoint: JSON-ready values and numpy arrays (see :mod:`loadsim.engine.checkpoint`)."""


@dataclass(frozen=True, slots=True)
class Window:
    """One window of run time handed to the driver."""

    t0: float
    t1: float
    starts: FloatArray
    """Arrival times in ``[t0, t1)`` (run time; unsorted for Poisson arrivals)."""
    state: RunState
    """The parameters in force (overlays applied) at the window's middle."""
    active: Sequence[Active]
    """The overlays acting then, with their intensity."""


@dataclass(frozen=True, slots=True)
class Counts:
    """What a driver accounted for since it was last asked: the engine adds these to the run's totals."""

    started: int = 0
    dropped: int = 0
    """Arrivals not started because ``max_in_flight`` were already out (never queued)."""
    completed: int = 0
    """Sends (or requests) that now have an outcome."""
    abandoned: int = 0
    """Sends given up without an outcome (requests out when a killed run's checkpoint was taken)."""
    behind: int = 0
    """Arrivals not started because they came due too long ago (the machine fell behind), never queued."""
    missed: int = 0
    """Arrivals a killed run had been handed but not started when its checkpoint was taken: a restart never
    starts them, and they are not among those the engine counts missed (their time is before its resume point)."""


NO_COUNTS = Counts()


class Stateful(Protocol):
    """A component that a checkpoint saves and a restart restores."""

    def snapshot(self) -> Part:
        """Copies of everything a restart needs (taken between two windows)."""
        ...

    def restore(self, part: Part) -> None:
        """Put a snapshot back into a freshly built component (before it runs)."""
        ...


class Driver(Stateful, Protocol):
    """Turns each window's arrivals into outcomes."""

    noun: str
    """What one arrival is called in summaries: ``sends`` or ``requests``."""
    max_batch: int
    """Most arrivals it takes in one :meth:`window` call: the engine hands a busier window over in pieces."""

    def handover(self, t0: float, t1: float) -> float:
        """The run time at which the window ``[t0, t1)`` is handed over.

        The simulated driver takes a window once it has passed (``t1``): every send
        in it has started and its outcomes are known. The HTTP driver takes it a
        little before ``t0``, so each request can start at its own time.
        """
        ...

    async def open(self) -> None:
        """Get ready before run time starts (the HTTP driver opens its connections)."""
        ...

    def window(self, window: Window) -> Counts:
        """Start the window's arrivals; what was accounted since the last call."""
        ...

    def settle(self, t: float) -> Counts:
        """Account for what completed by run time ``t`` without new arrivals (the drain)."""
        ...

    def in_flight(self) -> int:
        """Arrivals started, or due to start, that have no outcome yet."""
        ...

    def next_due(self) -> float:
        """When the next send in flight completes, if the driver knows (inf otherwise)."""
        ...

    def request_stop(self) -> None:
        """Start nothing more; what is out may finish."""
        ...

    async def abandon(self) -> int:
        """Give up on everything still in flight (the grace ran out); returns how many."""
        ...

    async def close(self) -> None:
        """Release what :meth:`open` took (connections, fault-control overlays)."""
        ...

    def skip_to(self, t: float) -> None:
        """Resume at run time ``t`` after downtime: forget what was due in between."""
        ...

    def errors(self) -> int:
        """Outcomes so far that were not a success."""
        ...

    def latency_quantile(self, q: float) -> float:
        """Latency quantile of the outcomes so far (NaN when none)."""
        ...

    def gate_percent(self) -> int | None:
        """The rollout percent gating the traffic now (None when nothing gates it)."""
        ...

    def report(self) -> dict[str, Any]:
        """The driver's part of the run summary (outcomes by kind, latencies)."""
        ...
