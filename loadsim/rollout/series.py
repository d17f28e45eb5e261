"""The rollout controller's three queries, evaluated in process with Prometheus's semantics.

The controller reads what Prometheus scraped from the relay every 15 s. A
:class:`SampleWindow` keeps the last few minutes of those scrapes (only the families the
queries read), and the functions here evaluate the controller's queries over them as
Prometheus would at run time ``t``:

* a range selector ``[r]`` at ``t`` selects the samples with ``t - r < sample_t <= t``
  (left-open, as since Prometheus 3.0), in milliseconds as Prometheus keeps them;
* ``rate``/``increase`` extrapolate to the range's edges (:func:`extrapolated_rate`);
* binary operators match series one-to-one on their full label sets (the metric name
  is dropped by ``rate``/``increase``), and an unmatched element is dropped;
* ``sum`` of an empty vector is an empty vector, and so is any expression over it.

A query that comes back empty is None here; :func:`read` applies the controller's 0.0
fallback and keeps the raw answers for the decision log.

Worked example of :func:`extrapolated_rate`: a counter scraped every 15 s, going
``1000, 1002, ..., 1038`` at ``t = 15, 30, ..., 300``, read as ``increase(x[5m])`` at
``t = 300`` (range ``(0, 300]``). The 20 samples cover 285 s and rose by 38. The first
sample is 15 s after the range start, within 1.1 times the average spacing (16.5 s), so the
rate is extrapolated to the start; the counter would not reach zero before it
(``285 * 1000 / 38`` s back), so nothing caps it; the last sample is on the range end.
``increase = 38 * (285 + 15 + 0) / 285 = 40``, and ``rate = 40 / 300``.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from loadsim import contract
from loadsim.model import catalog
from loadsim.promql import histogram_quantile
from loadsim.rollout.policy import Fidelity, Reading

SCRAPE_INTERVAL = 15.0
"""The relay's scrape interval, seconds."""
DEFAULT_CAPACITY = 65
"""Samples a window keeps by default: 16 minutes at 15 s (64 intervals, 65 samples)."""
ERROR_RANGE = 300.0
LATENCY_RANGE = 300.0
OAUTH_RANGE = 900.0
QUANTILE = 0.95
SMALL_DELTA_TOLERANCE = 1e-12
"""Prometheus's ``smallDeltaTolerance`` for classic-histogram buckets (``promql/quantile.go``)."""

_REFRESH_FAILED = catalog.OAUTH_EVENTS.index("refresh_failed")
_N_LATENCY = len(contract.LATENCY_BUCKETS) + 1
_SHAPES = {
    "errors": len(catalog.ERROR_REASONS),
    "exec_by_status": len(contract.EXEC_STATUSES),
    "latency_buckets": _N_LATENCY,
}


class RelayTotals(Protocol):
    """The cumulative arrays a scrape reads (a ``RelayMetrics`` snapshot has them all)."""

    @property
    def exec(self) -> NDArray[np.int64]:
        """``action_exec_total`` by (workspace, status)."""
        ...

    @property
    def errors(self) -> NDArray[np.int64]:
        """``action_error_total`` by reason."""
        ...

    @property
    def latency_buckets(self) -> NDArray[np.int64]:
        """``action_latency_seconds`` per-bucket counts by (status row, bucket)."""
        ...

    @property
    def oauth(self) -> NDArray[np.int64]:
        """``oauth_events_total`` by event."""
        ...


@dataclass(frozen=True, slots=True)
class Sample:
    """One scrape of the series the controller's queries read, all cumulative counts."""

    t: float
    """Run time of the scrape, seconds."""
    errors: NDArray[np.int64]
    """``action_error_total`` per reason, in ``catalog.ERROR_REASONS`` order."""
    exec_by_status: NDArray[np.int64]
    """``action_exec_total`` for ``status`` ok and error, summed over workspaces."""
    latency_buckets: NDArray[np.int64]
    """``action_latency_seconds`` per bucket (not cumulative over ``le``), ``+Inf`` last, summed over status."""
    oauth_failed: int
    """``oauth_events_total{event="refresh_failed"}``."""

    @classmethod
    def of(cls, t: float, totals: RelayTotals) -> Sample:
        """The sample a scrape at ``t`` of these totals gives (copies; the totals may move on)."""
        return cls(
            t=float(t),
            errors=np.array(totals.errors, dtype=np.int64),
            exec_by_status=np.asarray(totals.exec, dtype=np.int64).sum(axis=0),
            latency_buckets=np.asarray(totals.latency_buckets, dtype=np.int64).sum(axis=0),
            oauth_failed=int(totals.oauth[_REFRESH_FAILED]),
        )


