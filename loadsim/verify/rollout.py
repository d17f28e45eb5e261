"""``loadsim rollout``: what the relay's rollout controller would do, for every scenario, under both fidelities.

Each case is a virtual run with the controller in policy mode: steady background
traffic, the rollout already at 100%, the scenario striking after a lead-in, and
a long tail. The controller reads the simulated SLOs every 10 minutes, applies
the relay's policy and guards, and its percent gates the traffic. The table says,
per scenario and fidelity, the percent trace, whether and when it rolled back
(the relay's promise: within one cron interval plus the dwell), and what the
decision log shows it read. Four hazards are looked for on purpose, each in a
case built to show it:

* the inert error guard: as implemented, the error-rate query matches no series
  and reads 0.0, so an error-rate-crit window never rolls back;
* a dead Prometheus promotes: as implemented, a failed query reads 0.0 (green),
  so a controller that cannot reach Prometheus promotes through a latency fault;
* gated sends counted as errors: as intended, the error ratio includes
  ``rollout_gated``, so at 10% the ratio is about 9 and the rollout is pinned there;
* a dry run never exercises 10 -> 50: it writes no state, so every green run
  proposes 0 -> 10 and the later steps are never evaluated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from loadsim.overlays.scenarios import SCENARIOS
from loadsim.plan import build_plan
from loadsim.profile import parse_profile
from loadsim.runtime.factory import build

FIDELITIES = ("as-implemented", "as-intended")
LEAD = 20 * 60.0
WINDOW = 30 * 60.0
TAIL = 90 * 60.0
INTERVAL, DWELL = 600.0, 900.0
PROMISE = INTERVAL + DWELL
"""A rollback is due within one cron interval plus the dwell of the fault's start."""


@dataclass(frozen=True, slots=True)
class Case:
    """One run: a scenario (or none) from a starting percent, under one fidelity."""

    label: str
    fidelity: str
    overlays: tuple[dict[str, Any], ...] = ()
    start_percent: int = 100
    dry_run: bool = False
    hazard: str = ""
    """The hazard this case is built to show (empty for the scenario cases)."""


@dataclass
class Outcome:
    """What the controller did in one case."""

    case: Case
    decisions: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def trace(self) -> list[tuple[float, int]]:
        """(minutes from the fault's start, percent) after every change (a hazard case: from the run's start)."""
        origin = 0.0 if self.case.hazard else LEAD
        return [(round((t - origin) / 60, 1), p) for t, p in self.summary.get("percent_trace", [])[1:]]

    @property
    def rolled_back_after(self) -> float | None:
        """Seconds from the fault's start to the first rollback at or after it (None: never)."""
        for d in self.decisions:
            if d.get("result") == "rollback" and d["t"] >= LEAD:
                return float(d["t"]) - LEAD
        return None

    def read_during_fault(self, key: str) -> float | None:
        """The highest value of ``key`` the controller read while the fault was on."""
        values = [float(v) for d in self.decisions if LEAD <= d["t"] < LEAD + WINDOW and _number(v := d.get(key))]
        return max(values) if values else None


def _number(value: object) -> TypeGuard[float]:
    """A reading the decision log holds as a number (not null, not "NaN")."""
    return isinstance(value, float | int) and not isinstance(value, bool)


def default_cases(scenarios: Sequence[str] | None = None) -> list[Case]:
    """Every scenario under both fidelities from 100%, then (for the full set) the hazard cases."""
    names = [n for n in SCENARIOS if scenarios is None or n in scenarios]
    cases = [
        Case(name, fidelity, ({"scenario": name, "start": LEAD, "duration": WINDOW},))
        for name in names
        for fidelity in FIDELITIES
    ]
    if scenarios is not None:
        return cases
    crit = ({"scenario": "error-rate-crit", "start": LEAD, "duration": WINDOW},)
    whole = LEAD + WINDOW + TAIL
    dead_prometheus = (  # slow Gmail and a controller whose runs fail, from start to end
        {"scenario": "latency-crit", "start": 0.0, "duration": whole},
        {"scenario": "controller-failing", "start": 0.0, "duration": whole},
    )
    cases.append(Case("error-rate-crit", "as-implemented", crit, hazard="inert error guard"))
    for fidelity in FIDELITIES:
        cases += [
            Case("latency-crit, dead Prometheus", fidelity, dead_prometheus, 10, hazard="a dead Prometheus promotes"),
            Case("healthy from 10%", fidelity, (), 10, hazard="gated sends counted as errors"),
            Case("healthy, dry run", fidelity, (), 0, dry_run=True, hazard="a dry run never reaches 10 -> 50"),
        ]
    return cases


