"""The HTTP driver: the same schedule, real requests, free of coordinated omission.

Open model: each window's arrival times are drawn ahead and a dispatcher wakes when
the next one is due and starts every request whose time has come, so a request
starts when it is due whatever the others are doing. When ``max_in_flight``
requests are already out, a due arrival is dropped and counted, never queued
(queueing would hide the target's slowness). Requests travel through
:mod:`loadsim.drivers.wire`, a keep-alive HTTP/1.1 pool built for load (bytes
serialised when a connection takes the request, ``httptools`` parsing, a callback
per answer): aiohttp's client cost more CPU per request than the whole budget of a
generator meant to outrun Locust on one core (see bench/README.md).

Latency is recorded twice, in HdrHistogram (a well-kept library; fixed memory, 3
significant digits from 1 us to 10 min): from the **intended** start (what a user
waiting on the schedule experiences, free of coordinated omission) and from the
**actual** start (what the target took once asked). Responses are classified as
``2xx``, ``4xx`` by code (``4xx_429``...), ``5xx``, ``timeout`` and
``connection_error`` (and ``abandoned`` for requests still out when the grace ran
out, ``render_error`` for a request whose bytes could not be made); client-side
metrics go under ``loadsim_http_``, never under the relay's names (in this mode
the target emits those). Measurements are kept per request in plain lists and
folded into the histograms once per window, in numpy.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import ssl
import threading
import time
from collections import Counter as Tally
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from hdrh.histogram import HdrHistogram
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from loadsim.arrivals import Arrivals
from loadsim.drivers import wire
from loadsim.drivers.templates import (
    TEMPLATES,
    GmailBatch,
    GmailPayloads,
    MessageSampler,
    Wire,
    relay_execute,
    relay_preview,
)
from loadsim.engine.seeds import RunRandom
from loadsim.errors import Problem
from loadsim.net import is_loopback
from loadsim.plan import RunPlan
from loadsim.sinks.relay_metrics import bucket_counts, render_buckets

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
    ca_file: Path | None = None
    """Extra CA certificate (PEM) trusted for an https target, besides the system's."""
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
    if not is_loopback(host):
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


FloatArray = NDArray[np.float64]
WARM_SECONDS = 0.01
"""Connections opened before the clock starts: enough for this many seconds of peak-rate arrivals."""
DISPATCH_SLICE = 0.001
"""The dispatcher sleeps at least this long (seconds) and then starts every arrival due by then.

uvloop's timers tick in whole milliseconds: a timer for an arrival less than 1 ms
away fires on the next loop iteration, so above about 1,000 requests/s the loop
spun through near-empty iterations and took the whole core at any rate (99.5% CPU
at 45,000/s against nginx; 69% with this floor). The price is start lateness of
up to about a millisecond (p50 0.8 ms, p99 2.5 ms at 45,000/s), which the latency
from the intended start includes.
"""
LATENESS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0)


class HttpMetrics(Collector):
    """Client-side metrics of the driver, under ``loadsim_http_``, updated in bulk once per window.

    The same families and labels an ordinary ``Counter``/``Histogram`` set would
    expose, as cumulative numpy counts: one ``observe()`` per request cost more than
    the request itself at tens of thousands per second. A lock guards updates
    against a Pushgateway push rendering on its worker thread.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self._latency_edges = np.asarray(LATENCY_BUCKETS)
        self._lateness_edges = np.asarray(LATENESS_BUCKETS)
        self.results: dict[str, int] = {}
        self.dropped = 0
        self.in_flight = 0
        self._latency = {b: (np.zeros(len(LATENCY_BUCKETS) + 1, np.int64), [0.0]) for b in ("intended", "actual")}
        self._lateness = (np.zeros(len(LATENESS_BUCKETS) + 1, np.int64), [0.0])
        registry.register(self)

    def update(
        self,
        *,
        results: dict[str, int],
        intended: FloatArray,
        actual: FloatArray,
        lateness: FloatArray,
        dropped: int,
        in_flight: int,
    ) -> None:
        """Fold one window's measurements in."""
        with self._lock:
            for k, v in results.items():
                self.results[k] = self.results.get(k, 0) + v
            self.dropped += dropped
            self.in_flight = in_flight
            for (counts, total), values, edges in (
                (self._latency["intended"], intended, self._latency_edges),
                (self._latency["actual"], actual, self._latency_edges),
                (self._lateness, lateness, self._lateness_edges),
            ):
                np.add(counts, bucket_counts(values, edges), out=counts)
                total[0] += float(values.sum())

    def describe(self) -> Iterable[Metric]:
        return self.collect()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            requests = CounterMetricFamily("loadsim_http_requests", "Requests by result", labels=["result"])
            for result, n in sorted(self.results.items()):
                requests.add_metric([result], n)
            yield requests
            yield CounterMetricFamily(
                "loadsim_http_dropped", "Arrivals dropped: max in flight reached", value=self.dropped
            )
            yield GaugeMetricFamily("loadsim_http_in_flight", "Requests in flight", value=self.in_flight)
            latency = HistogramMetricFamily(
                "loadsim_http_latency_seconds",
                "Latency from the intended start (free of coordinated omission) and from the actual start",
                labels=["basis"],
            )
            for basis, (counts, total) in self._latency.items():
                latency.add_metric([basis], render_buckets(LATENCY_BUCKETS, counts), total[0])
            yield latency
            lateness = HistogramMetricFamily(
                "loadsim_http_start_lateness_seconds", "How late requests started after their intended time"
            )
            counts, total = self._lateness
            lateness.add_metric([], render_buckets(LATENESS_BUCKETS, counts), total[0])
            yield lateness


