"""The load client (loadsim.drivers.wire) against real servers on loopback: framing, keep-alive, failures.

The servers here are plain asyncio servers writing raw HTTP/1.1 bytes, so each test
chooses exactly how the answer is framed (Content-Length, chunked, ended by the
close), when the connection closes and what happens when nothing answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import pytest
import uvloop

from loadsim.drivers import wire

Run = Callable[[Callable[[], Awaitable[None]]], None]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
REQUEST = b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


async def read_request(reader: asyncio.StreamReader) -> bool:
    """Read one request (headers and a Content-Length body); False at the end of the stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return False
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return True


class Served:
    """A raw server on 127.0.0.1 and a pool aimed at it; collects what ``on_done`` was given."""

    def __init__(self, handler: Handler, *, limit: int = 4, timeout: float = 5.0, keep_body: bool = False) -> None:
        self.handler = handler
        self.limit = limit
        self.timeout = timeout
        self.keep_body = keep_body
        self.done: list[tuple[int, bytes | None]] = []
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.pool: wire.Pool | None = None
        self.render: wire.Render | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def _on_done(self, ex: wire.Exchange, status: int) -> None:
        self.done.append((status, bytes(ex.body) if ex.body is not None else None))

    async def start(self) -> wire.Pool:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.pool = wire.Pool(
            "127.0.0.1", port, self._on_done, limit=self.limit, timeout=self.timeout, render=self.render
        )
        self.pool.start()
        return self.pool

    def submit(self, n: int) -> None:
        assert self.pool is not None
        for _ in range(n):
            self.pool.submit(wire.Exchange(REQUEST, time.perf_counter(), keep_body=self.keep_body))

    async def wait(self, n: int, within: float = 5.0) -> None:
        deadline = time.monotonic() + within
        while len(self.done) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    async def exchange(self, n: int) -> wire.Pool:
        """Start, submit ``n`` exchanges, wait for their answers (5 s at most), stop."""
        pool = await self.start()
        try:
            self.submit(n)
            await self.wait(n)
        finally:
            await self.stop()
        return pool

    async def stop(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await read_request(reader):
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\nContent-Type: application/json\r\n\r\n{"id":"m1"}')
        await writer.drain()


async def _test_keep_alive_reuses_connections_and_keeps_bodies_on_request() -> None:
    s = Served(keep_alive, limit=4, keep_body=True)
    pool = await s.exchange(200)
    assert s.done == [(200, b'{"id":"m1"}')] * 200
    # 200 exchanges over at most 4 connections: each connection carried many.
    assert 1 <= s.connections <= 4
    assert pool.outstanding == 0


async def _test_chunked_answers_are_reassembled() -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            writer.write(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b'5\r\n{"pre\r\n')
            await writer.drain()
            writer.write(b'12\r\nview_id":"p-42"}  \r\n0\r\n\r\n')
            await writer.drain()

    s = Served(chunked, keep_body=True)
    await s.exchange(3)
    assert s.done == [(201, b'{"preview_id":"p-42"}  ')] * 3


async def _test_connection_close_answers_each_on_a_fresh_connection() -> None:
    async def close_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await read_request(reader):
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()

    s = Served(close_each, limit=2)
    await s.exchange(20)
    assert [status for status, _ in s.done] == [503] * 20
    assert s.connections == 20


async def _test_an_answer_framed_by_the_close_keeps_its_status() -> None:
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await read_request(reader):
            writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"id":"no-length"}')
            await writer.drain()

    s = Served(until_close, keep_body=True)
    await s.exchange(2)
    assert s.done == [(200, b'{"id":"no-length"}')] * 2


