"""The HTTP driver's client-side metrics, under ``loadsim_http_``, updated in bulk once per window.

The same families and labels an ordinary ``Counter``/``Histogram`` set would
expose, as cumulative numpy counts: one ``observe()`` per request cost more than
the request itself at tens of thousands per second. A lock guards updates
against a Pushgateway push rendering on its worker thread. In this mode the
target emits the relay's families; loadsim never writes under the relay's names.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from loadsim.sinks.relay_metrics import bucket_counts, render_buckets

FloatArray = NDArray[np.float64]
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LATENESS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0)
Part = tuple[dict[str, Any], dict[str, NDArray[Any]]]


class HttpMetrics(Collector):
    """Requests by result, drops, in flight, latency from the intended and the actual start, start lateness."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self._latency_edges = np.asarray(LATENCY_BUCKETS)
        self._lateness_edges = np.asarray(LATENESS_BUCKETS)
        self.results: dict[str, int] = {}
        self.dropped = 0
        self.in_flight = 0
        self._latency = {b: (np.zeros(len(LATENCY_BUCKETS) + 1, np.int64), [0.0]) for b in ("intended", "actual")}
        self._lateness = (np.zeros(len(LATENESS_BUCKETS) + 1, np.int64), [0.0])
        registry.register(self)

    def update(
        self,
        *,
        results: dict[str, int],
        intended: FloatArray,
        actual: FloatArray,
        lateness: FloatArray,
        dropped: int,
        in_flight: int,
    ) -> None:
        """Fold one window's measurements in."""
        with self._lock:
            for k, v in results.items():
                self.results[k] = self.results.get(k, 0) + v
            self.dropped += dropped
            self.in_flight = in_flight
            for (counts, total), values, edges in (
                (self._latency["intended"], intended, self._latency_edges),
                (self._latency["actual"], actual, self._latency_edges),
                (self._lateness, lateness, self._lateness_edges),
            ):
                np.add(counts, bucket_counts(values, edges), out=counts)
                total[0] += float(values.sum())

    def state(self) -> Part:
        """The cumulative totals, for a checkpoint."""
        with self._lock:
            meta = {
                "results": dict(self.results),
                "dropped": self.dropped,
                "sums": {b: t[0] for b, (_, t) in self._latency.items()} | {"lateness": self._lateness[1][0]},
            }
            arrays = {f"latency.{b}": c.copy() for b, (c, _) in self._latency.items()}
            arrays["lateness"] = self._lateness[0].copy()
            return meta, arrays

    def load_state(self, part: Part) -> None:
        """Put checkpointed totals back."""
        meta, arrays = part
        with self._lock:
            self.results = {str(k): int(v) for k, v in meta["results"].items()}
            self.dropped = int(meta["dropped"])
            for b, (counts, total) in self._latency.items():
                counts[...] = arrays[f"latency.{b}"]
                total[0] = float(meta["sums"][b])
            self._lateness[0][...] = arrays["lateness"]
            self._lateness[1][0] = float(meta["sums"]["lateness"])

    def describe(self) -> Iterable[Metric]:
        return self.collect()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            requests = CounterMetricFamily("loadsim_http_requests", "Requests by result", labels=["result"])
            for result, n in sorted(self.results.items()):
                requests.add_metric([result], n)
            yield requests
            yield CounterMetricFamily(
                "loadsim_http_dropped", "Arrivals dropped: max in flight reached", value=self.dropped
            )
            yield GaugeMetricFamily("loadsim_http_in_flight", "Requests in flight", value=self.in_flight)
            latency = HistogramMetricFamily(
                "loadsim_http_latency_seconds",
                "Latency from the intended start (free of coordinated omission) and from the actual start",
                labels=["basis"],
            )
            for basis, (counts, total) in self._latency.items():
                latency.add_metric([basis], render_buckets(LATENCY_BUCKETS, counts), total[0])
            yield latency
            lateness = HistogramMetricFamily(
                "loadsim_http_start_lateness_seconds", "How late requests started after their intended time"
            )
            counts, total = self._lateness
            lateness.add_metric([], render_buckets(LATENESS_BUCKETS, counts), total[0])
            yield lateness
