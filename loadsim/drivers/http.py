"""The HTTP driver: the same schedule, real requests, free of coordinated omission.

Open model: each window's arrivals are placed on the event loop with ``call_at`` at
their absolute intended times, so a request starts when it is due whatever the others
are doing. When ``max_in_flight`` requests are already out, a due arrival is dropped
and counted, never queued (queueing would hide the target's slowness). One aiohttp
``ClientSession`` with a bounded connection pool carries everything.

Latency is recorded twice, in HdrHistogram (a well-kept library; fixed memory, 3
significant digits from 1 us to 10 min): from the **intended** start (what a user
waiting on the schedule experiences, free of coordinated omission) and from the
**actual** start (what the target took once asked). Responses are classified as
``2xx``, ``4xx`` by code (``4xx_429``...), ``5xx``, ``timeout`` and
``connection_error``; client-side metrics go under ``loadsim_http_``, never under the
relay's names (in this mode the target emits those).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter as Tally
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from hdrh.histogram import HdrHistogram
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from loadsim.arrivals import Arrivals
from loadsim.drivers.templates import TEMPLATES, MessageSampler, Request, gmail_request, relay_execute, relay_preview
from loadsim.engine.seeds import RunRandom
from loadsim.errors import Problem
from loadsim.plan import RunPlan
from loadsim.sinks.metrics_server import ListenAddress

HDR_MAX_US = 600_000_000
"""Longest latency recorded: 10 minutes, in microseconds."""
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DEFAULT_REMOTE_MAX_RATE = 10.0
"""Sends/s allowed to a non-loopback target unless --max-rate raises it."""


@dataclass(frozen=True, slots=True)
class HttpOptions:
    """How to drive a target."""

    target: str
    template: str = "gmail"
    timeout: float = 30.0
    max_in_flight: int = 10_000
    connections: int = 256
    users: int = 50
    """Gmail template: requests are spread over this many user ids."""
    token: str | None = field(default=None, repr=False)
    max_attachment_bytes: int = 2048
    lead: float = 0.05
    """How far ahead of a window its arrivals are placed on the loop (seconds)."""


def check_target(
    target: str, *, allowed: set[str], max_rate: float | None, peak_rate: float, template: str
) -> list[Problem]:
    """Safety and sanity: loopback needs nothing; any other host must be allowed and rate-capped."""
    problems = []
    parts = urlsplit(target)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        return [Problem("--target", "", f"expected a URL such as http://127.0.0.1:9480, got {target!r}")]
    if template not in TEMPLATES:
        problems.append(Problem("--template", "", f"expected one of {', '.join(TEMPLATES)}, got {template!r}"))
    if not ListenAddress(host, 0).is_loopback:
        if host not in allowed:
            problems.append(
                Problem("--target", "", f"{host} is not on loopback; name it with --allow-target {host} to send to it")
            )
        cap = DEFAULT_REMOTE_MAX_RATE if max_rate is None else max_rate
        if peak_rate > cap:
            problems.append(
                Problem(
                    "--rate",
                    "",
                    f"peak {peak_rate:g}/s to {host} is above the {cap:g}/s limit for non-loopback targets; "
                    "raise it with --max-rate",
                )
            )
    elif max_rate is not None and peak_rate > max_rate:
        problems.append(Problem("--rate", "", f"peak {peak_rate:g}/s is above --max-rate {max_rate:g}/s"))
    return problems


class HttpMetrics:
    """Client-side metrics of the driver, under ``loadsim_http_``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("loadsim_http_requests", "Requests by result", ["result"], registry=registry)
        self.dropped = Counter("loadsim_http_dropped", "Arrivals dropped: max in flight reached", registry=registry)
        self.in_flight = Gauge("loadsim_http_in_flight", "Requests in flight", registry=registry)
        self.latency = Histogram(
            "loadsim_http_latency_seconds",
            "Latency from the intended start (free of coordinated omission) and from the actual start",
            ["basis"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.lateness = Histogram(
            "loadsim_http_start_lateness_seconds",
            "How late requests started after their intended time",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0),
            registry=registry,
        )
        self._intended = self.latency.labels(basis="intended")
        self._actual = self.latency.labels(basis="actual")

    def observe(self, result: str, intended: float, actual: float) -> None:
        self.requests.labels(result=result).inc()
        self._intended.observe(intended)
        self._actual.observe(actual)


@dataclass
class HttpResults:
    """What the driver saw: counts by result and HDR latency histograms."""

    intended: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, HDR_MAX_US, 3))
    actual: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, HDR_MAX_US, 3))
    lateness: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, HDR_MAX_US, 3))
    results: Tally[str] = field(default_factory=Tally)
    scheduled: int = 0
    started: int = 0
    dropped: int = 0

    def record(self, result: str, intended: float, actual: float) -> None:
        self.results[result] += 1
        self.intended.record_value(max(1, min(int(intended * 1e6), HDR_MAX_US)))
        self.actual.record_value(max(1, min(int(actual * 1e6), HDR_MAX_US)))

    def to_dict(self, run_seconds: float, target_sends: float) -> dict[str, Any]:
        finished = sum(self.results.values())

        def quantiles(h: HdrHistogram) -> dict[str, float]:
            if h.get_total_count() == 0:
                return {}
            out = {f"p{q:g}": h.get_value_at_percentile(q) / 1e6 for q in (50, 90, 99, 99.9)}
            out["max"] = h.get_max_value() / 1e6
            return out

        return {
            "run_seconds": run_seconds,
            "requests": {
                "target": round(target_sends, 1),
                "scheduled": self.scheduled,
                "started": self.started,
                "dropped": self.dropped,
                "finished": finished,
            },
            "achieved_rate_per_s": self.started / run_seconds if run_seconds > 0 else 0.0,
            "target_rate_per_s": target_sends / run_seconds if run_seconds > 0 else 0.0,
            "by_result": dict(sorted(self.results.items())),
            "latency_from_intended_seconds": quantiles(self.intended),
            "latency_from_actual_seconds": quantiles(self.actual),
            "start_lateness_seconds": quantiles(self.lateness),
        }


