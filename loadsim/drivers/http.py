"""The HTTP driver: the same schedule and overlays as real requests, free of coordinated omission.

Open model: the engine hands each window's arrival times over a little ahead of
the window (``lead``); a dispatcher wakes when the next one is due and starts
every request whose time has come, so a request starts when it is due whatever
the others are doing. When ``max_in_flight`` requests are already out, a due
arrival is dropped and counted, never queued (queueing would hide the target's
slowness). Requests travel through :mod:`loadsim.drivers.wire`, a keep-alive
HTTP/1.1 pool built for load (bytes made when a connection takes the request,
``httptools`` parsing, a callback per answer): aiohttp's client cost more CPU per
request than the whole budget of a generator meant to outrun Locust on one core
(see bench/README.md). Every wait and every time read goes through the clock.

Latency is recorded twice, in HdrHistogram (a well-kept library; fixed memory, 3
significant digits from 1 us to 10 min): from the **intended** start (what a user
waiting on the schedule experiences, free of coordinated omission) and from the
**actual** start (what the target took once asked). Responses are classified as
``2xx``, ``4xx`` by code (``4xx_429``...), ``5xx``, ``timeout``,
``connection_error``, ``stale_connection`` (a reused keep-alive connection closed
before answering a request that is not safe to retry), ``truncated`` (a body cut
short), ``oversize`` (a body over the limit), ``abandoned`` (still out when the
grace ran out) and ``render_error`` (a request whose bytes could not be made).
Client-side metrics go under ``loadsim_http_``, never under the relay's names (in
this mode the target emits those).

Overlays reach real traffic in two ways (:data:`SUPPORT`): *input-side* scenarios
change the requests (validation-spike sends payloads the relay's validation
rejects, sanitization-spike hostile HTML, mime-slow heavy attachments,
traffic-drop the rate, through the engine's arrivals); *Gmail-side* scenarios are
switched on and off in a ``loadsim fake-gmail`` named with ``--fault-control``
(:mod:`loadsim.drivers.faults`). Whatever cannot be honoured is refused before the
run starts (:func:`overlay_problems`).
"""

from __future__ import annotations

import collections
import gc
import json
import math
import ssl
from collections import Counter as Tally
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from hdrh.histogram import HdrHistogram
from numpy.typing import NDArray

from loadsim.clock import Clock
from loadsim.drivers import wire
from loadsim.drivers.faults import GMAIL_SIDE, FaultControl
from loadsim.drivers.templates import (
    TEMPLATES,
    GmailBatch,
    GmailPayloads,
    MessageSampler,
    Shapes,
    Wire,
    relay_execute,
    relay_preview,
)
from loadsim.engine.driver import Counts, Part, Window
from loadsim.engine.seeds import RunRandom
from loadsim.errors import Problem
from loadsim.files import MIB, read_bytes
from loadsim.model.params import ModelParams
from loadsim.net import LOOPBACK_ONLY, Reach, is_loopback
from loadsim.schedule import Schedule
from loadsim.sinks.http_metrics import HttpMetrics

HDR_MAX_US = 600_000_000
"""Longest latency recorded: 10 minutes, in microseconds."""
DEFAULT_REMOTE_MAX_RATE = 10.0
"""Sends/s allowed to a non-loopback target unless --max-rate raises it."""
CA_FILE_LIMIT = 4 * MIB
"""Largest --ca-file read (the whole Mozilla bundle is about 220 KiB)."""
DEFAULT_MAX_BODY = 1 << 20
"""Longest response body read (bytes); longer ones end as ``oversize``."""

