"""The benchmark's hold criterion, rule by rule, on hand-made runs (bench/http_throughput.py).

The self-test (``python -m bench.http_throughput --self-test``) shows on a real machine that
slower machines hold and collapses do not; these tests pin the rule it applies, so a change
to the rule that would let a collapse through, or fail a driver that did what the machine let
it, fails here first. Each run is 10 s against a target of 60,000/s with a 10,000 cap.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.http_throughput import HOLD_ATTEMPTS, HoldCheck, Run

TARGET = 60_000.0
SECONDS = 10.0
CAP = 10_000


def capacity(rate: float, *, others: float = 0.0) -> dict[str, Any]:
    """A capacity run's record as ``capacity_record`` writes it."""
    return {"failed": None, "finished_per_s": rate, "rate_per_s": rate, "others_share": others, "cpu_share": 1.0}


def hold_run(
    finished_per_s: float,
    *,
    dropped_share: float = 0.0,
    capacities: tuple[float, ...] = (66_000.0, 66_000.0),
    backlog_end: float = 300.0,
    stall: float = 0.0,
    p99: float = 0.2,
    others: float = 0.0,
    capacity_others: float = 0.0,
) -> Run:
    """A hold run's summary and probe figures, with the capacity runs beside it."""
    scheduled = int(TARGET * SECONDS)
    return Run(
        "loadsim",
        "hold",
        TARGET,
        SECONDS,
        completed=round(finished_per_s * SECONDS),
        detail={
            "target_rate_per_s": TARGET,
            "requests": {"scheduled": scheduled, "dropped": round(dropped_share * scheduled)},
            "achieved_rate_per_s": finished_per_s,
            "latency_from_intended_seconds": {"p50": 0.01, "p99": p99},
            "max_in_flight": CAP,
            "series": {"others_share": others, "backlog_end": backlog_end, "longest_stall_s": stall},
            "paired_max": {"rate_per_s": TARGET / 0.9},
            "capacity": [capacity(c, others=capacity_others) for c in capacities],
        },
    )


def test_a_plain_hold_holds_against_the_target() -> None:
    check = HoldCheck.of(hold_run(TARGET))
    assert check.holds, check.problems
    assert check.bar_rate_per_s == TARGET  # capacity above the target: the target is the bar


def test_a_slower_machine_lowers_the_bar_to_what_the_capacity_runs_did() -> None:
    # The machine gives the driver 54,000/s now (10% under the target): finishing that holds.
    check = HoldCheck.of(hold_run(53_500.0, dropped_share=0.105, capacities=(54_000.0, 54_000.0), backlog_end=9_900))
    assert check.bar_rate_per_s == pytest.approx(54_000.0)
    assert check.holds, check.problems
    assert check.finished_over_target < 0.97  # the first rule (against the target) would have failed it


def test_a_collapse_falls_short_of_its_healthy_capacity_and_does_not_hold() -> None:
    # Capacity runs (no deep backlog) say 60,000/s; behind, the driver did 10% less and sat at the cap.
    check = HoldCheck.of(hold_run(54_000.0, dropped_share=0.10, capacities=(60_000.0, 61_000.0), backlog_end=10_100))
    assert not check.holds
    assert any("finished 54,000/s" in p for p in check.problems)
    assert any("had not caught up" in p for p in check.problems)


def test_a_slow_moment_it_caught_up_from_holds() -> None:
    # Below the bar and over the drop allowance, but its backlog drained by the end.
    check = HoldCheck.of(hold_run(56_500.0, dropped_share=0.06, backlog_end=240))
    assert check.caught_up
    assert check.holds, check.problems


def test_a_stalled_loop_does_not_hold_even_when_it_caught_up() -> None:
    check = HoldCheck.of(hold_run(TARGET * 0.965, dropped_share=0.035, backlog_end=280, stall=0.41, p99=0.5))
    assert not check.holds
    assert any("its loop stopped for 0.41 s" in p for p in check.problems)


def test_latency_from_the_intended_start_over_a_second_does_not_hold() -> None:
    check = HoldCheck.of(hold_run(TARGET, p99=1.2))
    assert not check.holds
    assert any("p99 1.200 s" in p for p in check.problems)


def test_overloaded_without_collapse_holds_against_its_capacity() -> None:
    # Target 150% of what it can do: it finishes its capacity and drops (and counts) the rest.
    run = hold_run(40_000.0 * 0.99, dropped_share=0.34, capacities=(40_000.0, 40_000.0), backlog_end=10_200)
    check = HoldCheck.of(run)
    assert check.room == pytest.approx(40_000.0 / TARGET)
    assert check.allowed_dropped_share == pytest.approx(1 - 0.97 * 40_000.0 / TARGET)
    assert check.holds, check.problems


def test_capacity_runs_that_disagree_make_it_inconclusive() -> None:
    # Against 54,000/s alone it holds; against 62,000/s alone (bar = the target) it does not.
    run = hold_run(54_000.0, dropped_share=0.10, capacities=(54_000.0, 62_000.0), backlog_end=10_100)
    check = HoldCheck.of(run)
    assert check.inconclusive
    assert HOLD_ATTEMPTS >= 2  # run_hold makes such a run again before judging it by the mean


def test_agreeing_capacity_runs_are_conclusive() -> None:
    check = HoldCheck.of(hold_run(54_000.0, dropped_share=0.10, capacities=(60_000.0, 61_000.0), backlog_end=10_100))
    assert not check.inconclusive


def test_cpu_that_others_took_during_the_hold_only_is_credited() -> None:
    # Others took 20% of the core during the hold and none in the capacity runs: the bar is 80% of them.
    check = HoldCheck.of(hold_run(52_000.0, dropped_share=0.13, capacities=(66_000.0, 66_000.0), others=0.2,
                                  backlog_end=10_000))  # fmt: skip
    assert check.core_left == pytest.approx(0.8)
    assert check.bar_rate_per_s == pytest.approx(66_000.0 * 0.8)
    assert check.holds, check.problems


def test_without_capacity_runs_the_target_is_the_bar() -> None:
    check = HoldCheck.of(hold_run(55_000.0, dropped_share=0.08, capacities=(), backlog_end=10_100))
    assert check.capacity_rate_per_s is None
    assert check.bar_rate_per_s == TARGET
    assert not check.holds
