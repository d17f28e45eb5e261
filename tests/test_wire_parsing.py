"""The load client's connection protocol driven by hand: bytes fed in any split, closes, pauses.

A :class:`Rig` is a pool on a ManualClock whose connections have a :class:`FakeTransport`
(it records what is written; an abort only sets a flag, and the test reports the loss
itself, as the loop would, with ``connection_lost``). Nothing here touches the network,
so every interleaving is the one the test wrote.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from loadsim.clock import ManualClock
from loadsim.drivers import wire

REQUEST = b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class FakeTransport:
    """Records writes; ``fail_writes`` makes ``write`` raise as uvloop does on a handle closed under it."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False
        self.aborted = False
        self.fail_writes = False

    def write(self, data: bytes) -> None:
        if self.fail_writes:
            raise OSError("the handle is closed")
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = True
        self.aborted = True


class Rig:
    """A pool with ``n`` fake connections, and what ``on_done`` was given, in order."""

    def __init__(self, n: int = 1, *, limit: int | None = None, max_body: int = 1 << 20) -> None:
        self.clock = ManualClock()
        self.done: list[tuple[wire.Exchange, int]] = []
        # Port 9 (discard) is never connected to: a connection the pool opens stays a task that
        # has not run yet, since these tests never yield to the loop before closing the pool.
        self.pool = wire.Pool(
            "127.0.0.1", 9, self._on_done, clock=self.clock, limit=limit or n, timeout=5.0, max_body=max_body
        )
        self.conns: list[wire._Connection] = []
        self.lost: list[wire._Connection] = []
        for _ in range(n):
            self.add()

    def _on_done(self, ex: wire.Exchange, status: int) -> None:
        self.done.append((ex, status))

    def add(self) -> wire._Connection:
        """A connection opened: the pool hands it the oldest waiting exchange, or it goes idle."""
        conn = wire._Connection(self.pool)
        conn.connection_made(FakeTransport())  # type: ignore[arg-type]
        self.conns.append(conn)
        self.pool.idle_again(conn)
        return conn

    @staticmethod
    def transport(conn: wire._Connection) -> FakeTransport:
        assert isinstance(conn.transport, FakeTransport)
        return conn.transport

    def submit(self, *, keep_body: bool = False, idempotent: bool = False, index: int = 0) -> wire.Exchange:
        ex = wire.Exchange(REQUEST, self.clock.now(), keep_body=keep_body, idempotent=idempotent, index=index)
        self.pool.submit(ex)
        return ex

    def carrying(self, ex: wire.Exchange) -> wire._Connection:
        """The connection ``ex`` is on."""
        (conn,) = [c for c in self.conns if c.current is ex]
        return conn

    def hang_up(self, conn: wire._Connection) -> None:
        """The target closes: what the loop reports for a FIN."""
        conn.eof_received()
        self.lose(conn)

    def lose(self, conn: wire._Connection) -> None:
        """The loop reports the transport closed (once per connection)."""
        if conn not in self.lost:
            self.lost.append(conn)
            conn.connection_lost(None)

    def shut(self) -> None:
        """Close the pool, and report every transport it aborted as closed."""
        self.pool.close()
        for conn in self.conns:
            self.lose(conn)
        assert self.pool.transports == 0

    def statuses(self) -> list[int]:
        return [status for _, status in self.done]


# -- every split of the bytes gives the same result -----------------------------------------------


@dataclass(frozen=True)
class Answer:
    """Bytes from the target (for ``exchanges`` requests on one connection), and whether it then closes."""

    name: str
    data: bytes
    expected: list[tuple[int, bytes]]
    """(status, body kept) of each exchange, in order."""
    then_close: bool = False
    exchanges: int = 1


ANSWERS = [
    Answer(
        "content-length",
        b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"id":"m1"}',
        [(200, b'{"id":"m1"}')],
    ),
    Answer(
        "chunked",
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5\r\n{"pre\r\n12\r\nview_id":"p-42"}  \r\n0\r\n\r\n',
        [(201, b'{"preview_id":"p-42"}  ')],
    ),
    Answer("no content", b"HTTP/1.1 204 No Content\r\nServer: t\r\n\r\n", [(204, b"")]),
    Answer(
        "not modified, with a length it does not send",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n",
        [(304, b"")],
        then_close=True,
    ),
    Answer(
        "100 continue, then the answer",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        [(200, b"ok")],
    ),
    Answer(
        "framed by the close",
        b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"id":"no-length"}',
        [(200, b'{"id":"no-length"}')],
        then_close=True,
    ),
    Answer(
        "framed by the close, connection: close",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbye",
        [(200, b"bye")],
        then_close=True,
    ),
    Answer("framed by the close, HTTP/1.0", b"HTTP/1.0 200 OK\r\n\r\nhello", [(200, b"hello")], then_close=True),
    Answer(
        "framed by the close after 100 continue",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc",
        [(200, b"abc")],
        then_close=True,
    ),
    Answer(
        "length not reached",
        b'HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{"id":',
        [(wire.TRUNCATED, b'{"id":')],
        then_close=True,
    ),
    Answer(
        "length not reached, connection: close",
        b'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 40\r\n\r\n{"id":',
        [(wire.TRUNCATED, b'{"id":')],
        then_close=True,
    ),
    Answer(
        "length not reached after 100 continue, connection: close",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 9\r\n\r\nabc",
        [(wire.TRUNCATED, b"abc")],
        then_close=True,
    ),
    Answer(
        "last chunk missing",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n",
        [(wire.TRUNCATED, b"hello")],
        then_close=True,
    ),
    Answer(
        "headers only, a length declared",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        [(wire.TRUNCATED, b"")],
        then_close=True,
    ),
    Answer(
        "two answers in one read, for two exchanges",
        OK + b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nabc",
        [(200, b"ok"), (201, b"abc")],
        exchanges=2,
    ),
]