def _ms(seconds: float) -> int:
    """Seconds as Prometheus's integer milliseconds."""
    return round(seconds * 1000)


class SampleWindow:
    """The last ``capacity`` scrapes, oldest first; older ones fall off as new ones come.

    The default keeps 16 minutes at the relay's 15 s scrape interval, enough for the
    controller's longest range (15 minutes). For time-scaled rules, size it with
    :meth:`covering`.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 2:
            msg = f"capacity: must be >= 2 (rate() needs two samples), got {capacity}"
            raise ValueError(msg)
        self._samples: deque[Sample] = deque(maxlen=capacity)

    @classmethod
    def covering(cls, span: float, scrape_interval: float = SCRAPE_INTERVAL) -> SampleWindow:
        """A window holding every sample of ``span`` seconds at ``scrape_interval``, ends included."""
        if not (span > 0 and scrape_interval > 0):
            msg = f"span and scrape_interval must be > 0, got {span} and {scrape_interval}"
            raise ValueError(msg)
        return cls(math.ceil(span / scrape_interval) + 1)

    @property
    def capacity(self) -> int:
        """How many samples the window keeps."""
        maxlen = self._samples.maxlen
        assert maxlen is not None
        return maxlen

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, sample: Sample) -> None:
        """Append a scrape; its time must be after the last one's, its arrays the contract's shapes."""
        for name, size in _SHAPES.items():
            shape = np.shape(getattr(sample, name))
            if shape != (size,):
                msg = f"sample.{name}: must have shape ({size},), got {shape}"
                raise ValueError(msg)
        if self._samples and _ms(sample.t) <= _ms(self._samples[-1].t):
            msg = f"sample.t: must be after the last sample ({self._samples[-1].t}), got {sample.t}"
            raise ValueError(msg)
        self._samples.append(sample)

    def samples_in(self, t: float, range_seconds: float) -> list[Sample]:
        """The samples the range selector ``[range_seconds]`` evaluated at ``t`` selects.

        That is ``t - range < sample_t <= t``, compared in whole milliseconds as Prometheus does.
        """
        end = _ms(t)
        start = end - _ms(range_seconds)
        return [s for s in self._samples if start < _ms(s.t) <= end]

    def snapshot(self) -> dict[str, Any]:
        """Every sample as plain JSON-ready data, for a checkpoint."""
        return {
            "capacity": self.capacity,
            "samples": [
                {
                    "t": s.t,
                    "errors": s.errors.tolist(),
                    "exec_by_status": s.exec_by_status.tolist(),
                    "latency_buckets": s.latency_buckets.tolist(),
                    "oauth_failed": s.oauth_failed,
                }
                for s in self._samples
            ],
        }

    def restore(self, data: Mapping[str, Any]) -> None:
        """Replace the window's contents (and capacity) with a :meth:`snapshot`."""
        restored = SampleWindow(int(data["capacity"]))
        for s in data["samples"]:
            restored.add(
                Sample(
                    t=float(s["t"]),
                    errors=np.asarray(s["errors"], dtype=np.int64),
                    exec_by_status=np.asarray(s["exec_by_status"], dtype=np.int64),
                    latency_buckets=np.asarray(s["latency_buckets"], dtype=np.int64),
                    oauth_failed=int(s["oauth_failed"]),
                )
            )
        self._samples = restored._samples


