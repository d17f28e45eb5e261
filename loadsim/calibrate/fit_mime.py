"""The MIME build and the attachments: the build-time histogram and the bytes counter.

A build takes a lognormal base time plus, for a send with attachments, a cost per
attachment and per megabyte (:mod:`loadsim.model.sampler`). The relay exports the build
times as a histogram and the attachments only as a byte total, so:

* **Attachments.** The byte counter gives one number, the mean accepted bytes per built
  send, which is ``probability x E[bytes | attachments]``. The share of sends with
  attachments and their count cannot be told apart from their size with one number:
  they are held at the model's defaults, and the size distribution is scaled (median and
  95th percentile by the same factor, its spread kept) to match the mean exactly. The
  mean is computed in closed form from the lognormal's partial moments with the relay's
  caps (25 MB an attachment, 50 MB a send), and its standard error from the per-send
  variance of the same model. Rejected sends' sizes come from the rejected bytes.
* **MIME build.** The base median and 95th percentile by maximum likelihood on the
  histogram's interval-censored counts, the attachment costs drawn with the model's own
  :func:`~loadsim.model.sampler.draw_attachments` (200,000 draws, fixed seed, kept as
  1,000 weighted quantiles, :class:`~.mle.Discrete`, so each likelihood evaluation is cheap and smooth).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import optimize
from scipy.special import ndtr

from loadsim import contract as c
from loadsim.calibrate import mle
from loadsim.calibrate.estimate import Estimate, Goodness, Row, held
from loadsim.calibrate.goodness import cdf_gap, pearson
from loadsim.calibrate.read import Window
from loadsim.model import catalog
from loadsim.model.params import AttachmentParams, MimeParams, ModelParams
from loadsim.model.sampler import (
    MAX_ATTACHMENT_BYTES,
    MAX_ATTACHMENTS,
    MAX_MESSAGE_BYTES,
    OutcomeModel,
    draw_attachments,
    lognormal_params,
    mime_attachment_cost,
)

DRAWS = 200_000
SEED = 20_261_130
REJECTED_SIGMA = 0.3
"""The rejected attachments' lognormal spread in the sampler."""

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class MimeFit:
    """The fitted MIME and attachment parameters, and the build times they imply."""

    mime: MimeParams
    attachments: AttachmentParams
    estimates: list[Estimate]
    goodness: Goodness
    expected: FloatArray
    """Fitted counts per MIME bucket."""
    cdf: tuple[FloatArray, FloatArray]
    """Seconds and the fitted CDF, for the plot."""
    build_times: mle.Discrete
    """A built send's MIME time under the fit (what the latency adds to each call)."""


def fit(window: Window) -> MimeFit:
    """Attachments from the byte counter, then the MIME base from the histogram."""
    attachments, estimates = _attachments(window)
    mime, mime_estimates, goodness, expected, cdf = _mime(window, attachments)
    estimates = mime_estimates + estimates
    model = OutcomeModel(ModelParams(mime=mime, attachments=attachments, errors=_no_errors()))
    effects, _ = model.sample(np.random.default_rng(SEED), np.zeros(DRAWS))
    return MimeFit(mime, attachments, estimates, goodness, expected, cdf, mle.Discrete.of(effects.mime_seconds))


def _no_errors() -> dict[str, float]:
    return {cls.name: 0.0 for cls in catalog.CLASSES if cls.name != "ok"}


# -- attachments ---------------------------------------------------------------------------


def _count_weights(extra_mean: float) -> tuple[FloatArray, FloatArray]:
    """Attachment counts 1..10 and their probabilities (1 + Poisson, capped at the relay's 10)."""
    from scipy.stats import poisson

    counts = np.arange(1, MAX_ATTACHMENTS + 1, dtype=np.float64)
    p = poisson.pmf(counts - 1, extra_mean)
    p[-1] += poisson.sf(MAX_ATTACHMENTS - 1, extra_mean)
    return counts, p


