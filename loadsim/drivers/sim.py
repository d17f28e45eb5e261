"""The simulated driver: a window's sends sampled in bulk from the outcome model, fed to the relay's metrics.

Each window is taken once it has passed: every send in it has started, so the
driver samples all their outcomes in one call, records what happened at start,
adds the executions to the in-flight set and records every send due by the
window's end; sends that cross the window's end stay in flight. The rollout
controller's heartbeat runs here too: it is part of the relay's metrics this
driver stands in for. Overlays reach the driver as the parameters in force;
the outcome model for a set of active overlays (and their intensities, to a
thousandth) is built once and reused.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from loadsim.drivers.inflight import InFlight
from loadsim.engine.driver import NO_COUNTS, Counts, Part, Window
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
    ) -> None:
        self.rng = rng
        self.relay = relay
        self.summary = summary
        self.sinks = (relay, summary)
        self.max_in_flight = max_in_flight
        self.controller_params = controller
        self.inflight = InFlight()
        self.controller = ControllerHeartbeat(controller_rng)
        self._base_model = OutcomeModel(model)
        self._models: dict[tuple[tuple[int, float], ...], OutcomeModel] = {}

    def handover(self, t0: float, t1: float) -> float:  # noqa: ARG002 - the window is taken when it has passed
        return t1

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

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
        effects, executions = self.model_for(window).sample(self.rng, starts)
        due = self.inflight.add_and_pop_due(executions, window.t1)
        for sink in self.sinks:
            sink.record_starts(effects)
            sink.record_executions(due)
        self.controller.advance(window.t1, window.state.controller, self.relay)
        return Counts(started=len(starts), dropped=dropped, completed=len(due) + int(effects.guard_counts.sum()))

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
        interval = self.controller_params.interval
        while self.controller.next_run < t:
            self.controller.next_run += interval

    def errors(self) -> int:
        return self.summary.errors

    def latency_quantile(self, q: float) -> float:
        return self.summary.latency.quantile(q)

    def report(self) -> dict[str, Any]:
        return self.summary.to_dict()

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
        return {"relay": relay_meta, "controller_next_run": self.controller.next_run}, arrays

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


def _prefixed(arrays: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}
