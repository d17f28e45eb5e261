"""The simulated driver as one shard of a fleet: the whole window sampled from the window's stream, its stripe kept.

A plain simulated run draws outcomes from one stream, window after window, so
they would depend on how the arrivals were split. Here every window is sampled
whole from :func:`loadsim.shard.window_random` (keyed on the seed and the
window's first global arrival), exactly as every other shard samples it, and
only this shard's sends are recorded; the window totals go to the shard that
owns the window. The fleet's totals are then the same for any number of shards.
Everything after the sampling (in flight, completions, sinks, the controller's
heartbeat on shard 0 alone) is :class:`~loadsim.drivers.sim.SimDriver`'s.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from loadsim.drivers.sim import SimDriver
from loadsim.engine.driver import Counts, Window
from loadsim.model.sampler import Executions
from loadsim.shard import ShardArrivals, window_random

_NOTHING = Executions(
    cls=np.empty(0, dtype=np.int8), latency=np.empty(0, dtype=np.float64), done_at=np.empty(0, dtype=np.float64)
)


class ShardSimDriver(SimDriver):
    """A :class:`SimDriver` that keeps one shard's stripe of each window's outcomes."""

    def __init__(self, *args: Any, arrivals: ShardArrivals, seed: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.rollout is not None:
            msg = "the controller in the loop reads one process's figures; it cannot gate a fleet's shards"
            raise ValueError(msg)
        self.arrivals = arrivals
        self.shard = arrivals.shard
        self.seed = seed

    def window(self, window: Window) -> Counts:
        drawn = self.arrivals.last
        keep = drawn.keep
        room = max(self.max_in_flight - len(self.inflight), 0)
        dropped = max(0, len(keep) - room)
        if dropped:
            keep = keep[:room]
        guards = 0
        executions = _NOTHING
        if len(drawn.starts):
            rng = window_random(self.seed, drawn.first)
            effects, executions = self.model_for(window).sample(
                rng, drawn.starts, keep, totals=self.shard.owns(drawn.first)
            )
            guards = int(effects.guard_counts.sum())
            for sink in self.sinks:
                sink.record_starts(effects)
        due = self.inflight.add_and_pop_due(executions, window.t1)
        for sink in self.sinks:
            sink.record_executions(due)
        if self.shard.index == 0:
            # The relay has one controller: its heartbeat is reported by shard 0 alone.
            self.controller.advance(window.t1, window.state.controller, self.relay)
        return Counts(started=len(keep), dropped=dropped, completed=len(due) + guards)
