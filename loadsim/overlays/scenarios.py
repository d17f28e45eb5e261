"""The scenario catalogue: the seed's seven and the ones its next drills need.

Each scenario says what it changes and which of the relay's alerts it is meant
to fire, which it may also fire as a genuine consequence (the relay's rules are
not independent: every structured validation error is also in
``action_error_total``, and the relay's latency includes the MIME build), and,
by omission, which it must not fire. ``loadsim verify`` holds them to it.

Scenarios are realistic rather than constant: an error scenario adds a mix of
5xx, 4xx, 429 and timeouts to the healthy background; a latency scenario moves
the whole lognormal; a MIME scenario makes attachments heavier and lets the
build time follow. ``x`` is the overlay's intensity (0 to 1, ramping in and out);
options are per overlay, from the profile or the command line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from loadsim.overlays.state import RunState

Apply = Callable[[RunState, float, Mapping[str, Any]], RunState]

# The relay's alert names, as in its rule files.
ERR_WARN = "GmailSendHighErrorRateWarning"
ERR_CRIT = "GmailSendHighErrorRateCritical"
LAT_WARN = "GmailSendHighLatencyWarning"
LAT_CRIT = "GmailSendHighLatencyCritical"
STALLED = "RolloutControllerStalled"
FAILING = "RolloutControllerFailing"
VALIDATION = "GmailValidationErrorSpike"
MIME = "MimeBuilderSlowPerformance"
SANITIZATION = "HighSanitizationActivity"
MISSING = "GmailMetricsMissing"
FAST_BURN = "GmailSendErrorBudgetFastBurn"
SLOW_BURN = "GmailSendErrorBudgetSlowBurn"


@dataclass(frozen=True, slots=True)
class Limit:
    """What one scenario option accepts: a finite number in ``[low, high]``, or one of ``choices``.

    Checked before a run starts (profile, ``--overlay``, the drill, fake-gmail's control API),
    so an option that would break the outcome model (a share of 5, a latency of 0, a mode
    nobody handles) is refused with its name instead of failing hours later.
    """

    low: float = 0.0
    high: float = 1.0
    above_low: bool = False
    """``low`` itself is refused (a latency of 0 s has no logarithm)."""
    choices: tuple[str, ...] = ()

    def problem(self, value: object) -> str | None:
        """Why ``value`` is refused (None when it is fine)."""
        if self.choices:
            if value in self.choices:
                return None
            return f"expected one of {', '.join(map(repr, self.choices))}, got {value!r}"
        low = f"> {self.low:g}" if self.above_low else f">= {self.low:g}"
        expected = f"a number {low} and <= {self.high:g}"
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return f"expected {expected}, got {value!r}"
        if value < self.low or (self.above_low and value == self.low) or value > self.high:
            return f"expected {expected}, got {value!r}"
        return None


SHARE = Limit()
"""A probability (0 to 1)."""
LATENCY = Limit(0.0, 86_400.0, above_low=True)
"""Seconds, above 0 and at most a day."""
BYTES = Limit(1.0, 25e6)
"""An attachment size in bytes, within the relay's 25 MB per attachment."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """One named fault: what it changes and what the relay's alerts should do."""

    name: str
    summary: str
    apply: Apply
    fires: tuple[str, ...]
    """Alerts this scenario is meant to fire (with the production rules, given 15+ minutes)."""
    may_fire: tuple[str, ...] = ()
    """Alerts it may also fire, and why (a consequence the relay's rules really have)."""
    why_also: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Option names with their defaults; anything else is refused."""
    from_seed: bool = False
    limits: Mapping[str, Limit] = field(default_factory=dict)
    """What each option accepts (:data:`SHARE` when not named)."""

    def option_problems(self, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        """``(option, why)`` for every option that is unknown or out of its limits."""
        allowed = ", ".join(f"{k} (default {v!r})" for k, v in self.options.items()) or "none"
        problems = []
        for key, value in options.items():
            if key not in self.options:
                problems.append((key, f"unknown option for {self.name}; allowed: {allowed}"))
                continue
            why = self.limits.get(key, SHARE).problem(value)
            if why is not None:
                problems.append((key, why))
        return problems


def _lerp(a: float, b: float, x: float) -> float:
    return a + (b - a) * x


def _log_lerp(a: float, b: float, x: float) -> float:
    return math.exp(_lerp(math.log(a), math.log(b), x))


def _add_errors(state: RunState, extra: Mapping[str, float]) -> RunState:
    errors = dict(state.model.errors)
    for name, p in extra.items():
        errors[name] = errors.get(name, 0.0) + p
    return replace(state, model=replace(state.model, errors=errors))


def _gmail_error_ratio(state: RunState, x: float, o: Mapping[str, Any]) -> RunState:
    """Raise the error ratio of executions to ``ratio`` with a realistic Gmail-side mix."""
    base = state.model.error_ratio()
    extra = max(float(o["ratio"]) - base, 0.0) * x
    mix = {"gmail_5xx": 0.5, "gmail_4xx": 0.2, "gmail_429": 0.1, "gmail_timeout": 0.1, "gmail_network_error": 0.1}
    return _add_errors(state, {k: extra * share for k, share in mix.items()})


def _latency(state: RunState, x: float, o: Mapping[str, Any]) -> RunState:
    lat = state.model.latency
    p50 = _log_lerp(lat.p50, float(o["p50"]), x)
    p95 = _log_lerp(lat.p95, float(o["p95"]), x)
    return replace(state, model=replace(state.model, latency=replace(lat, p50=p50, p95=max(p95, p50 * 1.01))))


def _controller_stalled(state: RunState, x: float, o: Mapping[str, Any]) -> RunState:
    if x <= 0:
        return state
    mode = o["mode"]
    if mode not in ("frozen", "absent"):
        msg = f"mode must be 'frozen' or 'absent', got {mode!r}"
        raise ValueError(msg)
    return replace(state, controller=replace(state.controller, running=False), controller_visible=mode == "frozen")


VALIDATION_MIX = {
    "validation_error_attachment_too_large": 0.3,
    "validation_error_blocked_mime_type": 0.2,
    "validation_error_missing_inline_image": 0.1,
    "validation_error_cid_not_referenced": 0.1,
    "validation_error_total_size_exceeded": 0.1,
    "validation_error_invalid_attachment_data": 0.1,
    "validation_error_invalid_inline_data": 0.05,
    "validation_error_mime_build": 0.05,
}


def _controller_failing(state: RunState, x: float, o: Mapping[str, Any]) -> RunState:
    share = _lerp(state.controller.failure_probability, float(o["share"]), x)
    return replace(state, controller=replace(state.controller, failure_probability=share))


def _validation_spike(state: RunState, x: float, o: Mapping[str, Any]) -> RunState:
    share = float(o["share"]) * x
    return _add_errors(state, {k: share * w for k, w in VALIDATION_MIX.items()})


def _mime_slow(state: RunState, x: float, o: Mapping[str, Any]) -> RunState:
    att = state.model.attachments
    heavier = replace(
        att,
        probability=_lerp(att.probability, float(o["attachment_probability"]), x),
        extra_mean=_lerp(att.extra_mean, float(o["extra_attachments"]), x),
        size_p50_bytes=_log_lerp(att.size_p50_bytes, float(o["size_p50_bytes"]), x),
        size_p95_bytes=_log_lerp(att.size_p95_bytes, float(o["size_p95_bytes"]), x),
    )
    return replace(state, model=replace(state.model, attachments=heavier))


def _sanitization_spike(state: RunState, x: float, o: Mapping[str, Any]) -> RunState:
    # A hostile-input burst: `per_second` more changes per second on top of the background
    # (at 500 sends/s the healthy background alone is ~800/s, so a burst must add, not
    # top up), spread like real hostile HTML (mostly tags and attributes).
    san = state.model.sanitization
    rate = max(state.rate, 1e-9)
    extra_per_send = float(o["per_second"]) / rate * x
    spread = (0.35, 0.35, 0.15, 0.15)
    means = [m + extra_per_send * s for m, s in zip(san.means(), spread, strict=True)]
    return replace(
        state, model=replace(state.model, sanitization=replace(san, **dict(zip(_SAN_FIELDS, means, strict=True))))
    )


_SAN_FIELDS = ("tag_removed", "attr_removed", "script_blocked", "style_sanitized")


def _metrics_missing(state: RunState, x: float, _o: Mapping[str, Any]) -> RunState:
    return replace(state, exposition_up=False) if x > 0 else state


def _oauth_failures(state: RunState, x: float, o: Mapping[str, Any]) -> RunState:
    # Refreshes fail more often; a failed refresh leaves the send without a token, which the
    # relay counts as an oauth_token_missing early guard.
    oauth = state.model.oauth
    refresh = _lerp(oauth.refresh, float(o["refresh"]), x)
    failure = _lerp(oauth.failure, float(o["failure"]), x)
    missing = refresh * (1 - oauth.locked) * failure
    state = replace(state, model=replace(state.model, oauth=replace(oauth, refresh=refresh, failure=failure)))
    return _add_errors(state, {"oauth_token_missing": missing})


def _rate_limit_storm(state: RunState, x: float, o: Mapping[str, Any]) -> RunState:
    return _add_errors(state, {"gmail_429": float(o["share"]) * x})


def _traffic_drop(state: RunState, x: float, o: Mapping[str, Any]) -> RunState:
    # Down to `rate` sends/s whatever the schedule says (never up).
    factor = min(float(o["rate"]) / state.rate, 1.0) if state.rate > 0 else 1.0
    return replace(state, arrival_scale=state.arrival_scale * _lerp(1.0, factor, x))


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "error-rate-warn",
            "Gmail-side error ratio of executions raised to 2% (5xx, 4xx, 429, timeouts, network errors)",
            _gmail_error_ratio,
            fires=(ERR_WARN,),
            may_fire=(FAST_BURN, SLOW_BURN),
            why_also="the v2 error-budget burn alerts use the same 1% threshold over 1h and 6h windows",
            options={"ratio": 0.02},
            from_seed=True,
        ),
        Scenario(
            "error-rate-crit",
            "Gmail-side error ratio of executions raised to 6%",
            _gmail_error_ratio,
            fires=(ERR_CRIT, ERR_WARN),
            may_fire=(FAST_BURN, SLOW_BURN),
            why_also="the burn alerts share the error ratio; the warning fires and Alertmanager inhibits it",
            options={"ratio": 0.06},
            from_seed=True,
        ),
        Scenario(
            "latency-crit",
            "Gmail call latency p50 1.8 s, p95 3.6 s: the relay's p95 reads inside (2.5, 5]",
            _latency,
            fires=(LAT_CRIT, LAT_WARN),
            why_also="a p95 above 2 s is above 0.5 s too; Alertmanager inhibits the warning",
            options={"p50": 1.8, "p95": 3.6},
            from_seed=True,
            limits={"p50": LATENCY, "p95": LATENCY},
        ),
        Scenario(
            "latency-warn",
            "Gmail call latency p50 0.45 s, p95 0.85 s: the relay's p95 reads inside (0.5, 1]",
            _latency,
            fires=(LAT_WARN,),
            options={"p50": 0.45, "p95": 0.85},
            limits={"p50": LATENCY, "p95": LATENCY},
        ),
        Scenario(
            "controller-stalled",
            "The rollout controller's heartbeat stops; mode=frozen keeps its series (a Pushgateway), "
            "mode=absent removes them",
            _controller_stalled,
            fires=(STALLED,),
            options={"mode": "absent"},
            from_seed=True,
            limits={"mode": Limit(choices=("absent", "frozen"))},
        ),
        Scenario(
            "controller-failing",
            "Rollout controller runs fail (prom_unreachable, redis_error) instead of completing",
            _controller_failing,
            fires=(FAILING,),
            options={"share": 1.0},
        ),
        Scenario(
            "validation-spike",
            "15% of sends fail validation with the relay's real structured codes",
            _validation_spike,
            fires=(VALIDATION,),
            may_fire=(ERR_WARN, ERR_CRIT, FAST_BURN, SLOW_BURN),
            why_also="the relay counts every structured code in action_error_total, so 15% is also a 15% error ratio",
            options={"share": 0.15},
            from_seed=True,
        ),
        Scenario(
            "mime-slow",
            "Heavier attachments (70% of sends, 4 on average, 3 MB median): MIME build p95 above 0.5 s",
            _mime_slow,
            fires=(MIME,),
            may_fire=(LAT_WARN,),
            why_also="the relay's send latency includes the MIME build, so its p95 rises past 0.5 s too",
            options={
                "attachment_probability": 0.7,
                "extra_attachments": 3.0,
                "size_p50_bytes": 3e6,
                "size_p95_bytes": 15e6,
            },
            from_seed=True,
            limits={"extra_attachments": Limit(0.0, 9.0), "size_p50_bytes": BYTES, "size_p95_bytes": BYTES},
        ),
        Scenario(
            "sanitization-spike",
            "A hostile-HTML burst: 80 more sanitization changes per second across change types",
            _sanitization_spike,
            fires=(SANITIZATION,),
            options={"per_second": 80.0},
            from_seed=True,
            limits={"per_second": Limit(0.0, 1e6)},
        ),
        Scenario(
            "metrics-missing",
            "The metrics endpoint stops answering (and pushes stop): every relay series goes absent",
            _metrics_missing,
            fires=(MISSING,),
            may_fire=(STALLED,),
            why_also="the controller's series vanish with the rest",
        ),
        Scenario(
            "oauth-refresh-failures",
            "Token refreshes fail (5% of sends refresh, half of those fail): well over the controller's "
            "5 failures in 15 minutes, and each failure is an oauth_token_missing error",
            _oauth_failures,
            fires=(),
            may_fire=(ERR_WARN, ERR_CRIT, FAST_BURN, SLOW_BURN),
            why_also="no relay alert watches refresh failures; the missing-token errors raise the error ratio",
            options={"refresh": 0.05, "failure": 0.5},
        ),
        Scenario(
            "rate-limit-storm",
            "A burst of Gmail 429s on 8% of sends",
            _rate_limit_storm,
            fires=(ERR_CRIT, ERR_WARN),
            may_fire=(FAST_BURN, SLOW_BURN),
            why_also="429s are gmail_4xx errors: the error-ratio and burn alerts see them",
            options={"share": 0.08},
        ),
        Scenario(
            "traffic-drop",
            "Traffic falls to 0.05 sends/s: below 0.1 sends/s the relay's error alerts cannot fire",
            _traffic_drop,
            fires=(),
            options={"rate": 0.05},
            limits={"rate": Limit(0.0, 1e8)},
        ),
    )
}

ALL_ALERTS = (
    ERR_WARN,
    ERR_CRIT,
    LAT_WARN,
    LAT_CRIT,
    STALLED,
    FAILING,
    VALIDATION,
    MIME,
    SANITIZATION,
    MISSING,
    FAST_BURN,
    SLOW_BURN,
)
