"""The load client (loadsim.drivers.wire) against real servers on loopback: framing, keep-alive, failures.

The servers here are plain asyncio servers (or raw sockets) writing raw HTTP/1.1 bytes,
so each test chooses exactly how the answer is framed (Content-Length, chunked, ended
by the close), when the connection closes and what happens when nothing answers.
Every pool runs on a :class:`~loadsim.clock.ManualClock`: its time moves only when a
test advances it, so a timeout fires when the test says and never by accident. Waits
for loopback I/O yield to the loop until the expected thing has happened, under a
real-time guard that only turns a hang into a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator
from types import FrameType

import pytest
import uvloop

from loadsim.clock import ManualClock
from loadsim.drivers import wire

Run = Callable[[Callable[[], Awaitable[None]]], None]
REQUEST = b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
OK = b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\nContent-Type: application/json\r\n\r\n{"id":"m1"}'
GUARD = 10.0
"""Real seconds a wait for loopback I/O may take before the test fails (a guard against hangs, never what is tested)."""


async def until(check: Callable[[], bool]) -> None:
    """Yield to the loop until ``check()`` holds (loopback I/O takes a few turns of the loop)."""
    async with asyncio.timeout(GUARD):
        while not check():
            await asyncio.sleep(0)


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


def stack_depth() -> int:
    """Frames on the stack of the caller."""
    frame: FrameType | None = sys._getframe(1)
    depth = 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    return depth


class Served:
    """A raw server on 127.0.0.1 and a pool aimed at it (on a ManualClock); collects what ``on_done`` was given."""

    def __init__(
        self,
        handler: Handler,
        *,
        limit: int = 4,
        timeout: float = 5.0,
        keep_body: bool = False,
        max_body: int = 1 << 20,
    ) -> None:
        self.handler = handler
        self.limit = limit
        self.timeout = timeout
        self.keep_body = keep_body
        self.max_body = max_body
        self.clock = ManualClock()
        self.done: list[tuple[int, bytes | None]] = []
        self.exchanges: list[wire.Exchange] = []
        self.connections = 0
        self.requests = 0
        """Requests the server has read, on all connections."""
        self.server: asyncio.Server | None = None
        self.pool: wire.Pool | None = None
        self.render: wire.Render | None = None

    async def read(self, reader: asyncio.StreamReader) -> bool:
        """:func:`read_request`, counted in ``requests``."""
        got = await read_request(reader)
        self.requests += got
        return got

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def _on_done(self, ex: wire.Exchange, status: int) -> None:
        self.done.append((status, bytes(ex.body) if ex.body is not None else None))

    def statuses(self) -> list[int]:
        return [status for status, _ in self.done]

    async def start(self) -> wire.Pool:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.pool = wire.Pool(
            "127.0.0.1",
            port,
            self._on_done,
            clock=self.clock,
            limit=self.limit,
            timeout=self.timeout,
            render=self.render,
            max_body=self.max_body,
        )
        self.pool.start()
        return self.pool

    def submit(self, n: int, *, idempotent: bool = False) -> None:
        assert self.pool is not None
        for _ in range(n):
            ex = wire.Exchange(REQUEST, self.clock.now(), keep_body=self.keep_body, idempotent=idempotent)
            self.exchanges.append(ex)
            self.pool.submit(ex)

    async def wait(self, n: int) -> None:
        """Until ``n`` exchanges have been handed back."""
        await until(lambda: len(self.done) >= n)

    async def exchange(self, n: int) -> wire.Pool:
        """Start, submit ``n`` exchanges, wait for their answers, stop."""
        pool = await self.start()
        try:
            self.submit(n)
            await self.wait(n)
        finally:
            await self.stop()
        return pool

    async def stop(self) -> None:
        async with asyncio.timeout(GUARD):  # the ManualClock never ends aclose's waits by itself
            if self.pool is not None:
                await self.pool.aclose()
            if self.server is not None:
                self.server.close()
                await self.server.wait_closed()


Handler = Callable[[Served, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def keep_alive(s: Served, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await s.read(reader):
        writer.write(OK)
        await writer.drain()


async def _test_keep_alive_reuses_connections_and_keeps_bodies_on_request() -> None:
    s = Served(keep_alive, limit=4, keep_body=True)
    pool = await s.exchange(200)
    assert s.done == [(200, b'{"id":"m1"}')] * 200
    # 200 exchanges over at most 4 connections: each connection carried many.
    assert 1 <= s.connections <= 4
    assert pool.outstanding == 0


async def _test_chunked_answers_are_reassembled() -> None:
    async def chunked(s: Served, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await s.read(reader):
            writer.write(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b'5\r\n{"pre\r\n')
            await writer.drain()
            writer.write(b'12\r\nview_id":"p-42"}  \r\n0\r\n\r\n')
            await writer.drain()

    s = Served(chunked, keep_body=True)
    await s.exchange(3)
    assert s.done == [(201, b'{"preview_id":"p-42"}  ')] * 3


async def _test_connection_close_answers_each_on_a_fresh_connection() -> None:
    async def close_each(s: Served, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await s.read(reader):
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()

    s = Served(close_each, limit=2)
    await s.exchange(20)
    assert s.statuses() == [503] * 20
    assert s.connections == 20


async def _test_an_answer_framed_by_the_close_keeps_its_status() -> None:
    async def until_close(s: Served, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await s.read(reader):
            writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"id":"no-length"}')
            await writer.drain()

    s = Served(until_close, keep_body=True)
    await s.exchange(2)
    assert s.done == [(200, b'{"id":"no-length"}')] * 2


async def _test_a_body_cut_short_by_the_close_is_truncated_not_its_status() -> None:
    """Headers in, then the close before the declared end: TRUNCATED, whatever the status line said."""
    cut_short = [
        b'HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{"id":',  # length not reached
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",  # headers only
        b'HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"pre\r\n',  # no last chunk
        b'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 40\r\n\r\n{"id":',  # not keep-alive, yet framed
        b'HTTP/1.0 200 OK\r\nContent-Length: 40\r\n\r\n{"id":',  # HTTP/1.0 with a length
    ]
    for answer in cut_short:

        async def then_close(
            s: Served, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: bytes = answer
        ) -> None:
            if await s.read(reader):
                writer.write(answer)
                await writer.drain()

        s = Served(then_close, keep_body=True)
        await s.exchange(2)
        assert s.statuses() == [wire.TRUNCATED] * 2, answer


async def _test_garbage_and_early_close_are_connection_errors() -> None:
    async def garbage(s: Served, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await s.read(reader):
            writer.write(b"SPDY/9 what\r\n\r\n")
            await writer.drain()
            await reader.read()  # until the client hangs up

    async def hang_up(s: Served, reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        await s.read(reader)

    for handler in (garbage, hang_up):
        s = Served(handler)
        await s.exchange(3)
        assert s.statuses() == [wire.CONNECTION_ERROR] * 3, handler.__name__


async def _test_a_server_that_closes_at_once_fails_each_exchange_and_keeps_no_dead_connection() -> None:
    async def slam(_s: Served, _reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        return  # Served closes the writer: accepted, then closed before any request is read

    s = Served(slam, limit=3, timeout=2.0)
    pool = await s.start()
    try:
        for _ in range(4):  # in waves, so connections are made while others are waiting and idle
            s.submit(5)
            await s.wait(len(s.done) + 5)
        await until(lambda: pool.transports == 0 and pool.opening == 0)
        assert not pool.busy
        assert not pool.idle
    finally:
        await s.stop()
    assert s.statuses() == [wire.CONNECTION_ERROR] * 20
    assert pool.outstanding == 0


async def _test_an_interim_answer_does_not_end_the_exchange() -> None:
    async def early_hints(s: Served, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await s.read(reader):
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
            await writer.drain()
            writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    s = Served(early_hints, limit=1, keep_body=True)
    await s.exchange(3)
    assert s.done == [(202, b"ok")] * 3
    assert s.connections == 1


async def _test_nothing_listening_fails_each_exchange_once() -> None:
    probe = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    clock = ManualClock()
    done: list[int] = []
    pool = wire.Pool("127.0.0.1", port, lambda _ex, st: done.append(st), clock=clock, limit=3, timeout=5.0)
    pool.start()
    try:
        for _ in range(10):
            pool.submit(wire.Exchange(REQUEST, clock.now()))
        await until(lambda: len(done) >= 10)
    finally:
        async with asyncio.timeout(GUARD):
            await pool.aclose()
    assert done == [wire.CONNECTION_ERROR] * 10
    assert pool.outstanding == 0


async def _test_silence_times_out_on_the_sweep_and_closing_abandons_the_rest() -> None:
    async def silent(s: Served, reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        await s.read(reader)
        await reader.read()  # silent until the client hangs up

    # Two connections, five exchanges: two on the wire, three waiting; all time out at 0.3 s.
    s = Served(silent, limit=2, timeout=0.3)
    pool = await s.start()
    try:
        s.submit(5)
        await until(lambda: s.requests == 2)
        await s.clock.advance(0.29)
        assert s.done == []
        await s.clock.advance(0.05)  # the sweep runs every 0.03 s: the first one past 0.3 ends all five
        assert s.statuses() == [wire.TIMEOUT] * 5
        # A connection whose exchange timed out is dropped, not reused (its late answer would be misread).
        s.done.clear()
        s.submit(2)
        await until(lambda: s.requests == 4)
    finally:
        await s.stop()
    assert s.statuses() == [wire.ABANDONED] * 2
    assert s.connections == 4
    assert pool.outstanding == 0


@contextlib.contextmanager
def black_hole() -> Iterator[tuple[socket.socket, list[socket.socket]]]:
    """A listener whose accept queue is full: the kernel drops further SYNs, so a connect hangs.

    As to a black-holed host, instead of failing. Yields the listener and the list the
    test puts its filler connections in (closed on the way out).
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    listener.setblocking(False)  # noqa: FBT003
    fillers: list[socket.socket] = []
    try:
        yield listener, fillers
    finally:
        for f in fillers:
            f.close()
        listener.close()


