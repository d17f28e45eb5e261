"""The relay's rollout controller in the simulated driver's loop: it reads the SLOs, decides, and gates the traffic.

Every ``interval`` of run time (the real cron: 10 minutes) the controller reads
its three queries, over samples of the relay's series taken at the relay's 15 s
scrape cadence (:mod:`loadsim.rollout.series`), or from a live Prometheus
(:mod:`loadsim.rollout.live`) as the real controller does; applies the relay's
policy and guards (:mod:`loadsim.rollout.policy`); pushes its series the relay's
way (a PUT replacing the group: :meth:`RelayMetrics.record_controller_push`);
and logs a decision record. Its percent gates the traffic: each send comes from
a (workspace, actor) pair and is let through when the pair's bucket is at most
the percent (:mod:`loadsim.rollout.population`); a gated send is an early-guard
``rollout_gated`` error, so faults move the SLOs, the controller moves the
percent, and the percent moves the traffic and the SLOs again.

A live run's queries are asynchronous; the decision takes effect when its answer
comes (within a second of the due time), and the in-process reading of the same
moment is logged beside it (``shadow``) so the two can be compared.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from loadsim.contract import CONTROLLER_RESULTS, CONTROLLER_RUN_STATUSES
from loadsim.engine.driver import Part
from loadsim.model.controller import ControllerParams
from loadsim.overlays.state import RunState
from loadsim.rollout import series
from loadsim.rollout.live import LiveReader
from loadsim.rollout.policy import Decision, Fidelity, PolicyParams, PolicyState, Reading, decide
from loadsim.rollout.population import Gate, Population
from loadsim.rollout.series import Sample, SampleWindow
from loadsim.sinks.relay_metrics import RelayMetrics

SCRAPE_INTERVAL = 15.0
"""The relay's scrape interval: what the controller's queries see is sampled this often."""
DecisionSink = Callable[[dict[str, Any]], None]
"""Where each decision record goes (the decision log), as JSON-ready data."""


class RolloutController:
    """One controller, its state, its gate and its decisions."""

    def __init__(
        self,
        params: ControllerParams,
        population: Population,
        gate_rng: np.random.Generator,
        failure_rng: np.random.Generator,
        relay: RelayMetrics,
        *,
        log: Any = None,
        sink: DecisionSink | None = None,
        live: LiveReader | None = None,
    ) -> None:
        self.scale = params.time_scale
        self.fidelity = Fidelity(params.fidelity)
        self.policy = PolicyParams(
            fidelity=self.fidelity,
            dry_run=params.dry_run,
            dwell=params.dwell / self.scale,
            cooldown=params.cooldown / self.scale,
        )
        self.state = PolicyState(percent=params.percent, last_change=None, last_rollback=None, paused=params.paused)
        self.interval = params.interval / self.scale
        self.gate = Gate(population)
        self.gate_rng = gate_rng
        self.failure_rng = failure_rng
        self.relay = relay
        self.log = log
        self.sink = sink
        self.live = live
        self.sample_every = SCRAPE_INTERVAL / self.scale
        self.window = SampleWindow.covering(16 * 60 / self.scale, scrape_interval=self.sample_every)
        self.next_sample = 0.0
        self.next_run = 0.0
        self.results: Counter[str] = Counter()
        self.trace: list[tuple[float, int]] = [(0.0, params.percent)]
        """(run time, percent) at the start and after every change."""
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def percent(self) -> int:
        """The rollout percent now: what the gate lets through."""
        return self.state.percent

    # -- the gate -------------------------------------------------------------------------------

    def gated(self, n: int) -> NDArray[np.bool_] | None:
        """Which of ``n`` sends the gate stops at the current percent (None: it stops none)."""
        if self.state.percent >= 100 or n == 0:
            return None
        return self.gate.gated(self.gate_rng, n, self.state.percent)

    # -- after each window ------------------------------------------------------------------------

    def advance(self, t: float, state: RunState) -> None:
        """Sample the relay's series at the scrape cadence and run every decision due by ``t``.

        While the relay's metrics are missing (``state.exposition_up`` False) nothing is
        sampled: Prometheus scrapes nothing then, and the queries see only older samples.
        """
        if self.next_sample <= t:
            if state.exposition_up:
                self.window.add(Sample.of(t, self.relay.snapshot()))
            while self.next_sample <= t:
                self.next_sample += self.sample_every
        params = state.controller
        while self.next_run < t:
            if params.running:
                self._run(self.next_run, params)
            self.next_run += self.interval

    def skip_to(self, t: float) -> None:
        """Runs (and samples) due while loadsim was down never happened."""
        while self.next_run < t:
            self.next_run += self.interval
        while self.next_sample < t:
            self.next_sample += self.sample_every

    def _run(self, t: float, params: ControllerParams) -> None:
        status = "ok"
        if params.failure_probability > 0 and self.failure_rng.random() < params.failure_probability:
            status = CONTROLLER_RUN_STATUSES[1 + int(self.failure_rng.integers(0, len(CONTROLLER_RUN_STATUSES) - 1))]
        if status == "redis_error":
            # No state to read or write: the run reports its failure and changes nothing.
            self._record(t, status, None, None, reason="redis_error: the controller could not read its state")
            return
        shadow = series.read(self.window, t, self.fidelity, scale=self.scale)
        if self.live is not None:
            task = asyncio.get_running_loop().create_task(self._live_run(t, status, shadow))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            return
        reading = _unreachable(shadow) if status == "prom_unreachable" else shadow
        self._decide(t, status, reading, None)

    async def _live_run(self, t: float, status: str, shadow: Reading) -> None:
        assert self.live is not None
        if status == "prom_unreachable":
            reading = _unreachable(shadow)
        else:
            reading = await self.live.read(self.fidelity, self.scale)
        self._decide(t, status if reading.reachable else "prom_unreachable", reading, shadow)

    def _decide(self, t: float, status: str, reading: Reading, shadow: Reading | None) -> None:
        before = self.state
        decision, self.state = decide(self.policy, before, reading, t)
        if self.state.percent != before.percent:
            self.trace.append((t, self.state.percent))
        record = decision.to_json()
        record["status"] = status
        if shadow is not None:
            # What the in-process evaluator would have decided from the same state at the same moment.
            record["shadow"] = decide(self.policy, before, shadow, t)[0].to_json()
        self._record(t, status, decision, record)

    def _record(
        self,
        t: float,
        status: str,
        decision: Decision | None,
        record: dict[str, Any] | None,
        *,
        reason: str = "",
    ) -> None:
        if decision is None:
            self.results["skipped"] += 1
            self.relay.record_controller_push(CONTROLLER_RUN_STATUSES.index(status), None, None)
            record = {"t": t, "status": status, "result": "skipped", "reason": reason, "current": self.state.percent}
        else:
            self.results[decision.result] += 1
            if decision.pushed:
                result = CONTROLLER_RESULTS.index(decision.result) if decision.result in CONTROLLER_RESULTS else None
                percent = float(self.state.percent) if status == "ok" else None
                self.relay.record_controller_push(CONTROLLER_RUN_STATUSES.index(status), result, percent)
        assert record is not None
        record = _json_safe(record)
        if self.log is not None:
            self.log.info("controller.decision", **record)
        if self.sink is not None:
            self.sink(record)

    # -- summary and state ---------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Decisions by result, the percent now and its trace."""
        return {
            "mode": "policy",
            "fidelity": str(self.fidelity),
            "dry_run": self.policy.dry_run,
            "percent": self.state.percent,
            "decisions": dict(sorted(self.results.items())),
            "percent_trace": [[round(t, 3), p] for t, p in self.trace],
        }

    def snapshot(self) -> Part:
        meta = {
            "state": self.state.to_json(),
            "next_run": self.next_run,
            "next_sample": self.next_sample,
            "results": dict(self.results),
            "trace": [[t, p] for t, p in self.trace],
            "window": self.window.snapshot(),
        }
        return meta, {}

    def restore(self, part: Part) -> None:
        meta = part[0]
        self.state = PolicyState.from_json(meta["state"])
        self.next_run = float(meta["next_run"])
        self.next_sample = float(meta["next_sample"])
        self.results = Counter({str(k): int(v) for k, v in meta["results"].items()})
        self.trace = [(float(t), int(p)) for t, p in meta["trace"]]
        self.window.restore(meta["window"])

    async def aclose(self) -> None:
        """Let live queries in progress finish (bounded by the reader's own timeout)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


def _json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as None: JSON has no such numbers (a p95 over no sends is NaN)."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _unreachable(reading: Reading) -> Reading:
    """What a run reads when its Prometheus does not answer: the fallback values, marked unreachable."""
    raw: dict[str, float | None] = dict.fromkeys(reading.raw, None)
    return replace(reading, error_rate=0.0, p95=0.0, oauth_failures=0.0, reachable=False, raw=raw)
