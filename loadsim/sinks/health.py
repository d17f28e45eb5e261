"""loadsim's own health, under the ``loadsim_`` prefix, beside the relay's families.

These use prometheus-client's ordinary metric types: they change once per
window, not once per send, so per-call cost does not matter here.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENESS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


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
        self.lateness = Histogram(
            "loadsim_tick_lateness_seconds",
            "How late each engine window started after its deadline",
            buckets=LATENESS_BUCKETS,
            registry=registry,
        )
