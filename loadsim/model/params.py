"""Parameters of the outcome model: frozen values, validated when read from a profile.

Overlays (fault scenarios) change a run's behaviour by deriving new parameters
from these with :func:`dataclasses.replace`; nothing ever writes a metric value
directly. The defaults describe a healthy relay with room to spare under every
alert threshold in the relay's rules (checked by ``tests/test_model_defaults.py``):
error ratio about 0.36% against 1%, latency p95 about 0.4 s against 0.5 s read
through the relay's buckets, MIME p95 far under 0.5 s, structured errors about
0.001 per send against 0.1/s, about 1.6 sanitization changes per send against 50/s.

The field annotations carry their units for profile validation (``Seconds``
accepts ``"160ms"``); in Python they are plain floats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, ClassVar

from annotated_types import Ge, Le
from pydantic import ConfigDict

from loadsim.model.catalog import CLASS_INDEX, CLASSES, Stage
from loadsim.units import NonNegative, Probability, Seconds

_STRICT = ConfigDict(extra="forbid")

# Upper bounds keep every draw finite: a Poisson mean times a window's sends stays far below
# numpy's limit (about 9.2e18), and lognormals built from two quantiles stay below float overflow.
Cost = Annotated[NonNegative, Le(3600)]
"""Seconds of MIME build per attachment or per megabyte (at most an hour)."""
Bytes = Annotated[NonNegative, Ge(1), Le(1e12)]
"""A size in bytes, from 1 byte to 1 TB."""
PerSend = Annotated[NonNegative, Le(1e9)]
"""A Poisson mean per send (inline references, sanitization changes)."""


@dataclass(frozen=True, slots=True)
class LatencyParams:
    """The Gmail API call latency and the failures' own latencies (seconds)."""

    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    p50: Seconds = 0.14
    p95: Seconds = 0.28
    tail_fraction: Probability = 0.004
    """Share of calls drawn from the heavy tail instead of the body."""
    tail_p50: Seconds = 1.2
    tail_p95: Seconds = 4.0
    timeout: Seconds = 30.0
    """The relay's client timeout: timed-out sends observe about this."""
    timeout_overhead: Seconds = 0.005
    """Mean extra time after the timeout fires before the relay observes it."""
    network_error_p50: Seconds = 0.05
    validation_p50: Seconds = 0.004
    """How long a send takes to fail in validation or the MIME builder."""

    def __post_init__(self) -> None:
        if self.p95 <= self.p50:
            msg = f"p95 must be greater than p50 ({self.p50:g}s), got {self.p95:g}s"
            raise ValueError(msg)
        if self.tail_p95 <= self.tail_p50:
            msg = f"tail_p95 must be greater than tail_p50 ({self.tail_p50:g}s), got {self.tail_p95:g}s"
            raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class MimeParams:
    """MIME build time: a lognormal base plus cost per attachment and per megabyte."""

    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    base_p50: Seconds = 0.008
    base_p95: Seconds = 0.02
    per_attachment: Cost = 0.006
    per_megabyte: Cost = 0.012

    def __post_init__(self) -> None:
        if self.base_p95 <= self.base_p50:
            msg = f"base_p95 must be greater than base_p50 ({self.base_p50:g}s), got {self.base_p95:g}s"
            raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class AttachmentParams:
    """How many attachments a send carries and how big they are."""

    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    probability: Probability = 0.3
    """Share of sends with at least one attachment."""
    extra_mean: Annotated[NonNegative, Le(100)] = 0.8
    """Mean number of attachments beyond the first (Poisson), capped at the relay's 10."""
    size_p50_bytes: Bytes = 150_000.0
    size_p95_bytes: Bytes = 2_000_000.0
    rejected_size_p50_bytes: Bytes = 30_000_000.0
    """Size of the attachments of sends rejected as too large."""

    def __post_init__(self) -> None:
        if self.size_p95_bytes <= self.size_p50_bytes:
            msg = (
                f"size_p95_bytes must be greater than size_p50_bytes ({self.size_p50_bytes:g}), "
                f"got {self.size_p95_bytes:g}"
            )
            raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class InlineParams:
    """Inline image references per built send (Poisson means)."""

    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    matched: PerSend = 0.4
    orphan_cid: PerSend = 0.002


