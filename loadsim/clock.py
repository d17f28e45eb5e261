"""Clocks: the only place loadsim waits.

Every component that waits (the engine's windows, the HTTP driver's dispatcher and
pool sweep, the Pushgateway pusher, the state keeper, fake-gmail's held calls and
overlay timers, the drill's polls) asks a :class:`Clock`, never ``asyncio.sleep``
or ``loop.call_later`` directly. Run time ``t`` is seconds since the run started.

Three clocks, one interface:

* :class:`WallClock`: real time on ``time.monotonic()``; sleeps and timers go
  through the event loop. Deadlines are absolute, so a late wake-up never makes the
  long-run rate drift.
* :class:`VirtualClock`: time jumps to each deadline the run's driver (the engine)
  sleeps until, firing every timer it passes on the way: 48 hours of traffic in
  seconds. Other waiters (a timer, a sleeping task) wake when the engine's time
  passes their deadline.
* :class:`ManualClock`: time moves only when a test says so (:meth:`ManualClock.advance`),
  as trio's ``MockClock`` does; tests of the pool, pusher, state keeper and fake
  Gmail use it instead of sleeping and polling.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Timer(Protocol):
    """A scheduled callback that can be cancelled (``asyncio.TimerHandle`` is one)."""

    def cancel(self) -> None:
        """Do not call it (no-op once it ran)."""
        ...


class Clock(Protocol):
    """What waiting code needs from time."""

    virtual: bool
    """True when time does not follow the wall (the virtual and manual clocks)."""

    def now(self) -> float:
        """Run time in seconds."""
        ...

    def epoch(self) -> float:
        """Unix time that corresponds to run time 0 (for calendar-shaped schedules)."""
        ...

    def wall(self) -> float:
        """Unix time now, as this clock sees it (``epoch() + now()`` off the wall)."""
        ...

    async def sleep_until(self, t: float) -> float:
        """Return at run time ``t`` (or as soon after as possible); returns how late it woke."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return ``seconds`` of this clock's time from now."""
        ...

    def call_at(self, t: float, callback: Callable[..., object], *args: Any) -> Timer:
        """Call ``callback(*args)`` at run time ``t`` (at once if ``t`` has passed)."""
        ...

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        """Call ``callback(*args)`` ``delay`` seconds from now."""
        ...

    def source(self) -> tuple[Callable[[], float], float]:
        """The clock's time source and its reading at run time 0: run time = ``read() - offset``.

        For code that reads the time once per request (the HTTP driver and its pool, tens of
        thousands of times a second): the wall clock's source is ``time.monotonic`` itself, a C
        call, where :meth:`now` is a Python method around it. Differences of readings are
        durations either way; only the offset may change (:meth:`WallClock.restart`), so ask
        again rather than keep it.
        """
        ...


class WallClock:
    """Real time on ``time.monotonic()``, anchored at construction.

    The event loop's own clock is the same CLOCK_MONOTONIC, but uvloop reads it in
    whole milliseconds, which made ``loadsim_tick_lateness_seconds`` under-read by
    up to 1 ms; ``time.monotonic()`` has microseconds. Sleeps and timers still go
    through the loop, so waking is as precise as the loop's timers.
    """

    virtual = False

    def __init__(self, origin_offset: float = 0.0) -> None:
        """``origin_offset`` starts the run part-way through (a resumed run)."""
        self.restart(origin_offset)

    def restart(self, origin_offset: float = 0.0) -> None:
        """Make run time ``origin_offset`` now.

        For the moment before a run starts: an HTTP driver opens its connections first,
        and that warm-up must not count as run time (its arrivals would all be late).
        """
        self._origin = time.monotonic() - origin_offset
        self._epoch = time.time() - origin_offset

    def now(self) -> float:
        return time.monotonic() - self._origin

    def epoch(self) -> float:
        return self._epoch

    def wall(self) -> float:
        return time.time()

    def source(self) -> tuple[Callable[[], float], float]:
        return time.monotonic, self._origin

    async def sleep_until(self, t: float) -> float:
        delay = t - self.now()
        # Late or not, the loop gets a turn: a caller whose work outlasts its deadline every
        # time would otherwise never let signals, servers or timers run.
        await asyncio.sleep(max(delay, 0.0))
        return max(0.0, self.now() - t)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))

    def call_at(self, t: float, callback: Callable[..., object], *args: Any) -> Timer:
        return self.call_later(t - self.now(), callback, *args)

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        return asyncio.get_running_loop().call_later(max(delay, 0.0), callback, *args)


