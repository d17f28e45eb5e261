"""The real process: `loadsim run` serves the relay's metrics on loopback and stops cleanly.

These start loadsim as a child process on the wall clock, because what they
check is the process itself (the listener, the signal handling); the waits are
bounded and short, and the rate check allows for scheduling jitter.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

QUIET_PROFILE = """
name = "endpoint-test"
[model.errors]
gmail_timeout = 0.0
[model.latency]
tail_fraction = 0.0
"""


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; scripts/setup-stack.sh should have installed it")
        pytest.skip(f"{name} is not installed (run scripts/setup-stack.sh)")
    return path


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def value(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"{name}{labels} not in scrape")


class Child:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []

    def wait_for_event(self, event: str, timeout: float = 20.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("event") == event:
                return record
        raise AssertionError(f"no {event} event; got {self.lines}")


@pytest.fixture
def child(tmp_path: Path) -> Iterator[Child]:
    profile = tmp_path / "p.toml"
    profile.write_text(QUIET_PROFILE)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loadsim",
            "run",
            str(profile),
            "--rate",
            "200/s",
            "--duration",
            "5m",
            "--listen",
            "127.0.0.1:0",
            "--progress",
            "json",
            "--summary-json",
            str(tmp_path / "summary.json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with proc:
        yield Child(proc)
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def test_serves_metrics_rising_at_the_rate_and_stops_on_sigterm(child: Child, tmp_path: Path):
    url = str(child.wait_for_event("metrics.listening")["url"])
    base = url.removesuffix("/metrics")
    assert url.startswith("http://127.0.0.1:")
    assert scrape(base + "/healthz") == "ok\n"
    assert scrape(base + "/readyz") == "ready\n"

    first = scrape(url)
    t0 = time.monotonic()
    time.sleep(3.0)
    second = scrape(url)
    elapsed = time.monotonic() - t0
    ok = {"provider": "google", "action": "gmail.send", "status": "ok"}
    rate = (value(second, "action_exec_total", **ok) - value(first, "action_exec_total", **ok)) / elapsed
    # 200/s target, Poisson over ~3 s (sd ~8/s) plus up to one 0.1 s window of skew at each end.
    assert 150 < rate < 250, rate
    # Every contract family is there, including zero series.
    assert value(second, "action_exec_total", status="error") >= 0
    assert value(second, "action_error_total", reason="provider_disabled") == 0
    assert value(second, "rollout_controller_runs_total", status="ok") == 1

    child.proc.send_signal(signal.SIGTERM)
    start = time.monotonic()
    assert child.proc.wait(timeout=10) == 0
    assert time.monotonic() - start < 5
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stopped_early"] is True
    assert summary["sends"]["started"] == summary["sends"]["finished"] + summary["sends"]["abandoned"]
    assert summary["sends"]["abandoned"] == 0


def test_promtool_finds_no_problem_in_a_scrape(child: Child):
    promtool = binary("promtool")
    url = str(child.wait_for_event("metrics.listening")["url"])
    time.sleep(1.0)
    text = scrape(url)
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == ""
    assert proc.stderr.strip() == ""