SUPPORT: dict[str, tuple[str, ...]] = {
    "validation-spike": ("relay",),
    "sanitization-spike": ("relay",),
    "mime-slow": ("gmail", "relay"),
    "traffic-drop": ("gmail", "relay"),
}
"""Input-side scenarios and the templates whose requests they change."""
WHY_NOT: dict[str, str] = {
    "validation-spike": "the relay rejects invalid sends before Gmail, so Gmail never sees them; use --template relay",
    "sanitization-spike": "the relay sanitizes HTML before Gmail sees it; use --template relay",
    "controller-stalled": "it acts on the rollout controller inside the relay, which traffic cannot reach",
    "controller-failing": "it acts on the rollout controller inside the relay, which traffic cannot reach",
    "metrics-missing": "it acts on the relay's metrics endpoint, not on traffic",
    "oauth-refresh-failures": "it acts on the relay's token store, which traffic cannot reach",
}


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
    """Content bytes per attachment while no overlay makes sizes real (see templates.Shapes)."""
    max_body: int = DEFAULT_MAX_BODY
    lead: float = 0.05
    """How far ahead of a window its arrivals are placed on the loop (seconds)."""
    fault_control: str | None = None
    """Base URL of a loadsim fake-gmail whose control API gets the Gmail-side overlays."""
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)
    """User and password from the target URL's userinfo, sent as HTTP Basic auth (``target`` has none)."""
    reach: Reach = LOOPBACK_ONLY
    """Where the target's connections may go: loopback, unless the target's host was allowed by name."""
    fault_control_reach: Reach = LOOPBACK_ONLY
    """The same for the fault-control URL (``--allow-host``)."""


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


def overlay_problems(overlays: Iterable[tuple[str, str, bool]], template: str, fault_control: bool) -> list[Problem]:
    """Overlays (``(key, scenario, ramped)``) this driver cannot honour, each with why and what to do."""
    where = "--driver http"
    problems = []
    for key, name, ramped in overlays:
        if name in GMAIL_SIDE:
            if not fault_control:
                why = (
                    f"{name} changes what Gmail answers: with --driver http it needs --fault-control URL "
                    "of a loadsim fake-gmail that the target talks to"
                )
                problems.append(Problem(where, f"{key}.scenario", why))
            elif ramped:
                why = f"{name} cannot ramp through the fake-gmail control API; drop the ramp"
                problems.append(Problem(where, f"{key}.ramp", why))
        elif name in SUPPORT:
            if template not in SUPPORT[name]:
                why = f"{name} cannot apply to --template {template}: {WHY_NOT[name]}"
                problems.append(Problem(where, f"{key}.scenario", why))
        else:
            problems.append(Problem(where, f"{key}.scenario", f"{name} cannot apply to real traffic: {WHY_NOT[name]}"))
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
MAX_WAITING = 100_000
"""Most arrivals handed over and waiting for their time (unless ``max_in_flight`` is higher): a
second of the driver's best, far beyond what a loop that keeps up ever holds (a tick and a lead)."""
DISPATCH_MAX = 4096
"""Most requests started in one turn of the dispatcher: the loop gets a turn between two."""
GC_THRESHOLDS = (50_000, 50, 1000)
"""While the driver runs: each request allocates small objects (its bytes, its exchange, its
measurements); with the default thresholds the cyclic collector took about 20% of the driver's
core (py-spy, 10 s runs). Freezing what set-up created and collecting less often gave +29%."""


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


def _hdr() -> HdrHistogram:
    return HdrHistogram(1, HDR_MAX_US, 3)


@dataclass
class HttpResults:
    """What the driver saw: counts by result and HDR latency histograms."""

    intended: HdrHistogram = field(default_factory=_hdr)
    actual: HdrHistogram = field(default_factory=_hdr)
    lateness: HdrHistogram = field(default_factory=_hdr)
    results: Tally[str] = field(default_factory=Tally)

    def to_dict(self) -> dict[str, Any]:
        """The driver's part of the summary."""

        def quantiles(h: HdrHistogram) -> dict[str, float]:
            if h.get_total_count() == 0:
                return {}
            out = {f"p{q:g}": h.get_value_at_percentile(q) / 1e6 for q in (50, 90, 99, 99.9)}
            out["max"] = h.get_max_value() / 1e6
            return out

        return {
            "by_result": dict(sorted(self.results.items())),
            "latency_from_intended_seconds": quantiles(self.intended),
            "latency_from_actual_seconds": quantiles(self.actual),
            "start_lateness_seconds": quantiles(self.lateness),
        }

    def state(self) -> dict[str, Any]:
        """JSON-ready: counts and each histogram in HdrHistogram's own encoding."""
        return {
            "results": dict(self.results),
            "hdr": {name: getattr(self, name).encode().decode("ascii") for name in ("intended", "actual", "lateness")},
        }

    def load_state(self, meta: dict[str, Any]) -> None:
        """Put checkpointed counts and histograms back."""
        self.results = Tally({str(k): int(v) for k, v in meta["results"].items()})
        for name in ("intended", "actual", "lateness"):
            h = _hdr()
            h.decode_and_add(meta["hdr"][name])
            setattr(self, name, h)


