"""The controller's three queries sent to a live Prometheus, as the relay's controller sends them.

Instant queries on ``/api/v1/query``, each bounded on loadsim's clock. The relay's
controller reads a failed query or an empty result as 0.0; :class:`LiveReader`
hands back the same :class:`~loadsim.rollout.policy.Reading` the in-process
evaluator does, with ``raw`` saying what each query really returned (None for
empty or failed) and ``reachable`` False when Prometheus did not answer, so the
policy's fidelity decides what that means.
"""

from __future__ import annotations

import math
from typing import Any

import aiohttp

from loadsim.clock import Clock, wait_for
from loadsim.net import LOOPBACK_ONLY, Reach, session
from loadsim.rollout.policy import Fidelity, Reading

QUERY_SECONDS = 5.0
"""Longest one query may take before it counts as failed."""
SELECTOR = 'provider="google",action="gmail.send"'


def _range(seconds: float) -> str:
    """A PromQL range in whole milliseconds (time-scaled windows are not whole minutes)."""
    return f"{max(round(seconds * 1000), 1)}ms"


def queries(fidelity: Fidelity, scale: float = 1.0) -> dict[str, str]:
    """The controller's three queries, with every window divided by ``scale``."""
    five, fifteen = _range(300 / scale), _range(900 / scale)
    if fidelity is Fidelity.AS_IMPLEMENTED:
        # As the relay's code sends it: not aggregated, so the label sets never match.
        errors = (
            f"increase(action_error_total{{{SELECTOR}}}[{five}]) / increase(action_exec_total{{{SELECTOR}}}[{five}])"
        )
    else:
        errors = (
            f"sum(rate(action_error_total{{{SELECTOR}}}[{five}])) "
            f"/ clamp_min(sum(rate(action_exec_total{{{SELECTOR}}}[{five}])), 1)"
        )
    return {
        "error_rate": errors,
        "p95": f"histogram_quantile(0.95, sum(rate(action_latency_seconds_bucket{{{SELECTOR}}}[{five}])) by (le))",
        "oauth_failures": f'increase(oauth_events_total{{provider="google",event="refresh_failed"}}[{fifteen}])',
    }


class LiveReader:
    """Reads the controller's inputs from a Prometheus at ``url``."""

    def __init__(self, url: str, clock: Clock, reach: Reach = LOOPBACK_ONLY) -> None:
        self.url = url.rstrip("/")
        self.clock = clock
        self.reach = reach
        """Where its connections may go (checked at each connection; see :class:`~loadsim.net.Reach`)."""
        self._session: aiohttp.ClientSession | None = None

    async def read(self, fidelity: Fidelity, scale: float = 1.0) -> Reading:
        """One reading: each query's first value, 0.0 for empty or failed ones (NaN stays NaN)."""
        raw: dict[str, float | None] = {}
        reachable = True
        for name, expr in queries(fidelity, scale).items():
            try:
                raw[name] = await self._query(expr)
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
                raw[name], reachable = None, False
        value = {k: (0.0 if v is None else v) for k, v in raw.items()}
        return Reading(
            error_rate=value["error_rate"],
            p95=value["p95"],
            oauth_failures=value["oauth_failures"],
            reachable=reachable,
            raw=raw,
        )

    async def _query(self, expr: str) -> float | None:
        if self._session is None:
            # No library timeout: each query is bounded on loadsim's clock.
            self._session = session(self.reach, timeout=aiohttp.ClientTimeout(total=None))
        get = self._session.get(f"{self.url}/api/v1/query", params={"query": expr})
        async with await wait_for(self.clock, get, QUERY_SECONDS) as r:
            body: dict[str, Any] = await r.json(content_type=None)
        if body.get("status") != "success":
            msg = f"query failed: {body.get('error')}"
            raise ValueError(msg)
        result = body["data"]["result"]
        if not result:
            return None
        text = result[0]["value"][1]
        return math.nan if text == "NaN" else float(text)

    async def aclose(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None
