"""Assembles one run: registry, metrics server, engine, signals, progress, summary.

This is the runtime half of the config/runtime split: :mod:`loadsim.plan` says
what to do, this module does it on an event loop (uvloop when available).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from loadsim.clock import Clock, VirtualClock, WallClock
from loadsim.drivers.http import HttpDriver, HttpOptions
from loadsim.engine import checkpoint
from loadsim.engine.checkpoint import Checkpoint
from loadsim.engine.loop import Engine, RunResult
from loadsim.engine.seeds import RunRandom
from loadsim.errors import ConfigError
from loadsim.logs import get_logger
from loadsim.net import ListenAddress
from loadsim.plan import RunPlan
from loadsim.sinks.health import HealthMetrics
from loadsim.sinks.metrics_server import MetricsServer
from loadsim.sinks.progress import Progress
from loadsim.sinks.pushgateway import Pusher, PushTarget
from loadsim.sinks.relay_metrics import RelayMetrics
from loadsim.sinks.summary import RunSummary


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Runtime options that are not part of the profile."""

    listen: ListenAddress | None
    progress: str = "auto"
    summary_json: Path | None = None
    push: PushTarget | None = None
    state: StateOptions | None = None


@dataclass(frozen=True, slots=True)
class StateOptions:
    """``--state FILE`` and how to treat a missing or old file."""

    path: Path
    mode: str = "resume"
    """``resume`` (the file must exist), ``fresh`` (start over, keeping the old file as .bak)
    or ``fresh-if-missing`` (resume when present, start when absent)."""
    interval: float = 5.0
    """Seconds of wall time between checkpoints."""


def open_state(options: StateOptions, plan_fingerprint: str, profile: str, seed: int) -> Checkpoint | None:
    """The checkpoint to resume from, or None to start a new run; ConfigError when neither is allowed."""
    path = options.path
    if options.mode == "fresh":
        if path.exists():
            path.replace(path.with_name(path.name + ".bak"))
        return None
    if options.mode == "fresh-if-missing" and not path.exists():
        return None
    try:
        return checkpoint.read(path, run_fingerprint=plan_fingerprint, profile=profile, seed=seed)
    except checkpoint.StateError as e:
        raise ConfigError.single(str(path), "", str(e)) from None


class ListenError(Exception):
    """The metrics listener could not bind its address."""


Companion = Callable[[Engine, Any], Awaitable[None]]
"""Something that works beside a running engine (a drill); the run stops when it returns."""


async def execute(
    plan: RunPlan, options: RunOptions, companion: Companion | None = None, resume: Checkpoint | None = None
) -> dict[str, Any]:
    """Run ``plan`` to its end (or a signal, or until ``companion`` returns); returns the summary.

    ``resume`` continues a checkpointed run: the plan must have been built on the
    checkpoint's epoch, so the schedule and overlays keep their wall-clock times.
    """
    log = get_logger(profile=plan.name, seed=plan.seed, virtual=plan.virtual)
    registry = CollectorRegistry(auto_describe=False)
    random = RunRandom.from_seed(plan.seed)
    relay = RelayMetrics(plan.metrics, random.metrics)
    registry.register(relay)
    health = HealthMetrics(registry)
    summary = RunSummary()
    clock = _clock(plan, resume)
    progress = Progress(plan, summary, mode=options.progress, logger=log)
    engine = Engine(plan, clock, random, relay, health, summary, on_window=progress.maybe_report, log=log)
    exposed, keeper = await _keep_state(engine, registry, options.state, resume, log)
    server = MetricsServer(
        exposed,
        ready=lambda: not engine.stop_requested and engine.t < plan.duration,
        serving=lambda: relay.exposition_up,
    )
    if options.listen is not None:
        await _listen(server, options.listen, log)
    pusher = None
    if options.push is not None:
        pusher = Pusher(options.push, exposed, registry, log, serving=lambda: relay.exposition_up)
        log.info("push.start", url=options.push.url, job=options.push.job, instance=options.push.instance)
        pusher.start()

    signals = _SignalHandler(engine, log)
    signals.install()
    log.info("run.start", duration_seconds=plan.duration, expected_sends=round(plan.expected_sends()), tick=plan.tick)
    wall0 = time.monotonic()
    if keeper is not None:
        keeper.start()
    try:
        result = await _drive(engine, companion, log)
    finally:
        signals.remove()
        progress.close()
        if keeper is not None:
            await keeper.stop()
        if pusher is not None:
            await pusher.stop()
        await server.stop()
    out = summary.to_dict(
        run_seconds=result.run_seconds,
        wall_seconds=time.monotonic() - wall0,
        target_sends=plan.expected_sends(0.0, result.run_seconds),
    )
    out.update(profile=plan.name, seed=plan.seed, virtual=plan.virtual, stopped_early=result.stopped_early)
    log.info("run.summary", **out)
    if options.summary_json is not None:
        _write_atomically(options.summary_json, json.dumps(out, indent=2) + "\n")
    return out


