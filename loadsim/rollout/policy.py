"""The relay's rollout policy: one controller run as a pure function of its inputs.

The relay's rollout controller is a cron job: every ``interval`` (600 s) it reads three
PromQL queries, decides, pushes its result to the Pushgateway and exits. :func:`decide`
is that run with the I/O taken out: the queries' answers come in as a :class:`Reading`,
the stored rollout state as a :class:`PolicyState`, the run time as ``t``; the decision
and the state the run leaves behind come out. No clock, no randomness, no I/O, so the
simulator, the tests and a decision log all replay the same runs.

The policy, as the relay implements it:

* **violated** if ``error_rate > 0.01`` or ``p95 > 0.5`` or ``oauth_failures > 5``. A NaN
  compares false, so a NaN reading passes; a failed or empty query reads as 0.0 before it
  gets here (see :class:`Reading`).
* **target**: violated, ``max(0, min(current, 10))`` (50 or 100 drop to 10; 10 and 0 hold;
  never to 0). Healthy, the next of ``0 -> 10 -> 50 -> 100``; any other value holds.
* **guards, in this order**: paused (the run exits, nothing pushed); target == current
  (push ``hold``); dwell (a change less than 15 min ago: nothing done, nothing pushed,
  which delays rollbacks too); cooldown (a promotion within 1 h of a rollback: nothing done,
  nothing pushed); otherwise ``promote`` or ``rollback``, pushed, and the state records it.

Worked example, interval 600 s, dwell 900 s, cooldown 3600 s (``skipped`` = the run did
nothing and pushed nothing; the percent is what the state holds after the run)::

    t      reading     current  target  result    reason                                       percent
    0      green       0        10      promote   healthy                                      10
    600    green       10       50      skipped   dwell: last change 600 s ago < 900 s         10
    1200   green       10       50      promote   healthy                                      50
    1800   green       50       100     skipped   dwell: last change 600 s ago < 900 s         50
    2400   green       50       100     promote   healthy                                      100
    3000   p95 0.84    100      10      skipped   dwell: last change 600 s ago < 900 s         100
    3600   p95 0.84    100      10      rollback  slo_violated: p95 0.84 > 0.5                 10
    4200   green       10       50      skipped   dwell: last change 600 s ago < 900 s         10
    4800   green       10       50      skipped   cooldown: last rollback 1200 s ago < 3600 s  10
    ...    (cooldown skips at 5400, 6000, 6600)
    7200   green       10       50      promote   healthy                                      50

A dry run computes the same decision but writes no state: the percent stays where it
is and ``last_change`` is never recorded, so the dwell guard never engages. From 0, every
green run says "promote to 10" and every violated run "hold at 0", for ever.

Two fidelities (:class:`Fidelity`): ``as-implemented`` is the relay's code as it is (its
error-rate query never matches a series, and an unreachable Prometheus reads as all
green); ``as-intended`` is what its authors meant (the recording rule's error ratio, and
an unreachable Prometheus holds). The error-rate difference lives in
:mod:`loadsim.rollout.series`; the unreachable difference lives here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

Result = Literal["promote", "rollback", "hold", "skipped"]
"""What one run did: the first three are pushed as the controller's ``result``; ``skipped`` pushes nothing."""

QUERIES = ("error_rate", "p95", "oauth_failures")
"""The controller's three queries, by the names :class:`Reading` and the decision log use."""


class Fidelity(StrEnum):
    """Which controller to simulate: the relay's code as written, or as its authors meant it."""

    AS_IMPLEMENTED = "as-implemented"
    """The unaggregated error ratio (always an empty vector, so 0.0) and a failed query read as 0.0."""
    AS_INTENDED = "as-intended"
    """The recording rule's clamped error ratio, and an unreachable Prometheus holds."""


