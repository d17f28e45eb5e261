"""The vocabulary of a calibration: a fitted parameter with its uncertainty, and a goodness-of-fit table.

Every module of :mod:`loadsim.calibrate` speaks in these two types, and the profile
writer, the fit report and the plot read nothing else, so what the user sees for a
parameter (its value, its standard error, how it was found) is one object.
"""

from __future__ import annotations

from dataclasses import dataclass

POOR_P = 0.001
"""A fit is poor when its Pearson test's p-value is below this: data the fitted model
generated would look this bad one time in a thousand. A poor fit is still written, with
a warning (the documented bound of ``loadsim calibrate``)."""


@dataclass(frozen=True, slots=True)
class Estimate:
    """One parameter of the profile, as calibrated."""

    key: str
    """Where it goes in the profile, e.g. ``model.latency.p50``."""
    value: float
    se: float | None
    """Standard error; None when the value is held (not identifiable) or exact."""
    unit: str
    how: str
    """How it was found (``MLE, Fisher information``) or why it was held."""

    @property
    def fitted(self) -> bool:
        """Found from the window (held values keep the model's default and say why)."""
        return not self.how.startswith("held")


def held(key: str, value: float, unit: str, why: str) -> Estimate:
    """A parameter the window cannot identify: kept at ``value``, with the reason."""
    return Estimate(key, value, None, unit, f"held: {why}")


@dataclass(frozen=True, slots=True)
class Row:
    """One cell of a goodness-of-fit table: observed against expected counts."""

    label: str
    observed: float
    expected: float

    @property
    def residual(self) -> float:
        """Pearson residual ``(o - e) / sqrt(e)``."""
        return (self.observed - self.expected) / self.expected**0.5 if self.expected > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Goodness:
    """A fit's table and its Pearson chi-square test."""

    name: str
    rows: tuple[Row, ...]
    statistic: float
    df: int
    p_value: float
    effect: str
    """A size of the misfit a user can weigh (the test alone says little at a million sends)."""

    @property
    def poor(self) -> bool:
        """Beyond the documented bound (:data:`POOR_P`)."""
        return self.df > 0 and self.p_value < POOR_P

    def verdict(self) -> str:
        """``X² = 12.3 on 4 df, p = 0.015`` and the effect size."""
        return f"Pearson X² = {self.statistic:.1f} on {self.df} df, p = {self.p_value:.3g}; {self.effect}"
