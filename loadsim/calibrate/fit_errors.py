"""The error taxonomy, OAuth events, sanitization changes, inline images and the controller's cadence.

All of these are counts of independent events, so each parameter is a ratio of two
counts: a probability per send (binomial standard error ``sqrt(p(1 - p) / n)``) or a
Poisson mean per built send (standard error ``sqrt(count) / n``). A probability whose
count is zero is written as 0 with its 95% upper bound, ``3 / n`` (the rule of three).

What the relay's labels cannot tell apart is said, not guessed: ``gmail_429`` and
``gmail_4xx`` share the reason ``gmail_4xx`` and are split in the model's default ratio
(1 to 2); timeouts the fitted latency tail explains are taken off the timeout class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from loadsim import contract as c
from loadsim.calibrate.estimate import Estimate, held
from loadsim.calibrate.read import Window
from loadsim.model import catalog
from loadsim.model.controller import ControllerParams
from loadsim.model.params import (
    InlineParams,
    OAuthParams,
    SanitizationParams,
    default_error_probabilities,
)


@dataclass(frozen=True)
class CountFit:
    """The count-based parameters of a profile."""

    errors: dict[str, float]
    oauth: OAuthParams
    sanitization: SanitizationParams
    inline: InlineParams
    controller: ControllerParams
    estimates: list[Estimate]
    warnings: list[str]
    """Identities of the relay's counters that do not hold in the window."""


def _probability(key: str, count: float, n: float, how: str) -> Estimate:
    p = count / n
    if count <= 0:
        return Estimate(key, 0.0, 3.0 / n, "", f"{how}; none seen (the error is the 95% upper bound)")
    return Estimate(key, p, math.sqrt(p * (1 - p) / n), "", how)


def _mean(key: str, count: float, n: float, how: str) -> Estimate:
    return Estimate(key, count / n, math.sqrt(max(count, 0.0)) / n, "", how)


def errors(window: Window, converted_timeouts: float) -> tuple[dict[str, float], list[Estimate]]:
    """Probability per send of each outcome class, from ``action_error_total`` by reason."""
    n = window.sends
    defaults = default_error_probabilities()
    counts = dict(window.errors)
    counts["gmail_timeout"] = max(counts["gmail_timeout"] - converted_timeouts, 0.0)
    estimates: list[Estimate] = []
    probabilities: dict[str, float] = {}
    for cls in catalog.CLASSES:
        if cls.name == "ok":
            continue
        key = f"model.errors.{cls.name}"
        if cls.reason == "gmail_4xx":
            share = defaults[cls.name] / (defaults["gmail_429"] + defaults["gmail_4xx"])
            e = _probability(
                key, counts["gmail_4xx"] * share, n, f"reason gmail_4xx x {share:.3g} (429 and 4xx share it)"
            )
        else:
            how = "reason count / sends"
            if cls.name == "gmail_timeout" and converted_timeouts > 0:
                how += f", less {converted_timeouts:.1f} calls the tail takes past 30 s"
            e = _probability(key, counts[cls.reason or ""], n, how)
        estimates.append(e)
        probabilities[cls.name] = e.value
    return probabilities, estimates


