"""The vocabulary that crosses module lines: what flows from arrivals to sinks.

profile -> plan -> schedule -> arrivals (start times) -> outcome model
(+ overlays) -> :class:`StartEffects` and :class:`Executions` -> sinks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from loadsim.clock import Clock
from loadsim.model.sampler import Executions, StartEffects

__all__ = ["Clock", "Executions", "Sink", "StartEffects", "WindowObserver"]


class Sink(Protocol):
    """Receives outcomes in bulk, window by window; must never block the event loop."""

    def record_starts(self, effects: StartEffects) -> None:
        """Everything the window's sends did when they started."""
        ...

    def record_executions(self, done: Executions) -> None:
        """Executions that completed during the window."""
        ...


WindowObserver = Callable[[float, float, NDArray[np.float64]], None]
"""Called with ``(t0, t1, start_times)`` for every window: per-second counts, plots, tests."""