def record_bulk(h: HdrHistogram, seconds: FloatArray) -> None:
    """Record many latencies (seconds) into an HDR histogram of microseconds at once.

    ``record_value`` is a Python call per value (about 1 us): 3 histograms at
    40,000 requests/s took 10% of the driver's core and stalled the loop once per
    window long enough to fill ``max_in_flight``. Here the counts-array index of
    every value is computed in numpy with HdrHistogram's own formula
    (``_get_bucket_index`` / ``_counts_index``) and added to the histogram's
    counts in one ``bincount``. tests/test_http_driver.py checks the result
    against one ``record_value`` per value; should the library's layout ever
    differ from what this expects, values go through ``record_value`` instead.
    """
    if len(seconds) == 0:
        return
    us = np.clip((seconds * 1e6).astype(np.int64), 1, HDR_MAX_US)
    counts = _counts_view(h)
    if counts is None:
        values, n = np.unique(us, return_counts=True)
        for v, c in zip(values.tolist(), n.tolist(), strict=True):
            h.record_value(v, c)
        return
    # bit_length(v | mask) via frexp (exact below 2**53): the smallest power of 2 containing v.
    pow2ceiling = np.frexp((us | h.sub_bucket_mask).astype(np.float64))[1].astype(np.int64)
    bucket = pow2ceiling - h.unit_magnitude - (h.sub_bucket_half_count_magnitude + 1)
    sub_bucket = us >> (bucket + h.unit_magnitude)
    index = ((bucket + 1) << h.sub_bucket_half_count_magnitude) + (sub_bucket - h.sub_bucket_half_count)
    counts += np.bincount(index, minlength=len(counts))[: len(counts)].astype(counts.dtype)
    h.total_count += len(us)
    h.min_value = min(h.min_value, int(us.min()))
    h.max_value = max(h.max_value, int(us.max()))


def _counts_view(h: HdrHistogram) -> NDArray[np.uint64] | None:
    """The histogram's counts as a writable numpy view, or None if its layout is not the expected one."""
    raw = getattr(h, "counts", None)
    try:
        view = np.ctypeslib.as_array(raw)
    except (TypeError, ValueError):
        return None
    if view.dtype != np.uint64 or view.ndim != 1 or len(view) != h.counts_len:
        return None
    return view


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

    def to_dict(self, run_seconds: float, target_sends: float) -> dict[str, Any]:
        finished = sum(v for k, v in self.results.items() if k != "abandoned")

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
                "abandoned": self.results.get("abandoned", 0),
            },
            "achieved_rate_per_s": self.started / run_seconds if run_seconds > 0 else 0.0,
            "target_rate_per_s": target_sends / run_seconds if run_seconds > 0 else 0.0,
            "by_result": dict(sorted(self.results.items())),
            "latency_from_intended_seconds": quantiles(self.intended),
            "latency_from_actual_seconds": quantiles(self.actual),
            "start_lateness_seconds": quantiles(self.lateness),
        }


