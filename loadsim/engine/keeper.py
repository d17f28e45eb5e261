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
import fcntl
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

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
    """The checkpoint to resume from, or None to start a new run; StateError when neither is allowed.

    Nothing is changed on disk here: with ``fresh`` the old file is kept as ``.bak``
    by the first checkpoint written (:class:`StateKeeper`), so a run that fails to
    start (a busy port) leaves it where it was.
    """
    path = options.path
    if options.mode == "fresh":
        return None
    if options.mode == "fresh-if-missing" and not path.exists():
        return None
    return checkpoint.read(path, identity)


def backup_path(path: Path) -> Path:
    """Where ``--fresh`` keeps the file it starts over from."""
    return path.with_name(path.name + ".bak")


class StateLock:
    """An exclusive lock on a state file, held for the whole run: two runs never share one file.

    The lock is ``flock`` on a sidecar ``.NAME.lock`` (the state file itself is replaced
    by a rename at every checkpoint, so a lock on it would stay on the old inode). The
    kernel releases it when the process ends, however it ends (``kill -9`` too), so a
    stale lock cannot block a restart. The sidecar is left in place: deleting it while
    another run waits to open it would let two runs hold "the" lock. Creating it is also
    the check that loadsim can write in the state file's directory, made before the run.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(f".{path.name}.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise StateError (another run holds it, or the directory is not writable)."""
        try:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)  # as a checkpoint's write would
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as e:
            where = self.lock_path.parent
            raise StateError(f"cannot write in {where} ({e.strerror}); expected a writable directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder(fd)
            os.close(fd)
            who = f" (pid {holder})" if holder else ""
            why = f"another loadsim run{who} is using this state file; stop it or use another --state"
            raise StateError(why) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Let the lock go (the process ending does the same)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        return os.pread(fd, 32, 0).decode("ascii").strip()
    return ""


def state_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a state file (a directory, a FIFO, a device), or None; checked before the run."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"cannot use it ({e.strerror})"
    if stat.S_ISDIR(mode):
        return "is a directory; expected a state file path"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a FIFO, a socket or a device); expected a state file path"
    return None


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
        self._backup = options.mode == "fresh"
        """``--fresh``: the old file is moved to ``.bak`` by the first checkpoint written, not before."""

    def exposed(self) -> CollectorRegistry:
        """The registry to serve and push: the families of the last checkpoint on disk."""
        return self.frozen.registry()

    async def checkpoint(self) -> bool:
        """Capture, write off the loop, then publish what was written; returns whether it reached the disk."""
        ck = checkpoint.capture(self.identity, self.components)
        families = list(self.registry.collect())
        try:
            await asyncio.to_thread(self._write, ck)
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

    def _write(self, ck: Checkpoint) -> None:
        path = self.options.path
        if self._backup:
            if path.exists():
                path.replace(backup_path(path))
            self._backup = False
        checkpoint.write(path, ck)

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


__all__ = ["StateError", "StateKeeper", "StateLock", "StateOptions", "backup_path", "open_state", "state_problem"]
