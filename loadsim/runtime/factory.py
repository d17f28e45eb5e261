"""The one engine factory: a plan becomes a clock, random streams, registries, a driver and an engine.

The CLI, ``verify``, the tests and the benches all build runs here, so a run is
assembled one way: the relay's families (simulated driver) or the client's
``loadsim_http_`` families (HTTP driver) and loadsim's own health in one registry,
the driver fed by the engine, and the run state (which parameters are in force,
whether the controller's series are visible) read from the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from loadsim.clock import Clock, VirtualClock, WallClock
from loadsim.drivers.controller import DecisionSink, RolloutController
from loadsim.drivers.sim import SimDriver
from loadsim.engine.driver import Driver
from loadsim.engine.loop import AfterWindow, Engine, WindowObserver
from loadsim.engine.seeds import RunRandom
from loadsim.net import LOOPBACK_ONLY, Reach
from loadsim.plan import RunPlan
from loadsim.profile import PopulationSpec
from loadsim.rollout.live import LiveReader
from loadsim.rollout.population import Population
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
) -> Run:
    """Assemble ``plan`` with the simulated driver, or the HTTP driver when ``http`` is given.

    With the controller in policy mode, ``decisions`` receives each decision record (the
    decision log) and ``controller_prometheus`` sends its queries to a live Prometheus.
    """
    clock = clock or run_clock(plan)
    registry = registry or CollectorRegistry(auto_describe=False)
    random = RunRandom.from_seed(plan.seed)
    health = HealthMetrics(registry)
    relay = summary = None
    driver: Driver
    if http is None:
        relay, summary = RelayMetrics(plan.metrics, random.metrics), RunSummary()
        rollout = None
        if plan.controller.mode == "policy":
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
        driver = SimDriver(
            plan.model,
            plan.controller,
            random.outcomes,
            random.controller,
            relay,
            summary,
            max_in_flight=plan.engine.max_in_flight,
            rollout=rollout,
        )
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
    if relay is not None:
        registry.register(RelayExposition(relay, lambda: engine.state.controller_visible))
    return Run(plan, clock, random, registry, health, driver, engine, relay, summary)


def population(spec: PopulationSpec, seed: int) -> Population:
    """The (workspace, actor) pairs of a profile's ``[population]``, their send weights shuffled by the run's seed."""
    return Population(workspaces=spec.workspaces, actors=spec.actors, skew=spec.skew, seed=seed)
