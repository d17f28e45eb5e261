"""The sweep: which runs to make, made as Dask tasks, and what they add up to.

Tasks are :class:`~loadsim.sensitivity.runs.Batch` es submitted to a
``distributed.Client`` (a local cluster or the one at ``--scheduler``), read back with
``as_completed`` so progress is reported as each finishes. Dask does the scheduling,
the transport and the worker processes; this module only says what to run and adds up
what comes back. The long background runs are submitted with a higher priority so they
do not trail at the end.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from distributed import Client, as_completed

from loadsim.overlays.state import RunState
from loadsim.sensitivity import stats
from loadsim.sensitivity.knobs import KNOBS, Knob
from loadsim.sensitivity.runs import Batch, BatchResult, lead_for, plan_of, run_batch, seeds


@dataclass(frozen=True, slots=True)
class Spec:
    """What to sweep."""

    alerts: tuple[str, ...]
    grids: Mapping[str, tuple[float, ...]]
    """Intensities per axis (by scenario name), ascending."""
    rates: tuple[float, ...]
    runs: int
    """Runs per point (alert axis x intensity x rate); 0: background runs only."""
    deadline: float
    background_hours: float = 48.0
    background_runs: int = 1
    """Background runs per rate (0: no false-alarm figures)."""
    seed: int = 1
    batch: int = 25
    """Runs per Dask task."""

    def axes(self) -> dict[str, list[str]]:
        """Alerts per axis (scenario name), in the order given."""
        out: dict[str, list[str]] = {}
        for alert in self.alerts:
            out.setdefault(KNOBS[alert].axis.scenario, []).append(alert)
        return out


def batches(spec: Spec) -> list[Batch]:
    """Every task of the sweep: background runs first, then each axis x rate x intensity in chunks."""
    out: list[Batch] = []
    if spec.background_runs > 0:
        warmup = lead_for(spec.alerts)
        hours = spec.background_hours * 3600.0
        for rate in spec.rates:
            out += [
                Batch(None, 0.0, rate, (seed,), spec.alerts, warmup, hours)
                for seed in seeds(spec.seed, "background", rate, spec.background_runs)
            ]
    for scenario, alerts in spec.axes().items():
        lead = lead_for(alerts)
        for rate in spec.rates:
            replicate = seeds(spec.seed, "detect", rate, spec.runs)
            for point, x in enumerate(spec.grids[scenario]):
                for i in range(0, spec.runs, spec.batch):
                    chunk = replicate[i : i + spec.batch]
                    out.append(Batch(scenario, x, rate, chunk, tuple(alerts), lead, spec.deadline, point))
    return out


Progress = Callable[[int, int, int, int], None]
"""Called as each task completes: (tasks done, tasks, runs done, runs)."""


def execute(spec: Spec, client: Client, progress: Progress | None = None) -> list[BatchResult]:
    """Run every task on ``client``; results in completion order."""
    todo = batches(spec)
    token = uuid.uuid4().hex[:12]
    futures = [
        client.submit(run_batch, b, priority=1 if b.axis is None else 0, key=f"sensitivity-{token}-{i}")
        for i, b in enumerate(todo)
    ]
    total_runs = sum(len(b.seeds) for b in todo)
    done_runs = 0
    results = []
    for i, future in enumerate(as_completed(futures), start=1):  # type: ignore[no-untyped-call] # untyped library
        result: BatchResult = future.result()
        future.release()
        results.append(result)
        done_runs += len(result.outcomes)
        if progress is not None:
            progress(i, len(todo), done_runs, total_runs)
    return results


# -- adding up ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Point:
    """One intensity at one rate, for one alert."""

    intensity: float
    detection: stats.Proportion
    at_onset: int
    """Runs in which healthy traffic had fired the alert before the fault started."""
    ttd_p50: float | None
    ttd_p90: float | None
    ttd_min: float | None


@dataclass(frozen=True, slots=True)
class Curve:
    """One alert at one background rate."""

    rate: float
    threshold: float | None
    """The rule's threshold in intensity units at this rate (the model's expected level)."""
    points: tuple[Point, ...]
    reach90: stats.Crossing
    false_alarms: stats.Rate | None
    firing_share: float | None = None
    """Share of the healthy background's time the alert spent firing."""


@dataclass(frozen=True, slots=True)
class AlertReport:
    """Everything measured for one alert."""

    knob: Knob
    lead: float
    curves: tuple[Curve, ...]


