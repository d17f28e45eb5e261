"""Latency: the Gmail call's lognormal body, its heavy tail and the timeouts, from the relay's buckets.

``action_latency_seconds`` holds every execution in ten buckets, and the buckets are
all there is: each send is only known to lie between two bounds (interval-censored),
so the fit maximises the multinomial likelihood of the bucket counts. The model is the
sampler's, term by term (:mod:`loadsim.model.sampler`):

* a call (``ok``, 4xx, 5xx) takes its MIME build plus a call drawn from the body
  lognormal, or with probability ``tail_fraction`` from the tail lognormal; a call
  slower than the 30 s client timeout becomes a timeout;
* a timeout takes its MIME build plus 30 s (so it lands in ``30…60``);
* a network error takes its MIME build plus a lognormal around ``network_error_p50``;
* a structured (validation) failure takes a lognormal around ``validation_p50``.

The shares of timeouts, network errors and structured failures among executions are
counted exactly by ``action_error_total``, so they enter as known; the MIME build time
is the MIME fit's (:mod:`.fit_mime`), added by averaging over its quantiles. Since the
relay counts a tail call beyond 30 s as a timeout, the ``30…60`` bucket is the
timeouts' count whatever the tail does: what the tail adds there is subtracted from
the timeout class's probability (:attr:`LatencyFit.converted`), not fitted twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from loadsim import contract as c
from loadsim.calibrate import mle
from loadsim.calibrate.estimate import Estimate, Goodness, held
from loadsim.calibrate.fit_mime import bucket_rows
from loadsim.calibrate.goodness import cdf_gap, pearson
from loadsim.calibrate.read import Window
from loadsim.model import catalog
from loadsim.model.params import LatencyParams
from loadsim.model.sampler import lognormal_params

FAILURE_SIGMA = 0.5
"""The sampler's lognormal spread for network and validation failures."""
NAMES = ("p50", "p95", "tail_fraction", "tail_p50", "tail_p95")
UNITS = ("s", "s", "", "s", "s")

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class LatencyFit:
    """Fitted latency parameters and the bucket counts they imply."""

    params: LatencyParams
    estimates: list[Estimate]
    goodness: Goodness
    expected: FloatArray
    cdf: tuple[FloatArray, FloatArray]
    """Seconds and the fitted CDF of all executions, for the plot."""
    converted: float
    """Timeouts the fitted tail explains (calls beyond 30 s), to take off the timeout class."""


class _Model:
    """Expected bucket counts of ``action_latency_seconds`` for parameters ``(p50, p95, f, tail_p50, tail_p95)``."""

    def __init__(self, window: Window, build_times: mle.Discrete, ref: LatencyParams) -> None:
        self.counts = window.latency
        self.n = float(self.counts.sum())
        errors = window.errors
        self.timeout = errors["gmail_timeout"] / self.n
        self.network = errors["gmail_network_error"] / self.n
        self.validation = sum(errors[code] for code in catalog.STRUCTURED_CODES) / self.n
        self.calls = 1.0 - self.network - self.validation - self.timeout
        self.ref = ref
        self.bounds = np.asarray(c.LATENCY_BUCKETS, dtype=np.float64)
        self.build_times = build_times
        self.below = self.bounds <= ref.timeout
        self.shifted = self.bounds[self.below, None] - build_times.points[None, :]
        net = mle.lognormal_cdf(
            self.bounds[:, None] - build_times.points[None, :], math.log(ref.network_error_p50), FAILURE_SIGMA
        )
        self.failures = self.network * build_times.expect(net) + self.validation * mle.lognormal_cdf(
            self.bounds, math.log(ref.validation_p50), FAILURE_SIGMA
        )

    def call_cdf(self, theta: FloatArray, x: FloatArray) -> FloatArray:
        """The call's CDF (before the MIME build is added): body and tail mixed."""
        p50, p95, f, t50, t95 = (float(v) for v in theta)
        body = mle.lognormal_cdf(x, *lognormal_params(p50, p95))
        tail = mle.lognormal_cdf(x, *lognormal_params(t50, t95))
        return np.asarray((1 - f) * body + f * tail, dtype=np.float64)

    def cumulative(self, theta: FloatArray, shifted: FloatArray, below: NDArray[np.bool_]) -> FloatArray:
        """CDF of all executions at the bounds whose ``shifted`` (bound minus build time) is given."""
        within = float(self.call_cdf(theta, np.array([self.ref.timeout]))[0])
        calls = np.ones(len(below))
        calls[below] = self.build_times.expect(self.call_cdf(theta, shifted)) / within
        return calls

    def __call__(self, theta: FloatArray) -> FloatArray:
        calls = self.cumulative(theta, self.shifted, self.below)
        timeouts = np.where(self.bounds > self.ref.timeout, self.timeout, 0.0)  # 30 s and a little: in 30…60
        cdf = self.calls * calls + timeouts + self.failures
        return self.n * np.diff(np.append(cdf, 1.0), prepend=0.0)

    def beyond_timeout(self, theta: FloatArray) -> float:
        """Share of calls slower than the client timeout."""
        return 1.0 - float(self.call_cdf(theta, np.array([self.ref.timeout]))[0])


