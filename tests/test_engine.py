"""The engine: open model, in-flight accounting, the drop cap, and a 48-hour diurnal run in virtual time."""

from __future__ import annotations

import asyncio
import itertools
import math
from statistics import NormalDist

import numpy as np
import pytest
from conftest import Run, make_plan, run_plan, scrape, total
from numpy.typing import NDArray

from loadsim.engine.loop import Engine
from loadsim.model.catalog import EARLY_GUARD_REASONS
from loadsim.plan import RunPlan

HOUR = 3600.0
FloatArray = NDArray[np.float64]


def steady(rate: str, duration: str, **extra: object) -> RunPlan:
    return make_plan(duration=duration, seed=3, schedule=[{"kind": "constant", "rate": rate}], **extra)


def in_flight_gauge(engine: Engine) -> float:
    """``loadsim_sends_in_flight`` as a scrape would read it now."""
    (family,) = engine.health.in_flight.collect()
    return float(family.samples[0].value)


class TestOpenModel:
    def test_in_flight_follows_littles_law(self) -> None:
        plan = steady("1000/s", "10m")
        seen: list[float] = []
        run = run_plan(plan, on_window=lambda e, _t: seen.append(in_flight_gauge(e)))
        mid = np.array(seen[6:-1])  # past the first 30 s (timeouts are 30 s long)
        assert mid.min() > 0
        # Little's law: sends in flight at a window's end ~ rate x mean latency (the latency sum
        # over count from the relay's histogram). Per sample ~Poisson(~190); averaged over 100+
        # windows it is within a few percent; the 30 s timeouts correlate windows, hence 10%.
        s = scrape(run.registry)
        mean_latency = total(s, "action_latency_seconds_sum") / total(s, "action_latency_seconds_count")
        assert mid.mean() == pytest.approx(1000 * mean_latency, rel=0.10)

    def test_arrivals_do_not_wait_for_completions(self) -> None:
        def per_second(plan: RunPlan) -> FloatArray:
            counts = np.zeros(int(plan.duration))

            def observe(_t0: float, _t1: float, starts: FloatArray) -> None:
                np.add.at(counts, starts.astype(np.int64), 1)

            run_plan(plan, observers=[observe])
            return counts

        fast = per_second(steady("50/s", "10m"))
        slow = per_second(steady("50/s", "10m", model={"latency": {"p50": "20s", "p95": "28s"}}))
        np.testing.assert_array_equal(fast, slow)


@pytest.fixture(scope="module")
def drained() -> tuple[Run, int]:
    """5% timeouts at 100/s for 10 minutes, and how many sends were in flight when arrivals stopped."""
    plan = steady("100/s", "10m", model={"errors": {"gmail_timeout": 0.05, "rollout_gated": 0.01}})
    at_end: list[int] = []

    def window(engine: Engine, t1: float) -> None:
        if t1 == plan.duration:
            at_end.append(engine.driver.in_flight())

    run = run_plan(plan, on_window=window)
    return run, at_end[0]


class TestEndOfRun:
    @pytest.fixture
    def run(self, drained: tuple[Run, int]) -> Run:
        return drained[0]

    def test_sends_were_in_flight_when_arrivals_stopped(self, drained: tuple[Run, int]) -> None:
        # ~5/s time out after 30 s: about 150 are waiting when the schedule ends.
        assert drained[1] > 50

    def test_every_started_send_finished(self, run: Run) -> None:
        assert run.result.abandoned == 0
        assert run.counts.abandoned == 0
        assert run.summary.finished == run.counts.started
        assert run.result.run_seconds == run.engine.plan.duration  # the drain is not run time
        assert run.engine.driver.in_flight() == 0

    def test_metrics_account_for_every_started_send(self, run: Run) -> None:
        s = scrape(run.registry)
        guards = sum(total(s, "action_error_total", reason=r) for r in EARLY_GUARD_REASONS)
        assert guards > 0
        assert total(s, "action_exec_total") + guards == run.counts.started
        assert total(s, "loadsim_sends_started_total") == run.counts.started
        assert total(s, "loadsim_sends_in_flight") == 0
        assert total(s, "loadsim_sends_abandoned_total") == 0
        # The run did what the schedule asked: 60k expected, Poisson sd 245.
        assert abs(run.counts.started - 60_000) < 5 * math.sqrt(60_000)

    def test_health_counters_balance(self, run: Run) -> None:
        s = scrape(run.registry)
        started = total(s, "loadsim_sends_started_total")
        completed = total(s, "loadsim_sends_completed_total")
        in_flight = total(s, "loadsim_sends_in_flight")
        abandoned = total(s, "loadsim_sends_abandoned_total")
        assert started == completed + in_flight + abandoned

    def test_sends_still_in_flight_after_the_grace_are_abandoned_and_counted(self) -> None:
        # 5% of sends time out after 30 s but the drain waits only 10 s: ~5/s x 30 s are left.
        plan = steady("100/s", "5m", model={"errors": {"gmail_timeout": 0.05}}, engine={"grace": "10s"})
        run = run_plan(plan)
        s = scrape(run.registry)
        assert run.result.abandoned > 50
        assert run.counts.abandoned == run.result.abandoned == total(s, "loadsim_sends_abandoned_total")
        assert run.summary.finished + run.counts.abandoned == run.counts.started
        assert total(s, "loadsim_sends_in_flight") == 0
        # Abandoned sends never reach the relay's counters.
        guards = sum(total(s, "action_error_total", reason=r) for r in EARLY_GUARD_REASONS)
        assert total(s, "action_exec_total") + guards + run.result.abandoned == run.counts.started

    def test_stop_requested_drains_and_ends_early(self) -> None:
        plan = steady("20/s", "1h")

        def stop(engine: Engine, t1: float) -> None:
            if t1 >= 600:
                engine.request_stop()

        run = run_plan(plan, on_window=stop)
        assert run.result.stopped_early
        assert run.result.run_seconds == 600
        assert run.summary.finished == run.counts.started
        assert abs(run.counts.started - 12_000) < 5 * math.sqrt(12_000)


