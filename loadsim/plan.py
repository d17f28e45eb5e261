"""From a validated profile (plus command-line overrides) to a concrete run plan.

The plan is what the engine runs and what ``loadsim check`` describes: the rate
schedule placed on a calendar, the model and controller parameters, and the
engine settings. Building it never starts anything.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

from pydantic import ValidationError

from loadsim.arrivals import ArrivalKind
from loadsim.contract import MetricOptions
from loadsim.errors import ConfigError, Problem
from loadsim.model.controller import ControllerParams
from loadsim.model.params import ModelParams
from loadsim.overlays.combinations import first_problem
from loadsim.overlays.scenarios import SCENARIOS
from loadsim.overlays.state import RunState
from loadsim.overlays.timeline import Overlay, Timeline
from loadsim.profile import (
    ConstantSpec,
    DiurnalSpec,
    EngineSpec,
    OverlaySpec,
    PopulationSpec,
    Profile,
    RampSpec,
    SegmentSpec,
    StepsSpec,
    error_message,
)
from loadsim.schedule import SECONDS_PER_DAY, Constant, Diurnal, Ramp, Schedule, Segment, Steps
from loadsim.units import format_duration, parse_duration, parse_rate


@dataclass(frozen=True, slots=True)
class Overrides:
    """Command-line options that replace profile values (None keeps the profile's)."""

    duration: str | None = None
    rate: str | None = None
    seed: int | None = None
    overlays: tuple[str, ...] = ()
    """``--overlay NAME@START+DURATION`` values, added after the profile's overlays."""


OVERLAY_HELP = "NAME@START+DURATION, e.g. error-rate-crit@10m+15m"


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
    timeline: Timeline
    population: PopulationSpec = field(default_factory=PopulationSpec)
    """Who sends: the (workspace, actor) pairs the rollout gate buckets (controller policy mode)."""
    fingerprint: str = ""
    """Identifies the run (profile and seed) for state files."""

    @property
    def tick(self) -> float:
        """The window the engine steps by."""
        return self.engine.virtual_tick if self.virtual else self.engine.tick

    def expected_sends(self, t0: float = 0.0, t1: float | None = None) -> float:
        """Expected arrivals over ``[t0, t1)`` (the whole run by default)."""
        return self.schedule.expected(t0, self.duration if t1 is None else t1)


def fingerprint(profile_json: str, seed: int) -> str:
    """What makes two runs the same run: the validated profile (with overrides) and the seed."""
    return hashlib.sha256(f"{seed}\n{profile_json}".encode()).hexdigest()[:16]


def apply_overrides(profile: Profile, overrides: Overrides) -> Profile:
    """Apply command-line overrides; bad values raise :class:`ConfigError` naming the option."""
    problems: list[Problem] = []
    updates: dict[str, object] = {}
    if overrides.duration is not None:
        seconds = positive_option("--duration", overrides.duration, parse_duration, problems)
        if seconds is not None:
            updates["duration"] = seconds
    if overrides.rate is not None:
        rate = positive_option("--rate", overrides.rate, parse_rate, problems)
        if rate is not None:
            updates["schedule"] = [ConstantSpec(kind="constant", rate=rate)]
    if overrides.seed is not None:
        if overrides.seed < 0:
            problems.append(Problem("--seed", "", f"must be >= 0, got {overrides.seed}"))
        updates["seed"] = overrides.seed
    if overrides.overlays:
        updates["overlay"] = [*profile.overlay, *_overlay_options(overrides.overlays, problems)]
    if problems:
        raise ConfigError(problems)
    return profile.model_copy(update=updates)


def _overlay_options(texts: tuple[str, ...], problems: list[Problem]) -> list[OverlaySpec]:
    specs = []
    for text in texts:
        try:
            specs.append(parse_overlay_option(text))
        except ConfigError as e:
            problems.extend(e.problems)
    return specs


def positive_option(option: str, text: str, parse: Callable[[str], float], problems: list[Problem]) -> float | None:
    """Parse ``text`` with ``parse``; a problem (naming ``option``) if it fails or is not positive."""
    try:
        value = parse(text)
    except ValueError as e:
        problems.append(Problem(option, "", str(e)))
        return None
    if value <= 0:
        problems.append(Problem(option, "", f"must be > 0, got {text!r}"))
        return None
    return value


def parse_overlay_option(text: str) -> OverlaySpec:
    """``NAME@START+DURATION`` (START may be an ISO time) into an overlay spec."""
    name, at, window = text.partition("@")
    start, plus, duration = window.rpartition("+")
    if not at or not plus or not name:
        raise ConfigError.single("--overlay", "", f"expected {OVERLAY_HELP}, got {text!r}")
    try:
        return OverlaySpec.model_validate({"scenario": name, "start": start, "duration": duration})
    except ValidationError as e:
        source = f"--overlay {text}"
        raise ConfigError(
            [Problem(source, ".".join(map(str, err["loc"])), error_message(err)) for err in e.errors()]
        ) from None


def build_plan(profile: Profile, *, virtual: bool, wall_epoch: float | None = None, source: str = "profile") -> RunPlan:
    """Place the profile on a calendar and resolve it into a :class:`RunPlan`.

    Raises :class:`ConfigError` (naming ``source``) for overlays that do not fit the run.
    """
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
        timeline=build_timeline(profile, epoch, source),
        population=profile.population,
        fingerprint=fingerprint(profile.model_dump_json(), profile.seed),
    )


def build_timeline(profile: Profile, epoch: float, source: str) -> Timeline:
    """Place the profile's overlays on the run's time line, checking that each fits."""
    problems: list[Problem] = []
    overlays: list[Overlay] = []
    for i, spec in enumerate(profile.overlay):
        key = f"overlay[{i}]"
        start = spec.start.timestamp() - epoch if isinstance(spec.start, datetime) else spec.start
        if start < 0:
            problems.append(Problem(source, f"{key}.start", f"{spec.start} is before the run starts"))
            continue
        end = start + spec.duration
        if end > profile.duration + 1e-9:
            problems.append(
                Problem(
                    source,
                    key,
                    f"window {format_duration(start)}..{format_duration(end)} ends after the run "
                    f"({format_duration(profile.duration)})",
                )
            )
            continue
        for j, other in enumerate(overlays):
            if other.name == spec.scenario and start < other.end and other.start < end:
                problems.append(Problem(source, key, f"overlaps overlay[{j}] of the same scenario ({spec.scenario})"))
        scenario = SCENARIOS[spec.scenario]
        overlays.append(
            Overlay(
                scenario=scenario,
                start=start,
                duration=spec.duration,
                ramp_in=spec.ramp_in_seconds,
                ramp_out=spec.ramp_out_seconds,
                magnitude=spec.magnitude,
                options={**scenario.options, **spec.options},
            )
        )
    if problems:
        raise ConfigError(problems)
    timeline = Timeline(overlays)
    schedule = build_schedule(profile.schedule, epoch)
    base = RunState(model=profile.model, controller=profile.controller)
    found = first_problem(timeline, base, schedule.at, profile.duration)
    if found is not None:
        t, acting, why = found
        acting_now = f"{' and '.join(acting)} acting together" if len(acting) > 1 else f"{''.join(acting)} acting"
        raise ConfigError.single(source, "overlay", f"{acting_now} at {format_duration(t)}: {why}")
    return timeline


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
