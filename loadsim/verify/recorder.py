"""Recording what Prometheus would scrape from a run, at a scrape interval of run time.

On the virtual clock nothing scrapes ``/metrics``; the recorder stands in for
Prometheus, taking one snapshot of the relay's totals every ``interval`` seconds
of run time (15 s, like the relay's scrape config), or a gap when the
exposition is down (a metrics-missing overlay). The recorded series feed
``promtool test rules`` and the read-backs tests use: ``increase`` and
``quantile`` compute what the relay's recording rules compute, over the same
windows, from the same samples.

Snapshots are a few small arrays each; 48 hours at 15 s is 11,520 of them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from loadsim.overlays.state import RunState
from loadsim.promql import histogram_quantile
from loadsim.sinks.relay_metrics import RelayMetrics, Snapshot

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]
"""A sample name and its sorted labels."""


@dataclass(frozen=True, slots=True)
class Scrape:
    """One scrape: its run time and the snapshot (None when the endpoint did not answer)."""

    t: float
    snapshot: Snapshot | None


class ScrapeRecorder:
    """Call with the run time and the run state after every engine window; records every scrape due by then."""

    def __init__(self, relay: RelayMetrics, interval: float = 15.0) -> None:
        self.relay = relay
        self.interval = interval
        self.scrapes: list[Scrape] = []
        self._next = 0.0

    def __call__(self, t: float, state: RunState) -> None:
        while self._next <= t + 1e-9:
            snap = self.relay.snapshot(controller_visible=state.controller_visible) if state.exposition_up else None
            self.scrapes.append(Scrape(self._next, snap))
            self._next += self.interval

    def samples(self, scrape: Scrape) -> dict[SeriesKey, float]:
        """Every sample of one scrape (empty when it failed)."""
        if scrape.snapshot is None:
            return {}
        out: dict[SeriesKey, float] = {}
        for family in self.relay.render(scrape.snapshot):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def series(self) -> dict[SeriesKey, list[float | None]]:
        """Every series over every scrape, None where it was absent.

        Sample names and labels come from one full render per shape of snapshot (with or
        without the controller's series); the values of every scrape from the fast numpy
        path, which keeps 48 hours of scrapes to about a second.
        """
        n = len(self.scrapes)
        table: dict[SeriesKey, list[float | None]] = {}
        keys_by_shape: dict[tuple[object, ...], list[SeriesKey]] = {}
        for i, scrape in enumerate(self.scrapes):
            snap = scrape.snapshot
            if snap is None:
                continue
            keys = keys_by_shape.get(snap.controller_shape)
            if keys is None:
                keys = keys_by_shape[snap.controller_shape] = list(self.samples(scrape))
            for key, value in zip(keys, self.relay.sample_values(snap).tolist(), strict=True):
                column = table.get(key)
                if column is None:
                    column = table[key] = [None] * n
                column[i] = value
        return table

    # -- read-backs, the way the relay's recording rules compute them -----------------------

    def at(self, t: float) -> int:
        """Index of the last scrape at or before ``t``."""
        i = round(t / self.interval)
        if not 0 <= i < len(self.scrapes):
            msg = f"no scrape at {t}s (recorded 0..{(len(self.scrapes) - 1) * self.interval}s)"
            raise IndexError(msg)
        return i

    def _matching(self, scrape: Scrape, name: str, labels: Mapping[str, str]) -> Iterator[tuple[SeriesKey, float]]:
        for key, value in self.samples(scrape).items():
            sample_labels = dict(key[1])
            if key[0] == name and all(sample_labels.get(k) == v for k, v in labels.items()):
                yield key, value

    def increase(self, name: str, t: float, window: float = 300.0, **labels: str) -> float | None:
        """``sum(increase(name{labels}[window]))`` at ``t`` (no extrapolation); None if absent."""
        end, start = self.scrapes[self.at(t)], self.scrapes[self.at(t - window)]
        now = dict(self._matching(end, name, labels))
        before = dict(self._matching(start, name, labels))
        if not now:
            return None
        return sum(v - before.get(k, 0.0) for k, v in now.items())

    def rate(self, name: str, t: float, window: float = 300.0, **labels: str) -> float | None:
        """``sum(rate(name{labels}[window]))`` at ``t``; None if absent."""
        inc = self.increase(name, t, window, **labels)
        return None if inc is None else inc / window

    def quantile(self, q: float, histogram: str, t: float, window: float = 300.0, **labels: str) -> float:
        """``histogram_quantile(q, sum(rate(histogram_bucket{labels}[window])) by (le))`` at ``t``."""
        end, start = self.scrapes[self.at(t)], self.scrapes[self.at(t - window)]
        by_le: dict[float, float] = {}
        before = dict(self._matching(start, f"{histogram}_bucket", labels))
        for key, value in self._matching(end, f"{histogram}_bucket", labels):
            le = float(dict(key[1])["le"])
            by_le[le] = by_le.get(le, 0.0) + value - before.get(key, 0.0)
        bounds = sorted(b for b in by_le if b != float("inf"))
        cumulative = [by_le[b] for b in bounds] + [by_le[float("inf")]]
        counts = [cumulative[0]] + [b - a for a, b in itertools.pairwise(cumulative)]
        return histogram_quantile(q, bounds, counts)