def counters(window: Window) -> tuple[OAuthParams, SanitizationParams, InlineParams, list[Estimate]]:
    """OAuth refreshes per execution, sanitization changes and inline references per built send."""
    out: list[Estimate] = []
    oauth = OAuthParams()
    if window.oauth is None:
        why = f"no {c.OAUTH_EVENTS} series in the window"
        out += [held(f"model.oauth.{k}", getattr(oauth, k), "", why) for k in ("refresh", "locked", "failure")]
    else:
        ev = window.oauth
        started, locked, failed = (ev.get(k, 0.0) for k in ("refresh_start", "refresh_locked", "refresh_failed"))
        attempts = started + locked
        out.append(_probability("model.oauth.refresh", attempts, window.executions, "refresh attempts / executions"))
        if attempts > 0:
            out.append(_probability("model.oauth.locked", locked, attempts, "locked / refresh attempts"))
        else:
            out.append(held("model.oauth.locked", oauth.locked, "", "no refresh attempts in the window"))
        if started > 0:
            out.append(_probability("model.oauth.failure", failed, started, "failed / started refreshes"))
        else:
            out.append(held("model.oauth.failure", oauth.failure, "", "no refresh started in the window"))
    values = {e.key.removeprefix("model.oauth."): e.value for e in out}
    oauth = OAuthParams(refresh=values["refresh"], locked=values["locked"], failure=values["failure"])
    built = window.built
    sanitization = SanitizationParams()
    for family, names, current in (
        (window.sanitization, catalog.SANITIZATION_CHANGE_TYPES, sanitization),
        (window.inline, catalog.INLINE_RESULTS, InlineParams()),
    ):
        section = "sanitization" if names is catalog.SANITIZATION_CHANGE_TYPES else "inline"
        for name in names:
            key = f"model.{section}.{name}"
            if family is None:
                out.append(held(key, getattr(current, name), "", "the family is absent in the window"))
            else:
                out.append(_mean(key, family.get(name, 0.0), built, "count / built sends (Poisson)"))
    values = {e.key: e.value for e in out}
    sanitization = SanitizationParams(
        **{k: values[f"model.sanitization.{k}"] for k in catalog.SANITIZATION_CHANGE_TYPES}
    )
    inline = InlineParams(**{k: values[f"model.inline.{k}"] for k in catalog.INLINE_RESULTS})
    return oauth, sanitization, inline, out


def controller(window: Window) -> tuple[ControllerParams, list[Estimate]]:
    """The heartbeat's interval, failure share, result and percent from ``rollout_controller_*``."""
    ref = ControllerParams()
    runs = window.controller_runs
    total = sum(runs.values()) if runs else 0.0
    span = window.end - window.start
    if not runs or total < 2:
        why = f"{c.CONTROLLER_RUNS} does not count runs in the window (absent, or a push that replaces its group)"
        return ref, [
            held("controller.interval", ref.interval, "s", why),
            held("controller.failure_probability", ref.failure_probability, "", why),
        ]
    interval = span / total
    failed = total - runs.get("ok", 0.0)
    changes = window.controller_changes or {}
    # The result most runs pushed (heartbeat mode pushes one result every run).
    result = max(c.CONTROLLER_RESULTS, key=lambda r: (changes.get(r, 0.0), r == ref.result))
    percent = round(window.controller_percent or 0.0)
    params = ControllerParams(
        interval=interval,
        failure_probability=failed / total,
        result=result,  # type: ignore[arg-type]
        percent=max(0, min(100, percent)),
    )
    return params, [
        Estimate("controller.interval", interval, interval / total, "s", "window / runs (± one run)"),
        _probability("controller.failure_probability", failed, total, "failed runs / runs"),
        Estimate("controller.percent", float(params.percent), None, "%", "the percent pushed last"),
    ]


def checks(window: Window) -> list[str]:
    """The relay's counting identities, each broken one as a warning (a scrape or label problem, not noise).

    Every structured failure counts once under its code in ``structured_error_total`` and
    once as its reason in ``action_error_total``; every executed failure counts as an
    ``error`` execution. A window edge can split a pair across a scrape, so a gap under
    1% (or under 5 sends) passes.
    """
    pairs = [
        (f"{c.STRUCTURED_ERROR}{{code={code},source={src}}}", window.structured[(code, src)],
         f"{c.ACTION_ERROR}{{reason={code}}}", window.errors[code])
        for code, src in catalog.STRUCTURED_SERIES
    ]  # fmt: skip
    executed = sum(window.errors[r] for r in catalog.GMAIL_REASONS + catalog.STRUCTURED_CODES)
    error_label = f'{c.ACTION_EXEC}{{status="error"}}'
    pairs.append((error_label, window.exec_by_status.get("error", 0.0), "the executed reasons", executed))
    return [
        f"{a} is {x:,.0f} but {b} is {y:,.0f}: the relay counts these sends in both"
        for a, x, b, y in pairs
        if abs(x - y) > max(5.0, 0.01 * max(x, y))
    ]


def fit(window: Window, converted_timeouts: float) -> CountFit:
    """Every count-based parameter."""
    probabilities, estimates = errors(window, converted_timeouts)
    oauth, sanitization, inline, more = counters(window)
    params, cadence = controller(window)
    return CountFit(probabilities, oauth, sanitization, inline, params, estimates + more + cadence, checks(window))
