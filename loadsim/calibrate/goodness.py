"""Pearson's chi-square test for a fitted histogram or rate curve.

Cells whose expected count is below 5 are merged into their neighbour (the usual rule,
so the statistic's chi-square law holds), and the degrees of freedom are the merged
cells less one (for multinomial data, whose total is fixed) less the parameters fitted
to those cells.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from loadsim.calibrate.estimate import Goodness, Row

MIN_EXPECTED = 5.0

FloatArray = NDArray[np.float64]


def merged(rows: Sequence[Row]) -> list[Row]:
    """Neighbours merged until each cell expects :data:`MIN_EXPECTED` or more (a small last one joins its left)."""
    out: list[Row] = []
    for row in rows:
        if out and out[-1].expected < MIN_EXPECTED:
            out[-1] = _join(out[-1], row)
        else:
            out.append(row)
    if len(out) > 1 and out[-1].expected < MIN_EXPECTED:
        last = out.pop()
        out[-1] = _join(out[-1], last)
    return out


def _join(a: Row, b: Row) -> Row:
    """Two neighbouring cells as one: ``0.1…0.25`` and ``0.25…0.5`` make ``0.1…0.5``."""
    label = f"{a.label.split('…')[0]}…{b.label.split('…')[-1]}"
    return Row(label, a.observed + b.observed, a.expected + b.expected)


def pearson(name: str, rows: Sequence[Row], fitted: int, effect: str, *, total_fixed: bool = True) -> Goodness:
    """The test over ``rows`` (merged); ``fitted`` parameters were estimated from these cells."""
    cells = merged(rows)
    obs = np.array([r.observed for r in cells])
    exp = np.array([r.expected for r in cells])
    statistic = float(np.sum((obs - exp) ** 2 / exp)) if len(cells) else 0.0
    df = len(cells) - (1 if total_fixed else 0) - fitted
    p = float(stats.chi2.sf(statistic, df)) if df > 0 else 1.0
    return Goodness(name, tuple(rows), statistic, max(df, 0), p, effect)


def cdf_gap(observed: FloatArray, expected: FloatArray) -> float:
    """The largest distance between the observed and fitted CDFs at the bucket bounds."""
    co = np.cumsum(observed) / max(float(observed.sum()), 1.0)
    ce = np.cumsum(expected) / max(float(expected.sum()), 1.0)
    return float(np.max(np.abs(co - ce)))
