"""The outcome model seen from Gmail's side of the wire: which answer each call gets, and after how long.

The model in :mod:`loadsim.model` describes sends as the relay sees them. The fake
Gmail keeps only what Gmail itself decides:

* classes: ``ok`` and the Gmail-stage ones (429, other 4xx, 5xx, timeout, network
  error). Early guards and structured validation failures are the relay's own and
  never reach Gmail, so their probabilities are set to 0 and ``ok`` takes their share
  (under 0.1% with the healthy defaults; the model's probabilities are per send, used
  here per call);
* latency: the call alone. The relay's latency adds the MIME build; sampling with a
  MIME build of ~1 ns and no attachments leaves the call latency (body or heavy
  tail, timeouts, network failures) exactly as the model draws it.

A model method that draws the call latency alone (``OutcomeModel.sample_calls(rng, n)
-> (cls, call_latency)``) would make the second point explicit; until then the
zero-MIME view gives the same distribution without touching the model.

Outcomes are drawn in small batches with the model's bulk sampler and handed out one
per call, so the sequence of outcomes is fixed by the seed whatever the request
timing; a parameter change (an overlay) drops the rest of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from loadsim.model.catalog import CLASSES, Stage
from loadsim.model.params import MimeParams, ModelParams
from loadsim.model.sampler import OutcomeModel

GMAIL_OUTCOMES: tuple[str, ...] = tuple(c.name for c in CLASSES if c.stage in (Stage.OK, Stage.GMAIL))
"""``ok``, ``gmail_429``, ``gmail_4xx``, ``gmail_5xx``, ``gmail_timeout``, ``gmail_network_error``."""
GMAIL_ERRORS: tuple[str, ...] = GMAIL_OUTCOMES[1:]
NO_MIME = MimeParams(base_p50=1e-9, base_p95=2e-9, per_attachment=0.0, per_megabyte=0.0)
"""A MIME build that takes no time: the sampled latency is the Gmail call's alone."""
DEFAULT_BATCH = 64


def gmail_view(params: ModelParams) -> ModelParams:
    """``params`` with only Gmail-side outcomes and no MIME build time."""
    errors = {name: (p if name in GMAIL_ERRORS else 0.0) for name, p in params.errors.items()}
    return replace(params, errors=errors, mime=NO_MIME, attachments=replace(params.attachments, probability=0.0))


def gmail_signature(params: ModelParams) -> tuple[object, ...]:
    """What of ``params`` the fake Gmail can show: equal signatures answer alike."""
    return (tuple(params.errors.get(name, 0.0) for name in GMAIL_ERRORS), params.latency)


@dataclass(frozen=True, slots=True)
class Call:
    """The sampled fate of one call to ``messages.send``."""

    outcome: str
    """One of :data:`GMAIL_OUTCOMES`."""
    latency: float
    """Seconds before Gmail answers (for a timeout: how long the call hangs)."""
    pick: float
    """A uniform draw in [0, 1) choosing among the answers of the outcome's class."""


class CallSampler:
    """Hands out one :class:`Call` at a time from batches drawn by the outcome model."""

    def __init__(self, params: ModelParams, rng: np.random.Generator, batch: int = DEFAULT_BATCH) -> None:
        self.rng = rng
        self.batch = batch
        self._calls: list[Call] = []
        self.set_params(params)

    def set_params(self, params: ModelParams) -> None:
        """Draw from ``params`` (their Gmail view) from the next call on."""
        self.params = gmail_view(params)
        self.model = OutcomeModel(self.params)
        self._calls = []

    def next(self) -> Call:
        """The next call's outcome."""
        if not self._calls:
            self._calls = self._draw()
        return self._calls.pop()

    def _draw(self) -> list[Call]:
        _, done = self.model.sample(self.rng, np.zeros(self.batch))
        picks = self.rng.random(len(done))
        # Relay-side classes have probability 0; only rounding at u ~ 1 could land on one.
        names = [CLASSES[int(c)].name for c in done.cls]
        calls = [
            Call(name if name in GMAIL_OUTCOMES else "ok", float(lat), float(u))
            for name, lat, u in zip(names, done.latency, picks, strict=True)
        ]
        calls.reverse()  # pop() from the end hands them out in drawn order
        return calls

    def probabilities(self) -> dict[str, float]:
        """The chance of each Gmail outcome per call, as now in force."""
        probs = self.model.class_probabilities
        return {c.name: float(probs[i]) for i, c in enumerate(CLASSES) if c.name in GMAIL_OUTCOMES}

    def describe(self) -> dict[str, Any]:
        """The figures in force, for the control API."""
        lat = self.params.latency
        return {
            "probabilities": self.probabilities(),
            "latency_seconds": {
                name: float(f"{getattr(lat, name):.6g}")  # the overlays' log-space maths leaves float noise
                for name in ("p50", "p95", "tail_fraction", "tail_p50", "tail_p95", "timeout")
            },
        }
