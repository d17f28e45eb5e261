"""The composition root: one ``execute`` for every driver, its services composed in one ``AsyncExitStack``.

:mod:`loadsim.plan` says what to do; :mod:`loadsim.runtime.factory` assembles
it; this module runs it with the services every run gets, whatever its driver:
the driver opened (and closed), a resumed checkpoint restored, the ``/metrics``
server, the Pushgateway pusher, the state keeper, progress, signal handling, and
the summary. The services are context managers entered in an order whose reverse
is the right shutdown: signals and progress first, then the final checkpoint,
then the final push (of what that checkpoint froze), then the server, and the
driver last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from loadsim.clock import WallClock
from loadsim.engine import checkpoint
from loadsim.engine.checkpoint import Checkpoint, Identity
from loadsim.engine.driver import Driver, Stateful
from loadsim.engine.keeper import StateKeeper, StateOptions
from loadsim.engine.loop import AfterWindow, Engine, RunResult
from loadsim.logs import LogOutput, get_logger
from loadsim.net import LOOPBACK_ONLY, ListenAddress, Reach
from loadsim.outputs import write_atomically
from loadsim.plan import RunPlan
from loadsim.redaction import redact_data
from loadsim.runtime.factory import Run, build, run_clock
from loadsim.runtime.fleet import FleetOptions, StartWatch, catch_up, histograms, shard_summary
from loadsim.runtime.judging import Judging
from loadsim.runtime.measures import error_reasons, sample_reader
from loadsim.runtime.signals import StopSignals
from loadsim.runtime.view import progress
from loadsim.shard import ShardArrivals
from loadsim.sinks.metrics_server import MetricsServer
from loadsim.sinks.pushgateway import Pusher, PushTarget
from loadsim.thresholds import Threshold

if TYPE_CHECKING:
    from loadsim.drivers.http import HttpOptions


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Runtime options that are not part of the profile: the same for every driver."""

    listen: ListenAddress | None
    progress: str = "auto"
    summary_json: Path | None = None
    push: PushTarget | None = None
    state: StateOptions | None = None
    http: HttpOptions | None = None
    """The HTTP driver's options; None runs the simulated driver."""
    decision_log: Path | None = None
    """Controller policy mode: one JSON line per controller run."""
    controller_prometheus: str | None = None
    """Controller policy mode: the Prometheus its queries go to (None: the in-process evaluator)."""
    controller_reach: Reach = LOOPBACK_ONLY
    """Where the controller's queries may connect (beyond loopback only for a host allowed by name)."""
    fleet: FleetOptions | None = None
    """This run as one shard of a fleet (``--shard``, ``--start-at``); None for a run of its own."""
    thresholds: tuple[Threshold, ...] = ()
    """Pass/fail criteria judged over the run (the summary gets their verdicts)."""
    logs: LogOutput | None = None
    """Where log lines go: the live view prints them above itself while it is on screen."""
    signals: StopSignals | None = None
    """Stop signals caught since the command started (None: caught from the run's start)."""


class ListenError(Exception):
    """The metrics listener could not bind its address."""


Companion = Callable[[Engine, Any], Awaitable[None]]
"""Something that works beside a running engine (a drill); the run stops when it returns."""


def identity(plan: RunPlan, options: RunOptions) -> Identity:
    """What a state file must match to be resumed by this run."""
    driver = "sim" if options.http is None else "http"
    return Identity(plan.name, plan.seed, plan.fingerprint, plan.virtual, plan.epoch, driver)


