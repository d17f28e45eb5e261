"""Virtual runs judged by the relay's rules: one Dask task is a :class:`Batch` of them.

A detection run is healthy traffic for a lead-in long enough for every window the
alert reads to be full and for its ``for:`` to have run out (so an alert that healthy
traffic fires is already firing when the fault starts), then the fault at one
intensity until the deadline. A background run is healthy traffic alone, for hours.
Each run is built by the one engine factory, its scrapes recorded every 15 s as
``verify`` records them, and the relay's rule files evaluated over them in-process
(:mod:`loadsim.sensitivity.evaluate`, which a test holds equal to promtool).

The engine steps in windows of one scrape interval: a scrape at ``t`` sees exactly the
sends completed by ``t`` whatever the window, and the overlays here have no ramps and
start on a scrape, so the finer default window (5 s) would only cost time: 93 ms a run instead of 36.

Seeds are common across intensities: replicate ``i`` at a rate uses the same seed at every
intensity, so it sees the same arrivals (their own random stream) and the same outcome
draws until the first draw whose count depends on the fault. Neighbouring points then
differ less by noise than independent seeds would make them.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loadsim.plan import RunPlan, build_plan
from loadsim.profile import parse_profile
from loadsim.runtime.factory import build
from loadsim.sensitivity import evaluate, rules
from loadsim.sensitivity.knobs import KNOBS
from loadsim.sensitivity.series import from_recorder
from loadsim.verify.recorder import ScrapeRecorder

SCRAPE_INTERVAL = 15.0
"""The relay's scrape interval."""


@dataclass(frozen=True, slots=True)
class Batch:
    """A Dask task: ``len(seeds)`` runs of one axis at one intensity and rate (or background alone)."""

    axis: str | None
    """The axis's scenario (see :mod:`loadsim.sensitivity.knobs`), or None for background alone."""
    intensity: float
    rate: float
    seeds: tuple[int, ...]
    alerts: tuple[str, ...]
    lead: float
    """Healthy traffic before the fault (detection) or ignored at the start (background: the warm-up)."""
    window: float
    """The fault's length, which is the deadline (detection), or the run after the warm-up (background)."""
    point: int = 0
    """Index of the intensity in its axis's grid (for reassembling results)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one run showed, per alert."""

    seed: int
    detected: dict[str, float | None] = field(default_factory=dict)
    """Detection runs: seconds from the fault's start to the first evaluation it was firing at (None: never)."""
    at_onset: dict[str, bool] = field(default_factory=dict)
    """Detection runs: it was already firing when the fault started (healthy traffic fired it)."""
    fired: dict[str, int] = field(default_factory=dict)
    """Background runs: firing episodes after the warm-up (one that began in it and lasts past it counts)."""
    firing_seconds: dict[str, float] = field(default_factory=dict)
    """Background runs: how long it was firing after the warm-up."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    """A task's result: small (a few numbers per run), so it travels back cheaply."""

    batch: Batch
    outcomes: tuple[Outcome, ...]
    wall_seconds: float


def profile_data(batch: Batch, seed: int) -> dict[str, Any]:
    """The profile of one run of ``batch``."""
    data: dict[str, Any] = {
        "name": f"sensitivity:{batch.axis or 'background'}",
        "seed": seed,
        "duration": batch.lead + batch.window,
        "schedule": [{"kind": "constant", "rate": batch.rate}],
        "engine": {"virtual_tick": SCRAPE_INTERVAL},
    }
    if batch.axis is not None:
        axis = next(k.axis for k in KNOBS.values() if k.axis.scenario == batch.axis)
        data["overlay"] = [axis.overlay(batch.intensity, batch.lead, batch.window)]
    return data


def plan_of(batch: Batch, seed: int) -> RunPlan:
    """The run plan of one run of ``batch`` (profile validation included)."""
    return build_plan(parse_profile(profile_data(batch, seed), f"sensitivity:{batch.axis}"), virtual=True)


