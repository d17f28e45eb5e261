"""Observed against fitted, as a PNG beside the profile: the send rate over the window, and the two CDFs.

Drawn with matplotlib's object API on an Agg canvas (no pyplot state, no display), so
it neither needs nor disturbs the SVG backend the report's plots select.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import DateFormatter
from matplotlib.figure import Figure
from numpy.typing import NDArray

from loadsim import contract as c
from loadsim.calibrate.read import HOUR
from loadsim.calibrate.result import Calibration

FloatArray = NDArray[np.float64]
OBSERVED = "#1f5fa8"
FITTED = "#d1495b"


def _dates(ts: FloatArray) -> list[datetime]:
    return [datetime.fromtimestamp(float(t), UTC) for t in ts]


def draw(cal: Calibration, out: Path) -> Path:
    """Three panels: sends/s per hour, the latency CDF, the MIME build CDF."""
    fig = Figure(figsize=(10, 10), dpi=100)
    FigureCanvasAgg(fig)
    rate_ax, latency_ax, mime_ax = fig.subplots(3, 1, gridspec_kw={"height_ratios": [1.2, 1, 1]})
    w = cal.window
    mid = w.hour_starts + HOUR / 2
    rate_ax.plot(_dates(mid), w.hourly_sends / HOUR, "o", ms=2.5, color=OBSERVED, label="observed (hourly mean)")
    t, r = cal.rate.curve
    rate_ax.plot(_dates(t), r, "-", lw=1.2, color=FITTED, label=f"fitted ({cal.rate.shape})")
    rate_ax.set_title(f"Send rate: {cal.rate.goodness.verdict()}", fontsize=9, loc="left")
    rate_ax.set_ylabel("sends/s", fontsize=8)
    rate_ax.xaxis.set_major_formatter(DateFormatter("%m-%d %H:%M", tz=UTC))  # type: ignore[no-untyped-call]
    for ax, counts, bounds, (xs, cdf), g in (
        (latency_ax, w.latency, c.LATENCY_BUCKETS, cal.latency.cdf, cal.latency.goodness),
        (mime_ax, w.mime, c.MIME_BUCKETS, cal.mime.cdf, cal.mime.goodness),
    ):
        observed = np.cumsum(counts[: len(bounds)]) / counts.sum()
        ax.plot(bounds, observed, "o", ms=5, color=OBSERVED, label="observed (at the bucket bounds)")
        ax.plot(xs, cdf, "-", lw=1.2, color=FITTED, label="fitted")
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("seconds", fontsize=8)
        ax.set_ylabel("share at or below", fontsize=8)
        ax.set_title(f"{g.name} CDF: {g.verdict()}", fontsize=9, loc="left")
        inset = ax.inset_axes((0.55, 0.12, 0.42, 0.45))
        seen, fitted = 1 - observed > 0, 1 - cdf > 1e-9  # a log axis shows only what is above zero
        inset.plot(np.asarray(bounds)[seen], (1 - observed)[seen], "o", ms=3, color=OBSERVED)
        inset.plot(xs[fitted], (1 - cdf)[fitted], "-", lw=1, color=FITTED)
        inset.set_xscale("log")
        inset.set_yscale("log")
        inset.set_title("tail: share above", fontsize=7)
        inset.tick_params(labelsize=6)
    for ax in (rate_ax, latency_ax, mime_ax):
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out, format="png")
    return out
