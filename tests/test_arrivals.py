"""Arrival processes: Poisson counts, exactly spaced even arrivals, same seed same run."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from conftest import make_plan, run_plan
from numpy.typing import NDArray

from loadsim.arrivals import ArrivalKind, Arrivals
from loadsim.engine.seeds import RunRandom
from loadsim.schedule import Constant, Ramp, Schedule

FloatArray = NDArray[np.float64]


def draw_all(arrivals: Arrivals, duration: float, tick: float) -> list[FloatArray]:
    """Draw consecutive windows of ``tick`` seconds up to ``duration``; one array per window."""
    edges = np.arange(0.0, duration + tick / 2, tick)
    return [arrivals.draw(float(a), float(b)) for a, b in itertools.pairwise(edges)]


class TestPoisson:
    def test_window_counts_are_poisson(self) -> None:
        lam, windows = 50.0, 4000  # 10/s in 5 s windows
        arrivals = Arrivals(Schedule([(Constant(10.0), None)]), ArrivalKind.POISSON, np.random.default_rng(11))
        counts = np.array([len(w) for w in draw_all(arrivals, 5.0 * windows, 5.0)], dtype=np.float64)
        # Mean of 4000 Poisson(50): sd sqrt(50/4000) = 0.11, so 5 sd = 0.56.
        assert abs(counts.mean() - lam) < 5 * math.sqrt(lam / windows)
        # Sample variance of Poisson(50): Var(s^2) ~ (lam + 2 lam^2) / n, sd ~ 1.12; 5 sd = 5.6.
        assert abs(counts.var(ddof=1) - lam) < 5 * math.sqrt((lam + 2 * lam * lam) / windows)
        # No single window is absurd: 6 sd of one Poisson(50) is 42.
        assert np.abs(counts - lam).max() < 6 * math.sqrt(lam)

    def test_times_are_uniform_inside_their_window(self) -> None:
        arrivals = Arrivals(Schedule([(Constant(200.0), None)]), ArrivalKind.POISSON, np.random.default_rng(3))
        phases = []
        for t0 in np.arange(10.0, 2510.0, 5.0):
            starts = arrivals.draw(float(t0), float(t0) + 5.0)
            assert starts.min() >= t0
            assert starts.max() < t0 + 5.0
            phases.append((starts - t0) / 5.0)
        phase = np.concatenate(phases)
        # ~500k phases in 20 equal bins (~25k each, sd ~155): every bin within 5 sd, so a window
        # filled 1% short or long (a 250-arrival hole at one end) shows.
        counts = np.bincount((phase * 20).astype(np.int64), minlength=20)
        want = len(phase) / 20
        assert np.abs(counts - want).max() < 5 * math.sqrt(want)

    def test_total_follows_a_ramp(self) -> None:
        schedule = Schedule([(Ramp(1.0, 21.0, 3600.0), None)])
        arrivals = Arrivals(schedule, ArrivalKind.POISSON, np.random.default_rng(5))
        per_window = draw_all(arrivals, 3600.0, 5.0)
        first, last = sum(len(w) for w in per_window[:360]), sum(len(w) for w in per_window[360:])
        # Exact expectations: 1800 s at 1..11/s and 1800 s at 11..21/s, Poisson sd = sqrt(mean).
        for got, want in ((first, schedule.expected(0, 1800)), (last, schedule.expected(1800, 3600))):
            assert abs(got - want) < 5 * math.sqrt(want)
        assert arrivals.cumulative_expected == pytest.approx(schedule.expected(0, 3600))

    def test_scale_multiplies_the_schedule(self) -> None:
        arrivals = Arrivals(Schedule([(Constant(100.0), None)]), ArrivalKind.POISSON, np.random.default_rng(9))
        n = sum(len(arrivals.draw(float(t), float(t) + 5.0, scale=0.25)) for t in range(0, 3600, 5))
        want = 100.0 * 0.25 * 3600
        assert abs(n - want) < 5 * math.sqrt(want)


class TestEven:
    def test_constant_2_per_second_is_half_a_second_apart(self) -> None:
        arrivals = Arrivals(Schedule([(Constant(2.0), None)]), ArrivalKind.EVEN, np.random.default_rng(0))
        starts = np.concatenate(draw_all(arrivals, 600.0, 5.0))
        assert len(starts) == 1200
        np.testing.assert_allclose(np.diff(starts), 0.5, rtol=0, atol=1e-9)
        assert starts[0] == 0.0

    @pytest.mark.parametrize(("rate", "tick"), [(2.0, 0.1), (3.0, 0.1), (7.3, 5.0), (0.7, 0.25)])
    def test_spacing_is_exact_across_awkward_windows(self, rate: float, tick: float) -> None:
        # Window expectations such as 0.3 are not exact in binary; the phase must not drift or
        # skip/duplicate an arrival where a window ends on a whole number.
        arrivals = Arrivals(Schedule([(Constant(rate), None)]), ArrivalKind.EVEN, np.random.default_rng(0))
        starts = np.concatenate(draw_all(arrivals, 300.0, tick))
        assert len(starts) == pytest.approx(rate * 300.0, abs=1)
        np.testing.assert_allclose(np.diff(starts), 1.0 / rate, rtol=0, atol=1e-9)

    def test_count_within_one_on_any_window(self) -> None:
        arrivals = Arrivals(Schedule([(Constant(2.0), None)]), ArrivalKind.EVEN, np.random.default_rng(0))
        starts = np.sort(np.concatenate(draw_all(arrivals, 3600.0, 5.0)))
        rng = np.random.default_rng(1)
        for _ in range(2000):
            a = rng.uniform(0.0, 3000.0)
            w = rng.uniform(0.01, 500.0)
            n = np.searchsorted(starts, a + w, side="left") - np.searchsorted(starts, a, side="left")
            assert abs(n - 2.0 * w) <= 1.0

    def test_ramp_total_within_one_and_increasing_density(self) -> None:
        schedule = Schedule([(Ramp(1.0, 5.0, 600.0), None)])
        arrivals = Arrivals(schedule, ArrivalKind.EVEN, np.random.default_rng(0))
        starts = np.concatenate(draw_all(arrivals, 600.0, 5.0))
        assert abs(len(starts) - 1800) <= 1
        gaps = np.diff(starts)
        assert gaps[:50].mean() > 2 * gaps[-50:].mean()  # 1/s at the start, 5/s at the end

    def test_does_not_use_the_random_stream(self) -> None:
        a = Arrivals(Schedule([(Constant(3.0), None)]), ArrivalKind.EVEN, np.random.default_rng(1))
        b = Arrivals(Schedule([(Constant(3.0), None)]), ArrivalKind.EVEN, np.random.default_rng(2))
        np.testing.assert_array_equal(np.concatenate(draw_all(a, 60, 5)), np.concatenate(draw_all(b, 60, 5)))


def per_second_counts(seed: int, kind: str = "poisson") -> FloatArray:
    """Per-second arrival counts of a whole 30-minute ramp-then-constant plan run on the virtual clock."""
    plan = make_plan(
        duration="30m",
        seed=seed,
        arrivals=kind,
        schedule=[
            {"kind": "ramp", "from": "1/s", "to": "40/s", "duration": "10m"},
            {"kind": "constant", "rate": "40/s"},
        ],
    )
    counts = np.zeros(int(plan.duration), dtype=np.float64)

    def observe(_t0: float, _t1: float, starts: FloatArray) -> None:
        np.add.at(counts, starts.astype(np.int64), 1)

    run_plan(plan, observers=[observe])
    return counts


class TestSeeds:
    def test_same_seed_same_per_second_counts(self) -> None:
        a, b = per_second_counts(42), per_second_counts(42)
        np.testing.assert_array_equal(a, b)
        assert a.sum() > 50_000  # the run did happen

    def test_different_seed_differs(self) -> None:
        a, b = per_second_counts(42), per_second_counts(43)
        assert (a != b).mean() > 0.5
        # Both still follow the schedule: 10 min ramp 1..40/s (12300) + 20 min at 40/s (48000).
        for counts in (a, b):
            assert abs(counts.sum() - 60_300) < 5 * math.sqrt(60_300)

    def test_streams_are_independent_per_concern(self) -> None:
        r = RunRandom.from_seed(7)
        again = RunRandom.from_seed(7)
        assert r.arrivals.random() == again.arrivals.random()
        assert r.arrivals.random() != r.outcomes.random()

    def test_even_arrivals_are_the_same_whatever_the_seed(self) -> None:
        np.testing.assert_array_equal(per_second_counts(1, "even"), per_second_counts(2, "even"))
