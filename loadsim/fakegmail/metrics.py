"""The fake Gmail's own counters, under ``fakegmail_`` in a registry of its own.

They describe the fake, not the relay: what it answered, which of those 429s came
from the per-user quota (load) rather than the model (chance), and which overlays
are acting. A separate registry keeps them apart from the relay families a loadsim
run in the same process exports. Every known label value is exported from the
first scrape at zero, so the first 429 is visible to ``rate()``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from loadsim.fakegmail.outcomes import GMAIL_OUTCOMES

KNOWN_CODES = ("200", "400", "401", "403", "404", "429", "500", "503", "504", "closed")
"""Answers of ``messages.send``; ``closed`` is a connection dropped on purpose (a network error)."""


class FakeGmailMetrics:
    """Counters and gauges of one fake Gmail."""

    def __init__(self, scenarios: tuple[str, ...] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "fakegmail_requests", "messages.send requests answered, by HTTP status code", ["code"], registry=r
        )
        self.outcomes = Counter(
            "fakegmail_outcomes",
            "Outcomes drawn from the model (requests past auth, body and quota)",
            ["outcome"],
            registry=r,
        )
        self.quota_rejections = Counter(
            "fakegmail_quota_rejections", "429s answered because a user exceeded its per-user quota", registry=r
        )
        self.in_flight = Gauge("fakegmail_requests_in_flight", "messages.send requests being answered", registry=r)
        self.overlay_active = Gauge(
            "fakegmail_overlay_active",
            "Intensity (0 to 1) of each overlay started through the control API",
            ["scenario"],
            registry=r,
        )
        for code in KNOWN_CODES:
            self.requests.labels(code=code)
        for outcome in GMAIL_OUTCOMES:
            self.outcomes.labels(outcome=outcome)
        for name in scenarios:
            self.overlay_active.labels(scenario=name).set(0.0)

    def answered(self, code: int | str) -> None:
        """Count one answer."""
        self.requests.labels(code=str(code)).inc()