def extrapolated_rate(
    timestamps: Sequence[float],
    values: Sequence[float],
    range_start: float,
    range_end: float,
    is_rate: bool,
) -> float | None:
    """Prometheus's ``rate`` (``is_rate``) or ``increase`` of one counter over one range.

    Follows ``extrapolatedRate`` in ``promql/functions.go`` of prometheus/prometheus at
    commit 003b9e9d2c4174917eb62e5f47d6a900d09723be (3.x ``main``, with the anchored and
    smoothed selectors and start-timestamp resets, none of which the controller's queries
    use), for float samples, with the left-open ranges of 3.x:

    * the increase is ``last - first``, plus the value before each drop (a counter reset);
    * the rate is extrapolated from the first and last samples toward the range edges,
      all the way when a sample is within 1.1 times the average spacing of the edge,
      otherwise by half an average spacing;
    * toward the start, no further than where the counter would have been zero;
    * ``rate`` divides by the range, ``range_end - range_start``.

    Times are seconds; ``timestamps`` must be strictly increasing and inside the range.
    Returns None with fewer than 2 samples (Prometheus returns no element).
    """
    n = len(timestamps)
    if n != len(values):
        msg = f"timestamps and values must have the same length, got {n} and {len(values)}"
        raise ValueError(msg)
    if n < 2:
        return None
    if any(b <= a for a, b in itertools.pairwise(timestamps)):
        msg = "timestamps must be strictly increasing"
        raise ValueError(msg)
    result = float(values[-1]) - float(values[0])
    for prev, curr in itertools.pairwise(values):
        if curr < prev:
            result += float(prev)
    first, last = float(timestamps[0]), float(timestamps[-1])
    duration_to_start = first - range_start
    duration_to_end = range_end - last
    sampled = last - first
    average = sampled / (n - 1)
    threshold = average * 1.1
    if duration_to_start >= threshold:
        duration_to_start = average / 2
    if result > 0 and values[0] >= 0:
        # Counters cannot be negative: do not extrapolate back past the zero point.
        duration_to_zero = sampled * (float(values[0]) / result)
        duration_to_start = min(duration_to_start, duration_to_zero)
    if duration_to_end >= threshold:
        duration_to_end = average / 2
    factor = (sampled + duration_to_start + duration_to_end) / sampled
    if is_rate:
        factor /= range_end - range_start
    return result * factor


Labels = frozenset[tuple[str, str]]
Vector = list[tuple[Labels, float]]
"""An instant vector: (label set, value) per element."""


def _labels(**extra: str) -> Labels:
    return frozenset({"provider": contract.PROVIDER, "action": contract.ACTION, **extra}.items())


_ERROR_LABELS = [_labels(reason=r) for r in catalog.ERROR_REASONS]
_EXEC_LABELS = [_labels(status=s) for s in contract.EXEC_STATUSES]


def _increases(
    samples: Sequence[Sample], t: float, range_seconds: float, column: Callable[[Sample], NDArray[np.int64]]
) -> list[float]:
    """``increase`` of each series of a family over the selected samples; empty (no elements) below 2 samples."""
    if len(samples) < 2:
        return []
    end = _ms(t) / 1000
    start = (_ms(t) - _ms(range_seconds)) / 1000
    ts = [_ms(s.t) / 1000 for s in samples]
    matrix = np.stack([column(s) for s in samples]).astype(np.float64)
    out = [extrapolated_rate(ts, matrix[:, j].tolist(), start, end, is_rate=False) for j in range(matrix.shape[1])]
    return [v for v in out if v is not None]


def _per_second(increases: list[float], range_seconds: float) -> list[float]:
    """``rate`` from ``increase``: Prometheus divides the same extrapolated value by the range."""
    seconds = _ms(range_seconds) / 1000
    return [v / seconds for v in increases]


def _vector(labels: Sequence[Labels], values: Sequence[float]) -> Vector:
    """An instant vector of one family's series; an empty ``values`` (too few samples) gives no element."""
    return list(zip(labels, values, strict=True)) if values else []


def _divide(a: float, b: float) -> float:
    """IEEE division, as Go does it: x/0 is +-Inf, 0/0 is NaN."""
    if b == 0 or math.isnan(b):
        if math.isnan(a) or math.isnan(b) or a == 0:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _match_one_to_one(left: Vector, right: Vector) -> Vector:
    """``left / right`` with no ``on``/``ignoring``: elements pair up only on identical label sets."""
    by_labels = dict(right)
    return [(lbl, _divide(v, by_labels[lbl])) for lbl, v in left if lbl in by_labels]


def _sum(vector: Vector) -> float | None:
    """``sum(v)``: None (an empty vector) when ``v`` is empty."""
    return math.fsum(v for _, v in vector) if vector else None


def error_rate(window: SampleWindow, t: float, fidelity: Fidelity, range_seconds: float = ERROR_RANGE) -> float | None:
    """The controller's error-rate query at ``t``; None for an empty vector.

    As implemented: ``increase(action_error_total{...}[5m]) / increase(action_exec_total{...}[5m])``.
    Each side keeps its labels (``reason`` on the left, ``status`` on the right), and
    one-to-one matching pairs only identical label sets, so no element matches and the
    result is empty: always None, by the matching rule below rather than by fiat.

    As intended: ``sum(rate(action_error_total{...}[5m])) / clamp_min(sum(rate(action_exec_total{...}[5m])), 1)``.
    Both sides are aggregated to the empty label set and match. The denominator is
    executions per second clamped at 1, so below one execution per second the ratio reads low.
    """
    samples = window.samples_in(t, range_seconds)
    errors = _increases(samples, t, range_seconds, lambda s: s.errors)
    execs = _increases(samples, t, range_seconds, lambda s: s.exec_by_status)
    if fidelity is Fidelity.AS_IMPLEMENTED:
        matched = _match_one_to_one(_vector(_ERROR_LABELS, errors), _vector(_EXEC_LABELS, execs))
        return matched[0][1] if matched else None
    numerator = _sum(_vector(_ERROR_LABELS, _per_second(errors, range_seconds)))
    denominator = _sum(_vector(_EXEC_LABELS, _per_second(execs, range_seconds)))
    if numerator is None or denominator is None:
        return None
    clamped = math.nan if math.isnan(denominator) else max(denominator, 1.0)
    return _divide(numerator, clamped)