async def execute(
    plan: RunPlan,
    options: RunOptions,
    companion: Companion | None = None,
    resume: Checkpoint | None = None,
    *,
    after_window: Sequence[AfterWindow] = (),
    registry: CollectorRegistry | None = None,
) -> dict[str, Any]:
    """Run ``plan`` to its end (or a signal, or until ``companion`` returns); returns the summary.

    ``resume`` continues a checkpointed run: the plan must have been built on the
    checkpoint's epoch, so the schedule and overlays keep their wall-clock times.
    ``after_window`` callbacks see the engine's run time and state after every window,
    and ``registry`` (default: a new one) receives every family the run exposes: both are
    for tests and notebooks that embed a run and read per-window figures.
    """
    http = options.http
    bind: dict[str, Any] = {"profile": plan.name, "seed": plan.seed, "virtual": plan.virtual}
    if http is not None:
        bind |= {"driver": "http"}
    log = get_logger(**bind)
    service_clock = WallClock()
    start = resume.t if resume is not None and plan.virtual else 0.0
    decisions = DecisionLog(options.decision_log, append=resume is not None) if options.decision_log else None
    run = build(
        plan,
        http=http,
        clock=run_clock(plan, start),
        registry=registry,
        after_window=after_window,
        decisions=decisions,
        controller_prometheus=options.controller_prometheus,
        controller_reach=options.controller_reach,
        log=log,
        shard=None if options.fleet is None else options.fleet.shard,
    )
    engine = run.engine
    arrivals = engine.arrivals if isinstance(engine.arrivals, ShardArrivals) else None
    components: dict[str, Stateful] = {"engine": engine, "driver": run.driver}
    if arrivals is not None:
        components["shard"] = arrivals
    keeper, exposed, pusher = _services(plan, options, run.registry, engine, components, service_clock, log)
    wall0 = service_clock.now()
    async with contextlib.AsyncExitStack() as stack:
        # Signals first (so handled until the very end): a stop during the driver's opening or
        # the first checkpoint is logged and honoured like any other.
        stack.enter_context((options.signals or StopSignals()).on_loop(_on_signal(engine, log)))
        if decisions is not None:
            stack.callback(decisions.close)
        # Listen first: a busy port fails the start before anything else has happened, and
        # before the first checkpoint (which, with --fresh, moves the old state file aside).
        server = await _listen(stack, options.listen, exposed, engine, keeper)
        await stack.enter_async_context(_opened(run.driver))
        watch = _start(run, options, resume, components, service_clock, log)
        if keeper is not None:
            await keeper.checkpoint()
        _listening(server, options.listen, log)  # announced once it shows what a restart would resume from
        if pusher is not None:
            await stack.enter_async_context(_pushing(pusher, log))
        if keeper is not None:
            await stack.enter_async_context(_keeping(keeper))
        read = sample_reader(run)
        judging = Judging(options.thresholds, read, engine, log)
        judging.view = progress(
            stack,
            engine,
            read,
            service_clock,
            mode=options.progress,
            logs=options.logs,
            log=log,
            pusher=pusher,
            is_error_reason=error_reasons(run),
        )
        expected = round(plan.expected_sends())
        log.info("run.start", duration_seconds=plan.duration, expected_sends=expected, tick=plan.tick)
        result = await _drive(engine, companion)
    out = engine.summary(
        run_seconds=result.run_seconds, wall_seconds=service_clock.now() - wall0, stopped_early=result.stopped_early
    )
    verdicts = judging.verdicts(result.run_seconds)
    out.update(judging.fields(verdicts))
    hist = histograms(run.summary, run.driver)
    if options.fleet is not None:
        # A shard's log line carries its histograms too: a finished pod's log is what `kubectl logs`
        # still reads, and `loadsim merge` takes log files as well as summary files.
        out = shard_summary(out, options.fleet, watch) | {"histograms": hist}
    out = dict(redact_data(out))  # the summary goes to the log, the terminal and a file: no credential in any
    log.info("run.summary", **out)
    if options.summary_json is not None:
        write_atomically(options.summary_json, json.dumps(out | {"histograms": hist}, indent=2) + "\n")
    return out


def _start(  # noqa: PLR0917 - what starting needs, each once
    run: Run,
    options: RunOptions,
    resume: Checkpoint | None,
    components: dict[str, Stateful],
    service_clock: WallClock,
    log: Any,
) -> StartWatch | None:
    """Put run time where it starts, restore a checkpoint, and bring a fleet's shard to where the fleet stands."""
    plan, engine = run.plan, run.engine
    fleet = options.fleet
    if isinstance(run.clock, WallClock):
        # Run time starts now that the driver is ready (a resumed run: where its calendar says; a
        # fleet's shard: where the shared start says, negative until then).
        if fleet is not None and fleet.start_at is not None:
            run.clock.restart(service_clock.wall() - plan.epoch)
        else:
            run.clock.restart(0.0 if resume is None else max(service_clock.wall() - plan.epoch, resume.t))
    if resume is not None:
        _resume(engine, resume, components, options, log)
    arrivals = components.get("shard")
    if not isinstance(arrivals, ShardArrivals):
        return None
    watch = StartWatch(engine, log)
    engine.after_window.append(watch)
    if not plan.virtual:
        _join(engine, arrivals, log)
    return watch


def _services(  # noqa: PLR0917 - what the services need, each once
    plan: RunPlan,
    options: RunOptions,
    registry: CollectorRegistry,
    engine: Engine,
    components: dict[str, Stateful],
    clock: WallClock,
    log: Any,
) -> tuple[StateKeeper | None, CollectorRegistry, Pusher | None]:
    """The state keeper, the registry to expose (its frozen view, with a keeper) and the pusher."""
    keeper = None
    if options.state is not None:
        keeper = StateKeeper(identity(plan, options), components, registry, options.state, clock, log)
    exposed = keeper.exposed() if keeper is not None else registry
    pusher = None
    if options.push is not None:
        pusher = Pusher(options.push, exposed, registry, log, clock=clock, serving=lambda: engine.state.exposition_up)
        components["pusher"] = pusher  # its counters continue after a restart too
    return keeper, exposed, pusher


async def _listen(
    stack: contextlib.AsyncExitStack,
    address: ListenAddress | None,
    exposed: CollectorRegistry,
    engine: Engine,
    keeper: StateKeeper | None,
) -> MetricsServer | None:
    """The ``/metrics`` server, bound (ListenError if it cannot be) and entered on ``stack``; None without one."""
    if address is None:
        return None
    server = MetricsServer(exposed, ready=lambda: engine.running, serving=_serving_when(engine, keeper))
    await stack.enter_async_context(_serving(server, address))
    return server


