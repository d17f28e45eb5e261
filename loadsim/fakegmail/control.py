"""The control API: start and stop fault scenarios on a running fake Gmail.

::

    GET    /control/scenarios            every scenario, and whether it changes what Gmail answers
    POST   /control/overlays             {"scenario": "latency-crit", "duration": "15m", "options": {"p50": 2.0}}
    GET    /control/overlays             the overlays in force and the Gmail-side figures they give
    DELETE /control/overlays/{scenario}  stop it now

Overlays are the simulator's own scenarios (:mod:`loadsim.overlays.scenarios`) on a
live :class:`~loadsim.overlays.timeline.Timeline` whose time is seconds since the
server started, on the server's :class:`~loadsim.clock.Clock`: POST calls
``start_now`` (and, when a duration is given, sets a timer on that clock that calls
``stop_now``; without one the overlay runs until deleted), DELETE calls
``stop_now``. Each change recomputes the Gmail-side model once; requests in flight
keep the outcome they drew. ``magnitude`` (0 to 1, default 1) scales the scenario
as a profile's overlay does.

``duration`` is a duration string (``"15m"``, ``"250ms"``), a number of seconds
(``900``, ``0.25``) or ``null`` (until deleted). A client that ends its overlays
itself, as the HTTP driver does (``{"scenario": name, "duration": seconds, "options":
{...}, "magnitude": x}`` at the start, DELETE at the end), may find the timer got
there first: that DELETE is answered 404 saying the overlay already expired, and
can be taken as done.

Only scenarios that change what Gmail answers are accepted (``error-rate-*``,
``latency-*``, ``rate-limit-storm``). The others act inside the relay or the
simulator (validation, MIME, sanitization, OAuth, the controller, metrics, traffic):
starting them here would silently do nothing, so they are refused with the list of
those that work. A scenario already running is refused with 409 (stop it first), so
DELETE by name is never ambiguous.

Bad input is answered 400 with every problem at once, each naming its key::

    {"error": {"code": 400, "message": "duration: expected a duration such as 30s, ...",
               "problems": [{"key": "duration", "message": "expected a duration such as 30s, ..."}]}}
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from loadsim.clock import Clock, Timer
from loadsim.fakegmail.outcomes import gmail_signature
from loadsim.model.controller import ControllerParams
from loadsim.model.params import ModelParams
from loadsim.overlays.combinations import state_problem
from loadsim.overlays.scenarios import SCENARIOS, Scenario
from loadsim.overlays.state import RunState
from loadsim.overlays.timeline import Active, Overlay, Timeline
from loadsim.units import parse_duration

REQUEST_KEYS = ("scenario", "duration", "options", "magnitude")


class ControlError(Exception):
    """Bad control input: every problem as ``(key, message)``, answered with ``status``."""

    def __init__(self, problems: list[tuple[str, str]], status: int = 400) -> None:
        self.problems = problems
        self.status = status
        super().__init__("; ".join(f"{k}: {m}" for k, m in problems))

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        key, message = self.problems[0]
        return {
            "error": {
                "code": self.status,
                "message": f"{key}: {message}",
                "problems": [{"key": k, "message": m} for k, m in self.problems],
            }
        }


@dataclass(frozen=True, slots=True)
class OverlayRequest:
    """A validated ``POST /control/overlays`` body."""

    scenario: Scenario
    duration: float | None
    """Seconds until it stops by itself; None runs until deleted."""
    options: Mapping[str, Any] = field(default_factory=dict)
    magnitude: float = 1.0


def gmail_scenarios(base: RunState) -> dict[str, Scenario]:
    """The scenarios that, at full strength with their defaults, change what Gmail answers."""
    before = gmail_signature(base.model)
    out = {}
    for name, s in SCENARIOS.items():
        try:
            after = s.apply(base, 1.0, s.options).model
        except ValueError:
            continue
        if gmail_signature(after) != before:
            out[name] = s
    return out


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_overlay_request(body: object, scenarios: Mapping[str, Scenario]) -> OverlayRequest:  # noqa: C901, PLR0912 - one check per key, all reported together
    """Validate a POST body; raises :class:`ControlError` listing every problem."""
    usable = ", ".join(scenarios)
    if not isinstance(body, dict):
        raise ControlError([("body", 'expected a JSON object such as {"scenario": "latency-crit", "duration": "15m"}')])
    problems = [
        (str(k), f"unknown key; expected one of: {', '.join(REQUEST_KEYS)}") for k in body if k not in REQUEST_KEYS
    ]
    scenario = None
    name = body.get("scenario")
    if name is None:
        problems.append(("scenario", f"required; expected one of: {usable}"))
    elif not isinstance(name, str) or name not in SCENARIOS:
        problems.append(("scenario", f"unknown scenario {name!r}; expected one of: {usable}"))
    elif name not in scenarios:
        problems.append(
            ("scenario", f"{name} changes nothing Gmail answers (it acts inside the relay); expected one of: {usable}")
        )
    else:
        scenario = scenarios[name]

    duration = None
    raw_duration = body.get("duration")
    if raw_duration is not None:
        if isinstance(raw_duration, str) or _is_number(raw_duration):
            try:
                duration = parse_duration(raw_duration)
                if duration == 0:
                    problems.append(("duration", "must be > 0; leave it out (or null) for an open-ended overlay"))
            except ValueError as e:
                problems.append(("duration", str(e)))
        else:
            problems.append(
                ("duration", f"expected a duration such as 15m or a number of seconds, got {raw_duration!r}")
            )

    magnitude = body.get("magnitude", 1.0)
    if not _is_number(magnitude) or not 0 < magnitude <= 1:
        problems.append(("magnitude", f"expected a number in (0, 1], got {magnitude!r}"))

    options = body.get("options", {})
    if not isinstance(options, dict):
        problems.append(("options", f"expected a JSON object of the scenario's options, got {options!r}"))
        options = {}
    elif scenario is not None:
        problems += _option_problems(scenario, options)
    if problems:
        raise ControlError(problems)
    assert scenario is not None
    return OverlayRequest(scenario, duration, dict(options), float(magnitude))


def _option_problems(scenario: Scenario, options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The scenario's own limits (the same a profile's overlay options are held to)."""
    return [(f"options.{key}", why) for key, why in scenario.option_problems(options)]


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