def _capped_moments(mu: float, sigma: float, cap: float) -> tuple[float, float]:
    """``E[min(X, cap)]`` and ``E[min(X, cap)^2]`` for lognormal X: partial moments plus the capped mass."""
    z = (math.log(cap) - mu) / sigma
    above = 1.0 - float(ndtr(z))
    m1 = math.exp(mu + sigma**2 / 2) * float(ndtr(z - sigma)) + cap * above
    m2 = math.exp(2 * mu + 2 * sigma**2) * float(ndtr(z - 2 * sigma)) + cap**2 * above
    return m1, m2


def bytes_moments(params: AttachmentParams) -> tuple[float, float]:
    """Mean and second moment of the accepted bytes of one send that has attachments.

    ``bytes = min(count x min(size, 25 MB), 50 MB) = count x min(size, min(25 MB, 50 MB / count))``,
    so per count it is the count times a capped lognormal.
    """
    mu, sigma = lognormal_params(params.size_p50_bytes, params.size_p95_bytes)
    counts, weights = _count_weights(params.extra_mean)
    m1 = m2 = 0.0
    for n, w in zip(counts, weights, strict=True):
        a, b = _capped_moments(mu, sigma, min(MAX_ATTACHMENT_BYTES, MAX_MESSAGE_BYTES / n))
        m1 += w * n * a
        m2 += w * n * n * b
    return m1, m2


def _attachments(window: Window) -> tuple[AttachmentParams, list[Estimate]]:
    ref = AttachmentParams()
    keep = [
        held("model.attachments.probability", ref.probability, "", "the byte counter gives one mean; share held"),
        held("model.attachments.extra_mean", ref.extra_mean, "", "the byte counter gives one mean; count held"),
    ]
    counted = window.attachment_bytes
    built = window.built
    if counted is None or built <= 0:
        why = f"no {c.ATTACHMENT_BYTES} series in the window"
        return ref, [
            *keep,
            held("model.attachments.size_p50_bytes", ref.size_p50_bytes, "B", why),
            held("model.attachments.size_p95_bytes", ref.size_p95_bytes, "B", why),
            held("model.attachments.rejected_size_p50_bytes", ref.rejected_size_p50_bytes, "B", why),
        ]
    per_send = counted.get("accepted", 0.0) / built
    ratio = ref.size_p95_bytes / ref.size_p50_bytes

    def mean_at(log_scale: float) -> float:
        p50 = ref.size_p50_bytes * math.exp(log_scale)
        scaled = AttachmentParams(ref.probability, ref.extra_mean, p50, p50 * ratio, ref.rejected_size_p50_bytes)
        return ref.probability * bytes_moments(scaled)[0]

    ceiling = mean_at(30.0)
    estimates = list(keep)
    if per_send <= 0:
        scale, se_scale, how = 1e-6, None, "no accepted attachment bytes in the window"
    elif per_send >= ceiling:
        scale, se_scale, how = math.exp(30.0), None, "accepted bytes at the relay's caps"
    else:
        log_scale = optimize.brentq(lambda s: mean_at(s) - per_send, -30.0, 30.0, xtol=1e-12)
        scale = math.exp(log_scale)
        p50 = ref.size_p50_bytes * scale
        m1, m2 = bytes_moments(AttachmentParams(ref.probability, ref.extra_mean, p50, p50 * ratio))
        variance = ref.probability * m2 - (ref.probability * m1) ** 2
        h = 1e-4
        slope = (mean_at(log_scale + h) - mean_at(log_scale - h)) / (2 * h)  # d mean / d ln(scale)
        se_scale = scale * math.sqrt(variance / built) / slope
        how = "mean accepted bytes per built send, closed form; spread held"
    p50, p95 = ref.size_p50_bytes * scale, ref.size_p95_bytes * scale
    se50 = None if se_scale is None else ref.size_p50_bytes * se_scale
    se95 = None if se_scale is None else ref.size_p95_bytes * se_scale
    estimates += [
        Estimate("model.attachments.size_p50_bytes", p50, se50, "B", how),
        Estimate("model.attachments.size_p95_bytes", p95, se95, "B", how),
    ]
    rejected_sends = sum(window.errors.get(code, 0.0) for code in catalog.REJECTED_ATTACHMENT_CODES)
    rejected_p50 = ref.rejected_size_p50_bytes
    if rejected_sends > 0 and counted.get("rejected", 0.0) > 0:
        # Each rejected send draws one lognormal(ln p50, 0.3): its mean is p50 x exp(0.045).
        rejected_p50 = counted["rejected"] / rejected_sends / math.exp(REJECTED_SIGMA**2 / 2)
        cv = math.sqrt(math.exp(REJECTED_SIGMA**2) - 1)
        estimates.append(
            Estimate(
                "model.attachments.rejected_size_p50_bytes",
                rejected_p50,
                rejected_p50 * cv / math.sqrt(rejected_sends),
                "B",
                "mean rejected bytes per rejected send",
            )
        )
    else:
        estimates.append(
            held(
                "model.attachments.rejected_size_p50_bytes", rejected_p50, "B", "no rejected attachments in the window"
            )
        )
    return AttachmentParams(ref.probability, ref.extra_mean, p50, p95, rejected_p50), estimates


