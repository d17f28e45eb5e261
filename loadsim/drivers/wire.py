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
as the next exchange's.

Status codes handed to ``on_done`` are the HTTP status, or one of the negative
constants below for exchanges that never got an answer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import ssl
import time
from collections.abc import Callable
from typing import Any, cast

import httptools

TIMEOUT = -1
"""No complete answer within the timeout."""
CONNECTION_ERROR = -2
"""The connection could not be opened, or closed before a complete answer."""
ABANDONED = -3
"""Still unanswered when the pool was closed (the run's grace ran out)."""
RENDER_ERROR = -4
"""The request's bytes could not be made (a bug: the first such error goes to the loop's exception handler)."""


class Exchange:
    """One request on its way: its bytes, when it was handed over, and what came back.

    ``payload`` may be None: the pool's ``render`` then makes the bytes from ``source``
    and ``index`` when a connection takes the exchange (see :class:`Pool`).
    """

    __slots__ = ("body", "index", "keep_body", "payload", "source", "stage", "started", "submitted", "tag")

    def __init__(
        self,
        payload: bytes | None,
        started: float,
        *,
        keep_body: bool = False,
        tag: Any = None,
        source: Any = None,
        index: int = 0,
    ) -> None:
        self.payload = payload
        self.source = source
        """What the pool's ``render`` makes the bytes from, with ``index``, when ``payload`` is None."""
        self.index = index
        self.started = started
        """perf_counter() when the request was due to start (the caller's reference point)."""
        self.submitted = 0.0
        self.keep_body = keep_body
        self.body: bytearray | None = bytearray() if keep_body else None
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
    """One keep-alive connection; ``httptools`` calls the ``on_*`` methods while it parses."""

    __slots__ = ("closed", "current", "parser", "pool", "status", "transport")

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.current: Exchange | None = None
        self.status = 0
        self.closed = False

    # -- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport implements asyncio.Transport without subclassing it.
        self.transport = cast("asyncio.Transport", transport)
        self.pool.transports += 1

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # pragma: no cover - a load target does not upgrade
            self._fail(CONNECTION_ERROR)
        except httptools.HttpParserError:
            self._fail(CONNECTION_ERROR)

    def eof_received(self) -> bool | None:
        # The target closed its side (an idle keep-alive timeout, say): take the connection out of
        # the pool now, so no request is written to it between this and connection_lost.
        if not self.closed:
            self.closed = True
            self.pool.lost(self)
        return None  # let the transport close itself; connection_lost ends any exchange

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 - any loss ends the exchange alike
        self.pool.transport_gone()
        if not self.closed:
            self.closed = True
            self.pool.lost(self)
        ex, self.current = self.current, None
        if ex is not None:
            # Headers in and the body cut short by the close (an answer framed by the close itself
            # ends this way too): the target answered, so its status counts; otherwise no answer.
            self.pool.finish(ex, self.status or CONNECTION_ERROR)

    # -- httptools callbacks ---------------------------------------------------------------------
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        ex = self.current
        if ex is not None and ex.body is not None:
            ex.body += body

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200:  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            self.status = 0
            return
        ex, self.current = self.current, None
        status, self.status = self.status, 0
        if ex is None:  # an answer nobody asked for: the connection is out of step
            self._close()
            return
        if not self.parser.should_keep_alive():
            self._close()
        self.pool.finish(ex, status)
        if not self.closed:
            self.pool.idle_again(self)

    # -- used by the pool ------------------------------------------------------------------------
    def send(self, ex: Exchange) -> None:
        """Write ``ex`` (its bytes made already, see :meth:`Pool._render`)."""
        assert self.transport is not None
        assert ex.payload is not None
        self.current = ex
        if self.closed or self.transport.is_closing():
            self._fail(CONNECTION_ERROR)
            return
        try:
            self.transport.write(ex.payload)
        except (RuntimeError, OSError):  # uvloop raises on a handle closed under us
            self._fail(CONNECTION_ERROR)

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
    """

    def __init__(
        self,
        host: str,
        port: int,
        on_done: Done,
        *,
        limit: int,
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        render: Render | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.on_done = on_done
        self.render: Render = render or _no_render
        self.render_errors = 0
        """Exchanges finished as :data:`RENDER_ERROR`."""
        self.limit = limit
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.idle: list[_Connection] = []
        self.busy: set[_Connection] = set()
        self.waiting: collections.deque[Exchange] = collections.deque()
        self.opening = 0
        self.outstanding = 0
        """Exchanges handed to the pool and not finished yet."""
        self._closing = False
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending_opens: set[asyncio.Task[None]] = set()
        self.transports = 0
        """Transports opened and not yet reported lost by the loop."""
        self._all_gone = asyncio.Event()

    def start(self) -> None:
        """Begin the timeout sweep on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._schedule_sweep()

    async def warm(self, n: int, within: float) -> int:
        """Open up to ``n`` connections before the load starts; returns how many are idle and ready.

        Opening them as the first arrivals come due would make those arrivals wait for TCP
        (and TLS) handshakes, and at a high rate fill ``max_in_flight`` in the first tenth
        of a second. A target that refuses is not an error here: the exchanges will say so.
        """
        for _ in range(max(0, min(n, self.limit) - len(self.idle) - len(self.busy) - self.opening)):
            self._open()
        if self._pending_opens:
            await asyncio.wait(set(self._pending_opens), timeout=within)
        return len(self.idle)

    # -- submitting ------------------------------------------------------------------------------
    def submit(self, ex: Exchange) -> None:
        """Send ``ex`` now on an idle connection, or queue it and open a connection if the pool may grow."""
        ex.submitted = time.perf_counter()
        self.outstanding += 1
        if self._closing:
            self.finish(ex, ABANDONED)
            return
        if ex.payload is None and self.idle and not self._render(ex):
            return
        while self.idle:
            conn = self.idle.pop()
            if conn.closed:
                continue
            self.busy.add(conn)
            conn.send(ex)
            return
        self.waiting.append(ex)
        if self._room():
            self._open()

    def _room(self) -> bool:
        return len(self.busy) + len(self.idle) + self.opening < self.limit

    def _open(self) -> None:
        assert self._loop is not None
        self.opening += 1
        task = self._loop.create_task(self._connect())
        self._pending_opens.add(task)
        task.add_done_callback(self._pending_opens.discard)

    async def _connect(self) -> None:
        assert self._loop is not None
        conn = _Connection(self)
        try:
            # Bounded like the exchanges: a black-holed target must not hold an opening slot for the
            # kernel's whole SYN retry time (about two minutes).
            await asyncio.wait_for(
                self._loop.create_connection(
                    lambda: conn,
                    self.host,
                    self.port,
                    ssl=self.ssl_context,
                    server_hostname=self.host if self.ssl_context else None,
                ),
                self.timeout,
            )
        except Exception as e:  # noqa: BLE001 - any failure (OSError, TLS, a bad host name) is this exchange's
            self._connect_failed(TIMEOUT if isinstance(e, TimeoutError) else CONNECTION_ERROR)
            return
        finally:
            self.opening -= 1
        if conn.closed:
            # Accepted and closed before this task resumed (a target at its connection limit).
            self._connect_failed(CONNECTION_ERROR)
            return
        if self._closing:
            conn._close()  # noqa: SLF001
            return
        self.idle_again(conn)

    def _connect_failed(self, status: int) -> None:
        """The exchange that asked for a connection fails, as with any client; the next waiting one tries anew."""
        if self.waiting:
            self.finish(self.waiting.popleft(), status)
        if self.waiting and not self._closing and self._room():
            self._open()

    # -- completion ------------------------------------------------------------------------------
    def finish(self, ex: Exchange, status: int) -> None:
        """One exchange is over: tell the caller."""
        self.outstanding -= 1
        self.on_done(ex, status)

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
        """``conn`` is closed: forget it; queued exchanges need a connection to replace it."""
        self.forget(conn)
        if self.waiting and not self._closing and self._room():
            self._open()

    # -- timeouts --------------------------------------------------------------------------------
    def _schedule_sweep(self) -> None:
        assert self._loop is not None
        if not self._closing:
            self._sweeper = self._loop.call_later(min(0.05, self.timeout / 10), self._sweep)

    def _sweep(self) -> None:
        deadline = time.perf_counter() - self.timeout
        while self.waiting and self.waiting[0].submitted <= deadline:
            self.finish(self.waiting.popleft(), TIMEOUT)
        for conn in [c for c in self.busy if c.current is not None and c.current.submitted <= deadline]:
            conn._fail(TIMEOUT)  # noqa: SLF001
        self._schedule_sweep()

    # -- closing ---------------------------------------------------------------------------------
    def transport_gone(self) -> None:
        """The loop reported a transport closed."""
        self.transports -= 1
        if self.transports <= 0:
            self._all_gone.set()

    async def aclose(self, wait: float = 2.0) -> None:
        """:meth:`close`, then wait (up to ``wait`` s) until the loop has really closed every transport.

        An aborted transport is released on a later loop iteration; a loop closed
        before that would leak the socket (uvloop warns about it).
        """
        self.close()
        if self._pending_opens:
            await asyncio.wait(set(self._pending_opens), timeout=wait)
        if self.transports > 0:
            self._all_gone.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_gone.wait(), wait)

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


def _no_render(source: Any, index: int) -> bytes:
    raise ValueError(f"an exchange ({source!r}, {index}) has no payload and its pool no render")
