"""Sampling outcomes for a whole window of sends in a handful of numpy calls.

Per send we draw: the outcome class, the Gmail call latency (lognormal body or
heavy tail), the MIME base build time, and whether it carries attachments (with
their count and size only for those that do). Side signals that only ever reach
counters (inline references, sanitization changes, OAuth refreshes) are drawn as
window totals: the sum of n independent Poisson(lambda) draws is Poisson(n *
lambda), so the totals have exactly the distribution per-send draws would give,
at a fraction of the cost.

Lognormals are configured by two quantiles users can reason about (p50 and
p95): ``mu = ln(p50)``, ``sigma = (ln(p95) - ln(p50)) / z95`` with z95 = 1.6449.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from loadsim.model import catalog
from loadsim.model.catalog import CLASS_INDEX, CLASSES, LatencyKind
from loadsim.model.params import AttachmentParams, MimeParams, ModelParams

Z95 = 1.6448536269514722
MAX_ATTACHMENTS = 10
"""The relay rejects more than this many attachments; the model never draws more."""
MAX_ATTACHMENT_BYTES = 25_000_000.0
"""The relay's limit per attachment."""
MAX_MESSAGE_BYTES = 50_000_000.0
"""The relay's limit on all attachments of one send."""

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def lognormal_params(p50: float, p95: float) -> tuple[float, float]:
    """``(mu, sigma)`` of the lognormal whose median is ``p50`` and 95th percentile ``p95``."""
    return math.log(p50), max(math.log(p95) - math.log(p50), 0.0) / Z95


def draw_attachments(
    rng: np.random.Generator, k: int, params: AttachmentParams, size: tuple[float, float] | None = None
) -> tuple[IntArray, FloatArray]:
    """Attachment counts and total bytes of ``k`` sends that carry attachments.

    Sizes stay within the relay's limits: what it would refuse is a validation failure,
    drawn as its own outcome class, not an accepted attachment. ``size`` is the size
    lognormal's ``(mu, sigma)`` when the caller has it already. Calibration draws from here
    too, so its MIME fit uses the very distribution a run samples.
    """
    mu, sigma = size or lognormal_params(params.size_p50_bytes, params.size_p95_bytes)
    count = np.minimum(1 + rng.poisson(params.extra_mean, k), MAX_ATTACHMENTS)
    sizes = np.minimum(np.exp(mu + sigma * rng.standard_normal(k)), MAX_ATTACHMENT_BYTES)
    return count, np.minimum(count * sizes, MAX_MESSAGE_BYTES)


def mime_attachment_cost(params: MimeParams, count: IntArray, total_bytes: FloatArray) -> FloatArray:
    """What attachments add to a MIME build (seconds): a cost per attachment and per megabyte."""
    return params.per_attachment * count + params.per_megabyte * (total_bytes / 1e6)


@dataclass(slots=True)
class StartEffects:
    """What a window's sends did when they started: all of it is observed at once."""

    guard_counts: IntArray
    """Sends per outcome class that failed an early guard (zero for other classes)."""
    mime_seconds: FloatArray
    """One MIME build time per send that built its message."""
    attachment_bytes: tuple[float, float]
    """(accepted, rejected) bytes."""
    inline_refs: tuple[int, int]
    """(matched, orphan_cid)."""
    sanitization: IntArray
    """Changes per ``SANITIZATION_CHANGE_TYPES``."""
    oauth: IntArray
    """Events per ``OAUTH_EVENTS``."""


@dataclass(slots=True)
class Executions:
    """Sends that reach execution accounting; each completes at ``done_at``."""

    cls: NDArray[np.int8]
    latency: FloatArray
    done_at: FloatArray

    def __len__(self) -> int:
        return len(self.cls)


