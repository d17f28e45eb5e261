"""Every figure of the observation report, read from Prometheus for one window.

The queries are the relay's template's, with the recording rules' expressions
written out (``job:gmail_send_errors_rate:5m`` is ``sum(rate(errors[5m])) /
clamp_min(sum(rate(exec[5m])), 1)``): over a live window the recorded series and
these agree at each evaluation, and over backfilled history, which has no recorded
series (rules are evaluated from the moment Prometheus loads them, not for the
past), only the expressions answer. Series are read every ``step`` (60 s by
default) over the window, at ``start + step`` to ``end`` (the points a subquery
``[window:step]`` at the end reads, so a direct ``quantile_over_time`` agrees);
window-wide totals with ``increase`` over the whole window at its end.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loadsim.model import catalog
from loadsim.report.prom import Prometheus, Series

SEL = 'provider="google",action="gmail.send"'
GUARDS = "|".join(catalog.EARLY_GUARD_REASONS)
ERROR_RATIO = f"sum(rate(action_error_total{{{SEL}}}[5m])) / clamp_min(sum(rate(action_exec_total{{{SEL}}}[5m])), 1)"
LATENCY = "histogram_quantile({q}, sum(rate(action_latency_seconds_bucket{{" + SEL + "}}[5m])) by (le))"
MIME_P95 = "histogram_quantile(0.95, sum(rate(gmail_mime_build_seconds_bucket[5m])) by (le))"
SEND_RATE = f'sum(rate(action_exec_total{{{SEL}}}[5m])) + sum(rate(action_error_total{{{SEL},reason=~"{GUARDS}"}}[5m]))'
TARGET_RATE = "sum(loadsim_target_rate)"
ERRORS_BY_REASON = f"sum by (reason) (rate(action_error_total{{{SEL}}}[5m]))"
PERCENT = "max(rollout_controller_percent)"
GATED = f'sum(rate(action_error_total{{{SEL},reason="rollout_gated"}}[5m]))'
OVERLAYS = "loadsim_overlay_active > 0"
ALERTS = "ALERTS"
ABSENT = f"absent(action_exec_total{{{SEL}}})"
BUDGET = 0.01
"""The error budget the burn rates divide by (an SLO of 99%)."""


@dataclass(frozen=True, slots=True)
class Stats:
    """P50, P95, P99 and max of a series over the window (NaN points left out)."""

    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, values: Iterable[float]) -> Stats:
        arr = np.array([v for v in values if not math.isnan(v)], dtype=np.float64)
        if not len(arr):
            return cls(None, None, None, None)
        q = np.percentile(arr, [50, 95, 99])
        return cls(float(q[0]), float(q[1]), float(q[2]), float(arr.max()))


@dataclass
class Figures:
    """The window's figures, the series behind the plots, and what could not be read."""

    start: float
    end: float
    step: float
    series: dict[str, list[Series]] = field(default_factory=dict)
    """Plot name -> its series (CSV and plots)."""
    values: dict[str, Any] = field(default_factory=dict)
    """Every figure by name (JSON)."""
    missing: list[str] = field(default_factory=list)

    def points(self, name: str) -> list[tuple[float, float]]:
        """The points of a single-series plot (empty when absent)."""
        found = self.series.get(name) or []
        return found[0].points if found else []


def _duration(seconds: float) -> str:
    return f"{max(round(seconds), 1)}s"


def above(points: Sequence[tuple[float, float]], limit: float, step: float) -> list[tuple[float, float]]:
    """Stretches ``(start, end)`` where the series was above ``limit`` (each point stands for ``step``)."""
    out: list[tuple[float, float]] = []
    for t, v in points:
        if not math.isnan(v) and v > limit:
            if out and abs(out[-1][1] - t) < step * 0.01:  # the next point: the stretch goes on
                out[-1] = (out[-1][0], t + step)
            else:
                out.append((t, t + step))
    return out