def fill(listener: socket.socket, fillers: list[socket.socket]) -> None:
    """Fill ``listener``'s accept queue (backlog 0: one connection) so that the next connects hang."""
    port = listener.getsockname()[1]
    first = socket.create_connection(("127.0.0.1", port), timeout=GUARD)  # queued, never accepted
    fillers.append(first)
    for _ in range(2):  # their SYNs are dropped already
        f = socket.socket()
        f.setblocking(False)  # noqa: FBT003
        with contextlib.suppress(BlockingIOError):
            f.connect(("127.0.0.1", port))
        fillers.append(f)


async def _test_a_connect_that_hangs_gives_its_slot_back_after_the_timeout() -> None:
    with black_hole() as (listener, fillers):
        fill(listener, fillers)
        clock = ManualClock()
        done: list[int] = []
        port = listener.getsockname()[1]
        pool = wire.Pool("127.0.0.1", port, lambda _ex, st: done.append(st), clock=clock, limit=1, timeout=0.3)
        pool.start()
        try:
            pool.submit(wire.Exchange(REQUEST, clock.now()))
            await clock.advance(0.29)
            assert pool.opening == 1
            assert done == []
            await clock.advance(0.02)
            assert done == [wire.TIMEOUT]
            assert pool.opening == 0
        finally:
            async with asyncio.timeout(GUARD):
                await pool.aclose()


