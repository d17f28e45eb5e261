"""A keep-alive HTTP/1.1 client built for generating load: bytes in, status out, no task per request.

aiohttp's client costs 80-150 us of CPU per request (a task, a request and a
response object, header multidicts, timeout handles, a connector round trip),
which is more than the whole per-request budget of a generator that aims at
tens of thousands of requests per second on one core. A load generator needs
far less: every request's shape is known before it is due, drawn in bulk, and
its bytes can be made just before they are written; the answer it needs is the
status code (and, for the relay's two-step flow, one small JSON body). So this
client is a pool of :class:`asyncio.Protocol` connections (uvloop's transports
when uvloop runs the loop), each carrying one exchange at a time over HTTP/1.1
keep-alive (no pipelining: a pipelined generator would measure its own queue,
not the target), with responses parsed by
``httptools`` (the C parser uvicorn uses, by uvloop's authors: chunked bodies,
``Connection: close`` and keep-alive rules are its job, not ours). Completion is a
callback, ``on_done(exchange, status)``.

Exchanges that find no idle connection wait in a FIFO queue while the pool
opens connections up to ``limit``; the caller bounds how many exchanges exist
at once (the driver drops arrivals past ``--max-in-flight``), so the queue is
bounded too. One periodic sweep (not one timer per request) expires exchanges
older than ``timeout`` whether they wait or are on the wire; an expired exchange
on the wire aborts its connection, since its late answer would otherwise be read
as the next exchange's. Time is the injected :class:`~loadsim.clock.Clock`'s:
``Exchange.started`` and ``Exchange.submitted`` are run times, and the sweep and
the connect timeout are the clock's timers, so tests move time by hand.

Completions are delivered from one loop that never nests. A connection that ends
an exchange first settles itself (idle, on to the next waiting exchange, or
closed) and only queues the exchange; whoever called into the pool (the loop
handing over bytes or a close, the sweep, a ``submit``) delivers the queue as its
last step. An ``on_done`` may therefore ``submit`` at once (the relay flow submits
its second request from the first one's completion) and find the connection it
just freed idle; what finishes during that submit is queued behind, not recursed
into, so a chain of thousands of completions keeps a flat stack.

Status codes handed to ``on_done`` are the HTTP status, or one of the negative
constants below. :data:`TIMEOUT`, :data:`CONNECTION_ERROR`, :data:`ABANDONED` and
:data:`RENDER_ERROR` say that no answer came (or no request could be made). Three
more keep apart what those, or a status, would miscount:

* :data:`STALE_CONNECTION`: HTTP/1.1 lets either side close an idle keep-alive
  connection, and a request written just as the target closes one dies unanswered
  (the target's keep-alive timeout races the generator). That is a race the client
  loses, not the target failing, so it is not a ``CONNECTION_ERROR``. Only a
  connection that already carried a complete exchange, closed (or failing the
  write) before one byte of the next answer came, counts as stale. An exchange
  marked ``idempotent`` (the relay's execute carries an ``Idempotency-Key``) is
  then sent once more, on a fresh connection or one that has just answered (see
  :class:`Pool`), and ends as any exchange does if that fails too; the others end
  as ``STALE_CONNECTION``, since sending them twice could do their work twice.
* :data:`TRUNCATED`: the headers came and the connection closed before the body's
  declared end (``Content-Length`` not reached, chunks not finished). The status
  line alone is not an answer: a 200 whose body was cut off did not deliver it.
  A body framed by the close itself (no length, not chunked) is complete at the
  close and keeps its status; an answer that may have no body (204, 304, 1xx; we
  never send HEAD) is complete after its headers.
* :data:`OVERSIZE`: the body outgrew ``max_body`` (or the head :data:`MAX_HEAD`).
  It is counted as it arrives, kept or not, so a target streaming without end
  cannot grow memory or hold a connection; the connection is closed, since the
  rest of that body would otherwise be read as the next answer.

A connection whose transport asks it to stop writing (``pause_writing``: the
target is not reading) is handed no new exchange until ``resume_writing``; an
answer that completes meanwhile leaves it out of the pool until then.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import ssl
from collections.abc import Callable
from typing import Any, cast

import aiohappyeyeballs
import httptools

from loadsim.clock import Clock, Timer, wait_event, wait_for
from loadsim.net import LOOPBACK_ONLY, BeyondLoopbackError, Reach

TIMEOUT = -1
"""No complete answer within the timeout."""
SWEEP_FLOOR = 0.005
"""Shortest time between two timeout sweeps (seconds): a timeout fires up to this late."""
CONNECTION_ERROR = -2
"""The connection could not be opened, or closed before a complete answer."""
ABANDONED = -3
"""Still unanswered when the pool was closed (the run's grace ran out)."""
RENDER_ERROR = -4
"""The request's bytes could not be made (a bug: the first such error goes to the loop's exception handler)."""
STALE_CONNECTION = -5
"""The target closed a reused keep-alive connection before answering; not retried: the request is not idempotent."""
TRUNCATED = -6
"""The headers came, then the connection closed before the body's declared end (its length, or its last chunk)."""
OVERSIZE = -7
"""The body was longer than the pool's ``max_body`` (or the head than :data:`MAX_HEAD`); the connection was closed."""

MAX_HEAD = 1 << 16
"""Bytes of an answer's head (status line, headers, interim answers before it) past which it is :data:`OVERSIZE`."""
MAX_KEPT = 1 << 16
"""Bytes of a body kept for an exchange that asked for it (``keep_body``); a longer body is read on, not kept.

The relay flow keeps its preview's answer to read one ``preview_id`` out of it. Up to
``max_body`` per exchange, every connection of a large pool holding a big answer at
once could hold ``connections x max_body`` (256 MiB at the defaults, 10 GiB with
``--connections 10000``); kept to this much, it is 16 MiB at most.
"""


class Exchange:
    """One request on its way: its bytes, when it was handed over, and what came back.

    ``payload`` may be None: the pool's ``render`` then makes the bytes from ``source``
    and ``index`` when a connection takes the exchange (see :class:`Pool`). An exchange
    is submitted once.
    """

    __slots__ = (
        "body",
        "idempotent",
        "index",
        "keep_body",
        "payload",
        "retries",
        "source",
        "stage",
        "started",
        "status",
        "submitted",
        "tag",
    )

    def __init__(
        self,
        payload: bytes | None,
        started: float,
        *,
        keep_body: bool = False,
        tag: Any = None,
        source: Any = None,
        index: int = 0,
        idempotent: bool = False,
    ) -> None:
        self.payload = payload
        self.source = source
        """What the pool's ``render`` makes the bytes from, with ``index``, when ``payload`` is None."""
        self.index = index
        self.started = started
        """Run time (the pool's clock) when the request was due to start: the caller's reference point."""
        self.submitted = 0.0
        """Run time when it was handed to :meth:`Pool.submit`; its timeout counts from here."""
        self.keep_body = keep_body
        self.body: bytearray | None = bytearray() if keep_body else None
        """The body, when ``keep_body``; None again if it outgrew the pool's ``max_kept`` (read on, not kept)."""
        self.idempotent = idempotent
        """Safe to send twice: sent once more if a reused connection went stale under it (:data:`STALE_CONNECTION`)."""
        self.retries = 0
        """How many times the pool sent it again (at most once)."""
        self.status = 0
        """0 until it finishes; then the status handed to ``on_done``."""
        self.stage = 0
        """Free for the caller: which step of a multi-request flow this is."""
        self.tag = tag
        """Free for the caller."""


RENDER_AHEAD = 32
"""Waiting exchanges whose bytes are made together when the first of them is taken (see :class:`Pool`)."""

Done = Callable[[Exchange, int], None]
Render = Callable[[Any, int], bytes]
"""Makes an exchange's bytes from its ``source`` and ``index``."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; ``httptools`` calls the ``on_*`` methods while it parses.

    It never calls ``on_done``: it settles its own state, then :meth:`Pool.finish`
    queues the exchange, and whoever called in (``data_received``, ``connection_lost``,
    the pool) delivers the queue last.
    """

    __slots__ = (
        "closed",
        "current",
        "head",
        "left",
        "max_body",
        "parser",
        "paused",
        "pool",
        "reused",
        "status",
        "transport",
    )

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.current: Exchange | None = None
        self.status = 0
        """The answer's status once its headers are in; 0 before (and after it completes)."""
        self.closed = False
        self.reused = False
        """It carried a complete exchange: a close before the next answer's first byte is a stale connection."""
        self.paused = False
        """The transport asked us to stop writing (:meth:`pause_writing`)."""
        self.head = b""
        """The answer's bytes until its headers are complete (b"" before its first byte; see :meth:`_framed`)."""
        self.max_body = pool.max_body
        self.left = pool.max_body
        """Body bytes the answer may still have before it is :data:`OVERSIZE`."""

    # -- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport implements asyncio.Transport without subclassing it.
        self.transport = cast("asyncio.Transport", transport)
        self.pool.transports += 1

    def data_received(self, data: bytes) -> None:
        if not self.head:  # the answer's first bytes: kept (by reference) until its headers are complete
            self.head = data
        elif not self.status and not self._more_head(data):
            self.pool.deliver()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # pragma: no cover - a load target does not upgrade
            self._fail(CONNECTION_ERROR)
        except httptools.HttpParserError:
            self._fail(CONNECTION_ERROR)
        pool = self.pool
        if pool.finished:
            pool.deliver()

    def eof_received(self) -> bool | None:
        # The target closed its side (an idle keep-alive timeout, say): take the connection out of
        # the pool now, so no request is written to it between this and connection_lost.
        if not self.closed:
            self.closed = True
            self.pool.lost(self)
        return None  # let the transport close itself; connection_lost ends any exchange

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 - any loss ends the exchange alike
        pool = self.pool
        pool.transport_gone()
        if not self.closed:
            self.closed = True
            pool.lost(self)
        ex, self.current = self.current, None
        if ex is not None:
            if self.status:  # headers in, the body cut short or framed by the close itself
                pool.finish(ex, TRUNCATED if self._framed() else self.status)
            elif self.reused and not self.head:  # not one byte of the answer: the target closed it as idle
                pool.stale(ex)
            else:
                pool.finish(ex, CONNECTION_ERROR)
        pool.deliver()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        pool = self.pool
        if self.current is None and not self.closed and self in pool.busy:
            # Its answer completed while paused: it was kept out of the pool until now.
            pool.idle_again(self)
            pool.deliver()

    # -- httptools callbacks ---------------------------------------------------------------------
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.left = left = self.left - len(body)
        ex = self.current
        if ex is not None:
            if left < 0:
                self._fail(OVERSIZE)  # the parser goes on with this chunk, but nothing is kept or ended by it
            elif ex.body is not None:
                if len(ex.body) + len(body) > self.pool.max_kept:
                    ex.body = None  # too long to keep: the rest is read and counted, not stored
                else:
                    ex.body += body

    def on_message_complete(self) -> None:
        status = self.status
        self.status = 0
        if 100 <= status < 200:  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            return
        self.head = b""
        self.left = self.max_body
        ex, self.current = self.current, None
        if ex is None:  # an answer nobody asked for (or the rest of one already ended): out of step
            self._close()
            return
        ex.status = status  # Pool.finish, inlined: queued, delivered once this connection has settled below
        self.pool.finished.append(ex)
        self.reused = True
        if not self.parser.should_keep_alive():
            self._close()
        elif not self.paused:
            self.pool.idle_again(self)
        # else: kept out of the pool (in ``busy``, carrying nothing) until resume_writing

    # -- used by the pool ------------------------------------------------------------------------
    def send(self, ex: Exchange) -> None:
        """Write ``ex`` (its bytes made already, see :meth:`Pool._render`)."""
        assert self.transport is not None
        assert ex.payload is not None
        self.current = ex
        if self.closed or self.transport.is_closing():
            self._unsent()
            return
        try:
            self.transport.write(ex.payload)
        except (RuntimeError, OSError):  # uvloop raises on a handle closed under us
            self._unsent()

    def _unsent(self) -> None:
        """The write failed: on a reused connection that is a stale one, else a connection error."""
        ex, self.current = self.current, None
        self._close()
        if ex is not None:
            if self.reused:
                self.pool.stale(ex)
            else:
                self.pool.finish(ex, CONNECTION_ERROR)

    def _fail(self, status: int) -> None:
        ex, self.current = self.current, None
        self._close()
        if ex is not None:
            self.pool.finish(ex, status)

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.lost(self)
        else:
            self.pool.forget(self)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def _more_head(self, data: bytes) -> bool:
        """A head longer than one read: keep it whole; False (the exchange :data:`OVERSIZE`) past :data:`MAX_HEAD`."""
        if len(self.head) > MAX_HEAD:
            self._fail(OVERSIZE)
            return False
        self.head += data
        return True

    def _framed(self) -> bool:
        """Whether the answer the close cut off declared where its body ends (a length, or chunks).

        llhttp keeps a connection alive only when the body's end is known without the
        close, so a keep-alive answer was framed. Otherwise (``Connection: close``,
        HTTP/1.0) its head is read again here; tracking framing on every answer would
        cost an ``on_header`` call per header, about 0.5 us per answer from nginx.
        """
        return bool(self.parser.should_keep_alive()) or _declares_end(self.head)


class _HeadReader:
    """What a response head says about where its body ends; fed by a throwaway parser."""

    __slots__ = ("coding", "framed", "length")

    def __init__(self) -> None:
        self.coding: bytes | None = None
        self.length = False
        self.framed = True
        """Until a head is complete, assume it was framed: a status we cannot vouch for is not counted."""

    def on_message_begin(self) -> None:
        self.coding = None
        self.length = False

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length":
            self.length = True
        elif name == b"transfer-encoding":
            self.coding = value if self.coding is None else self.coding + b"," + value

    def on_headers_complete(self) -> None:
        if self.coding is not None:  # chunked only when it is the last coding (RFC 9112 6.3), as llhttp reads it
            self.framed = self.coding.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
        else:
            self.framed = self.length


def _declares_end(head: bytes) -> bool:
    """Whether the last response head in ``head`` has a ``Content-Length`` or a chunked body."""
    reader = _HeadReader()
    with contextlib.suppress(httptools.HttpParserError):
        httptools.HttpResponseParser(reader).feed_data(head)
    return reader.framed


class Pool:
    """Up to ``limit`` keep-alive connections to one origin, sharing one FIFO of waiting exchanges.

    An exchange submitted without its bytes gets them from ``render`` when a connection
    takes it (with the next few waiting, see :meth:`_render_ahead`); what its ``source``
    holds stays alive while it waits, so it should be compact. A generator that
    falls behind holds a backlog of up to ``--max-in-flight`` exchanges. When the driver
    made each request's bytes as it came due, a backlog of 10,000 (about 28 MB of Gmail
    bodies) was cold in the cache by the time it was written: against nginx the driver
    then finished 6-14% fewer requests per second than with a backlog of 512, so a run
    that fell behind for a moment got slower still, just when it had to catch up. Made
    when taken, the backlog costs no throughput, and an exchange that times out waiting
    is made only if it was among the :data:`RENDER_AHEAD` made together.

    Each connection being opened was asked for by one exchange (the one whose
    ``submit`` found no idle connection and room to grow, or the oldest waiting one
    without an opening of its own when a connection is lost). If the connect fails,
    that exchange ends as :data:`CONNECTION_ERROR` (or :data:`TIMEOUT`) if it is still
    waiting; if another connection took it meanwhile, the failure ends nobody.

    An idempotent exchange whose reused connection went stale waits again at the
    front of the queue (it is older than all the others), and the pool opens a
    connection in the stale one's place. It is not handed an idle connection: one
    that has sat idle as long may be racing the target's keep-alive timeout too. It
    goes to that fresh connection or to one that has just answered, whichever is
    ready first, and is never sent a third time.
    """

    def __init__(
        self,
        host: str,
        port: int,
        on_done: Done,
        *,
        clock: Clock,
        limit: int,
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        render: Render | None = None,
        max_body: int = 1 << 20,
        max_kept: int = MAX_KEPT,
        reach: Reach = LOOPBACK_ONLY,
    ) -> None:
        self.host = host
        self.reach = reach
        """Which addresses a connection may reach (checked at every connection; see :class:`~loadsim.net.Reach`)."""
        self.refused = 0
        """Connections not made because the address they would reach is beyond the pool's reach."""
        self.max_kept = max_kept
        self.port = port
        self.on_done = on_done
        self.clock = clock
        self._now = clock.source()[0]
        """The clock's source: submit and sweep times are durations apart, the offset does not matter."""
        self.render: Render = render or _no_render
        self.render_errors = 0
        """Exchanges finished as :data:`RENDER_ERROR`."""
        self.callback_errors = 0
        """Times ``on_done`` raised (the first goes to the loop's exception handler)."""
        self.retried = 0
        """Idempotent exchanges sent again after a stale connection."""
        self.limit = limit
        self.timeout = timeout
        self.max_body = max_body
        self.ssl_context = ssl_context
        self.idle: list[_Connection] = []
        self.busy: set[_Connection] = set()
        self.waiting: collections.deque[Exchange] = collections.deque()
        self.finished: collections.deque[Exchange] = collections.deque()
        """Exchanges ended and not yet handed to ``on_done`` (see :meth:`deliver`)."""
        self._delivering = False
        self.opening = 0
        self._asking: set[Exchange] = set()
        """Waiting exchanges a connection is being opened for."""
        self.outstanding = 0
        """Exchanges handed to the pool and not yet handed back to ``on_done``."""
        self._closing = False
        self._sweeper: Timer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending_opens: set[asyncio.Task[None]] = set()
        self.transports = 0
        """Transports opened and not yet reported lost by the loop."""
        self._all_gone = asyncio.Event()

    def start(self) -> None:
        """Begin the timeout sweep; connections are opened on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._schedule_sweep()

    async def warm(self, n: int, within: float) -> int:
        """Open up to ``n`` connections before the load starts; returns how many are idle and ready.

        Opening them as the first arrivals come due would make those arrivals wait for TCP
        (and TLS) handshakes, and at a high rate fill ``max_in_flight`` in the first tenth
        of a second. A target that refuses is not an error here: the exchanges will say so.
        """
        for _ in range(max(0, min(n, self.limit) - len(self.idle) - len(self.busy) - self.opening)):
            self._open(None)
        await self._opened(within)
        return len(self.idle)

    async def _opened(self, within: float) -> None:
        """Wait (up to ``within`` s of the clock's time) until no connection is being opened."""
        if self._pending_opens:
            with contextlib.suppress(TimeoutError):
                await wait_for(self.clock, asyncio.wait(set(self._pending_opens)), within)

    # -- submitting ------------------------------------------------------------------------------
    def submit(self, ex: Exchange) -> None:
        """Send ``ex`` now on an idle connection, or queue it and open a connection if the pool may grow."""
        ex.submitted = self._now()
        self.outstanding += 1
        if self._closing:
            self.finish(ex, ABANDONED)
        elif ex.payload is not None or not self.idle or self._render(ex):
            idle = self.idle
            while idle:
                conn = idle.pop()
                if not conn.closed:
                    self.busy.add(conn)
                    conn.send(ex)
                    break
            else:
                self.waiting.append(ex)
                if self._room():
                    self._open(ex)
        if self.finished:
            self.deliver()

    def _room(self) -> bool:
        return len(self.busy) + len(self.idle) + self.opening < self.limit

    def _open(self, asker: Exchange | None) -> None:
        """Open a connection, on behalf of ``asker`` (None: :meth:`warm`'s, on nobody's behalf)."""
        assert self._loop is not None
        self.opening += 1
        if asker is not None:
            self._asking.add(asker)
        task = self._loop.create_task(self._connect(asker))
        self._pending_opens.add(task)
        task.add_done_callback(self._pending_opens.discard)

    def _open_for_waiting(self) -> None:
        """If the pool may grow, open a connection for the oldest waiting exchange that has none being opened."""
        if self._closing or not self.waiting or not self._room():
            return
        asking = self._asking
        for ex in self.waiting:
            if ex not in asking:
                self._open(ex)
                return

    async def _connect(self, asker: Exchange | None) -> None:
        assert self._loop is not None
        conn = _Connection(self)
        status = 0
        try:
            # Bounded like the exchanges: a black-holed target must not hold an opening slot for the
            # kernel's whole SYN retry time (about two minutes).
            await wait_for(self.clock, self._connect_checked(conn), self.timeout)
        except BeyondLoopbackError:
            self.refused += 1
            status = CONNECTION_ERROR
        except Exception as e:  # noqa: BLE001 - any failure (OSError, TLS, a bad host name) is the asker's
            status = TIMEOUT if isinstance(e, TimeoutError) else CONNECTION_ERROR
        finally:
            self.opening -= 1
            if asker is not None:
                self._asking.discard(asker)
        if not status and conn.closed:  # accepted and closed before this task resumed (a target at its limit)
            status = CONNECTION_ERROR
        if status:
            self._connect_failed(asker, status)
        elif self._closing:
            conn._close()  # noqa: SLF001
        else:
            self.idle_again(conn)
        self.deliver()

    async def _connect_checked(self, conn: _Connection) -> None:
        """Resolve, keep the addresses the pool's reach allows, and connect to one of those (not to the name).

        Checked here, at every connection, on the address the socket connects to: a name
        that resolved to loopback when the run was checked may resolve elsewhere now.
        """
        assert self._loop is not None
        infos = await self.reach.addresses(self.host, self.port)
        sock = await aiohappyeyeballs.start_connection(infos, loop=self._loop)
        try:
            await self._loop.create_connection(
                lambda: conn,
                sock=sock,
                ssl=self.ssl_context,
                server_hostname=self.host if self.ssl_context else None,
            )
        except BaseException:
            sock.close()
            raise

    def _connect_failed(self, asker: Exchange | None, status: int) -> None:
        """The exchange that asked for the connection fails if it still waits; then the queue asks anew."""
        if asker is not None and not asker.status and all(c.current is not asker for c in self.busy):
            try:
                self.waiting.remove(asker)  # waiting, since neither finished nor on a connection
            except ValueError:  # pragma: no cover - by the invariant above
                pass
            else:
                self.finish(asker, status)
        self._open_for_waiting()

    # -- completion ------------------------------------------------------------------------------
    def finish(self, ex: Exchange, status: int) -> None:
        """``ex`` is over: queue it for :meth:`deliver` (the caller may be halfway through a state change)."""
        ex.status = status
        self.finished.append(ex)

    def deliver(self) -> None:
        """Hand every finished exchange to ``on_done``, oldest first, from one loop that never nests.

        Called last by everything that calls into the pool. An ``on_done`` that submits
        (or closes) lands here again while this loop runs: that call returns at once and
        what it finished is delivered by this loop, in order, with the stack flat.
        """
        if self._delivering:
            return
        self._delivering = True
        finished = self.finished
        on_done = self.on_done
        try:
            while finished:
                ex = finished.popleft()
                self.outstanding -= 1
                try:
                    on_done(ex, ex.status)
                except Exception as e:
                    if self._loop is None:
                        raise
                    self.callback_errors += 1
                    if self.callback_errors == 1:
                        self._loop.call_exception_handler(
                            {"message": "on_done raised; the pool delivers the rest", "exception": e}
                        )
        finally:
            self._delivering = False

    def stale(self, ex: Exchange) -> None:
        """``ex`` was on a reused connection that closed (or failed a write) before a byte of its answer came."""
        if self._closing:
            self.finish(ex, ABANDONED)
        elif not ex.idempotent:
            self.finish(ex, STALE_CONNECTION)
        elif ex.retries:
            self.finish(ex, CONNECTION_ERROR)  # stale again: it ends as any failed exchange does
        else:
            ex.retries += 1
            self.retried += 1
            waiting = self.waiting
            at = 0
            for other in waiting:  # at the front, bar older retries: the sweep expects oldest first
                if other.submitted > ex.submitted:
                    break
                at += 1
            waiting.insert(at, ex)
            self._open_for_waiting()

    def idle_again(self, conn: _Connection) -> None:
        """``conn`` can carry another exchange: the oldest waiting one, or it goes idle."""
        self.busy.discard(conn)
        while self.waiting and not self._closing:
            ex = self.waiting.popleft()
            if ex.payload is None and not self._render_ahead(ex):
                continue  # finished as RENDER_ERROR: the next one
            self.busy.add(conn)
            conn.send(ex)
            return
        self.idle.append(conn)

    def _render(self, ex: Exchange) -> bool:
        """Make the bytes of ``ex``; False (and ``ex`` finished as :data:`RENDER_ERROR`) if ``render`` raised."""
        try:
            ex.payload = self.render(ex.source, ex.index)
        except Exception as e:  # noqa: BLE001 - any failure is this exchange's; the run goes on
            self.render_errors += 1
            if self.render_errors == 1 and self._loop is not None:
                self._loop.call_exception_handler(
                    {"message": "could not make a request's bytes; such requests end as render_error", "exception": e}
                )
            self.finish(ex, RENDER_ERROR)
            return False
        return True

    def _render_ahead(self, ex: Exchange) -> bool:
        """:meth:`_render` ``ex`` and make the bytes of the next waiting ones too, :data:`RENDER_AHEAD` in all.

        Made one at a time, each between the answers that free the connections, the
        driver's maximum fell by about 8% (the interpreter and caches go cold between
        them); a few dozen at once cost no more than making them as they came due, and
        keep what is made ahead to about 100 KB.
        """
        if not self._render(ex):
            return False
        render = self.render
        for nxt in itertools.islice(self.waiting, RENDER_AHEAD - 1):
            if nxt.payload is None:
                try:
                    nxt.payload = render(nxt.source, nxt.index)
                except Exception:  # noqa: BLE001 - it fails again, and is finished, when a connection takes it
                    break
        return True

    def forget(self, conn: _Connection) -> None:
        """Take ``conn`` out of ``busy`` and ``idle`` (it is closed)."""
        self.busy.discard(conn)
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)

    def lost(self, conn: _Connection) -> None:
        """``conn`` is closed: forget it; a waiting exchange may need a connection in its place."""
        self.forget(conn)
        self._open_for_waiting()

    # -- timeouts --------------------------------------------------------------------------------
    def _schedule_sweep(self) -> None:
        if not self._closing:
            # A tenth of the timeout, between 5 and 50 ms: below 5 ms the sweep alone kept the loop
            # spinning (uvloop's timers tick in whole milliseconds), whatever the traffic.
            self._sweeper = self.clock.call_later(min(0.05, max(self.timeout / 10, SWEEP_FLOOR)), self._sweep)

    def _sweep(self) -> None:
        deadline = self._now() - self.timeout
        waiting = self.waiting
        while waiting and waiting[0].submitted <= deadline:
            self.finish(waiting.popleft(), TIMEOUT)
        for conn in [c for c in self.busy if c.current is not None and c.current.submitted <= deadline]:
            conn._fail(TIMEOUT)  # noqa: SLF001
        self.deliver()
        self._schedule_sweep()

    # -- closing ---------------------------------------------------------------------------------
    def transport_gone(self) -> None:
        """The loop reported a transport closed."""
        self.transports -= 1
        if self.transports <= 0:
            self._all_gone.set()

    async def aclose(self, wait: float = 2.0) -> None:
        """:meth:`close`, then wait (up to ``wait`` s of the clock's time) until the loop has closed every transport.

        An aborted transport is released on a later loop iteration; a loop closed
        before that would leak the socket (uvloop warns about it).
        """
        self.close()
        await self._opened(wait)
        if self.transports > 0:
            self._all_gone.clear()
            await wait_event(self.clock, self._all_gone, wait)

    def close(self) -> None:
        """Abort every connection; whatever was still unanswered finishes as :data:`ABANDONED`."""
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in self._pending_opens:
            task.cancel()
        while self.waiting:
            self.finish(self.waiting.popleft(), ABANDONED)
        for conn in [*self.busy, *self.idle]:
            ex, conn.current = conn.current, None
            conn._close()  # noqa: SLF001
            if ex is not None:
                self.finish(ex, ABANDONED)
        self.deliver()


def _no_render(source: Any, index: int) -> bytes:
    raise ValueError(f"an exchange ({source!r}, {index}) has no payload and its pool no render")
