"""The few PromQL functions loadsim needs to predict what the relay's rules will read.

These mirror Prometheus's own semantics, including its quirks: ``histogram_quantile``
interpolates linearly inside a bucket (so a p95 read through coarse buckets is not
the true p95) and returns the highest finite bound when the quantile falls in
``+Inf``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float:
    """Prometheus's ``histogram_quantile`` over non-cumulative ``counts`` (last one is ``+Inf``).

    >>> histogram_quantile(0.5, [1.0, 2.0], [0, 10, 0])
    1.5
    """
    if len(counts) != len(bounds) + 1:
        msg = f"need {len(bounds) + 1} counts (one per bound plus +Inf), got {len(counts)}"
        raise ValueError(msg)
    total = float(sum(counts))
    if total == 0 or math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    rank = q * total
    cumulative = 0.0
    for i, n in enumerate(counts):
        prev = cumulative
        cumulative += n
        if cumulative >= rank and n > 0:
            if i == len(bounds):
                return bounds[-1]
            lower = 0.0 if i == 0 else bounds[i - 1]
            upper = bounds[i]
            return lower + (upper - lower) * (rank - prev) / n
    return bounds[-1]
