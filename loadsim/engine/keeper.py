"""The state keeper: checkpoints on an interval of its clock; what it wrote last is what the exposition serves.

It captures between two engine windows (the engine and the driver agree then),
writes off the event loop, and only then publishes the captured families to the
frozen registry that ``/metrics`` and the pusher read, so nothing exposed is
ahead of what a restart would resume from. A write that fails (disk full, volume
gone) is logged once per failure spell, never crashes the run, and the exposition
keeps the last good checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from loadsim.clock import Clock
from loadsim.engine import checkpoint
from loadsim.engine.checkpoint import Checkpoint, Identity, StateError
from loadsim.engine.driver import Stateful


@dataclass(frozen=True, slots=True)
class StateOptions:
    """``--state FILE`` and how to treat a missing or old file."""

    path: Path
    mode: str = "resume"
    """``resume`` (the file must exist), ``fresh`` (start over, keeping the old file as .bak)
    or ``fresh-if-missing`` (resume when present, start when absent)."""
    interval: float = 5.0
    """Seconds of wall time between checkpoints."""


def open_state(options: StateOptions, identity: Identity) -> Checkpoint | None:
    """The checkpoint to resume from, or None to start a new run; StateError when neither is allowed."""
    path = options.path
    if options.mode == "fresh":
        if path.exists():
            path.replace(path.with_name(path.name + ".bak"))
        return None
    if options.mode == "fresh-if-missing" and not path.exists():
        return None
    return checkpoint.read(path, identity)


class StateKeeper:
    """Writes checkpoints of ``components`` every ``options.interval`` of ``clock`` time, and at :meth:`stop`."""

    def __init__(  # noqa: PLR0917 - each collaborator injected once
        self,
        identity: Identity,
        components: Mapping[str, Stateful],
        registry: CollectorRegistry,
        options: StateOptions,
        clock: Clock,
        log: Any,
    ) -> None:
        self.identity = identity
        self.components = components
        self.registry = registry
        self.options = options
        self.clock = clock
        self.log = log
        self.frozen = checkpoint.FrozenRegistry()
        self.written = 0
        """Checkpoints that reached the disk."""
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def exposed(self) -> CollectorRegistry:
        """The registry to serve and push: the families of the last checkpoint on disk."""
        return self.frozen.registry()

    async def checkpoint(self) -> bool:
        """Capture, write off the loop, then publish what was written; returns whether it reached the disk."""
        ck = checkpoint.capture(self.identity, self.components)
        families = list(self.registry.collect())
        try:
            await asyncio.to_thread(checkpoint.write, self.options.path, ck)
        except OSError as e:
            if not self._failing:
                # An expected I/O failure (disk full, volume gone): one line, no traceback.
                self.log.error("state.write_failed", path=str(self.options.path), error=str(e))  # noqa: TRY400
            self._failing = True
            return False
        if self._failing:
            self.log.info("state.write_recovered", path=str(self.options.path))
        self._failing = False
        self.frozen.freeze(families)
        self.written += 1
        return True

    def start(self) -> None:
        """Checkpoint every interval in the background."""
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await self.clock.sleep(self.options.interval)
            await self.checkpoint()

    async def stop(self) -> None:
        """Stop the interval and write the final checkpoint."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.checkpoint()


__all__ = ["StateError", "StateKeeper", "StateOptions", "open_state"]
