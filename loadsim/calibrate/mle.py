"""Maximum likelihood on counts, and the Fisher information that gives each parameter its standard error.

Two likelihoods cover every fit of a calibration: the multinomial (bucket counts of a
histogram: interval-censored observations, since the buckets are all the relay
exports) and the Poisson (hourly send counts against a rate curve). For both, the
Fisher information at the estimate is ``J^T diag(w) J`` with ``J`` the derivative of the
expected counts with respect to the parameters and ``w = 1 / expected``; its inverse is
the covariance of the estimates. ``J`` is taken by central differences on the model's
own functions, so the standard errors are those of exactly the parameters a profile
holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import optimize
from scipy.special import ndtr

FloatArray = NDArray[np.float64]
Model = Callable[[FloatArray], FloatArray]
"""Parameters (natural units) -> expected counts per cell."""

TINY = 1e-300


@dataclass(frozen=True)
class Discrete:
    """A large sample kept as weighted quantiles: cheap to average over, and true to its tail.

    Evenly spaced quantiles would give the top 0.1% one point, yet that top is what the
    sparse high buckets count (a MIME build past 0.5 s is the heaviest attachments): the
    upper 1% gets as many points as the rest, spaced geometrically down to the sample's
    last value.
    """

    points: FloatArray
    weights: FloatArray

    @classmethod
    def of(cls, samples: FloatArray, body: int = 500, tail: int = 500) -> Discrete:
        """``body`` points over the lower 99%, ``tail`` over the upper 1%."""
        upper = 1.0 - np.geomspace(0.01, 0.5 / len(samples), tail)
        edges = np.concatenate((np.linspace(0.0, 0.99, body + 1), upper[1:], [1.0]))
        mids = (edges[:-1] + edges[1:]) / 2
        return cls(np.asarray(np.quantile(samples, mids), dtype=np.float64), np.diff(edges))

    def expect(self, values: FloatArray) -> FloatArray:
        """The expectation over this distribution of ``values`` (its last axis runs over :attr:`points`)."""
        return np.asarray(values @ self.weights, dtype=np.float64)


def lognormal_cdf(x: FloatArray, mu: float, sigma: float) -> FloatArray:
    """``P(X <= x)`` for ``ln X ~ N(mu, sigma)``; 0 where ``x <= 0``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (np.log(np.where(x > 0, x, 1.0)) - mu) / sigma
    return np.where(x > 0, ndtr(z), 0.0)


def multinomial_deviance(counts: FloatArray, expected: FloatArray) -> float:
    """``2 * sum n ln(n / e)``: the multinomial negative log-likelihood less its saturated value (well scaled)."""
    mask = counts > 0
    return float(2.0 * np.sum(counts[mask] * np.log(counts[mask] / np.maximum(expected[mask], TINY))))


def poisson_deviance(counts: FloatArray, expected: FloatArray) -> float:
    """``2 * sum [n ln(n / e) - (n - e)]``: the Poisson negative log-likelihood less its saturated value."""
    e = np.maximum(expected, TINY)
    mask = counts > 0
    term = np.zeros_like(e)
    term[mask] = counts[mask] * np.log(counts[mask] / e[mask])
    return float(2.0 * np.sum(term - (counts - e)))


MAX_EVALUATIONS = 1500
"""Per start, for the simplex search: a fit that has not settled by then is polished from where it is
(a well-posed fit settles in a few hundred; data the model cannot describe would wander on)."""


def minimise(objective: Callable[[FloatArray], float], starts: Sequence[FloatArray]) -> FloatArray:
    """The best of a few local searches (Nelder-Mead, then a quasi-Newton polish) from each start."""
    best: FloatArray | None = None
    best_value = np.inf
    for x0 in starts:
        first = optimize.minimize(
            objective, x0, method="Nelder-Mead", options={"xatol": 1e-7, "fatol": 1e-7, "maxfev": MAX_EVALUATIONS}
        )
        polished = optimize.minimize(objective, first.x, method="BFGS", options={"gtol": 1e-6, "maxiter": 200})
        for result in (first, polished):
            if np.isfinite(result.fun) and result.fun < best_value:
                best, best_value = np.asarray(result.x, dtype=np.float64), float(result.fun)
    assert best is not None, "every start failed"
    return best


def jacobian(model: Model, theta: FloatArray, rel_step: float = 1e-5) -> FloatArray:
    """``d expected / d theta`` by central differences (cells x parameters)."""
    cols = []
    for i, value in enumerate(theta):
        h = rel_step * max(abs(float(value)), 1e-3)
        up, down = theta.copy(), theta.copy()
        up[i] += h
        down[i] -= h
        cols.append((model(up) - model(down)) / (2 * h))
    return np.stack(cols, axis=1)


def covariance(model: Model, theta: FloatArray) -> FloatArray:
    """Inverse Fisher information at ``theta`` for counts (Poisson or multinomial alike)."""
    expected = model(theta)
    j = jacobian(model, theta)
    keep = expected > 0
    info = j[keep].T @ (j[keep] / expected[keep, None])
    return np.asarray(np.linalg.pinv(info), dtype=np.float64)


def standard_errors(model: Model, theta: FloatArray, inflation: float = 1.0) -> FloatArray:
    """Square roots of the covariance's diagonal, times ``sqrt(inflation)`` (over-dispersed counts)."""
    return np.sqrt(np.clip(np.diag(covariance(model, theta)), 0.0, None) * max(inflation, 1.0))
