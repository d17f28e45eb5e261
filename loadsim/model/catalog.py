"""The catalogue of send outcomes, mapped onto the relay's metric contract.

Each outcome class says how the relay accounts for a send that ends that way,
following the relay's own code paths (see ``deploy/relay/README.md``):

* early guards (``provider_disabled``, ``rollout_gated``, ``validation_error``,
  ``oauth_token_missing``) return before anything is built or sent: they count
  in ``action_error_total`` only, never as executions, and observe no latency;
* structured MIME/validation failures count as executions with
  ``status="error"``, in ``action_error_total`` with the code as ``reason``, and
  in ``structured_error_total`` (twice, under ``gmail.adapter`` and
  ``gmail.validation``, for attachment-too-large and blocked-mime-type). They
  fail while the message is being built, so no MIME build time is observed;
* Gmail API failures (4xx, 5xx, timeout, network) count as executions with
  ``status="error"`` and observe their latency, which includes the MIME build;
* ``ok`` counts as an execution with ``status="ok"``.

Classes are finer than labels where users need it: 429s are their own class
(so rate-limit storms show in the summary) but export as ``reason="gmail_4xx"``.
The order of :data:`CLASSES` is the index used in every outcome array.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
from numpy.typing import NDArray


class Stage(Enum):
    """Where in the relay's send path an outcome is decided."""

    OK = "ok"
    EARLY_GUARD = "early_guard"
    STRUCTURED = "structured"
    GMAIL = "gmail"


class LatencyKind(Enum):
    """How an outcome's latency is drawn."""

    NONE = "none"
    """Not observed (early guards)."""
    CALL = "call"
    """MIME build plus the Gmail API call (lognormal body, heavy tail)."""
    TIMEOUT = "timeout"
    """MIME build plus the client timeout (30 s in the relay) plus a little overhead."""
    NETWORK = "network"
    """MIME build plus a short connect failure."""
    VALIDATION = "validation"
    """A short failure inside validation or the MIME builder."""


@dataclass(frozen=True, slots=True)
class OutcomeClass:
    """One way a send can end, and how the relay counts it."""

    name: str
    stage: Stage
    reason: str | None
    """``action_error_total`` reason label, or None for success."""
    code: str | None = None
    """``structured_error_total`` code, for structured failures."""
    sources: tuple[str, ...] = ()
    """``structured_error_total`` sources this outcome counts under."""
    latency: LatencyKind = LatencyKind.CALL

    @property
    def is_execution(self) -> bool:
        """Counted in ``action_exec_total`` (and its latency observed)."""
        return self.stage is not Stage.EARLY_GUARD

    @property
    def exec_status(self) -> str:
        """``status`` label on ``action_exec_total``."""
        return "ok" if self.stage is Stage.OK else "error"

    @property
    def builds_mime(self) -> bool:
        """Observes ``gmail_mime_build_seconds`` and attachment and inline counters as accepted."""
        return self.stage in (Stage.OK, Stage.GMAIL)


ADAPTER = "gmail.adapter"
VALIDATION = "gmail.validation"

EARLY_GUARD_REASONS = ("provider_disabled", "rollout_gated", "validation_error", "oauth_token_missing")
GMAIL_REASONS = ("gmail_4xx", "gmail_5xx", "gmail_timeout", "gmail_network_error")
STRUCTURED_CODES = (
    "validation_error_attachment_too_large",
    "validation_error_blocked_mime_type",
    "validation_error_missing_inline_image",
    "validation_error_cid_not_referenced",
    "validation_error_total_size_exceeded",
    "validation_error_invalid_attachment_data",
    "validation_error_invalid_inline_data",
    "validation_error_mime_build",
    "internal_only_recipient_blocked",
    "unknown_mime_error",
    "unknown_error",
)
DOUBLE_COUNTED_CODES = ("validation_error_attachment_too_large", "validation_error_blocked_mime_type")
"""Codes the relay counts under both ``gmail.adapter`` and ``gmail.validation``."""
REJECTED_ATTACHMENT_CODES = ("validation_error_attachment_too_large", "validation_error_total_size_exceeded")
"""Codes whose attachment bytes count as ``gmail_attachment_bytes_total{result="rejected"}``."""


