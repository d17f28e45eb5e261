"""The scenario x alert matrix as JUnit: one test case per row and alert expectation.

Every row of the matrix (background alone, each scenario) is judged against every
alert of loadsim's contract, and each judgement is a test case named for what was
expected: ``GmailSendHighErrorRateCritical fires``, ``... may fire`` or ``... must
not fire``. A case that fails says what fired or did not, and when (minutes after
the fault started, or into the background run), so a red case in a CI report
reads as the finding itself. One suite per rule set: the same rows against the
relay's two alert files are two suites.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from loadsim.junit import Case, Suite
from loadsim.overlays.scenarios import ALL_ALERTS, SCENARIOS
from loadsim.verify.matrix import TAIL, Row, findings


def _fired(row: Row) -> str:
    shown = [f"{a} at +{m:.1f} min" for a, m in sorted(row.fired.items(), key=lambda kv: kv[1])]
    return ", ".join(shown) or "nothing"


def kind_of(row: Row, alert: str) -> str:
    """``fires``, ``may fire`` or ``must not fire``: what the row's scenario declares about ``alert``."""
    if alert in row.case.fires:
        return "fires"
    if alert in row.case.may_fire:
        return "may fire"
    return "must not fire"


def expectation(row: Row, alert: str) -> Case:
    """What ``row`` should have done about ``alert``, and what it did."""
    case, kind = row.case, kind_of(row, alert)
    name, minutes = f"{alert} {kind}", row.fired.get(alert)
    if case.scenario is None:
        hours = f"{case.background / 3600:g} hours of healthy background traffic"
        if minutes is None:
            return Case(case.label, name, output=f"did not fire in {hours}")
        failure = f"{alert} fired at +{minutes:.1f} min into {hours}, which must fire no alert"
        return Case(case.label, name, failure=failure, failure_type="fired")
    seen = "did not fire" if minutes is None else f"fired at +{minutes:.1f} min after {case.label} started"
    if kind == "may fire":
        why = SCENARIOS[case.scenario].why_also if case.scenario in SCENARIOS else ""
        return Case(case.label, name, output=f"{seen} (allowed either way{': ' + why if why else ''})")
    if (kind == "fires") == (minutes is not None):
        return Case(case.label, name, output=seen)
    if kind == "fires":
        failure = (
            f"{alert} did not fire: {case.label} should fire it within its {case.window / 60:g} minutes "
            f"(the run went on {TAIL / 60:g} minutes after); fired: {_fired(row)}"
        )
        return Case(case.label, name, failure=failure, failure_type="not fired")
    declared = ", ".join(case.fires) or "nothing"
    failure = f"{alert} {seen}, which must not fire it (it should fire: {declared})"
    return Case(case.label, name, failure=failure, failure_type="fired")


def suite(
    rows: Sequence[Row], rule_files: Sequence[Path], *, started: float, seconds: float, rate: str, seed: int
) -> Suite:
    """One rule set's matrix: every row x every alert of the contract."""
    notes = [f"{r.case.label}: {r.case.note}" for r in rows if r.case.note]
    return Suite(
        name=f"loadsim verify: {' + '.join(p.name for p in rule_files)}",
        cases=[expectation(row, alert) for row in rows for alert in ALL_ALERTS],
        seconds=seconds,
        timestamp=datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        properties={"rules": " ".join(str(p) for p in rule_files), "rate": rate, "seed": str(seed)},
        output="\n".join([*findings(rows), *notes]),
    )
