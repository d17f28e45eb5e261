"""The one engine factory: a plan becomes a clock, random streams, registries, a driver and an engine.

The CLI, ``verify``, the tests and the benches all build runs here, so a run is
assembled one way: the relay's families (simulated driver) or the client's
``loadsim_http_`` families (HTTP driver) and loadsim's own health in one registry,
the driver fed by the engine, and the run state (which parameters are in force,
whether the controller's series are visible) read from the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Gauge

from loadsim.clock import Clock, VirtualClock, WallClock
from loadsim.drivers.controller import DecisionSink, RolloutController
from loadsim.drivers.sharded import ShardSimDriver
from loadsim.drivers.sim import SimDriver
from loadsim.engine.driver import Driver
from loadsim.engine.loop import AfterWindow, Engine, WindowObserver
from loadsim.engine.seeds import RunRandom
from loadsim.net import LOOPBACK_ONLY, Reach
from loadsim.plan import RunPlan
from loadsim.profile import PopulationSpec
from loadsim.rollout.live import LiveReader
from loadsim.rollout.population import Population
from loadsim.shard import Shard, ShardArrivals, shard_seed
from loadsim.sinks.health import HealthMetrics
from loadsim.sinks.http_metrics import HttpMetrics
from loadsim.sinks.relay_metrics import RelayExposition, RelayMetrics
from loadsim.sinks.summary import RunSummary

if TYPE_CHECKING:
    from loadsim.drivers.http import HttpOptions


@dataclass
class Run:
    """An assembled run, ready for :meth:`Engine.run` (or :func:`loadsim.runtime.execute.execute`)."""

    plan: RunPlan
    clock: Clock
    random: RunRandom
    registry: CollectorRegistry
    """Everything the run exposes: the driver's families and loadsim's own health."""
    health: HealthMetrics
    driver: Driver
    engine: Engine
    relay: RelayMetrics | None = None
    """The relay's families (simulated driver only)."""
    summary: RunSummary | None = None
    """Outcomes of simulated sends (simulated driver only)."""


def run_clock(plan: RunPlan, start: float = 0.0) -> Clock:
    """The clock a plan runs on: virtual (jumping) or the wall, starting at run time ``start``."""
    return VirtualClock(plan.epoch, start=start) if plan.virtual else WallClock(origin_offset=start)


def build(
    plan: RunPlan,
    *,
    http: HttpOptions | None = None,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
    observers: Sequence[WindowObserver] = (),
    after_window: Sequence[AfterWindow] = (),
    decisions: DecisionSink | None = None,
    controller_prometheus: str | None = None,
    controller_reach: Reach = LOOPBACK_ONLY,
    log: Any = None,
    shard: Shard | None = None,
) -> Run:
    """Assemble ``plan`` with the simulated driver, or the HTTP driver when ``http`` is given.

    With the controller in policy mode, ``decisions`` receives each decision record (the
    decision log) and ``controller_prometheus`` sends its queries to a live Prometheus.
    With ``shard``, the run is one shard of a fleet (:mod:`loadsim.shard`): the fleet's
    arrivals, its stripe of them, and outcomes that do not depend on the number of shards.
    """
    clock = clock or run_clock(plan)
    registry = registry or CollectorRegistry(auto_describe=False)
    random = RunRandom.from_seed(plan.seed) if shard is None else shard_random(plan.seed, shard)
    health = HealthMetrics(registry)
    arrivals = None if shard is None else ShardArrivals(plan.schedule, plan.arrivals, random.arrivals, shard)
    relay = summary = None
    driver: Driver
    if http is None:
        relay, summary = RelayMetrics(plan.metrics, random.metrics), RunSummary()
        rollout = None
        if arrivals is None and plan.controller.mode == "policy":
            rollout = RolloutController(
                plan.controller,
                population(plan.population, plan.seed),
                random.rollout,
                random.controller,
                relay,
                log=log,
                sink=decisions,
                live=None
                if controller_prometheus is None
                else LiveReader(controller_prometheus, clock, controller_reach),
            )
        # One construction for both: a shard's driver differs only in the arrivals it keeps.
        common = (plan.model, plan.controller, random.outcomes, random.controller, relay, summary)
        if arrivals is None:
            driver = SimDriver(*common, max_in_flight=plan.engine.max_in_flight, rollout=rollout)
        else:
            driver = ShardSimDriver(*common, max_in_flight=plan.engine.max_in_flight, arrivals=arrivals, seed=plan.seed)
    else:
        # Imported here: a simulated run needs neither the HTTP client nor its parser.
        from loadsim.drivers.faults import FaultControl
        from loadsim.drivers.http import HttpDriver

        faults = None
        if http.fault_control is not None:
            faults = FaultControl(http.fault_control, clock, log, reach=http.fault_control_reach)
        driver = HttpDriver(
            http, plan.model, plan.schedule, plan.duration, clock, random, HttpMetrics(registry), faults=faults, log=log
        )
    engine = Engine(plan, clock, random, driver, health, observers=observers, after_window=after_window, log=log)
    controller_here = True
    if arrivals is not None and shard is not None:
        engine.arrivals = arrivals
        controller_here = shard.index == 0
        info = Gauge(
            "loadsim_shard", "Which shard of the fleet this is (always 1)", ["shard", "shards"], registry=registry
        )
        info.labels(shard=str(shard.index), shards=str(shard.count)).set(1)
    if relay is not None:
        # The relay has one controller: in a fleet only shard 0 exposes its series (absent elsewhere, never
        # a zero that would hide a stalled controller from absent_over_time()).
        registry.register(RelayExposition(relay, lambda: controller_here and engine.state.controller_visible))
    return Run(plan, clock, random, registry, health, driver, engine, relay, summary)


def shard_random(seed: int, shard: Shard) -> RunRandom:
    """The streams of one shard: the fleet's arrivals (and controller), and its own for what it alone draws.

    Arrivals must be the fleet's (every shard draws them all); the controller's heartbeat and
    the rollout streams are the fleet's so that shard 0 reports what one process would. Request
    contents (HTTP) and label splits are drawn per shard from a stream keyed on its index, so
    that no two shards send the same sequence of payloads.
    """
    fleet = RunRandom.from_seed(seed)
    own = RunRandom.from_seed(shard_seed(seed, shard))
    return replace(fleet, outcomes=own.outcomes, metrics=own.metrics, overlays=own.overlays)


def population(spec: PopulationSpec, seed: int) -> Population:
    """The (workspace, actor) pairs of a profile's ``[population]``, their send weights shuffled by the run's seed."""
    return Population(workspaces=spec.workspaces, actors=spec.actors, skew=spec.skew, seed=seed)
