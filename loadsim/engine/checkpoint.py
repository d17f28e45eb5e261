"""Checkpoints: a run's position, random streams and totals, written so a restart resumes.

A 48-hour observation window must survive a restart: ``--state FILE`` writes what
the engine and its driver hand over (:meth:`snapshot` on each: the run time,
every random generator's state, the counts, the driver's cumulative totals and
what it had in flight) atomically (write a temporary file, fsync, rename, fsync
the directory) every checkpoint interval and at exit. A restart with the same
file resumes with counters continuing where they stopped, so ``rate()`` never
sees a reset. Each component owns its part: this module knows the file, not
what is inside the parts.

Never backwards, even after ``kill -9``: while a state file is in use, what is
exposed (``/metrics`` and pushes) is the registry as of the last checkpoint that
reached the disk, never the live totals (:class:`FrozenRegistry`). A killed run
restarts from exactly what Prometheus last saw (or more), at the cost of
exposing totals up to one checkpoint interval old.

The file is an ``.npz`` archive: arrays as arrays, everything else as one JSON
document, and a fingerprint of the profile, seed and driver so that another
run's state is refused, never silently adopted.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from loadsim.engine.driver import Part, Stateful
from loadsim.files import MIB, InputFileError, read_bytes

FORMAT = "loadsim-state"
VERSION = 2
"""Version 2: one part per component (engine, driver). Version 1 files are refused with a message."""
SEP = "/"
MAX_BYTES = 256 * MIB
"""Largest state file read, and largest it may inflate to (a 48-hour HTTP run's is under 1 MiB)."""


class StateError(Exception):
    """A state file that cannot be used for this run; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Identity:
    """What makes two runs the same run, for a state file."""

    profile: str
    seed: int
    fingerprint: str
    virtual: bool
    epoch: float
    driver: str


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One captured state, ready to write or to restore."""

    meta: dict[str, Any]
    parts: dict[str, Part]

    @property
    def t(self) -> float:
        """Run time the checkpoint was taken at."""
        return float(self.parts["engine"][0]["t"])

    @property
    def epoch(self) -> float:
        """Unix time of the run's time 0."""
        return float(self.meta["epoch"])


def capture(identity: Identity, components: Mapping[str, Stateful]) -> Checkpoint:
    """Ask each component for its part, between two engine windows (so they agree)."""
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "profile": identity.profile,
        "seed": identity.seed,
        "fingerprint": identity.fingerprint,
        "virtual": identity.virtual,
        "epoch": identity.epoch,
        "driver": identity.driver,
    }
    return Checkpoint(meta, {name: c.snapshot() for name, c in components.items()})


OPTIONAL_PARTS = frozenset({"pusher"})
"""Parts a run may resume without (a file written before they existed, or by a run that did not push)."""
UNFIT = (KeyError, ValueError, TypeError, IndexError, AttributeError, OverflowError, RecursionError)
"""What a part that does not fit raises as it is put back: a crafted or damaged file, never a crash."""


def restore(checkpoint: Checkpoint, components: Mapping[str, Stateful]) -> None:
    """Hand each freshly built component its part back (before the run starts)."""
    for name, component in components.items():
        if name not in checkpoint.parts and name in OPTIONAL_PARTS:
            continue
        try:
            component.restore(checkpoint.parts[name])
        except UNFIT as e:
            what = f"{type(e).__name__}: {e}"[:200]
            msg = f"the state file's {name} part does not fit this run ({what}); pass --fresh to start a new run"
            raise StateError(msg) from None


def write(path: Path, checkpoint: Checkpoint) -> None:
    """Write atomically: a reader sees the old file or the new one, never a torn one."""
    buffer = io.BytesIO()
    meta = {**checkpoint.meta, "parts": {name: part[0] for name, part in checkpoint.parts.items()}}
    arrays = {f"{name}{SEP}{key}": a for name, part in checkpoint.parts.items() for key, a in part[1].items()}
    payload = {"__meta__": np.array(json.dumps(meta)), **arrays}
    np.savez(buffer, **payload)  # type: ignore[arg-type] # numpy's stub reads the keys as its own keywords
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(buffer.getvalue())
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _load(path: Path) -> tuple[Any, dict[str, np.ndarray[Any, Any]]]:
    """The JSON document and the arrays of a state file, read within :data:`MAX_BYTES`.

    Read by :mod:`loadsim.files` (a FIFO or a device is refused, not waited on), then
    every member's declared size is checked before numpy inflates it: an archive whose
    members would inflate past the limit is refused unread.
    """
    data = read_bytes(path, MAX_BYTES)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        if sum(info.file_size for info in archive.infolist()) > MAX_BYTES:
            raise ValueError(f"its members would inflate past {MAX_BYTES >> 20} MiB")
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        meta = json.loads(str(npz["__meta__"]))
        arrays = {k: npz[k] for k in npz.files if k != "__meta__"}
    return meta, arrays