def _clock(plan: RunPlan, resume: Checkpoint | None) -> Clock:
    if plan.virtual:
        return VirtualClock(plan.epoch, start=resume.t if resume is not None else 0.0)
    if resume is None:
        return WallClock()
    # Wall-anchored: run time is time since the original start, downtime included.
    return WallClock(origin_offset=max(time.time() - plan.epoch, resume.t))


class _StateKeeper:
    """Checkpoints on an interval; what it wrote last is what the exposition serves."""

    def __init__(self, engine: Engine, registry: CollectorRegistry, options: StateOptions, log: Any) -> None:
        self.engine = engine
        self.registry = registry
        self.options = options
        self.log = log
        self.frozen = checkpoint.FrozenRegistry()
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    async def checkpoint(self) -> bool:
        """Capture between two windows, write off the loop, then publish what was written."""
        ck = checkpoint.capture(self.engine)
        families = list(self.registry.collect())
        try:
            await asyncio.to_thread(checkpoint.write, self.options.path, ck)
        except OSError as e:
            if not self._failing:
                # An expected I/O failure (disk full, volume gone): one line, no traceback.
                self.log.error("state.write_failed", path=str(self.options.path), error=str(e))  # noqa: TRY400
            self._failing = True
            return False
        if self._failing:
            self.log.info("state.write_recovered", path=str(self.options.path))
        self._failing = False
        self.frozen.freeze(families)
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.interval)
            await self.checkpoint()

    async def stop(self) -> None:
        """Stop the interval and write the final checkpoint."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.checkpoint()


async def _keep_state(
    engine: Engine, registry: CollectorRegistry, state: StateOptions | None, resume: Checkpoint | None, log: Any
) -> tuple[CollectorRegistry, _StateKeeper | None]:
    """Restore a checkpoint if resuming; with state, expose only what was checkpointed."""
    if state is None:
        return registry, None
    if resume is not None:
        checkpoint.restore(engine, resume)
        missed = 0 if engine.plan.virtual else engine.skip_to(engine.clock.now())
        log.info(
            "state.resumed",
            path=str(state.path),
            checkpoint_run_seconds=resume.t,
            run_seconds=engine.t,
            missed_while_down=missed,
        )
    keeper = _StateKeeper(engine, registry, state, log)
    await keeper.checkpoint()
    return keeper.frozen.registry(), keeper


async def _listen(server: MetricsServer, address: ListenAddress, log: Any) -> None:
    try:
        await server.start(address)
    except OSError as e:
        raise ListenError(f"cannot listen on {address.host}:{address.port}: {e.strerror}") from None
    if not address.is_loopback:
        log.warning("metrics.listening_beyond_loopback", host=address.host)
    log.info("metrics.listening", url=f"http://{address.host}:{server.port}/metrics")


async def _drive(engine: Engine, companion: Companion | None, log: Any) -> RunResult:
    """The engine alone, or the engine with a companion that decides when the run ends."""
    if companion is None:
        return await engine.run()
    run = asyncio.create_task(engine.run())
    try:
        await companion(engine, log)
    finally:
        # Whatever the companion did, the engine drains and the run's counts stay whole.
        engine.request_stop()
        result = await run
    return result


class _SignalHandler:
    """First SIGINT/SIGTERM: stop arrivals and drain. Second: exit at once."""

    def __init__(self, engine: Engine, log: Any) -> None:
        self.engine = engine
        self.log = log
        self._loop = asyncio.get_running_loop()

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                self._loop.add_signal_handler(sig, self._on_signal, sig)

    def remove(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                self._loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.engine.stop_requested:
            self.log.warning("run.abort", signal=sig.name)
            os._exit(128 + sig.value)
        self.log.info("run.stopping", signal=sig.name, in_flight=len(self.engine.inflight))
        self.engine.request_stop()


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


async def execute_http(plan: RunPlan, options: RunOptions, http: HttpOptions) -> dict[str, Any]:
    """Drive a real HTTP target with ``plan``'s schedule; returns the summary."""
    log = get_logger(profile=plan.name, seed=plan.seed, driver="http")
    registry = CollectorRegistry(auto_describe=False)
    driver = HttpDriver(plan, http, RunRandom.from_seed(plan.seed), registry, log)
    server = MetricsServer(registry, ready=lambda: not driver.stop_requested and driver.t < plan.duration)
    if options.listen is not None:
        await _listen(server, options.listen, log)
    loop = asyncio.get_running_loop()
    stopping = False

    def on_signal(sig: signal.Signals) -> None:
        nonlocal stopping
        if stopping:
            os._exit(128 + sig.value)
        stopping = True
        log.info("run.stopping", signal=sig.name)
        driver.request_stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal, sig)
    log.info("run.start", target=http.target, template=http.template, duration_seconds=plan.duration)
    # Each request allocates small objects (its bytes, its exchange, its measurements): with the
    # default thresholds the cyclic collector took about 20% of the driver's core under aiohttp
    # (py-spy, 10 s runs). Freezing what setup created and collecting less often gave +29% then.
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)
    try:
        out = await driver.run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await server.stop()
    out.update(profile=plan.name, seed=plan.seed, stopped_early=stopping)
    log.info("run.summary", **out)
    if options.summary_json is not None:
        _write_atomically(options.summary_json, json.dumps(out, indent=2) + "\n")
    return out
