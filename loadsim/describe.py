"""``loadsim check``: what a plan will do, worked out without running it.

Besides the schedule, it predicts what the relay's recording rules will read
for the plan's outcome model (through the relay's own buckets, with
Prometheus's interpolation), and warns where the relay's rules cannot see what
the plan does (below 1 send/s the error "ratio" is errors per second; below 0.1
send/s the error alerts are switched off).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from loadsim.contract import LATENCY_BUCKETS, MIME_BUCKETS
from loadsim.model import catalog
from loadsim.model.params import ModelParams
from loadsim.model.sampler import OutcomeModel
from loadsim.overlays.state import RunState
from loadsim.plan import RunPlan
from loadsim.promql import histogram_quantile
from loadsim.rollout.population import Population
from loadsim.units import format_duration

_SPARK = " ▁▂▃▄▅▆▇█"


@dataclass(frozen=True, slots=True)
class Readings:
    """What the relay's recording rules should read for a model, at 1 send/s or more."""

    error_ratio: float
    latency_p50: float
    latency_p95: float
    latency_p99: float
    mime_p95: float
    structured_per_send: float
    sanitization_per_send: float


def expected_readings(params: ModelParams, sends: int = 400_000, seed: int = 12345) -> Readings:
    """Monte-Carlo estimate of the relay's readings for ``params`` (fixed seed, so stable)."""
    rng = np.random.default_rng(seed)
    model = OutcomeModel(params)
    effects, done = model.sample(rng, np.zeros(sends))
    lat_counts = np.bincount(
        np.searchsorted(LATENCY_BUCKETS, done.latency, side="left"), minlength=len(LATENCY_BUCKETS) + 1
    )
    mime_counts = np.bincount(
        np.searchsorted(MIME_BUCKETS, effects.mime_seconds, side="left"), minlength=len(MIME_BUCKETS) + 1
    )
    counts = np.bincount(done.cls, minlength=catalog.K) + effects.guard_counts
    structured = float((counts @ catalog.STRUCTURED_MATRIX).sum())
    return Readings(
        error_ratio=params.error_ratio(),
        latency_p50=histogram_quantile(0.5, LATENCY_BUCKETS, lat_counts.tolist()),
        latency_p95=histogram_quantile(0.95, LATENCY_BUCKETS, lat_counts.tolist()),
        latency_p99=histogram_quantile(0.99, LATENCY_BUCKETS, lat_counts.tolist()),
        mime_p95=histogram_quantile(0.95, MIME_BUCKETS, mime_counts.tolist()),
        structured_per_send=structured / sends,
        sanitization_per_send=float(effects.sanitization.sum()) / sends,
    )


def describe_plan(plan: RunPlan, source: str) -> list[str]:
    """Human-readable lines describing ``plan``."""
    d = plan.duration
    lines = [
        f"profile   {plan.name} ({source})",
        f"duration  {format_duration(d)}   seed {plan.seed}   arrivals {plan.arrivals.value}",
        "schedule",
        *(f"  {line}" for line in plan.schedule.describe()),
    ]
    total = plan.expected_sends()
    lines.append(f"expected  {total:,.0f} sends, {total / d:.3g}/s on average")
    step = 3600.0 if d >= 2 * 3600 else max(d / 48, 1.0)
    edges = np.arange(0.0, d, step)
    rates = np.array([plan.schedule.expected(a, min(a + step, d)) / (min(a + step, d) - a) for a in edges])
    lo, hi = float(rates.min()), float(rates.max())
    lines.append(f"rate      {lo:.3g}/s .. {hi:.3g}/s, per {format_duration(step)}:")
    for row in range(0, len(rates), 48):
        chunk = rates[row : row + 48]
        lines.append(f"  {format_duration(row * step):>6} |{_spark(chunk, hi)}|")
    r = expected_readings(plan.model)
    lines += [
        "relay readings expected (rules' view, at 1 send/s or more)",
        f"  error ratio        {r.error_ratio:.3%}   (warn > 1%, crit > 5%)",
        (
            f"  latency p50/p95/p99  {r.latency_p50:.3f}s / {r.latency_p95:.3f}s / {r.latency_p99:.3f}s"
            "   (p95 warn > 0.5s, crit > 2s)"
        ),
        f"  MIME build p95     {r.mime_p95:.3f}s   (warn > 0.5s)",
        f"  structured errors  {r.structured_per_send * hi:.3g}/s at the peak   (info > 0.1/s)",
        f"  sanitization       {r.sanitization_per_send * hi:.3g}/s at the peak   (info > 50/s)",
    ]
    lines += describe_controller(plan)
    lines += describe_overlays(plan)
    lines += [f"warning   {w}" for w in plan_warnings(plan, rates, step, r)]
    return lines