def run_case(case: Case, *, rate: str = "20/s", seed: int = 1) -> Outcome:
    """One virtual run with the controller in policy mode; its decisions and summary."""
    data: dict[str, Any] = {
        "name": f"rollout:{case.label}",
        "seed": seed,
        "duration": LEAD + WINDOW + TAIL,
        "schedule": [{"kind": "constant", "rate": rate}],
        "controller": {
            "mode": "policy",
            "fidelity": case.fidelity,
            "percent": case.start_percent,
            "dry_run": case.dry_run,
            "interval": INTERVAL,
            "dwell": DWELL,
        },
        "overlay": list(case.overlays),
    }
    plan = build_plan(parse_profile(data, f"rollout:{case.label}"), virtual=True)
    outcome = Outcome(case)
    run = build(plan, decisions=outcome.decisions.append)
    asyncio.run(run.engine.run())
    outcome.summary = run.driver.report().get("controller", {})
    return outcome


def run_all(cases: Sequence[Case], workers: int = 2, **kwargs: Any) -> list[Outcome]:
    """Every case, on ``workers`` threads."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda c: run_case(c, **kwargs), cases))


def hazards(outcomes: Sequence[Outcome]) -> list[str]:
    """The hazards the hazard cases show, one line each, with the evidence."""
    lines = []
    for o in outcomes:
        if not o.case.hazard:
            continue
        final = o.summary.get("percent")
        results = o.summary.get("decisions", {})
        seen: float | None
        if o.case.hazard == "inert error guard":
            seen = o.read_during_fault("error_rate")
            shown = o.rolled_back_after is None and not seen
            evidence = f"never rolled back; the error rate it read during the fault peaked at {seen}"
        elif o.case.hazard == "a dead Prometheus promotes":
            shown = final is not None and final > o.case.start_percent
            evidence = f"latency-crit all along, every run failing: {o.case.start_percent}% -> {final}% ({_trace(o)})"
        elif o.case.hazard == "gated sends counted as errors":
            seen = max((float(v) for d in o.decisions if _number(v := d.get("error_rate"))), default=None)
            shown = final == 10 and seen is not None and seen > 1
            evidence = f"healthy traffic, ends at {final}% ({_trace(o)})"
            if shown:
                evidence += f"; the error rate it read peaked at {seen:.2f}: the gated 90% count as errors"
        else:
            shown = final == o.case.start_percent and results.get("promote", 0) > 0
            evidence = f"proposed promote {results.get('promote', 0)} times and stayed at {final}%"
        verdict = "HAZARD" if shown else "not seen"
        lines.append(f"{verdict:<8} {o.case.hazard} [{o.case.fidelity}]: {evidence}")
    return lines


def _trace(o: Outcome) -> str:
    return " ".join(f"{p}%@{m:+g}m" for m, p in o.trace) or "no change"


def render(outcomes: Sequence[Outcome]) -> list[str]:
    """The table: one line per scenario case, then the hazards."""
    lines = [f"{'scenario':<28}{'fidelity':<16}{'rollback':<22}percent trace (minutes from the fault)"]
    for o in outcomes:
        if o.case.hazard:
            continue
        back = o.rolled_back_after
        if back is None:
            when = "never"
        else:
            on_time = "in time" if back <= PROMISE + 1e-9 else "late"
            when = f"+{back / 60:g}m ({on_time})"
        lines.append(f"{o.case.label:<28}{o.case.fidelity:<16}{when:<22}{_trace(o)}")
    return [*lines, "", *hazards(outcomes)]