@dataclass(frozen=True)
class Outcome:
    """Everything a feeding left behind that a split must not change."""

    done: list[tuple[int, int, bytes | None]]
    """(exchange index, status, body kept) in the order handed back."""
    writes: list[bytes]
    aborted: bool
    closed: bool
    idle: int


def feed(answer: Answer, pieces: list[bytes]) -> Outcome:
    rig = Rig(limit=1)
    (conn,) = rig.conns
    for i in range(answer.exchanges):  # the second (if any) waits for the one connection
        rig.submit(keep_body=True, index=i)
    for piece in pieces:
        conn.data_received(piece)
    if answer.then_close:
        rig.hang_up(conn)
    return Outcome(
        done=[(ex.index, status, bytes(ex.body) if ex.body is not None else None) for ex, status in rig.done],
        writes=rig.transport(conn).writes,
        aborted=rig.transport(conn).aborted,
        closed=conn.closed,
        idle=len(rig.pool.idle),
    )


@pytest.mark.parametrize("answer", ANSWERS, ids=[a.name for a in ANSWERS])
def test_every_split_of_an_answer_gives_what_feeding_it_whole_gives(answer: Answer) -> None:
    """All n-1 two-piece splits and one byte at a time: same statuses, bodies, writes and connection state."""
    whole = feed(answer, [answer.data])
    assert [(status, body) for _, status, body in whole.done] == answer.expected
    assert whole.writes == [REQUEST] * answer.exchanges
    assert whole.closed == answer.then_close
    data = answer.data
    for at in range(1, len(data)):
        assert feed(answer, [data[:at], data[at:]]) == whole, f"split at {at}: {data[:at]!r} | {data[at:]!r}"
    assert feed(answer, [data[i : i + 1] for i in range(len(data))]) == whole, "one byte at a time"


# -- pause_writing --------------------------------------------------------------------------------


def test_a_paused_connection_is_handed_no_exchange_until_it_resumes() -> None:
    """Its answer completes while the transport is paused: the next exchange waits, and goes at resume_writing."""
    rig = Rig(limit=1)
    (conn,) = rig.conns
    first = rig.submit(index=0)
    conn.pause_writing()  # the transport's buffer is over its high-water mark
    conn.data_received(OK)
    assert rig.statuses() == [200]
    second = rig.submit(index=1)
    assert rig.transport(conn).writes == [REQUEST]  # not written to the paused connection
    assert list(rig.pool.waiting) == [second]
    assert rig.pool.idle == []
    assert rig.pool.opening == 0  # the paused connection still counts against the limit
    conn.resume_writing()
    assert rig.transport(conn).writes == [REQUEST, REQUEST]
    assert conn.current is second
    conn.data_received(OK)
    assert [(ex.index, status) for ex, status in rig.done] == [(0, 200), (1, 200)]
    assert rig.pool.idle == [conn]
    assert first.status == second.status == 200


def test_a_connection_resumed_before_its_answer_goes_idle_as_usual() -> None:
    rig = Rig(limit=1)
    (conn,) = rig.conns
    rig.submit()
    conn.pause_writing()
    conn.resume_writing()  # drained while the request was out: nothing to hand over yet
    assert rig.pool.idle == []
    conn.data_received(OK)
    assert rig.pool.idle == [conn]
    assert rig.statuses() == [200]


# -- stale keep-alive connections -----------------------------------------------------------------


def reused_rig(n: int, *, limit: int | None = None) -> Rig:
    """A rig whose ``n`` connections have each carried one exchange."""
    rig = Rig(n, limit=limit)
    for ex in [rig.submit() for _ in rig.conns]:
        rig.carrying(ex).data_received(OK)
    assert all(conn.reused for conn in rig.conns)
    rig.done.clear()
    return rig