OnChange = Callable[[ModelParams, list[Active]], None]
"""Called with the parameters now in force and the overlays acting, after every change."""


class LiveOverlays:
    """Overlays started and stopped now, on a timeline whose time is ``clock``'s seconds since creation."""

    def __init__(self, base: ModelParams, on_change: OnChange, *, clock: Clock, log: Any = None) -> None:
        self.base = RunState(model=base, controller=ControllerParams())
        self.timeline = Timeline()
        self.scenarios = gmail_scenarios(self.base)
        self._on_change = on_change
        self._clock = clock
        self._t0 = clock.now()
        self._log = log
        self._timers: dict[str, tuple[Timer, float, float]] = {}
        """scenario -> (the timer that stops it, its duration, its end in timeline time)."""
        self._expired: dict[str, tuple[float, float]] = {}
        """scenario -> (when its timer stopped it, its duration), until it starts again."""

    def now(self) -> float:
        """Timeline time: seconds since creation."""
        return self._clock.now() - self._t0

    def active(self) -> list[Active]:
        """The overlays acting now."""
        return self.timeline.active(self.now())

    def start(self, request: OverlayRequest) -> Overlay:
        """Start an overlay now; raises :class:`ControlError` (409 when already running)."""
        t = self.now()
        name = request.scenario.name
        if any(a.overlay.name == name for a in self.timeline.active(t)):
            raise ControlError([("scenario", f"{name} is already active; DELETE /control/overlays/{name} first")], 409)
        options = {**request.scenario.options, **request.options}
        trial = Timeline(
            [*self.timeline.overlays, Overlay(request.scenario, t, math.inf, 0.0, 0.0, request.magnitude, options)]
        )
        try:
            state, _ = trial.state_at(self.base, t)
        except ValueError as e:
            raise ControlError([("options", f"{name} cannot apply with the overlays in force: {e}")]) from None
        why = state_problem(state)
        if why is not None:
            raise ControlError([("options", f"{name} cannot apply with the overlays in force: {why}")])
        overlay = self.timeline.start_now(request.scenario, t, request.options, request.magnitude)
        self._expired.pop(name, None)
        if request.duration is not None:
            timer = self._clock.call_later(request.duration, self._expire, name, request.duration)
            self._timers[name] = (timer, request.duration, t + request.duration)
        if self._log is not None:
            self._log.info("fakegmail.overlay.start", duration_seconds=request.duration, **_describe(overlay))
        self._changed(t)
        return overlay

    def stop(self, name: str) -> int:
        """Stop every open overlay of ``name`` now; returns how many."""
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer[0].cancel()
        t = self.now()
        stopped = self.timeline.stop_now(name, t)
        if stopped:
            if self._log is not None:
                self._log.info("fakegmail.overlay.end", scenario=name, run_seconds=round(t, 3))
            self._changed(t)
        return stopped

    def close(self) -> None:
        """Cancel the timers (the server is stopping)."""
        for timer, _, _ in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def describe(self) -> list[dict[str, Any]]:
        """The overlays acting now, for the control API."""
        t = self.now()
        out = []
        for a in self.timeline.active(t):
            timer = self._timers.get(a.overlay.name)
            out.append(
                {
                    **_describe(a.overlay),
                    "started_at": _iso(self._clock.wall() - (t - a.overlay.start)),
                    "running_seconds": round(t - a.overlay.start, 3),
                    "ends_in_seconds": None if timer is None else round(max(timer[2] - t, 0.0), 3),
                }
            )
        return out

    def expired(self, name: str) -> str | None:
        """How long ago ``name`` was stopped by its own duration, when that is why it is not active."""
        ended = self._expired.get(name)
        if ended is None:
            return None
        at, duration = ended
        return f"it expired {round(self.now() - at, 3):g} s ago, at the end of its {duration:g} s duration"

    def _expire(self, name: str, duration: float) -> None:
        self._timers.pop(name, None)
        if self.stop(name):
            self._expired[name] = (self.now(), duration)

    def _changed(self, t: float) -> None:
        state, active = self.timeline.state_at(self.base, t)
        self._on_change(state.model, active)