@dataclass
class Report:
    """The sweep's findings and how they were obtained."""

    spec: Spec
    alerts: list[AlertReport]
    runs: int
    tasks: int
    task_seconds: float
    """Sum of the tasks' own wall times (the work, whatever the parallelism)."""
    wall_seconds: float = 0.0
    workers: int = 0
    timings: dict[str, Any] = field(default_factory=dict)


def aggregate(spec: Spec, results: Iterable[BatchResult], base: Callable[[float], RunState]) -> Report:
    """Add up the runs: per alert, rate and intensity. ``base(rate)`` is healthy traffic's state at a rate."""
    results = list(results)
    detect: dict[tuple[str, float, float], list[tuple[float | None, bool]]] = {}
    fired: dict[tuple[str, float], int] = {}
    firing: dict[tuple[str, float], float] = {}
    exposure: dict[float, float] = {}
    for r in results:
        b = r.batch
        for o in r.outcomes:
            if b.axis is None:
                exposure[b.rate] = exposure.get(b.rate, 0.0) + b.window / 86400.0
                for alert, n in o.fired.items():
                    fired[alert, b.rate] = fired.get((alert, b.rate), 0) + n
                    firing[alert, b.rate] = firing.get((alert, b.rate), 0.0) + o.firing_seconds[alert]
            else:
                for alert, ttd in o.detected.items():
                    detect.setdefault((alert, b.rate, b.intensity), []).append((ttd, o.at_onset[alert]))
    reports = []
    for scenario, alerts in spec.axes().items():
        lead = lead_for(alerts)
        for alert in alerts:
            knob = KNOBS[alert]
            curves = [
                _curve(spec, knob, rate, spec.grids[scenario], detect, (fired, firing, exposure), base(rate))
                for rate in spec.rates
            ]
            reports.append(AlertReport(knob, lead, tuple(curves)))
    order = {a: i for i, a in enumerate(spec.alerts)}
    reports.sort(key=lambda r: order[r.knob.alert])
    return Report(
        spec,
        reports,
        runs=sum(len(r.outcomes) for r in results),
        tasks=len(results),
        task_seconds=sum(r.wall_seconds for r in results),
    )


def _curve(  # noqa: PLR0917 - the sweep's tallies, each passed once
    spec: Spec,
    knob: Knob,
    rate: float,
    grid: Sequence[float],
    detect: Mapping[tuple[str, float, float], list[tuple[float | None, bool]]],
    background: tuple[Mapping[tuple[str, float], int], Mapping[tuple[str, float], float], Mapping[float, float]],
    base: RunState,
) -> Curve:
    fired, firing, exposure = background
    points = []
    for x in grid if spec.runs else ():
        runs = detect.get((knob.alert, rate, x), [])
        times = [t for t, _ in runs]
        caught = [t for t in times if t is not None]
        points.append(
            Point(
                x,
                stats.proportion(len(caught), len(runs)),
                sum(onset for _, onset in runs),
                stats.censored_quantile(times, 0.5),
                stats.censored_quantile(times, 0.9),
                min(caught) if caught else None,
            )
        )
    alarms, share = None, None
    if spec.background_runs > 0 and rate in exposure:
        alarms = stats.poisson_rate(fired.get((knob.alert, rate), 0), exposure[rate])
        share = firing.get((knob.alert, rate), 0.0) / (exposure[rate] * 86400.0)
    return Curve(
        rate,
        knob.threshold_at(base),
        tuple(points),
        stats.crossing([p.intensity for p in points], [p.detection for p in points]),
        alarms,
        share,
    )


def healthy_state(rate: float) -> RunState:
    """Healthy traffic's parameters at ``rate``, as the runs' plans have them."""
    plan = plan_of(Batch(None, 0.0, rate, (0,), (), 0.0, 60.0), 0)
    return RunState(model=plan.model, controller=plan.controller, rate=rate)


def sweep(spec: Spec, client: Client, progress: Progress | None = None) -> Report:
    """Run the sweep on ``client`` and add it up."""
    t0 = time.perf_counter()
    results = execute(spec, client, progress)
    report = aggregate(spec, results, healthy_state)
    report.wall_seconds = time.perf_counter() - t0
    report.workers = len(client.scheduler_info(n_workers=-1).get("workers", {}))
    return report