FRESH = "pass --fresh to start a new run (the old file is kept as .bak)"


def _readable(path: Path) -> tuple[Any, dict[str, np.ndarray[Any, Any]]]:
    """:func:`_load`, every way it can fail turned into a :class:`StateError` that says what to do."""
    try:
        return _load(path)
    except InputFileError as e:
        if str(e) == "file not found":
            msg = "no state file; pass --fresh to start a new run, or --fresh-if-missing to create it when absent"
            raise StateError(msg) from None
        raise StateError(f"not a usable state file ({e}); {FRESH}") from None
    except (*UNFIT, OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError) as e:
        what = f"{type(e).__name__}: {e}"[:200]
        raise StateError(f"not a readable loadsim state file ({what}); {FRESH}") from None


def read(path: Path, identity: Identity) -> Checkpoint:
    """Read and check a state file; :class:`StateError` explains any reason it cannot be used."""
    fresh = FRESH
    meta, arrays = _readable(path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise StateError(f"not a loadsim state file of version {VERSION}; {fresh}")
    problem = _malformed(meta)
    if problem:
        raise StateError(f"a damaged loadsim state file ({problem}); {fresh}")
    if meta.get("driver") != identity.driver:
        theirs = meta.get("driver")
        raise StateError(f"written by the {theirs} driver, this run uses the {identity.driver} driver; {fresh}")
    if meta["fingerprint"] != identity.fingerprint:
        raise StateError(f"{_another_run(meta, identity)}; {fresh}")
    parts_meta = meta.pop("parts")
    if "engine" not in parts_meta:
        raise StateError(f"incomplete state file (no engine part); {fresh}")
    parts: dict[str, Part] = {name: (m, {}) for name, m in parts_meta.items()}
    for key, a in arrays.items():
        name, _, sub = key.partition(SEP)
        if name in parts:
            parts[name][1][sub] = a
    return Checkpoint(meta, parts)


def _another_run(meta: dict[str, Any], identity: Identity) -> str:
    """How the run that wrote ``meta`` differs from this one."""
    if meta["profile"] != identity.profile or meta["seed"] != identity.seed:
        return (
            f"written by profile {meta['profile']!r} with seed {meta['seed']}, "
            f"this run is {identity.profile!r} with seed {identity.seed}"
        )
    return f"profile {identity.profile!r} has changed since this state was written"


def _malformed(meta: dict[str, Any]) -> str:
    """What is wrong with a state file's document (empty when its shape is right): types, not contents."""
    expected: dict[str, tuple[type, ...]] = {
        "profile": (str,),
        "seed": (int,),
        "fingerprint": (str,),
        "driver": (str,),
        "epoch": (int, float),
        "parts": (dict,),
    }
    for key, types in expected.items():
        value = meta.get(key)
        if not isinstance(value, types) or isinstance(value, bool):
            return f"{key}: expected {' or '.join(t.__name__ for t in types)}, got {type(value).__name__}"
    if not math.isfinite(meta["epoch"]):
        return f"epoch: expected a finite Unix time, got {meta['epoch']}"
    for name, part in meta["parts"].items():
        if not isinstance(part, dict):
            return f"parts.{name}: expected an object, got {type(part).__name__}"
    engine = meta["parts"].get("engine", {})
    t = engine.get("t", 0.0)
    if not isinstance(t, int | float) or isinstance(t, bool) or not math.isfinite(t) or t < 0:
        return f"parts.engine.t: expected a finite run time >= 0, got {t!r}"
    return ""


class FrozenRegistry(Collector):
    """Serves the families of a registry as they were at the last :meth:`freeze`."""

    def __init__(self) -> None:
        self._families: list[Metric] = []

    def freeze(self, families: Iterable[Metric]) -> None:
        """Publish ``families`` (collected at a checkpoint) from now on."""
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return list(self._families)

    def describe(self) -> Iterable[Metric]:
        return []

    def registry(self) -> CollectorRegistry:
        """A registry that exposes only this frozen view."""
        reg = CollectorRegistry(auto_describe=False)
        reg.register(self)
        return reg