@functools.cache
def rule_sets(alerts: tuple[str, ...]) -> list[tuple[rules.RuleSet, tuple[str, ...]]]:
    """The rule files ``alerts`` need, parsed once per process, each cut to the alerts judged with it."""
    by_files: dict[tuple[Path, ...], list[str]] = {}
    for alert in alerts:
        by_files.setdefault(KNOBS[alert].rules, []).append(alert)
    return [(rules.load(list(files)).closure(names), tuple(names)) for files, names in by_files.items()]


def record(plan: RunPlan) -> ScrapeRecorder:
    """Run ``plan`` on the virtual clock, recording a scrape every 15 s."""
    run = build(plan)
    assert run.relay is not None
    recorder = ScrapeRecorder(run.relay, SCRAPE_INTERVAL)
    run.engine.after_window.append(recorder)
    asyncio.run(run.engine.run())
    return recorder


def firing(recorder: ScrapeRecorder, alerts: tuple[str, ...], end: float) -> dict[str, list[evaluate.Episode]]:
    """Every firing episode of ``alerts`` over a recorded run, up to run time ``end``."""
    out: dict[str, list[evaluate.Episode]] = {}
    for rule_set, names in rule_sets(alerts):
        store = from_recorder(recorder)
        found = evaluate.evaluate(rule_set, store, end)
        out.update({name: found.get(name, []) for name in names})
    return out


def judge(batch: Batch, seed: int, episodes: dict[str, list[evaluate.Episode]]) -> Outcome:
    """A run's outcome from its firing episodes."""
    onset = batch.lead
    if batch.axis is None:
        end = batch.lead + batch.window
        after = {a: [e for e in episodes[a] if e.resolved is None or e.resolved > onset] for a in batch.alerts}
        return Outcome(
            seed,
            fired={a: len(es) for a, es in after.items()},
            firing_seconds={
                a: sum(min(end, e.resolved or end) - max(onset, e.fired) for e in es) for a, es in after.items()
            },
        )
    detected: dict[str, float | None] = {}
    at_onset: dict[str, bool] = {}
    for alert in batch.alerts:
        ongoing = [e for e in episodes[alert] if e.fired <= onset and (e.resolved is None or e.resolved > onset)]
        later = [e.fired for e in episodes[alert] if onset < e.fired <= onset + batch.window]
        at_onset[alert] = bool(ongoing)
        detected[alert] = 0.0 if ongoing else (min(later) - onset if later else None)
    return Outcome(seed, detected=detected, at_onset=at_onset)


def run_one(batch: Batch, seed: int) -> Outcome:
    """One run of ``batch``: record, evaluate, judge."""
    recorder = record(plan_of(batch, seed))
    return judge(batch, seed, firing(recorder, batch.alerts, batch.lead + batch.window))


def run_batch(batch: Batch) -> BatchResult:
    """The Dask task: every run of ``batch``, in order."""
    t0 = time.perf_counter()
    outcomes = tuple(run_one(batch, seed) for seed in batch.seeds)
    return BatchResult(batch, outcomes, time.perf_counter() - t0)


def seeds(base: int, stream: str, rate: float, count: int, first: int = 0) -> tuple[int, ...]:
    """Replicate seeds for one rate: the same at every intensity (common random numbers).

    Derived through numpy's ``SeedSequence`` from the base seed, the stream (``detect``
    or ``background``) and the rate, so two streams never share a seed.
    """
    entropy = [base, zlib.crc32(stream.encode()), round(rate * 1000)]
    children = np.random.SeedSequence(entropy).spawn(first + count)[first:]
    return tuple(int(c.generate_state(1)[0]) for c in children)


def lead_for(alerts: Sequence[str], interval: float = 30.0) -> float:
    """A lead-in that fills every window the alerts read and runs out their ``for:``, plus one evaluation."""
    longest = 0.0
    for rule_set, names in rule_sets(tuple(alerts)):
        holds = [r.hold for r in rule_set.rules() if r.alert and r.name in names]
        longest = max(longest, rule_set.longest_range() + max(holds, default=0.0))
    return math.ceil((longest + interval) / SCRAPE_INTERVAL) * SCRAPE_INTERVAL
