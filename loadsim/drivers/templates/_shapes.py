"""Message shapes: what a window's messages look like, for both templates.

Recipients, subject and HTML sizes and attachment counts and sizes are drawn from the model
in force for the window (:class:`Shapes`).

*Attachment sizes* (both templates): while an overlay changed the attachment parameters
(``mime-slow``) the driver sets ``Shapes.real_attachment_sizes`` and attachments go out at
their drawn sizes, within the relay's limits (:func:`draw_attachments`, :func:`real_sizes`).
Otherwise attachment content is capped (``Shapes.attachment_cap``) so a load test measures
the target, not the client's base64 encoder.

Also the content both templates fill messages with: recipient addresses, and the ``x``
filler's base64, never encoded per request.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from loadsim.drivers.templates._rules import VALIDATION_CODES
from loadsim.model.params import AttachmentParams, ModelParams
from loadsim.model.sampler import MAX_ATTACHMENT_BYTES, MAX_ATTACHMENTS, MAX_MESSAGE_BYTES, lognormal_params


@dataclass(frozen=True, slots=True)
class Shapes:
    """What a window's messages look like: the model in force, and whether attachment sizes are real."""

    model: ModelParams
    real_attachment_sizes: bool = False
    """Attachments at their drawn sizes (within the relay's limits) instead of capped content."""
    attachment_cap: int = 2048
    """Content bytes per attachment when sizes are not real."""

    @property
    def validation(self) -> dict[str, float]:
        """Probability per send of each validation code (:data:`VALIDATION_CODES`)."""
        errors = self.model.errors
        return {code: float(errors.get(code, 0.0)) for code in VALIDATION_CODES}


# -- attachment sizes -----------------------------------------------------------------------------
IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


def draw_attachments(rng: np.random.Generator, params: AttachmentParams, n: int) -> tuple[IntArray, FloatArray]:
    """Attachments of ``n`` sends as the outcome model draws them: ``(offsets, sizes)``.

    Send ``i`` has ``offsets[i + 1] - offsets[i]`` attachments (with ``params.probability``
    at least one: ``1 + Poisson(extra_mean)``, at most 10), whose sizes in bytes are
    ``sizes[offsets[i]:offsets[i + 1]]``, each its own log-normal draw (``size_p50_bytes``,
    ``size_p95_bytes``), uncapped. Three numpy draws for the whole window.
    """
    has = np.flatnonzero(rng.random(n) < params.probability)
    counts = np.zeros(n, dtype=np.int64)
    counts[has] = np.minimum(1 + rng.poisson(params.extra_mean, len(has)), MAX_ATTACHMENTS)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    mu, sigma = lognormal_params(params.size_p50_bytes, params.size_p95_bytes)
    return offsets, np.exp(mu + sigma * rng.standard_normal(int(offsets[-1])))


def real_sizes(offsets: IntArray, sizes: FloatArray) -> IntArray:
    """Drawn sizes made valid for the relay: each at most 25 MB, each send's total at most 50 MB.

    A send whose attachments add up to more than 50 MB has them all scaled down by the same
    factor (as the outcome model caps a send's attachment bytes at 50 MB); sizes are whole
    bytes, at least 1.
    """
    capped = np.minimum(sizes, MAX_ATTACHMENT_BYTES)
    sums = np.concatenate(([0.0], np.cumsum(capped)))
    totals = sums[offsets[1:]] - sums[offsets[:-1]]
    scale = np.minimum(1.0, MAX_MESSAGE_BYTES / np.maximum(totals, 1.0))
    fitted = np.floor(capped * np.repeat(scale, np.diff(offsets)))
    out: IntArray = np.maximum(fitted, 1).astype(np.int64)
    return out


# -- content both templates share -----------------------------------------------------------------
_B64_TAILS = ("", "eA==", "eHg=")
"""base64 of the last 0, 1 or 2 bytes of an ``x`` filler."""


def _filler_b64(size: int) -> str:
    """base64 of ``size`` bytes of ``x``: ``eHh4`` repeated and a tail, never encoded per request."""
    groups, tail = divmod(size, 3)
    return "eHh4" * groups + _B64_TAILS[tail]


_ADDRESSES = [f"user{t}@example.com" for t in range(10_000)]
