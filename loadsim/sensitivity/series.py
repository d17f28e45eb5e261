"""Samples the way Prometheus's storage holds them, and its two ways of reading them.

A :class:`Samples` is one series: timestamps in milliseconds (Prometheus's resolution,
so the rate extrapolation below sees the same durations), values, and stale markers.
A scraped series gets a stale marker at the first scrape that did not return it, as
Prometheus writes one when a target's series vanish (and as ``verify`` encodes for
promtool); a recording rule's output gets one at the first evaluation that did not
produce it, as a rule group writes.

Both reads are vectorised over every evaluation time at once:

- :meth:`Samples.instant`: the latest sample at or before ``t``, no older than the
  5-minute lookback, absent if that sample is a stale marker;
- :meth:`Samples.window`: the samples in ``[t - range, t]`` (closed at both ends, as in
  Prometheus 2.x; 3.0 opened the left end), stale markers dropped.

:class:`Store` holds every series of a run under its full label set, ``__name__`` included.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from loadsim.verify.recorder import ScrapeRecorder

Labels = tuple[tuple[str, str], ...]
"""A label set sorted by name, ``__name__`` included: Python's tuple order is Prometheus's ``labels.Compare``."""
FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

LOOKBACK_MS = 5 * 60 * 1000
"""Prometheus's default lookback delta."""
EXTRA_LABELS = (("instance", "loadsim"), ("job", "relay"))
"""The target labels a scrape adds (``verify`` gives promtool the same ones)."""


def milliseconds(seconds: FloatArray | float) -> IntArray:
    """Run time in seconds as Prometheus's integer milliseconds."""
    return np.rint(np.asarray(seconds, dtype=np.float64) * 1000.0).astype(np.int64)


@dataclass(frozen=True, slots=True)
class Window:
    """The samples of one series in each evaluation's range: indices into the non-stale samples."""

    t: IntArray
    v: FloatArray
    first: IntArray
    last: IntArray
    """Index of the first and last sample in range (``last < first`` when none)."""

    @property
    def count(self) -> IntArray:
        """Samples in each range."""
        return self.last - self.first + 1


@dataclass(slots=True)
class Samples:
    """One series: sorted timestamps (ms), values, and which samples are stale markers."""

    t: IntArray
    v: FloatArray
    stale: BoolArray
    _fresh: tuple[IntArray, FloatArray] | None = field(default=None, repr=False)

    def instant(self, at: IntArray) -> tuple[FloatArray, BoolArray]:
        """Values at each time of ``at`` and whether the series is present there."""
        i = np.searchsorted(self.t, at, side="right") - 1
        ok = i >= 0
        j = np.where(ok, i, 0)
        if len(self.t):
            ok &= self.t[j] >= at - LOOKBACK_MS
            ok &= ~self.stale[j]
            return self.v[j], ok
        return np.zeros(len(at)), np.zeros(len(at), dtype=bool)

    def window(self, at: IntArray, range_ms: int) -> Window:
        """The non-stale samples in ``[t - range, t]`` for each ``t`` of ``at``."""
        if self._fresh is None:
            keep = ~self.stale
            self._fresh = (self.t[keep], self.v[keep])
        t, v = self._fresh
        first = np.searchsorted(t, at - range_ms, side="left")
        last = np.searchsorted(t, at, side="right") - 1
        return Window(t, v, first.astype(np.int64), last.astype(np.int64))


def dense(t_ms: IntArray, values: FloatArray, present: BoolArray) -> Samples:
    """A series sampled on a grid: a sample where present, a stale marker where it first goes missing."""
    went = ~present & np.concatenate(([False], present[:-1]))
    keep = present | went
    return Samples(t_ms[keep], np.where(present, values, np.nan)[keep], went[keep])


@dataclass
class Store:
    """Every series of a run, by label set, with an index by metric name."""

    series: dict[Labels, Samples] = field(default_factory=dict)
    _by_name: dict[str, list[Labels]] = field(default_factory=dict)

    def add(self, labels: Labels, samples: Samples) -> None:
        """Add (or replace) one series."""
        if labels not in self.series:
            self._by_name.setdefault(dict(labels).get("__name__", ""), []).append(labels)
        self.series[labels] = samples

    def named(self, name: str | None) -> Iterator[tuple[Labels, Samples]]:
        """Series of metric ``name`` (every series when None), sorted by label set."""
        keys = self._by_name.get(name, []) if name is not None else list(self.series)
        for key in sorted(keys):
            yield key, self.series[key]


def from_recorder(recorder: ScrapeRecorder, extra: Mapping[str, str] = dict(EXTRA_LABELS)) -> Store:
    """The scraped series of a recorded run (what ``verify`` hands promtool), as a store."""
    scrapes = recorder.scrapes
    n = len(scrapes)
    t_ms = milliseconds(np.array([s.t for s in scrapes]))
    by_shape: dict[tuple[object, ...], list[int]] = {}
    for i, scrape in enumerate(scrapes):
        if scrape.snapshot is not None:
            by_shape.setdefault(scrape.snapshot.controller_shape, []).append(i)
    rows: dict[Labels, tuple[FloatArray, BoolArray]] = {}
    for indices in by_shape.values():
        first = scrapes[indices[0]]
        keys = [
            tuple(sorted({**dict(labels), **extra, "__name__": name}.items()))
            for name, labels in recorder.samples(first)
        ]
        table = np.stack([recorder.relay.sample_values(scrapes[i].snapshot) for i in indices])  # type: ignore[arg-type]
        for column, key in enumerate(keys):
            row = rows.get(key)
            if row is None:
                row = rows[key] = (np.zeros(n), np.zeros(n, dtype=bool))
            row[0][indices] = table[:, column]
            row[1][indices] = True
    store = Store()
    for key, (values, present) in rows.items():
        store.add(key, dense(t_ms, values, present))
    return store
