"""The clocks: every wait in loadsim goes through one, so their semantics are pinned here, without sleeping."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest

from loadsim.clock import ManualClock, VirtualClock, WallClock, wait_event, wait_for

LOADSIM = Path(__file__).resolve().parents[1] / "loadsim"


class TestManualClock:
    def test_sleepers_wake_in_deadline_order_at_their_own_time(self) -> None:
        async def main() -> list[tuple[str, float]]:
            clock = ManualClock()
            woke: list[tuple[str, float]] = []

            async def sleeper(name: str, seconds: float) -> None:
                await clock.sleep(seconds)
                woke.append((name, clock.now()))

            tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("c", 3.0), ("a", 1.0), ("b", 2.0))]
            await clock.advance(1.5)
            assert woke == [("a", 1.0)]
            await clock.advance(10.0)
            await asyncio.gather(*tasks)
            assert clock.now() == 11.5
            return woke

        assert asyncio.run(main()) == [("a", 1.0), ("b", 2.0), ("c", 3.0)]

    def test_a_woken_task_can_schedule_its_next_wait_before_time_moves_on(self) -> None:
        async def main() -> list[float]:
            clock = ManualClock()
            ticks: list[float] = []

            async def every_second() -> None:
                while True:
                    await clock.sleep(1.0)
                    ticks.append(clock.now())

            task = asyncio.create_task(every_second())
            await clock.advance(5.0)
            task.cancel()
            return ticks

        assert asyncio.run(main()) == [1.0, 2.0, 3.0, 4.0, 5.0]

    def test_timers_fire_and_cancelled_ones_do_not(self) -> None:
        async def main() -> list[str]:
            clock = ManualClock(start=10.0)
            fired: list[str] = []
            clock.call_at(12.0, fired.append, "at 12")
            clock.call_later(1.0, fired.append, "in 1")
            clock.call_later(0.5, fired.append, "cancelled").cancel()
            await clock.advance(1.0)
            assert fired == ["in 1"]
            await clock.advance(1.0)
            return fired

        assert asyncio.run(main()) == ["in 1", "at 12"]

    def test_wall_follows_run_time(self) -> None:
        clock = ManualClock(epoch=1000.0)
        assert clock.wall() == 1000.0
        asyncio.run(clock.advance(2.5))
        assert clock.wall() == 1002.5


class TestVirtualClock:
    def test_the_driver_jumps_and_fires_what_it_passes_at_its_own_time(self) -> None:
        async def main() -> list[tuple[str, float]]:
            clock = VirtualClock(epoch=0.0)
            seen: list[tuple[str, float]] = []
            clock.call_at(7.0, lambda: seen.append(("timer", clock.now())))

            async def other() -> None:
                await clock.sleep(3.0)
                seen.append(("sleeper", clock.now()))

            task = asyncio.create_task(other())
            await asyncio.sleep(0)
            lateness = await clock.sleep_until(10.0)  # the engine: returns at once
            assert lateness == 0.0
            assert clock.now() == 10.0
            await task
            return seen

        assert asyncio.run(main()) == [("sleeper", 3.0), ("timer", 7.0)]


class TestWaitFor:
    def test_times_out_on_the_clocks_time(self) -> None:
        async def main() -> None:
            clock = ManualClock()
            never = asyncio.Event()
            waiter = asyncio.create_task(wait_for(clock, never.wait(), 5.0))
            await clock.advance(4.9)
            assert not waiter.done()
            await clock.advance(0.2)
            with pytest.raises(TimeoutError):
                await waiter

        asyncio.run(main())

    def test_returns_the_result_and_leaves_no_timer_behind(self) -> None:
        async def main() -> bool:
            clock = ManualClock()
            event = asyncio.Event()
            waiter = asyncio.create_task(wait_event(clock, event, 5.0))
            await clock.advance(1.0)
            event.set()
            got = await waiter
            assert clock.next_deadline() == float("inf")
            return got

        assert asyncio.run(main()) is True

    def test_cancelling_the_waiter_is_a_cancellation_not_a_timeout(self) -> None:
        async def main() -> None:
            clock = ManualClock()
            waiter = asyncio.create_task(wait_for(clock, asyncio.Event().wait(), 5.0))
            await asyncio.sleep(0)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter

        asyncio.run(main())


def test_wall_clock_restart_makes_run_time_start_now() -> None:
    clock = WallClock(origin_offset=100.0)
    assert clock.now() >= 100.0
    clock.restart(3.0)
    assert 3.0 <= clock.now() < 4.0


WAITS = {"sleep", "call_later", "call_at", "wait_for"}
"""Names whose call on ``asyncio``, ``time`` or an event loop waits on the real clock."""


def _waits(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in WAITS:
            owner = ast.unparse(node.func.value)
            if owner in ("asyncio", "time") or owner.endswith(("loop", "_loop", "get_running_loop()")):
                found.append(f"{path.relative_to(LOADSIM.parent)}:{node.lineno}: {owner}.{node.func.attr}")
    return found


def test_only_the_clock_module_waits() -> None:
    """Every wait goes through loadsim.clock: nothing else calls asyncio.sleep, time.sleep or loop timers.

    ``asyncio.sleep(0)`` (a yield, not a wait) and the test stack's waits on real daemon
    processes (loadsim.testing, synchronous code outside any run) are the exceptions.
    """
    offenders = []
    for path in sorted(LOADSIM.rglob("*.py")):
        if path.name == "clock.py" or "testing" in path.parts:
            continue
        offenders += [w for w in _waits(path) if not _is_yield(path, w)]
    assert offenders == []


def _is_yield(path: Path, where: str) -> bool:
    line = path.read_text().splitlines()[int(where.split(":")[1]) - 1]
    return "asyncio.sleep(0)" in line
