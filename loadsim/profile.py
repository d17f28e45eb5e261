"""Profiles: the validated description of a run, read from a TOML file.

A profile is configuration only: it can be loaded, validated, described and
planned (``loadsim check``) without running anything. Validation uses pydantic
because it checks types and ranges, rejects unknown keys and, unlike a
hand-written validator, reports every problem at once with its location; this
module turns those reports into ``file: key: message`` lines.

Example (``profiles/steady-1rps.toml``)::

    name = "steady-1rps"
    duration = "24h"
    [[schedule]]
    kind = "constant"
    rate = "1/s"
"""

from __future__ import annotations

import tomllib
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from loadsim.arrivals import ArrivalKind
from loadsim.errors import ConfigError, Problem
from loadsim.files import MIB, InputFileError, read_bytes
from loadsim.model.controller import ControllerParams
from loadsim.model.params import ModelParams
from loadsim.thresholds import Threshold, parse_threshold
from loadsim.units import MAX_RATE, NonNegative, PerSecond, Positive, Seconds, SecondsOrZero, parse_duration

PROFILE_LIMIT = 4 * MIB
"""Largest profile file read (the bundled ones are under 4 KiB)."""
DEFAULT_VIRTUAL_START = datetime(2026, 1, 5, tzinfo=UTC)
"""A Monday at 00:00 UTC: virtual runs start here unless the profile says otherwise."""
MAX_PAIRS = 1_000_000
"""Most (workspace, actor) pairs in a population: each is hashed once at start (about 1 s per million)."""
MAX_IN_FLIGHT = 100_000_000
"""Highest ``max_in_flight``: a simulated send in flight holds 17 bytes, so this bounds them at 1.7 GB."""
MAX_OVERLAYS = 1000
"""Most overlays in one profile (each is checked against every other before the run)."""


class _Spec(BaseModel):
    model_config: ClassVar[ConfigDict] = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ConstantSpec(_Spec):
    """A constant rate."""

    kind: Literal["constant"]
    rate: PerSecond
    duration: Seconds | None = None


class RampSpec(_Spec):
    """A linear ramp; ``from`` and ``to`` are rates."""

    kind: Literal["ramp"]
    start: PerSecond = Field(alias="from")
    end: PerSecond = Field(alias="to")
    duration: Seconds


class StepsSpec(_Spec):
    """A staircase of rates, ``step`` long each."""

    kind: Literal["steps"]
    rates: Annotated[list[PerSecond], Field(min_length=1, max_length=10_000)]
    step: Seconds
    duration: Seconds | None = None


class DiurnalSpec(_Spec):
    """A daily curve with a business-hours peak and a weekend factor."""

    kind: Literal["diurnal"]
    trough: PerSecond
    peak: PerSecond
    peak_hour: Annotated[float, Field(ge=0, lt=24)] = 14.0
    sharpness: Annotated[Positive, Field(le=100)] = 2.0
    weekend_factor: Annotated[NonNegative, Field(le=100)] = 0.4
    duration: Seconds | None = None

    @model_validator(mode="after")
    def _peak_above_trough(self) -> DiurnalSpec:
        if self.peak < self.trough:
            msg = f"peak ({self.peak:g}/s) must be at least trough ({self.trough:g}/s)"
            raise ValueError(msg)
        highest = self.trough + (self.peak - self.trough) * max(1.0, self.weekend_factor)
        if highest > MAX_RATE:
            msg = f"weekend_factor {self.weekend_factor:g} makes the weekend peak {highest:g}/s, above {MAX_RATE:g}/s"
            raise ValueError(msg)
        return self


SegmentSpec = Annotated[ConstantSpec | RampSpec | StepsSpec | DiurnalSpec, Field(discriminator="kind")]
SEGMENT_KINDS = ("constant", "ramp", "steps", "diurnal")


