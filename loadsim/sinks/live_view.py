r"""The live view on a terminal: a block redrawn in place below the log lines, or one plain line.

Why rich: redrawing a multi-line block in place while log lines scroll above it takes
cursor movement, erasing, width-aware wrapping and colour detection (``NO_COLOR``, dumb
terminals, no terminal at all). rich's ``Live`` does exactly that: a line printed through
its console goes above the block and the block is redrawn below it, so a log line can
never land inside the view. Hand-written escape codes would have to re-learn each of
those cases; rich is well kept, typed, already installed with our import linter, and
gives the end-of-run table (:mod:`loadsim.sinks.summary_table`) for free.

The view knows nothing of engines or drivers: it renders a :class:`ViewState`, which
the runtime fills (:mod:`loadsim.runtime.watch`). A dumb terminal or a narrow one gets
:func:`plain_line` through a :class:`LineScreen` instead: one line rewritten with ``\r``,
cut to the width, and cleared before each log line so the two never run together.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TextIO, TypeVar

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from loadsim.logs import LogOutput, no_color
from loadsim.units import format_duration

S = TypeVar("S")
S_contra = TypeVar("S_contra", contravariant=True)
_SPARKS = "▁▂▃▄▅▆▇█"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LABEL = 9
"""Width of the label column."""
MIN_WIDTH = 72
"""Narrower than this, the block would wrap: the plain line is used instead."""


@dataclass(frozen=True, slots=True)
class OverlayView:
    """An overlay acting now."""

    name: str
    left: float
    """Run time until it ends (inf: open-ended)."""
    intensity: float = 1.0


@dataclass(frozen=True, slots=True)
class Drain:
    """The run is stopping: what is left in flight, and for how long it may finish."""

    in_flight: int
    grace_left: float
    why: str
    """``signal``, ``end`` (the schedule ran out) or ``threshold NAME``."""


@dataclass(frozen=True, slots=True)
class ViewState:
    """What the live view shows at one moment."""

    title: str
    elapsed: float
    duration: float
    noun: str = "sends"
    achieved: float = 0.0
    target: float = 0.0
    history: Sequence[float] = ()
    """Recent achieved rates, oldest first (the sparkline)."""
    started: int = 0
    dropped: int = 0
    in_flight: int = 0
    error_ratio: float = math.nan
    top_reasons: Sequence[tuple[str, int]] = ()
    latency: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    """p50, p95, p99 over the last minute of run time."""
    span: float = 60.0
    """Run time the error and latency figures cover (a virtual run moves minutes between two redraws)."""
    overlays: Sequence[OverlayView] = ()
    next_overlay: tuple[str, float] | None = None
    """The next overlay due: its name and the run time until it starts."""
    push: str | None = None
    """The Pushgateway's status (None: not pushing)."""
    push_ok: bool = True
    rollout: int | None = None
    drain: Drain | None = None
    failing: Sequence[str] = field(default_factory=tuple)
    """Thresholds an abort is waiting on, or that already fail."""


def sparkline(values: Sequence[float], width: int = 24) -> str:
    """The last ``width`` values as block characters, scaled from 0 to their maximum."""
    tail = [v for v in values[-width:] if math.isfinite(v)]
    top = max(tail, default=0.0)
    if top <= 0:
        return _SPARKS[0] * len(tail)
    return "".join(_SPARKS[min(int(v / top * (len(_SPARKS) - 1) + 0.5), len(_SPARKS) - 1)] for v in tail)


