"""Checkpoints: a run's position, random streams and totals, written so a restart resumes.

A 48-hour observation window must survive a restart: ``--state FILE`` writes
the engine's run time, every random generator's state, the relay's cumulative
totals, the summary and the sends still in flight, atomically (write a temporary
file, fsync, rename, fsync the directory) every checkpoint interval and at exit.
A restart with the same file resumes with counters continuing where they
stopped, so ``rate()`` never sees a reset.

Never backwards, even after ``kill -9``: while a state file is in use, what is
exposed (``/metrics`` and pushes) is the registry as of the last checkpoint that
reached the disk, never the live totals. A killed run restarts from exactly what
Prometheus last saw (or more), at the cost of exposing totals up to one
checkpoint interval old.

The file is an ``.npz`` archive: arrays as arrays, everything else as one JSON
document, and a fingerprint of the profile and seed so that another run's state
is refused, never silently adopted.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from loadsim.engine.loop import Engine
from loadsim.model.sampler import Executions

FORMAT = "loadsim-state"
VERSION = 1

_RELAY_ARRAYS = (
    "exec",
    "errors",
    "structured",
    "latency_buckets",
    "latency_sum",
    "mime_buckets",
    "attachment_bytes",
    "inline_refs",
    "sanitization",
    "oauth",
    "controller_runs",
    "controller_changes",
)


class StateError(Exception):
    """A state file that cannot be used for this run; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One captured state, ready to write or to restore."""

    meta: dict[str, Any]
    arrays: dict[str, NDArray[Any]]

    @property
    def t(self) -> float:
        """Run time the checkpoint was taken at."""
        return float(self.meta["t"])

    @property
    def epoch(self) -> float:
        """Unix time of the run's time 0."""
        return float(self.meta["epoch"])


def capture(engine: Engine) -> Checkpoint:
    """Copy everything a restart needs, between two engine windows (so it is consistent)."""
    relay, summary, pending = engine.relay, engine.summary, engine.inflight.pending
    arrays: dict[str, NDArray[Any]] = {f"relay.{name}": getattr(relay, name).copy() for name in _RELAY_ARRAYS}
    arrays |= {
        "summary.class_counts": summary.class_counts.copy(),
        "summary.latency": summary.latency.counts.copy(),
        "inflight.cls": pending.cls.copy(),
        "inflight.latency": pending.latency.copy(),
        "inflight.done_at": pending.done_at.copy(),
    }
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "profile": engine.plan.name,
        "seed": engine.plan.seed,
        "fingerprint": engine.plan.fingerprint,
        "virtual": engine.plan.virtual,
        "epoch": engine.plan.epoch,
        "t": engine.t,
        "arrivals_cumulative_expected": engine.arrivals.cumulative_expected,
        "controller_next_run": engine.controller.next_run,
        "relay": {
            "mime_sum": relay.mime_sum,
            "controller_percent": relay.controller_percent,
        },
        "summary": {
            "scheduled": summary.scheduled,
            "started": summary.started,
            "dropped": summary.dropped,
            "abandoned": summary.abandoned,
            "missed": summary.missed,
        },
        "random": {name: gen.bit_generator.state for name, gen in engine.random.generators().items()},
    }
    return Checkpoint(meta, arrays)


def write(path: Path, checkpoint: Checkpoint) -> None:
    """Write atomically: a reader sees the old file or the new one, never a torn one."""
    buffer = io.BytesIO()
    payload = {"__meta__": np.array(json.dumps(checkpoint.meta)), **checkpoint.arrays}
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


def read(path: Path, *, run_fingerprint: str, profile: str, seed: int) -> Checkpoint:
    """Read and check a state file; :class:`StateError` explains any reason it cannot be used."""
    fresh = "pass --fresh to start a new run (the old file is kept as .bak)"
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["__meta__"]))
            arrays = {k: npz[k] for k in npz.files if k != "__meta__"}
    except FileNotFoundError:
        msg = "no state file; pass --fresh to start a new run, or --fresh-if-missing to create it when absent"
        raise StateError(msg) from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise StateError(f"not a readable loadsim state file ({type(e).__name__}: {e}); {fresh}") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise StateError(f"not a loadsim state file of version {VERSION}; {fresh}")
    if meta["fingerprint"] != run_fingerprint:
        if meta["profile"] != profile or meta["seed"] != seed:
            why = (
                f"written by profile {meta['profile']!r} with seed {meta['seed']}, "
                f"this run is {profile!r} with seed {seed}"
            )
        else:
            why = f"profile {profile!r} has changed since this state was written"
        raise StateError(f"{why}; {fresh}")
    missing = [f"relay.{n}" for n in _RELAY_ARRAYS if f"relay.{n}" not in arrays]
    if missing:
        raise StateError(f"incomplete state file (missing {', '.join(missing)}); {fresh}")
    return Checkpoint(meta, arrays)


def restore(engine: Engine, checkpoint: Checkpoint) -> None:
    """Put a checkpoint back into a freshly built engine (before it runs)."""
    meta, arrays = checkpoint.meta, checkpoint.arrays
    relay, summary, health = engine.relay, engine.summary, engine.health
    for name in _RELAY_ARRAYS:
        current = getattr(relay, name)
        saved = arrays[f"relay.{name}"]
        if saved.shape != current.shape:
            msg = f"state file has {name} of shape {saved.shape}, this run needs {current.shape}; pass --fresh"
            raise StateError(msg)
        current[...] = saved
    relay.mime_sum = float(meta["relay"]["mime_sum"])
    relay.controller_percent = float(meta["relay"]["controller_percent"])
    summary.class_counts[...] = arrays["summary.class_counts"]
    summary.latency.counts[...] = arrays["summary.latency"]
    for key, value in meta["summary"].items():
        setattr(summary, key, int(value))
    engine.inflight.pending = Executions(
        cls=arrays["inflight.cls"].astype(np.int8),
        latency=arrays["inflight.latency"].astype(np.float64),
        done_at=arrays["inflight.done_at"].astype(np.float64),
    )
    engine.arrivals.cumulative_expected = float(meta["arrivals_cumulative_expected"])
    engine.controller.next_run = float(meta["controller_next_run"])
    for name, gen in engine.random.generators().items():
        gen.bit_generator.state = meta["random"][name]
    engine.t = float(meta["t"])
    # loadsim's own counters continue too (prometheus-client counters only go up from 0).
    health.scheduled.inc(summary.scheduled)
    health.started.inc(summary.started)
    health.dropped.inc(summary.dropped)
    health.completed.inc(summary.finished)
    health.abandoned.inc(summary.abandoned)
    health.missed.inc(summary.missed)
    health.in_flight.set(len(engine.inflight))


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