# -- MIME build ------------------------------------------------------------------------------


def _mime(
    window: Window, attachments: AttachmentParams
) -> tuple[MimeParams, list[Estimate], Goodness, FloatArray, tuple[FloatArray, FloatArray]]:
    ref = MimeParams()
    rng = np.random.default_rng(SEED)
    count, total = draw_attachments(rng, DRAWS, attachments)
    extra = mle.Discrete.of(mime_attachment_cost(ref, count, total))
    share = attachments.probability
    bounds = np.asarray(c.MIME_BUCKETS, dtype=np.float64)
    shifted = bounds[:, None] - extra.points[None, :]
    counts = window.mime
    n = float(counts.sum())

    def cdf_at(theta: FloatArray, x: FloatArray, x_shifted: FloatArray) -> FloatArray:
        mu, sigma = lognormal_params(float(theta[0]), float(theta[1]))
        plain = mle.lognormal_cdf(x, mu, sigma)
        with_attachments = extra.expect(mle.lognormal_cdf(x_shifted, mu, sigma))
        return np.asarray((1 - share) * plain + share * with_attachments, dtype=np.float64)

    def expected(theta: FloatArray) -> FloatArray:
        cumulative = np.append(cdf_at(theta, bounds, shifted), 1.0)
        return n * np.diff(cumulative, prepend=0.0)

    def objective(x: FloatArray) -> float:
        theta = np.array([math.exp(x[0]), math.exp(x[0]) * (1 + math.exp(x[1]))])
        return mle.multinomial_deviance(counts, expected(theta))

    starts = [np.array([math.log(p50), math.log(r - 1)]) for p50, r in ((ref.base_p50, 2.5), (0.03, 3.0))]
    x = mle.minimise(objective, starts)
    theta = np.array([math.exp(x[0]), math.exp(x[0]) * (1 + math.exp(x[1]))])
    se = mle.standard_errors(expected, theta)
    how = "interval-censored MLE, Fisher information"
    estimates = [
        Estimate("model.mime.base_p50", float(theta[0]), float(se[0]), "s", how),
        Estimate("model.mime.base_p95", float(theta[1]), float(se[1]), "s", how),
        held("model.mime.per_attachment", ref.per_attachment, "s", "not separable from the base with these buckets"),
        held("model.mime.per_megabyte", ref.per_megabyte, "s", "not separable from the base with these buckets"),
    ]
    fitted = expected(theta)
    rows = bucket_rows(c.MIME_BUCKETS, counts, fitted)
    goodness = pearson(c.MIME_BUILD, rows, 2, f"largest CDF gap {cdf_gap(counts, fitted):.2g}")
    xs = np.geomspace(1e-3, 10.0, 200)
    curve = cdf_at(theta, xs, xs[:, None] - extra.points[None, :])
    mime = MimeParams(float(theta[0]), float(theta[1]), ref.per_attachment, ref.per_megabyte)
    return mime, estimates, goodness, fitted, (xs, curve)


def bucket_rows(bounds: tuple[float, ...], observed: FloatArray, expected: FloatArray) -> tuple[Row, ...]:
    """One row per bucket, labelled ``lower…upper`` in seconds."""
    edges = ["0", *(f"{b:g}" for b in bounds), "+Inf"]
    return tuple(
        Row(f"{edges[i]}…{edges[i + 1]}", float(o), float(e))
        for i, (o, e) in enumerate(zip(observed, expected, strict=True))
    )