def _seconds(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"


def _span(seconds: float) -> str:
    return "last minute" if 55 <= seconds <= 65 else f"last {format_duration(seconds)}"


def _left(seconds: float) -> str:
    return "until stopped" if math.isinf(seconds) else f"{format_duration(max(seconds, 0.0))} left"


def _row(label: str | Text, content: str | Text) -> Text:
    """One line: a bold label in a fixed column, then its figures, cut (never wrapped) at the width."""
    head = label if isinstance(label, Text) else Text(label, style="bold")
    head.pad_right(LABEL - len(head.plain))
    line = Text.assemble(head, " ", content)
    line.no_wrap, line.overflow = True, "ellipsis"
    return line


def render_run(state: ViewState) -> RenderableType:
    """The block: one labelled line per concern, each short enough for 80 columns.

    Plain lines of :class:`~rich.text.Text` in a :class:`~rich.console.Group`, not a table:
    a table measures every cell at every redraw, which cost three times as much.
    """
    rows = []
    left = max(state.duration - state.elapsed, 0.0)
    rows.append(
        _row(
            Text("loadsim", style="bold cyan"),
            Text.assemble(
                (state.title, "bold"),
                f"   elapsed {format_duration(state.elapsed)}   left {format_duration(left)}",
            ),
        )
    )
    ratio = state.achieved / state.target if state.target > 0 else math.nan
    rate_style = "green" if math.isnan(ratio) or ratio >= 0.95 else "yellow"
    rows.append(
        _row(
            "rate",
            Text.assemble(
                (f"{state.achieved:,.1f}/s", rate_style),
                f" of {state.target:,.1f}/s target  ",
                (sparkline(state.history), "cyan"),
            ),
        )
    )
    rows.append(
        _row(
            state.noun,
            Text.assemble(
                f"{state.started:,} started   ",
                (f"{state.dropped:,} dropped", "red" if state.dropped else ""),
                f"   {state.in_flight:,} in flight",
            ),
        )
    )
    errors = Text("-" if math.isnan(state.error_ratio) else f"{state.error_ratio:.2%}")
    if not math.isnan(state.error_ratio) and state.error_ratio > 0:
        errors.stylize("red" if state.error_ratio >= 0.05 else "yellow")
    if state.top_reasons:
        errors.append("   " + "  ".join(f"{name} {n:,}" for name, n in state.top_reasons))
    rows.append(_row("errors", errors))
    p50, p95, p99 = state.latency
    quantiles = f"p50 {_seconds(p50)}   p95 {_seconds(p95)}   p99 {_seconds(p99)}"
    rows.append(_row("latency", f"{quantiles}   ({_span(state.span)})"))
    rows.append(_row("overlays", _overlays(state)))
    extras = Text()
    if state.push is not None:
        extras.append(f"push {state.push}", "green" if state.push_ok else "bold red")
    if state.rollout is not None:
        extras.append(("   " if extras else "") + f"rollout {state.rollout}%")
    if extras:
        rows.append(_row("status", extras))
    if state.failing:
        rows.append(_row("failing", Text("✗ " + "  ✗ ".join(state.failing), style="red")))
    if state.drain is not None:
        d = state.drain
        rows.append(
            _row(
                Text("stopping" if d.why != "end" else "finishing", style="bold yellow"),
                Text.assemble(
                    (f"draining {d.in_flight:,} in flight", "yellow"),
                    f"   grace left {format_duration(max(d.grace_left, 0.0))}   ",
                    _drain_hint(d),
                ),
            )
        )
    return Group(*rows)


def _drain_hint(d: Drain) -> Text:
    if d.why == "end":
        return Text("the schedule is done; Ctrl-C twice exits at once", style="dim")
    if d.why.startswith("threshold"):
        return Text.assemble((d.why, "red"), "   ", ("Ctrl-C exits at once", "bold"))
    return Text("Ctrl-C again exits at once", style="bold")


def _overlays(state: ViewState) -> Text:
    text = Text()
    for i, ov in enumerate(state.overlays):
        if i:
            text.append("   ")
        text.append(ov.name, "bold magenta")
        ramp = f" at {ov.intensity:.0%}" if ov.intensity < 0.999 else ""
        text.append(f" {_left(ov.left)}{ramp}")
    if state.next_overlay is not None:
        name, due = state.next_overlay
        text.append(("   " if state.overlays else "") + f"next {name} in {format_duration(max(due, 0.0))}", "dim")
    if not text:
        text.append("none", "dim")
    return text


def plain_line(state: ViewState) -> str:
    """The same figures in one line, for dumb or narrow terminals."""
    parts = [
        f"{format_duration(state.elapsed)}/{format_duration(state.duration)}",
        f"rate {state.achieved:.1f}/s of {state.target:.1f}/s",
        f"{state.noun} {state.started:,}",
        f"dropped {state.dropped:,}",
        f"in flight {state.in_flight:,}",
        "errors -" if math.isnan(state.error_ratio) else f"errors {state.error_ratio:.2%}",
        f"p95 {_seconds(state.latency[1])}",
    ]
    parts += [f"{ov.name} {_left(ov.left)}" for ov in state.overlays]
    if state.rollout is not None:
        parts.append(f"rollout {state.rollout}%")
    if state.push is not None and not state.push_ok:
        parts.append(f"push {state.push}")
    if state.drain is not None:
        d = state.drain
        parts = [
            (
                f"{'finishing' if d.why == 'end' else 'stopping'}: draining {d.in_flight:,} in flight, "
                f"grace left {format_duration(max(d.grace_left, 0.0))}"
            ),
            _drain_hint(d).plain,
        ]
    return "  ".join(parts)


class Screen(Protocol[S_contra]):
    """Where a view goes: log lines above, the view below."""

    def start(self) -> None:
        """Take over the terminal."""
        ...

    def show(self, state: S_contra) -> None:
        """Redraw the view."""
        ...

    def log(self, line: str) -> None:
        """Print a log line above the view."""
        ...

    def stop(self) -> None:
        """Leave the last view on screen and give the terminal back."""
        ...


class LiveScreen(Generic[S]):
    """The block, redrawn in place by rich's ``Live`` (no refresh thread: the run's loop redraws)."""

    def __init__(self, console: Console, render: Callable[[S], RenderableType]) -> None:
        self.console = console
        self.render = render
        self.live = Live(console=console, auto_refresh=False, transient=False)

    def start(self) -> None:
        self.live.start()
        # Keep the cursor: a second Ctrl-C leaves at once, with no chance to show it again.
        self.console.show_cursor(show=True)

    def show(self, state: S) -> None:
        self.live.update(self.render(state), refresh=True)

    def log(self, line: str) -> None:
        self.console.print(Text.from_ansi(line), highlight=False, markup=False, emoji=False)

    def stop(self) -> None:
        self.live.stop()


class LineScreen(Generic[S]):
    r"""One plain line rewritten with ``\r``; a log line clears it first and it comes back below."""

    def __init__(self, stream: TextIO, plain: Callable[[S], str], width: int) -> None:
        self.stream = stream
        self.plain = plain
        self.width = max(width - 1, 20)
        self._last = ""

    def start(self) -> None:
        return None

    def show(self, state: S) -> None:
        line = self.plain(state)[: self.width]
        self.stream.write("\r" + line + " " * max(len(self._last) - len(line), 0))
        self.stream.flush()
        self._last = line

    def log(self, line: str) -> None:
        self.stream.write("\r" + " " * len(self._last) + "\r" + _ANSI.sub("", line) + "\n" + self._last)
        self.stream.flush()

    def stop(self) -> None:
        if self._last:
            self.stream.write("\n")
            self.stream.flush()
        self._last = ""


def choose(mode: str, stream: TextIO, env: dict[str, str] | None = None) -> str:
    """``auto``: the live view on a terminal, the plain line on a dumb or narrow one, JSON elsewhere."""
    if mode != "auto":
        return mode
    isatty = getattr(stream, "isatty", None)
    if not (isatty and isatty()):
        return "json"
    env = dict(os.environ) if env is None else env
    if env.get("TERM", "") in ("dumb", "unknown"):
        return "line"
    try:
        width = os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        width = int(env.get("COLUMNS", "80") or 80)
    return "line" if width < MIN_WIDTH else "live"


def screen_for(mode: str, stream: TextIO, render: Callable[[Any], Any], plain: Callable[[Any], str]) -> Screen[Any]:
    """The screen of a view mode (``live`` or ``line``) on ``stream``."""
    console = Console(file=stream, force_terminal=True, no_color=no_color() or None, highlight=False)
    if mode == "live":
        return LiveScreen(console, render)
    return LineScreen(stream, plain, console.width)


@contextlib.contextmanager
def shown(screen: Screen[Any], logs: LogOutput | None) -> Iterator[None]:
    """The screen on the terminal, log lines printed above it while it is."""
    screen.start()
    if logs is not None:
        logs.divert(screen.log)
    try:
        yield
    finally:
        if logs is not None:
            logs.divert(None)
        screen.stop()
