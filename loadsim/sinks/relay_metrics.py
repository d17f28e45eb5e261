"""The relay's metric families, fed in bulk from numpy and exposed through prometheus-client.

One :class:`RelayMetrics` holds every family of the contract as numpy arrays
of cumulative counts and implements prometheus-client's public ``Collector``
API, so a scrape or a push renders the current totals. Updating costs a few
``bincount`` calls per window whatever the number of sends, instead of one
``observe()`` per send.

Every label set is exported from the start at zero (an ``error`` series that
appears only with its first increment is invisible to ``rate()``), counters only
ever grow, and each histogram is rendered whole (all buckets, ``_sum`` and
``_count`` from the same snapshot). Updates and snapshots take a lock because a
push runs on a worker thread while the engine updates on the event loop.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from loadsim import contract as c
from loadsim.contract import MetricOptions
from loadsim.model import catalog
from loadsim.model.sampler import Executions, StartEffects

FloatArray = NDArray[np.float64]


def _edges(bounds: Sequence[float]) -> FloatArray:
    return np.asarray(bounds, dtype=np.float64)


def bucket_counts(values: FloatArray, edges: FloatArray) -> NDArray[np.int64]:
    """Non-cumulative counts per bucket, ``le`` inclusive, last slot ``+Inf``."""
    return np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)


def render_buckets(bounds: Sequence[float], counts: NDArray[np.int64]) -> list[tuple[str, float]]:
    """Per-bucket counts as prometheus-client's cumulative ``(le, count)`` pairs, ``+Inf`` last."""
    cumulative = np.cumsum(counts)
    labels = [floatToGoString(b) for b in bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
    return [(le, float(v)) for le, v in zip(labels, cumulative, strict=True)]


Part = tuple[dict[str, Any], dict[str, NDArray[Any]]]
"""JSON-ready values and arrays (the checkpoint's unit)."""

_ARRAYS = (
    "exec",
    "errors",
    "structured",
    "latency_buckets",
    "latency_sum",
    "mime_buckets",
    "attachment_bytes",
    "inline_refs",
    "sanitization",
    "oauth",
    "controller_runs",
    "controller_changes",
)
"""The cumulative arrays a checkpoint keeps."""


class RelayMetrics(Collector):
    """Cumulative totals of every relay metric family, rendered on collect."""

    def __init__(self, options: MetricOptions, rng: np.random.Generator) -> None:
        self.options = options
        self._rng = rng
        self._lock = threading.Lock()
        workspaces = max(1, len(options.workspace_ids))
        weights = np.asarray(options.workspace_weights or [1.0] * workspaces, dtype=np.float64)
        self._workspace_p = weights / weights.sum()
        self._lat_edges = _edges(c.LATENCY_BUCKETS)
        self._mime_edges = _edges(c.MIME_BUCKETS)
        statuses = 2 if options.status_label else 1
        self.exec = np.zeros((workspaces, 2), dtype=np.int64)
        self.errors = np.zeros(len(catalog.ERROR_REASONS), dtype=np.int64)
        self.structured = np.zeros(len(catalog.STRUCTURED_SERIES), dtype=np.int64)
        self.latency_buckets = np.zeros((statuses, len(self._lat_edges) + 1), dtype=np.int64)
        self.latency_sum = np.zeros(statuses, dtype=np.float64)
        self.mime_buckets = np.zeros(len(self._mime_edges) + 1, dtype=np.int64)
        self.mime_sum = 0.0
        self.attachment_bytes = np.zeros(2, dtype=np.float64)
        self.inline_refs = np.zeros(2, dtype=np.int64)
        self.sanitization = np.zeros(len(catalog.SANITIZATION_CHANGE_TYPES), dtype=np.int64)
        self.oauth = np.zeros(len(catalog.OAUTH_EVENTS), dtype=np.int64)
        self.controller_runs = np.zeros(len(c.CONTROLLER_RUN_STATUSES), dtype=np.int64)
        self.controller_changes = np.zeros(len(c.CONTROLLER_RESULTS), dtype=np.int64)
        self.controller_percent = 0.0
        self.controller_replaced = False
        """True once the controller pushes the relay's way (a PUT per run replacing the group:
        only the last run's series, each at 1, and no percent after a failed run)."""

    # -- updates (engine side) -------------------------------------------------------------

    def record_starts(self, effects: StartEffects) -> None:
        """Early-guard errors, MIME build times and the side counters of a window."""
        mime_counts = bucket_counts(effects.mime_seconds, self._mime_edges)
        mime_sum = float(effects.mime_seconds.sum())
        guard_errors = effects.guard_counts @ catalog.REASON_MATRIX
        with self._lock:
            self.errors += guard_errors
            self.mime_buckets += mime_counts
            self.mime_sum += mime_sum
            self.attachment_bytes += effects.attachment_bytes
            self.inline_refs += effects.inline_refs
            self.sanitization += effects.sanitization
            self.oauth += effects.oauth

    def record_executions(self, done: Executions) -> None:
        """Executions that completed: exec counters, error counters, the latency histogram."""
        if len(done) == 0:
            return
        counts = np.bincount(done.cls, minlength=catalog.K)
        by_status = counts @ catalog.EXEC_MATRIX
        errors = counts @ catalog.REASON_MATRIX
        structured = counts @ catalog.STRUCTURED_MATRIX
        nb = len(self._lat_edges) + 1
        bucket = np.searchsorted(self._lat_edges, done.latency, side="left")
        if self.options.status_label:
            status = catalog.EXEC_STATUS_INDEX[done.cls]
            lat_counts = np.bincount(status * nb + bucket, minlength=2 * nb).reshape(2, nb)
            lat_sum = np.bincount(status, weights=done.latency, minlength=2)
        else:
            lat_counts = np.bincount(bucket, minlength=nb).reshape(1, nb)
            lat_sum = np.array([done.latency.sum()])
        if len(self._workspace_p) > 1:
            split = np.stack([self._rng.multinomial(int(n), self._workspace_p) for n in by_status], axis=1)
        else:
            split = by_status.reshape(1, 2)
        with self._lock:
            self.exec += split
            self.errors += errors
            self.structured += structured
            self.latency_buckets += lat_counts
            self.latency_sum += lat_sum

    def record_controller_run(self, status: int, result: int, percent: float) -> None:
        """One rollout-controller run (heartbeat mode): indices into the contract's status and result values."""
        with self._lock:
            self.controller_runs[status] += 1
            self.controller_changes[result] += 1
            self.controller_percent = percent

    def record_controller_push(self, status: int, result: int | None, percent: float | None) -> None:
        """One push of the relay's real controller: a PUT that replaces its whole group.

        The group then holds ``runs_total{status}`` at 1, ``changes_total{result}`` at 1 (no
        change series when the run pushed none) and the percent (absent after a failed run).
        Every other series of the group is gone, not zero: the relay's counters are always 1,
        so ``increase()`` over them reads about 0, and a series that appears at 1 is invisible
        to ``increase()`` too.
        """
        with self._lock:
            self.controller_replaced = True
            self.controller_runs[:] = 0
            self.controller_changes[:] = 0
            self.controller_runs[status] = 1
            if result is not None:
                self.controller_changes[result] = 1
            self.controller_percent = float("nan") if percent is None else percent

    def state(self) -> Part:
        """Every cumulative total, for a checkpoint."""
        with self._lock:
            arrays = {name: getattr(self, name).copy() for name in _ARRAYS}
            percent = self.controller_percent
            meta = {
                "mime_sum": self.mime_sum,
                "controller_percent": None if math.isnan(percent) else percent,
                "controller_replaced": self.controller_replaced,
            }
            return meta, arrays

    def load_state(self, part: Part) -> None:
        """Put checkpointed totals back (shapes must match this run's label options)."""
        meta, arrays = part
        for name in _ARRAYS:
            current, saved = getattr(self, name), arrays[name]
            if saved.shape != current.shape:
                msg = f"state file has {name} of shape {saved.shape}, this run needs {current.shape}"
                raise ValueError(msg)
            current[...] = saved
        self.mime_sum = float(meta["mime_sum"])
        percent = meta["controller_percent"]
        self.controller_percent = float("nan") if percent is None else float(percent)
        self.controller_replaced = bool(meta.get("controller_replaced", False))

    def executions(self) -> int:
        """Executions counted so far (for progress and tests)."""
        with self._lock:
            return int(self.exec.sum())

    # -- prometheus-client Collector API ---------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        """Nothing to describe up front: avoids a collect() at registration time."""
        return []

    def collect(self) -> Iterable[Metric]:
        """Render one consistent snapshot of every family."""
        yield from self.render(self.snapshot())

    def snapshot(self, *, controller_visible: bool = True) -> Snapshot:
        """Copies of every total, taken under the lock (cheap: a few small arrays).

        ``controller_visible`` is the run's state, not the collector's: False leaves the
        controller's series out of what the snapshot renders (a controller whose metrics vanished).
        """
        with self._lock:
            return Snapshot(
                exec=self.exec.copy(),
                errors=self.errors.copy(),
                structured=self.structured.copy(),
                latency_buckets=self.latency_buckets.copy(),
                latency_sum=self.latency_sum.copy(),
                mime_buckets=self.mime_buckets.copy(),
                mime_sum=self.mime_sum,
                attachment_bytes=self.attachment_bytes.copy(),
                inline_refs=self.inline_refs.copy(),
                sanitization=self.sanitization.copy(),
                oauth=self.oauth.copy(),
                controller_runs=self.controller_runs.copy(),
                controller_changes=self.controller_changes.copy(),
                controller_percent=self.controller_percent,
                controller_visible=controller_visible,
                controller_replaced=self.controller_replaced,
            )

    def render(self, s: Snapshot) -> Iterable[Metric]:
        """The metric families of a snapshot, as a scrape would show them."""
        pa = (c.PROVIDER, c.ACTION)
        o = self.options
        statuses = list(enumerate(c.EXEC_STATUSES))
        if o.workspace_ids:
            rows = [((*pa, st, ws), s.exec[w, i]) for w, ws in enumerate(o.workspace_ids) for i, st in statuses]
            yield _counter(c.ACTION_EXEC, ("provider", "action", "status", "workspace_id"), rows)
        else:
            yield _counter(
                c.ACTION_EXEC, ("provider", "action", "status"), [((*pa, st), s.exec[0, i]) for i, st in statuses]
            )
        yield _counter(
            c.ACTION_ERROR,
            ("provider", "action", "reason"),
            [((*pa, r), v) for r, v in zip(catalog.ERROR_REASONS, s.errors, strict=True)],
        )
        if o.status_label:
            hist = HistogramMetricFamily(
                c.ACTION_LATENCY, c.HELP[c.ACTION_LATENCY], labels=["provider", "action", "status"]
            )
            for i, st in statuses:
                hist.add_metric(
                    [*pa, st], render_buckets(c.LATENCY_BUCKETS, s.latency_buckets[i]), float(s.latency_sum[i])
                )
        else:
            hist = HistogramMetricFamily(c.ACTION_LATENCY, c.HELP[c.ACTION_LATENCY], labels=["provider", "action"])
            hist.add_metric(list(pa), render_buckets(c.LATENCY_BUCKETS, s.latency_buckets[0]), float(s.latency_sum[0]))
        yield hist
        yield _counter(
            c.STRUCTURED_ERROR,
            ("provider", "action", "code", "source"),
            [((*pa, code, src), v) for (code, src), v in zip(catalog.STRUCTURED_SERIES, s.structured, strict=True)],
        )
        yield _counter(
            c.OAUTH_EVENTS,
            ("provider", "event"),
            [((c.PROVIDER, e), v) for e, v in zip(catalog.OAUTH_EVENTS, s.oauth, strict=True)],
        )
        hist = HistogramMetricFamily(c.MIME_BUILD, c.HELP[c.MIME_BUILD], labels=[])
        hist.add_metric([], render_buckets(c.MIME_BUCKETS, s.mime_buckets), s.mime_sum)
        yield hist
        yield _counter(c.ATTACHMENT_BYTES, ("result",), _one_label(catalog.ATTACHMENT_RESULTS, s.attachment_bytes))
        yield _counter(c.INLINE_REFS, ("result",), _one_label(catalog.INLINE_RESULTS, s.inline_refs))
        yield _counter(c.SANITIZATION, ("change_type",), _one_label(catalog.SANITIZATION_CHANGE_TYPES, s.sanitization))
        if s.controller_visible:
            feature = o.controller_feature
            runs = _one_label(c.CONTROLLER_RUN_STATUSES, s.controller_runs)
            changes: list[Row] = [
                ((feature, r), v) for r, v in zip(c.CONTROLLER_RESULTS, s.controller_changes, strict=True)
            ]
            if s.controller_replaced:
                runs = [row for row in runs if row[1]]
                changes = [row for row in changes if row[1]]
            yield _counter(c.CONTROLLER_RUNS, ("status",), runs)
            yield _counter(c.CONTROLLER_CHANGES, ("feature", "result"), changes)
            gauge = GaugeMetricFamily(c.CONTROLLER_PERCENT, c.HELP[c.CONTROLLER_PERCENT], labels=["feature"])
            if not math.isnan(s.controller_percent):  # NaN: a failed run pushed no percent
                gauge.add_metric([feature], s.controller_percent)
            yield gauge

    def sample_values(self, s: Snapshot) -> FloatArray:
        """Every sample value of :meth:`render`, in the same order, built with numpy.

        Replaying a long virtual run renders thousands of snapshots; this is the fast path.
        ``tests/test_relay_metrics.py`` checks it against :meth:`render` sample by sample.
        """
        parts: list[NDArray[Any]] = [s.exec.reshape(-1) if self.options.workspace_ids else s.exec[0], s.errors]
        parts += [_histogram_values(b, float(t)) for b, t in zip(s.latency_buckets, s.latency_sum, strict=True)]
        parts += [s.structured, s.oauth, _histogram_values(s.mime_buckets, s.mime_sum)]
        parts += [s.attachment_bytes, s.inline_refs, s.sanitization]
        if s.controller_visible:
            runs, changes = s.controller_runs, s.controller_changes
            if s.controller_replaced:
                runs, changes = runs[runs > 0], changes[changes > 0]
            parts += [runs, changes]
            if not math.isnan(s.controller_percent):
                parts.append(np.array([s.controller_percent]))
        return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])


