"""Every state a timeline can produce, checked before the run starts.

Each overlay is valid alone, but overlays compose: a validation spike with a share of
0.7 and a rate-limit storm with 0.5, overlapping, ask for error probabilities adding up
to 1.2; a magnitude of 3 on ``oauth-refresh-failures`` extrapolates a failure share of
1.5. Applied at run time, such a state fails the outcome model's own checks hours into
the run, with no summary. So the plan walks the timeline first.

Where it looks: the state changes only with the overlays' intensities, which are
piecewise linear in time (trapezoids), with breaks at each overlay's start, the end of
its ramp in, the start of its ramp out and its end. Between two breaks every intensity
is linear, and each scenario moves its parameters monotonically with its intensity, so
one overlay alone is at its extreme at a break; two acting on the same parameter (an
error ratio topped up over another overlay's errors) can peak between breaks, so five
evenly spaced points of every stretch are checked too. At each point the state is built
exactly as the engine builds it and validated with the profile's own rules
(:data:`MODEL_RULES`): probabilities in [0, 1] adding up to at most 1, quantiles in
order, every number finite.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence

from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from loadsim.model.controller import ControllerParams
from loadsim.model.params import ModelParams
from loadsim.overlays.state import RunState
from loadsim.overlays.timeline import Overlay, Timeline

MODEL_RULES: TypeAdapter[ModelParams] = TypeAdapter(ModelParams)
"""The outcome model's parameters validated as a profile's ``[model]`` is."""
CONTROLLER_RULES: TypeAdapter[ControllerParams] = TypeAdapter(ControllerParams)
POINTS_BETWEEN = 5
"""Points checked inside each stretch between two breaks (besides the breaks)."""


def state_problem(state: RunState) -> str | None:
    """Why ``state`` cannot be sampled (None when it can): the profile's rules, applied to what overlays made."""
    for name, rules, value in (
        ("model", MODEL_RULES, state.model),
        ("controller", CONTROLLER_RULES, state.controller),
    ):
        try:
            rules.validate_python(dataclasses.asdict(value))
        except ValidationError as e:
            err = e.errors(include_url=False)[0]
            where = ".".join(str(part) for part in (name, *err["loc"]))
            return f"{where}: {_message(err)}"
    return None


_RELATIONS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _message(err: ErrorDetails) -> str:
    """One pydantic error in the profile's words (``must be <= 1, got 1.5``)."""
    kind, given = err["type"], err.get("input")
    if kind == "value_error":
        return err["msg"].removeprefix("Value error, ")
    if kind in _RELATIONS:
        bound = next(iter((err.get("ctx") or {}).values()), "")
        return f"must be {_RELATIONS[kind]} {bound:g}, got {given:g}" if isinstance(given, float) else err["msg"]
    return f"{err['msg'][:1].lower()}{err['msg'][1:]}, got {given!r}"


def breaks(overlays: Sequence[Overlay], duration: float) -> list[float]:
    """Every run time at which some overlay's intensity changes slope, within ``[0, duration]``."""
    points = {0.0, duration}
    for ov in overlays:
        for t in (ov.start, ov.start + ov.ramp_in, ov.end - ov.ramp_out, ov.end):
            if 0.0 <= t <= duration:
                points.add(t)
    return sorted(points)


def first_problem(
    timeline: Timeline, base: RunState, rate_at: Callable[[float], float], duration: float
) -> tuple[float, list[str], str] | None:
    """The first moment whose state is invalid: ``(t, overlays acting, why)``, or None when every state is fine."""
    if not timeline:
        return None
    edges = breaks(timeline.overlays, duration)
    for a, b in itertools.pairwise(edges):
        width = b - a
        # The stretch is [a, b): the left end itself, points inside, and just before b.
        times = [a + width * k / (POINTS_BETWEEN + 1) for k in range(POINTS_BETWEEN + 1)]
        times.append(b - min(width * 1e-6, 1e-3))
        for t in times:
            state = dataclasses.replace(base, rate=rate_at(t))
            try:
                state, active = timeline.state_at(state, t)
            except ValueError as e:
                return t, [a.overlay.name for a in timeline.active(t)], str(e)
            if not active:
                continue
            why = state_problem(state)
            if why is not None:
                return t, [a.overlay.name for a in active], why
    return None
