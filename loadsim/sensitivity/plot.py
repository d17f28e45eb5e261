"""The sweep's plots (one SVG per alert) and a self-contained HTML page that holds them.

matplotlib's object API (a ``Figure`` per plot, no pyplot state, so plots can be drawn
from any thread) renders SVG text; the page is rendered by Jinja2 with autoescaping,
inlines the SVGs and has no script, stylesheet link or URL, as ``loadsim report``'s
page has not: it opens offline, in a browser or a CI artifact viewer.

Each alert's figure has two panels over the swept intensity (log scale): the detection
probability within the deadline with its Wilson band, per background rate; and the
time-to-detect p50 (solid) and p90 (dashed), with the deadline and the rule's ``for:``
(the floor no fault can beat) drawn across. The designed scenario intensity is a black
dashed line, the rule's threshold at each rate a dotted line in that rate's colour.
"""

from __future__ import annotations

import io
from pathlib import Path

from jinja2 import Environment
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from loadsim.sensitivity.rules import load
from loadsim.sensitivity.sweep import AlertReport, Report

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def hold_of(report: AlertReport) -> float:
    """The alert's ``for:`` in seconds, from its rule file."""
    return load(list(report.knob.rules)).alerts()[report.knob.alert].hold


def figure(report: AlertReport, deadline: float) -> str:
    """One alert's two panels as SVG text."""
    knob = report.knob
    fig = Figure(figsize=(10, 3.4), dpi=96)
    left, right = fig.subplots(1, 2, sharex=True)
    unit = f" ({knob.axis.unit})" if knob.axis.unit else ""
    for i, curve in enumerate(report.curves):
        colour = COLOURS[i % len(COLOURS)]
        xs = [p.intensity for p in curve.points]
        label = f"{curve.rate:g}/s"
        left.plot(xs, [p.detection.p for p in curve.points], "o-", color=colour, ms=3, lw=1.2, label=label)
        left.fill_between(
            xs,
            [p.detection.low for p in curve.points],
            [p.detection.high for p in curve.points],
            color=colour,
            alpha=0.15,
            lw=0,
        )
        if curve.threshold is not None:
            left.axvline(curve.threshold, color=colour, ls=":", lw=1.0)
        for q, style in (("ttd_p50", "-"), ("ttd_p90", "--")):
            points = [(p.intensity, getattr(p, q) / 60) for p in curve.points if getattr(p, q) is not None]
            if points:
                px, py = zip(*points, strict=True)
                right.plot(px, py, style, marker="o", ms=3, color=colour, lw=1.2, label=f"{label} {q[4:]}")
    grid = sorted({p.intensity for c in report.curves for p in c.points})
    for ax in (left, right):
        ax.axvline(knob.designed, color="black", ls="--", lw=0.9)
        ax.set_xscale("log")
        ax.set_xticks(grid, [f"{x:g}" for x in grid], rotation=60)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{knob.axis.name}{unit}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    left.axhline(0.9, color="grey", lw=0.7)
    left.set_ylim(-0.03, 1.03)
    left.set_ylabel(f"P(firing within {deadline / 60:g} min)", fontsize=8)
    left.set_title(f"{knob.alert}: detection", fontsize=9, loc="left")
    left.legend(fontsize=7, loc="lower right", title="rate", title_fontsize=7)
    hold = hold_of(report) / 60
    right.axhline(deadline / 60, color="grey", lw=0.7)
    right.axhline(hold, color="black", lw=0.7, ls=":")
    right.annotate(f"for: {hold:g}m", (0.01, hold), xycoords=("axes fraction", "data"), fontsize=7, va="bottom")
    right.set_ylim(0, deadline / 60 * 1.05)
    right.set_ylabel("minutes to firing", fontsize=8)
    right.set_title("time to detect (p50 solid, p90 dashed)", fontsize=9, loc="left")
    right.legend(fontsize=6, loc="upper right", ncol=2)
    return _svg(fig)


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>loadsim sensitivity</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; max-width: 1040px; margin: 2em auto; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
pre { font-size: 12px; overflow-x: auto; } .plot svg { width: 100%; height: auto; }
</style></head><body>
<h1>Alert sensitivity</h1>
<p>{{ summary }}</p>
<pre>{{ table }}</pre>
{% for name, svg in plots %}<h2>{{ name }}</h2><div class="plot">{{ svg | safe }}</div>
{% endfor %}
</body></html>
"""


def false_alarms(report: Report) -> str:
    """Background alone: false alarms per day and the share of time firing, against the rate, per alert."""
    fig = Figure(figsize=(10, 3.4), dpi=96)
    left, right = fig.subplots(1, 2, sharex=True)
    for i, alert in enumerate(report.alerts):
        colour = COLOURS[i % len(COLOURS)]
        curves = [c for c in alert.curves if c.false_alarms is not None]
        rates = [c.rate for c in curves]
        left.plot(rates, [c.false_alarms.per_day for c in curves if c.false_alarms], "o-", color=colour, ms=3,
                  label=alert.knob.alert)  # fmt: skip
        right.plot(rates, [100 * (c.firing_share or 0.0) for c in curves], "o-", color=colour, ms=3)
    rates = sorted({c.rate for a in report.alerts for c in a.curves})
    for ax, label in ((left, "false alarms per day"), (right, "% of the time firing")):
        ax.set_xscale("log")
        ax.set_xticks(rates, [f"{r:g}" for r in rates], rotation=60)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("background rate (sends/s)", fontsize=8)
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    left.set_title("healthy traffic alone: false alarms", fontsize=9, loc="left")
    right.set_title("healthy traffic alone: time firing", fontsize=9, loc="left")
    left.legend(fontsize=6, loc="upper left")
    return _svg(fig)


def _svg(fig: Figure) -> str:
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})  # the same sweep, the same file
    text = buf.getvalue()
    return text[text.index("<svg") :]


def write(report: Report, table: str, summary: str, out: Path) -> list[Path]:
    """One SVG per alert (or one of false alarms when only background ran) and ``sensitivity.html``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    plots: list[tuple[str, str]] = []
    figures = (
        [(a.knob.alert, figure(a, report.spec.deadline)) for a in report.alerts]
        if report.spec.runs
        else [("false-alarms", false_alarms(report))]
    )
    for name, svg in figures:
        path = out / f"{name}.svg"
        path.write_text(svg, encoding="utf-8")
        written.append(path)
        plots.append((name, svg))
    page = Environment(autoescape=True).from_string(PAGE).render(summary=summary, table=table, plots=plots)
    html = out / "sensitivity.html"
    html.write_text(page, encoding="utf-8")
    return [*written, html]
