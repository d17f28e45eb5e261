"""The seed's 10-point readiness score: 6 technical points from the window, 4 operational ones checked for real.

Each item passes or fails on evidence it states; an item that cannot be checked
(no drill file given, no Alertmanager, no runbook directory, no dashboards) says so
and scores 0. Grades follow the seed: 9-10 A+ (ready now), 7-8 A (minor tuning,
ready in 24 h), 5-6 B (significant issues, delay), below 5 F (not ready). Go needs
7 or more with every technical item passed; the exit code says go or no-go.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

ERROR_RATE_LIMIT = 0.01
LATENCY_LIMIT = 0.5
MIME_LIMIT = 0.5
CONTROLLER_SUCCESS = 0.95
SUSTAINED_SECONDS = 600.0
"""An SLO violation longer than this (10 minutes) is sustained."""
DRILL_PASS = 5


@dataclass(frozen=True, slots=True)
class Item:
    """One readiness item."""

    id: str
    name: str
    kind: str
    """``technical`` or ``operational``."""
    passed: bool
    evidence: str
    checked: bool = True
    """False when the item could not be checked (no drill file, no Alertmanager...): it scores 0, says why."""


@dataclass(frozen=True, slots=True)
class Readiness:
    """The score, its grade, the go/no-go call, and every item with its evidence."""

    items: tuple[Item, ...]

    @property
    def score(self) -> int:
        """Items passed, out of 10."""
        return sum(i.passed for i in self.items)

    @property
    def technical(self) -> int:
        """Technical items passed, out of 6."""
        return sum(i.passed for i in self.items if i.kind == "technical")

    @property
    def grade(self) -> str:
        """The seed's grade."""
        s = self.score
        if s >= 9:
            return "A+"
        if s >= 7:
            return "A"
        if s >= 5:
            return "B"
        return "F"

    @property
    def go(self) -> bool:
        """Go: a score of 7 or more and every technical item passed."""
        return self.score >= 7 and self.technical == 6

    def to_json(self) -> dict[str, Any]:
        """``readiness.score``, ``grade``, ``go`` and the 10 ``items``."""
        return {
            "score": self.score,
            "technical": self.technical,
            "grade": self.grade,
            "go": self.go,
            "items": [asdict(i) for i in self.items],
        }


@dataclass(frozen=True, slots=True)
class Window:
    """What the technical items read (None: the figure could not be computed)."""

    controller_runs: float | None
    controller_ok: float | None
    error_ratio_p95: float | None
    latency_p95_p95: float | None
    violations: Sequence[tuple[float, float, str]]
    """(start, end, what) of every stretch over an SLO threshold, Unix times."""
    mime_p95_max: float | None
    unexpected_codes: Sequence[str]


def technical(w: Window) -> list[Item]:
    """The six technical items, with the seed's thresholds."""
    items = []
    if w.controller_runs:
        share = (w.controller_ok or 0.0) / w.controller_runs
        items.append(
            Item(
                "controller_success",
                "Controller run success > 95%",
                "technical",
                passed=share > CONTROLLER_SUCCESS,
                evidence=f"{w.controller_ok or 0:.0f} of {w.controller_runs:.0f} runs ok ({share:.1%})",
            )
        )
    else:
        items.append(
            Item(
                "controller_success",
                "Controller run success > 95%",
                "technical",
                passed=False,
                evidence="no controller run seen",
            )
        )
    items.append(_below("error_rate_p95", "Error rate P95 < 1%", w.error_ratio_p95, ERROR_RATE_LIMIT, "{:.3%}"))
    items.append(_below("latency_p95", "Latency P95 < 500ms", w.latency_p95_p95, LATENCY_LIMIT, "{:.3f}s"))
    sustained = [(a, b, what) for a, b, what in w.violations if b - a > SUSTAINED_SECONDS]
    if sustained:
        shown = "; ".join(f"{what} from {_iso(a)} to {_iso(b)} ({(b - a) / 60:.0f} min)" for a, b, what in sustained)
        evidence = f"sustained: {shown}"
    else:
        longest = max((b - a for a, b, _ in w.violations), default=0.0)
        evidence = f"no violation over 10 minutes (longest {longest / 60:.1f} min)"
    items.append(
        Item(
            "no_sustained_violation", "No sustained SLO violation", "technical", passed=not sustained, evidence=evidence
        )
    )
    items.append(_below("mime_p95", "MIME build time < 500ms", w.mime_p95_max, MIME_LIMIT, "{:.3f}s"))
    items.append(
        Item(
            "no_unexpected_codes",
            "No unexpected error codes",
            "technical",
            passed=not w.unexpected_codes,
            evidence="unexpected: " + ", ".join(w.unexpected_codes)
            if w.unexpected_codes
            else "every code seen is a known one",
        )
    )
    return items