async def _test_garbage_and_early_close_are_connection_errors() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await read_request(reader):
            writer.write(b"SPDY/9 what\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.2)

    async def hang_up(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    for handler in (garbage, hang_up):
        s = Served(handler)
        await s.exchange(3)
        assert [status for status, _ in s.done] == [wire.CONNECTION_ERROR] * 3, handler.__name__


async def _test_a_server_that_closes_at_once_fails_each_exchange_and_keeps_no_dead_connection() -> None:
    async def slam(_reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        return  # Served closes the writer: accepted, then closed before any request is read

    s = Served(slam, limit=3, timeout=2.0)
    pool = await s.start()
    try:
        for _ in range(4):  # in waves, so connections are made while others are waiting and idle
            s.submit(5)
            await s.wait(len(s.done) + 5)
            await asyncio.sleep(0.02)
    finally:
        await s.stop()
    assert [status for status, _ in s.done] == [wire.CONNECTION_ERROR] * 20
    assert pool.outstanding == 0
    assert not pool.busy
    assert not pool.idle


async def _test_an_interim_answer_does_not_end_the_exchange() -> None:
    async def early_hints(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
            await writer.drain()
            writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    s = Served(early_hints, limit=1, keep_body=True)
    await s.exchange(3)
    assert s.done == [(202, b"ok")] * 3
    assert s.connections == 1


async def _test_nothing_listening_fails_each_exchange_once() -> None:
    probe = await asyncio.start_server(keep_alive, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    done: list[int] = []
    pool = wire.Pool("127.0.0.1", port, lambda _ex, st: done.append(st), limit=3, timeout=5.0)
    pool.start()
    try:
        for _ in range(10):
            pool.submit(wire.Exchange(REQUEST, time.perf_counter()))
        deadline = time.monotonic() + 5
        while len(done) < 10 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
    finally:
        await pool.aclose()
    assert done == [wire.CONNECTION_ERROR] * 10
    assert pool.outstanding == 0


async def _test_silence_times_out_on_the_sweep_and_closing_abandons_the_rest() -> None:
    async def silent(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    # Two connections, five exchanges: two on the wire, three waiting; all time out at 0.3 s.
    s = Served(silent, limit=2, timeout=0.3)
    pool = await s.start()
    t0 = time.perf_counter()
    try:
        s.submit(5)
        await s.wait(5)
        elapsed = time.perf_counter() - t0
        assert [status for status, _ in s.done] == [wire.TIMEOUT] * 5
        assert 0.3 <= elapsed < 3.0  # the sweep, not the server's 30 s silence, ended them
        # A connection whose exchange timed out is dropped, not reused (its late answer would be misread).
        s.done.clear()
        s.submit(2)
        deadline = time.monotonic() + 3
        while s.connections < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
    finally:
        await s.stop()
    assert [status for status, _ in s.done] == [wire.ABANDONED] * 2
    assert s.connections == 4
    assert pool.outstanding == 0


async def _test_a_connect_that_hangs_gives_its_slot_back_after_the_timeout() -> None:
    import socket

    # A listener that never accepts, its backlog filled: the kernel drops further SYNs, so a
    # connect hangs (as to a black-holed host) instead of failing.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        f = socket.socket()
        f.setblocking(False)  # noqa: FBT003
        with contextlib.suppress(BlockingIOError):
            f.connect(("127.0.0.1", port))
        fillers.append(f)
    await asyncio.sleep(0.05)
    done: list[int] = []
    pool = wire.Pool("127.0.0.1", port, lambda _ex, st: done.append(st), limit=1, timeout=0.3)
    pool.start()
    try:
        pool.submit(wire.Exchange(REQUEST, time.perf_counter()))
        await asyncio.sleep(0.1)
        assert pool.opening == 1
        await asyncio.sleep(0.5)
        assert done == [wire.TIMEOUT]
        assert pool.opening == 0
    finally:
        await pool.aclose()
        for f in fillers:
            f.close()
        listener.close()


class Rendering(Served):
    """One connection, exchanges without bytes, and a ``render`` that records what it made.

    ``index`` is the exchange's number; ``events`` has ("render", n) and ("done STATUS", n) in order.
    """

    def __init__(self, handler: Handler, *, timeout: float = 5.0, fail: int | None = None) -> None:
        super().__init__(handler, limit=1, timeout=timeout)
        self.render = self._render
        self.fail = fail
        """The exchange whose render raises."""
        self.events: list[tuple[str, int]] = []

    def _render(self, _source: object, index: int) -> bytes:
        self.events.append(("render", index))
        if index == self.fail:
            raise ValueError("no bytes for this one")
        return REQUEST

    def _on_done(self, ex: wire.Exchange, status: int) -> None:
        super()._on_done(ex, status)
        self.events.append((f"done {status}", ex.index))

    def submit_numbered(self, first: int, n: int) -> None:
        assert self.pool is not None
        for i in range(first, first + n):
            self.pool.submit(wire.Exchange(None, time.perf_counter(), source="batch", index=i))

    def dones(self) -> list[tuple[str, int]]:
        return [e for e in self.events if e[0].startswith("done")]


async def _test_waiting_exchanges_get_their_bytes_a_few_dozen_at_a_time_when_taken() -> None:
    ahead, n = wire.RENDER_AHEAD, wire.RENDER_AHEAD + 8
    r = Rendering(keep_alive)
    await r.start()
    try:
        r.submit_numbered(0, n)  # no connection yet: all wait, none made
        assert r.events == []
        await r.wait(n)
    finally:
        await r.stop()
    # One connection: taking the first makes the bytes of the next RENDER_AHEAD - 1 too; the
    # rest wait unmade until the connection reaches them.
    renders = [("render", i) for i in range(n)]
    oks = [("done 200", i) for i in range(n)]
    assert r.events == renders[:ahead] + oks[:ahead] + renders[ahead:] + oks[ahead:]


async def _test_an_exchange_is_made_when_an_idle_connection_takes_it_and_never_if_it_ends_waiting() -> None:
    answered = asyncio.Event()

    async def first_only(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        answered.set()
        await asyncio.sleep(30)  # holds the one connection

    r = Rendering(first_only, timeout=30.0)
    pool = await r.start()
    try:
        assert await pool.warm(1, within=5.0) == 1
        r.submit_numbered(0, 1)  # an idle connection: made and written at once
        assert r.events == [("render", 0)]
        await asyncio.wait_for(answered.wait(), 5.0)
        r.submit_numbered(1, wire.RENDER_AHEAD + 3)  # the connection is busy: they wait
    finally:
        await r.stop()  # the one on the wire and those waiting end unanswered, never made
    n = wire.RENDER_AHEAD + 4
    assert r.events[0] == ("render", 0)
    assert sorted(r.events[1:]) == [(f"done {wire.ABANDONED}", i) for i in range(n)]
    assert pool.outstanding == 0


async def _test_a_request_whose_bytes_cannot_be_made_ends_alone_and_the_pool_goes_on() -> None:
    # Exchange 1 fails to render when an idle connection takes it; exchange 3 when it is taken from
    # the queue. Each ends as RENDER_ERROR, no connection is lost, every other one is answered.
    for fail, first_batch in ((1, 1), (3, 0)):
        r = Rendering(keep_alive, fail=fail)
        pool = await r.start()
        try:
            await pool.warm(1, within=5.0)
            if first_batch:  # one at a time, each on the idle connection
                for i in range(6):
                    r.submit_numbered(i, 1)
                    await r.wait(i + 1)
            else:  # all at once: the queue
                r.submit_numbered(0, 6)
                await r.wait(6)
        finally:
            await r.stop()
        assert sorted(r.dones()) == sorted(
            [("done 200", i) for i in range(6) if i != fail] + [(f"done {wire.RENDER_ERROR}", fail)]
        )
        assert pool.render_errors == 1
        assert r.connections == 1
        assert pool.outstanding == 0


LOOPS = {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Run:
    """Runs a scenario on uvloop (what loadsim uses) and on plain asyncio (where uvloop is missing)."""

    def go(scenario: Callable[[], Awaitable[None]]) -> None:
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as runner:
            runner.run(scenario())  # type: ignore[arg-type]

    return go


SCENARIOS = [
    _test_keep_alive_reuses_connections_and_keeps_bodies_on_request,
    _test_connection_close_answers_each_on_a_fresh_connection,
    _test_silence_times_out_on_the_sweep_and_closing_abandons_the_rest,
    _test_chunked_answers_are_reassembled,
    _test_an_answer_framed_by_the_close_keeps_its_status,
    _test_garbage_and_early_close_are_connection_errors,
    _test_nothing_listening_fails_each_exchange_once,
    _test_a_connect_that_hangs_gives_its_slot_back_after_the_timeout,
    _test_a_server_that_closes_at_once_fails_each_exchange_and_keeps_no_dead_connection,
    _test_an_interim_answer_does_not_end_the_exchange,
    _test_waiting_exchanges_get_their_bytes_a_few_dozen_at_a_time_when_taken,
    _test_an_exchange_is_made_when_an_idle_connection_takes_it_and_never_if_it_ends_waiting,
    _test_a_request_whose_bytes_cannot_be_made_ends_alone_and_the_pool_goes_on,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[f.__name__.removeprefix("_test_") for f in SCENARIOS])
def test_wire(run: Run, scenario: Callable[[], Awaitable[None]]) -> None:
    run(scenario)
