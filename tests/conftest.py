"""Shared helpers: run a plan on the virtual clock, read the exposition back the way Prometheus would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from loadsim.drivers.sim import SimDriver
from loadsim.engine.loop import Engine, RunCounts, RunResult, WindowObserver
from loadsim.plan import RunPlan, build_plan
from loadsim.profile import parse_profile
from loadsim.runtime.factory import build
from loadsim.sinks.relay_metrics import RelayMetrics
from loadsim.sinks.summary import RunSummary

# Property-based tests: reproducible by default (the same examples on every run, no example
# database left behind); HYPOTHESIS_PROFILE=dev explores new ones. Example counts are set per
# test, modest, so each property runs in a few seconds.
settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

TRACEBACK = "Traceback (most recent call last)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A test marked ``bad_input`` fails when a traceback shows in anything it captured.

    Bad input must give one line and exit 2 (README), never a traceback: this holds the whole of
    each such test's captured stdout, stderr and log to it, not only what the test asserts on.
    """
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if call.when != "call" or not report.passed or item.get_closest_marker("bad_input") is None:
        return
    for name, text in report.sections:
        if TRACEBACK in text:
            report.outcome = "failed"
            report.longrepr = f"a traceback in the captured output ({name}) of a bad-input test:\n{text[-3000:]}"
            return


SampleKey = tuple[str, frozenset[tuple[str, str]]]
Samples = dict[SampleKey, float]


def make_plan(**profile: Any) -> RunPlan:
    """A virtual-clock plan from profile keys, validated exactly as a profile file would be."""
    return build_plan(parse_profile(profile, "test"), virtual=True)


@dataclass
class Run:
    """What a virtual run left behind."""

    engine: Engine
    registry: CollectorRegistry
    result: RunResult
    scrapes: dict[float, Samples] = field(default_factory=dict)
    """Scrapes taken at the end of the windows whose end time was asked for."""

    @property
    def summary(self) -> RunSummary:
        """The simulated sends' outcomes."""
        assert isinstance(self.engine.driver, SimDriver)
        return self.engine.driver.summary

    @property
    def counts(self) -> RunCounts:
        """The run's counts (scheduled, started, dropped, completed, abandoned)."""
        return self.engine.counts

    @property
    def relay(self) -> RelayMetrics:
        """The relay's families."""
        assert isinstance(self.engine.driver, SimDriver)
        return self.engine.driver.relay


def run_plan(
    plan: RunPlan,
    *,
    observers: Sequence[WindowObserver] = (),
    scrape_at: Iterable[float] = (),
    on_window: Callable[[Engine, float], None] | None = None,
) -> Run:
    """Run ``plan`` to its end on the virtual clock (seeded by ``plan.seed``), scraping at ``scrape_at``."""
    wanted = set(scrape_at)
    scrapes: dict[float, Samples] = {}

    def window(t1: float, _state: object) -> None:
        if t1 in wanted and t1 not in scrapes:
            scrapes[t1] = scrape(registry)
        if on_window is not None:
            on_window(engine, t1)

    run = build(plan, observers=observers, after_window=[window])
    engine, registry = run.engine, run.registry
    if 0.0 in wanted:
        scrapes[0.0] = scrape(registry)
    result = asyncio.run(engine.run())
    return Run(engine=engine, registry=registry, result=result, scrapes=scrapes)


def scrape(registry: CollectorRegistry) -> Samples:
    """The registry's exposition text parsed back: ``{(sample name, labels): value}``."""
    text = generate_latest(registry).decode("utf-8")
    return {
        (s.name, frozenset(s.labels.items())): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **match: str) -> float:
    """``sum(name{match})``: every series of ``name`` whose labels include ``match``."""
    want = set(match.items())
    return sum(v for (n, labels), v in samples.items() if n == name and want <= labels)


def rate(before: Samples, after: Samples, seconds: float, name: str, **match: str) -> float:
    """``sum(rate(name{match}[seconds]))`` from two scrapes ``seconds`` apart (counters never reset here)."""
    return (total(after, name, **match) - total(before, name, **match)) / seconds


def buckets(samples: Samples, histogram: str, **match: str) -> list[tuple[float, float]]:
    """``sum by (le) (histogram_bucket{match})`` as ``[(le, cumulative count)]``, sorted by ``le``."""
    by_le: dict[float, float] = {}
    want = set(match.items())
    for (n, labels), v in samples.items():
        if n == f"{histogram}_bucket" and want <= labels:
            le = float(dict(labels)["le"])
            by_le[le] = by_le.get(le, 0.0) + v
    return sorted(by_le.items())