def _build_classes() -> tuple[OutcomeClass, ...]:
    classes = [OutcomeClass("ok", Stage.OK, None)]
    classes += [OutcomeClass(r, Stage.EARLY_GUARD, r, latency=LatencyKind.NONE) for r in EARLY_GUARD_REASONS]
    classes += [
        OutcomeClass("gmail_429", Stage.GMAIL, "gmail_4xx"),
        OutcomeClass("gmail_4xx", Stage.GMAIL, "gmail_4xx"),
        OutcomeClass("gmail_5xx", Stage.GMAIL, "gmail_5xx"),
        OutcomeClass("gmail_timeout", Stage.GMAIL, "gmail_timeout", latency=LatencyKind.TIMEOUT),
        OutcomeClass("gmail_network_error", Stage.GMAIL, "gmail_network_error", latency=LatencyKind.NETWORK),
    ]
    for code in STRUCTURED_CODES:
        sources = (ADAPTER, VALIDATION) if code in DOUBLE_COUNTED_CODES else (ADAPTER,)
        classes.append(OutcomeClass(code, Stage.STRUCTURED, code, code, sources, LatencyKind.VALIDATION))
    return tuple(classes)


CLASSES: tuple[OutcomeClass, ...] = _build_classes()
CLASS_INDEX: dict[str, int] = {c.name: i for i, c in enumerate(CLASSES)}
OK = CLASS_INDEX["ok"]

ERROR_REASONS: tuple[str, ...] = EARLY_GUARD_REASONS + GMAIL_REASONS + STRUCTURED_CODES
"""Every ``reason`` label value of ``action_error_total``, exported from the start."""

STRUCTURED_SERIES: tuple[tuple[str, str], ...] = tuple(
    (code, src)
    for code in STRUCTURED_CODES
    for src in ((ADAPTER, VALIDATION) if code in DOUBLE_COUNTED_CODES else (ADAPTER,))
)
"""Every ``(code, source)`` pair of ``structured_error_total``."""


def _matrix(rows: int, cols: int, cells: list[tuple[int, int]]) -> NDArray[np.int64]:
    m = np.zeros((rows, cols), dtype=np.int64)
    for r, c in cells:
        m[r, c] = 1
    return m


K = len(CLASSES)
IS_EXECUTION: NDArray[np.bool_] = np.array([c.is_execution for c in CLASSES])
BUILDS_MIME: NDArray[np.bool_] = np.array([c.builds_mime for c in CLASSES])
EXEC_STATUS_INDEX: NDArray[np.int64] = np.array([0 if c.exec_status == "ok" else 1 for c in CLASSES])
"""0 for ``status="ok"``, 1 for ``status="error"``; meaningless for early guards."""
REASON_MATRIX = _matrix(
    K, len(ERROR_REASONS), [(i, ERROR_REASONS.index(c.reason)) for i, c in enumerate(CLASSES) if c.reason]
)
"""class counts @ REASON_MATRIX = ``action_error_total`` increments by reason."""
STRUCTURED_MATRIX = _matrix(
    K,
    len(STRUCTURED_SERIES),
    [(i, STRUCTURED_SERIES.index((c.code, s))) for i, c in enumerate(CLASSES) if c.code for s in c.sources],
)
"""class counts @ STRUCTURED_MATRIX = ``structured_error_total`` increments by (code, source)."""
EXEC_MATRIX = _matrix(K, 2, [(i, int(EXEC_STATUS_INDEX[i])) for i, c in enumerate(CLASSES) if c.is_execution])
"""class counts @ EXEC_MATRIX = ``action_exec_total`` increments by status (ok, error)."""

SANITIZATION_CHANGE_TYPES = ("tag_removed", "attr_removed", "script_blocked", "style_sanitized")
OAUTH_EVENTS = ("refresh_start", "refresh_ok", "refresh_failed", "refresh_locked")
INLINE_RESULTS = ("matched", "orphan_cid")
ATTACHMENT_RESULTS = ("accepted", "rejected")
