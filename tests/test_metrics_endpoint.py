"""The real process: `loadsim run` serves the relay's metrics on loopback and stops cleanly.

These start loadsim as a child process on the wall clock, because what they
check is the process itself (the listener, the signal handling); the waits are
bounded and short, and the rate check allows for scheduling jitter.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Child, http_get, loadsim_process, require_binary, sample_value

QUIET_PROFILE = """
name = "endpoint-test"
[model.errors]
gmail_timeout = 0.0
[model.latency]
tail_fraction = 0.0
"""
OK = {"provider": "google", "action": "gmail.send", "status": "ok"}


@pytest.fixture
def child(tmp_path: Path) -> Iterator[Child]:
    profile = tmp_path / "p.toml"
    profile.write_text(QUIET_PROFILE)
    with loadsim_process(
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
    ) as c:
        yield c


def test_serves_metrics_rising_at_the_rate_and_stops_on_sigterm(child: Child, tmp_path: Path) -> None:
    url = str(child.wait_for_event("metrics.listening")["url"])
    base = url.removesuffix("/metrics")
    assert url.startswith("http://127.0.0.1:")
    assert http_get(base + "/healthz") == "ok\n"
    assert http_get(base + "/readyz") == "ready\n"

    first = http_get(url)
    time.sleep(3.0)
    second = http_get(url)
    # The rate over loadsim's own run time (loadsim_run_seconds), so a busy machine delaying
    # a scrape does not skew it: 200/s target, Poisson over ~3 s is sd ~8/s; 5 sd.
    sent = (sample_value(second, "action_exec_total", **OK) or 0) - (
        sample_value(first, "action_exec_total", **OK) or 0
    )
    run_time = (sample_value(second, "loadsim_run_seconds") or 0) - (sample_value(first, "loadsim_run_seconds") or 0)
    assert run_time > 2.0
    rate = sent / run_time
    assert 160 < rate < 240, rate
    # Every contract family is there, including zero series.
    assert sample_value(second, "action_exec_total", status="error") is not None
    assert sample_value(second, "action_error_total", reason="provider_disabled") == 0
    assert sample_value(second, "rollout_controller_runs_total", status="ok") == 1

    child.proc.send_signal(signal.SIGTERM)
    start = time.monotonic()
    assert child.finish(timeout=10) == 0
    assert time.monotonic() - start < 5
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stopped_early"] is True
    assert summary["sends"]["started"] == summary["sends"]["finished"] + summary["sends"]["abandoned"]
    assert summary["sends"]["abandoned"] == 0


def test_promtool_finds_no_problem_in_a_scrape(child: Child) -> None:
    promtool = require_binary("promtool")
    url = str(child.wait_for_event("metrics.listening")["url"])
    time.sleep(1.0)
    text = http_get(url)
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == ""
    assert proc.stderr.strip() == ""