@dataclass(slots=True)
class _Due:
    """One window's arrivals on their way to the dispatcher."""

    times: FloatArray
    """Absolute perf_counter() times, sorted."""
    batch: GmailBatch | None
    next: int = 0


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
        self.wire = Wire(options.target, options.token)
        self.sampler = MessageSampler(plan.model, random.outcomes, options.max_attachment_bytes)
        self.gmail = GmailPayloads(self.wire, options.users, random.outcomes, random.overlays)
        self._relay_flow = options.template == "relay"
        self._pool: wire.Pool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due: collections.deque[_Due] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._in_flight = 0
        self._all_started = asyncio.Event()
        """Set when no arrival is left to start (the last window's, at the end)."""
        self._none_in_flight = asyncio.Event()
        self._stop = False
        self.t = 0.0
        # Per-request measurements, folded into histograms once per window.
        self._intended: list[float] = []
        self._actual: list[float] = []
        self._lateness: list[FloatArray] = []
        self._window_results: dict[str, int] = {}
        self._window_dropped = 0
        self._labels = {
            wire.TIMEOUT: "timeout",
            wire.CONNECTION_ERROR: "connection_error",
            wire.ABANDONED: "abandoned",
            wire.RENDER_ERROR: "render_error",
        }

    @property
    def stop_requested(self) -> bool:
        """Whether :meth:`request_stop` was called."""
        return self._stop

    def request_stop(self) -> None:
        """Place no more arrivals; requests already out finish (within the grace)."""
        self._stop = True
        if self._timer is not None:
            self._timer.cancel()
        self._due.clear()
        self._all_started.set()

    async def run(self) -> dict[str, Any]:
        """Run the schedule; returns the summary."""
        self._loop = asyncio.get_running_loop()
        pool = await self._open_pool()
        wall0 = time.monotonic()
        lead = self.options.lead
        # Times are perf_counter(): uvloop's loop.time() ticks in whole milliseconds.
        origin = time.perf_counter() + lead
        duration, tick = self.plan.duration, self.plan.engine.tick
        t0 = 0.0
        try:
            while t0 < duration and not self._stop:
                t1 = min(t0 + tick, duration)
                delay = origin + t0 - lead - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self._stop:
                    break
                starts = np.sort(self.arrivals.draw(t0, t1))
                if len(starts):
                    batch = None if self._relay_flow else self.gmail.draw(len(starts))
                    self._due.append(_Due(origin + starts, batch))
                    self._all_started.clear()
                    if self._timer is None:
                        self._dispatch()
                self.results.scheduled = round(self.arrivals.cumulative_expected)
                self._flush()
                t0 = t1
                self.t = t1
            # Let the last window's arrivals start, then wait for what is in flight.
            if self._due and not self._stop:
                with contextlib.suppress(TimeoutError):  # bounded: they are all due within a window
                    await asyncio.wait_for(self._all_started.wait(), tick + lead + 1.0)
            await self._drain(self.plan.engine.grace)
        finally:
            self.request_stop()
            await pool.aclose()
            self._flush()
        run_seconds = self.t
        out = self.results.to_dict(run_seconds, self.plan.expected_sends(0.0, run_seconds))
        out["wall_seconds"] = round(time.monotonic() - wall0, 3)
        out["target"] = self.options.target
        out["template"] = self.options.template
        return out

    async def _open_pool(self) -> wire.Pool:
        """The connection pool, its first connections open before the clock starts."""
        context = tls_context(self.options.ca_file) if self.wire.tls else None
        pool = wire.Pool(
            self.wire.host,
            self.wire.port,
            self._done,
            limit=self.options.connections,
            timeout=self.options.timeout,
            ssl_context=context,
            render=self.gmail.build,
        )
        self._pool = pool
        pool.start()
        # Enough connections for 10 ms of arrivals at the peak rate (64 at 6,400/s and above,
        # with --connections 64), not all of --connections: a 10/s run against a remote relay
        # should not open 256 connections to it.
        wanted = min(self.options.connections, max(1, math.ceil(peak_rate(self.plan) * WARM_SECONDS)))
        ready = await pool.warm(wanted, within=min(self.options.timeout, 2.0))
        if self.log is not None:
            self.log.info("http.connections", ready=ready, wanted=wanted)
        return pool

    async def _drain(self, grace: float) -> None:
        """Wait up to ``grace`` for the requests in flight, still folding measurements in every window."""
        deadline = time.perf_counter() + grace
        while self._in_flight and (left := deadline - time.perf_counter()) > 0:
            self._none_in_flight.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._none_in_flight.wait(), min(left, self.plan.engine.tick))
            self._flush()

    # -- starting requests -----------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Start every arrival that is due; sleep until the next one."""
        self._timer = None
        now = time.perf_counter()
        while self._due:
            due = self._due[0]
            end = int(np.searchsorted(due.times, now, side="right"))
            if end > due.next:
                self._start(due, due.next, end, now)
                due.next = end
            if due.next < len(due.times):
                assert self._loop is not None
                wait = max(float(due.times[due.next]) - now, DISPATCH_SLICE)
                self._timer = self._loop.call_later(wait, self._dispatch)
                return
            self._due.popleft()
        self._all_started.set()

    def _start(self, due: _Due, first: int, end: int, now: float) -> None:
        self._lateness.append(now - due.times[first:end])
        room = self.options.max_in_flight - self._in_flight
        last = end if end - first <= room else first + max(room, 0)
        self._window_dropped += end - last
        if last <= first:
            return
        self._in_flight += last - first
        self.results.started += last - first
        assert self._pool is not None
        submit = self._pool.submit
        times = due.times[first:last].tolist()
        if due.batch is not None:
            batch = due.batch
            for i, t in zip(range(first, last), times, strict=True):
                # No bytes yet: the pool makes them when a connection takes this (see wire.Pool).
                submit(wire.Exchange(None, t, tag=now, source=batch, index=i))
        else:
            for t in times:
                submit(self._relay_preview(t, now))

    def _relay_preview(self, intended: float, actual: float) -> wire.Exchange:
        payload = self.wire.request(relay_preview(self.sampler.draw(), self.options.token))
        return wire.Exchange(payload, intended, keep_body=True, tag=actual)

    # -- answers ---------------------------------------------------------------------------------
    def _done(self, ex: wire.Exchange, status: int) -> None:
        if self._relay_flow and ex.stage == 0 and status != wire.ABANDONED:
            result = self._relay_next(ex, status)
            if result is None:
                return
        else:
            result = self._label(status)
        end = time.perf_counter()
        self._in_flight -= 1
        if not self._in_flight:
            self._none_in_flight.set()
        self._intended.append(end - ex.started)
        self._actual.append(end - ex.tag)
        self._window_results[result] = self._window_results.get(result, 0) + 1

    def _label(self, status: int) -> str:
        label = self._labels.get(status)
        if label is None:
            label = self._labels[status] = _classify(status)
        return label

    def _relay_next(self, ex: wire.Exchange, status: int) -> str | None:
        """After the preview: send the execute (returns None) or say why the flow ended."""
        label = self._label(status)
        if label != "2xx":
            return f"preview_{label}"
        preview_id = None
        try:
            parsed = json.loads(bytes(ex.body or b""))
            preview_id = parsed.get("preview_id") if isinstance(parsed, dict) else None
        except ValueError:
            preview_id = None
        if not preview_id:
            return "preview_no_id"
        follow = wire.Exchange(
            self.wire.request(relay_execute(str(preview_id), self.options.token)), ex.started, tag=ex.tag
        )
        follow.stage = 1
        assert self._pool is not None
        self._pool.submit(follow)
        return None

    def _flush(self) -> None:
        """Fold the window's measurements into the HDR histograms and the Prometheus families."""
        intended = np.asarray(self._intended)
        actual = np.asarray(self._actual)
        lateness = np.concatenate(self._lateness) if self._lateness else np.empty(0)
        self._intended, self._actual, self._lateness = [], [], []
        lateness = np.maximum(lateness, 0.0)
        record_bulk(self.results.intended, intended)
        record_bulk(self.results.actual, actual)
        record_bulk(self.results.lateness, lateness)
        results, self._window_results = self._window_results, {}
        self.results.results.update(results)
        dropped, self._window_dropped = self._window_dropped, 0
        self.results.dropped += dropped
        self.metrics.update(
            results=results,
            intended=intended,
            actual=actual,
            lateness=lateness,
            dropped=dropped,
            in_flight=self._in_flight,
        )


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """The client TLS context: the system's CAs, plus ``ca_file`` (PEM) when given.

    Raises ``OSError`` or ``ssl.SSLError`` for a ``ca_file`` that cannot be used.
    """
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
    return context


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
