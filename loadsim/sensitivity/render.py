"""The sweep's report as a terminal table and as a JSON document."""

from __future__ import annotations

import math
from typing import Any

from loadsim.sensitivity import stats
from loadsim.sensitivity.sweep import AlertReport, Curve, Report


def _num(x: float | None, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.4g}{unit}"


def _minutes(seconds: float | None, deadline: float) -> str:
    return f">{deadline / 60:g}m" if seconds is None else f"{seconds / 60:.1f}m"


def _reach(c: stats.Crossing, unit: str) -> str:
    if c.estimate is None:
        return "not reached in the swept range"
    if c.below_grid:
        return f"{_num(c.estimate, unit)} or below (the lowest intensity swept)"
    low = "below the range" if c.low is None else f"above {_num(c.low, unit)}"
    high = "beyond the range" if c.high is None else f"at most {_num(c.high, unit)}"
    return f"about {_num(c.estimate, unit)} (95%: {low}, {high})"


def _alarms(rate: stats.Rate | None, share: float | None) -> str:
    if rate is None:
        return "not measured"
    firing = f", firing {share:.0%} of the time" if share else ""
    return (
        f"{rate.per_day:.3g}/day (95% CI {rate.low:.3g}–{rate.high:.3g}; "
        f"{rate.events} in {rate.days * 24:g} h of healthy traffic{firing})"
    )


def table(report: Report) -> list[str]:
    """One block per alert: a line per rate and intensity, then the rate's summary."""
    deadline = report.spec.deadline
    lines = []
    for a in report.alerts:
        k = a.knob
        unit = k.axis.unit and f" {k.axis.unit}"
        threshold = "none" if k.threshold is None else f"{k.threshold:g} (rule units)"
        timing = f"lead-in {a.lead / 60:g}m, deadline {deadline / 60:g}m" if report.spec.runs else "background only"
        lines.append(f"{k.alert} — {k.axis.name}{unit}: designed {k.designed:g}, rule threshold {threshold}, {timing}")
        if report.spec.runs:
            lines.append(
                f"  {'rate':>6} {'intensity':>10} {'detected':>9} {'P':>5} {'95% CI':>11} {'p50':>7} {'p90':>7}"
            )
        for c in a.curves:
            for p in c.points:
                d = p.detection
                onset = f"  ({p.at_onset} already firing at onset)" if p.at_onset else ""
                lines.append(
                    f"  {c.rate:>4g}/s {p.intensity:>10.4g} {d.k:>4}/{d.n:<4} {d.p:>5.2f} "
                    f"{d.low:>5.2f}–{d.high:<5.2f} {_minutes(p.ttd_p50, deadline):>7} "
                    f"{_minutes(p.ttd_p90, deadline):>7}{onset}"
                )
            lines += _curve_summary(c, a)
        lines.append("")
    return lines


def _curve_summary(c: Curve, a: AlertReport) -> list[str]:
    unit = a.knob.axis.unit
    threshold = _num(c.threshold, unit) if c.threshold is not None else "—"
    if c.threshold is not None and c.threshold <= a.knob.axis.low:
        threshold = "healthy traffic alone is above it"
    alarms = f"  {c.rate:>4g}/s: false alarms {_alarms(c.false_alarms, c.firing_share)}"
    if not c.points:
        return [f"{alarms}; threshold in {a.knob.axis.name} at this rate {threshold}"]
    return [f"  {c.rate:>4g}/s: 90% detection at {_reach(c.reach90, unit)}; threshold at this rate {threshold}", alarms]


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def summary(report: Report) -> str:
    """One line: how much was run, how long it took."""
    s = report.spec
    return (
        f"{_plural(report.runs, 'virtual run')} ({s.runs} per point, deadline {s.deadline / 60:g}m, "
        f"{s.background_runs} x {s.background_hours:g} h of background per rate) in "
        f"{_plural(report.tasks, 'Dask task')} on {_plural(report.workers, 'worker')}: "
        f"{report.wall_seconds:.1f} s wall, {report.task_seconds:.1f} s of task time"
    )


def document(report: Report) -> dict[str, Any]:
    """The report as JSON-ready data."""
    s = report.spec
    return {
        "spec": {
            "alerts": list(s.alerts),
            "rates_per_second": list(s.rates),
            "runs_per_point": s.runs,
            "deadline_seconds": s.deadline,
            "background_hours": s.background_hours,
            "background_runs_per_rate": s.background_runs,
            "seed": s.seed,
            "runs_per_task": s.batch,
            "grids": {k: list(v) for k, v in s.grids.items()},
        },
        "runs": report.runs,
        "tasks": report.tasks,
        "workers": report.workers,
        "wall_seconds": round(report.wall_seconds, 3),
        "task_seconds": round(report.task_seconds, 3),
        "timings": report.timings,
        "alerts": [_alert(a) for a in report.alerts],
    }


def _alert(a: AlertReport) -> dict[str, Any]:
    k = a.knob
    return {
        "alert": k.alert,
        "axis": {"name": k.axis.name, "scenario": k.axis.scenario, "option": k.axis.option, "unit": k.axis.unit},
        "designed_intensity": k.designed,
        "rule_threshold": k.threshold,
        "rule_files": [str(p) for p in k.rules],
        "lead_seconds": a.lead,
        "rates": [_curve_doc(c) for c in a.curves],
    }


def _curve_doc(c: Curve) -> dict[str, Any]:
    fa = c.false_alarms
    return {
        "rate_per_second": c.rate,
        "threshold_intensity": c.threshold,
        "intensity_for_90pct": {
            "estimate": c.reach90.estimate,
            "ci95": [c.reach90.low, c.reach90.high],
            "below_grid": c.reach90.below_grid,
        },
        "false_alarms_per_day": None
        if fa is None
        else {
            "estimate": fa.per_day,
            "ci95": [fa.low, fa.high],
            "events": fa.events,
            "days": fa.days,
            "share_of_time_firing": c.firing_share,
        },
        "points": [
            {
                "intensity": p.intensity,
                "runs": p.detection.n,
                "detected": p.detection.k,
                "probability": p.detection.p,
                "wilson95": [p.detection.low, p.detection.high],
                "clopper_pearson95": [p.detection.exact_low, p.detection.exact_high],
                "already_firing_at_onset": p.at_onset,
                "ttd_seconds": {"p50": p.ttd_p50, "p90": p.ttd_p90, "min": p.ttd_min},
            }
            for p in c.points
        ],
    }
