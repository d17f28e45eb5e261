"""The runtime's services on a controllable clock: the Pushgateway pusher and the state keeper.

Time is a ManualClock moved by the test, so backoff delays and checkpoint intervals are
checked exactly, never slept through. Pushes and writes are real I/O (a loopback HTTP
server, a file) done in worker threads; the tests wait for that I/O to finish, never for
time to pass.
"""

from __future__ import annotations

import asyncio
import http.server
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from loadsim.clock import ManualClock
from loadsim.engine.checkpoint import Identity
from loadsim.engine.driver import Part
from loadsim.engine.keeper import StateKeeper, StateOptions
from loadsim.sinks.pushgateway import Pusher, PushTarget


class Events:
    """A logger that keeps ``(level, event, fields)``."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, Any]]] = []

    def _log(self, level: str) -> Callable[..., None]:
        return lambda event, **kw: self.seen.append((level, event, kw))

    def __getattr__(self, level: str) -> Callable[..., None]:
        return self._log(level)

    def names(self) -> list[str]:
        return [e for _, e, _ in self.seen]


class Gateway(http.server.ThreadingHTTPServer):
    """A Pushgateway stand-in on loopback: accepts PUT and DELETE of groups, or answers 503 while down."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.down = False
        self.puts: list[bytes] = []
        self.deletes = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Gateway

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.server.down:
            self.send_response(503)
        else:
            self.server.puts.append(body)
            self.send_response(200)
        self.end_headers()

    def do_DELETE(self) -> None:
        self.server.deletes += 1
        self.send_response(202)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    server = Gateway()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


async def io_done(clock: ManualClock, limit: float = 10.0) -> None:
    """Wait until the service is asleep on ``clock`` again: its real I/O (a worker thread) has finished.

    This waits for I/O, bounded, never for time: the clock does not move meanwhile.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    await asyncio.sleep(0)
    while clock.next_deadline() == float("inf"):
        assert loop.time() < end, "the I/O did not finish"
        await asyncio.sleep(0.001)


def pusher_for(gateway: Gateway, clock: ManualClock, events: Events) -> tuple[Pusher, Counter]:
    registry = CollectorRegistry()
    sends = Counter("sends", "sends", registry=registry)
    target = PushTarget.parse(gateway.url, interval=10.0)
    return Pusher(target, registry, registry, events, clock=clock, rng=random.Random(4)), sends


class TestPusher:
    def test_pushes_every_interval_of_its_clock(self, gateway: Gateway) -> None:
        async def main() -> None:
            clock, events = ManualClock(), Events()
            pusher, _ = pusher_for(gateway, clock, events)
            pusher.start()
            await io_done(clock)
            for _ in range(3):
                await clock.advance(10.0)
                await io_done(clock)
            assert len(gateway.puts) == 4  # at 0, 10, 20 and 30 s
            await clock.advance(9.0)
            await io_done(clock)
            assert len(gateway.puts) == 4
            await pusher.stop()
            assert len(gateway.puts) == 5  # the final push
            assert gateway.deletes == 1  # and the group removed at a clean exit

        asyncio.run(main())

    def test_an_outage_backs_off_logs_once_and_the_last_push_carries_the_totals(self, gateway: Gateway) -> None:
        async def main() -> None:
            clock, events = ManualClock(), Events()
            pusher, sends = pusher_for(gateway, clock, events)
            pusher.start()
            await io_done(clock)
            gateway.down = True
            delays = []
            for _ in range(8):
                await clock.advance(clock.next_deadline() - clock.now())
                await io_done(clock)
                sends.inc(100)
                delays.append(clock.next_deadline() - clock.now())  # the wait it chose after this failure
            failures = pusher.failures._value.get()
            assert failures == 8
            # Capped exponential backoff with jitter in [0.5, 1] of the ceiling (1, 2, 4 ... 30 s).
            ceilings = [min(30.0, 0.5 * 2.0**k) for k in range(1, 9)]
            assert all(0.5 * c <= d <= c for d, c in zip(delays, ceilings, strict=True)), delays
            assert max(delays) <= 30.0
            outage_started = clock.now()
            gateway.down = False
            await clock.advance(clock.next_deadline() - clock.now())
            await io_done(clock)
            recovered = [kw for _, e, kw in events.seen if e == "push.recovered"]
            assert events.names().count("push.outage") == 1
            assert len(recovered) == 1
            assert recovered[0]["failed_attempts"] == 8
            # The outage is measured on the pusher's clock: from the first failure to the recovery.
            assert recovered[0]["outage_seconds"] == pytest.approx(clock.now() - 10.0, abs=0.05)
            assert outage_started > 10.0
            assert b"sends_total 800.0" in gateway.puts[-1]
            await pusher.stop()

        asyncio.run(main())


class Totals:
    """A stateful component: one number, snapshot and restore."""

    def __init__(self) -> None:
        self.value = 0

    def snapshot(self) -> Part:
        return {"value": self.value}, {}

    def restore(self, part: Part) -> None:
        self.value = int(part[0]["value"])


IDENTITY = Identity("p", 1, "fp", virtual=False, epoch=0.0, driver="sim")


class TestStateKeeper:
    def test_checkpoints_every_interval_and_exposes_only_what_reached_the_disk(self, tmp_path: Path) -> None:
        async def main() -> None:
            clock, events, totals = ManualClock(), Events(), Totals()
            registry = CollectorRegistry()
            sends = Counter("sends", "sends", registry=registry)
            path = tmp_path / "run.state"
            options = StateOptions(path, interval=5.0)
            keeper = StateKeeper(IDENTITY, {"engine": totals}, registry, options, clock, events)
            exposed = keeper.exposed()
            assert await keeper.checkpoint()
            keeper.start()
            sends.inc(7)
            totals.value = 7
            assert exposed.get_sample_value("sends_total") == 0.0  # not on disk yet: not exposed
            await clock.advance(4.9)
            await io_done(clock)
            assert keeper.written == 1
            await clock.advance(0.1)
            await io_done(clock)
            assert keeper.written == 2
            assert exposed.get_sample_value("sends_total") == 7.0
            await keeper.stop()
            assert keeper.written == 3

        asyncio.run(main())

    def test_a_failing_disk_is_logged_once_and_the_exposition_keeps_the_last_good_checkpoint(
        self, tmp_path: Path
    ) -> None:
        async def main() -> None:
            clock, events, totals = ManualClock(), Events(), Totals()
            registry = CollectorRegistry()
            sends = Counter("sends", "sends", registry=registry)
            blocker = tmp_path / "not-a-dir"
            path = blocker / "run.state"
            options = StateOptions(path, interval=1.0)
            keeper = StateKeeper(IDENTITY, {"engine": totals}, registry, options, clock, events)
            exposed = keeper.exposed()
            blocker.write_text("a file where the state directory should be")
            sends.inc(3)
            keeper.start()
            for _ in range(3):
                await clock.advance(1.0)
                await io_done(clock)
            assert keeper.written == 0
            assert events.names().count("state.write_failed") == 1
            assert exposed.get_sample_value("sends_total") is None  # nothing ever reached the disk
            blocker.unlink()
            await clock.advance(1.0)
            await io_done(clock)
            assert keeper.written == 1
            assert events.names().count("state.write_recovered") == 1
            assert exposed.get_sample_value("sends_total") == 3.0
            await keeper.stop()

        asyncio.run(main())
