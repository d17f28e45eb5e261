"""Reading a window of the relay's history from Prometheus: hourly sends and the window's totals.

Everything a calibration fits is a count over the window, read with ``increase`` so
that counter resets (a relay restart) are handled the way the relay's own rules
handle them: the sends per hour (``action_exec_total`` plus the early-guard errors,
which return before any execution is counted), and per label the totals of every
family of the metric contract. Histograms are read as their cumulative ``le``
buckets and turned into counts per bucket.

What the fits cannot do without is checked here, and a problem is a
:class:`~loadsim.report.prom.SourceError` of one line naming the series, the window
and what was expected: no executions, too few, a histogram missing or with buckets
other than the relay's. The optional families (OAuth, sanitization, inline images,
attachments, the controller) may be absent; their parameters are then held, and the
fit report says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray

from loadsim import contract as c
from loadsim.model import catalog
from loadsim.report.prom import Prometheus, SourceError

SEL = f'provider="{c.PROVIDER}",action="{c.ACTION}"'
GUARDS = "|".join(catalog.EARLY_GUARD_REASONS)
HOUR = 3600.0
MIN_EXECUTIONS = 1000
"""Fewer executions than this cannot pin a lognormal body and tail (a bucket of the tail
would hold a handful of sends): the window is refused as too little data."""

FloatArray = NDArray[np.float64]


def iso(unix: float) -> str:
    """A Unix time as ``2026-11-30T12:00:00Z``."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Window:
    """The relay's history over ``[start, end]``: hourly sends and every family's totals."""

    prometheus: str
    start: float
    end: float
    hour_starts: FloatArray
    """Unix start of each whole hour of the window."""
    hourly_sends: FloatArray
    """Sends started in each hour (NaN where Prometheus has no data for the hour)."""
    exec_by_status: dict[str, float]
    errors: dict[str, float]
    """``action_error_total`` increase by reason (every reason of the catalogue, 0 when absent)."""
    structured: dict[tuple[str, str], float]
    """``structured_error_total`` increase by (code, source)."""
    latency: FloatArray
    """``action_latency_seconds`` counts per bucket, the relay's bounds then ``+Inf``."""
    mime: FloatArray
    """``gmail_mime_build_seconds`` counts per bucket, the relay's bounds then ``+Inf``."""
    attachment_bytes: dict[str, float] | None
    inline: dict[str, float] | None
    sanitization: dict[str, float] | None
    oauth: dict[str, float] | None
    controller_runs: dict[str, float] | None
    controller_changes: dict[str, float] | None
    controller_percent: float | None
    notes: list[str] = field(default_factory=list)

    @property
    def executions(self) -> float:
        """Sends counted as executions (they passed the early guards)."""
        return sum(self.exec_by_status.values())

    @property
    def guard_errors(self) -> float:
        """Sends stopped by an early guard (never executed)."""
        return sum(self.errors[r] for r in catalog.EARLY_GUARD_REASONS)

    @property
    def sends(self) -> float:
        """Every send: executions and early-guard errors."""
        return self.executions + self.guard_errors

    @property
    def built(self) -> float:
        """Sends that built their MIME message (the MIME histogram's count)."""
        return float(self.mime.sum())

    @property
    def hours(self) -> int:
        """Whole hours in the window."""
        return len(self.hour_starts)


