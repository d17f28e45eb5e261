"""Sends in flight: started, not yet completed, held as flat arrays.

A send completes at ``start + latency``; the engine asks for everything due by
the end of each window. Completions are kept unsorted and selected with one
boolean mask per window: with most latencies well under a window, the pending
set stays small (rate x the latencies that cross a window edge, plus 30 s of
timeouts), and a mask is cheaper than keeping it ordered.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from loadsim.model.sampler import Executions


class InFlight:
    """The pending completions of one run."""

    def __init__(self) -> None:
        self.pending = _empty()
        """Sends in flight (checkpoints save and restore them)."""

    def __len__(self) -> int:
        return len(self.pending)

    def add_and_pop_due(self, started: Executions, t: float) -> Executions:
        """Add ``started``; return (and forget) every send due before ``t``.

        New sends that already finished inside the window never enter the pending
        set: only the ones that cross the window's end are kept.
        """
        due_new, later = _split(started, t)
        due_old = _empty()
        if len(self.pending):
            due_old, self.pending = _split(self.pending, t)
        if len(later):
            self.pending = _concat(self.pending, later) if len(self.pending) else later
        if not len(due_old):
            return due_new
        if not len(due_new):
            return due_old
        return _concat(due_old, due_new)

    def abandon(self) -> Executions:
        """Hand over every send still in flight (at a forced stop) and forget them."""
        pending, self.pending = self.pending, _empty()
        return pending

    def next_due(self) -> float:
        """When the next pending send completes (inf when none)."""
        return float(self.pending.done_at.min()) if len(self.pending) else float("inf")


def _empty() -> Executions:
    return Executions(
        cls=np.empty(0, dtype=np.int8), latency=np.empty(0, dtype=np.float64), done_at=np.empty(0, dtype=np.float64)
    )


def _concat(a: Executions, b: Executions) -> Executions:
    return Executions(
        cls=np.concatenate((a.cls, b.cls)),
        latency=np.concatenate((a.latency, b.latency)),
        done_at=np.concatenate((a.done_at, b.done_at)),
    )


def _split(e: Executions, t: float) -> tuple[Executions, Executions]:
    """(due before ``t``, still in flight)."""
    if not len(e):
        return e, e
    due = e.done_at < t
    n_due = int(np.count_nonzero(due))
    if n_due == len(e):
        return e, _empty()
    if n_due == 0:
        return _empty(), e
    return _take(e, due), _take(e, ~due)


def _take(e: Executions, mask: NDArray[np.bool_]) -> Executions:
    # np.compress, not e.cls[mask]: boolean-mask indexing costs about 3x more here (measured
    # 33 vs 10 ns per element on 2M-element arrays), and this runs on every window.
    return Executions(
        cls=np.compress(mask, e.cls), latency=np.compress(mask, e.latency), done_at=np.compress(mask, e.done_at)
    )
