"""Shards: one run split over N processes with no coordinator, as k6's execution segments split a schedule.

Every shard draws the run's *whole* arrival sequence (the same windows on the
same grid, from the same seed) and keeps its stripe of it: shard ``K`` of ``N``
keeps arrival ``i`` (its global index, counted from the run's start in the
order drawn) when ``i % N == K``. So the union of the N shards' arrivals is the
single process's, time for time, and each shard's share is exact to one arrival
per window: no shard waits on another, and none needs to be told its part.

Outcomes do not depend on N either. A sharded simulated run draws each window's
outcomes from a stream of its own, keyed on the run's seed and the global index
of the window's first arrival (:func:`window_random`), for the whole window, and
keeps its stripe's sends; window totals that belong to no one send (side
counters such as sanitization changes) go to the one shard whose stripe holds
the window's first arrival (:meth:`Shard.owns`). The fleet's integer totals are
therefore those of ``--shard 0/1``, bit for bit, whatever N. The price: every
shard samples every window (one core samples ~9.6M sends/s, so a fleet of
simulated relays stays far from that; it is the HTTP driver that needs shards
for throughput, and it samples nothing).

A shard that starts late or restarts walks the windows it was not there for
(:meth:`ShardArrivals.skip_window`): it draws them as everyone did, so its
random stream stays the fleet's, and counts its stripe of them as missed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from loadsim.arrivals import ArrivalKind, Arrivals
from loadsim.schedule import Schedule

INDEX_ENV = "JOB_COMPLETION_INDEX"
"""Where a Kubernetes Indexed Job puts each pod's index (a StatefulSet's manifest copies its pod index there)."""
OUTCOME_KEY = 0x5A4D
"""Spawn key that sets the per-window outcome streams apart from the run's other streams."""
FloatArray = NDArray[np.float64]
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            msg = f"the shard count must be >= 1, got {self.count}"
            raise ValueError(msg)
        if not 0 <= self.index < self.count:
            msg = f"the shard index must be in 0..{self.count - 1} for {self.count} shards, got {self.index}"
            raise ValueError(msg)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``K/N`` as in ``--shard 2/4``; ValueError says what was expected."""
        m = _SHARD.match(text)
        if m is None:
            msg = f"expected K/N with 0 <= K < N, e.g. 0/4, got {text!r}"
            raise ValueError(msg)
        return cls(int(m[1]), int(m[2]))

    @classmethod
    def from_env(cls, count: int, environ: dict[str, str] | None = None) -> Shard:
        """Shard ``$JOB_COMPLETION_INDEX`` of ``count`` (what an Indexed Job gives each pod)."""
        env = os.environ if environ is None else environ
        raw = env.get(INDEX_ENV)
        if raw is None or not raw.strip().isdigit():
            msg = f"needs ${INDEX_ENV} set to the pod's index (0..{count - 1}), got {raw!r}"
            raise ValueError(msg)
        return cls(int(raw), count)

    def offset(self, first: int) -> int:
        """The first position of this shard's stripe in a window whose first arrival has global index ``first``."""
        return (self.index - first) % self.count

    def owns(self, first: int) -> bool:
        """Whether the window whose first arrival is ``first`` is this shard's for window totals."""
        return first % self.count == self.index


def window_random(seed: int, first: int) -> np.random.Generator:
    """The outcome stream of the window whose first arrival has global index ``first``.

    Keyed on the run's seed and that index alone, so every shard, and a single process,
    draws the same outcomes for the same window (about 12 us to make, once per window).
    """
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(OUTCOME_KEY, first))))


def shard_seed(seed: int, shard: Shard) -> int:
    """A seed of this shard's own, for what it alone draws (request contents, label splits)."""
    state = np.random.SeedSequence(seed, spawn_key=(OUTCOME_KEY, 1 << 20, shard.index)).generate_state(1, np.uint64)
    return int(state[0])


@dataclass(frozen=True, slots=True)
class Drawn:
    """One window's arrivals as the whole fleet drew them."""

    first: int
    """Global index of the window's first arrival."""
    starts: FloatArray
    keep: NDArray[np.intp]
    """Positions in ``starts`` of this shard's stripe."""


class ShardArrivals(Arrivals):
    """The fleet's arrival process, returning this shard's stripe of each window."""

    def __init__(self, schedule: Schedule, kind: ArrivalKind, rng: np.random.Generator, shard: Shard) -> None:
        super().__init__(schedule, kind, rng)
        self.shard = shard
        self.drawn = 0
        """Arrivals the fleet has drawn so far: the global index of the next one."""
        self.last = Drawn(0, np.empty(0, dtype=np.float64), np.empty(0, dtype=np.intp))
        """The last window drawn (what the sharded simulated driver samples)."""

    def draw(self, t0: float, t1: float, scale: float = 1.0) -> FloatArray:
        starts = super().draw(t0, t1, scale)
        first = self.drawn
        self.drawn += len(starts)
        keep = np.arange(self.shard.offset(first), len(starts), self.shard.count, dtype=np.intp)
        self.last = Drawn(first, starts, keep)
        return starts[keep] if self.shard.count > 1 else starts

    def skip_window(self, t0: float, t1: float, scale: float = 1.0) -> int:
        """Draw a window this shard was not there for; returns how many of its arrivals it missed."""
        return len(self.draw(t0, t1, scale))

    # -- state (a component of the checkpoint, beside the engine's own part) --------------------

    def snapshot(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return {"shard": str(self.shard), "drawn": self.drawn}, {}

    def restore(self, part: tuple[dict[str, Any], dict[str, Any]]) -> None:
        meta = part[0]
        if meta.get("shard") != str(self.shard):
            msg = f"it was written by shard {meta.get('shard')}, this is shard {self.shard}"
            raise ValueError(msg)
        self.drawn = int(meta["drawn"])
