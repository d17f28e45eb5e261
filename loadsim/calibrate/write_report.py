"""The fit report beside the profile: Markdown for people, JSON for scripts.

Both carry the same things: every parameter with its standard error and how it was
found (or why it is held), each fitted shape's goodness-of-fit table (observed against
expected, cell by cell) with its Pearson statistic, and the warnings.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from loadsim.calibrate.estimate import POOR_P, Goodness, Row
from loadsim.calibrate.read import iso
from loadsim.calibrate.result import Calibration
from loadsim.redaction import redact


def _fmt(value: float) -> str:
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4g}"


def _table(rows: list[Row] | tuple[Row, ...], first: str) -> list[str]:
    out = [f"| {first} | observed | expected | residual |", "|---|---:|---:|---:|"]
    out += [f"| {r.label} | {_fmt(r.observed)} | {_fmt(r.expected)} | {r.residual:+.2f} |" for r in rows]
    return out


def _by_hour_of_day(g: Goodness) -> list[Row]:
    """The hourly table folded onto the hours of the day (168 rows would bury the shape)."""
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for r in g.rows:
        hour = f"{r.label[-3:-1]}:00"
        sums[hour][0] += r.observed
        sums[hour][1] += r.expected
    return [Row(h, o, e) for h, (o, e) in sorted(sums.items())]


def markdown(cal: Calibration) -> str:
    """The fit report as Markdown."""
    w = cal.window
    lines = [
        f"# Calibration: {cal.profile.name}",
        "",
        (
            f"From {w.prometheus}, {iso(w.start)} to {iso(w.end)} ({w.hours} hours): {w.sends:,.0f} sends, "
            f"{w.executions:,.0f} executions, {w.built:,.0f} MIME builds. Fitted in {cal.seconds:.1f} s."
        ),
        "",
        f"Send rate: **{cal.rate.shape}**, {cal.rate.why}.",
        "",
        "## Warnings",
        "",
    ]
    warnings = cal.warnings
    lines += [f"- {x}" for x in warnings] or [f"None: every fit is within the bound (Pearson p >= {POOR_P:g})."]
    lines += [
        "",
        "## Parameters",
        "",
        "| parameter | value | ± 1 SE | unit | how |",
        "|---|---:|---:|---|---|",
    ]
    lines += [
        f"| `{e.key}` | {e.value:.6g} | {'' if e.se is None else f'{e.se:.2g}'} | {e.unit} | {e.how} |"
        for e in cal.estimates
    ]
    lines += [
        "",
        "## Goodness of fit",
        "",
        (
            "Pearson's chi-square over the cells (cells expecting fewer than 5 merged with a neighbour); "
            f"a fit is poor when p < {POOR_P:g}. Residuals are (observed - expected) / sqrt(expected)."
        ),
    ]
    for g in cal.goodness:
        lines += ["", f"### {g.name}", "", g.verdict() + ".", ""]
        if g.name.startswith("sends per hour"):
            lines += ["Summed by hour of the day (the statistic is over every hour):", ""]
            lines += _table(_by_hour_of_day(g), "hour (UTC)")
        else:
            lines += _table(g.rows, "bucket (s)")
    notes = list(w.notes)
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def as_json(cal: Calibration) -> dict[str, Any]:
    """The fit report as JSON-ready data."""
    w = cal.window
    return {
        "source": w.prometheus,
        "window": {"start": w.start, "end": w.end, "hours": w.hours},
        "sends": w.sends,
        "executions": w.executions,
        "built": w.built,
        "rate_shape": cal.rate.shape,
        "rate_why": cal.rate.why,
        "fit_seconds": cal.seconds,
        "parameters": [
            {"key": e.key, "value": e.value, "se": e.se, "unit": e.unit, "how": e.how, "fitted": e.fitted}
            for e in cal.estimates
        ],
        "goodness": [
            {
                "name": g.name,
                "statistic": g.statistic,
                "df": g.df,
                "p_value": g.p_value,
                "poor": g.poor,
                "effect": g.effect,
                "rows": [{"label": r.label, "observed": r.observed, "expected": r.expected} for r in g.rows],
            }
            for g in cal.goodness
        ],
        "warnings": cal.warnings,
        "notes": w.notes,
    }


def write(cal: Calibration, markdown_path: Path, json_path: Path) -> None:
    """Both files."""
    # The Prometheus URL is in both: the one redaction keeps a credential in it out of them.
    markdown_path.write_text(redact(markdown(cal)), encoding="utf-8")
    json_path.write_text(redact(json.dumps(as_json(cal), indent=2) + "\n"), encoding="utf-8")