def describe_overlays(plan: RunPlan) -> list[str]:
    """Each overlay's window, what it should fire, and what the rules will read at its height."""
    if not plan.timeline:
        return []
    lines = ["overlays"]
    base = RunState(model=plan.model, controller=plan.controller)
    for ov in plan.timeline.overlays:
        mid = ov.start + ov.duration / 2
        state, _ = plan.timeline.state_at(replace(base, rate=plan.schedule.at(mid)), mid)
        r = expected_readings(state.model)
        rate = plan.schedule.at(mid) * state.arrival_scale
        lines.append(
            f"  {format_duration(ov.start):>7} .. {format_duration(ov.end):<7} {ov.name}"
            f"  fires: {', '.join(ov.scenario.fires) or 'nothing'}"
            + (f"; may fire: {', '.join(ov.scenario.may_fire)}" if ov.scenario.may_fire else "")
        )
        lines.append(
            f"  {'':17}reads: error ratio {r.error_ratio:.2%}, p95 {r.latency_p95:.2f}s, MIME p95 {r.mime_p95:.2f}s, "
            f"structured {r.structured_per_send * rate:.3g}/s, sanitization {r.sanitization_per_send * rate:.3g}/s, "
            f"rate {rate:.3g}/s"
        )
    return lines


def plan_warnings(plan: RunPlan, rates: np.ndarray, step: float, readings: Readings | None = None) -> list[str]:
    """Where the relay's rules will not read what the plan does."""
    warnings = []
    peak = float(rates.max()) if len(rates) else 0.0
    if readings is not None and readings.structured_per_send * peak > 0.1:
        warnings.append(
            f"at the peak ({peak:.3g}/s) healthy traffic makes {readings.structured_per_send * peak:.3g} structured "
            "errors/s: GmailValidationErrorSpike compares an absolute rate (> 0.1/s), not a share, and will fire"
        )
    if readings is not None and readings.sanitization_per_send * peak > 50:
        warnings.append(
            f"at the peak ({peak:.3g}/s) healthy traffic makes {readings.sanitization_per_send * peak:.3g} "
            "sanitization changes/s: HighSanitizationActivity (> 50/s, absolute) will fire"
        )
    below_one = float((rates < 1.0).sum()) * step
    below_tenth = float((rates <= 0.1).sum()) * step
    if below_one:
        warnings.append(
            f"rate below 1/s for about {format_duration(below_one)}: job:gmail_send_errors_rate:5m divides by "
            "clamp_min(rate, 1) there, so it reads errors per second, not a ratio"
        )
    if below_tenth:
        warnings.append(
            f"rate at or below 0.1/s for about {format_duration(below_tenth)}: the error-rate alerts require "
            "more than 0.1 sends/s and cannot fire there"
        )
    if plan.duration < 15 * 60:
        warnings.append("shorter than 15m: alerts with for: 10m over 5m windows need 15 minutes or more to fire")
    return warnings


def _spark(values: np.ndarray, top: float) -> str:
    if top <= 0:
        return " " * len(values)
    idx = np.clip(np.round(values / top * (len(_SPARK) - 1)), 0, len(_SPARK) - 1).astype(int)
    return "".join(_SPARK[i] for i in idx)


def describe_controller(plan: RunPlan) -> list[str]:
    """The controller's mode and, in policy mode, what its gate lets through at each step."""
    c = plan.controller
    every = format_duration(c.interval / c.time_scale)
    if c.mode == "heartbeat":
        return [f"controller heartbeat: pushes {c.result} at {c.percent}% every {every}"]
    spec = plan.population
    gate = Population(workspaces=spec.workspaces, actors=spec.actors, skew=spec.skew, seed=plan.seed)
    who = f"{spec.workspaces} workspaces x {spec.actors} actors" if spec.workspaces else f"{spec.actors} actors"
    shares = ", ".join(f"{p}% {gate.gated_share(p):.1%}" for p in (0, 10, 50, 100))
    dry = ", dry run" if c.dry_run else ""
    dwell, cooldown = format_duration(c.dwell / c.time_scale), format_duration(c.cooldown / c.time_scale)
    head = f"controller policy ({c.fidelity}{dry}): starts at {c.percent}%, a run every {every}"
    return [
        f"{head}, dwell {dwell}, cooldown {cooldown}",
        f"  gate    {len(gate):,} pairs ({who}, skew {spec.skew:g}); share gated at {shares}",
    ]
