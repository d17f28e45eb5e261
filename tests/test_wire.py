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
        self.pool = wire.Pool("127.0.0.1", port, self._on_done, limit=self.limit, timeout=self.timeout)
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


async def _test_waiting_exchanges_get_their_bytes_a_few_dozen_at_a_time_when_taken() -> None:
    async def silent(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    ahead, n = wire.RENDER_AHEAD, wire.RENDER_AHEAD + 8
    for handler, timeout in ((keep_alive, 5.0), (silent, 0.3)):
        served = Served(handler)  # for its handler wrapper, which closes each connection
        server = await asyncio.start_server(served._handle, "127.0.0.1", 0)
        events: list[tuple[str, int]] = []
        record = events.append

        def render(_source: object, index: int, record: Callable[[tuple[str, int]], None] = record) -> bytes:
            record(("render", index))
            return REQUEST

        def on_done(ex: wire.Exchange, status: int, record: Callable[[tuple[str, int]], None] = record) -> None:
            record((f"done {status}", ex.index))

        port = server.sockets[0].getsockname()[1]
        pool = wire.Pool("127.0.0.1", port, on_done, limit=1, timeout=timeout, render=render)
        pool.start()
        try:
            for i in range(n):  # no connection yet: all wait
                pool.submit(wire.Exchange(None, time.perf_counter(), source="batch", index=i))
            deadline = time.monotonic() + 5
            while sum(e.startswith("done") for e, _ in events) < n and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
        finally:
            await pool.aclose()
            server.close()
            await server.wait_closed()
        renders = [("render", i) for i in range(n)]
        if handler is keep_alive:
            # One connection: taking the first makes the bytes of the next RENDER_AHEAD - 1 too, and
            # the rest wait unmade until the connection reaches them.
            oks = [("done 200", i) for i in range(n)]
            assert events == renders[:ahead] + oks[:ahead] + renders[ahead:] + oks[ahead:]
        else:
            # The first goes out and times out; those past the first RENDER_AHEAD timed out unmade.
            assert events[:ahead] == renders[:ahead]
            assert sorted(events[ahead:]) == [(f"done {wire.TIMEOUT}", i) for i in range(n)]


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
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[f.__name__.removeprefix("_test_") for f in SCENARIOS])
def test_wire(run: Run, scenario: Callable[[], Awaitable[None]]) -> None:
    run(scenario)