async def recv_request(sock: socket.socket) -> None:
    """Read one :data:`REQUEST` from a raw server-side socket."""
    loop = asyncio.get_running_loop()
    got = b""
    while len(got) < len(REQUEST):
        chunk = await loop.sock_recv(sock, len(REQUEST) - len(got))
        assert chunk, "the client closed"
        got += chunk
    assert got == REQUEST


async def _test_a_failed_connect_ends_only_the_exchange_that_asked_for_it() -> None:
    """A connect that fails after its asker was served elsewhere ends nobody, not the oldest waiting exchange."""
    with black_hole() as (listener, fillers):
        loop = asyncio.get_running_loop()
        clock = ManualClock()
        done: list[tuple[int, int]] = []
        port = listener.getsockname()[1]
        pool = wire.Pool(
            "127.0.0.1", port, lambda ex, st: done.append((ex.index, st)), clock=clock, limit=2, timeout=1.0
        )
        pool.start()
        peer: socket.socket | None = None

        def submit(index: int) -> None:
            pool.submit(wire.Exchange(REQUEST, clock.now(), index=index))

        try:
            assert await pool.warm(1, within=1.0) == 1  # connection A
            peer, _ = await loop.sock_accept(listener)
            fill(listener, fillers)  # from now on every connect hangs
            submit(0)  # on A
            submit(1)  # waits; the pool opens connection B for it (it hangs)
            assert pool.opening == 1
            await recv_request(peer)
            await loop.sock_sendall(peer, OK)
            await until(lambda: len(done) == 1)  # A answered 0 and took 1 from the queue
            await recv_request(peer)
            await loop.sock_sendall(peer, OK)
            await until(lambda: len(done) == 2)
            await clock.advance(0.5)
            submit(2)  # on A, idle again
            submit(3)  # waits; no room to grow while B is opening: no connection is opened for it
            await recv_request(peer)
            await clock.advance(0.6)  # B's connect times out at 1.0: 1, its asker, is long answered
            assert done == [(0, 200), (1, 200)]
            assert pool.opening == 1  # 3 waits still: a connection is being opened for it now
            await loop.sock_sendall(peer, OK)
            await recv_request(peer)  # A answered 2 and took 3
            await loop.sock_sendall(peer, OK)
            await until(lambda: len(done) == 4)
            assert done == [(0, 200), (1, 200), (2, 200), (3, 200)]
        finally:
            async with asyncio.timeout(GUARD):
                await pool.aclose()
            if peer is not None:
                peer.close()