def _describe(overlay: Overlay) -> dict[str, Any]:
    return {"scenario": overlay.name, "magnitude": overlay.magnitude, "options": dict(overlay.options)}


class ControlRoutes:
    """The control API's handlers over one :class:`LiveOverlays`."""

    def __init__(self, overlays: LiveOverlays, figures: Callable[[], dict[str, Any]]) -> None:
        self.overlays = overlays
        self.figures = figures
        """The Gmail-side figures in force (probabilities, latency), shown after each change."""

    def add_to(self, app: web.Application) -> None:
        """Register the routes on ``app``."""
        app.router.add_get("/control/scenarios", self.list_scenarios)
        app.router.add_get("/control/overlays", self.list_overlays)
        app.router.add_post("/control/overlays", self.start)
        app.router.add_delete("/control/overlays/{scenario}", self.stop)

    async def list_scenarios(self, _request: web.Request) -> web.Response:
        usable = self.overlays.scenarios
        scenarios = [
            {"name": s.name, "summary": s.summary, "options": dict(s.options), "affects_gmail": s.name in usable}
            for s in SCENARIOS.values()
        ]
        return web.json_response({"scenarios": scenarios})

    async def list_overlays(self, _request: web.Request) -> web.Response:
        return web.json_response({"overlays": self.overlays.describe(), "gmail": self.figures()})

    async def start(self, request: web.Request) -> web.Response:
        try:
            try:
                body = json.loads(await request.read())
            except (ValueError, RecursionError) as e:  # RecursionError: nested deeper than the parser's stack
                raise ControlError([("body", f"not valid JSON: {str(e) or type(e).__name__}")]) from None
            overlay = self.overlays.start(parse_overlay_request(body, self.overlays.scenarios))
        except ControlError as e:
            return web.json_response(e.body(), status=e.status)
        described = next(d for d in self.overlays.describe() if d["scenario"] == overlay.name)
        return web.json_response({"overlay": described, "gmail": self.figures()}, status=201)

    async def stop(self, request: web.Request) -> web.Response:
        name = request.match_info["scenario"]
        if not self.overlays.stop(name):
            active = ", ".join(a.overlay.name for a in self.overlays.active()) or "none"
            expired = self.overlays.expired(name)
            why = "" if expired is None else f" ({expired})"
            e = ControlError([("scenario", f"{name!r} is not active{why}; active: {active}")], 404)
            return web.json_response(e.body(), status=404)
        return web.json_response({"stopped": name, "gmail": self.figures()})
