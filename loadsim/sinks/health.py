"""loadsim's own health, under the ``loadsim_`` prefix, beside the relay's families.

These use prometheus-client's ordinary metric types: they change once per
window, not once per send, so per-call cost does not matter here.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

LATENESS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class CheckpointedHistogram(Collector):
    """A histogram whose buckets and sum are part of a checkpoint, so a resumed run continues them.

    prometheus-client's ``Histogram`` can only start from zero: after a restart its
    series would go backwards (a reset ``rate()`` and ``histogram_quantile`` see as a
    counter reset in every bucket). Observed once per engine window, so a lock and a
    bisect cost nothing that matters.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = [*sorted(buckets), math.inf]
        self.counts = [0] * len(self.bounds)
        """Observations per bucket (not cumulative); the last is +Inf."""
        self.sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe(self, value: float) -> None:
        with self._lock:
            i = bisect.bisect_left(self.bounds, value) if not math.isnan(value) else len(self.bounds) - 1
            self.counts[min(i, len(self.bounds) - 1)] += 1
            self.sum += value

    def state(self) -> dict[str, Any]:
        """JSON-ready: bucket counts and sum."""
        with self._lock:
            return {"counts": list(self.counts), "sum": self.sum}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Put checkpointed counts back (ValueError if they do not fit these buckets)."""
        counts = [int(n) for n in state["counts"]]
        total = float(state["sum"])
        if len(counts) != len(self.bounds) or min(counts) < 0 or not math.isfinite(total):
            msg = f"{self.name}: expected {len(self.bounds)} bucket counts >= 0 and a finite sum"
            raise ValueError(msg)
        with self._lock:
            self.counts, self.sum = counts, total

    def describe(self) -> Iterable[Metric]:
        return self.collect()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            cumulative, running = [], 0
            for bound, n in zip(self.bounds, self.counts, strict=True):
                running += n
                cumulative.append(("+Inf" if math.isinf(bound) else repr(bound), running))
            total = self.sum
        yield HistogramMetricFamily(self.name, self.documentation, buckets=cumulative, sum_value=total)


class HealthMetrics:
    """Counters and gauges describing the generator itself."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.scheduled = Counter("loadsim_arrivals_scheduled", "Arrivals the schedule produced", registry=registry)
        self.started = Counter("loadsim_sends_started", "Sends started", registry=registry)
        self.dropped = Counter(
            "loadsim_arrivals_dropped", "Arrivals dropped because too many sends were in flight", registry=registry
        )
        self.completed = Counter(
            "loadsim_sends_completed", "Sends that have an outcome (early-guard failures included)", registry=registry
        )
        self.abandoned = Counter(
            "loadsim_sends_abandoned", "Sends still in flight when the run stopped", registry=registry
        )
        self.missed = Counter(
            "loadsim_arrivals_missed",
            "Arrivals the schedule expected while loadsim was down (restart from a checkpoint)",
            registry=registry,
        )
        self.behind = Counter(
            "loadsim_arrivals_behind",
            "Arrivals dropped because the machine could not keep up with the schedule (windows too late to sample)",
            registry=registry,
        )
        self.in_flight = Gauge("loadsim_sends_in_flight", "Sends started and not yet completed", registry=registry)
        self.target_rate = Gauge("loadsim_target_rate", "Scheduled send rate (per second) now", registry=registry)
        self.run_seconds = Gauge("loadsim_run_seconds", "Run time reached (virtual or wall)", registry=registry)
        self.overlay_active = Gauge(
            "loadsim_overlay_active",
            "Intensity (0 to 1) of each fault overlay: ground truth for when alerts should fire",
            ["overlay"],
            registry=registry,
        )
        self.lateness = CheckpointedHistogram(
            "loadsim_tick_lateness_seconds",
            "How late each engine window started after its deadline",
            LATENESS_BUCKETS,
            registry,
        )

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps beyond the engine's counts (which restore the counters): the histogram."""
        return {"lateness": self.lateness.state()}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Put :meth:`state` back."""
        self.lateness.load_state(state["lateness"])
