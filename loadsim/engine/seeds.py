"""One seed per run, spawned into an independent random stream per concern.

Each concern draws from its own generator, so adding a draw to one (say, the
outcome model) never shifts another (the arrivals): the same seed and profile
give the same per-second arrival counts even after the model changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STREAMS = ("arrivals", "outcomes", "controller", "metrics", "overlays", "rollout")
"""Spawn order of the child streams; append only, never reorder (it would change every run)."""


@dataclass(frozen=True, slots=True)
class RunRandom:
    """The generators of one run, each spawned from the run's ``SeedSequence``."""

    seed: int
    arrivals: np.random.Generator
    outcomes: np.random.Generator
    controller: np.random.Generator
    metrics: np.random.Generator
    overlays: np.random.Generator
    rollout: np.random.Generator
    """Which (workspace, actor) pair each send comes from: the rollout gate's draws."""

    def generators(self) -> dict[str, np.random.Generator]:
        """Every stream by name (checkpoints save and restore their states)."""
        return {name: getattr(self, name) for name in STREAMS}

    @classmethod
    def from_seed(cls, seed: int) -> RunRandom:
        """Spawn every stream from ``seed``."""
        children = np.random.SeedSequence(seed).spawn(len(STREAMS))
        gens = {
            name: np.random.Generator(np.random.PCG64(child)) for name, child in zip(STREAMS, children, strict=True)
        }
        return cls(seed=seed, **gens)
