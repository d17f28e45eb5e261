"""The end-of-run summary on a terminal: a table with sections, as k6 prints its own.

It reads the same summary dict the ``run.summary`` event and ``--summary-json`` carry
(either driver's), so what a person sees and what a pipeline reads never disagree:
totals, status and reasons one per row, latency quantiles, the overlays the run went
through, and each threshold with ✓ or ✗ and the value measured.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from loadsim.thresholds import Verdict
from loadsim.units import format_duration

LEADER = 30
"""Width names are dotted out to, as k6 does."""


@dataclass(frozen=True, slots=True)
class OverlayRun:
    """An overlay as it ran: scenario and run-time window (clipped to the run)."""

    name: str
    start: float
    end: float


VALUE = 12
"""Width of the value column (right-aligned)."""


def _name(text: str, indent: int = 4) -> Text:
    dots = max(LEADER - len(text), 2)
    return Text.assemble(" " * indent + text + " ", ("." * dots, "dim"))


class _Lines:
    """Rows of name, value and detail, laid out in fixed columns (a table that never re-wraps a row)."""

    def __init__(self) -> None:
        self.rows: list[Text] = []

    def add_row(self, name: Text, value: str | Text, detail: str | Text) -> None:
        if not value:  # a row of details alone (latency, overlays, thresholds) starts right after the name
            self.rows.append(Text.assemble(name, " ", detail))
            return
        value = value if isinstance(value, Text) else Text(value)
        value.pad_left(max(VALUE - len(value.plain), 0))
        self.rows.append(Text.assemble(name, " ", value, "  ", detail))

    def section(self, title: str) -> None:
        self.rows.append(Text(f"  {title}", style="bold"))


def _section(grid: _Lines, title: str) -> None:
    grid.section(title)


def _latency(quantiles: Mapping[str, float]) -> str:
    if not quantiles:
        return "no data"
    parts = []
    for key, value in quantiles.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        shown = f"{value * 1000:.0f}ms" if value < 1 else f"{value:.3g}s"
        parts.append(f"{key}={shown}")
    return "  ".join(parts) or "no data"


def _totals(grid: _Lines, s: Mapping[str, Any], counts: Mapping[str, Any], noun: str) -> None:
    _section(grid, "TOTALS")
    rate = f"{s['achieved_rate_per_s']:,.2f}/s achieved of {s['target_rate_per_s']:,.2f}/s target"
    grid.add_row(_name(f"{noun} started"), f"{counts['started']:,}", rate)
    for key in ("finished", "dropped", "abandoned"):
        style = "red" if key != "finished" and counts[key] else ""
        grid.add_row(_name(key), Text(f"{counts[key]:,}", style=style), "")
    if counts.get("dropped_behind"):
        why = "the machine could not keep up"
        grid.add_row(_name("dropped behind"), Text(f"{counts['dropped_behind']:,}", style="red"), why)
    if counts.get("missed_while_down"):
        grid.add_row(_name("missed while down"), f"{counts['missed_while_down']:,}", "")


def render_summary(
    s: Mapping[str, Any],
    *,
    title: str,
    overlays: Sequence[OverlayRun] = (),
    verdicts: Sequence[Verdict] = (),
    stopped: str | None = None,
) -> RenderableType:
    """The table for summary ``s``; ``stopped`` says why a run ended early (``Ctrl-C``, a threshold)."""
    noun = "requests" if "requests" in s else "sends"
    counts = s[noun]
    head = Text.assemble(
        ("█ ", "cyan"),
        (title, "bold"),
        f" — {format_duration(s['run_seconds'])} of traffic in {format_duration(s['wall_seconds'])} wall",
    )
    if stopped:
        head.append(f", stopped early ({stopped})", "yellow")
    grid = _Lines()
    _totals(grid, s, counts, noun)
    _status(grid, s, noun)
    _section(grid, "LATENCY")
    if noun == "sends":
        grid.add_row(_name("latency"), "", _latency(s.get("latency_seconds", {})))
    else:
        grid.add_row(_name("from intended start"), "", _latency(s.get("latency_from_intended_seconds", {})))
        grid.add_row(_name("from actual start"), "", _latency(s.get("latency_from_actual_seconds", {})))
    if overlays:
        _section(grid, "OVERLAYS")
        for ov in overlays:
            end = "end" if math.isinf(ov.end) else format_duration(ov.end)
            span = "" if math.isinf(ov.end) else f"  ({format_duration(ov.end - ov.start)})"
            grid.add_row(_name(ov.name), "", f"{format_duration(ov.start)} → {end}{span}")
    if verdicts:
        _section(grid, "THRESHOLDS")
        for v in verdicts:
            mark = Text("✓", style="bold green") if v.ok else Text("✗", style="bold red")
            label = f"{v.threshold.metric} {v.threshold.expression}"
            detail = Text(v.shown, style="" if v.ok else "red")
            if v.threshold.window is not None:
                windows = "1 window" if v.windows == 1 else f"{v.windows} windows"
                detail.append(f"  worst of {windows}, {v.failed_windows} failed", "dim")
            name = _name(label, indent=1)
            grid.add_row(Text.assemble("  ", mark, name), "", detail)
    return Group(head, *grid.rows)


def _status(grid: _Lines, s: Mapping[str, Any], noun: str) -> None:
    if noun == "sends":
        by_status: Mapping[str, int] = s.get("by_status", {})
        total = sum(by_status.values())
        _section(grid, "STATUS")
        for key, n in by_status.items():
            share = f"{n / total:.2%}" if total else ""
            grid.add_row(_name(key), Text(f"{n:,}", style="red" if key == "error" and n else ""), share)
        reasons: Mapping[str, int] = s.get("by_reason", {})
        if reasons:
            _section(grid, "REASONS")
            for key, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
                grid.add_row(_name(key), f"{n:,}", f"{n / total:.2%}" if total else "")
        return
    results: Mapping[str, int] = s.get("by_result", {})
    total = sum(results.values())
    _section(grid, "RESULTS")
    for key, n in sorted(results.items(), key=lambda kv: (kv[0] != "2xx", -kv[1])):
        style = "" if key == "2xx" else "red"
        grid.add_row(_name(key), Text(f"{n:,}", style=style), f"{n / total:.2%}" if total else "")
