"""Rate schedules: integrals against numeric integration, scalar against vector, the worked examples."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest

from loadsim.plan import build_schedule
from loadsim.profile import DEFAULT_VIRTUAL_START, parse_profile
from loadsim.schedule import SECONDS_PER_DAY, Constant, Diurnal, FloatArray, Ramp, Schedule, Segment, Steps

HOUR = 3600.0
DAY = SECONDS_PER_DAY
MONDAY = Diurnal(trough=1.2, peak=6.0, peak_hour=14.0, sharpness=2.0, weekend_factor=0.4, week_offset=0.0)


def numeric_integral(rate: Callable[[FloatArray], FloatArray], a: float, b: float, points: int = 400_000) -> float:
    """Midpoint rule on a fine grid: exact for piecewise-linear rates with edges on the grid,
    error below ``jump * h`` per discontinuity otherwise."""
    h = (b - a) / points
    mids = a + (np.arange(points, dtype=np.float64) + 0.5) * h
    return float(rate(mids).sum() * h)


SCHEDULES: dict[str, Schedule] = {
    "constant": Schedule([(Constant(2.5), None)]),
    "ramp": Schedule([(Ramp(1.0, 5.0, 600.0), None)]),
    "ramp-down": Schedule([(Ramp(8.0, 0.5, 900.0), None)]),
    "steps": Schedule([(Steps((1.0, 3.0, 0.5, 7.0), 250.0), None)]),
    "diurnal": Schedule([(MONDAY, None)]),
    "diurnal-friday": Schedule([(Diurnal(1.2, 6.0, 14.0, 2.0, 0.4, 4 * DAY + 12 * HOUR), None)]),
    "composite": Schedule(
        [
            (Ramp(1.0, 5.0, 600.0), 600.0),
            (Steps((5.0, 2.0, 9.0), 120.0), 360.0),
            (Constant(3.0), 40.0),
            (Diurnal(1.2, 6.0, 14.0, 2.0, 0.4, 3 * DAY), None),
        ]
    ),
}

# (start, end) pairs that start and end off every edge, straddle edges, and run far past the last one.
INTERVALS = [(0.0, 600.0), (12.3, 457.9), (590.0, 1010.5), (0.0, 5 * HOUR), (123.4, 2 * DAY + 17.0)]


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize(("a", "b"), INTERVALS)
def test_expected_is_the_integral_of_rate(name: str, a: float, b: float) -> None:
    schedule = SCHEDULES[name]
    # Grid step h <= 0.1 s: each rate jump (at most 8.5/s) off the grid costs the midpoint rule
    # under 8.5 * h / 2 arrivals, a few edges at most 2.5 in all, i.e. < 1e-5 of the 2-day interval;
    # on short intervals h is ~1 ms, so the absolute bound is tiny. Diurnal Simpson pieces are
    # smooth except at the weekend edge, whose jump is 0.013/s (< 4 arrivals even if mid-piece).
    points = max(400_000, int((b - a) / 0.1))
    want = numeric_integral(schedule.rate, a, b, points)
    assert schedule.expected(a, b) == pytest.approx(want, rel=2e-5, abs=0.05)


@pytest.mark.parametrize("name", SCHEDULES)
def test_expected_is_additive_over_windows(name: str) -> None:
    schedule = SCHEDULES[name]
    edges = np.arange(0.0, 3 * HOUR + 1, 5.0)
    windows = sum(schedule.expected(a, b) for a, b in itertools.pairwise(edges))
    assert windows == pytest.approx(schedule.expected(0.0, 3 * HOUR), rel=1e-9)


@pytest.mark.parametrize("name", SCHEDULES)
def test_at_equals_rate(name: str) -> None:
    schedule = SCHEDULES[name]
    ts = np.concatenate([np.linspace(0.0, 8 * DAY, 5001), [0.0, 599.999, 600.0, 960.0, 1000.0, 5 * DAY]])
    vector = schedule.rate(ts)
    scalar = np.array([schedule.at(float(t)) for t in ts])
    np.testing.assert_allclose(scalar, vector, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("segment", "t", "want"),
    [
        (Constant(4.0), 1e6, 4.0),
        (Ramp(1.0, 5.0, 600.0), 0.0, 1.0),
        (Ramp(1.0, 5.0, 600.0), 300.0, 3.0),
        (Ramp(1.0, 5.0, 600.0), 600.0, 5.0),
        (Ramp(1.0, 5.0, 600.0), 1e6, 5.0),
        (Steps((1.0, 3.0, 0.5), 10.0), 9.999, 1.0),
        (Steps((1.0, 3.0, 0.5), 10.0), 10.0, 3.0),
        (Steps((1.0, 3.0, 0.5), 10.0), 1e6, 0.5),
    ],
)
def test_segment_rates(segment: Segment, t: float, want: float) -> None:
    assert segment.at(t) == pytest.approx(want)
    assert Schedule([(segment, None)]).rate(t)[0] == pytest.approx(want)


class TestRampWorkedExample:
    """The module docstring: 1/s to 5/s over 10 minutes, then constant 5/s."""

    schedule = Schedule([(Ramp(1.0, 5.0, 600.0), 600.0), (Constant(5.0), None)])

    def test_ramp_expects_1800(self) -> None:
        assert self.schedule.expected(0.0, 600.0) == pytest.approx(1800.0)

    def test_constant_expects_300_in_the_next_minute(self) -> None:
        assert self.schedule.expected(600.0, 660.0) == pytest.approx(300.0)

    def test_rate_is_linear_inside_the_ramp(self) -> None:
        for t in (0.0, 150.0, 450.0, 599.0):
            assert self.schedule.at(t) == pytest.approx(1.0 + 4.0 * t / 600.0)

    def test_expected_over_a_part_of_the_ramp(self) -> None:
        # Trapezoid over [150, 450): rates 2 and 4.
        assert self.schedule.expected(150.0, 450.0) == pytest.approx((2.0 + 4.0) / 2 * 300.0)


class TestLastSegmentHolds:
    def test_ramp_holds_its_end(self) -> None:
        s = Schedule([(Ramp(1.0, 5.0, 600.0), 600.0)])
        assert s.at(10_000.0) == 5.0
        assert s.expected(600.0, 1600.0) == pytest.approx(5000.0)

    def test_steps_hold_the_last_rate(self) -> None:
        s = Schedule([(Constant(1.0), 100.0), (Steps((2.0, 4.0), 50.0), 100.0)])
        assert s.at(1e6) == 4.0
        assert s.expected(200.0, 1200.0) == pytest.approx(4000.0)

    def test_constant_holds(self) -> None:
        s = Schedule([(Ramp(0.0, 2.0, 10.0), 10.0), (Constant(3.0), 60.0)])
        assert s.at(1e7) == 3.0
        assert s.expected(70.0, 170.0) == pytest.approx(300.0)

    def test_diurnal_keeps_cycling(self) -> None:
        s = Schedule([(Constant(1.0), 3600.0), (MONDAY, HOUR)])
        for t in (2 * HOUR, 14 * HOUR + 3600, 30 * HOUR):
            assert s.at(t + 7 * DAY) == pytest.approx(s.at(t))
        assert s.expected(3 * DAY, 3 * DAY + HOUR) > 0

    def test_earlier_segments_end_at_their_duration(self) -> None:
        s = Schedule([(Constant(1.0), 100.0), (Constant(9.0), None)])
        assert s.at(99.999) == 1.0
        assert s.at(100.0) == 9.0
        assert s.expected(50.0, 150.0) == pytest.approx(50.0 + 450.0)

    def test_only_the_last_segment_may_be_open_ended(self) -> None:
        with pytest.raises(ValueError, match="segment 0 needs a duration"):
            Schedule([(Constant(1.0), None), (Constant(2.0), None)])
        with pytest.raises(ValueError, match="at least one segment"):
            Schedule([])


class TestDiurnal:
    """Values stated in the Diurnal docstring (trough 1.2/s, peak 6/s, peak hour 14, sharpness 2)."""

    def test_peak_at_14h(self) -> None:
        assert MONDAY.at(14 * HOUR) == pytest.approx(6.0)

    def test_trough_at_2h(self) -> None:
        assert MONDAY.at(2 * HOUR) == pytest.approx(1.2)

    @pytest.mark.parametrize("hour", [10, 18])
    def test_3_9_at_10h_and_18h(self, hour: int) -> None:
        assert MONDAY.at(hour * HOUR) == pytest.approx(3.9, abs=0.01)

    @pytest.mark.parametrize("hour", [0.0, 2.0, 6.5, 10.0, 13.0, 14.0, 18.0, 23.9])
    def test_follows_the_documented_formula(self, hour: float) -> None:
        shape = ((1 + math.cos(2 * math.pi * (hour - 14) / 24)) / 2) ** 2
        assert MONDAY.at(hour * HOUR) == pytest.approx(1.2 + 4.8 * shape)

    def test_symmetric_about_the_peak(self) -> None:
        for d in (1.0, 4.0, 7.5):
            assert MONDAY.at((14 - d) * HOUR) == pytest.approx(MONDAY.at((14 + d) * HOUR))

    @pytest.mark.parametrize(("day", "weekend"), [(0, False), (4, False), (5, True), (6, True)])
    def test_weekend_factor_on_saturday_and_sunday(self, day: int, weekend: bool) -> None:
        factor = 0.4 if weekend else 1.0
        assert MONDAY.at(day * DAY + 14 * HOUR) == pytest.approx(1.2 + 4.8 * factor)
        assert MONDAY.at(day * DAY + 2 * HOUR) == pytest.approx(1.2)  # the trough is the floor on every day

    def test_weekend_day_expects_less_than_a_weekday(self) -> None:
        weekday = MONDAY.integral(2 * DAY, 3 * DAY)
        saturday = MONDAY.integral(5 * DAY, 6 * DAY)
        trough_only = 1.2 * DAY
        assert saturday - trough_only == pytest.approx(0.4 * (weekday - trough_only), rel=1e-6)

    def test_week_offset_shifts_the_calendar(self) -> None:
        saturday_start = Diurnal(1.2, 6.0, 14.0, 2.0, 0.4, week_offset=5 * DAY)
        assert saturday_start.at(14 * HOUR) == pytest.approx(MONDAY.at(5 * DAY + 14 * HOUR))
        assert saturday_start.at(2 * DAY + 14 * HOUR) == pytest.approx(6.0)  # Monday again

    def test_default_virtual_start_is_monday_midnight(self) -> None:
        profile = parse_profile({"schedule": [{"kind": "diurnal", "trough": "1.2/s", "peak": "6/s"}]}, "test")
        schedule = build_schedule(profile.schedule, DEFAULT_VIRTUAL_START.timestamp())
        seg = schedule.placed[0].segment
        assert isinstance(seg, Diurnal)
        assert seg.week_offset == 0.0
        assert schedule.at(14 * HOUR) == pytest.approx(6.0)

    def test_a_later_diurnal_segment_learns_its_own_weekday(self) -> None:
        profile = parse_profile(
            {
                "schedule": [
                    {"kind": "constant", "rate": "1/s", "duration": "5d"},
                    {"kind": "diurnal", "trough": "1.2/s", "peak": "6/s"},
                ]
            },
            "test",
        )
        schedule = build_schedule(profile.schedule, DEFAULT_VIRTUAL_START.timestamp())
        # Run day 5 is a Saturday: its 14:00 gets the weekend factor.
        assert schedule.at(5 * DAY + 14 * HOUR) == pytest.approx(1.2 + 4.8 * 0.4)