def _listening(server: MetricsServer | None, address: ListenAddress | None, log: Any) -> None:
    if server is None or address is None:
        return
    if not address.is_loopback:
        log.warning("metrics.listening_beyond_loopback", host=address.host)
    log.info("metrics.listening", url=f"http://{_url_host(address.host)}:{server.port}/metrics")


def _url_host(host: str) -> str:
    """``host`` as a URL writes it: an IPv6 literal in brackets."""
    return f"[{host}]" if ":" in host else host


def _serving_when(engine: Engine, keeper: StateKeeper | None) -> Callable[[], bool]:
    """When ``/metrics`` answers: not during metrics-missing, and (with a state file) once a checkpoint is on disk.

    The server listens before the first checkpoint; until then there is nothing
    checkpointed to show, and a 503 says so rather than an empty exposition.
    """
    if keeper is None:
        return lambda: engine.state.exposition_up
    return lambda: keeper.written > 0 and engine.state.exposition_up


def _resume(engine: Engine, resume: Checkpoint, components: dict[str, Stateful], options: RunOptions, log: Any) -> None:
    # The driver first: the engine's gauges then read what the driver has in flight. A part a
    # run may lack (the pusher's, in a file of a run that did not push) is skipped by restore.
    checkpoint.restore(resume, {"driver": engine.driver, **components})
    # A fleet's shard catches up window by window (see _join); a run of its own skips by expectation.
    missed = 0 if engine.plan.virtual or "shard" in components else engine.skip_to(engine.clock.now())
    assert options.state is not None
    log.info(
        "state.resumed",
        path=str(options.state.path),
        checkpoint_run_seconds=resume.t,
        run_seconds=engine.t,
        missed_while_down=missed,
    )


def _join(engine: Engine, arrivals: ShardArrivals, log: Any) -> None:
    """A shard that comes up after the fleet's start (or restarts) joins the schedule where it stands."""
    now = engine.clock.now()
    missed = catch_up(engine, arrivals, now)
    if engine.t > 0:
        log.info("fleet.joined", run_seconds=engine.t, now_run_seconds=round(now, 3), missed=missed)


@contextlib.asynccontextmanager
async def _opened(driver: Driver) -> AsyncIterator[None]:
    await driver.open()
    try:
        yield
    finally:
        await driver.close()


@contextlib.asynccontextmanager
async def _serving(server: MetricsServer, address: ListenAddress) -> AsyncIterator[None]:
    try:
        await server.start(address)
    except OSError as e:
        raise ListenError(f"cannot listen on {_url_host(address.host)}:{address.port}: {e.strerror}") from None
    try:
        yield
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def _pushing(pusher: Pusher, log: Any) -> AsyncIterator[None]:
    target = pusher.target
    log.info("push.start", url=target.url, job=target.job, instance=target.instance)
    pusher.start()
    try:
        yield
    finally:
        await pusher.stop()


@contextlib.asynccontextmanager
async def _keeping(keeper: StateKeeper) -> AsyncIterator[None]:
    keeper.start()
    try:
        yield
    finally:
        await keeper.stop()


def _on_signal(engine: Engine, log: Any) -> Callable[[signal.Signals], None]:
    """First SIGINT/SIGTERM/SIGHUP: stop arrivals and drain. Second: exit at once."""

    def on_signal(sig: signal.Signals) -> None:
        if engine.stop_requested:
            log.warning("run.abort", signal=sig.name)
            os._exit(128 + sig.value)
        log.info("run.stopping", signal=sig.name, run_seconds=round(engine.t, 3), in_flight=engine.driver.in_flight())
        engine.request_stop()

    return on_signal


async def _drive(engine: Engine, companion: Companion | None) -> RunResult:
    """The engine alone, or the engine with a companion that decides when the run ends.

    The run ends when the companion returns, or when the engine is stopped (a signal) or
    reaches its end first: then the companion is cancelled, so a stopped drill does not
    wait out its phases' budgets.
    """
    if companion is None:
        return await engine.run()
    run = asyncio.create_task(engine.run())
    side = asyncio.ensure_future(companion(engine, engine.log))
    stopped = asyncio.ensure_future(engine.wait_stopped())
    try:
        await asyncio.wait((side, stopped, run), return_when=asyncio.FIRST_COMPLETED)
    finally:
        # Whatever the companion did, the engine drains and the run's counts stay whole.
        engine.request_stop()
        stopped.cancel()
        if not side.done():
            side.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await side
        result = await run
    return result


class DecisionLog:
    """The controller's decision log: one JSON line per run, flushed as written (a run every 10 minutes)."""

    def __init__(self, path: Path, *, append: bool) -> None:
        self._file = path.open("a" if append else "w", encoding="utf-8")

    def __call__(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