@dataclass(slots=True)
class _Due:
    """One window's arrivals on their way to the dispatcher."""

    times: FloatArray
    """Run times (the clock's), sorted."""
    batch: GmailBatch | None
    shapes: Shapes
    next: int = 0


class HttpDriver:
    """Drives the engine's windows as real HTTP requests against ``options.target``."""

    noun = "requests"
    max_batch = 1 << 13
    """A window's arrivals are sorted and their Gmail bodies drawn when handed over: 8,192 at a
    time (a tenth of a second of the driver's best) keeps a hand-over short at any rate."""

    def __init__(  # noqa: PLR0917 - each collaborator injected once
        self,
        options: HttpOptions,
        model: ModelParams,
        schedule: Schedule,
        duration: float,
        clock: Clock,
        random: RunRandom,
        metrics: HttpMetrics,
        *,
        faults: FaultControl | None = None,
        log: Any = None,
    ) -> None:
        self.options = options
        self.model = model
        self.peak = peak_rate(schedule, duration)
        self.clock = clock
        self._now = clock.source()[0]
        """The clock's raw source (a C call on the wall clock), read once per request: the driver's
        times (intended, actual, answered) are in its base; window times are moved into it."""
        self.metrics = metrics
        self.faults = faults
        self.log = log
        self.results = HttpResults()
        self.wire = Wire(options.target, options.token, basic=options.basic_auth)
        self.sampler = MessageSampler(random.outcomes)
        self.gmail = GmailPayloads(self.wire, options.users, random.outcomes, random.overlays)
        self._relay_flow = options.template == "relay"
        self._base_shapes = Shapes(model, attachment_cap=options.max_attachment_bytes)
        self._pool: wire.Pool | None = None
        self._due: collections.deque[_Due] = collections.deque()
        self._waiting = 0
        """Arrivals handed over and not yet dispatched (started or dropped)."""
        self._timer: Any = None
        self._in_flight = 0
        self._stop = False
        self._gc: tuple[int, int, int] | None = None
        # Per-request measurements, folded into histograms once per window.
        self._intended: list[float] = []
        self._actual: list[float] = []
        self._lateness: list[FloatArray] = []
        self._window_results: dict[str, int] = {}
        self._started = 0
        self._dropped = 0
        self._completed = 0
        self._lost_at_restart = 0
        self._missed_at_restart = 0
        self._abandoned = 0
        self._labels = {
            wire.TIMEOUT: "timeout",
            wire.CONNECTION_ERROR: "connection_error",
            wire.ABANDONED: "abandoned",
            wire.RENDER_ERROR: "render_error",
            wire.STALE_CONNECTION: "stale_connection",
            wire.TRUNCATED: "truncated",
            wire.OVERSIZE: "oversize",
        }

    # -- Driver: lifecycle ------------------------------------------------------------------

    def handover(self, t0: float, t1: float) -> float:  # noqa: ARG002 - placed ahead of the window's start
        return t0 - self.options.lead

    async def open(self) -> None:
        """Open (and warm) the connection pool, and tune the collector for the run (undone by :meth:`close`)."""
        context = tls_context(self.options.ca_file) if self.wire.tls else None
        pool = wire.Pool(
            self.wire.host,
            self.wire.port,
            self._done,
            limit=self.options.connections,
            timeout=self.options.timeout,
            clock=self.clock,
            ssl_context=context,
            render=self.gmail.build,
            max_body=self.options.max_body,
            reach=self.options.reach,
        )
        self._pool = pool
        pool.start()
        # Enough connections for 10 ms of arrivals at the peak rate (64 at 6,400/s and above,
        # with --connections 64), not all of --connections: a 10/s run against a remote relay
        # should not open 256 connections to it.
        wanted = min(self.options.connections, max(1, math.ceil(self.peak * WARM_SECONDS)))
        ready = await pool.warm(wanted, within=min(self.options.timeout, 2.0))
        if self.log is not None:
            self.log.info("http.connections", ready=ready, wanted=wanted)
        if self.faults is not None:
            self.faults.start()
        self._gc = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
        if self.faults is not None:
            await self.faults.close()
        if self._gc is not None:
            gc.set_threshold(*self._gc)
            gc.unfreeze()
            self._gc = None

    def request_stop(self) -> None:
        """Start no more arrivals; requests already out finish (within the grace)."""
        self._stop = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()
        self._waiting = 0

    async def abandon(self) -> int:
        before = self._abandoned
        self.request_stop()
        if self._pool is not None:
            await self._pool.aclose()
        return self._abandoned - before

    # -- Driver: windows --------------------------------------------------------------------

    def window(self, window: Window) -> Counts:
        if self.faults is not None:
            self.faults.sync(window.active, window.t0)
        if self._stop or not len(window.starts):
            return self._flush()
        starts = np.sort(window.starts) + self.clock.source()[1]  # run time -> the source's base
        room = max(max(self.options.max_in_flight, MAX_WAITING) - self._waiting, 0)
        if len(starts) > room:
            # A loop too slow to dispatch what it was handed: beyond MAX_WAITING (or max_in_flight)
            # arrivals waiting for their time, the rest is dropped and counted, never queued without end.
            self._dropped += len(starts) - room
            starts = starts[:room]
        if len(starts):
            shapes = self._shapes(window)
            batch = None if self._relay_flow else self.gmail.draw(len(starts), shapes)
            self._due.append(_Due(starts, batch, shapes))
            self._waiting += len(starts)
            if self._timer is None:
                self._dispatch()
        return self._flush()

    def _shapes(self, window: Window) -> Shapes:
        model = window.state.model
        if model is self.model:
            return self._base_shapes
        # An overlay that changed the attachments (mime-slow) is about their size: send them whole.
        real = model.attachments != self.model.attachments
        return Shapes(model, real_attachment_sizes=real, attachment_cap=self.options.max_attachment_bytes)

    def settle(self, t: float) -> Counts:  # noqa: ARG002 - completions arrive by themselves
        return self._flush()

    def in_flight(self) -> int:
        return self._in_flight + self._waiting

    def next_due(self) -> float:
        return math.inf

    def skip_to(self, t: float) -> None:  # noqa: ARG002 - requests never started are never due
        return None

    # -- starting requests -----------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Start every arrival that is due (at most ``DISPATCH_MAX`` a turn of the loop); sleep until the next one."""
        self._timer = None
        now = self._now()
        budget = DISPATCH_MAX
        while self._due:
            due = self._due[0]
            end = min(int(np.searchsorted(due.times, now, side="right")), due.next + budget)
            if end > due.next:
                self._start(due, due.next, end, now)
                self._waiting -= end - due.next
                budget -= end - due.next
                due.next = end
                if budget <= 0:  # the rest on the next turn: signals, answers and /metrics go first
                    self._timer = self.clock.call_later(0.0, self._dispatch)
                    return
            if due.next < len(due.times):
                wait = max(float(due.times[due.next]) - now, DISPATCH_SLICE)
                self._timer = self.clock.call_later(wait, self._dispatch)
                return
            self._due.popleft()

    def _start(self, due: _Due, first: int, end: int, now: float) -> None:
        self._lateness.append(now - due.times[first:end])
        room = self.options.max_in_flight - self._in_flight
        last = end if end - first <= room else first + max(room, 0)
        self._dropped += end - last
        if last <= first:
            return
        self._in_flight += last - first
        self._started += last - first
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
                submit(self._relay_preview(t, now, due.shapes))

    def _relay_preview(self, intended: float, actual: float, shapes: Shapes) -> wire.Exchange:
        payload = self.wire.request(relay_preview(self.sampler.draw(shapes), self.options.token))
        return wire.Exchange(payload, intended, keep_body=True, tag=actual)

    # -- answers ---------------------------------------------------------------------------------

    def _done(self, ex: wire.Exchange, status: int) -> None:
        if self._relay_flow and ex.stage == 0 and status != wire.ABANDONED:
            result = self._relay_next(ex, status)
            if result is None:
                return
        else:
            result = self._label(status)
        end = self._now()
        self._in_flight -= 1
        if status == wire.ABANDONED:
            self._abandoned += 1
        else:
            self._completed += 1
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
        if ex.body is None:
            return "preview_too_large"  # longer than the pool keeps (wire.MAX_KEPT): no id looked for
        preview_id = None
        try:
            parsed = json.loads(ex.body)
            preview_id = parsed.get("preview_id") if isinstance(parsed, dict) else None
        except (ValueError, RecursionError):
            preview_id = None
        if not preview_id:
            return "preview_no_id"
        follow = wire.Exchange(
            self.wire.request(relay_execute(str(preview_id), self.options.token)),
            ex.started,
            tag=ex.tag,
            idempotent=True,  # it carries an Idempotency-Key: safe to retry on a stale connection
        )
        follow.stage = 1
        assert self._pool is not None
        self._pool.submit(follow)
        return None

    def _flush(self) -> Counts:
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
        counts = Counts(
            self._started, self._dropped, self._completed, self._lost_at_restart, missed=self._missed_at_restart
        )
        self.metrics.update(
            results=results,
            intended=intended,
            actual=actual,
            lateness=lateness,
            dropped=self._dropped,
            in_flight=self._in_flight,
        )
        self._started = self._dropped = self._completed = self._lost_at_restart = self._missed_at_restart = 0
        return counts

    # -- Driver: figures and state ------------------------------------------------------------

    def errors(self) -> int:
        return sum(n for k, n in self.results.results.items() if k not in ("2xx", "abandoned"))

    def latency_quantile(self, q: float) -> float:
        h = self.results.intended
        return h.get_value_at_percentile(100 * q) / 1e6 if h.get_total_count() else math.nan

    def gate_percent(self) -> int | None:
        return None  # the relay's own controller gates real traffic

    def report(self) -> dict[str, Any]:
        out = self.results.to_dict()
        out["target"] = self.options.target
        out["template"] = self.options.template
        if self._pool is not None and self._pool.refused:
            out["connections_refused_beyond_loopback"] = self._pool.refused
        if self.faults is not None:
            out["fault_control"] = self.faults.summary()
        return out

    def snapshot(self) -> Part:
        meta, arrays = self.metrics.state()
        # Taken right after a settle (see Engine.snapshot): what is on the wire, and what was handed over
        # ahead of its time (up to a lead and a tick of arrivals) and not started yet.
        state = {"results": self.results.state(), "metrics": meta, "in_flight": self._in_flight}
        return {**state, "waiting": self._waiting}, arrays

    def restore(self, part: Part) -> None:
        meta, arrays = part
        self.results.load_state(meta["results"])
        self.metrics.load_state((meta["metrics"], arrays))
        # Requests out when the checkpoint was taken cannot be resumed: they count as abandoned.
        lost, waiting = int(meta["in_flight"]), int(meta.get("waiting", 0))
        if lost < 0 or waiting < 0:
            msg = f"negative in_flight ({lost}) or waiting ({waiting})"
            raise ValueError(msg)
        if lost:
            self.results.results["abandoned"] += lost
            self.metrics.update(
                results={"abandoned": lost},
                intended=np.empty(0),
                actual=np.empty(0),
                lateness=np.empty(0),
                dropped=0,
                in_flight=0,
            )
            self._lost_at_restart = lost
        # Arrivals handed over but not started: the engine resumes after their time, so it never hands
        # them over again and does not count them among the missed; the driver does (state files
        # written before this field count none).
        self._missed_at_restart = waiting


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """The client TLS context: the system's CAs, plus ``ca_file`` (PEM) when given.

    Raises :class:`~loadsim.files.InputFileError` (not a regular file, over 4 MiB),
    ``OSError`` or ``ssl.SSLError`` for a ``ca_file`` that cannot be used. The file is
    read by :mod:`loadsim.files` (a FIFO would block ``cafile=``) and handed over as text.
    """
    context = ssl.create_default_context()
    if ca_file is not None:
        pem = read_bytes(ca_file, CA_FILE_LIMIT).decode("ascii", "replace")
        context.load_verify_locations(cadata=pem)
    return context


def _classify(status: int) -> str:
    if 200 <= status < 300:
        return "2xx"
    if 400 <= status < 500:
        return f"4xx_{status}"
    if 500 <= status < 600:
        return "5xx"
    return f"status_{status}"


def peak_rate(schedule: Schedule, duration: float) -> float:
    """The schedule's highest rate over the run (sampled each minute and at segment edges)."""
    times = [p.start for p in schedule.placed if p.start < duration]
    step = 60.0
    times += [k * step for k in range(math.ceil(duration / step) + 1)]
    return max(schedule.at(min(t, duration)) for t in times)