@dataclass(frozen=True, slots=True)
class PolicyParams:
    """The controller's configuration: thresholds, guards and the promotion ladder."""

    fidelity: Fidelity
    dry_run: bool = False
    """Decide, push, but write no state (the relay's observation mode)."""
    error_threshold: float = 0.01
    latency_threshold: float = 0.5
    """Seconds of p95 latency."""
    oauth_threshold: float = 5.0
    """OAuth refresh failures in 15 minutes."""
    dwell: float = 900.0
    """Seconds after a promote or rollback during which the run does nothing."""
    cooldown: float = 3600.0
    """Seconds after a rollback during which a promotion does nothing."""
    steps: tuple[int, ...] = (0, 10, 50, 100)
    """The promotion ladder; a healthy run moves one step up, from a value on it."""
    rollback_to: int = 10
    """A violated run drops to ``min(current, rollback_to)``."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        try:
            object.__setattr__(self, "fidelity", Fidelity(self.fidelity))
        except ValueError:
            choices = ", ".join(f.value for f in Fidelity)
            problems.append(f"fidelity: must be one of {choices}, got {self.fidelity!r}")
        for name in ("error_threshold", "latency_threshold", "oauth_threshold", "dwell", "cooldown"):
            value = getattr(self, name)
            if not value >= 0:  # also refuses NaN
                problems.append(f"{name}: must be >= 0, got {value}")
        steps = self.steps
        if not steps or any(not 0 <= s <= 100 for s in steps) or any(b <= a for a, b in itertools.pairwise(steps)):
            problems.append(f"steps: must be strictly increasing percents in 0..100, got {steps}")
        if not 0 <= self.rollback_to <= 100:
            problems.append(f"rollback_to: must be a percent in 0..100, got {self.rollback_to}")
        if problems:
            raise ValueError("rollout policy: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class Reading:
    """What the controller's three queries returned, as the controller uses them.

    ``error_rate``, ``p95`` and ``oauth_failures`` have the controller's 0.0 fallback
    applied already (an empty vector or a failed query reads 0.0); NaN is kept, because
    the controller keeps it (and then it compares false). ``raw`` is what each query
    returned before the fallback, None for an empty result or a failed query, for the
    decision log.
    """

    error_rate: float
    p95: float
    oauth_failures: float
    reachable: bool = True
    """False when the queries failed (Prometheus unreachable)."""
    raw: dict[str, float | None] = field(default_factory=dict)

    @classmethod
    def unreachable(cls) -> Reading:
        """A run whose queries all failed: every value is the 0.0 fallback."""
        return cls(0.0, 0.0, 0.0, reachable=False, raw=dict.fromkeys(QUERIES))


@dataclass(frozen=True, slots=True)
class PolicyState:
    """What the controller keeps between runs (in Redis, for the relay)."""

    percent: int
    last_change: float | None = None
    """Run time of the last promote or rollback; None if there never was one."""
    last_rollback: float | None = None
    """Run time of the last rollback; None if there never was one."""
    paused: bool = False

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, for checkpoints."""
        return {
            "percent": self.percent,
            "last_change": self.last_change,
            "last_rollback": self.last_rollback,
            "paused": self.paused,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PolicyState:
        """The state :meth:`to_json` wrote; raises ValueError naming every bad key."""
        problems: list[str] = []
        percent = data.get("percent")
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            problems.append(f"percent: must be an int in 0..100, got {percent!r}")
        times: dict[str, float | None] = {}
        for key in ("last_change", "last_rollback"):
            value = data.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                problems.append(f"{key}: must be a number or null, got {value!r}")
            else:
                times[key] = None if value is None else float(value)
        paused = data.get("paused", False)
        if not isinstance(paused, bool):
            problems.append(f"paused: must be true or false, got {paused!r}")
        if problems:
            raise ValueError("rollout state: " + "; ".join(problems))
        assert isinstance(percent, int)
        return cls(percent, times["last_change"], times["last_rollback"], paused)


@dataclass(frozen=True, slots=True)
class Decision:
    """One controller run: what it read, what it decided, and whether it pushed."""

    t: float
    fidelity: Fidelity
    dry_run: bool
    reading: Reading
    current: int
    target: int
    result: Result
    reason: str
    pushed: bool
    """Whether the run pushes its result (``skipped`` runs and paused runs do not)."""
    violated: bool

    def to_json(self) -> dict[str, Any]:
        """A flat, JSON-ready dict for the decision log.

        Non-finite readings are written as Prometheus's API writes them (``"NaN"``,
        ``"+Inf"``, ``"-Inf"``), so the log stays strict JSON; a raw None (empty or failed
        query) stays null.
        """
        r = self.reading
        out: dict[str, Any] = {
            "t": self.t,
            "fidelity": self.fidelity.value,
            "dry_run": self.dry_run,
            "current": self.current,
            "target": self.target,
            "result": self.result,
            "reason": self.reason,
            "pushed": self.pushed,
            "violated": self.violated,
            "reachable": r.reachable,
        }
        for name in QUERIES:
            out[name] = _json_float(getattr(r, name))
            raw = r.raw.get(name)
            out[f"raw_{name}"] = None if raw is None else _json_float(raw)
        return out


def _json_float(x: float) -> float | str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return x


def violations(params: PolicyParams, reading: Reading) -> list[str]:
    """Each threshold the reading breaks, as ``"p95 0.84 > 0.5"``; NaN breaks none (it compares false)."""
    checks = (
        ("error_rate", reading.error_rate, params.error_threshold),
        ("p95", reading.p95, params.latency_threshold),
        ("oauth_failures", reading.oauth_failures, params.oauth_threshold),
    )
    return [f"{name} {value:g} > {limit:g}" for name, value, limit in checks if value > limit]


def target_percent(params: PolicyParams, current: int, violated: bool) -> int:
    """Where the policy wants to go from ``current``, before any guard.

    Violated: down to ``rollback_to`` if above it, otherwise stay (never down to 0).
    Healthy: one step up the ladder from a value on it; off the ladder, or at its top, stay.
    """
    if violated:
        return max(0, min(current, params.rollback_to))
    if current in params.steps:
        i = params.steps.index(current)
        if i + 1 < len(params.steps):
            return params.steps[i + 1]
    return current


def decide(params: PolicyParams, state: PolicyState, reading: Reading, t: float) -> tuple[Decision, PolicyState]:
    """One controller run at run time ``t``: the decision, and the state the run leaves.

    The guards apply in the relay's order (paused, target == current, dwell, cooldown),
    each with ``<``: a change exactly ``dwell`` seconds ago no longer blocks. Under
    as-intended fidelity an unreachable Prometheus holds (pushed, reason
    ``prometheus_unreachable``); as implemented, it reads as 0.0 everywhere, i.e. green.
    A dry run returns the decision the controller would make and the state unchanged.
    """
    current = state.percent
    target, violated = current, False
    result: Result
    if state.paused:
        result, reason, pushed = "skipped", "paused", False
    elif not reading.reachable and params.fidelity is Fidelity.AS_INTENDED:
        result, reason, pushed = "hold", "prometheus_unreachable", True
    else:
        used, note = reading, ""
        if not reading.reachable:
            # As implemented, each failed query is caught and read as 0.0: all green.
            used, note = Reading(0.0, 0.0, 0.0, reachable=False), ": prometheus unreachable, every query read as 0.0"
        broken = violations(params, used)
        violated = bool(broken)
        reason = ("slo_violated: " + ", ".join(broken)) if violated else "healthy" + note
        target = target_percent(params, current, violated)
        result, reason, pushed = _guards(params, state, target, reason, t)

    decision = Decision(t, params.fidelity, params.dry_run, reading, current, target, result, reason, pushed, violated)
    if result not in ("promote", "rollback") or params.dry_run:
        return decision, state
    last_rollback = t if result == "rollback" else state.last_rollback
    return decision, PolicyState(target, t, last_rollback, state.paused)


def _guards(params: PolicyParams, state: PolicyState, target: int, reason: str, t: float) -> tuple[Result, str, bool]:
    """The guards after the policy, in order: (result, reason, pushed)."""
    current = state.percent
    if target == current:
        return "hold", reason, True
    if state.last_change is not None and t - state.last_change < params.dwell:
        return "skipped", f"dwell: last change {t - state.last_change:g} s ago < {params.dwell:g} s", False
    promoting = target > current
    if promoting and state.last_rollback is not None and t - state.last_rollback < params.cooldown:
        return "skipped", f"cooldown: last rollback {t - state.last_rollback:g} s ago < {params.cooldown:g} s", False
    return ("promote" if promoting else "rollback"), reason, True
