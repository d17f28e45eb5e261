"""The simulated driver: a window's sends sampled in bulk from the outcome model, fed to the relay's metrics.

Each window is taken once it has passed: every send in it has started, so the
driver samples all their outcomes in one call, records what happened at start,
adds the executions to the in-flight set and records every send due by the
window's end; sends that cross the window's end stay in flight. The rollout
controller's heartbeat runs here too: it is part of the relay's metrics this
driver stands in for, or, in policy mode, the relay's real controller in the loop
(:mod:`loadsim.drivers.controller`), whose percent gates each window's sends before
they are sampled: a gated send is a ``rollout_gated`` early guard, nothing more.
Overlays reach the driver as the parameters in force;
the outcome model for a set of active overlays (and their intensities, to a
thousandth) is built once and reused.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from loadsim.drivers.controller import RolloutController
from loadsim.drivers.inflight import InFlight
from loadsim.engine.driver import NO_COUNTS, Counts, Part, Window
from loadsim.model import catalog
from loadsim.model.controller import ControllerHeartbeat, ControllerParams
from loadsim.model.params import ModelParams
from loadsim.model.sampler import Executions, OutcomeModel
from loadsim.sinks.relay_metrics import RelayMetrics
from loadsim.sinks.summary import RunSummary

_NO_STARTS = Executions(
    cls=np.empty(0, dtype=np.int8), latency=np.empty(0, dtype=np.float64), done_at=np.empty(0, dtype=np.float64)
)
MODEL_CACHE = 256
"""Outcome models kept for overlay combinations (a ramp makes a new one per thousandth of intensity)."""


class SimDriver:
    """Samples outcomes for the relay's metrics; never waits on anything."""

    noun = "sends"
    max_batch = 1 << 20
    """About 0.1 s of sampling on one core, 100 MB while it is sampled."""

    def __init__(  # noqa: PLR0917 - each collaborator injected once, in data-flow order
        self,
        model: ModelParams,
        controller: ControllerParams,
        rng: np.random.Generator,
        controller_rng: np.random.Generator,
        relay: RelayMetrics,
        summary: RunSummary,
        *,
        max_in_flight: int,
        rollout: RolloutController | None = None,
    ) -> None:
        self.rng = rng
        self.relay = relay
        self.summary = summary
        self.sinks = (relay, summary)
        self.max_in_flight = max_in_flight
        self.controller_params = controller
        self.inflight = InFlight()
        self.controller = ControllerHeartbeat(controller_rng)
        self.rollout = rollout
        """The relay's controller in the loop (policy mode); None runs the heartbeat."""
        self._base_model = OutcomeModel(model)
        self._models: dict[tuple[tuple[int, float], ...], OutcomeModel] = {}

    def handover(self, t0: float, t1: float) -> float:  # noqa: ARG002 - the window is taken when it has passed
        return t1

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        if self.rollout is not None:
            await self.rollout.aclose()

    def model_for(self, window: Window) -> OutcomeModel:
        """The outcome model for the parameters in force (cached per set of active overlays)."""
        if not window.active:
            return self._base_model
        key = tuple(sorted((a.index, round(a.intensity, 3)) for a in window.active))
        model = self._models.get(key)
        if model is None:
            if len(self._models) >= MODEL_CACHE:
                self._models.clear()
            model = self._models[key] = OutcomeModel(window.state.model)
        return model

    def window(self, window: Window) -> Counts:
        starts = window.starts
        room = self.max_in_flight - len(self.inflight)
        dropped = max(0, len(starts) - room)
        if dropped:
            starts = starts[: max(room, 0)]
        started = len(starts)
        model = self.model_for(window)
        gated = self.rollout.gated(started) if self.rollout is not None else None
        n_gated = 0
        if gated is not None and (n_gated := int(np.count_nonzero(gated))):
            starts = np.compress(~gated, starts)
        effects, executions = model.sample(self.rng, starts)
        if n_gated:
            _gate(effects.guard_counts, n_gated, model.class_probabilities, self.rng)
        due = self.inflight.add_and_pop_due(executions, window.t1)
        for sink in self.sinks:
            sink.record_starts(effects)
            sink.record_executions(due)
        if self.rollout is not None:
            self.rollout.advance(window.t1, window.state)
        else:
            self.controller.advance(window.t1, window.state.controller, self.relay)
        return Counts(started=started, dropped=dropped, completed=len(due) + int(effects.guard_counts.sum()))

    def settle(self, t: float) -> Counts:
        due = self.inflight.add_and_pop_due(_NO_STARTS, t)
        if not len(due):
            return NO_COUNTS
        for sink in self.sinks:
            sink.record_executions(due)
        return Counts(completed=len(due))

    def in_flight(self) -> int:
        return len(self.inflight)

    def next_due(self) -> float:
        return self.inflight.next_due()

    def request_stop(self) -> None:
        return None

    async def abandon(self) -> int:
        return len(self.inflight.abandon())

    def skip_to(self, t: float) -> None:
        # The controller's runs while loadsim was down never happened.
        if self.rollout is not None:
            self.rollout.skip_to(t)
            return
        interval = self.controller_params.interval / self.controller_params.time_scale
        while self.controller.next_run < t:
            self.controller.next_run += interval

    def errors(self) -> int:
        return self.summary.errors

    def latency_quantile(self, q: float) -> float:
        return self.summary.latency.quantile(q)

    def gate_percent(self) -> int | None:
        return None if self.rollout is None else self.rollout.percent

    def report(self) -> dict[str, Any]:
        out = self.summary.to_dict()
        if self.rollout is not None:
            out["controller"] = self.rollout.summary()
        return out

    def snapshot(self) -> Part:
        relay_meta, relay_arrays = self.relay.state()
        pending = self.inflight.pending
        arrays = {f"relay.{k}": v for k, v in relay_arrays.items()}
        arrays |= {f"summary.{k}": v for k, v in self.summary.state().items()}
        arrays |= {
            "inflight.cls": pending.cls.copy(),
            "inflight.latency": pending.latency.copy(),
            "inflight.done_at": pending.done_at.copy(),
        }
        meta: dict[str, Any] = {"relay": relay_meta, "controller_next_run": self.controller.next_run}
        if self.rollout is not None:
            meta["rollout"] = self.rollout.snapshot()[0]
        return meta, arrays

    def restore(self, part: Part) -> None:
        meta, arrays = part
        self.relay.load_state((meta["relay"], _prefixed(arrays, "relay.")))
        self.summary.load_state(_prefixed(arrays, "summary."))
        self.inflight.pending = Executions(
            cls=arrays["inflight.cls"].astype(np.int8),
            latency=arrays["inflight.latency"].astype(np.float64),
            done_at=arrays["inflight.done_at"].astype(np.float64),
        )
        self.controller.next_run = float(meta["controller_next_run"])
        if self.rollout is not None:
            self.rollout.restore((meta["rollout"], {}))


def _prefixed(arrays: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}


_PROVIDER_DISABLED = catalog.CLASS_INDEX["provider_disabled"]
_ROLLOUT_GATED = catalog.CLASS_INDEX["rollout_gated"]


def _gate(guard_counts: Any, n_gated: int, probabilities: Any, rng: np.random.Generator) -> None:
    """Count ``n_gated`` sends stopped by the rollout gate.

    The relay's adapter checks the provider switch first, then the gate: a gated send
    whose provider is disabled fails as ``provider_disabled``, the others as ``rollout_gated``.
    """
    p_disabled = float(probabilities[_PROVIDER_DISABLED])
    disabled = int(rng.binomial(n_gated, p_disabled)) if p_disabled > 0 else 0
    guard_counts[_PROVIDER_DISABLED] += disabled
    guard_counts[_ROLLOUT_GATED] += n_gated - disabled
