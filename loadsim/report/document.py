"""The observation report's content: the seed's eleven sections, built from the figures and the readiness items.

One :class:`Report` is rendered four ways (:mod:`loadsim.report.render`): HTML with
the plots inline, Markdown following the seed's template, JSON with every figure and
the score's evidence, and CSV of the plotted series.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from loadsim.report.figures import Figures
from loadsim.report.readiness import Readiness


def iso(unix: float) -> str:
    """A Unix time as ``2026-11-30 12:00 UTC``."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M UTC")


def pct(x: float | None) -> str:
    """A ratio as a percent, or an en dash when there is none."""
    return "–" if x is None else f"{x:.3%}"


def sec(x: float | None) -> str:
    """Seconds to three decimals, or an en dash."""
    return "–" if x is None else f"{x:.3f} s"


@dataclass
class Section:
    """One of the seed's sections: a title, lines of text and table rows."""

    number: int
    title: str
    lines: list[str] = field(default_factory=list)
    table: list[tuple[str, str]] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)


@dataclass
class Report:
    """Everything the four outputs say."""

    title: str
    source: str
    figures: Figures
    readiness: Readiness
    drill: dict[str, Any] | None = None
    alertmanager: list[dict[str, Any]] | None = None
    sections: list[Section] = field(default_factory=list)

    @property
    def decision(self) -> str:
        """GO or NO-GO."""
        return "GO" if self.readiness.go else "NO-GO"


def build(report: Report) -> Report:
    """Fill the eleven sections."""
    f, r, v = report.figures, report.readiness, report.figures.values
    hours = (f.end - f.start) / 3600
    s = [
        Section(
            1,
            "Executive Summary",
            [
                f"Window {iso(f.start)} to {iso(f.end)} ({hours:.1f} h), from {report.source}.",
                (
                    f"Readiness {r.score}/10 ({r.grade}): technical {r.technical}/6, "
                    f"operational {r.score - r.technical}/4."
                ),
                f"Decision: {report.decision}.",
            ],
        ),
        Section(
            2,
            "Controller Behavior",
            [f"Percent trace: {_trace(v.get('percent_trace', []))}."],
            [(f"runs {k}", f"{n:.0f}") for k, n in v.get("controller_runs", {}).items()]
            + [(f"changes {k}", f"{n:.0f}") for k, n in v.get("controller_changes", {}).items()],
            ["rollout"],
        ),
        Section(
            3,
            "Gmail Send SLOs",
            [
                (
                    f"Error rate above 1% for {v['error_ratio_above_1pct_seconds'] / 60:.0f} min; "
                    f"latency p95 above 500 ms for {v['latency_p95_above_500ms_seconds'] / 60:.0f} min."
                ),
            ],
            [
                *((f"error rate {k}", pct(x)) for k, x in v["error_ratio"].items()),
                *((f"latency p95 {k}", sec(x)) for k, x in v["latency_p95"].items()),
                *((f"burn rate {w}", "–" if b is None else f"{b:.2f}x") for w, b in v["burn_rates"].items()),
                ("sends", "–" if v["sends"] is None else f"{v['sends']:,.0f}"),
            ],
            ["rate", "error_ratio", "latency"],
        ),
        Section(
            4,
            "Structured Errors",
            [f"Structured errors per execution: {pct(v.get('structured_per_execution'))}."],
            [(code, f"{n:,.0f}") for code, n in v.get("structured_top10", {}).items()],
            ["errors_by_reason"],
        ),
        Section(
            5,
            "MIME Builder Performance",
            [],
            [(f"build time p95 {k}", sec(x)) for k, x in v["mime_p95"].items()]
            + [(f"attachment bytes {k}", f"{n:,.0f}") for k, n in v.get("attachment_bytes", {}).items()],
            ["mime"],
        ),
        Section(6, "Alerts Fired", _alert_lines(v.get("alerts", []), report.alertmanager), plots=["alerts"]),
        Section(
            7,
            "Metrics Collection Health",
            [
                (
                    f"Relay series absent for {v.get('absent_seconds', 0) / 60:.0f} min of the window "
                    "(absent(action_exec_total), the GmailMetricsMissing sentinel)."
                ),
                (
                    "Scrape success (avg of up): "
                    + ("no up series in the window" if v.get("scrape_success") is None else pct(v["scrape_success"]))
                    + "."
                ),
            ],
        ),
        Section(8, "Tabletop Drill Results", _drill_lines(report.drill)),
        Section(
            9,
            "Readiness Assessment",
            [f"{r.score}/10, grade {r.grade}."],
            [(f"{'PASS' if i.passed else 'FAIL'} {i.name}", i.evidence) for i in r.items],
        ),
        Section(10, "Recommendations", _recommendations(report)),
        Section(11, "Go/No-Go Decision", _decision_lines(report)),
    ]
    report.sections = s
    return report


def _trace(trace: list[tuple[float, float]]) -> str:
    return " -> ".join(f"{p:g}% ({iso(t)})" for t, p in trace) or "no controller percent in the window"


def _alert_lines(timeline: list[dict[str, Any]], am: list[dict[str, Any]] | None) -> list[str]:
    lines = [
        f"{a['alert']} {a['state']} from {iso(a['start'])} to {iso(a['end'])} ({(a['end'] - a['start']) / 60:.0f} min)"
        for a in timeline
        if a["state"] == "firing"
    ] or ["No alert fired in the window."]
    if am is not None:
        for alert in am:
            state = alert.get("status", {})
            inhibited = ", inhibited" if state.get("inhibitedBy") else ""
            receivers = ", ".join(r.get("name", "") for r in alert.get("receivers", []))
            name = alert.get("labels", {}).get("alertname")
            lines.append(f"Alertmanager now: {name} {state.get('state')}{inhibited} -> {receivers}")
    return lines


def _drill_lines(card: dict[str, Any] | None) -> list[str]:
    if card is None:
        return ["No drill result given (loadsim drill --json FILE, then --drill FILE)."]
    lines = [f"Score {card.get('score')}/6: {card.get('grade')}."]
    lines += [
        f"{'PASS' if p.get('passed') else 'FAIL'} {p.get('number')}. {p.get('name')}: {p.get('detail')}"
        for p in card.get("phases", [])
    ]
    return lines


def _recommendations(report: Report) -> list[str]:
    out = []
    for item in report.readiness.items:
        if item.passed:
            continue
        if item.evidence.startswith("not checked"):
            out.append(f"Check {item.name.lower()}: {item.evidence.removeprefix('not checked: ')}.")
        else:
            out.append(f"{item.name}: {item.evidence}.")
    return out or ["No item failed: keep the thresholds and proceed."]


def _decision_lines(report: Report) -> list[str]:
    r = report.readiness
    if r.go:
        return [
            f"GO: {r.score}/10 with every technical item passed.",
            (
                "Next: start the internal rollout at 10% (rollout_controller.py --set-percent google 10) and watch "
                "the first controller runs."
            ),
        ]
    failed = [i.name for i in r.items if not i.passed]
    return [
        f"NO-GO: {r.score}/10 ({r.grade}); needs 7 or more with all 6 technical items.",
        f"Blockers: {', '.join(failed)}.",
        "Next: fix the blockers and run another observation window.",
    ]