def _almost_equal(a: float, b: float, epsilon: float) -> bool:
    """Prometheus's ``util/almost.Equal``: a relative comparison, absolute near zero."""
    min_normal = 2.2250738585072014e-308
    if a == b:
        return True
    abs_sum = abs(a) + abs(b)
    diff = abs(a - b)
    if a == 0 or b == 0 or abs_sum < min_normal:
        return diff < epsilon * min_normal
    return diff / min(abs_sum, 1.7976931348623157e308) < epsilon


def _monotonic(cumulative: list[float]) -> list[float]:
    """Prometheus's ``ensureMonotonicAndIgnoreSmallDeltas`` over cumulative bucket rates.

    Each ``le`` series is extrapolated on its own, so the cumulative rates can dip by a
    hair (or more, when the cap toward zero differs between buckets); Prometheus
    flattens any decrease before it searches the buckets.
    """
    out = list(cumulative)
    prev = out[0]
    for i in range(1, len(out)):
        curr = out[i]
        if curr == prev:
            continue
        if _almost_equal(prev, curr, SMALL_DELTA_TOLERANCE) or curr < prev:
            out[i] = prev
            continue
        prev = curr
    return out


def _le_series(s: Sample) -> NDArray[np.int64]:
    """The ``_bucket`` series as exported: cumulative over the bounds."""
    return np.cumsum(s.latency_buckets)


def latency_p95(window: SampleWindow, t: float, range_seconds: float = LATENCY_RANGE) -> float | None:
    """``histogram_quantile(0.95, sum(rate(action_latency_seconds_bucket{...}[5m])) by (le))`` at ``t``.

    Each ``le`` series (cumulative over the bounds, as exported) is rated on its own, then
    the bucket rates go through Prometheus's monotonic fix and the linear interpolation of
    :func:`loadsim.promql.histogram_quantile`. NaN when every rate is 0 (no executions in
    the range), as Prometheus; None when the range holds fewer than two samples.
    """
    samples = window.samples_in(t, range_seconds)
    rates = _per_second(_increases(samples, t, range_seconds, _le_series), range_seconds)
    if not rates:
        return None
    cumulative = _monotonic(rates)
    counts = np.diff(np.asarray(cumulative), prepend=0.0)
    return histogram_quantile(QUANTILE, contract.LATENCY_BUCKETS, counts.tolist())


def oauth_failures(window: SampleWindow, t: float, range_seconds: float = OAUTH_RANGE) -> float | None:
    """``increase(oauth_events_total{provider="google",event="refresh_failed"}[15m])`` at ``t``."""
    samples = window.samples_in(t, range_seconds)
    increases = _increases(samples, t, range_seconds, lambda s: np.array([s.oauth_failed]))
    return increases[0] if increases else None


def read(window: SampleWindow, t: float, fidelity: Fidelity, *, scale: float = 1.0) -> Reading:
    """What the controller reads at ``t``: the three queries, with its 0.0 fallback for empty results.

    ``scale`` divides every range (time-scaled rules run ``K`` times faster). The queries
    are evaluated in process, so the reading is always reachable; a simulated outage is
    :meth:`Reading.unreachable`.
    """
    if not scale > 0:
        msg = f"scale: must be > 0, got {scale}"
        raise ValueError(msg)
    raw: dict[str, float | None] = {
        "error_rate": error_rate(window, t, fidelity, ERROR_RANGE / scale),
        "p95": latency_p95(window, t, LATENCY_RANGE / scale),
        "oauth_failures": oauth_failures(window, t, OAUTH_RANGE / scale),
    }
    values = {name: 0.0 if v is None else v for name, v in raw.items()}
    return Reading(values["error_rate"], values["p95"], values["oauth_failures"], reachable=True, raw=raw)