@dataclass(frozen=True, slots=True)
class SanitizationParams:
    """HTML sanitization changes per built send, by ``change_type`` (Poisson means)."""

    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    tag_removed: PerSend = 0.5
    attr_removed: PerSend = 0.8
    script_blocked: PerSend = 0.02
    style_sanitized: PerSend = 0.3

    def means(self) -> tuple[float, float, float, float]:
        """In the order of ``catalog.SANITIZATION_CHANGE_TYPES``."""
        return (self.tag_removed, self.attr_removed, self.script_blocked, self.style_sanitized)


@dataclass(frozen=True, slots=True)
class OAuthParams:
    """Token refreshes on the send path."""

    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    refresh: Probability = 0.01
    """Share of sends (past the early guards) that refresh their token first."""
    locked: Probability = 0.05
    """Share of refresh attempts that find another worker holding the lock."""
    failure: Probability = 0.002
    """Share of started refreshes that fail."""


def default_error_probabilities() -> dict[str, float]:
    """The healthy error mix: about 0.36% of sends end in an error the relay counts."""
    return {
        "provider_disabled": 0.0,
        "rollout_gated": 0.0,
        "validation_error": 0.0004,
        "oauth_token_missing": 0.0002,
        "gmail_429": 0.0003,
        "gmail_4xx": 0.0006,
        "gmail_5xx": 0.0008,
        "gmail_timeout": 0.0002,
        "gmail_network_error": 0.0003,
        "validation_error_attachment_too_large": 0.0002,
        "validation_error_blocked_mime_type": 0.0001,
        "validation_error_missing_inline_image": 0.00005,
        "validation_error_cid_not_referenced": 0.00005,
        "validation_error_total_size_exceeded": 0.0001,
        "validation_error_invalid_attachment_data": 0.00005,
        "validation_error_invalid_inline_data": 0.00005,
        "validation_error_mime_build": 0.00005,
        "internal_only_recipient_blocked": 0.0001,
        "unknown_mime_error": 0.00002,
        "unknown_error": 0.00003,
    }


@dataclass(frozen=True, slots=True)
class ModelParams:
    """Everything the outcome model needs; one value per run, replaced by overlays."""

    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    latency: LatencyParams = field(default_factory=LatencyParams)
    mime: MimeParams = field(default_factory=MimeParams)
    attachments: AttachmentParams = field(default_factory=AttachmentParams)
    inline: InlineParams = field(default_factory=InlineParams)
    sanitization: SanitizationParams = field(default_factory=SanitizationParams)
    oauth: OAuthParams = field(default_factory=OAuthParams)
    errors: dict[str, Probability] = field(default_factory=default_error_probabilities)
    """Probability per send of each non-ok outcome; ``ok`` takes the rest.

    Keys given here override the healthy defaults one by one (set one to 0 to
    remove it), so a profile names only what it changes."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.errors) - set(CLASS_INDEX) | ({"ok"} & set(self.errors)))
        if unknown:
            names = ", ".join(c.name for c in CLASSES if c.name != "ok")
            msg = f"unknown outcome {', '.join(map(repr, unknown))}; expected one of: {names}"
            raise ValueError(msg)
        merged = {**default_error_probabilities(), **self.errors}
        object.__setattr__(self, "errors", merged)
        total = sum(merged.values())
        if total > 1.0:
            msg = f"error probabilities add up to {total:g}; they must add up to at most 1"
            raise ValueError(msg)

    def error_ratio(self) -> float:
        """What ``job:gmail_send_errors_rate:5m`` reads at 1 send/s and above."""
        errors = sum(self.errors.values())
        guards = sum(p for name, p in self.errors.items() if CLASSES[CLASS_INDEX[name]].stage is Stage.EARLY_GUARD)
        executions = 1.0 - guards
        return errors / executions if executions > 0 else float("inf")
