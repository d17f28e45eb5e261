"""From a validated profile (plus command-line overrides) to a concrete run plan.

The plan is what the engine runs and what ``loadsim check`` describes: the rate
schedule placed on a calendar, the model and controller parameters, and the
engine settings. Building it never starts anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from loadsim.arrivals import ArrivalKind
from loadsim.errors import ConfigError, Problem
from loadsim.model.controller import ControllerParams
from loadsim.model.params import ModelParams
from loadsim.profile import ConstantSpec, DiurnalSpec, EngineSpec, Profile, RampSpec, SegmentSpec, StepsSpec
from loadsim.schedule import SECONDS_PER_DAY, Constant, Diurnal, Ramp, Schedule, Segment, Steps
from loadsim.sinks.relay_metrics import MetricOptions
from loadsim.units import parse_duration, parse_rate


@dataclass(frozen=True, slots=True)
class Overrides:
    """Command-line options that replace profile values (None keeps the profile's)."""

    duration: str | None = None
    rate: str | None = None
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class RunPlan:
    """Everything a run needs, resolved."""

    name: str
    duration: float
    seed: int
    arrivals: ArrivalKind
    schedule: Schedule
    model: ModelParams
    controller: ControllerParams
    metrics: MetricOptions
    engine: EngineSpec
    epoch: float
    """Unix time of run time 0 (calendar for diurnal curves)."""
    virtual: bool

    @property
    def tick(self) -> float:
        """The window the engine steps by."""
        return self.engine.virtual_tick if self.virtual else self.engine.tick

    def expected_sends(self, t0: float = 0.0, t1: float | None = None) -> float:
        """Expected arrivals over ``[t0, t1)`` (the whole run by default)."""
        return self.schedule.expected(t0, self.duration if t1 is None else t1)


def apply_overrides(profile: Profile, overrides: Overrides) -> Profile:
    """Apply command-line overrides; bad values raise :class:`ConfigError` naming the option."""
    problems: list[Problem] = []
    updates: dict[str, object] = {}
    if overrides.duration is not None:
        try:
            seconds = parse_duration(overrides.duration)
            if seconds <= 0:
                problems.append(Problem("--duration", "", f"must be > 0, got {overrides.duration!r}"))
            updates["duration"] = seconds
        except ValueError as e:
            problems.append(Problem("--duration", "", str(e)))
    if overrides.rate is not None:
        try:
            rate = parse_rate(overrides.rate)
            if rate <= 0:
                problems.append(Problem("--rate", "", f"must be > 0, got {overrides.rate!r}"))
            else:
                updates["schedule"] = [ConstantSpec(kind="constant", rate=rate)]
        except ValueError as e:
            problems.append(Problem("--rate", "", str(e)))
    if overrides.seed is not None:
        if overrides.seed < 0:
            problems.append(Problem("--seed", "", f"must be >= 0, got {overrides.seed}"))
        updates["seed"] = overrides.seed
    if problems:
        raise ConfigError(problems)
    return profile.model_copy(update=updates)


def build_plan(profile: Profile, *, virtual: bool, wall_epoch: float | None = None) -> RunPlan:
    """Place the profile on a calendar and resolve it into a :class:`RunPlan`."""
    epoch = profile.engine.virtual_start.timestamp() if virtual or wall_epoch is None else wall_epoch
    metrics = MetricOptions(
        status_label=profile.metrics.status_label,
        workspace_ids=tuple(profile.metrics.workspace_ids),
        workspace_weights=tuple(profile.metrics.workspace_weights),
    )
    return RunPlan(
        name=profile.name,
        duration=profile.duration,
        seed=profile.seed,
        arrivals=profile.arrivals,
        schedule=build_schedule(profile.schedule, epoch),
        model=profile.model,
        controller=profile.controller,
        metrics=metrics,
        engine=profile.engine,
        epoch=epoch,
        virtual=virtual,
    )


def build_schedule(specs: list[SegmentSpec], epoch: float) -> Schedule:
    """Turn segment specs into a schedule; diurnal segments learn where in the week they start."""
    segments: list[tuple[Segment, float | None]] = []
    start = 0.0
    for spec in specs:
        seg: Segment
        match spec:
            case ConstantSpec():
                seg = Constant(spec.rate)
            case RampSpec():
                seg = Ramp(spec.start, spec.end, spec.duration)
            case StepsSpec():
                seg = Steps(tuple(spec.rates), spec.step)
            case DiurnalSpec():
                seg = Diurnal(
                    trough=spec.trough,
                    peak=spec.peak,
                    peak_hour=spec.peak_hour,
                    sharpness=spec.sharpness,
                    weekend_factor=spec.weekend_factor,
                    week_offset=_seconds_since_monday(epoch + start),
                )
        segments.append((seg, spec.duration))
        start += spec.duration or 0.0
    return Schedule(segments)


def _seconds_since_monday(unix: float) -> float:
    # 1970-01-01 was a Thursday: shift by 3 days so Monday 00:00 UTC is zero.
    return math.fmod(unix + 3 * SECONDS_PER_DAY, 7 * SECONDS_PER_DAY)


def with_model(plan: RunPlan, model: ModelParams) -> RunPlan:
    """The same plan with other model parameters (tests, overlays)."""
    return replace(plan, model=model)
