"""The report's plots: matplotlib figures drawn to SVG text, inlined in the HTML.

matplotlib (well kept, the reference Python plotting library, with a headless SVG
backend and no JavaScript) renders each plot to a self-contained SVG string, so the
HTML makes no request to any network when opened. Every plot spans the window with
the fault overlays shaded and the controller's percent changes marked.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import matplotlib as mpl

mpl.use("svg")  # headless, and text stays text in the SVG

import matplotlib.dates as mdates
import matplotlib.pyplot as plt

from loadsim.report.figures import Figures

FAULT = "#f4c7c3"
CHANGE = "#7b61a8"


def _dates(ts: Sequence[float]) -> list[datetime]:
    return [datetime.fromtimestamp(t, UTC) for t in ts]


def _num(unix: float) -> float:
    """A Unix time as matplotlib's date number."""
    return float(mdates.date2num(datetime.fromtimestamp(unix, UTC)))  # type: ignore[no-untyped-call]


def _axes(title: str, ylabel: str) -> tuple[Any, Any]:
    fig, ax = plt.subplots(figsize=(9, 2.6), dpi=96)
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz=UTC))  # type: ignore[no-untyped-call]
    ax.grid(alpha=0.3)
    return fig, ax


def _context(ax: Any, f: Figures) -> None:
    """Fault windows shaded, controller changes marked."""
    for s in f.series.get("overlays", []):
        for a, b in _stretches(s.points, f.step):
            ax.axvspan(*_dates([a, b]), color=FAULT, alpha=0.5, lw=0)
    for t, _p in f.values.get("percent_trace", [])[1:]:
        ax.axvline(_dates([t])[0], color=CHANGE, lw=0.8, ls=":")
    ax.set_xlim(_num(f.start), _num(f.end))


def _stretches(points: Sequence[tuple[float, float]], step: float) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for t, v in points:
        if v > 0:
            if out and abs(t - out[-1][1]) < step * 0.01:
                out[-1] = (out[-1][0], t + step)
            else:
                out.append((t, t + step))
    return out


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.tight_layout()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _line(ax: Any, points: Sequence[tuple[float, float]], label: str, **style: Any) -> None:
    if points:
        ts, vs = zip(*points, strict=True)
        ax.plot(_dates(ts), vs, label=label, lw=1.0, **style)


def rate(f: Figures) -> str:
    """Achieved against target send rate."""
    fig, ax = _axes("Sends: achieved vs target", "sends/s")
    _context(ax, f)
    _line(ax, f.points("send_rate"), "achieved")
    _line(ax, f.points("target_rate"), "target", ls="--", color="grey")
    ax.legend(fontsize=7, loc="upper right")
    return _svg(fig)


def error_ratio(f: Figures) -> str:
    """The error ratio with the 1% and 5% lines."""
    fig, ax = _axes("Error ratio (job:gmail_send_errors_rate:5m)", "ratio")
    _context(ax, f)
    _line(ax, f.points("error_ratio"), "error ratio", color="#c0392b")
    for y, label in ((0.01, "warn 1%"), (0.05, "crit 5%")):
        ax.axhline(y, color="black", lw=0.7, ls="--")
        ax.annotate(label, (1.0, y), xycoords=("axes fraction", "data"), fontsize=7, ha="right", va="bottom")
    return _svg(fig)


def latency(f: Figures) -> str:
    """Latency p95 with the 0.5 s, 1 s and 2 s lines."""
    fig, ax = _axes("Latency p95 (job:gmail_send_latency_p95:5m)", "seconds")
    _context(ax, f)
    _line(ax, f.points("latency_p95"), "p95", color="#2c7fb8")
    for y in (0.5, 1.0, 2.0):
        ax.axhline(y, color="black", lw=0.7, ls="--")
    return _svg(fig)


def mime(f: Figures) -> str:
    """MIME build p95 with the 0.5 s line."""
    fig, ax = _axes("MIME build p95", "seconds")
    _context(ax, f)
    _line(ax, f.points("mime_p95"), "p95", color="#31a354")
    ax.axhline(0.5, color="black", lw=0.7, ls="--")
    return _svg(fig)


def errors_by_reason(f: Figures) -> str:
    """Errors by reason, stacked."""
    fig, ax = _axes("Errors by reason (stacked)", "errors/s")
    _context(ax, f)
    series = [s for s in f.series.get("errors_by_reason", []) if any(v > 0 for _, v in s.points)]
    if series:
        ts = [t for t, _ in series[0].points]
        grid = {t: i for i, t in enumerate(ts)}
        rows = []
        for s in series:
            row = [0.0] * len(ts)
            for t, v in s.points:
                if t in grid and v == v:  # noqa: PLR0124 - NaN check
                    row[grid[t]] = v
            rows.append(row)
        ax.stackplot(_dates(ts), rows, labels=[s.labels.get("reason", "") for s in series], alpha=0.85)
        ax.legend(fontsize=6, loc="upper left", ncol=3)
    return _svg(fig)


def rollout(f: Figures) -> str:
    """The rollout percent and the share of sends gated."""
    fig, ax = _axes("Rollout percent and gated share", "percent")
    _context(ax, f)
    _line(ax, f.points("rollout_percent"), "rollout percent", color=CHANGE, drawstyle="steps-post")
    sends = dict(f.points("send_rate"))
    gated = [(t, 100 * v / sends[t]) for t, v in f.points("gated_rate") if sends.get(t)]
    _line(ax, gated, "gated share", color="#e6550d")
    ax.set_ylim(-5, 105)
    ax.legend(fontsize=7, loc="upper right")
    return _svg(fig)


def alerts(f: Figures) -> str:
    """Each alert's pending and firing stretches."""
    timeline = f.values.get("alerts", [])
    names = sorted({a["alert"] for a in timeline})
    fig, ax = plt.subplots(figsize=(9, max(1.2, 0.3 * len(names) + 0.8)), dpi=96)
    ax.set_title("Alerts: pending and firing", fontsize=10, loc="left")
    ax.tick_params(labelsize=7)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz=UTC))  # type: ignore[no-untyped-call]
    colour = {"pending": "#fdae6b", "firing": "#d62728"}
    for a in timeline:
        y = names.index(a["alert"])
        left = _num(a["start"])
        ax.barh(y, _num(a["end"]) - left, left=left, color=colour.get(a["state"], "grey"), height=0.6)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlim(_num(f.start), _num(f.end))
    if not names:
        ax.text(0.5, 0.5, "no alert was pending or firing", transform=ax.transAxes, ha="center", fontsize=8)
        ax.set_yticks([])
    return _svg(fig)


PLOTS = {
    "rate": rate,
    "error_ratio": error_ratio,
    "latency": latency,
    "mime": mime,
    "errors_by_reason": errors_by_reason,
    "rollout": rollout,
    "alerts": alerts,
}
"""Every plot, in report order."""


def draw(f: Figures) -> dict[str, str]:
    """Every plot as SVG text."""
    return {name: plot(f) for name, plot in PLOTS.items()}
