"""``loadsim drill``: the seed's tabletop drill 01, automated against a live stack.

The drill runs steady Gmail-send traffic (served on ``/metrics`` for Prometheus to
scrape, or pushed to a Pushgateway) and walks the six phases of
``TABLETOP-DRILL-01``, each scored pass or fail from what Prometheus and
Alertmanager actually say:

1. inject ``error-rate-warn``; pass when ``job:gmail_send_errors_rate:5m`` reads above 1%;
2. ``GmailSendHighErrorRateWarning`` fires in Prometheus and reaches Alertmanager;
3. triage: the runbook's figures (error rate, p95 latency, top error reasons) all answer;
4. mitigation, a no-op in the drill: the decision is recorded with the rollout
   controller's current percentage read from Prometheus;
5. inject ``error-rate-crit``; the critical fires and Alertmanager shows the warning
   ``suppressed``, inhibited by it;
6. stop the faults; both alerts resolve in Prometheus and leave Alertmanager.

Time scale: with the production rules each wait is sized for ``for: 10m`` over
5-minute windows (about 15-20 minutes a phase). With a time-scaled copy of the
rules (``loadsim scale-rules``), ``--time-scale K`` divides every wait and every
range in the triage queries by K; drive such a drill at a higher rate (the default
is 15/s times K, up to 500/s), because a scaled window holds K times fewer sends.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from loadsim.clock import Clock, WallClock, wait_for
from loadsim.engine.loop import Engine
from loadsim.net import Reach, session
from loadsim.overlays.scenarios import ERR_CRIT, ERR_WARN
from loadsim.redaction import redact, redact_data
from loadsim.verify.scaling import go_duration

Check = Callable[[], Awaitable[tuple[bool, str]]]
CALL_SECONDS = 10.0
"""Longest one query to Prometheus or Alertmanager may take."""


@dataclass
class Phase:
    """One scored phase of the drill."""

    number: int
    name: str
    passed: bool = False
    detail: str = ""
    seconds: float = 0.0


@dataclass
class ScoreCard:
    """The drill's result, graded with the seed's rubric."""

    phases: list[Phase] = field(default_factory=list)

    @property
    def score(self) -> int:
        """Phases passed."""
        return sum(p.passed for p in self.phases)

    @property
    def grade(self) -> str:
        """6/6 A+, 5/6 A, 4/6 B, below F (TABLETOP-DRILL-01's rubric)."""
        return {6: "A+ (production-ready)", 5: "A (minor tuning needed)", 4: "B (significant issues, re-drill)"}.get(
            self.score, "F (major issues, redesign)"
        )

    def lines(self) -> list[str]:
        """The score card as text."""
        out = [
            f"{'PASS' if p.passed else 'FAIL'}  {p.number}. {p.name} ({p.seconds:.0f}s): {p.detail}"
            for p in self.phases
        ]
        return [*out, f"score {self.score}/6: {self.grade}"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "score": self.score,
            "grade": self.grade,
            "phases": [p.__dict__ for p in self.phases],
        }


class Drill:
    """Drives the phases against Prometheus and Alertmanager while ``engine`` runs."""

    def __init__(
        self,
        engine: Engine,
        prometheus: str,
        alertmanager: str,
        *,
        time_scale: float = 1.0,
        poll: float = 1.0,
        clock: Clock | None = None,
        log: Any = None,
        allowed: Collection[str] = (),
    ) -> None:
        """``allowed``: hosts (``--allow-host``) the drill may reach beyond loopback; any other stays on loopback."""
        self.engine = engine
        self.clock = clock or WallClock()
        """Real time for the phases' budgets and polls (the engine's clock may be the same one)."""
        self.prometheus = prometheus.rstrip("/")
        self.alertmanager = alertmanager.rstrip("/")
        self.k = time_scale
        self.poll = poll
        self.log = log
        self.card = ScoreCard()
        self._reach = {
            url: Reach.of(urlsplit(url).hostname or "", allowed) for url in (self.prometheus, self.alertmanager)
        }
        """Each URL's reach, checked at every connection (a session per URL: each has its own)."""
        self._http: dict[str, aiohttp.ClientSession] = {}

    # -- time budgets ------------------------------------------------------------------------

    def budget(self, production_seconds: float, slack: float = 30.0) -> float:
        """A production wait scaled down, with 50% margin and fixed slack for scrape and evaluation."""
        return production_seconds / self.k * 1.5 + slack

    def window(self, production_seconds: float = 300.0) -> str:
        """A PromQL range for a production window, scaled (never below 5 s)."""
        return go_duration(max(production_seconds / self.k, 5.0))

    # -- HTTP ------------------------------------------------------------------------------

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; the result vector."""
        get = self._http[self.prometheus].get(f"{self.prometheus}/api/v1/query", params={"query": expr})
        async with await wait_for(self.clock, get, CALL_SECONDS) as r:
            body = await r.json()
        if body.get("status") != "success":
            msg = f"query {expr!r} failed: {body.get('error')}"
            raise RuntimeError(msg)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def value(self, expr: str) -> float | None:
        """The single value of ``expr``, or None when it returns nothing."""
        result = await self.query(expr)
        return float(result[0]["value"][1]) if result else None

    async def prometheus_firing(self) -> set[str]:
        """Alerts firing in Prometheus."""
        get = self._http[self.prometheus].get(f"{self.prometheus}/api/v1/alerts")
        async with await wait_for(self.clock, get, CALL_SECONDS) as r:
            body = await r.json()
        return {a["labels"]["alertname"] for a in body["data"]["alerts"] if a["state"] == "firing"}

    async def am_alerts(self) -> list[dict[str, Any]]:
        """Alerts Alertmanager holds (active, suppressed and unprocessed)."""
        get = self._http[self.alertmanager].get(f"{self.alertmanager}/api/v2/alerts")
        async with await wait_for(self.clock, get, CALL_SECONDS) as r:
            alerts: list[dict[str, Any]] = await r.json()
        return alerts

    async def wait(self, check: Check, budget: float) -> tuple[bool, str]:
        """Poll ``check`` until it passes or ``budget`` seconds pass; the last detail either way."""
        end = self.clock.now() + budget
        detail = "no answer"
        while True:
            try:
                ok, detail = await check()
            except (aiohttp.ClientError, TimeoutError, RuntimeError, KeyError, ValueError) as e:
                ok, detail = False, f"{type(e).__name__}: {e}"
            if ok or self.clock.now() >= end:
                return ok, detail
            await self.clock.sleep(self.poll)

    # -- the phases --------------------------------------------------------------------------

    async def run(self) -> ScoreCard:
        """All six phases, in order; a failed phase does not stop the later ones."""
        async with self.connected():
            await self._phase(1, "inject error-rate-warn", self._inject_warn, self.budget(300))
            await self._phase(2, "warning fires and reaches Alertmanager", self._warning_fires, self.budget(900))
            await self._phase(3, "triage figures from the runbook", self._triage, self.budget(60))
            await self._phase(4, "mitigation decision recorded (no-op)", self._mitigation, self.budget(60))
            await self._phase(5, "critical fires and inhibits the warning", self._inhibition, self.budget(900))
            await self._phase(6, "faults stopped, both alerts resolve", self._resolution, self.budget(900, 60))
        return self.card

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[None]:
        """HTTP sessions to Prometheus and Alertmanager for the duration, each checked against its URL's reach."""
        # No library timeout: each call is bounded on the drill's clock (CALL_SECONDS).
        async with contextlib.AsyncExitStack() as stack:
            for url, reach in self._reach.items():
                http = session(reach, timeout=aiohttp.ClientTimeout(total=None))
                self._http[url] = await stack.enter_async_context(http)
            try:
                yield
            finally:
                self._http = {}

    async def _phase(self, number: int, name: str, check: Check, budget: float) -> None:
        start = self.clock.now()
        if self.log is not None:
            self.log.info("drill.phase", phase=number, name=name, budget_seconds=round(budget, 1))
        ok, detail = await self.wait(check, budget)
        detail = redact(detail)  # an error's text may carry a URL's credentials
        phase = Phase(number, name, ok, detail, self.clock.now() - start)
        self.card.phases.append(phase)
        if self.log is not None:
            self.log.info("drill.result", phase=number, passed=ok, detail=detail, seconds=round(phase.seconds, 1))

    async def _inject_warn(self) -> tuple[bool, str]:
        if not self._started("error-rate-warn"):
            self.engine.start_overlay("error-rate-warn")
        ratio = await self.value("job:gmail_send_errors_rate:5m")
        return ratio is not None and ratio > 0.01, f"job:gmail_send_errors_rate:5m = {_pct(ratio)}"

    async def _warning_fires(self) -> tuple[bool, str]:
        firing = ERR_WARN in await self.prometheus_firing()
        in_am = any(a["labels"].get("alertname") == ERR_WARN for a in await self.am_alerts())
        return firing and in_am, f"firing in Prometheus: {firing}, in Alertmanager: {in_am}"

    async def _triage(self) -> tuple[bool, str]:
        w = self.window()
        ratio = await self.value("job:gmail_send_errors_rate:5m")
        p95 = await self.value("job:gmail_send_latency_p95:5m")
        top = await self.query(
            f'topk(5, sum by (reason) (rate(action_error_total{{provider="google",action="gmail.send"}}[{w}])) > 0)'
        )
        reasons = ", ".join(f"{r['metric'].get('reason')} {float(r['value'][1]):.3g}/s" for r in top)
        ok = ratio is not None and p95 is not None and bool(top)
        p95_text = "none" if p95 is None else f"{p95:.3f}s"
        return ok, f"error rate {_pct(ratio)}, p95 {p95_text}, top reasons: {reasons or 'none'}"

    async def _mitigation(self) -> tuple[bool, str]:
        percent = await self.value("max(rollout_controller_percent)")
        if percent is None:
            return False, "rollout_controller_percent not found: the controller's state cannot be read"
        return True, f"decision: hold the rollout at {percent:g}% (drill: no-op)"

    async def _inhibition(self) -> tuple[bool, str]:
        if not self._started("error-rate-crit"):
            self.engine.stop_overlay("error-rate-warn")
            self.engine.start_overlay("error-rate-crit")
        alerts = await self.am_alerts()
        crit = [a for a in alerts if a["labels"].get("alertname") == ERR_CRIT and a["status"]["state"] == "active"]
        warn = [a for a in alerts if a["labels"].get("alertname") == ERR_WARN]
        suppressed = [a for a in warn if a["status"]["state"] == "suppressed" and a["status"].get("inhibitedBy")]
        ok = bool(crit) and bool(warn) and len(suppressed) == len(warn)
        states = ", ".join(a["status"]["state"] for a in warn) or "absent"
        return ok, f"critical active: {bool(crit)}; warning: {states}"

    async def _resolution(self) -> tuple[bool, str]:
        self.engine.stop_overlay("error-rate-crit")
        self.engine.stop_overlay("error-rate-warn")
        firing = await self.prometheus_firing() & {ERR_WARN, ERR_CRIT}
        in_am = {a["labels"].get("alertname") for a in await self.am_alerts()} & {ERR_WARN, ERR_CRIT}
        ok = not firing and not in_am
        return ok, f"still firing: {sorted(firing) or 'none'}; still in Alertmanager: {sorted(in_am) or 'none'}"

    def _started(self, scenario: str) -> bool:
        """Whether the drill (or the plan) has started ``scenario`` in this run."""
        return any(o.name == scenario for o in self.engine.timeline.overlays)


def _pct(value: float | None) -> str:
    return "none" if value is None else f"{value:.2%}"


def card_json(card: ScoreCard) -> str:
    """The score card as JSON text (redacted, as every output)."""
    return json.dumps(redact_data(card.to_dict()), indent=2) + "\n"
