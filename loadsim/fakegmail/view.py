"""``loadsim fake-gmail``'s live view: what it answers, how fast, and which faults are on, for how long.

The same screens as ``loadsim run`` (:mod:`loadsim.sinks.live_view`): a block redrawn in
place below the log lines on a terminal, one plain line on a dumb or narrow one. The
figures come from the fake's own counters (its registry, read through the public
``collect()``) and its live overlays; the view redraws on the fake's clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from loadsim.fakegmail.server import FakeGmail
from loadsim.sinks.live_view import OverlayView, Screen, sparkline
from loadsim.units import format_duration


@dataclass(frozen=True, slots=True)
class FakeView:
    """What the fake-gmail view shows at one moment."""

    url: str
    uptime: float
    rate: float
    history: Sequence[float]
    answered: int
    by_code: Sequence[tuple[str, int]]
    quota_429: int
    in_flight: int
    overlays: Sequence[OverlayView]


def render_fake(v: FakeView) -> RenderableType:
    """The block."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True, min_width=9)
    grid.add_column(no_wrap=True, overflow="ellipsis")
    grid.add_row(
        Text("fake-gmail", style="bold cyan"), Text.assemble((v.url, "bold"), f"   up {format_duration(v.uptime)}")
    )
    grid.add_row("rate", Text.assemble(f"{v.rate:,.1f}/s answered  ", (sparkline(v.history), "cyan")))
    grid.add_row("answers", f"{v.answered:,}   " + "  ".join(f"{code} {n:,}" for code, n in v.by_code))
    grid.add_row("quota", f"{v.quota_429:,} 429s from the per-user quota   {v.in_flight:,} in flight")
    overlays = Text()
    for ov in v.overlays:
        left = "until stopped" if math.isinf(ov.left) else f"{format_duration(max(ov.left, 0.0))} left"
        overlays.append(ov.name, "bold magenta")
        overlays.append(f" {left}   ")
    grid.add_row("overlays", overlays if v.overlays else Text("none", style="dim"))
    return grid


def plain_fake(v: FakeView) -> str:
    """The same in one line."""
    parts = [f"fake-gmail {v.url}", f"{v.rate:.1f}/s", f"answers {v.answered:,}"]
    parts += [f"{code} {n:,}" for code, n in v.by_code]
    parts += [
        f"{ov.name} {'on' if math.isinf(ov.left) else format_duration(max(ov.left, 0.0)) + ' left'}"
        for ov in v.overlays
    ]
    return "  ".join(parts)


class FakeGmailView:
    """Reads a :class:`FakeGmail` and shows it; call :meth:`redraw` on an interval."""

    def __init__(self, fake: FakeGmail, screen: Screen[FakeView]) -> None:
        self.fake = fake
        self.screen = screen
        self._t0 = fake.clock.now()
        self._last = (self._t0, 0)
        self._history: deque[float] = deque(maxlen=48)

    def state(self) -> FakeView:
        """The figures now."""
        now = self.fake.clock.now()
        codes: dict[str, int] = {}
        quota = in_flight = 0
        for family in self.fake.metrics.registry.collect():
            for s in family.samples:
                if s.name == "fakegmail_requests_total":
                    codes[s.labels["code"]] = int(s.value)
                elif s.name == "fakegmail_quota_rejections_total":
                    quota = int(s.value)
                elif s.name == "fakegmail_requests_in_flight":
                    in_flight = int(s.value)
        answered = sum(codes.values())
        t0, n0 = self._last
        rate = (answered - n0) / (now - t0) if now > t0 else 0.0
        if now > t0:
            self._history.append(rate)
            self._last = (now, answered)
        overlays = self.fake.overlays
        t = overlays.now()
        ends = {d["scenario"]: d["ends_in_seconds"] for d in overlays.describe()}
        active = [
            OverlayView(a.overlay.name, math.inf if ends.get(a.overlay.name) is None else ends[a.overlay.name])
            for a in overlays.timeline.active(t)
        ]
        top = sorted(((c, n) for c, n in codes.items() if n), key=lambda kv: -kv[1])[:5]
        return FakeView(
            self.fake.url or "starting",
            now - self._t0,
            rate,
            tuple(self._history),
            answered,
            top,
            quota,
            in_flight,
            active,
        )

    def redraw(self) -> None:
        """Show the figures now."""
        self.screen.show(self.state())
