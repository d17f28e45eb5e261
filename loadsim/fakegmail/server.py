"""A fake Gmail API on aiohttp: ``messages.send`` answered as the outcome model says, on loopback by default.

``POST /gmail/v1/users/{userId}/messages/send`` with a JSON body carrying a base64url
``raw`` message. Each request goes through, in order:

1. **auth**: ``Authorization: Bearer TOKEN`` is required; a token ending in
   ``-expired`` (e.g. ``Bearer alice-expired``) stands for an expired access token.
   Either failure is Gmail's 401 ``UNAUTHENTICATED`` with ``WWW-Authenticate``, so a
   client's refresh-and-retry path can be exercised on demand;
2. **body**: not JSON, not an object, no ``raw``, or ``raw`` not base64url (the
   alphabet ``A-Z a-z 0-9 - _``, padding optional) is Gmail's 400
   ``INVALID_ARGUMENT``. Malformed requests are refused before they are charged;
3. **quota**: a token bucket per user (:mod:`loadsim.fakegmail.quota`, 2.5 sends/s
   with a burst of 10 by default). The user is the path's ``userId``, or the bearer
   token when it is ``me`` (one token, one user). Over quota is a 429 with
   ``Retry-After`` (whole seconds), so rate limiting emerges from load;
4. **outcome**: one draw from the outcome model's Gmail view
   (:mod:`loadsim.fakegmail.outcomes`), then the sampled call latency is waited on
   the server's :class:`~loadsim.clock.Clock`:

   * ``ok``: 200 ``{"id", "threadId", "labelIds": ["SENT"]}`` (a new thread's id is
     the message's id unless the body names a ``threadId``);
   * ``gmail_429``, ``gmail_4xx``, ``gmail_5xx``: Gmail-shaped errors
     (:mod:`loadsim.fakegmail.responses`); the model's own 429s carry no Retry-After,
     as Gmail's concurrent-request 429s do not;
   * ``gmail_timeout``: the request is held for the sampled latency (the relay's
     client timeout, 30 s, plus a few ms: past a client's timeout by construction),
     capped by ``max_hold``; a client still waiting then gets 504
     ``DEADLINE_EXCEEDED``;
   * ``gmail_network_error``: the connection is reset (``SO_LINGER`` 0, then abort)
     without an answer.

The same listener serves ``/healthz``, ``/metrics`` (``fakegmail_*``, its own
registry) and the control API (:mod:`loadsim.fakegmail.control`). The control API
can inject faults, so the default address is loopback; any other address is
accepted as given and logged as a warning.

Time comes from one injected :class:`~loadsim.clock.Clock` (a :class:`~loadsim.clock.WallClock`
unless given): call latencies, held calls, the quota's refill, overlay ends and the
ISO times in answers all read it, so a test on a :class:`~loadsim.clock.ManualClock`
sees a 30 s hold or a 15 min overlay pass in one ``advance``. Only the network is
real (and aiohttp's shutdown grace, which waits for sockets, not for the model).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import numpy as np
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from loadsim.clock import Clock, WallClock
from loadsim.fakegmail import responses
from loadsim.fakegmail.control import ControlRoutes, LiveOverlays
from loadsim.fakegmail.metrics import FakeGmailMetrics
from loadsim.fakegmail.outcomes import DEFAULT_BATCH, Call, CallSampler
from loadsim.fakegmail.quota import QuotaParams, UserQuota, retry_after_header
from loadsim.fakegmail.responses import GmailError
from loadsim.logs import http_server_logger
from loadsim.model.params import ModelParams
from loadsim.net import ListenAddress
from loadsim.overlays.timeline import Active

DEFAULT_LISTEN = "127.0.0.1:9480"
SEND_PATH = "/gmail/v1/users/{user_id}/messages/send"
EXPIRED_SUFFIX = "-expired"
"""A bearer token ending in this is treated as expired (401)."""
DEFAULT_MAX_HOLD = 60.0
"""Longest a timed-out call is held (the model's default hold is about 30 s)."""
MAX_BODY_BYTES = 50 * 1024 * 1024
"""Gmail takes messages up to 35 MB; base64url makes that about 47 MB of JSON."""
SHUTDOWN_SECONDS = 1.0
"""How long ``stop`` lets answers in progress finish; held calls are then cut off."""

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def is_base64url(text: str) -> bool:
    """Whether ``text`` is non-empty base64url (RFC 4648 section 5), padded or not."""
    if not text or _BASE64URL.fullmatch(text) is None:
        return False
    data = text.rstrip("=")
    if len(data) % 4 == 1:
        return False  # a lone 6-bit group cannot end a byte sequence
    return len(data) == len(text) or len(text) % 4 == 0


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, or None."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class FakeGmailConfig:
    """How a fake Gmail behaves; everything else follows from the seed."""

    seed: int = 1
    params: ModelParams = field(default_factory=ModelParams)
    """The healthy baseline; overlays derive from it. Only its Gmail-side part is used."""
    quota: QuotaParams | None = field(default_factory=QuotaParams)
    """Per-user quota; None turns it off (only the model's own 429s remain)."""
    max_hold: float = DEFAULT_MAX_HOLD
    """Cap on how long a timed-out call is held, in seconds (keep it short in tests)."""
    batch: int = DEFAULT_BATCH


class FakeGmail:
    """One fake Gmail: the send endpoint, the control API, health and metrics on one listener."""

    def __init__(
        self,
        config: FakeGmailConfig | None = None,
        *,
        clock: Clock | None = None,
        log: Any = None,
    ) -> None:
        """``clock`` times every wait (latencies, held calls, overlay ends) and the quota (default: wall)."""
        self.config = config = config or FakeGmailConfig()
        self.log = log
        self.clock = clock = clock or WallClock()
        outcomes, ids = np.random.SeedSequence(config.seed).spawn(2)
        self.sampler = CallSampler(config.params, np.random.Generator(np.random.PCG64(outcomes)), config.batch)
        self._ids = np.random.Generator(np.random.PCG64(ids))
        self.quota = None if config.quota is None else UserQuota(config.quota)
        self.overlays = LiveOverlays(config.params, self._on_change, clock=clock, log=log)
        self.metrics = FakeGmailMetrics(tuple(self.overlays.scenarios))
        self.app = web.Application(client_max_size=MAX_BODY_BYTES)
        self.app.router.add_post(SEND_PATH, self._send)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/metrics", self._metrics)
        ControlRoutes(self.overlays, self.sampler.describe).add_to(self.app)
        self._runner: web.AppRunner | None = None
        self.address: ListenAddress | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, address: ListenAddress) -> None:
        """Bind and serve; raises OSError when the address cannot be bound."""
        if not address.is_loopback and self.log is not None:
            self.log.warning(
                "fakegmail.listen.not_loopback",
                host=address.host,
                note="reachable from other machines, and the control API lets anyone reaching it inject faults",
            )
        runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=SHUTDOWN_SECONDS,
            logger=http_server_logger("fakegmail"),
        )
        await runner.setup()
        site = web.TCPSite(runner, address.host, address.port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = runner.addresses[0] if runner.addresses else (address.host, address.port)
        self.address = ListenAddress(address.host, int(bound[1]))
        if self.log is not None:
            quota = self.config.quota
            self.log.info(
                "fakegmail.listening",
                url=self.url,
                seed=self.config.seed,
                quota_per_user=None if quota is None else {"rate": quota.rate, "burst": quota.burst},
                max_hold_seconds=self.config.max_hold,
            )

    async def stop(self) -> None:
        """Stop serving; answers still in progress get ``SHUTDOWN_SECONDS`` to finish."""
        self.overlays.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The bound port (the real one when asked for port 0)."""
        return 0 if self.address is None else self.address.port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9480``; a Gmail client's API root is this."""
        if self.address is None:
            return ""
        host = f"[{self.address.host}]" if ":" in self.address.host else self.address.host
        return f"http://{host}:{self.address.port}"

    # -- the send endpoint ---------------------------------------------------------------------

    async def _send(self, request: web.Request) -> web.StreamResponse:
        self.metrics.in_flight.inc()
        try:
            return await self._answer(request)
        finally:
            self.metrics.in_flight.dec()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        token = bearer_token(request.headers.get("Authorization"))
        if token is None or token.endswith(EXPIRED_SUFFIX):
            return self._error(
                responses.UNAUTHENTICATED,
                {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'},
                location="Authorization",
                locationType="header",
            )
        body = await self._read_message(request)
        if isinstance(body, GmailError):
            return self._error(body)
        if self.quota is not None:
            user = request.match_info["user_id"]
            wait = self.quota.take(token if user == "me" else user, self.clock.now())
            if wait > 0:
                self.metrics.quota_rejections.inc()
                error = responses.user_rate_limited(_iso(self.clock.wall() + wait))
                return self._error(error, {"Retry-After": retry_after_header(wait)})
        return await self._call(request, body)

    async def _call(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        """Past auth, body and quota: answer as the next sampled outcome says, after its latency."""
        call = self.sampler.next()
        self.metrics.outcomes.labels(outcome=call.outcome).inc()
        if call.outcome == "gmail_timeout":
            await self.clock.sleep(min(call.latency, self.config.max_hold))
            return self._error(responses.DEADLINE_EXCEEDED)
        await self.clock.sleep(call.latency)
        if call.outcome == "gmail_network_error":
            return self._reset(request)
        error = self._gmail_error(call)
        if error is not None:
            return self._error(error)
        message_id = f"{int(self._ids.integers(0, 2**63)):016x}"
        thread = body.get("threadId")
        thread_id = thread if isinstance(thread, str) and thread else message_id
        self.metrics.answered(200)
        return web.json_response({"id": message_id, "threadId": thread_id, "labelIds": ["SENT"]})

    @staticmethod
    def _gmail_error(call: Call) -> GmailError | None:
        """The error answer of a 4xx/5xx outcome (None for ok)."""
        if call.outcome == "gmail_429":
            return responses.CONCURRENT_LIMIT
        if call.outcome == "gmail_4xx":
            return responses.pick(responses.CLIENT_ERRORS, call.pick)
        if call.outcome == "gmail_5xx":
            return responses.pick(responses.SERVER_ERRORS, call.pick)
        return None

    async def _read_message(self, request: web.Request) -> dict[str, Any] | GmailError:
        """The parsed body, or the 400 Gmail would answer."""
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return responses.invalid_argument(
                f"Request payload size exceeds the limit: {MAX_BODY_BYTES} bytes.", "badRequest"
            )
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than the parser's stack
            return responses.invalid_argument("Invalid JSON payload received. Unexpected token.", "parseError")
        if not isinstance(body, dict):
            return responses.NOT_AN_OBJECT
        message = body.get("raw")
        if not isinstance(message, str) or not message:
            return responses.RAW_REQUIRED
        if not is_base64url(message):
            shown = message if len(message) <= 40 else message[:40] + "..."
            return responses.invalid_argument(
                f"Invalid value at 'message.raw' (TYPE_BYTES), Base64 decoding failed for \"{shown}\"", "invalid"
            )
        return body

    def _error(self, error: GmailError, headers: dict[str, str] | None = None, **detail: str) -> web.Response:
        self.metrics.answered(error.code)
        return web.json_response(error.body(**detail), status=error.code, headers=headers)

    def _reset(self, request: web.Request) -> web.Response:
        """Drop the connection without an answer, with a TCP reset where the platform allows."""
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError, AttributeError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        self.metrics.answered("closed")
        # aiohttp finds the transport closed when it writes this, and drops it quietly.
        return web.Response(status=500)

    # -- the rest ----------------------------------------------------------------------------

    def _on_change(self, params: ModelParams, active: list[Active]) -> None:
        self.sampler.set_params(params)
        acting = {a.overlay.name: a.intensity for a in active}
        for name in self.overlays.scenarios:
            self.metrics.overlay_active.labels(scenario=name).set(acting.get(name, 0.0))

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def serve(
    address: ListenAddress,
    *,
    seed: int = 1,
    params: ModelParams | None = None,
    quota: QuotaParams | None = QuotaParams(),  # noqa: B008 - frozen, shared safely
    max_hold: float = DEFAULT_MAX_HOLD,
    clock: Clock | None = None,
    log: Any = None,
) -> FakeGmail:
    """Start a fake Gmail on ``address`` and return it serving; ``await fake.stop()`` (or ``async with``) ends it.

    It waits on ``clock`` (a fresh :class:`WallClock` unless given): a test passes a
    :class:`~loadsim.clock.ManualClock` and moves time itself.
    """
    config = FakeGmailConfig(seed=seed, params=params or ModelParams(), quota=quota, max_hold=max_hold)
    fake = FakeGmail(config, clock=clock or WallClock(), log=log)
    await fake.start(address)
    return fake
