"""The controller reading a real Prometheus decides as the in-process evaluator does, on the same run.

loadsim runs on the wall clock with the controller in policy mode, time-scaled 60x
(a run every 10 s, 5 s query windows, a 15 s dwell), pushing the relay's series to
a real Pushgateway that a real Prometheus scrapes every second. Each controller
run sends its three queries to that Prometheus, as the relay's controller does, and
logs beside its decision the one the in-process evaluator makes from the same state
at the same moment (``shadow``). A latency fault from 100% must roll it back, and
every decision must agree.

Why these numbers: healthy latency is kept at p95 about 0.1 s (far from the 0.5 s
threshold) and the fault at p95 about 3.6 s, so the two readings, taken from samples
a second or two apart, cannot fall on different sides of a threshold by noise; 200
sends/s puts about 1,000 sends in each 5 s window.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import loadsim_process, require_stack

from loadsim.testing import Stack

PROFILE = """
name = "rollout-live"
seed = 5
duration = "80s"
arrivals = "even"

[[schedule]]
kind = "constant"
rate = "200/s"

[controller]
mode = "policy"
fidelity = "as-intended"
percent = 100
time_scale = 60

[model.latency]
p50 = "50ms"
p95 = "100ms"
tail_fraction = 0.0

[[overlay]]
scenario = "latency-crit"
start = "31s"
duration = "40s"
"""


@pytest.mark.stack
@pytest.mark.slow
def test_decisions_from_a_live_prometheus_match_the_in_process_evaluator(tmp_path: Path) -> None:
    require_stack()
    profile = tmp_path / "p.toml"
    profile.write_text(PROFILE)
    log = tmp_path / "decisions.jsonl"
    with Stack(alerts="v1") as stack, loadsim_process(
        "run", str(profile), "--no-listen", "--progress", "off", "--grace", "2s",
        "--pushgateway", stack.pushgateway.url, "--push-interval", "1s",
        "--controller-prometheus", stack.prometheus.url, "--decision-log", str(log),
    ) as child:  # fmt: skip
        child.wait_for_event("run.start")
        deadline = time.monotonic() + 120
        while child.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(1.0)
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
        assert child.finish(timeout=60) == 0, child.stderr[-2000:]
    records: list[dict[str, Any]] = [json.loads(line) for line in log.read_text().splitlines()]
    runs = [r for r in records if "shadow" in r]
    assert len(runs) >= 7  # a run every 10 s for 80 s
    disagreements = [
        (r["t"], r["result"], r["target"], r["shadow"]["result"], r["shadow"]["target"])
        for r in runs
        if (r["result"], r["target"]) != (r["shadow"]["result"], r["shadow"]["target"])
    ]
    assert disagreements == []
    # The fault at 31 s rolls back from 100% to 10% (within a run interval plus the dwell, 25 s).
    rollback = next(r for r in runs if r["result"] == "rollback")
    assert 31 < rollback["t"] <= 31 + 10 + 15
    assert rollback["target"] == 10
    assert rollback["p95"] > 0.5
    assert rollback["shadow"]["p95"] > 0.5
    # Before the fault both read the healthy latency, from Prometheus and in process alike.
    healthy = [r for r in runs if 10 <= r["t"] < 31]
    assert healthy
    assert all(r["reachable"] and 0 < r["p95"] < 0.3 for r in healthy), healthy
