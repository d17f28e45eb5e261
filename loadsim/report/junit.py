"""The readiness score as JUnit: one test case per readiness item.

A passed item is a passed case with its evidence as output; a failed one fails
with the evidence as the message (``error rate > 1% from 08:01 to 10:04 (123
min)``); an item that could not be checked (no drill file, no Alertmanager) is
skipped with the reason, and still scores 0. The go/no-go call itself is the exit
code, not a case: a go report may carry failed operational items.
"""

from __future__ import annotations

from datetime import UTC, datetime

from loadsim.junit import Case, Suite
from loadsim.report.document import Report, iso
from loadsim.report.readiness import Item


def item_case(item: Item) -> Case:
    """One readiness item."""
    classname = f"readiness.{item.kind}"
    if not item.checked:
        return Case(classname, item.name, skipped=item.evidence)
    if item.passed:
        return Case(classname, item.name, output=item.evidence)
    return Case(classname, item.name, failure=item.evidence)


def suite(report: Report, seconds: float) -> Suite:
    """The report's ten items, with the window and the decision as properties."""
    f, r = report.figures, report.readiness
    return Suite(
        name=f"loadsim report: {report.source}",
        cases=[item_case(i) for i in r.items],
        seconds=seconds,
        timestamp=datetime.fromtimestamp(f.start, UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        properties={
            "from": iso(f.start),
            "to": iso(f.end),
            "decision": report.decision,
            "score": f"{r.score}/10",
            "grade": r.grade,
            "technical": f"{r.technical}/6",
        },
        output=f"{report.decision}: readiness {r.score}/10 ({r.grade}), technical {r.technical}/6",
    )
