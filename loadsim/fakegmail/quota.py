"""The per-user send quota: a token bucket per user, so 429s emerge from load instead of a dice roll.

The numbers are a model of Gmail's limits, not a copy: Gmail's documented per-user
limit is 250 quota units per second and ``messages.send`` costs 100 units, i.e.
2.5 sends/s per user; Google lets short bursts through, which we model as a
bucket of 10. Daily sending limits (2,000 messages a day for Workspace accounts)
are not modelled.

Worked example, rate 2.5/s and burst 10: a user that sends 20 messages at once gets
10 through; the 11th would need one token, which takes ``1 / 2.5 = 0.4 s`` to come
back, so it is refused with ``Retry-After: 1`` (whole seconds, rounded up). A user
sending steadily at 2.5/s or slower is never refused.

Time is an argument (seconds on any monotonic clock; the server passes its
:class:`~loadsim.clock.Clock`'s ``now()``), so the bucket maths is a pure function of
the calls made to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_RATE = 2.5
"""Sends per second per user: Gmail's 250 units/s over 100 units per send."""
DEFAULT_BURST = 10.0
"""Sends a user may make at once after being idle (a model; Google does not publish it)."""


@dataclass(frozen=True, slots=True)
class QuotaParams:
    """How fast each user may send, and how much may go at once."""

    rate: float = DEFAULT_RATE
    burst: float = DEFAULT_BURST

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0):
            msg = f"rate must be > 0, got {self.rate:g}"
            raise ValueError(msg)
        if not (math.isfinite(self.burst) and self.burst >= 1):
            msg = f"burst must be >= 1 (one send must fit), got {self.burst:g}"
            raise ValueError(msg)


def retry_after_header(wait: float) -> str:
    """``Retry-After`` in whole seconds, rounded up and at least 1 (HTTP has no fractions)."""
    return str(max(1, math.ceil(wait)))


class UserQuota:
    """One token bucket per user; a refused send takes no token.

    Only users seen lately hold memory: a bucket that has refilled completely is the
    same as no bucket, so such buckets are swept once the table doubles in size.
    """

    def __init__(self, params: QuotaParams) -> None:
        self.params = params
        self._buckets: dict[str, tuple[float, float]] = {}
        """user -> (tokens, when they were counted)."""
        self._sweep_at = 4096

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, user: str, now: float) -> float:
        """Take one send for ``user`` at ``now``: 0.0 when it may go, else the seconds until it could."""
        rate, burst = self.params.rate, self.params.burst
        tokens, last = self._buckets.get(user, (burst, now))
        tokens = min(burst, tokens + max(now - last, 0.0) * rate)
        if tokens >= 1.0:
            self._buckets[user] = (tokens - 1.0, now)
            if len(self._buckets) >= self._sweep_at:
                self._sweep(now)
            return 0.0
        self._buckets[user] = (tokens, now)
        return (1.0 - tokens) / rate

    def _sweep(self, now: float) -> None:
        rate, burst = self.params.rate, self.params.burst
        self._buckets = {u: (k, t) for u, (k, t) in self._buckets.items() if k + (now - t) * rate < burst}
        self._sweep_at = max(4096, 2 * len(self._buckets))