def _below(item_id: str, name: str, value: float | None, limit: float, fmt: str) -> Item:
    if value is None:
        return Item(item_id, name, "technical", passed=False, evidence="no data in the window")
    return Item(
        item_id, name, "technical", passed=value < limit, evidence=f"{fmt.format(value)} (limit {fmt.format(limit)})"
    )


def _iso(unix: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M")


def drill_item(card: dict[str, Any] | None, source: str | None) -> Item:
    """Tabletop drill >= 5/6, from ``loadsim drill --json``."""
    name = "Tabletop drill passed (>= 5/6)"
    if card is None:
        return Item(
            "drill",
            name,
            "operational",
            passed=False,
            checked=False,
            evidence="not checked: no drill file given (--drill FILE)",
        )
    score = int(card.get("score", 0))
    failed = [f"{p['number']}. {p['name']}" for p in card.get("phases", []) if not p.get("passed")]
    evidence = f"{score}/6 in {source}" + (f"; failed: {', '.join(failed)}" if failed else "")
    return Item("drill", name, "operational", passed=score >= DRILL_PASS, evidence=evidence)


def routing_item(routes: dict[str, str] | None, why_not: str = "") -> Item:
    """Alert routing works: every relay alert reaches a receiver that is not the catch-all."""
    name = "Alert routing working"
    if routes is None:
        return Item(
            "routing",
            name,
            "operational",
            passed=False,
            checked=False,
            evidence=f"not checked: {why_not or 'no Alertmanager given'}",
        )
    unrouted = sorted(a for a, r in routes.items() if not r)
    shown = ", ".join(f"{a} -> {r}" for a, r in sorted(routes.items()))
    if unrouted:
        return Item(
            "routing", name, "operational", passed=False, evidence=f"no receiver for {', '.join(unrouted)}; {shown}"
        )
    return Item("routing", name, "operational", passed=True, evidence=shown)


def runbook_item(urls: dict[str, str], root: str | None, present: set[str]) -> Item:
    """Runbooks complete: each alert's ``runbook_url`` names a file found under ``root``."""
    name = "Runbooks complete"
    if root is None:
        return Item(
            "runbooks",
            name,
            "operational",
            passed=False,
            checked=False,
            evidence="not checked: no runbook directory given (--runbooks DIR)",
        )
    missing = sorted(f"{alert} ({url})" for alert, url in urls.items() if url.split("#", 1)[0] not in present)
    if missing:
        return Item(
            "runbooks", name, "operational", passed=False, evidence=f"missing under {root}: {'; '.join(missing)}"
        )
    return Item(
        "runbooks", name, "operational", passed=True, evidence=f"{len(urls)} alerts' runbooks found under {root}"
    )


def dashboards_item(panels: dict[str, bool] | None, why_not: str = "") -> Item:
    """Dashboards work: every panel query returns data for the window."""
    name = "Dashboards accessible and answering"
    if panels is None:
        return Item(
            "dashboards",
            name,
            "operational",
            passed=False,
            checked=False,
            evidence=f"not checked: {why_not or 'no dashboards given'}",
        )
    empty = sorted(p for p, ok in panels.items() if not ok)
    if empty:
        return Item(
            "dashboards",
            name,
            "operational",
            passed=False,
            evidence=f"{len(empty)} of {len(panels)} panels empty: {'; '.join(empty)}",
        )
    return Item("dashboards", name, "operational", passed=True, evidence=f"all {len(panels)} panel queries return data")