class _Scheduled:
    """One entry of a simulated clock's queue: a callback due at ``t``."""

    __slots__ = ("args", "callback", "cancelled", "t")

    def __init__(self, t: float, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.t = t
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _SimulatedTime:
    """Run time held in a number, with a queue of timers fired as the number passes them."""

    virtual = True

    def __init__(self, epoch: float, start: float) -> None:
        self._now = start
        self._epoch = epoch
        self._queue: list[tuple[float, int, _Scheduled]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def epoch(self) -> float:
        return self._epoch

    def wall(self) -> float:
        return self._epoch + self._now

    def source(self) -> tuple[Callable[[], float], float]:
        return self.now, 0.0

    def call_at(self, t: float, callback: Callable[..., object], *args: Any) -> Timer:
        entry = _Scheduled(t, callback, args)
        heapq.heappush(self._queue, (t, next(self._seq), entry))
        return entry

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        return self.call_at(self._now + max(delay, 0.0), callback, *args)

    def next_deadline(self) -> float:
        """When the next pending timer is due (inf when none)."""
        while self._queue and self._queue[0][2].cancelled:
            heapq.heappop(self._queue)
        return self._queue[0][0] if self._queue else float("inf")

    def _fire_one(self, until: float) -> bool:
        """Fire the earliest timer due by ``until`` (moving time to it); False when none is."""
        if self.next_deadline() > until:
            return False
        t, _, entry = heapq.heappop(self._queue)
        self._now = max(self._now, t)
        entry.callback(*entry.args)
        return True

    def _future_at(self, t: float) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.call_at(t, _resolve, future)
        return future


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class VirtualClock(_SimulatedTime):
    """Jumps straight to each deadline the run's driver sleeps until; yields to the loop now and then.

    The engine is the one task that moves time: ``sleep_until(t)`` fires every timer
    due by ``t`` in order, then sets the time to ``t`` and returns at once. It
    yields every ``yield_every`` wake-ups so a metrics server on the same loop still
    answers during a virtual run, and whenever it woke a sleeper, so that sleeper
    runs at its own time.
    """

    def __init__(self, epoch: float, start: float = 0.0, yield_every: int = 64) -> None:
        super().__init__(epoch, start)
        self._yield_every = yield_every
        self._wakes = 0

    async def sleep_until(self, t: float) -> float:
        fired = False
        while self._fire_one(t):
            fired = True
            await asyncio.sleep(0)  # let what the timer woke run before time moves on
        self._now = max(self._now, t)
        self._wakes += 1
        if not fired and self._wakes % self._yield_every == 0:
            await asyncio.sleep(0)
        return 0.0

    async def sleep(self, seconds: float) -> None:
        """Wait until the engine's time has moved ``seconds`` on (other tasks than the engine)."""
        if seconds > 0:
            await self._future_at(self._now + seconds)


class ManualClock(_SimulatedTime):
    """Time that moves only when a test calls :meth:`advance` (trio's ``MockClock``, without autojump).

    Everything waiting on it (``sleep``, ``sleep_until``, timers) wakes in deadline
    order as :meth:`advance` passes its deadline, with the event loop run in between
    so that what woke can schedule its next wait before time moves on.
    """

    def __init__(self, start: float = 0.0, epoch: float = 1_700_000_000.0) -> None:
        super().__init__(epoch, start)

    async def sleep_until(self, t: float) -> float:
        if t > self._now:
            await self._future_at(t)
        return max(0.0, self._now - t)

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self._now + max(seconds, 0.0))

    async def advance(self, seconds: float, *, settle: int = 20) -> None:
        """Move time ``seconds`` forward, firing each timer due on the way at its own time.

        After each timer (and at the end) the loop runs ``settle`` times, enough for a
        chain of callbacks and task steps; work in threads needs its own wait.
        """
        target = self._now + seconds
        await _settle(settle)
        while self._fire_one(target):
            await _settle(settle)
        self._now = max(self._now, target)
        await _settle(settle)

    async def run_until(self, done: Callable[[], bool], *, step: float, limit: float) -> bool:
        """Advance ``step`` at a time until ``done()`` or ``limit`` seconds have passed; returns ``done()``."""
        end = self._now + limit
        while not done() and self._now < end:
            await self.advance(min(step, end - self._now))
        return done()


async def _settle(times: int) -> None:
    for _ in range(times):
        await asyncio.sleep(0)


async def wait_for(clock: Clock, awaitable: Awaitable[T], seconds: float) -> T:
    """``asyncio.wait_for`` on ``clock``'s time: raises ``TimeoutError`` after ``seconds``."""
    task = asyncio.ensure_future(awaitable)
    if task.done():
        return task.result()
    expired = False

    def expire() -> None:
        nonlocal expired
        if not task.done():
            expired = True
            task.cancel()

    timer = clock.call_later(seconds, expire)
    try:
        return await task
    except asyncio.CancelledError:
        if expired:
            raise TimeoutError from None
        raise
    finally:
        timer.cancel()


async def wait_event(clock: Clock, event: asyncio.Event, seconds: float) -> bool:
    """Wait for ``event`` at most ``seconds`` of ``clock``'s time; returns whether it is set."""
    if event.is_set():
        return True
    try:
        await wait_for(clock, event.wait(), seconds)
    except TimeoutError:
        return False
    return True
