"""A calibration: the window read, every fit, and the profile they make.

The fits run in the order their inputs need: the MIME build and attachments first (the
latency adds the build time to every call), then the latency (its tail decides how many
timeouts are slow calls rather than the timeout class), then the counts and the rate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from loadsim.calibrate import fit_errors, fit_latency, fit_mime, fit_rate
from loadsim.calibrate.estimate import Estimate, Goodness
from loadsim.calibrate.fit_errors import CountFit
from loadsim.calibrate.fit_latency import LatencyFit
from loadsim.calibrate.fit_mime import MimeFit
from loadsim.calibrate.fit_rate import RateFit, Shape
from loadsim.calibrate.read import Window, iso
from loadsim.model.params import ModelParams
from loadsim.profile import EngineSpec, Profile


@dataclass(frozen=True)
class Calibration:
    """Everything ``loadsim calibrate`` found, and the profile it writes."""

    window: Window
    rate: RateFit
    mime: MimeFit
    latency: LatencyFit
    counts: CountFit
    profile: Profile
    seconds: float
    """Wall time of the fits (reading excluded)."""

    @property
    def estimates(self) -> list[Estimate]:
        """Every parameter, in the profile's order."""
        return self.rate.estimates + self.latency.estimates + self.mime.estimates + self.counts.estimates

    @property
    def goodness(self) -> list[Goodness]:
        """The three fitted shapes' tests."""
        return [self.rate.goodness, self.latency.goodness, self.mime.goodness]

    @property
    def warnings(self) -> list[str]:
        """Poor fits (beyond the documented bound) and broken counter identities."""
        poor = [f"{g.name}: the fit is poor ({g.verdict()})" for g in self.goodness if g.poor]
        return poor + self.counts.warnings


def calibrate(window: Window, shape: Shape = "auto", name: str = "calibrated") -> Calibration:
    """Fit every part of the model to ``window`` and assemble the profile."""
    t0 = time.monotonic()
    mime = fit_mime.fit(window)
    latency = fit_latency.fit(window, mime.build_times)
    counts = fit_errors.fit(window, latency.converted)
    rate = fit_rate.fit(window, shape)
    model = ModelParams(
        latency=latency.params,
        mime=mime.mime,
        attachments=mime.attachments,
        inline=counts.inline,
        sanitization=counts.sanitization,
        oauth=counts.oauth,
        errors=counts.errors,
    )
    profile = Profile(
        name=name,
        description=f"calibrated from {window.prometheus}, {iso(window.start)} to {iso(window.end)}",
        duration=window.end - window.start,
        schedule=[rate.segment],
        model=model,
        controller=counts.controller,
        engine=EngineSpec(virtual_start=datetime.fromtimestamp(window.start, UTC)),
    )
    return Calibration(window, rate, mime, latency, counts, profile, time.monotonic() - t0)