def read(prom: Prometheus, start: float, end: float) -> Window:
    """The window ``[start, end]`` (whole hours from ``start``); SourceError when it cannot be fitted."""
    prom.check()
    hours = int((end - start) // HOUR)
    span = f"{round(hours * HOUR)}s"
    cut = end - (start + hours * HOUR)
    end = start + hours * HOUR
    where = f"from {iso(start)} to {iso(end)}"

    def totals(expr: str, by: str) -> dict[str, float] | None:
        result = prom.query(f"sum by ({by}) (increase({expr}[{span}]))", at=end)
        if not result:
            return None
        return {labels.get(by, ""): _finite(v) for labels, v in result}

    exec_by_status = totals(f"{c.ACTION_EXEC}{{{SEL}}}", "status")
    if not exec_by_status:
        raise SourceError(f"{prom.url}: no {c.ACTION_EXEC}{{{SEL}}} samples {where}: the window is empty")
    executions = sum(exec_by_status.values())
    if executions < MIN_EXECUTIONS:
        raise SourceError(
            f"{prom.url}: too little data {where}: {executions:,.0f} executions; "
            f"calibrate needs at least {MIN_EXECUTIONS:,} to fit the latency"
        )
    problems: list[str] = []
    latency = _histogram(prom, f"{c.ACTION_LATENCY}_bucket{{{SEL}}}", (span, end), c.LATENCY_BUCKETS, problems)
    mime = _histogram(prom, f"{c.MIME_BUILD}_bucket", (span, end), c.MIME_BUCKETS, problems)
    if problems:
        raise SourceError(f"{prom.url}: {'; '.join(problems)} {where}")
    assert latency is not None
    assert mime is not None
    errors = dict.fromkeys(catalog.ERROR_REASONS, 0.0) | (totals(f"{c.ACTION_ERROR}{{{SEL}}}", "reason") or {})
    structured_rows = prom.query(f"sum by (code, source) (increase({c.STRUCTURED_ERROR}{{{SEL}}}[{span}]))", at=end)
    structured = dict.fromkeys(catalog.STRUCTURED_SERIES, 0.0) | {
        (labels.get("code", ""), labels.get("source", "")): _finite(v) for labels, v in structured_rows
    }
    window = Window(
        prometheus=prom.url,
        start=start,
        end=end,
        hour_starts=start + HOUR * np.arange(hours, dtype=np.float64),
        hourly_sends=_hourly_sends(prom, start, hours),
        exec_by_status=exec_by_status,
        errors=errors,
        structured=structured,
        latency=latency,
        mime=mime,
        attachment_bytes=totals(c.ATTACHMENT_BYTES, "result"),
        inline=totals(c.INLINE_REFS, "result"),
        sanitization=totals(c.SANITIZATION, "change_type"),
        oauth=totals(f'{c.OAUTH_EVENTS}{{provider="{c.PROVIDER}"}}', "event"),
        controller_runs=totals(c.CONTROLLER_RUNS, "status"),
        controller_changes=totals(c.CONTROLLER_CHANGES, "result"),
        controller_percent=prom.value(f"max(last_over_time({c.CONTROLLER_PERCENT}[{span}]))", end),
    )
    unknown = sorted(set(errors) - set(catalog.ERROR_REASONS))
    if unknown:
        window.notes.append(f"reasons the model does not know were left out: {', '.join(unknown)}")
    if cut >= 1.0:
        window.notes.append(f"the window is read in whole hours: its last {cut / 60:.0f} minutes are left out")
    missing = int(np.isnan(window.hourly_sends).sum())
    if missing:
        window.notes.append(f"{missing} of {hours} hours have no samples and are left out of the rate fit")
    return window


def _hourly_sends(prom: Prometheus, start: float, hours: int) -> FloatArray:
    """Sends per hour: executions plus early-guard errors, each ``increase`` over the hour at its end."""
    out = np.full(hours, np.nan)
    first, last = start + HOUR, start + hours * HOUR
    for expr in (
        f"sum(increase({c.ACTION_EXEC}{{{SEL}}}[1h]))",
        f'sum(increase({c.ACTION_ERROR}{{{SEL},reason=~"{GUARDS}"}}[1h]))',
    ):
        for series in prom.range(expr, first, last, HOUR):
            for t, v in series.points:
                i = round((t - first) / HOUR)
                if 0 <= i < hours and not math.isnan(v):
                    out[i] = v if math.isnan(out[i]) else out[i] + v
    return out


def _histogram(
    prom: Prometheus, bucket: str, window: tuple[str, float], bounds: tuple[float, ...], problems: list[str]
) -> FloatArray | None:
    """Counts per bucket of ``bucket`` over the window; a problem when absent or laid out otherwise."""
    span, at = window
    rows = prom.query(f"sum by (le) (increase({bucket}[{span}]))", at=at)
    if not rows:
        problems.append(f"no {bucket} series")
        return None
    cumulative = sorted((float(labels.get("le", "nan")), _finite(v)) for labels, v in rows)
    found = tuple(le for le, _ in cumulative)
    expected = (*bounds, math.inf)
    if found != expected:
        problems.append(
            f"{bucket.split('{', 1)[0].removesuffix('_bucket')} has buckets le={_bounds(found)}; "
            f"calibrate fits the relay's layout le={_bounds(expected)}"
        )
        return None
    values = np.array([v for _, v in cumulative], dtype=np.float64)
    return np.diff(values, prepend=0.0).clip(min=0.0)


def _bounds(values: tuple[float, ...]) -> str:
    return ",".join("+Inf" if math.isinf(v) else f"{v:g}" for v in values)


def _finite(value: float) -> float:
    return 0.0 if math.isnan(value) else value
