"""A run as one member of a fleet: a shared start time, joining late, and a summary that merges.

The shards of a fleet never talk to each other. What they share is the plan, the
seed and one absolute start time (``--start-at``): run time 0 is that instant for
every shard, so their schedules, overlays and diurnal calendars agree to the
clocks' skew. A shard that comes up after the start (a slow image pull, a
rescheduled pod) does not burst through what it missed and does not wait for a
go signal that nobody will send: it walks the windows that have already ended
exactly as the fleet drew them (:func:`catch_up`), counts its stripe of them as
missed, and joins at the window in progress.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from loadsim.engine.driver import Driver
from loadsim.engine.loop import Engine
from loadsim.shard import Shard, ShardArrivals
from loadsim.sinks.summary import RunSummary

MAX_LEAD_SECONDS = 86_400.0
"""A start time further ahead than this is refused: a Job starts within minutes, so it is a wrong date."""


@dataclass(frozen=True, slots=True)
class FleetOptions:
    """Which shard this process is, and when the fleet's run time 0 is."""

    shard: Shard
    start_at: float | None = None
    """Unix time of run time 0 for every shard (None: when this process starts, virtual runs)."""


def catch_up(engine: Engine, arrivals: ShardArrivals, until: float) -> int:
    """Skip every window that ended by run time ``until``, drawing it as the fleet did; returns the arrivals missed.

    The windows are the engine's own grid (``t1 = min(t0 + tick, duration)`` from where it
    stands) and each is drawn with the arrival scale its overlays give it, so the random
    stream afterwards is where every other shard's is. The window in progress is left to
    the engine: its arrivals still due are started, the ones already past start late.
    """
    plan = engine.plan
    t0, missed = engine.t, 0
    while t0 < plan.duration:
        t1 = min(t0 + plan.tick, plan.duration)
        if t1 > until:
            break
        missed += arrivals.skip_window(t0, t1, _arrival_scale(engine, 0.5 * (t0 + t1)))
        t0 = t1
    if t0 > engine.t:
        engine.counts.missed += missed
        engine.health.missed.inc(missed)
        engine.health.run_seconds.set(t0)
        engine.driver.skip_to(t0)
        engine.t = t0
    return missed


def _arrival_scale(engine: Engine, t: float) -> float:
    """The arrival scale :meth:`Engine.state_at` gives at ``t``, without announcing overlays (nothing ran)."""
    if not engine.timeline:
        return 1.0
    base = replace(engine.base_state, rate=engine.plan.schedule.at(t))
    return engine.timeline.state_at(base, t)[0].arrival_scale


class StartWatch:
    """How late this shard handed its first window over, against the fleet's shared start."""

    def __init__(self, engine: Engine, log: Any) -> None:
        self.engine = engine
        self.log = log
        self.first_window_lateness: float | None = None
        self.joined_at: float | None = None

    def __call__(self, t: float, _state: object) -> None:
        if self.first_window_lateness is not None:
            return
        engine = self.engine
        t0 = max(t - engine.plan.tick, 0.0)
        self.first_window_lateness = max(engine.clock.now() - engine.driver.handover(t0, t), 0.0)
        self.joined_at = t0
        self.log.info(
            "fleet.first_window",
            run_seconds=t0,
            lateness_seconds=round(self.first_window_lateness, 6),
            missed=engine.counts.missed,
        )


def histograms(summary: RunSummary | None, driver: Driver) -> dict[str, Any]:
    """The run's latency histograms, whole and mergeable, for the summary file.

    Simulated sends: the summary's fixed log bins (exactly mergeable: the same bins in every
    run, added bin by bin). HTTP requests: HdrHistogram's own encoding (``hdrhistogram``'s
    ``encode``, merged with ``decode_and_add``), 3 significant digits.
    """
    if summary is not None:
        return {"latency_seconds": summary.latency.to_json()}
    results = getattr(driver, "results", None)
    if results is None:
        return {}
    hdr: dict[str, str] = results.state()["hdr"]
    return {f"hdr_{name}": value for name, value in hdr.items()}


def shard_summary(out: dict[str, Any], fleet: FleetOptions, watch: StartWatch | None) -> dict[str, Any]:
    """The shard's part of its summary, its target made its share (so that a merge adds them up)."""
    shard = fleet.shard
    noun = "requests" if "requests" in out else "sends"
    share = 1.0 / shard.count
    out[noun]["target"] = round(out[noun]["target"] * share, 1)
    out["target_rate_per_s"] *= share
    out["shard"] = {
        "index": shard.index,
        "count": shard.count,
        "start_at": fleet.start_at,
        "first_window_lateness_seconds": None if watch is None else watch.first_window_lateness,
        "joined_at_run_seconds": None if watch is None else watch.joined_at,
    }
    return out