def _histogram_values(counts: NDArray[np.int64], total: float) -> FloatArray:
    """Cumulative buckets, then ``_count`` and ``_sum``: the order prometheus-client renders."""
    cumulative = np.cumsum(counts).astype(np.float64)
    return np.concatenate((cumulative, [cumulative[-1], total]))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Copies of every total, taken under the lock, so one render is self-consistent.

    A virtual run records one per scrape interval to replay what Prometheus would
    have scraped (``loadsim verify``).
    """

    exec: NDArray[np.int64]
    errors: NDArray[np.int64]
    structured: NDArray[np.int64]
    latency_buckets: NDArray[np.int64]
    latency_sum: FloatArray
    mime_buckets: NDArray[np.int64]
    mime_sum: float
    attachment_bytes: FloatArray
    inline_refs: NDArray[np.int64]
    sanitization: NDArray[np.int64]
    oauth: NDArray[np.int64]
    controller_runs: NDArray[np.int64]
    controller_changes: NDArray[np.int64]
    controller_percent: float
    controller_visible: bool
    controller_replaced: bool = False
    """The controller pushes the relay's way: only present series are rendered (see record_controller_push)."""

    @property
    def controller_shape(self) -> tuple[object, ...]:
        """Which controller series this snapshot renders (the recorder keys its sample names by it)."""
        if not self.controller_visible:
            return (False,)
        if not self.controller_replaced:
            return (True,)
        runs = tuple(np.flatnonzero(self.controller_runs).tolist())
        changes = tuple(np.flatnonzero(self.controller_changes).tolist())
        return (True, runs, changes, not math.isnan(self.controller_percent))


Row = tuple[tuple[str, ...], "float | np.integer[Any] | np.floating[Any]"]


def _counter(name: str, labels: tuple[str, ...], rows: Iterable[Row]) -> CounterMetricFamily:
    fam = CounterMetricFamily(name, c.HELP[name], labels=list(labels))
    for values, v in rows:
        fam.add_metric(list(values), float(v))
    return fam


def _one_label(values: Sequence[str], counts: NDArray[np.int64] | FloatArray) -> list[Row]:
    return [((v,), n) for v, n in zip(values, counts, strict=True)]


class RelayExposition(Collector):
    """The relay's families as a scrape or a push shows them, given the run's state.

    The run state (is the controller's series visible?) belongs to the engine; this
    reads it through ``controller_visible`` at each collect.
    """

    def __init__(self, relay: RelayMetrics, controller_visible: Callable[[], bool]) -> None:
        self.relay = relay
        self.controller_visible = controller_visible

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        yield from self.relay.render(self.relay.snapshot(controller_visible=self.controller_visible()))
