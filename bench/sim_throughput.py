"""How fast loadsim simulates sends: the engine against a per-event prometheus-client loop and the numpy floor.

Three figures, each in simulated sends per second of wall time, measured in one
process pinned to one core:

* **engine**: :class:`loadsim.engine.loop.Engine` on a :class:`VirtualClock` at a
  constant, very high rate, with every relay metric family, loadsim's own health
  metrics and the run summary updated; what ``loadsim run --virtual`` costs per
  send. A scrape after each run checks that the exported ``action_exec_total``
  plus the early-guard ``action_error_total`` equals the sends started, so the
  figure counts work that really reached ``/metrics``.
* **per-event loop** (baseline A): the same relay families as ordinary
  prometheus-client ``Counter`` and ``Histogram`` objects, label children bound
  up front, one ``inc()`` or ``observe()`` per send and per side event. Every
  per-send value is drawn by numpy before the clock starts, so the figure is the
  per-event metric cost alone. It is what a careful per-event emitter costs; the
  engine exists to beat it.
* **floor**: ``Arrivals.draw`` plus ``OutcomeModel.sample`` window by window with
  no sink at all. Every run needs these draws, so no sink design can beat it.

Each figure is the median of ``--repeats`` runs (with the min..max range);
rounds are interleaved (engine, floor, per-event, engine, ...) so a noisy
neighbour hurts all three alike. Every run has a wall-time cap (a share of
``--budget``); a run that hits it stops early and says so, and its rate is still
sends over the time it took. A watchdog ends the process if it hangs.

Usage, from the repository root::

    .venv/bin/python -m bench.sim_throughput              # about 40-60 s
    .venv/bin/python -m bench.sim_throughput --quick      # under 15 s
    .venv/bin/python bench/sim_throughput.py --cpu 0 --json results.json --check

The JSON report goes to ``$TMPDIR/loadsim-bench/sim_throughput.json`` unless
``--json`` names a file (nothing is written inside the repository by default).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

if __package__ in {None, ""}:  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import cancel_watchdog, default_json, environment, pin, watchdog
from loadsim import contract as c
from loadsim.arrivals import Arrivals
from loadsim.engine.seeds import RunRandom
from loadsim.model import catalog
from loadsim.model.params import ModelParams
from loadsim.model.sampler import MAX_ATTACHMENTS, OutcomeModel, lognormal_params
from loadsim.plan import RunPlan, build_plan
from loadsim.profile import parse_profile
from loadsim.runtime.factory import build

DEFAULT_JSON = default_json("sim_throughput")
"""Outside the repository, so a benchmark run never leaves files for git to see."""
TICK = "0.5s"
"""Virtual window: 1M sends per window at 2M/s, large enough that per-window overhead is amortised."""
SIM_RATE = 2e6
"""The simulated (virtual-time) send rate the engine is offered."""
TARGET_RATE = 5e6
"""The issue's target: at least this many simulated sends per second of wall time, one core."""
TARGET_RATIO = 20.0
"""The issue's target: at least this many times the per-event prometheus-client loop."""
BUDGET_SHARES = {"engine": 0.5, "floor": 0.3, "per_event": 0.2}
"""How ``--budget`` is split between the figures (each share then split over the repeats)."""
CHUNK = 16_384
"""Per-event sends between deadline checks: the check costs nothing next to 16k sends."""
OAUTH_OK, OAUTH_FAILED, OAUTH_LOCKED = 1, 2, 3


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much work one run of each figure does, and the wall-time budget for all of them."""

    engine_sends: int
    per_event_sends: int
    budget: float


FULL = Sizes(engine_sends=40_000_000, per_event_sends=300_000, budget=80.0)
QUICK = Sizes(engine_sends=6_000_000, per_event_sends=60_000, budget=12.0)


@dataclass(frozen=True, slots=True)
class Run:
    """One timed run: how many sends it simulated and how long that took."""

    sends: int
    seconds: float
    capped: bool = False
    """True when the run hit its wall-time cap and stopped before doing all its sends."""

    @property
    def rate(self) -> float:
        return self.sends / self.seconds if self.seconds > 0 else 0.0


@dataclass(slots=True)
class Figure:
    """The repeated runs of one measurement."""

    key: str
    label: str
    runs: list[Run] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(r.rate for r in self.runs)

    @property
    def low(self) -> float:
        return min(r.rate for r in self.runs)

    @property
    def high(self) -> float:
        return max(r.rate for r in self.runs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "sends_per_s_median": self.median,
            "sends_per_s_min": self.low,
            "sends_per_s_max": self.high,
            "runs": [
                {"sends": r.sends, "seconds": round(r.seconds, 4), "sends_per_s": r.rate, "capped": r.capped}
                for r in self.runs
            ],
        }


# -- engine --------------------------------------------------------------------------------------


def engine_plan(rate: float, sends: int, seed: int) -> RunPlan:
    """A constant-rate virtual plan long enough for about ``sends`` sends."""
    profile = parse_profile(
        {
            "name": "bench-sim-throughput",
            "duration": max(sends / rate, 0.5),
            "seed": seed,
            "schedule": [{"kind": "constant", "rate": rate}],
            "engine": {"virtual_tick": TICK},
        },
        "bench/sim_throughput.py",
    )
    return build_plan(profile, virtual=True)


@dataclass(frozen=True, slots=True)
class EngineCheck:
    """What a scrape after an engine run exported, against what the run says it started."""

    started: int
    abandoned: int
    dropped: int
    exported_executions: float
    exported_guard_errors: float
    scrape_seconds: float
    scrape_bytes: int

    @property
    def ok(self) -> bool:
        """Every started send is exported once: as an execution, an early-guard error, or abandoned."""
        return self.exported_executions + self.exported_guard_errors + self.abandoned == self.started

    def to_dict(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "abandoned": self.abandoned,
            "dropped": self.dropped,
            "exported_action_exec_total": self.exported_executions,
            "exported_early_guard_errors": self.exported_guard_errors,
            "scrape_seconds": round(self.scrape_seconds, 4),
            "scrape_bytes": self.scrape_bytes,
            "ok": self.ok,
        }


def exported_outcomes(registry: CollectorRegistry) -> tuple[float, float, float, int]:
    """Scrape ``registry`` as Prometheus would; returns (executions, early-guard errors, seconds, bytes).

    The text is parsed back rather than read from the collector's arrays, so the
    check covers the rendering as well as the bookkeeping.
    """
    start = time.perf_counter()
    text = generate_latest(registry)
    seconds = time.perf_counter() - start
    executions = guards = 0.0
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == c.ACTION_EXEC:
                executions += sample.value
            elif sample.name == c.ACTION_ERROR and sample.labels.get("reason") in catalog.EARLY_GUARD_REASONS:
                guards += sample.value
    return executions, guards, seconds, len(text)


async def run_engine(plan: RunPlan, cap: float) -> tuple[Run, EngineCheck]:
    """Run the engine over ``plan`` with every sink a real run has, then scrape once (untimed)."""
    deadline = time.perf_counter() + cap

    def stop_at_cap(_t: float, _state: object) -> None:
        if time.perf_counter() > deadline:
            engine.request_stop()

    run = build(plan, after_window=[stop_at_cap])
    engine, registry = run.engine, run.registry
    gc.collect()
    start = time.perf_counter()
    result = await engine.run()
    seconds = time.perf_counter() - start
    executions, guards, scrape_seconds, scrape_bytes = exported_outcomes(registry)
    check = EngineCheck(
        started=engine.counts.started,
        abandoned=result.abandoned,
        dropped=engine.counts.dropped,
        exported_executions=executions,
        exported_guard_errors=guards,
        scrape_seconds=scrape_seconds,
        scrape_bytes=scrape_bytes,
    )
    return Run(sends=engine.counts.started, seconds=seconds, capped=result.stopped_early), check


# -- floor ---------------------------------------------------------------------------------------


def run_floor(plan: RunPlan, cap: float) -> Run:
    """The draws the engine makes for ``plan``, window by window, with nothing recorded anywhere."""
    random = RunRandom.from_seed(plan.seed)
    arrivals = Arrivals(plan.schedule, plan.arrivals, random.arrivals)
    model = OutcomeModel(plan.model)
    tick, duration = plan.tick, plan.duration
    sends, t0, capped = 0, 0.0, False
    gc.collect()
    start = time.perf_counter()
    deadline = start + cap
    while t0 < duration:
        t1 = min(t0 + tick, duration)
        starts = arrivals.draw(t0, t1)
        model.sample(random.outcomes, starts)
        sends += len(starts)
        t0 = t1
        if t0 < duration and time.perf_counter() > deadline:
            capped = True
            break
    return Run(sends=sends, seconds=time.perf_counter() - start, capped=capped)


# -- baseline A: one prometheus-client call per event ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Workload:
    """Every per-send value the per-event loop needs, as plain Python lists (what a handler would hold)."""

    cls: list[int]
    latency: list[float]
    """Execution latency; 0 for early guards (they observe none)."""
    mime: list[float]
    """MIME build time; 0 for sends that build no message."""
    accepted_bytes: list[float]
    rejected_bytes: list[float]
    inline_matched: list[int]
    inline_orphan: list[int]
    sanitization: tuple[list[int], list[int], list[int], list[int]]
    """Changes per send, one list per ``catalog.SANITIZATION_CHANGE_TYPES``."""
    oauth: list[int]
    """0 none, ``OAUTH_OK``, ``OAUTH_FAILED`` or ``OAUTH_LOCKED``."""

    def __len__(self) -> int:
        return len(self.cls)


def draw_workload(n: int, rate: float, seed: int, params: ModelParams) -> Workload:
    """Draw ``n`` sends with numpy, untimed: the outcome model's per-send values plus per-send side events.

    Classes, latencies and MIME times come from ``OutcomeModel.sample`` itself.
    The model draws side signals (attachments, inline references, sanitization
    changes, token refreshes) as window totals because only totals reach a
    counter; a per-event emitter sees them per send, so they are drawn here per
    send from the same parameters.
    """
    outcomes, side = (np.random.Generator(np.random.PCG64(s)) for s in np.random.SeedSequence(seed).spawn(2))
    starts = outcomes.random(n) * (n / rate)
    effects, executions = OutcomeModel(params).sample(outcomes, starts)

    # Executions in order, then the early guards the model only counts; shuffled together.
    guards = np.repeat(np.arange(catalog.K), effects.guard_counts)
    cls = np.concatenate((executions.cls.astype(np.int64), guards))
    latency = np.concatenate((executions.latency, np.zeros(len(guards))))
    mime = np.zeros(len(cls))
    built_exec = catalog.BUILDS_MIME[executions.cls]
    assert int(built_exec.sum()) == len(effects.mime_seconds), "built sends are executions, in order"
    mime[: len(executions)][built_exec] = effects.mime_seconds
    order = side.permutation(len(cls))
    cls, latency, mime = cls[order], latency[order], mime[order]
    n = len(cls)

    built = catalog.BUILDS_MIME[cls]
    att = params.attachments
    has_att = built & (side.random(n) < att.probability)
    att_count = np.minimum(1 + side.poisson(att.extra_mean, n), MAX_ATTACHMENTS)
    mu, sigma = lognormal_params(att.size_p50_bytes, att.size_p95_bytes)
    accepted = np.where(has_att, att_count * np.exp(mu + sigma * side.standard_normal(n)), 0.0)
    rejected_cls = np.isin(cls, [catalog.CLASS_INDEX[code] for code in catalog.REJECTED_ATTACHMENT_CODES])
    rejected = np.where(rejected_cls, side.lognormal(np.log(att.rejected_size_p50_bytes), 0.3, n), 0.0)

    def per_built(mean: float) -> list[int]:
        drawn: list[int] = np.where(built, side.poisson(mean, n), 0).tolist()
        return drawn

    san = params.sanitization.means()
    oauth = params.oauth
    refresh = catalog.IS_EXECUTION[cls] & (side.random(n) < oauth.refresh)
    locked = refresh & (side.random(n) < oauth.locked)
    failed = refresh & ~locked & (side.random(n) < oauth.failure)
    oauth_code = np.where(locked, OAUTH_LOCKED, np.where(failed, OAUTH_FAILED, np.where(refresh, OAUTH_OK, 0)))
    return Workload(
        cls=cls.tolist(),
        latency=latency.tolist(),
        mime=mime.tolist(),
        accepted_bytes=accepted.tolist(),
        rejected_bytes=rejected.tolist(),
        inline_matched=per_built(params.inline.matched),
        inline_orphan=per_built(params.inline.orphan_cid),
        sanitization=(per_built(san[0]), per_built(san[1]), per_built(san[2]), per_built(san[3])),
        oauth=oauth_code.tolist(),
    )


_ClassChildren = tuple[Any, Any, tuple[Any, ...], bool]
"""Per outcome class: exec child or None, error child or None, structured children, builds MIME."""


class PerEventRelay:
    """The relay's families as ordinary prometheus-client metrics, every label child bound up front.

    This is the well-optimised per-event emitter: no ``.labels()`` look-up on the
    hot path, the per-class work resolved to a tuple of children once, and the
    loop's names bound to locals. Anything slower would flatter the engine.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        pa = (c.PROVIDER, c.ACTION)
        exec_total = Counter(c.ACTION_EXEC, c.HELP[c.ACTION_EXEC], ["provider", "action", "status"], registry=registry)
        errors = Counter(c.ACTION_ERROR, c.HELP[c.ACTION_ERROR], ["provider", "action", "reason"], registry=registry)
        latency = Histogram(
            c.ACTION_LATENCY,
            c.HELP[c.ACTION_LATENCY],
            ["provider", "action"],
            buckets=c.LATENCY_BUCKETS,
            registry=registry,
        )
        structured = Counter(
            c.STRUCTURED_ERROR, c.HELP[c.STRUCTURED_ERROR], ["provider", "action", "code", "source"], registry=registry
        )
        self.mime = Histogram(c.MIME_BUILD, c.HELP[c.MIME_BUILD], buckets=c.MIME_BUCKETS, registry=registry)
        attachment = Counter(c.ATTACHMENT_BYTES, c.HELP[c.ATTACHMENT_BYTES], ["result"], registry=registry)
        inline = Counter(c.INLINE_REFS, c.HELP[c.INLINE_REFS], ["result"], registry=registry)
        sanitization = Counter(c.SANITIZATION, c.HELP[c.SANITIZATION], ["change_type"], registry=registry)
        oauth = Counter(c.OAUTH_EVENTS, c.HELP[c.OAUTH_EVENTS], ["provider", "event"], registry=registry)

        self.latency = latency.labels(*pa)
        self.accepted, self.rejected = (attachment.labels(r) for r in catalog.ATTACHMENT_RESULTS)
        self.matched, self.orphan = (inline.labels(r) for r in catalog.INLINE_RESULTS)
        self.sanitization = tuple(sanitization.labels(t) for t in catalog.SANITIZATION_CHANGE_TYPES)
        self.oauth = tuple(oauth.labels(c.PROVIDER, e) for e in catalog.OAUTH_EVENTS)
        exec_children = {s: exec_total.labels(*pa, s) for s in c.EXEC_STATUSES}
        error_children = {r: errors.labels(*pa, r) for r in catalog.ERROR_REASONS}
        structured_children = {cs: structured.labels(*pa, *cs) for cs in catalog.STRUCTURED_SERIES}
        self.per_class: tuple[_ClassChildren, ...] = tuple(
            (
                exec_children[k.exec_status] if k.is_execution else None,
                error_children[k.reason] if k.reason else None,
                tuple(structured_children[(k.code, s)] for s in k.sources) if k.code else (),
                k.builds_mime,
            )
            for k in catalog.CLASSES
        )

    def record(self, w: Workload, lo: int, hi: int) -> None:  # noqa: C901, PLR0912 - one flat handler is the point
        """One send at a time, the way a relay's request handler would count it."""
        per_class, latency, mime = self.per_class, self.latency, self.mime
        accepted, rejected, matched, orphan = self.accepted, self.rejected, self.matched, self.orphan
        san0, san1, san2, san3 = self.sanitization
        refresh_start, refresh_ok, refresh_failed, refresh_locked = self.oauth
        s0, s1, s2, s3 = w.sanitization
        rows = zip(
            w.cls[lo:hi], w.latency[lo:hi], w.mime[lo:hi], w.accepted_bytes[lo:hi], w.rejected_bytes[lo:hi],
            w.inline_matched[lo:hi], w.inline_orphan[lo:hi], s0[lo:hi], s1[lo:hi], s2[lo:hi], s3[lo:hi],
            w.oauth[lo:hi], strict=True,
        )  # fmt: skip
        for k, lat, mime_s, acc, rej, im, io, a, b, d, e, oa in rows:
            exec_child, error_child, structured, builds = per_class[k]
            if exec_child is not None:
                exec_child.inc()
                latency.observe(lat)
            if error_child is not None:
                error_child.inc()
            for child in structured:
                child.inc()
            if builds:
                mime.observe(mime_s)
                if acc:
                    accepted.inc(acc)
                if im:
                    matched.inc(im)
                if io:
                    orphan.inc(io)
                if a:
                    san0.inc(a)
                if b:
                    san1.inc(b)
                if d:
                    san2.inc(d)
                if e:
                    san3.inc(e)
            elif rej:
                rejected.inc(rej)
            if oa:
                if oa == OAUTH_LOCKED:
                    refresh_locked.inc()
                else:
                    refresh_start.inc()
                    (refresh_ok if oa == OAUTH_OK else refresh_failed).inc()