class TestDropCap:
    def test_arrivals_beyond_the_cap_are_dropped_and_counted(self) -> None:
        cap = 50
        plan = steady("1000/s", "5m", engine={"max_in_flight": cap})
        peaks: list[int] = []
        run = run_plan(plan, on_window=lambda e, _t: peaks.append(e.driver.in_flight()))
        s = scrape(run.registry)
        dropped = total(s, "loadsim_arrivals_dropped_total")
        assert dropped > 0
        assert dropped == run.counts.dropped
        assert run.counts.started + run.counts.dropped == run.counts.scheduled
        assert total(s, "loadsim_sends_started_total") + dropped == total(s, "loadsim_arrivals_scheduled_total")
        assert max(peaks) <= cap
        # Scheduled arrivals are the schedule's, whatever was dropped: 300k, Poisson sd 548.
        assert abs(run.counts.scheduled - 300_000) < 5 * math.sqrt(300_000)
        # Dropped sends never reach the relay's counters.
        guards = sum(total(s, "action_error_total", reason=r) for r in EARLY_GUARD_REASONS)
        assert total(s, "action_exec_total") + guards == run.counts.started

    def test_no_drops_under_the_cap(self) -> None:
        run = run_plan(steady("1000/s", "2m"))
        assert run.counts.dropped == 0
        assert run.counts.started == run.counts.scheduled


@pytest.fixture(scope="module")
def hourly() -> tuple[RunPlan, FloatArray]:
    """Arrivals per hour of ``{'duration': '48h', 'schedule': [diurnal 1.2/s .. 6/s]}`` (~6 s of CPU)."""
    plan = make_plan(duration="48h", schedule=[{"kind": "diurnal", "trough": "1.2/s", "peak": "6/s"}])
    counts = np.zeros(48)

    def observe(_t0: float, _t1: float, starts: FloatArray) -> None:
        np.add.at(counts, (starts // HOUR).astype(np.int64), 1)

    run_plan(plan, observers=[observe])
    return plan, counts


@pytest.mark.slow
class TestDiurnal48h:
    """The default virtual start is Monday 00:00 UTC, so 48 hours are two weekdays."""

    def test_each_hour_follows_the_schedule(self, hourly: tuple[RunPlan, FloatArray]) -> None:
        plan, counts = hourly
        want = np.array([plan.expected_sends(h * HOUR, (h + 1) * HOUR) for h in range(48)])
        z = (counts - want) / np.sqrt(want)
        assert np.abs(z).max() < 5
        # Chi-square with 48 dof; Wilson-Hilferty gives its 99.99th percentile (~95).
        chi2 = float((z**2).sum())
        k = 48
        limit = k * (1 - 2 / (9 * k) + NormalDist().inv_cdf(0.9999) * math.sqrt(2 / (9 * k))) ** 3
        assert chi2 < limit
        assert counts.sum() == pytest.approx(plan.expected_sends(), rel=5 / math.sqrt(plan.expected_sends()))

    def test_day_curve_peaks_at_14h_and_bottoms_out_at_night(self, hourly: tuple[RunPlan, FloatArray]) -> None:
        plan, counts = hourly
        want = np.array([plan.expected_sends(h * HOUR, (h + 1) * HOUR) for h in range(24)])
        for day in counts.reshape(2, 24):
            # The curve peaks at 14:00 exactly, so hours [13, 14) and [14, 15) expect the same
            # count; the hours beside them expect 5% less (~5 sd at ~21k per hour).
            assert int(np.argmax(day)) in (13, 14)
            # Sharpness 2 flattens the night: 00:00-05:00 all sit within 1% of the 1.2/s trough,
            # so the quietest hour is any of them, never a daytime one.
            assert int(np.argmin(day)) in range(5)
            # Peak hours ~5.95/s, night hours ~1.2/s: means of two hours ~21.4k and ~4.3k, sd 0.5% and
            # 1.1%, so the ratio's sd is ~1.2% and 5% is ~4 sd.
            ratio = want[13:15].mean() / want[1:3].mean()
            assert ratio == pytest.approx(4.96, rel=0.01)
            assert day[13:15].mean() / day[1:3].mean() == pytest.approx(ratio, rel=0.05)

    def test_two_weekdays_look_alike(self, hourly: tuple[RunPlan, FloatArray]) -> None:
        _, counts = hourly
        monday, tuesday = counts.reshape(2, 24).sum(axis=1)
        assert abs(monday - tuesday) < 5 * math.sqrt(monday + tuesday)


def test_wall_clock_reads_finer_than_uvloops_millisecond() -> None:
    # uvloop's loop.time() is cached per iteration and whole milliseconds; the wall clock must
    # not be, or tick lateness under-reads by up to 1 ms. No sleep: readings within one callback.
    import uvloop

    from loadsim.clock import WallClock

    async def readings() -> list[float]:
        clock = WallClock(origin_offset=5.0)
        return [clock.now() for _ in range(2000)]

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        values = runner.run(readings())
    assert values[0] >= 5.0
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert len(set(values)) > 1
    steps = [b - a for a, b in itertools.pairwise(values) if b > a]
    assert min(steps) < 0.0005