class OutcomeModel:
    """Samples outcomes for a window of sends; holds only derived constants, no state."""

    def __init__(self, params: ModelParams) -> None:
        self.params = params
        probs = np.zeros(len(CLASSES))
        for name, p in params.errors.items():
            probs[CLASS_INDEX[name]] = p
        probs[catalog.OK] = max(0.0, 1.0 - probs.sum())
        self.class_probabilities = probs
        # ok is class 0: a send is ok when u < p_ok, otherwise searched among the rest.
        self._p_ok = float(probs[catalog.OK])
        self._cum_rest = np.cumsum(probs[1:]) + self._p_ok
        self._cum_rest[-1] = max(self._cum_rest[-1], 1.0)
        lat = params.latency
        self._body = lognormal_params(lat.p50, lat.p95)
        self._tail = lognormal_params(lat.tail_p50, lat.tail_p95)
        self._mime = lognormal_params(params.mime.base_p50, params.mime.base_p95)
        att = params.attachments
        self._size = lognormal_params(att.size_p50_bytes, att.size_p95_bytes)
        kinds = [c.latency for c in CLASSES]
        self._timeout_classes = np.array([k is LatencyKind.TIMEOUT for k in kinds])
        self._call_classes = np.array([k is LatencyKind.CALL for k in kinds])
        self._timeout_class = CLASS_INDEX["gmail_timeout"]
        self._network_classes = np.array([k is LatencyKind.NETWORK for k in kinds])
        self._validation_classes = np.array([k is LatencyKind.VALIDATION for k in kinds])
        self._rejected_classes = np.array([c.name in catalog.REJECTED_ATTACHMENT_CODES for c in CLASSES])

    def sample(
        self,
        rng: np.random.Generator,
        starts: FloatArray,
        keep: NDArray[np.intp] | None = None,
        *,
        totals: bool = True,
    ) -> tuple[StartEffects, Executions]:
        """Draw the outcome of every send starting at ``starts``.

        ``keep`` (sorted positions into ``starts``) restricts what is *returned* to those
        sends, and ``totals`` False leaves out the window totals that belong to no one send
        (inline references, sanitization changes, OAuth events, rejected bytes): a shard of
        a fleet draws the whole window from the window's own stream, exactly as every other
        shard does, and keeps its stripe (:mod:`loadsim.shard`). The draws are the same
        with or without ``keep``, so the shards' parts add up to the whole, send for send.

        Hot path, written for numpy's costs: the few sends that do not end ``ok`` are
        handled through an index array (``err``), never a full-length boolean mask, and
        subsets are taken with ``np.compress``; boolean-mask indexing costs 3-4 times more
        per element (measured on 2M-element arrays: 8.7 vs 2.4 ns to assign, 3.6 vs 0.9 to read).
        """
        n = len(starts)
        p = self.params
        u = rng.random(n)
        err = np.flatnonzero(u >= self._p_ok)
        cls = np.zeros(n, dtype=np.int8)
        if len(err):
            cls[err] = np.searchsorted(self._cum_rest, u[err], side="right") + 1

        # MIME build: lognormal base + per-attachment and per-megabyte cost.
        mime = np.exp(self._mime[0] + self._mime[1] * rng.standard_normal(n))
        att = np.flatnonzero(rng.random(n) < p.attachments.probability)
        att_count, att_bytes = draw_attachments(rng, len(att), p.attachments, self._size)
        mime[att] += mime_attachment_cost(p.mime, att_count, att_bytes)

        # Latency: the Gmail call (body or heavy tail), then MIME build added, then per-kind overrides.
        latency = np.exp(self._body[0] + self._body[1] * rng.standard_normal(n))
        tail = np.flatnonzero(rng.random(n) < p.latency.tail_fraction)
        if len(tail):
            latency[tail] = np.exp(self._tail[0] + self._tail[1] * rng.standard_normal(len(tail)))
        # A call slower than the client timeout is a timeout: the relay gives up at 30 s. The
        # timeout bounds the call alone; the MIME build before it is not on the client's clock.
        slow = np.flatnonzero(latency > p.latency.timeout)
        if len(slow):
            slow = slow[self._call_classes[cls[slow]]]
            cls[slow] = self._timeout_class
            err = np.union1d(err, slow)
        latency += mime
        err_cls = cls[err]
        counts = np.bincount(err_cls, minlength=len(CLASSES))
        counts[catalog.OK] = n - len(err)
        if len(err):
            self._override_failure_latency(rng, err, err_cls, latency, mime)

        effects = self._start_effects(rng, counts, err, err_cls, att, att_bytes, mime)
        not_executed = err[~catalog.IS_EXECUTION[err_cls]]
        if keep is not None:
            return _kept(effects, keep, totals, cls, err, err_cls, att, att_bytes, mime, latency, starts)
        lat_exec = _without(latency, not_executed)
        done = Executions(
            cls=_without(cls, not_executed), latency=lat_exec, done_at=_without(starts, not_executed) + lat_exec
        )
        return effects, done

    def _start_effects(  # noqa: PLR0917 - the arrays of one window, each passed once
        self,
        rng: np.random.Generator,
        counts: NDArray[np.int64],
        err: NDArray[np.intp],
        err_cls: NDArray[np.int8],
        att: NDArray[np.intp],
        att_bytes: FloatArray,
        mime: FloatArray,
    ) -> StartEffects:
        """What the window's sends did at start: guards, MIME builds, attachments, side counters."""
        p = self.params
        n = len(mime)
        not_built = err[~catalog.BUILDS_MIME[err_cls]]
        guard_counts = np.where(catalog.IS_EXECUTION, 0, counts)
        accepted = float(att_bytes.sum())
        if len(not_built) and len(att):
            # Attachments of sends that failed before building are not accepted bytes.
            pos = np.searchsorted(att, not_built)
            hit = pos < len(att)
            hit[hit] = att[pos[hit]] == not_built[hit]
            accepted -= float(att_bytes[pos[hit]].sum())
        n_rejected = int(counts[self._rejected_classes].sum())
        rejected = 0.0
        if n_rejected:
            rejected_sizes = rng.lognormal(math.log(p.attachments.rejected_size_p50_bytes), 0.3, n_rejected)
            rejected = float(rejected_sizes.sum())
        n_built = n - len(not_built)
        oauth = p.oauth
        refresh_attempts = int(rng.binomial(n - int(guard_counts.sum()), oauth.refresh))
        locked = int(rng.binomial(refresh_attempts, oauth.locked))
        failed = int(rng.binomial(refresh_attempts - locked, oauth.failure))
        started = refresh_attempts - locked
        return StartEffects(
            guard_counts=guard_counts,
            mime_seconds=_without(mime, not_built),
            attachment_bytes=(accepted, rejected),
            inline_refs=(
                int(rng.poisson(p.inline.matched * n_built)),
                int(rng.poisson(p.inline.orphan_cid * n_built)),
            ),
            sanitization=rng.poisson(np.asarray(p.sanitization.means()) * n_built).astype(np.int64),
            oauth=np.array([started, started - failed, failed, locked], dtype=np.int64),
        )

    def _override_failure_latency(
        self,
        rng: np.random.Generator,
        err: NDArray[np.intp],
        err_cls: NDArray[np.int8],
        latency: FloatArray,
        mime: FloatArray,
    ) -> None:
        """Latencies of the failed sends ``err`` (indices), by how each kind of failure takes time."""
        lat = self.params.latency
        timeout = err[self._timeout_classes[err_cls]]
        if len(timeout):
            latency[timeout] = mime[timeout] + lat.timeout + rng.exponential(lat.timeout_overhead, len(timeout))
        network = err[self._network_classes[err_cls]]
        if len(network):
            latency[network] = mime[network] + rng.lognormal(math.log(lat.network_error_p50), 0.5, len(network))
        invalid = err[self._validation_classes[err_cls]]
        if len(invalid):
            latency[invalid] = rng.lognormal(math.log(lat.validation_p50), 0.5, len(invalid))