class PopulationSpec(_Spec):
    """Who sends: (workspace, actor) pairs, bucketed by the relay's rollout gate (policy mode).

    The relay's Gmail adapter lets a send through when ``sha256("{workspace}:{actor}")``'s
    bucket (1..100) is at most the rollout percent, so the share gated at each percent
    follows from who is sending, not from a probability.
    """

    workspaces: Annotated[int, Field(ge=0, le=MAX_PAIRS)] = 20
    """Workspaces; 0 keys sends by actor alone (a relay without workspaces)."""
    actors: Annotated[int, Field(ge=1, le=MAX_PAIRS)] = 50
    """Actors per workspace (in all, when there are no workspaces)."""
    skew: Annotated[NonNegative, Field(le=100)] = 1.0
    """Zipf exponent of how often each pair sends (0: all alike; 1: a few heavy senders)."""

    @model_validator(mode="after")
    def _pairs_bounded(self) -> PopulationSpec:
        pairs = max(self.workspaces, 1) * self.actors
        if pairs > MAX_PAIRS:
            msg = f"workspaces x actors must be at most {MAX_PAIRS:,} pairs (each is hashed at start), got {pairs:,}"
            raise ValueError(msg)
        return self


class MetricsSpec(_Spec):
    """Optional labels on the relay's metrics."""

    status_label: bool = False
    """Add ``status`` to ``action_latency_seconds`` (the ``*_by_result`` rules need it)."""
    workspace_ids: Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=1000)] = Field(
        default_factory=list
    )
    """Add ``workspace_id`` to ``action_exec_total``; empty means the label is off."""
    workspace_weights: Annotated[list[Annotated[NonNegative, Field(le=1e12)]], Field(max_length=1000)] = Field(
        default_factory=list
    )

    @field_validator("workspace_ids")
    @classmethod
    def _ids_unique(cls, ids: list[str]) -> list[str]:
        # Two equal ids would be two series with one label set: Prometheus rejects the scrape.
        seen: set[str] = set()
        twice = sorted({i for i in ids if i in seen or seen.add(i)})  # type: ignore[func-returns-value]
        if twice:
            msg = f"each workspace id must appear once, got {', '.join(map(repr, twice))} more than once"
            raise ValueError(msg)
        return ids

    @model_validator(mode="after")
    def _weights_match(self) -> MetricsSpec:
        if self.workspace_weights and len(self.workspace_weights) != len(self.workspace_ids):
            msg = (
                f"workspace_weights needs one weight per workspace id ({len(self.workspace_ids)}), "
                f"got {len(self.workspace_weights)}"
            )
            raise ValueError(msg)
        if self.workspace_weights and sum(self.workspace_weights) <= 0:
            msg = "workspace_weights must not all be 0: executions are split over the ids in these proportions"
            raise ValueError(msg)
        return self


class EngineSpec(_Spec):
    """How the engine steps through time."""

    tick: Annotated[Seconds, Field(ge=0.001, le=10)] = 0.1
    """Wall-clock window: sends are sampled and completed in batches this long.

    From 1 ms (shorter, the loop does nothing but wake) to 10 s (sends reach ``/metrics`` once
    per tick, and Prometheus scrapes every 15 s)."""
    virtual_tick: Annotated[Seconds, Field(ge=0.01, le=3600)] = 5.0
    """Virtual-clock window: a third of the 15 s scrape interval the relay's rules assume (10 ms to 1 h)."""
    grace: SecondsOrZero = 35.0
    """At the end of a wall-clock run, how long sends in flight may take to finish (seconds)."""
    max_in_flight: Annotated[int, Field(gt=0, le=MAX_IN_FLIGHT)] = 10_000_000
    """Arrivals beyond this many sends in flight are dropped and counted, never queued."""
    virtual_start: datetime = DEFAULT_VIRTUAL_START
    """The calendar time a virtual run starts at (diurnal curves follow it)."""


_START_HELP = "an offset such as 10m or an ISO time such as 2026-11-27T14:00:00Z"