def test_a_failed_write_on_a_reused_connection_is_stale() -> None:
    """The write raises (the target's close raced it): STALE_CONNECTION, not sent again (not idempotent)."""
    rig = reused_rig(1, limit=1)
    (conn,) = rig.conns
    rig.transport(conn).fail_writes = True
    ex = rig.submit()
    assert rig.statuses() == [wire.STALE_CONNECTION]
    assert ex.retries == 0
    assert conn.closed
    assert rig.pool.opening == 0


def test_a_failed_write_on_a_reused_connection_sends_an_idempotent_exchange_again() -> None:
    async def scenario() -> None:
        rig = reused_rig(1, limit=1)
        rig.pool.start()
        (conn,) = rig.conns
        rig.transport(conn).fail_writes = True
        ex = rig.submit(idempotent=True)
        assert rig.done == []
        assert ex.retries == 1
        assert list(rig.pool.waiting) == [ex]
        assert rig.pool.opening == 1  # in the stale connection's place
        fresh = rig.add()  # what that opening gives the pool: it takes the retry
        assert fresh.current is ex
        fresh.data_received(OK)
        assert rig.statuses() == [200]
        rig.shut()

    asyncio.run(scenario())


def test_a_failed_write_on_a_fresh_connection_is_a_connection_error() -> None:
    rig = Rig(1)
    (conn,) = rig.conns
    rig.transport(conn).fail_writes = True
    rig.submit(idempotent=True)
    assert rig.statuses() == [wire.CONNECTION_ERROR]


def test_a_connection_closed_after_the_first_byte_of_the_answer_is_not_stale() -> None:
    """Part of a status line came: the target was answering, so this is a connection error, never retried."""
    rig = reused_rig(1)
    (conn,) = rig.conns
    ex = rig.submit(idempotent=True)
    conn.data_received(b"HTTP/1.1 2")
    rig.hang_up(conn)
    assert rig.statuses() == [wire.CONNECTION_ERROR]
    assert ex.retries == 0


def test_a_retry_takes_no_idle_connection_and_is_never_sent_a_third_time() -> None:
    """Retried: it waits for a fresh connection or one that has just answered; stale again, it ends."""

    async def scenario() -> None:
        rig = reused_rig(3)
        rig.pool.start()
        x = rig.submit(idempotent=True, index=1)
        y = rig.submit(index=2)
        on_x, on_y = rig.carrying(x), rig.carrying(y)
        (idle,) = rig.pool.idle
        rig.hang_up(on_x)  # stale: x waits again, at the front
        assert x.retries == 1
        assert list(rig.pool.waiting) == [x]
        assert rig.pool.idle == [idle]  # not handed the idle one (it may be stale too)
        assert rig.transport(idle).writes == [REQUEST]
        assert rig.pool.opening == 1  # a fresh connection in the stale one's place, asked for by x
        on_y.data_received(OK)  # y's connection just answered: it is alive, and takes x
        assert on_y.current is x
        assert rig.transport(on_y).writes == [REQUEST] * 3
        rig.hang_up(on_y)  # stale again
        assert [(ex.index, status) for ex, status in rig.done] == [(2, 200), (1, wire.CONNECTION_ERROR)]
        assert x.retries == 1
        assert rig.pool.retried == 1
        rig.shut()

    asyncio.run(scenario())


# -- max_body -------------------------------------------------------------------------------------


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    ("answer", "status", "kept"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789", 200, b"0123456789"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n0123456789a", wire.OVERSIZE, b""),
        (CHUNKED + b"5\r\n01234\r\n5\r\n56789\r\n0\r\n\r\n", 200, b"0123456789"),
        (CHUNKED + b"5\r\n01234\r\n6\r\n56789a\r\n0\r\n\r\n", wire.OVERSIZE, b"01234"),
    ],
    ids=["length at the limit", "length past it", "chunks at the limit", "chunks past it"],
)
def test_a_body_is_oversize_one_byte_past_max_body_and_its_connection_closes(
    answer: bytes, status: int, kept: bytes
) -> None:
    rig = Rig(1, max_body=10)
    (conn,) = rig.conns
    ex = rig.submit(keep_body=True)
    conn.data_received(answer)
    assert rig.statuses() == [status]
    assert ex.body is not None
    assert bytes(ex.body) == kept
    assert conn.closed == (status == wire.OVERSIZE)
    assert rig.transport(conn).aborted == (status == wire.OVERSIZE)


def test_a_head_without_end_is_oversize() -> None:
    rig = Rig(1)
    (conn,) = rig.conns
    rig.submit()
    conn.data_received(b"HTTP/1.1 200 OK\r\n")
    line = b"X-Padding: " + b"p" * 1000 + b"\r\n"
    for _ in range(wire.MAX_HEAD // len(line) + 2):
        conn.data_received(line)
        if rig.done:
            break
    assert rig.statuses() == [wire.OVERSIZE]
    assert conn.closed
