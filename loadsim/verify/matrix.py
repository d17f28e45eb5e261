"""``loadsim verify``: the scenario x alert matrix, in virtual time, judged by promtool.

For background alone and for each scenario, the engine runs on the virtual
clock (steady background, a lead-in, the overlay, a tail), a recorder takes
what Prometheus would have scraped every 15 s, and promtool evaluates the rule
files over it. The matrix shows, per case, every in-scope alert that fired and
when (minutes after the overlay started), against what the scenario declares:
``fires`` must fire, ``may_fire`` may, anything else is a mismatch. Alerts of
other services in the same rule files (the AI orchestrator's) are reported as
outside loadsim's contract and never judged.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadsim.overlays.scenarios import ALL_ALERTS, SCENARIOS, STALLED
from loadsim.plan import build_plan
from loadsim.profile import parse_profile
from loadsim.relayconfig import RELAY_CONFIG
from loadsim.runtime.factory import build
from loadsim.verify.promtool import PromtoolCase, first_firing
from loadsim.verify.recorder import ScrapeRecorder

LEAD = 20 * 60.0
"""Healthy traffic before the overlay: every 5-minute window is full when it starts."""
TAIL = 30 * 60.0
"""Healthy traffic after it: long enough for every alert to resolve."""
DEFAULT_WINDOW = 30 * 60.0
"""Long enough for the slowest ``for: 10m`` over 5-minute windows, with margin."""
LONG_WINDOWS = {"controller-stalled": 80 * 60.0, "metrics-missing": 40 * 60.0}
"""``absent_over_time(...[60m])`` + ``for: 5m`` needs 65 minutes; ``absent`` + ``for: 15m`` about 25."""


@dataclass(frozen=True, slots=True)
class Case:
    """One row of the matrix: a scenario (or background alone) and what it should fire."""

    label: str
    scenario: str | None
    options: dict[str, Any] = field(default_factory=dict)
    window: float = DEFAULT_WINDOW
    fires: tuple[str, ...] = ()
    may_fire: tuple[str, ...] = ()
    note: str = ""
    background: float = 48 * 3600.0
    """Run length when there is no overlay."""

    @property
    def duration(self) -> float:
        """Run length: lead, window, tail (or the background run's length)."""
        return self.background if self.scenario is None else LEAD + self.window + TAIL


def default_rule_sets(config: Path = RELAY_CONFIG) -> list[list[Path]]:
    """The relay's recording rules with each of its alert files in turn (both define the same alert names)."""
    prom = config / "prometheus"
    recording = prom / "prometheus-recording.yml"
    return [[recording, prom / "prometheus-alerts.yml"], [recording, prom / "prometheus-alerts-v2.yml"]]


def default_cases(background_hours: float = 48.0, scenarios: Iterable[str] | None = None) -> list[Case]:
    """Background alone, every scenario, and the Pushgateway variant of the stalled controller."""
    cases = [Case("background", None, background=background_hours * 3600.0)]
    for name in scenarios or SCENARIOS:
        s = SCENARIOS[name]
        cases.append(
            Case(name, name, window=LONG_WINDOWS.get(name, DEFAULT_WINDOW), fires=s.fires, may_fire=s.may_fire)
        )
        if name == "controller-stalled":
            cases.append(
                Case(
                    "controller-stalled[mode=frozen]",
                    name,
                    {"mode": "frozen"},
                    window=LONG_WINDOWS[name],
                    note="a dead controller behind a Pushgateway keeps its series: "
                    "RolloutControllerStalled cannot fire",
                )
            )
    return cases


@dataclass
class Row:
    """What happened in one case."""

    case: Case
    fired: dict[str, float]
    """In-scope alert -> minutes after the overlay started (run start for background) it first fired."""
    outside: set[str]
    """Alerts outside loadsim's contract that fired."""
    wall_seconds: float = 0.0

    @property
    def missing(self) -> list[str]:
        """Alerts the case should fire that did not."""
        return [a for a in self.case.fires if a not in self.fired]

    @property
    def unexpected(self) -> list[str]:
        """Alerts that fired and were neither expected nor allowed."""
        return [a for a in self.fired if a not in self.case.fires and a not in self.case.may_fire]

    @property
    def ok(self) -> bool:
        """The case fired what it should and nothing it should not."""
        return not self.missing and not self.unexpected


def record_case(case: Case, *, rate: str = "20/s", seed: int = 1, scrape_interval: float = 15.0) -> ScrapeRecorder:
    """Run one case on the virtual clock and record its scrapes."""
    data: dict[str, Any] = {
        "name": case.label,
        "seed": seed,
        "duration": case.duration,
        "schedule": [{"kind": "constant", "rate": rate}],
    }
    if case.scenario is not None:
        data["overlay"] = [{"scenario": case.scenario, "start": LEAD, "duration": case.window, "options": case.options}]
    plan = build_plan(parse_profile(data, f"verify:{case.label}"), virtual=True)
    run = build(plan)
    assert run.relay is not None
    recorder = ScrapeRecorder(run.relay, scrape_interval)
    run.engine.after_window.append(recorder)
    asyncio.run(run.engine.run())
    return recorder


def run_case(case: Case, rule_files: Sequence[Path], workdir: Path, **kwargs: Any) -> Row:
    """Record a case and let promtool say which alerts fired, and when."""
    t0 = time.monotonic()
    recorder = record_case(case, **kwargs)
    firing = first_firing(PromtoolCase(case.label, recorder, tuple(rule_files)), workdir)
    origin = 0.0 if case.scenario is None else LEAD
    fired = {name: (t - origin) / 60.0 for name, t in firing.items() if name in ALL_ALERTS}
    outside = {name for name in firing if name not in ALL_ALERTS}
    return Row(case, fired, outside, time.monotonic() - t0)


def run_matrix(
    cases: Sequence[Case], rule_files: Sequence[Path], export: Path | None = None, workers: int = 2, **kwargs: Any
) -> list[Row]:
    """Every case against the rule files (promtool files go to ``export`` when given).

    Cases run on ``workers`` threads: recording holds the interpreter, promtool runs in its
    own process, so two workers keep both cores busy.
    """
    with tempfile.TemporaryDirectory(prefix="loadsim-verify-") as tmp:
        workdir = export or Path(tmp)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            return list(pool.map(lambda c: run_case(c, rule_files, workdir, **kwargs), cases))


def render(rows: Sequence[Row], rule_files: Sequence[Path]) -> list[str]:
    """The matrix as text: one line per case, then the findings."""
    lines = [f"rules: {', '.join(str(p) for p in rule_files)}", ""]
    width = max(len(r.case.label) for r in rows) + 2
    for r in rows:
        verdict = "ok  " if r.ok else "FAIL"
        fired = ", ".join(f"{a} +{m:.0f}m" for a, m in sorted(r.fired.items(), key=lambda kv: kv[1])) or "nothing"
        lines.append(f"{verdict} {r.case.label:<{width}} fired: {fired}")
        if r.missing:
            lines.append(f"     {'':<{width}} expected but did not fire: {', '.join(r.missing)}")
        if r.unexpected:
            lines.append(f"     {'':<{width}} fired but must not: {', '.join(r.unexpected)}")
        if r.case.note:
            lines.append(f"     {'':<{width}} note: {r.case.note}")
    lines += ["", *findings(rows)]
    return lines


def findings(rows: Sequence[Row]) -> list[str]:
    """Alerts no case fired, cases that fire nothing, alerts outside the contract."""
    out = []
    fired_anywhere = {a for r in rows for a in r.fired}
    never = [a for a in ALL_ALERTS if a not in fired_anywhere]
    if never:
        out.append(f"alerts no scenario fired: {', '.join(never)}")
    silent = [r.case.label for r in rows if r.case.scenario is not None and not r.fired]
    if silent:
        out.append(f"scenarios that fire nothing: {', '.join(silent)}")
    outside = sorted({a for r in rows for a in r.outside})
    if outside:
        out.append(f"outside loadsim's contract (not judged): {', '.join(outside)} fired")
    if any(r.case.label.startswith("controller-stalled[") and STALLED not in r.fired for r in rows):
        out.append(
            "finding: RolloutControllerStalled uses absent_over_time on a series a Pushgateway keeps forever; "
            "a dead controller pushing through a Pushgateway never fires it"
        )
    return out