def run_per_event(workload: Workload, n: int, cap: float) -> tuple[Run, bool]:
    """Feed the first ``n`` sends through a fresh :class:`PerEventRelay`; returns the run and its sanity check."""
    registry = CollectorRegistry()
    relay = PerEventRelay(registry)
    n = min(n, len(workload))
    done, capped = 0, False
    gc.collect()
    start = time.perf_counter()
    deadline = start + cap
    while done < n:
        hi = min(done + CHUNK, n)
        relay.record(workload, done, hi)
        done = hi
        if done < n and time.perf_counter() > deadline:
            capped = True
            break
    seconds = time.perf_counter() - start
    executions, guards, _, _ = exported_outcomes(registry)
    return Run(sends=done, seconds=seconds, capped=capped), executions + guards == done


# -- running -------------------------------------------------------------------------------------


@contextlib.contextmanager
def event_loop() -> Iterator[tuple[Callable[[Coroutine[Any, Any, Any]], Any], str]]:
    """The loop ``loadsim run`` uses: uvloop when installed, else asyncio's default."""
    try:
        import uvloop
    except ImportError:
        factory, name = None, "asyncio"
    else:
        factory, name = uvloop.new_event_loop, "uvloop"
    with asyncio.Runner(loop_factory=factory) as runner:
        yield runner.run, name


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.sim_throughput", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer sends: finishes in under ~15 s")
    p.add_argument("--repeats", type=int, default=3, help="runs per figure; the median is reported (default 3)")
    p.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the last allowed CPU)")
    p.add_argument(
        "--rate", type=float, default=SIM_RATE, help=f"simulated send rate per second (default {SIM_RATE:,.0f})"
    )
    p.add_argument("--engine-sends", type=int, default=None, help="sends per engine and floor run")
    p.add_argument("--per-event-sends", type=int, default=None, help="sends per per-event run")
    p.add_argument("--budget", type=float, default=None, help="wall-time budget in seconds for all timed runs")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help=f"where to write the report (default {DEFAULT_JSON})"
    )
    p.add_argument("--check", action="store_true", help="exit 2 when a target from the issue is missed")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats: must be >= 1, got {args.repeats}")
    if args.rate <= 0:
        p.error(f"--rate: must be > 0, got {args.rate:g}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    engine_sends = args.engine_sends or sizes.engine_sends
    per_event_sends = args.per_event_sends or sizes.per_event_sends
    budget = args.budget or sizes.budget
    # Hard stop: soft caps bound every run; this catches a hang anywhere else.
    watchdog(budget + 60.0)
    cpu = pin(args.cpu)
    caps = {k: budget * share / args.repeats for k, share in BUDGET_SHARES.items()}

    plan = engine_plan(args.rate, engine_sends, args.seed)
    warm_plan = engine_plan(args.rate, int(args.rate * 0.5), args.seed)
    workload = draw_workload(per_event_sends, args.rate, args.seed, plan.model)
    engine = Figure("engine", "engine, every family (RelayMetrics)")
    per_event = Figure("per_event", "per-event prometheus-client loop")
    floor = Figure("floor", "floor: numpy draws alone")
    checks: list[EngineCheck] = []
    per_event_ok: list[bool] = []
    wall = time.perf_counter()
    with event_loop() as (run, loop_name):
        # Warm-ups (untimed): first calls into numpy, prometheus-client and the loop.
        run(run_engine(warm_plan, caps["engine"]))
        run_floor(warm_plan, caps["floor"])
        run_per_event(workload, min(5_000, per_event_sends), caps["per_event"])
        for _ in range(args.repeats):
            r, check = run(run_engine(plan, caps["engine"]))
            engine.runs.append(r)
            checks.append(check)
            floor.runs.append(run_floor(plan, caps["floor"]))
            r, ok = run_per_event(workload, per_event_sends, caps["per_event"])
            per_event.runs.append(r)
            per_event_ok.append(ok)
    wall = time.perf_counter() - wall

    vs_per_event = engine.median / per_event.median
    vs_floor = engine.median / floor.median
    worst_vs_per_event = engine.low / per_event.high
    sane = all(ch.ok for ch in checks) and all(per_event_ok)
    meets_rate, meets_ratio = engine.median >= TARGET_RATE, vs_per_event >= TARGET_RATIO
    report = {
        "benchmark": "sim_throughput",
        "environment": environment(cpu, event_loop=loop_name),
        "config": {
            "quick": args.quick,
            "repeats": args.repeats,
            "rate": args.rate,
            "virtual_tick": TICK,
            "engine_duration_s": plan.duration,
            "engine_sends_requested": engine_sends,
            "per_event_sends_requested": per_event_sends,
            "budget_s": budget,
            "caps_s": caps,
            "seed": args.seed,
        },
        "figures": {f.key: f.to_dict() for f in (engine, per_event, floor)},
        "ratios": {
            "engine_over_per_event": vs_per_event,
            "engine_over_per_event_worst": worst_vs_per_event,
            "engine_over_floor": vs_floor,
        },
        "targets": {
            "engine_sends_per_s": TARGET_RATE,
            "engine_over_per_event": TARGET_RATIO,
            "met_rate": meets_rate,
            "met_ratio": meets_ratio,
        },
        "sanity": {"engine_runs": [ch.to_dict() for ch in checks], "per_event_runs_ok": per_event_ok, "ok": sane},
        "wall_seconds": round(wall, 2),
    }
    print_table(report, engine=engine, per_event=per_event, floor=floor, checks=checks, sane=sane)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {args.json}")
    cancel_watchdog()
    if not sane:
        return 1
    return 2 if args.check and not (meets_rate and meets_ratio) else 0


def _m(rate: float) -> str:
    return f"{rate / 1e6:.3f} M/s" if rate >= 1e5 else f"{rate / 1e3:.1f} k/s"


def print_table(
    report: dict[str, Any], *, engine: Figure, per_event: Figure, floor: Figure, checks: list[EngineCheck], sane: bool
) -> None:
    """The human summary; the JSON report has everything."""
    env, ratios, targets = report["environment"], report["ratios"], report["targets"]
    print(
        f"loadsim sim throughput | cpu {env['cpu']} ({env['cpu_model']}) | python {env['python']} | "
        f"numpy {env['numpy']} | prometheus-client {env['prometheus_client']} | {env['event_loop']}"
    )
    print(f"median of {len(engine.runs)} runs each, interleaved; wall {report['wall_seconds']} s")
    print()
    print(f"{'figure':<38} {'sends/run':>12} {'sends/s (median)':>17}   {'min .. max':<24}")
    for f in (engine, per_event, floor):
        sends = statistics.median(r.sends for r in f.runs)
        capped = " (capped)" if any(r.capped for r in f.runs) else ""
        print(f"{f.label:<38} {sends:>12,.0f} {_m(f.median):>17}   {_m(f.low)} .. {_m(f.high)}{capped}")
    print()
    met = {True: "met", False: "NOT met"}
    print(
        f"engine / per-event loop   {ratios['engine_over_per_event']:7.2f}x   "
        f"(worst pairing {ratios['engine_over_per_event_worst']:.2f}x; target >= {TARGET_RATIO:g}x: "
        f"{met[targets['met_ratio']]})"
    )
    print(
        f"engine / floor            {ratios['engine_over_floor']:7.2f}    "
        f"(the engine runs at {ratios['engine_over_floor']:.0%} of the numpy floor's speed)"
    )
    rate_met = met[targets["met_rate"]]
    print(f"engine absolute           {_m(engine.median):>8}   (target >= {_m(TARGET_RATE)}: {rate_met})")
    last = checks[-1]
    print(
        f"sanity: exported action_exec_total + early-guard errors + abandoned == sends started, every run: "
        f"{'ok' if sane else 'FAILED'} (last engine run: {last.exported_executions:,.0f} + "
        f"{last.exported_guard_errors:,.0f} + {last.abandoned} vs {last.started:,}; scrape "
        f"{last.scrape_seconds * 1e3:.1f} ms, {last.scrape_bytes:,} bytes)"
    )


if __name__ == "__main__":
    sys.exit(main())
