"""The run summary: sends by status and reason, achieved rate, latency quantiles.

Latency quantiles come from a fixed log-spaced histogram (1 ms to 10 min, 200
bins per decade, so about 1.2% relative resolution): memory stays constant
however long the run, which a list of every latency would not. Because the bins
are fixed, histograms of several runs add up bin by bin into exactly the
histogram one run of all their sends would have: a fleet's quantiles come from
the sum (``loadsim merge``), never from averaging the shards' quantiles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from loadsim.model import catalog
from loadsim.model.sampler import Executions, StartEffects

_LOG_MIN, _LOG_MAX, _PER_DECADE = -3.0, np.log10(600.0), 200
_BINS = int(np.ceil((_LOG_MAX - _LOG_MIN) * _PER_DECADE))
KIND = "loadsim-log-bins"


class LatencyQuantiles:
    """A bounded log-bucketed latency histogram with quantile look-up."""

    def __init__(self) -> None:
        self.counts = np.zeros(_BINS + 2, dtype=np.int64)  # under, bins..., over

    def add(self, latency: NDArray[np.float64]) -> None:
        """Count each latency."""
        if len(latency) == 0:
            return
        idx = np.floor((np.log10(np.maximum(latency, 1e-9)) - _LOG_MIN) * _PER_DECADE).astype(np.int64) + 1
        np.clip(idx, 0, _BINS + 1, out=idx)
        self.counts += np.bincount(idx, minlength=_BINS + 2)

    def to_json(self) -> dict[str, Any]:
        """The bins in a form ``from_json`` reads back: the layout, and the non-empty bins only."""
        nonzero = np.flatnonzero(self.counts)
        return {
            "kind": KIND,
            "log10_min": _LOG_MIN,
            "bins_per_decade": _PER_DECADE,
            "bins": _BINS,
            "counts": [[int(i), int(self.counts[i])] for i in nonzero],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LatencyQuantiles:
        """Read :meth:`to_json`'s output; ValueError if its layout is not this one (another version's)."""
        layout = (data.get("kind"), data.get("log10_min"), data.get("bins_per_decade"), data.get("bins"))
        if layout != (KIND, _LOG_MIN, _PER_DECADE, _BINS):
            msg = f"a latency histogram of another layout ({layout}); expected {(KIND, _LOG_MIN, _PER_DECADE, _BINS)}"
            raise ValueError(msg)
        out = cls()
        for i, n in data["counts"]:
            out.counts[int(i)] += int(n)
        return out

    @staticmethod
    def values() -> NDArray[np.float64]:
        """The value :meth:`quantile` reports for each bin (geometric midpoints; thresholds share the rule)."""
        # The very expression quantile() evaluates, bin by bin: equal to the last bit, not just close.
        return np.array([10 ** (_LOG_MIN + (i - 1) / _PER_DECADE + 0.5 / _PER_DECADE) for i in range(_BINS + 2)])

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (bin midpoint, geometric); NaN when empty."""
        total = int(self.counts.sum())
        if total == 0:
            return float("nan")
        i = int(np.searchsorted(np.cumsum(self.counts), q * total, side="left"))
        lo = _LOG_MIN + (i - 1) / _PER_DECADE
        return float(10 ** (lo + 0.5 / _PER_DECADE))


@dataclass
class RunSummary:
    """Outcomes of simulated sends, for the end-of-run report and the live view.

    The run's counts (scheduled, started, dropped...) are the engine's; this sink
    keeps what the sends ended as, and how long they took.
    """

    class_counts: NDArray[np.int64] = field(default_factory=lambda: np.zeros(catalog.K, dtype=np.int64))
    """Finished sends per outcome class (early guards count at start, executions at completion)."""
    latency: LatencyQuantiles = field(default_factory=LatencyQuantiles)

    def record_starts(self, effects: StartEffects) -> None:
        self.class_counts += effects.guard_counts

    def record_executions(self, done: Executions) -> None:
        if len(done):
            self.class_counts += np.bincount(done.cls, minlength=catalog.K)
            self.latency.add(done.latency)

    @property
    def finished(self) -> int:
        """Sends that have an outcome."""
        return int(self.class_counts.sum())

    @property
    def errors(self) -> int:
        """Finished sends that did not end ``ok``."""
        return self.finished - int(self.class_counts[catalog.OK])

    def latency_quantiles(self) -> dict[str, float]:
        """The summary's latency quantiles (p50 to p99.9), in seconds."""
        return {f"p{int(q * 1000) / 10:g}": round(self.latency.quantile(q), 4) for q in (0.5, 0.9, 0.95, 0.99, 0.999)}

    def state(self) -> dict[str, NDArray[Any]]:
        """The cumulative arrays, for a checkpoint."""
        return {"class_counts": self.class_counts.copy(), "latency": self.latency.counts.copy()}

    def load_state(self, arrays: dict[str, NDArray[Any]]) -> None:
        """Put checkpointed arrays back."""
        self.class_counts[...] = arrays["class_counts"]
        self.latency.counts[...] = arrays["latency"]

    def to_dict(self) -> dict[str, Any]:
        """Outcomes as JSON-ready data: by status, reason and class, the error ratio, latency quantiles."""
        by_class = {c.name: int(n) for c, n in zip(catalog.CLASSES, self.class_counts, strict=True) if n}
        executions = int(self.class_counts[catalog.IS_EXECUTION].sum())
        by_status = {
            "ok": int(self.class_counts[catalog.OK]),
            "error": executions - int(self.class_counts[catalog.OK]),
            "not_executed": self.finished - executions,
        }
        by_reason: dict[str, int] = {}
        for c, n in zip(catalog.CLASSES, self.class_counts, strict=True):
            if c.reason and n:
                by_reason[c.reason] = by_reason.get(c.reason, 0) + int(n)
        return {
            "by_status": by_status,
            "by_reason": by_reason,
            "by_outcome": by_class,
            "error_ratio": (self.finished - by_status["ok"]) / executions if executions else 0.0,
            "latency_seconds": self.latency_quantiles(),
        }