def fit(window: Window, build_times: mle.Discrete) -> LatencyFit:
    """The body and tail by interval-censored maximum likelihood; timeouts and failures held to their counts."""
    ref = LatencyParams()
    model = _Model(window, build_times, ref)
    counts = model.counts

    def natural(x: FloatArray) -> FloatArray:
        p50, t50 = math.exp(x[0]), math.exp(x[3])
        return np.array(
            [p50, p50 * math.exp(math.exp(x[1])), 1 / (1 + math.exp(-x[2])), t50, t50 * math.exp(math.exp(x[4]))]
        )

    def objective(x: FloatArray) -> float:
        if not np.all(np.isfinite(x)) or np.any(np.abs(x) > 40):
            return math.inf
        return mle.multinomial_deviance(counts, model(natural(x)))

    p50_0 = _observed_median(counts, model.bounds)
    starts = [
        np.array([math.log(p50_0), math.log(math.log(2.0)), _logit(f0), math.log(t50), math.log(math.log(r))])
        for f0, t50, r in ((0.005, 1.5, 3.0), (0.02, 3.0, 4.0), (0.002, 0.8, 2.0))
    ]
    theta = natural(mle.minimise(objective, starts))
    se = mle.standard_errors(model, theta)
    how = "interval-censored MLE, Fisher information"
    estimates = [
        Estimate(f"model.latency.{name}", float(v), float(s), unit, how)
        for name, v, s, unit in zip(NAMES, theta, se, UNITS, strict=True)
    ]
    small = f"{model.network + model.validation:.3%} of executions; too few to fit from the buckets"
    estimates += [
        held("model.latency.timeout", ref.timeout, "s", "the relay's client timeout"),
        held("model.latency.timeout_overhead", ref.timeout_overhead, "s", "inside the 30…60 bucket"),
        held("model.latency.network_error_p50", ref.network_error_p50, "s", small),
        held("model.latency.validation_p50", ref.validation_p50, "s", small),
    ]
    expected = model(theta)
    rows = bucket_rows(c.LATENCY_BUCKETS, counts, expected)
    # Fitted: the five parameters, and the timeouts' share, which is the 30…60 bucket's own count.
    goodness = pearson(c.ACTION_LATENCY, rows, len(NAMES) + 1, f"largest CDF gap {cdf_gap(counts, expected):.2g}")
    xs = np.geomspace(0.01, 60.0, 300)
    below = xs <= ref.timeout
    curve = model.cumulative(theta, xs[below, None] - build_times.points[None, :], below)
    net = mle.lognormal_cdf(xs[:, None] - build_times.points[None, :], math.log(ref.network_error_p50), FAILURE_SIGMA)
    failures = model.network * build_times.expect(net) + model.validation * mle.lognormal_cdf(
        xs, math.log(ref.validation_p50), FAILURE_SIGMA
    )
    cdf = model.calls * curve + np.where(xs > ref.timeout + 0.1, model.timeout, 0.0) + failures
    beyond = model.beyond_timeout(theta)
    converted = model.n * model.calls * beyond / max(1.0 - beyond, 1e-12)
    params = LatencyParams(
        p50=float(theta[0]),
        p95=float(theta[1]),
        tail_fraction=float(theta[2]),
        tail_p50=float(theta[3]),
        tail_p95=float(theta[4]),
    )
    return LatencyFit(params, estimates, goodness, expected, (xs, cdf), converted)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _observed_median(counts: FloatArray, bounds: FloatArray) -> float:
    """Where the observed CDF crosses one half, interpolated on a log scale (a starting point)."""
    cdf = np.cumsum(counts[: len(bounds)]) / counts.sum()
    i = int(np.searchsorted(cdf, 0.5))
    if i == 0:
        return float(bounds[0]) / 2
    if i >= len(bounds):
        return float(bounds[-1])
    lo, hi = math.log(bounds[i - 1]), math.log(bounds[i])
    frac = (0.5 - cdf[i - 1]) / max(cdf[i] - cdf[i - 1], 1e-12)
    return math.exp(lo + frac * (hi - lo))