async def _test_an_idempotent_exchange_on_a_stale_connection_is_sent_again_on_a_fresh_one() -> None:
    """The target hangs up a reused connection before answering: an idempotent request is retried, once."""

    async def second_unanswered(s: Served, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await s.read(reader):  # answers the first request on each connection, then reads one and hangs up
            writer.write(OK)
            await writer.drain()
            await s.read(reader)

    s = Served(second_unanswered, limit=1)
    pool = await s.start()
    try:
        s.submit(1)
        await s.wait(1)
        s.submit(1, idempotent=True)  # on the reused connection; the target closes it; sent again
        await s.wait(2)
    finally:
        await s.stop()
    assert s.statuses() == [200, 200]
    assert s.connections == 2
    assert s.requests == 3
    assert s.exchanges[1].retries == 1
    assert pool.retried == 1


async def _test_a_request_that_is_not_idempotent_ends_as_stale_connection() -> None:
    """Same target, a request without ``idempotent``: not sent again, and not counted as a connection error."""

    async def second_unanswered(s: Served, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await s.read(reader):
            writer.write(OK)
            await writer.drain()
            await s.read(reader)

    s = Served(second_unanswered, limit=1)
    pool = await s.start()
    try:
        s.submit(1)
        await s.wait(1)
        s.submit(1)
        await s.wait(2)
    finally:
        await s.stop()
    assert s.statuses() == [200, wire.STALE_CONNECTION]
    assert s.connections == 1
    assert s.exchanges[1].retries == 0
    assert pool.retried == 0


async def _test_a_retried_exchange_that_fails_again_is_a_connection_error() -> None:
    """The retry's fresh connection closes unanswered too: it ends as CONNECTION_ERROR (fresh: not stale)."""

    async def only_the_first(s: Served, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = s.connections == 1
        if await s.read(reader) and first:
            writer.write(OK)
            await writer.drain()
            await s.read(reader)

    s = Served(only_the_first, limit=1)
    await s.start()
    try:
        s.submit(1)
        await s.wait(1)
        s.submit(1, idempotent=True)
        await s.wait(2)
    finally:
        await s.stop()
    assert s.statuses() == [200, wire.CONNECTION_ERROR]
    assert s.connections == 2
    assert s.exchanges[1].retries == 1


async def _test_a_body_past_max_body_is_oversize_and_its_connection_is_dropped() -> None:
    """2 MB against the default 1 MiB limit, by length and chunked: OVERSIZE; the next exchange is served anew."""
    big = 2 * 1024 * 1024
    heads = [
        f"HTTP/1.1 200 OK\r\nContent-Length: {big}\r\n\r\n".encode(),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + f"{big:x}\r\n".encode(),
    ]
    for head in heads:

        async def big_first(
            s: Served, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes = head
        ) -> None:
            first = s.connections == 1
            while await s.read(reader):
                if first:
                    writer.write(head)
                    for _ in range(32):
                        writer.write(b"x" * (big // 32))
                        await writer.drain()
                else:
                    writer.write(OK)
                    await writer.drain()

        s = Served(big_first, limit=1, keep_body=True)
        await s.start()
        try:
            s.submit(1)
            await s.wait(1)
            s.submit(1)
            await s.wait(2)
        finally:
            await s.stop()
        assert s.statuses() == [wire.OVERSIZE, 200], head
        kept = s.done[0][1]
        assert kept is None  # past wire.MAX_KEPT: read on and counted, never stored
        assert s.connections == 2


async def _test_on_done_may_submit_and_finds_its_connection_settled() -> None:
    """200 requests chained from each other's completion on one connection: each sent at once, flat stack."""
    s = Served(keep_alive, limit=1)
    pool = await s.start()
    depths: list[int] = []
    settled: list[bool] = []
    sent_at_once: list[bool] = []

    def on_done(ex: wire.Exchange, status: int) -> None:
        s.done.append((status, None))
        depths.append(stack_depth())
        # The connection that answered is idle again, not half-way (busy, carrying nothing).
        settled.append(len(pool.idle) == 1 and not pool.busy)
        if len(s.done) < 200:
            pool.submit(wire.Exchange(REQUEST, s.clock.now(), index=ex.index + 1))
            sent_at_once.append(not pool.waiting and len(pool.busy) == 1)

    pool.on_done = on_done
    try:
        s.submit(1)
        await s.wait(200)
    finally:
        await s.stop()
    assert s.statuses() == [200] * 200
    assert s.connections == 1
    assert all(settled)
    assert all(sent_at_once)
    assert len(set(depths)) == 1


async def _test_a_chain_of_completions_within_one_call_does_not_recurse() -> None:
    """Each completion submits one more that ends at once (its bytes cannot be made): 3,000 deep, a flat stack."""
    n = 3000
    s = Served(keep_alive, limit=1)

    def no_bytes(_source: object, _index: int) -> bytes:
        raise ValueError("no bytes")

    s.render = no_bytes
    pool = await s.start()
    depths: list[int] = []

    def on_done(ex: wire.Exchange, status: int) -> None:
        s.done.append((status, None))
        depths.append(stack_depth())
        if ex.index + 1 < n:
            pool.submit(wire.Exchange(None, s.clock.now(), index=ex.index + 1))

    pool.on_done = on_done
    exceptions: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: exceptions.append(context))
    try:
        assert await pool.warm(1, within=1.0) == 1
        pool.submit(wire.Exchange(None, s.clock.now(), index=0))  # an idle connection takes it: made now, fails
    finally:
        await s.stop()
    assert s.statuses() == [wire.RENDER_ERROR] * n
    assert len(set(depths)) == 1
    assert pool.render_errors == n
    assert len(exceptions) == 1


async def _test_an_on_done_that_raises_is_reported_once_and_costs_nothing_else() -> None:
    s = Served(keep_alive, limit=1)
    pool = await s.start()

    def on_done(ex: wire.Exchange, status: int) -> None:
        s.done.append((status, None))
        if ex.index % 2 == 0:
            raise RuntimeError("a bug in the caller")

    pool.on_done = on_done
    exceptions: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: exceptions.append(context))
    try:
        for i in range(6):
            pool.submit(wire.Exchange(REQUEST, s.clock.now(), index=i))
        await s.wait(6)
    finally:
        await s.stop()
    assert s.statuses() == [200] * 6  # each handed back once; none failed by the caller's bug
    assert s.connections == 1
    assert pool.callback_errors == 3
    assert len(exceptions) == 1
    assert isinstance(exceptions[0]["exception"], RuntimeError)


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
            self.pool.submit(wire.Exchange(None, self.clock.now(), source="batch", index=i))

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
    # rest wait unmade until the connection reaches them. An answer is handed back once its
    # connection has taken the next exchange, so the last of the first batch follows the second's making.
    renders = [("render", i) for i in range(n)]
    oks = [("done 200", i) for i in range(n)]
    assert r.events == renders[:ahead] + oks[: ahead - 1] + renders[ahead:] + oks[ahead - 1 :]


async def _test_an_exchange_is_made_when_an_idle_connection_takes_it_and_never_if_it_ends_waiting() -> None:
    async def first_only(s: Served, reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        await s.read(reader)
        await reader.read()  # holds the one connection until the client hangs up

    r = Rendering(first_only, timeout=30.0)
    pool = await r.start()
    try:
        assert await pool.warm(1, within=5.0) == 1
        r.submit_numbered(0, 1)  # an idle connection: made and written at once
        assert r.events == [("render", 0)]
        await until(lambda: r.requests == 1)
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
    _test_a_body_cut_short_by_the_close_is_truncated_not_its_status,
    _test_garbage_and_early_close_are_connection_errors,
    _test_nothing_listening_fails_each_exchange_once,
    _test_a_connect_that_hangs_gives_its_slot_back_after_the_timeout,
    _test_a_failed_connect_ends_only_the_exchange_that_asked_for_it,
    _test_a_server_that_closes_at_once_fails_each_exchange_and_keeps_no_dead_connection,
    _test_an_interim_answer_does_not_end_the_exchange,
    _test_an_idempotent_exchange_on_a_stale_connection_is_sent_again_on_a_fresh_one,
    _test_a_request_that_is_not_idempotent_ends_as_stale_connection,
    _test_a_retried_exchange_that_fails_again_is_a_connection_error,
    _test_a_body_past_max_body_is_oversize_and_its_connection_is_dropped,
    _test_on_done_may_submit_and_finds_its_connection_settled,
    _test_a_chain_of_completions_within_one_call_does_not_recurse,
    _test_an_on_done_that_raises_is_reported_once_and_costs_nothing_else,
    _test_waiting_exchanges_get_their_bytes_a_few_dozen_at_a_time_when_taken,
    _test_an_exchange_is_made_when_an_idle_connection_takes_it_and_never_if_it_ends_waiting,
    _test_a_request_whose_bytes_cannot_be_made_ends_alone_and_the_pool_goes_on,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[f.__name__.removeprefix("_test_") for f in SCENARIOS])
def test_wire(run: Run, scenario: Callable[[], Awaitable[None]]) -> None:
    run(scenario)