def _without(values: NDArray[Any], drop: NDArray[np.intp]) -> NDArray[Any]:
    """``values`` without the positions in ``drop`` (few): one mask, one ``np.compress``."""
    if not len(drop):
        return values
    keep = np.ones(len(values), dtype=bool)
    keep[drop] = False
    return np.compress(keep, values)


def _kept(  # noqa: PLR0917 - the arrays of one window, each passed once
    effects: StartEffects,
    keep: NDArray[np.intp],
    totals: bool,
    cls: NDArray[np.int8],
    err: NDArray[np.intp],
    err_cls: NDArray[np.int8],
    att: NDArray[np.intp],
    att_bytes: FloatArray,
    mime: FloatArray,
    latency: FloatArray,
    starts: FloatArray,
) -> tuple[StartEffects, Executions]:
    """The part of a window's outcomes that belongs to the sends at ``keep``.

    Per send: early-guard failures, MIME builds, accepted attachment bytes and the
    executions. Window totals (drawn for the window as a whole) only when ``totals``:
    exactly one shard of a fleet takes them, so the fleet's sums are the window's.
    """
    mine = np.zeros(len(cls), dtype=np.bool_)
    mine[keep] = True
    kept_counts = np.bincount(np.compress(mine, cls), minlength=len(CLASSES))
    guard_counts = np.where(catalog.IS_EXECUTION, 0, kept_counts)
    built = mine.copy()
    built[err[~catalog.BUILDS_MIME[err_cls]]] = False
    executed = mine.copy()
    executed[err[~catalog.IS_EXECUTION[err_cls]]] = False
    accepted = float(np.compress(built[att], att_bytes).sum()) if len(att) else 0.0
    rejected = effects.attachment_bytes[1] if totals else 0.0
    zero = np.zeros_like
    part = StartEffects(
        guard_counts=guard_counts,
        mime_seconds=np.compress(built, mime),
        attachment_bytes=(accepted, rejected),
        inline_refs=effects.inline_refs if totals else (0, 0),
        sanitization=effects.sanitization if totals else zero(effects.sanitization),
        oauth=effects.oauth if totals else zero(effects.oauth),
    )
    lat = np.compress(executed, latency)
    done = Executions(cls=np.compress(executed, cls), latency=lat, done_at=np.compress(executed, starts) + lat)
    return part, done
