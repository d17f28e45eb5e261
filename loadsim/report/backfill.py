"""``loadsim backfill``: a run's relay series as OpenMetrics for ``promtool tsdb create-blocks-from openmetrics``.

The same engine on the virtual clock, so 48 hours of the relay's series are
written in seconds, stamped as if the run had just ended (its calendar starts
``duration`` before ``end``, now by default): Prometheus drops blocks older than
its retention (15 days by default), so history from the profile's default virtual
start would be thrown away at load. Every relay family is written at the scrape
interval (15 s, as the relay's scrape config), with ``loadsim_overlay_active`` (the
fault windows) and ``loadsim_target_rate`` (the schedule) beside them, and nothing
while a metrics-missing overlay is on.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client.core import Metric

from loadsim.plan import RunPlan, build_plan
from loadsim.profile import Profile
from loadsim.runtime.factory import build
from loadsim.sinks.openmetrics import OpenMetricsWriter
from loadsim.sinks.relay_metrics import RelayExposition


@dataclass(frozen=True, slots=True)
class Backfilled:
    """What a backfill wrote."""

    path: Path
    start: float
    """Unix time of the first sample."""
    end: float
    scrapes: int
    samples: int
    sends: int
    wall_seconds: float


def plan_ending_at(profile: Profile, end: float, source: str) -> RunPlan:
    """``profile`` on the virtual clock, its calendar placed so the run ends at Unix time ``end``."""
    start = datetime.fromtimestamp(end - profile.duration, UTC)
    placed = profile.model_copy(update={"engine": profile.engine.model_copy(update={"virtual_start": start})})
    return build_plan(placed, virtual=True, source=source)


def backfill(plan: RunPlan, out: Path, *, interval: float = 15.0) -> Backfilled:
    """Run ``plan`` on the virtual clock and write its series to ``out`` (streamed; joined at the end)."""
    t0 = time.monotonic()
    run = build(plan)
    engine, relay = run.engine, run.relay
    assert relay is not None
    exposition = RelayExposition(relay, lambda: engine.state.controller_visible)

    def collect() -> Iterable[Metric]:
        relay_families = exposition.collect() if engine.state.exposition_up else ()
        health = (run.health.overlay_active.collect(), run.health.target_rate.collect())
        return itertools.chain(relay_families, *health)

    writer = OpenMetricsWriter(out, collect, epoch=plan.epoch, interval=interval)
    # The window is the run's, start to end: the drain after it (sends still in flight) is not written.
    engine.after_window.append(lambda t, state: writer(min(t, plan.duration), state))
    try:
        writer.begin()
        asyncio.run(engine.run())
        writer.finish()
    except BaseException:
        writer.discard()
        raise
    return Backfilled(
        path=out,
        start=plan.epoch,
        end=plan.epoch + (writer.scrapes - 1) * interval,
        scrapes=writer.scrapes,
        samples=writer.samples,
        sends=engine.counts.started,
        wall_seconds=time.monotonic() - t0,
    )
