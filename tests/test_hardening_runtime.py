"""Hardening, the runtime's classes of defect (issue 15): one test class per class.

* overload never freezes the process: the loop yields, memory is bounded, the excess is dropped and counted;
* values that validated but crashed hours later are refused before the run, one line each;
* outputs are probed before the run, not found unwritable at its end;
* the smaller things: SIGHUP, an early SIGTERM, an empty push job, a dead Prometheus for the
  drill, garbage HTTP requests, deeply nested JSON, IPv6 listen URLs, a 1 ms timeout, the
  HTTP summary's ``scheduled``.

Every process started here is bounded in time; overload tests start a real ``loadsim`` child,
signal it once it is up and require it to exit within seconds, with its summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog
from conftest import loadsim_process, make_plan
from prometheus_client import CollectorRegistry

from loadsim.cli import main
from loadsim.clock import ManualClock, VirtualClock
from loadsim.drivers import wire
from loadsim.engine.driver import NO_COUNTS, Counts, Part, Window
from loadsim.engine.loop import MAX_BATCH, Engine, RunResult
from loadsim.engine.seeds import RunRandom
from loadsim.errors import EXIT_ERROR
from loadsim.logs import configure
from loadsim.outputs import directory_problem, file_problem, write_atomically
from loadsim.runtime.execute import RunOptions, execute
from loadsim.runtime.factory import build
from loadsim.runtime.signals import StopSignals
from loadsim.sinks.health import HealthMetrics

pytestmark = pytest.mark.bad_input

TRACEBACK = "Traceback (most recent call last)"


@pytest.fixture(autouse=True)
def _logs_to_this_tests_stdout() -> None:
    """A CLI run configures logging onto the stdout of its test (closed with it): start each test afresh."""
    configure("info")


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert TRACEBACK not in out + err
    return code, [line for line in err.splitlines() if line], out


def write(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set so far (``VmHWM``), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


class Counting:
    """A driver that only counts what it is handed (the engine's side of overload, without sampling)."""

    noun = "sends"
    max_batch = 1 << 20

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def handover(self, t0: float, t1: float) -> float:  # noqa: ARG002
        return t1

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def window(self, window: Window) -> Counts:
        self.sizes.append(len(window.starts))
        return Counts(started=len(window.starts), completed=len(window.starts))

    def settle(self, t: float) -> Counts:  # noqa: ARG002
        return NO_COUNTS

    def in_flight(self) -> int:
        return 0

    def next_due(self) -> float:
        return float("inf")

    def request_stop(self) -> None:
        return None

    async def abandon(self) -> int:
        return 0

    def skip_to(self, t: float) -> None:  # noqa: ARG002
        return None

    def errors(self) -> int:
        return 0

    def latency_quantile(self, q: float) -> float:  # noqa: ARG002
        return float("nan")

    def gate_percent(self) -> int | None:
        return None

    def report(self) -> dict[str, Any]:
        return {}

    def snapshot(self) -> Part:
        return {}, {}

    def restore(self, part: Part) -> None:  # noqa: ARG002
        return None


class SlowMachine(ManualClock):
    """A wall-like clock (not virtual: the engine may fall behind it) that a test moves by hand."""

    virtual = False

    def work(self, seconds: float) -> None:
        """Time passing while the process computes (no timer fires inside a computation)."""
        self._now += seconds


class Records:
    """A structlog logger factory keeping every event."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, _logger: object, method: str, event: dict[str, Any]) -> dict[str, Any]:
        self.events.append({**event, "level": method})
        raise structlog.DropEvent


class TestOverloadKeepsTheLoopResponsive:
    def test_an_overloaded_run_answers_healthz_and_stops_on_sigterm_with_a_summary(self) -> None:
        """3e7/s on one core: windows too late are dropped and counted, /healthz answers, SIGTERM ends it."""
        args = ("run", "--rate", "3e7/s", "--duration", "10m", "--listen", "127.0.0.1:0", "--progress", "off")
        with loadsim_process(*args, "--grace", "1s") as child:
            url = child.wait_for_event("metrics.listening")["url"].removesuffix("/metrics")
            behind = child.wait_for_event("engine.behind", timeout=30)
            assert behind["level"] == "warning"
            for path in ("/healthz", "/metrics"):
                start = time.monotonic()
                with urllib.request.urlopen(url + path, timeout=10) as r:
                    assert r.status == 200
                # One piece of sampling is about 0.1 s of work; 2 s leaves room for a loaded CI machine.
                assert time.monotonic() - start < 2.0, path
            child.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            assert child.finish(timeout=20) == 0
            assert time.monotonic() - signalled < 5.0
        summary = next(e for e in child.events if e.get("event") == "run.summary")
        sends = summary["sends"]
        assert summary["stopped_early"] is True
        assert sends["dropped_behind"] > 0
        assert sends["started"] > 0
        assert sends["scheduled"] == sends["started"] + sends["dropped"] + sends["dropped_behind"]
        assert [e["event"] for e in child.events].count("engine.behind") == 1  # once a minute at most
        assert TRACEBACK not in child.stderr

    def test_a_virtual_run_at_the_highest_rate_stays_in_bounded_memory_and_stops_on_sigterm(self) -> None:
        """1e8/s on the virtual clock: 5e8 arrivals a window, handed over 2^20 at a time; RSS stays bounded."""
        with loadsim_process("run", "--virtual", "--rate", "1e8/s", "--duration", "1h", "--no-listen") as child:
            child.wait_for_event("run.start")
            time.sleep(1.0)
            # Before the fix a window's 5e8 start times alone were 4 GB. The in-flight cap (10M sends,
            # 17 bytes each) plus one piece being sampled is about 0.5 GB.
            assert peak_rss_mb(child.proc.pid) < 1200
            child.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            assert child.finish(timeout=30) == 0
            assert time.monotonic() - signalled < 10.0
        summary = next(e for e in child.events if e.get("event") == "run.summary")
        assert summary["sends"]["started"] > MAX_BATCH

    def test_a_ten_second_tick_does_not_delay_sigterm(self, tmp_path: Path) -> None:
        profile = write(tmp_path, '[engine]\ntick = "10s"\n')
        with loadsim_process("run", str(profile), "--no-listen", "--grace", "0s", "--duration", "1h") as child:
            child.wait_for_event("run.start")
            time.sleep(0.5)
            child.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            assert child.finish(timeout=20) == 0
            assert time.monotonic() - signalled < 3.0
        summary = next(e for e in child.events if e.get("event") == "run.summary")
        assert summary["run_seconds"] < 5.0  # the window was cut where the signal came, not run to its end

    def test_rates_ticks_and_in_flight_caps_beyond_the_limits_are_refused_up_front(self, tmp_path, capsys) -> None:
        code, err, _ = run_main(capsys, "run", "--rate", "1e9/s", "--virtual", "--duration", "1s")
        assert (code, len(err)) == (2, 1)
        assert err[0].startswith("loadsim: --rate: must be at most 1e+08/s")
        for body, key in (
            ('[engine]\ntick = "30s"\n', "engine.tick: must be <= 10, got '30s'"),
            ('[engine]\ntick = "0.5ms"\n', "engine.tick: must be >= 0.001, got '0.5ms'"),
            ('[engine]\nvirtual_tick = "2h"\n', "engine.virtual_tick: must be <= 3600, got '2h'"),
            ("[engine]\nmax_in_flight = 1_000_000_000\n", "engine.max_in_flight: must be <= 1e+08, got 1000000000"),
        ):
            p = write(tmp_path, body)
            code, err, _ = run_main(capsys, "check", str(p))
            assert (code, len(err)) == (2, 1), body
            assert err[0].startswith(f"loadsim: {p}: {key}"), err

    def test_a_window_is_handed_over_in_bounded_pieces_with_the_loop_served_between(self) -> None:
        """1e7 arrivals in one window: pieces of at most 2^20, and another task runs between two."""
        plan = make_plan(
            duration="0.1s", schedule=[{"kind": "constant", "rate": "1e8/s"}], engine={"virtual_tick": "0.1s"}
        )
        driver = Counting()
        health = HealthMetrics(CollectorRegistry())
        engine = Engine(plan, VirtualClock(plan.epoch), RunRandom.from_seed(1), driver, health)
        ticks = 0

        async def main_() -> None:
            nonlocal ticks
            run = asyncio.create_task(engine.run())
            while not run.done():
                ticks += 1
                await asyncio.sleep(0)
            await run

        asyncio.run(main_())
        # Poisson counts: a piece expects 1e7/10 = 1e6 arrivals, sd 1e3; 1.01 x 2^20 is 40 sd above.
        assert len(driver.sizes) == 10
        assert max(driver.sizes) < 1.01 * MAX_BATCH
        assert abs(sum(driver.sizes) - 1e7) < 5 * np.sqrt(1e7)
        assert ticks >= len(driver.sizes) - 1

    def test_the_http_driver_holds_at_most_its_waiting_bound_of_handed_over_arrivals(self) -> None:
        """A window of 250,000 requests handed over at once: 100,000 wait for their time, the rest are counted."""
        from loadsim.drivers.http import MAX_WAITING, HttpDriver, HttpOptions

        plan = dataclasses.replace(make_plan(duration="1m"), virtual=False)
        clock = ManualClock()
        run = build(plan, http=HttpOptions(target="http://127.0.0.1:9", max_in_flight=10_000), clock=clock)
        driver = run.driver
        assert isinstance(driver, HttpDriver)
        assert driver.max_batch <= 1 << 13  # the engine hands over 8,192 at a time; this checks the driver alone
        starts = np.linspace(10.0, 11.0, 250_000, endpoint=False)  # all due later: none can start yet

        async def hand_over() -> Counts:
            return driver.window(Window(9.9, 11.0, starts, run.engine.state, []))

        counts = asyncio.run(hand_over())
        assert (counts.started, counts.dropped) == (0, 250_000 - MAX_WAITING)
        assert driver.in_flight() == MAX_WAITING

    def test_a_machine_that_cannot_keep_up_drops_late_windows_counts_them_and_stays_on_time(self) -> None:
        """Each send costs 30 us of machine time at 1e5/s (3x too much): late windows are counted, not queued."""
        plan = make_plan(
            duration="20s",
            arrivals="even",
            schedule=[{"kind": "constant", "rate": "1e5/s"}],
            engine={"tick": "100ms", "grace": "1s"},
        )
        plan = dataclasses.replace(plan, virtual=False)
        clock = SlowMachine()
        records = Records()
        log = structlog.wrap_logger(None, processors=[records])
        run = build(plan, clock=clock, log=log)
        inner = run.driver

        class Slow:
            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

            def window(self, window: Window) -> Counts:
                clock.work(30e-6 * len(window.starts))
                return inner.window(window)

        engine = run.engine
        engine.driver = Slow()  # type: ignore[assignment]

        async def main_() -> RunResult:
            task = asyncio.create_task(engine.run())
            while not task.done():
                await clock.advance(0.05)
            return await task

        result = asyncio.run(main_())
        c = engine.counts
        assert (result.run_seconds, result.stopped_early) == (plan.duration, False)
        assert clock.now() < plan.duration + 3.0  # on time: never more than the lag (1 s) plus the grace behind
        # Capacity is 1 / 30 us = 33,333 sends/s; the engine samples while within 1 s of the clock, so it
        # starts about capacity x run time. 25% either way covers the windows at each catch-up's edges.
        assert 0.75 * 33_333 * 20 < c.started < 1.25 * 33_333 * 20
        assert c.scheduled == c.started + c.dropped + c.behind
        assert abs(c.scheduled - 2_000_000) <= 1  # even arrivals: the float sum of 200 windows may cross one more
        assert c.behind > 1_000_000
        warnings = [e for e in records.events if e["event"] == "engine.behind"]
        assert len(warnings) == 1  # once a minute of run time at most
        assert warnings[0]["level"] == "warning"


PROFILE_PROBLEMS = [
    # overlay options that were never checked
    (
        '[[overlay]]\nscenario = "validation-spike"\nstart = "1m"\nduration = "5m"\noptions = { share = 5 }\n',
        "overlay[0].options: share: expected a number >= 0 and <= 1, got 5.0",
    ),
    (
        '[[overlay]]\nscenario = "latency-crit"\nstart = "1m"\nduration = "5m"\noptions = { p50 = 0 }\n',
        "overlay[0].options: p50: expected a number > 0 and <= 86400, got 0.0",
    ),
    (
        '[[overlay]]\nscenario = "controller-stalled"\nstart = "1m"\nduration = "5m"\noptions = { mode = "dead" }\n',
        "overlay[0].options: mode: expected one of 'absent', 'frozen', got 'dead'",
    ),
    (
        '[[overlay]]\nscenario = "rate-limit-storm"\nstart = "1m"\nduration = "5m"\noptions = { share = "lots" }\n',
        "overlay[0].options: share: expected a number >= 0 and <= 1, got 'lots'",
    ),
    # two overlapping scenarios whose shares add up to more than 1
    (
        (
            '[[overlay]]\nscenario = "validation-spike"\nstart = "10m"\nduration = "20m"\noptions = { share = 0.7 }\n'
            '[[overlay]]\nscenario = "rate-limit-storm"\nstart = "20m"\nduration = "20m"\noptions = { share = 0.5 }\n'
        ),
        "overlay: validation-spike and rate-limit-storm acting together at 20m00s: error probabilities add up to",
    ),
    # a magnitude that extrapolates a share past 1
    (
        '[[overlay]]\nscenario = "oauth-refresh-failures"\nstart = "1m"\nduration = "5m"\nmagnitude = 3\n',
        "overlay: oauth-refresh-failures acting at 1m00s: model.oauth.failure: must be <= 1, got 1.496",
    ),
    # a controller interval of (nearly) nothing
    ("[controller]\ninterval = 0\n", "controller.interval: must be > 0, got 0"),
    (
        "[controller]\ninterval = 10\ntime_scale = 100\n",
        "controller: interval / time_scale must be at least 1s",
    ),
    # zero weights, duplicate ids
    (
        '[metrics]\nworkspace_ids = ["a", "b"]\nworkspace_weights = [0, 0]\n',
        "metrics: workspace_weights must not all be 0",
    ),
    ('[metrics]\nworkspace_ids = ["a", "b", "a"]\n', "metrics.workspace_ids: each workspace id must appear once"),
    # extreme numbers
    ("duration = 1e308\n", "duration: must be at most 366d, got 1e+308"),
    ('[[schedule]]\nkind = "constant"\nrate = 1e308\n', "schedule[0].rate: must be at most 1e+08/s"),
    ("[model.attachments]\nextra_mean = inf\n", "model.attachments.extra_mean: input should be a finite number"),
    ("[model.inline]\nmatched = nan\n", "model.inline.matched: input should be a finite number"),
    ("[model.sanitization]\ntag_removed = 1e300\n", "model.sanitization.tag_removed: must be <= 1e+09, got 1e+300"),
    ('[model.latency]\np50 = "1ms"\np95 = 1e-300\n', "model.latency.p95: must be 0 or at least 0.000001"),
    (
        '[[schedule]]\nkind = "diurnal"\ntrough = "1/s"\npeak = "9e7/s"\nweekend_factor = 50\n',
        "schedule[0]: weekend_factor 50 makes the weekend peak",
    ),
    ("[population]\nworkspaces = 10000\nactors = 10000\n", "population: workspaces x actors must be at most"),
    # TOML dates and times where a duration belongs
    ("duration = 2026-01-01\n", "duration: expected a duration such as 30s, 15m, 48h, 1h30m or 250ms, got a TOML date"),
    ('[[schedule]]\nkind = "constant"\nrate = 12:00:00\n', "schedule[0].rate: expected a rate such as 1/s"),
    (
        '[[overlay]]\nscenario = "latency-crit"\nstart = 2026-01-05\nduration = "5m"\n',
        "overlay[0].start: expected an offset such as 10m or an ISO time such as 2026-11-27T14:00:00Z, got a TOML date",
    ),
    ("[engine]\ngrace = 1979-05-27T07:32:00\n", "engine.grace: expected a duration such as"),
]


class TestValuesThatValidatedButCrashedMidRun:
    @pytest.mark.parametrize(("body", "expected"), PROFILE_PROBLEMS, ids=[e for _, e in PROFILE_PROBLEMS])
    def test_refused_before_the_run_with_file_key_and_expectation(self, tmp_path, capsys, body, expected) -> None:
        p = write(tmp_path, 'duration = "1h"\n' + body if not body.startswith("duration") else body)
        code, err, out = run_main(capsys, "run", str(p), "--virtual", "--no-listen", "--progress", "off")
        assert code == 2
        assert len(err) == 1, err
        assert err[0].startswith(f"loadsim: {p}: {expected}"), err[0]
        assert "run.start" not in out

    def test_overlays_at_their_limits_that_pass_the_check_run_their_whole_timeline(self, tmp_path, capsys) -> None:
        """What the plan check lets through runs: every overlay at its boundaries, overlapping, on a virtual run."""
        p = write(
            tmp_path,
            'duration = "40m"\n'
            '[[overlay]]\nscenario = "validation-spike"\nstart = "1m"\nduration = "30m"\nramp = "5m"\n'
            "options = { share = 0.6 }\n"
            '[[overlay]]\nscenario = "rate-limit-storm"\nstart = "5m"\nduration = "20m"\noptions = { share = 0.35 }\n'
            '[[overlay]]\nscenario = "error-rate-crit"\nstart = "10m"\nduration = "10m"\noptions = { ratio = 1 }\n'
            '[[overlay]]\nscenario = "latency-crit"\nstart = "0s"\nduration = "40m"\nmagnitude = 2\n'
            '[[overlay]]\nscenario = "controller-failing"\nstart = "2m"\nduration = "10m"\n'
            '[[overlay]]\nscenario = "mime-slow"\nstart = "3m"\nduration = "10m"\n'
            "options = { extra_attachments = 9, size_p50_bytes = 1, size_p95_bytes = 25e6 }\n"
            '[[overlay]]\nscenario = "sanitization-spike"\nstart = "4m"\nduration = "10m"\n'
            "options = { per_second = 1e6 }\n"
            '[[overlay]]\nscenario = "traffic-drop"\nstart = "30m"\nduration = "5m"\noptions = { rate = 0 }\n',
        )
        summary = tmp_path / "s.json"
        argv = ("run", str(p), "--virtual", "--no-listen", "--progress", "off", "--summary-json", str(summary))
        code, err, _ = run_main(capsys, *argv, "--rate", "50/s")
        assert (code, err) == (0, [])
        assert json.loads(summary.read_text())["sends"]["finished"] > 0


JSON = ("--json", "/proc/x")


class TestOutputsProbedBeforeTheRun:
    @pytest.mark.parametrize(
        ("argv", "option"),
        [
            (["run", "--virtual", "--summary-json", "/proc/x"], "--summary-json"),
            (["run", "--virtual", "--summary-json", "/proc/no/such/dir/s.json"], "--summary-json"),
            (["scenario", "latency-crit", "--virtual", "--summary-json", "/proc/x"], "--summary-json"),
            (["drill", "--prometheus", "http://127.0.0.1:1", "--alertmanager", "http://127.0.0.1:1", *JSON], "--json"),
            (["rollout", "--json", "/proc/x"], "--json"),
            (["backfill", "--out", "/proc/x"], "--out"),
            (["report", "--run", "--out", "/proc/x/report"], "--out"),
            (["verify", "--export", "/proc/x/dir"], "--export"),
            (["scale-rules", "30", "/proc/x/rules"], "out"),
        ],
        ids=lambda v: " ".join(v) if isinstance(v, list) else v,
    )
    def test_an_unwritable_output_is_refused_before_anything_runs(self, capsys, argv, option) -> None:
        started = time.monotonic()
        code, err, out = run_main(capsys, *argv)
        assert code == 2
        assert any(line.startswith(f"loadsim: {option}: ") for line in err), err
        assert "run.start" not in out
        assert time.monotonic() - started < 10.0

    def test_an_unwritable_decision_log_is_refused_before_the_run(self, tmp_path, capsys) -> None:
        p = write(tmp_path, '[controller]\nmode = "policy"\n')
        code, err, _ = run_main(capsys, "run", str(p), "--virtual", "--decision-log", "/proc/x")
        assert code == 2
        assert err == ["loadsim: --decision-log: cannot write in /proc (No such file or directory)"]

    def test_the_probe_tries_what_the_write_does(self, tmp_path) -> None:
        assert file_problem(tmp_path / "s.json") is None
        assert not list(tmp_path.iterdir()), "the probe leaves nothing behind"
        assert file_problem(tmp_path) == f"{tmp_path} is a directory; expected a file path"
        missing = tmp_path / "no"
        assert file_problem(missing / "s.json") == f"{missing} does not exist; expected a file in an existing directory"
        assert file_problem(Path("/proc/s.json")) is not None
        assert file_problem(Path("/dev/null")) is None
        assert directory_problem(tmp_path / "new" / "deeper") is None
        assert not (tmp_path / "new").exists(), "the probe creates nothing"
        (tmp_path / "f").write_text("x")
        expected = f"{tmp_path / 'f'} is not a directory; expected a directory for the output files"
        assert directory_problem(tmp_path / "f" / "sub") == expected
        assert directory_problem(Path("/proc/x")) is not None

    def test_a_pipe_is_probed_without_opening_it_and_written_in_place(self, tmp_path) -> None:
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        assert file_problem(fifo) is None  # opening it would hand a waiting reader an end of file
        got: list[str] = []
        reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
        reader.start()
        write_atomically(fifo, "summary\n")
        reader.join(5)
        assert got == ["summary\n"]
        assert stat.S_ISFIFO(fifo.stat().st_mode), "still a pipe: nothing was renamed over it"

    def test_an_output_that_fails_after_the_run_is_one_line_and_exit_4(self, capsys) -> None:
        """/dev/full opens (the probe passes) and refuses the bytes: the run happened, its file did not."""
        code, err, out = run_main(capsys, "run", "--virtual", "--duration", "10s", "--summary-json", "/dev/full")
        assert code == EXIT_ERROR  # loadsim could not finish (the exit code table), not bad input
        assert err == ["loadsim: /dev/full: cannot write it after the work was done (No space left on device)"]
        assert '"event": "run.summary"' in out  # the figures are in the log all the same

    def test_a_backfill_into_a_pipe_writes_through_it_never_renames_over_it(self, tmp_path, capsys) -> None:
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        got: list[str] = []
        reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
        reader.start()
        code, err, _ = run_main(capsys, "backfill", "--duration", "10m", "--out", str(fifo))
        reader.join(10)
        assert (code, err) == (0, [])
        assert got[0].endswith("# EOF\n")
        assert stat.S_ISFIFO(fifo.stat().st_mode)


class TestSmallerThings:
    def test_sighup_stops_the_run_like_sigterm(self) -> None:
        with loadsim_process("run", "--no-listen", "--grace", "0s", "--duration", "1h") as child:
            child.wait_for_event("run.start")
            child.proc.send_signal(signal.SIGHUP)
            assert child.finish(timeout=20) == 0
        stopping = next(e for e in child.events if e.get("event") == "run.stopping")
        assert stopping["signal"] == "SIGHUP"
        assert any(e.get("event") == "run.summary" for e in child.events)

    def test_a_sigterm_before_the_run_starts_is_logged_and_ends_it_with_a_summary(self, tmp_path) -> None:
        """The signal lands before loadsim.cli is even imported, as in the first second of a real start."""
        summary = tmp_path / "s.json"
        code = (
            "import os, signal, sys\n"
            "from loadsim.runtime.signals import StopSignals\n"
            "s = StopSignals(); s.catch_early()\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "from loadsim.cli import main\n"
            f"argv = ['run', '--no-listen', '--duration', '1h', '--summary-json', {str(summary)!r}]\n"
            "sys.exit(main(argv, signals=s))\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode == 0, proc.stderr
        events = [json.loads(line) for line in proc.stdout.splitlines()]
        names = [e["event"] for e in events]
        assert names.index("run.stopping") < names.index("run.summary")
        assert next(e for e in events if e["event"] == "run.stopping")["signal"] == "SIGTERM"
        assert json.loads(summary.read_text())["stopped_early"] is True

    def test_an_early_stop_handed_to_execute_stops_the_run_before_its_first_window(self) -> None:
        signals = StopSignals()
        signals.catch_early()
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            assert signals.early == signal.SIGTERM
        finally:
            signals.restore()
        plan = dataclasses.replace(make_plan(duration="1h"), virtual=False)
        out = asyncio.run(execute(plan, RunOptions(listen=None, progress="off", signals=signals)))
        assert out["stopped_early"] is True
        assert out["run_seconds"] < 1.0

    def test_empty_push_job_and_instance_are_refused_before_the_run(self, capsys) -> None:
        code, err, _ = run_main(
            capsys, "run", "--pushgateway", "http://127.0.0.1:9091", "--push-job", "", "--push-instance", ""
        )
        assert code == 2
        assert err == [
            "loadsim: --push-job: expected a non-empty printable label value, got ''",
            "loadsim: --push-instance: expected a non-empty printable label value, got ''",
        ]

    def test_the_drill_fails_fast_when_prometheus_and_alertmanager_do_not_answer(self, capsys) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # closed again: nothing listens there
        url = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        code, err, out = run_main(capsys, "drill", "--prometheus", url, "--alertmanager", url)
        assert code == 2
        assert [line.split(":", 2)[1].strip() for line in err] == ["--prometheus", "--alertmanager"]
        assert all("expected a running" in line for line in err)
        assert "run.start" not in out
        assert time.monotonic() - started < 10.0

    @pytest.mark.parametrize("server", ["metrics", "fake-gmail"])
    def test_garbage_http_requests_get_400_and_one_log_line_never_a_traceback(self, server, capsys, caplog) -> None:
        from loadsim.fakegmail import serve
        from loadsim.net import ListenAddress
        from loadsim.sinks.metrics_server import MetricsServer

        stream = io.StringIO()
        before = structlog.get_config()
        configure("info", stream=stream)
        garbage = [
            b"GARBAGE \x00\x01 nonsense\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
            b"GET / HTTP/9.9\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
            b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
        ]

        async def scenario() -> list[bytes]:
            stop: Any
            if server == "metrics":
                from prometheus_client import CollectorRegistry

                metrics = MetricsServer(CollectorRegistry(), ready=lambda: True)
                await metrics.start(ListenAddress("127.0.0.1", 0))
                port, stop = metrics.port, metrics.stop
            else:
                fake = await serve(ListenAddress("127.0.0.1", 0))
                port, stop = fake.port, fake.stop
            answers = []
            try:
                for payload in garbage:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.write(payload)
                    await writer.drain()
                    answers.append(await asyncio.wait_for(reader.read(64), 5))
                    writer.close()
            finally:
                await stop()
            return answers

        try:
            answers = asyncio.run(scenario())
        finally:
            structlog.configure(**before)
        assert all(a.startswith(b"HTTP/1.") and b" 400 " in a for a in answers), answers
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert sum(e["event"] == "http.bad_request" for e in lines) >= len(garbage) - 1  # a TLS hello: debug
        out, err = capsys.readouterr()
        assert TRACEBACK not in out + err + stream.getvalue()
        assert not [r for r in caplog.records if r.exc_info]

    def test_fake_gmail_answers_deeply_nested_json_with_400(self) -> None:
        from loadsim.fakegmail import serve
        from loadsim.net import ListenAddress

        async def scenario() -> tuple[int, dict[str, Any], int]:
            fake = await serve(ListenAddress("127.0.0.1", 0), quota=None)
            try:
                deep = b"[" * 200_000
                body = await asyncio.to_thread(_post, f"{fake.url}/gmail/v1/users/me/messages/send", deep)
                control = await asyncio.to_thread(_post, f"{fake.url}/control/overlays", b'{"a":' * 100_000, auth=False)
            finally:
                await fake.stop()
            return body[0], body[1], control[0]

        status, body, control_status = asyncio.run(scenario())
        assert status == 400
        assert body["error"]["status"] == "INVALID_ARGUMENT"
        assert control_status == 400

    def test_an_ipv6_listen_url_is_logged_with_brackets(self, capsys) -> None:
        try:
            with socket.socket(socket.AF_INET6) as s:
                s.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback here")
        code = main(["run", "--virtual", "--duration", "10s", "--listen", "[::1]:0", "--progress", "off"])
        out, _ = capsys.readouterr()
        assert code == 0
        listening = next(json.loads(line) for line in out.splitlines() if "metrics.listening" in line)
        assert listening["url"].startswith("http://[::1]:")
        assert listening["url"].endswith("/metrics")

    def test_a_one_millisecond_timeout_is_refused_and_the_sweep_never_spins(self, capsys) -> None:
        code, err, _ = run_main(capsys, "run", "--driver", "http", "--target", "http://127.0.0.1:9", "--timeout", "1ms")
        assert code == 2
        assert len(err) == 1
        assert err[0].startswith("loadsim: --timeout: must be at least 10ms, got '1ms'")

        async def first_sweep() -> float:
            clock = ManualClock()
            pool = wire.Pool("127.0.0.1", 9, lambda _ex, _status: None, clock=clock, timeout=0.001, limit=1)
            pool.start()
            try:
                return clock.next_deadline() - clock.now()
            finally:
                pool.close()

        assert asyncio.run(first_sweep()) == wire.SWEEP_FLOOR

    def test_the_http_summary_counts_arrivals_that_came_due_not_those_handed_over_ahead(self) -> None:
        from test_http_driver import Server

        from loadsim.clock import WallClock
        from loadsim.drivers.http import HttpOptions

        plan = make_plan(name="h", duration="1h", arrivals="even", schedule=[{"kind": "constant", "rate": 2000}])
        plan = dataclasses.replace(plan, virtual=False)

        async def stop_soon(_engine: Engine, _log: Any) -> None:
            await WallClock().sleep(0.6)

        with Server() as server:
            options = RunOptions(listen=None, progress="off", http=HttpOptions(target=server.url))
            s = asyncio.run(execute(plan, options, companion=stop_soon))
        r = s["requests"]
        assert r["scheduled"] == r["started"] + r["dropped"] + r["dropped_behind"]
        # Even arrivals at 2000/s: what came due in the run's time, to one tick's worth of dispatch slack.
        assert abs(r["scheduled"] - 2000 * s["run_seconds"]) <= 5
        assert s["run_seconds"] < 1.0


def _post(url: str, body: bytes, *, auth: bool = True) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Bearer t"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        with contextlib.suppress(ValueError):
            return e.code, json.loads(e.read())
        return e.code, {}