def read(prom: Prometheus, start: float, end: float, step: float = 60.0) -> Figures:
    """Every figure of the window ``[start, end]``."""
    f = Figures(start, end, step)
    window = _duration(end - start)
    plots = {
        "send_rate": SEND_RATE,
        "target_rate": TARGET_RATE,
        "error_ratio": ERROR_RATIO,
        "latency_p95": LATENCY.format(q=0.95),
        "mime_p95": MIME_P95,
        "errors_by_reason": ERRORS_BY_REASON,
        "rollout_percent": PERCENT,
        "gated_rate": GATED,
        "overlays": OVERLAYS,
        "alerts": ALERTS,
        "absent": ABSENT,
    }
    for name, expr in plots.items():
        # Points in (start, end]: the same points a subquery [window:step] evaluated at the end reads.
        f.series[name] = prom.range(expr, start + step, end, step)
    ratio, p95 = f.points("error_ratio"), f.points("latency_p95")
    v = f.values
    v["error_ratio"] = _stats(Stats.of(x for _, x in ratio))
    v["latency_p95"] = _stats(Stats.of(x for _, x in p95))
    v["error_ratio_above_1pct_seconds"] = sum(b - a for a, b in above(ratio, BUDGET, step))
    v["latency_p95_above_500ms_seconds"] = sum(b - a for a, b in above(p95, 0.5, step))
    v["latency_quantiles_at_end"] = {
        f"p{int(q * 100)}": prom.value(LATENCY.format(q=q), end) for q in (0.5, 0.95, 0.99)
    }
    v["burn_rates"] = {w: _burn(prom, w, end) for w in ("5m", "1h", "6h")}
    v["violations"] = [
        {"what": what, "start": a, "end": b}
        for what, points, limit in (("error rate > 1%", ratio, BUDGET), ("latency p95 > 500 ms", p95, 0.5))
        for a, b in above(points, limit, step)
    ]
    v["sends"] = prom.value(
        f"sum(increase(action_exec_total{{{SEL}}}[{window}])) "
        f'+ sum(increase(action_error_total{{{SEL},reason=~"{GUARDS}"}}[{window}]))',
        end,
    )
    v["executions"] = prom.value(f"sum(increase(action_exec_total{{{SEL}}}[{window}]))", end)
    v["errors_by_reason"] = _by(
        prom.query(f"sum by (reason) (increase(action_error_total{{{SEL}}}[{window}]))", end), "reason"
    )
    v["structured_top10"] = _by(
        prom.query(f"topk(10, sum by (code) (increase(structured_error_total{{{SEL}}}[{window}])))", end), "code"
    )
    structured = prom.value(f'sum(increase(structured_error_total{{{SEL},source="gmail.adapter"}}[{window}]))', end)
    executions = v["executions"]
    v["structured_per_execution"] = structured / executions if structured is not None and executions else None
    v["mime_p95"] = _stats(Stats.of(x for _, x in f.points("mime_p95")))
    v["attachment_bytes"] = _by(
        prom.query(f"sum by (result) (increase(gmail_attachment_bytes_total[{window}]))", end), "result"
    )
    v["controller_runs"] = _by(
        prom.query(f"sum by (status) (increase(rollout_controller_runs_total[{window}]))", end), "status"
    )
    v["controller_changes"] = _by(
        prom.query(f"sum by (result) (increase(rollout_controller_changes_total[{window}]))", end), "result"
    )
    v["percent_trace"] = _changes(f.points("rollout_percent"))
    v["unexpected_codes"] = sorted(set(v["errors_by_reason"]) - set(catalog.ERROR_REASONS))
    v["absent_seconds"] = sum(step for _, x in f.points("absent") if x == 1)
    v["scrape_success"] = prom.value(f"avg(avg_over_time(up[{window}]))", end)
    v["alerts"] = alert_timeline(f.series["alerts"], step)
    if not ratio:
        f.missing.append("no Gmail send series in the window")
    return f


def _stats(s: Stats) -> dict[str, float | None]:
    return {"p50": s.p50, "p95": s.p95, "p99": s.p99, "max": s.max}


def _burn(prom: Prometheus, window: str, at: float) -> float | None:
    ratio = prom.value(
        f"sum(increase(action_error_total{{{SEL}}}[{window}])) "
        f"/ clamp_min(sum(increase(action_exec_total{{{SEL}}}[{window}])), 1)",
        at,
    )
    return None if ratio is None else ratio / BUDGET


def _by(result: list[tuple[dict[str, str], float]], label: str) -> dict[str, float]:
    return {labels.get(label, ""): value for labels, value in sorted(result, key=lambda r: -r[1]) if value > 0}


def _changes(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for t, p in points:
        if not out or out[-1][1] != p:
            out.append((t, p))
    return out


def alert_timeline(series: Sequence[Series], step: float) -> list[dict[str, Any]]:
    """``ALERTS`` as stretches: alert name, state (pending or firing), start and end."""
    out = []
    for s in series:
        name, state = s.labels.get("alertname", ""), s.labels.get("alertstate", "")
        for a, b in above(s.points, 0.5, step):
            out.append({"alert": name, "state": state, "start": a, "end": b, "severity": s.labels.get("severity", "")})
    return sorted(out, key=lambda r: (r["start"], r["alert"]))