def _parse_start(value: Any) -> Any:
    """An offset from the run's start (``10m``) or an absolute time (``2026-11-27T14:00:00Z``)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date | time):
        # A TOML local date or time: no moment on the run's calendar without the other half.
        msg = f"expected {_START_HELP}, got a TOML {type(value).__name__} ({value.isoformat()})"
        raise ValueError(msg)  # noqa: TRY004 - pydantic reports ValueError as a validation problem
    if isinstance(value, str) and "T" in value:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            msg = f"expected {_START_HELP}, got {value!r}"
            raise ValueError(msg) from None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return parse_duration(value)


class OverlaySpec(_Spec):
    """A fault scenario over a window of the run."""

    scenario: str
    start: Annotated[float | datetime, BeforeValidator(_parse_start)]
    duration: Seconds
    ramp: SecondsOrZero = 0.0
    """Ramp in and out over this long (``ramp_in`` / ``ramp_out`` override one side)."""
    ramp_in: SecondsOrZero | None = None
    ramp_out: SecondsOrZero | None = None
    magnitude: Annotated[float, Field(gt=0, le=10)] = 1.0
    options: dict[str, float | str] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _options_in_limits(cls, options: dict[str, float | str], info: ValidationInfo) -> dict[str, float | str]:
        from loadsim.overlays.scenarios import SCENARIOS

        scenario = SCENARIOS.get(info.data.get("scenario", ""))
        if scenario is None:
            return options  # the scenario's own problem is reported
        problems = scenario.option_problems(options)
        if problems:
            raise ValueError("; ".join(f"{key}: {why}" for key, why in problems))
        return options

    @field_validator("scenario")
    @classmethod
    def _known_scenario(cls, name: str) -> str:
        from loadsim.overlays.scenarios import SCENARIOS

        if name not in SCENARIOS:
            msg = f"unknown scenario {name!r}; expected one of: {', '.join(SCENARIOS)}"
            raise ValueError(msg)
        return name

    @model_validator(mode="after")
    def _ramps_fit(self) -> OverlaySpec:
        if self.ramp_in_seconds + self.ramp_out_seconds > self.duration:
            msg = "ramp in and out together must fit in the duration"
            raise ValueError(msg)
        return self

    @property
    def ramp_in_seconds(self) -> float:
        """Ramp-in length."""
        return self.ramp if self.ramp_in is None else self.ramp_in

    @property
    def ramp_out_seconds(self) -> float:
        """Ramp-out length."""
        return self.ramp if self.ramp_out is None else self.ramp_out


def _threshold_of(metric: str) -> Any:
    """A list item type: one threshold on ``metric``, from an expression or a table."""
    return Annotated[Threshold, PlainValidator(lambda item: parse_threshold(metric, item))]


class ThresholdsSpec(_Spec):
    """Pass/fail criteria (k6's ``thresholds``): each measure takes a list of expressions."""

    errors: list[_threshold_of("errors")] = Field(default_factory=list)  # type: ignore[valid-type]
    latency: list[_threshold_of("latency")] = Field(default_factory=list)  # type: ignore[valid-type]
    latency_intended: list[_threshold_of("latency_intended")] = Field(default_factory=list)  # type: ignore[valid-type]
    achieved_rate: list[_threshold_of("achieved_rate")] = Field(default_factory=list)  # type: ignore[valid-type]
    drops: list[_threshold_of("drops")] = Field(default_factory=list)  # type: ignore[valid-type]
    reason: dict[str, list[Any]] = Field(default_factory=dict)
    """``[thresholds.reason]``: a list per reason name (``gmail_5xx = ["count<100"]``)."""

    @field_validator("reason")
    @classmethod
    def _reasons(cls, table: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for name, items in table.items():
            parsed = []
            for i, item in enumerate(items):
                try:
                    parsed.append(parse_threshold(f"reason.{name}", item))
                except ValueError as e:
                    msg = f"{name}[{i}]: {e}"
                    raise ValueError(msg) from None
            out[name] = parsed
        return out

    def all(self) -> list[Threshold]:
        """Every threshold, in the order of the measures above."""
        out: list[Threshold] = [*self.errors, *self.latency, *self.latency_intended, *self.achieved_rate, *self.drops]
        for items in self.reason.values():
            out += items
        return out


class Profile(_Spec):
    """A whole run: traffic shape, outcome model, controller and metric options."""

    name: str = "default"
    description: str = ""
    duration: Seconds = 48 * 3600.0
    seed: Annotated[int, Field(ge=0)] = 1
    arrivals: ArrivalKind = ArrivalKind.POISSON
    schedule: Annotated[list[SegmentSpec], Field(min_length=1)] = Field(
        default_factory=lambda: [ConstantSpec(kind="constant", rate=5.0)]  # type: ignore[arg-type]
    )
    model: ModelParams = Field(default_factory=ModelParams)
    controller: ControllerParams = Field(default_factory=ControllerParams)
    population: PopulationSpec = Field(default_factory=PopulationSpec)
    """Who sends (the rollout gate buckets them; used in controller policy mode)."""
    metrics: MetricsSpec = Field(default_factory=MetricsSpec)
    engine: EngineSpec = Field(default_factory=EngineSpec)
    overlay: Annotated[list[OverlaySpec], Field(max_length=MAX_OVERLAYS)] = Field(default_factory=list)
    """Fault scenarios layered on the schedule (TOML: ``[[overlay]]`` tables)."""
    thresholds: ThresholdsSpec = Field(default_factory=ThresholdsSpec, exclude=True)
    """Pass/fail criteria: they judge a run, they do not change it (so not in the state file's fingerprint)."""

    @field_validator("schedule")
    @classmethod
    def _open_ended_only_last(cls, segments: list[Any]) -> list[Any]:
        for i, seg in enumerate(segments[:-1]):
            if seg.duration is None:
                msg = f"segment {i} ({seg.kind}) needs a duration: only the last segment may run to the end"
                raise ValueError(msg)
        return segments


Profile.model_rebuild()

EMBEDDED_DEFAULT = Profile()
"""The profile ``loadsim run`` uses when given none: 5 sends/s, healthy, 48 hours."""


def load_profile(path: str | Path) -> Profile:
    """Read and validate a profile file; raises :class:`ConfigError` listing every problem."""
    source = str(path)
    try:
        raw = read_bytes(path, PROFILE_LIMIT)
    except InputFileError as e:
        raise ConfigError.single(source, "", str(e)) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError.single(source, "", "not UTF-8 text; expected a TOML profile") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError.single(source, "", f"not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError.single(source, "", "not valid TOML: nested too deeply") from None
    return parse_profile(data, source)


def parse_profile(data: dict[str, Any], source: str) -> Profile:
    """Validate already-parsed profile data; ``source`` names it in problems."""
    try:
        return Profile.model_validate(data)
    except ValidationError as e:
        raise ConfigError([_problem(source, err) for err in e.errors(include_url=False)]) from None


def _problem(source: str, err: ErrorDetails) -> Problem:
    return Problem(source, _key(err["loc"]), error_message(err))


def _key(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for i, item in enumerate(loc):
        if isinstance(item, int):
            parts[-1] = f"{parts[-1]}[{item}]" if parts else f"[{item}]"
            continue
        # Tagged unions add the tag to the location; the user never wrote it.
        if item in SEGMENT_KINDS and i > 0 and isinstance(loc[i - 1], int):
            continue
        parts.append(item)
    return ".".join(parts)


def error_message(err: ErrorDetails) -> str:  # noqa: PLR0911 - one wording per kind of problem
    """One pydantic error as a short sentence: what was expected, and what was found."""
    kind = err["type"]
    given = err.get("input")
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return "unknown key"
    if kind in ("missing", "missing_argument"):
        return "required key is missing"
    if kind == "union_tag_invalid":
        tag = given.get("kind") if isinstance(given, dict) else given
        return f"kind must be one of {', '.join(SEGMENT_KINDS)}, got {_show(tag)}"
    if kind == "union_tag_not_found":
        return f"kind is missing; expected one of {', '.join(SEGMENT_KINDS)}"
    msg = err["msg"]
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind.startswith(("greater_than", "less_than")):
        bound = next(iter((err.get("ctx") or {}).values()), "")
        rel = {
            "greater_than": ">",
            "greater_than_equal": ">=",
            "less_than": "<",
            "less_than_equal": "<=",
        }[kind]
        shown = f"{bound:g}" if isinstance(bound, int | float) else str(bound)
        return f"must be {rel} {shown}, got {_show(given)}"
    return f"{msg[:1].lower()}{msg[1:]}, got {_show(given)}"


def _show(value: object) -> str:
    if isinstance(value, dict | list):
        return type(value).__name__
    return repr(value)