def bucket_delta(before: Samples, after: Samples, histogram: str, **match: str) -> list[tuple[float, float]]:
    """The increase of every bucket between two scrapes (what ``rate(...[5m])`` feeds to histogram_quantile)."""
    b0, b1 = dict(buckets(before, histogram, **match)), buckets(after, histogram, **match)
    return [(le, v - b0.get(le, 0.0)) for le, v in b1]


def histogram_quantile(q: float, cumulative: Sequence[tuple[float, float]]) -> float:  # noqa: C901, PLR0911, PLR0912 - mirrors quantile.go branch for branch
    """Prometheus's ``histogram_quantile`` (promql/quantile.go ``bucketQuantile``) over ``[(le, cumulative)]``.

    Linear interpolation inside the bucket the rank falls in, 0 as the lower bound of the
    first bucket, and the highest finite bound when the rank falls in ``+Inf``.
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    bs = sorted(cumulative)
    if not bs or not math.isinf(bs[-1][0]):
        return math.nan
    # Coalesce equal bounds, then force monotonic counts as Prometheus does.
    merged: list[list[float]] = []
    for le, n in bs:
        if merged and merged[-1][0] == le:
            merged[-1][1] += n
        else:
            merged.append([le, n])
    for i in range(1, len(merged)):
        merged[i][1] = max(merged[i][1], merged[i - 1][1])
    if len(merged) < 2:
        return math.nan
    observations = merged[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = next((i for i in range(len(merged) - 1) if merged[i][1] >= rank), len(merged) - 1)
    if b == len(merged) - 1:
        return merged[-2][0]
    if b == 0 and merged[0][0] <= 0:
        return merged[0][0]
    start, end, count = 0.0, merged[b][0], merged[b][1]
    if b > 0:
        start = merged[b - 1][0]
        count -= merged[b - 1][1]
        rank -= merged[b - 1][1]
    return start + (end - start) * (rank / count)


# -- real loadsim processes ------------------------------------------------------------------
# Tests of the process itself (signals, restarts, listeners) start `python -m loadsim` as a
# child and read its JSON log lines; every wait is bounded.


class Child:
    """A loadsim child process and the JSON events it has logged so far."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self.stderr = ""

    def wait_for_event(self, event: str, timeout: float = 20.0) -> dict[str, Any]:
        """Read stdout until ``event`` is logged (returned), or fail."""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            self.events.append(record)
            if record.get("event") == event:
                return record
        raise AssertionError(f"no {event} event; got {[e.get('event') for e in self.events]}")

    def finish(self, timeout: float = 30.0) -> int:
        """Wait for exit, collecting the remaining events; returns the exit code."""
        out, self.stderr = self.proc.communicate(timeout=timeout)
        for line in out.splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                self.events.append(json.loads(line))
        return self.proc.returncode


@contextlib.contextmanager
def loadsim_process(*args: str) -> Iterator[Child]:
    """``python -m loadsim ARGS`` with pipes; killed on the way out if still running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadsim", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    with proc:
        try:
            yield Child(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)


def http_get(url: str, timeout: float = 5.0) -> str:
    """GET a loopback URL's body."""
    with urllib.request.urlopen(url, timeout=timeout) as r:
        body: bytes = r.read()
    return body.decode()


def sample_value(text: str, name: str, **labels: str) -> float | None:
    """The first sample called ``name`` with ``labels`` in an exposition text (None if absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def require_binary(name: str) -> str:
    """A binary's path; fail when missing on CI (setup-stack.sh installs it), skip elsewhere."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; scripts/setup-stack.sh should have installed it")
        pytest.skip(f"{name} is not installed (run scripts/setup-stack.sh)")
    return path


def require_stack() -> None:
    """The Prometheus stack's binaries (``loadsim.testing.Binaries``); fail when missing on CI, skip elsewhere."""
    from loadsim.testing import Binaries, BinaryNotFoundError

    try:
        Binaries.find()
    except BinaryNotFoundError as e:
        if os.environ.get("CI"):
            pytest.fail(f"{e} (CI must run scripts/setup-stack.sh)")
        pytest.skip(str(e))
