"""Gmail-side faults for real traffic: overlays switched on and off in a ``loadsim fake-gmail`` through its control API.

With the HTTP driver, a Gmail-side scenario (5xx, latency, 429 storms,
timeouts) cannot be injected by changing the requests: it is Gmail's answer that
changes. When the user names a fake Gmail with ``--fault-control URL``, the
driver follows the run's timeline: when such an overlay starts it ``POST``s
``/control/overlays`` (scenario, options, magnitude, and the time it has left,
so the fake stops it by itself even if loadsim is killed), and when it ends it
``DELETE``s it. Calls go out in order, one at a time, off the driver's hot path;
one that fails is logged (once per outage) and counted, never fatal: the run
goes on, and the summary says how many calls failed.

Ramps cannot be followed through the control API (it sets an overlay's magnitude
once), so the CLI refuses Gmail-side overlays with ``ramp`` under this driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from loadsim.clock import Clock, wait_for
from loadsim.net import LOOPBACK_ONLY, Reach, session
from loadsim.overlays.timeline import Active

GMAIL_SIDE = ("error-rate-warn", "error-rate-crit", "latency-crit", "latency-warn", "rate-limit-storm")
"""Scenarios that change what Gmail answers (tests check this against what fake-gmail accepts)."""
CALL_SECONDS = 5.0
"""Longest one control call may take."""


class FaultControlError(Exception):
    """The fault-control endpoint cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class _Call:
    method: str
    scenario: str
    body: dict[str, Any] | None = None


class FaultControl:
    """Keeps a fake Gmail's overlays in step with the run's Gmail-side overlays."""

    def __init__(self, url: str, clock: Clock, log: Any = None, *, reach: Reach = LOOPBACK_ONLY) -> None:
        self.url = url.rstrip("/")
        self.clock = clock
        self.reach = reach
        """Where its connections may go (checked at each connection; see :class:`~loadsim.net.Reach`)."""
        self.log = log
        self.calls = 0
        self.failures = 0
        self._started: dict[int, str] = {}
        """Timeline index -> scenario of the overlays started in the fake."""
        self._queue: asyncio.Queue[_Call | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._failing = False

    async def check(self, scenarios: Sequence[str]) -> None:
        """Before the run: the endpoint answers as a fake Gmail and accepts ``scenarios``; FaultControlError if not."""
        session = await self._open()
        try:
            async with await wait_for(self.clock, session.get(f"{self.url}/control/scenarios"), CALL_SECONDS) as r:
                body = await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            msg = f"{self.url} does not answer as a loadsim fake-gmail control API ({type(e).__name__}: {e})"
            raise FaultControlError(msg) from None
        usable = {s.get("name") for s in body.get("scenarios", []) if s.get("affects_gmail")}
        missing = [s for s in scenarios if s not in usable]
        if missing:
            msg = f"{self.url} does not accept {', '.join(missing)} (it accepts {', '.join(sorted(usable)) or 'none'})"
            raise FaultControlError(msg)

    async def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No library timeout: every call is bounded on loadsim's clock instead.
            self._session = session(self.reach, timeout=aiohttp.ClientTimeout(total=None))
        return self._session

    def start(self) -> None:
        """Begin sending calls in the background."""
        self._worker = asyncio.create_task(self._work())

    def sync(self, active: Sequence[Active], t: float) -> None:
        """Start in the fake every Gmail-side overlay acting at ``t`` it does not know yet; stop the ones that ended."""
        acting = {a.index: a for a in active if a.overlay.name in GMAIL_SIDE}
        for index, a in acting.items():
            if index not in self._started:
                self._started[index] = a.overlay.name
                left = a.overlay.end - t
                body = {
                    "scenario": a.overlay.name,
                    "duration": None if math.isinf(left) else max(left, 0.001),
                    "options": dict(a.overlay.options),
                    "magnitude": a.overlay.magnitude,
                }
                self._queue.put_nowait(_Call("POST", a.overlay.name, body))
        for index in [i for i in self._started if i not in acting]:
            self._queue.put_nowait(_Call("DELETE", self._started.pop(index)))

    async def _work(self) -> None:
        while (call := await self._queue.get()) is not None:
            await self._send(call)

    async def _send(self, call: _Call) -> bool:
        session = await self._open()
        self.calls += 1
        if call.method == "POST":
            request = session.post(f"{self.url}/control/overlays", data=json.dumps(call.body))
        else:
            request = session.delete(f"{self.url}/control/overlays/{quote(call.scenario)}")
        try:
            async with await wait_for(self.clock, request, CALL_SECONDS) as r:
                # 404 on DELETE: the fake already stopped it (its duration ran out first).
                ok = r.status < 300 or (call.method == "DELETE" and r.status == 404)
                detail = "" if ok else (await r.text())[:300]
        except (aiohttp.ClientError, TimeoutError) as e:
            ok, detail = False, f"{type(e).__name__}: {e}"[:300]
        if ok:
            if self._failing and self.log is not None:
                self.log.info("faults.recovered", url=self.url)
            self._failing = False
            if self.log is not None:
                self.log.info("faults.call", method=call.method, scenario=call.scenario)
            return True
        self.failures += 1
        if not self._failing and self.log is not None:
            self.log.warning(
                "faults.call_failed", url=self.url, method=call.method, scenario=call.scenario, error=detail
            )
        self._failing = True
        return False

    async def close(self, seconds: float = 10.0) -> None:
        """Stop every overlay still started in the fake, then stop (bounded by ``seconds``)."""
        for index in list(self._started):
            self._queue.put_nowait(_Call("DELETE", self._started.pop(index)))
        self._queue.put_nowait(None)
        if self._worker is not None:
            with contextlib.suppress(TimeoutError):
                await wait_for(self.clock, asyncio.shield(self._worker), seconds)
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._session is not None:
            await self._session.close()
            self._session = None

    def summary(self) -> dict[str, Any]:
        """What the summary says about fault control."""
        return {"url": self.url, "calls": self.calls, "failed": self.failures}