class HttpDriver:
    """Drives ``plan``'s schedule as real HTTP requests against ``options.target``."""

    def __init__(
        self, plan: RunPlan, options: HttpOptions, random: RunRandom, registry: CollectorRegistry, log: Any = None
    ) -> None:
        self.plan = plan
        self.options = options
        self.log = log
        self.metrics = HttpMetrics(registry)
        self.results = HttpResults()
        self.arrivals = Arrivals(plan.schedule, plan.arrivals, random.arrivals)
        self.sampler = MessageSampler(plan.model, random.outcomes, options.max_attachment_bytes)
        self._users = random.overlays
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._origin = 0.0
        self._origin_perf = 0.0
        self._stop = False
        self.t = 0.0

    def request_stop(self) -> None:
        """Place no more arrivals; requests already out finish (within the grace)."""
        self._stop = True

    async def run(self) -> dict[str, Any]:
        """Run the schedule; returns the summary."""
        loop = asyncio.get_running_loop()
        connector = aiohttp.TCPConnector(limit=self.options.connections, limit_per_host=self.options.connections)
        timeout = aiohttp.ClientTimeout(total=self.options.timeout)
        wall0 = time.monotonic()
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            self._session = session
            self._origin = loop.time() + self.options.lead
            # Measurements use perf_counter: uvloop's loop.time() ticks in whole milliseconds.
            self._origin_perf = time.perf_counter() + self.options.lead
            duration, tick = self.plan.duration, self.plan.engine.tick
            t0 = 0.0
            while t0 < duration and not self._stop:
                t1 = min(t0 + tick, duration)
                delay = self._origin + t0 - self.options.lead - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                for start in self.arrivals.draw(t0, t1).tolist():
                    loop.call_at(self._origin + start, self._fire, start)
                self.results.scheduled = round(self.arrivals.cumulative_expected)
                t0 = t1
                self.t = t1
            # Let the last window's arrivals fire, then wait for what is in flight.
            await asyncio.sleep(max(0.0, self._origin + t0 - loop.time()) + 0.01)
            await self._drain(self.plan.engine.grace)
        run_seconds = self.t
        out = self.results.to_dict(run_seconds, self.plan.expected_sends(0.0, run_seconds))
        out["wall_seconds"] = round(time.monotonic() - wall0, 3)
        out["target"] = self.options.target
        out["template"] = self.options.template
        return out

    async def _drain(self, grace: float) -> None:
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _fire(self, start: float) -> None:
        if self._stop:
            return
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        intended = self._origin_perf + start
        lateness = max(0.0, now - intended)
        self.results.lateness.record_value(max(1, min(int(lateness * 1e6), HDR_MAX_US)))
        self.metrics.lateness.observe(lateness)
        if self._in_flight >= self.options.max_in_flight:
            self.results.dropped += 1
            self.metrics.dropped.inc()
            return
        self._in_flight += 1
        self.results.started += 1
        self.metrics.in_flight.set(self._in_flight)
        task = loop.create_task(self._send(intended, now))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, intended: float, actual: float) -> None:
        result = "connection_error"
        try:
            result = await self._flow()
        except TimeoutError:
            result = "timeout"
        except (aiohttp.ClientError, OSError):
            result = "connection_error"
        finally:
            end = time.perf_counter()
            self._in_flight -= 1
            self.metrics.in_flight.set(self._in_flight)
            self.results.record(result, end - intended, end - actual)
            self.metrics.observe(result, end - intended, end - actual)

    async def _flow(self) -> str:
        message = self.sampler.draw()
        token = self.options.token
        if self.options.template == "gmail":
            user = f"user{int(self._users.integers(0, self.options.users))}@example.com"
            return (await self._call(gmail_request(message, user, token)))[0]
        result, body = await self._call(relay_preview(message, token))
        if result != "2xx":
            return f"preview_{result}"
        preview_id = body.get("preview_id") if isinstance(body, dict) else None
        if not preview_id:
            return "preview_no_id"
        return (await self._call(relay_execute(str(preview_id), token)))[0]

    async def _call(self, request: Request) -> tuple[str, Any]:
        assert self._session is not None
        url = self.options.target.rstrip("/") + request.path
        async with self._session.request(request.method, url, json=request.json, headers=request.headers) as resp:
            body = await resp.read()
            status = resp.status
            parsed: Any = None
            if 200 <= status < 300 and body:
                with contextlib.suppress(ValueError):
                    parsed = await resp.json(content_type=None)
        return _classify(status), parsed


def _classify(status: int) -> str:
    if 200 <= status < 300:
        return "2xx"
    if 400 <= status < 500:
        return f"4xx_{status}"
    if 500 <= status < 600:
        return "5xx"
    return f"status_{status}"


def peak_rate(plan: RunPlan) -> float:
    """The schedule's highest rate over the run (sampled each minute and at segment edges)."""
    times = [p.start for p in plan.schedule.placed if p.start < plan.duration]
    step = 60.0
    times += [k * step for k in range(math.ceil(plan.duration / step) + 1)]
    return max(plan.schedule.at(min(t, plan.duration)) for t in times)
