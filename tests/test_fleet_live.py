"""The local proof: 4 shards started as the Indexed Job starts them, a real Prometheus and the relay's rules.

Each shard is ``python -m loadsim`` with the Job's own ``args`` and ``env`` from
``deploy/k8s/job.yaml`` (``JOB_COMPLETION_INDEX`` 0..3, ``START_AT`` a few seconds
ahead, ``POD_IP`` a loopback address of its own: 127.0.0.1..4) and the ConfigMap's
``fleet.toml`` made a minute long: 2,000 sends/s in all, then the ``error-rate-crit``
incident. The :class:`~loadsim.testing.Stack`'s Prometheus scrapes the four ``/metrics``
(four ``instance`` labels) and evaluates the relay's recording and alert rules, 30x
time-scaled as in ``tests/test_live_stack.py`` (whose docstring argues the 8% ratio and
the 5 s client timeout). Shard 2 is killed (SIGKILL) early on and started again with the
same arguments: it resumes from its state file and joins where the schedule stands.

What it shows, with figures in the assertion messages and the test's output:
``sum(rate(action_exec_total[30s]))`` reads 2,000/s within 2% over the fleet; the incident
fires the critical and the warning alerts, as on one process; each shard's first window is
handed over within a few ms of the shared start; and the merged summary's started plus
missed arrivals equal the global sequence exactly.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from conftest import require_stack

from loadsim.arrivals import ArrivalKind
from loadsim.engine.seeds import RunRandom
from loadsim.merge import merge, read
from loadsim.overlays.scenarios import ALL_ALERTS, ERR_CRIT, ERR_WARN
from loadsim.plan import build_plan
from loadsim.profile import parse_profile
from loadsim.shard import Shard, ShardArrivals
from loadsim.testing import Stack

T = TypeVar("T")
K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
LEAD = 12.0
"""Seconds from the Job's creation to START_AT: the shards start, then Prometheus (it waits for their targets).

Four Python processes importing numpy, prometheus-client and aiohttp on two busy cores took more
than 6 s (a shard whose first window was run second 2.1): the lead is what a Job would give its
pods to be scheduled, so it is generous; a late shard is the restart case, tested on its own."""
DURATION = 60.0
OVERLAY_START = 28.0
KILL_AT, RESTART_AT = 5.0, 9.0
"""Run time (s) shard 2 is killed, and when it is started again."""


def job() -> dict[str, Any]:
    (doc,) = [d for d in yaml.safe_load_all((K8S / "job.yaml").read_text()) if d and d["kind"] == "Job"]
    return doc


def fleet_profile() -> str:
    (cm,) = [d for d in yaml.safe_load_all((K8S / "profile-configmap.yaml").read_text()) if d]
    text: str = cm["data"]["fleet.toml"]
    text = text.replace('duration = "1h"', f'duration = "{DURATION:g}s"')
    overlay = f'start = "{OVERLAY_START:g}s"\nduration = "{DURATION - OVERLAY_START:g}s"\noptions = {{ ratio = 0.08 }}'
    text = text.replace('start = "20m"\nduration = "15m"', overlay)
    assert f'start = "{OVERLAY_START:g}s"' in text
    return text + '\n[model.latency]\ntimeout = "5s"\n'


class Pod:
    """One shard as its pod would run it: the Job's args with $(VAR) expanded from its env."""

    def __init__(self, index: int, tmp: Path, start_at: str, port: int = 0) -> None:
        self.index = index
        self.dir = tmp / f"shard-{index}"
        self.dir.mkdir(exist_ok=True)
        container = job()["spec"]["template"]["spec"]["containers"][0]
        env = {"JOB_COMPLETION_INDEX": str(index), "START_AT": start_at, "POD_IP": f"127.0.0.{index + 1}"}
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        args = []
        for template in container["args"]:
            arg = re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], template)
            arg = arg.replace(mounts["profile"], str(tmp)).replace(mounts["state"], str(self.dir))
            args.append(arg.replace(":9477", f":{port}"))  # each pod has the port to itself; here, a free one
        self.args, self.env = args, env
        self.out = self.dir / "stdout.jsonl"
        self.err = self.dir / "stderr.txt"
        with self.out.open("a") as out, self.err.open("a") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "loadsim", *args], stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                env={**os.environ, **env},
            )  # fmt: skip

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.out.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("event") == name:
                found.append(record)
        return found

    def event(self, name: str, timeout: float = 20.0, nth: int = 0) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            if self.proc.poll() is not None and len(self.events(name)) <= nth:
                why = self.err.read_text()[-2000:]
                raise AssertionError(f"shard {self.index} exited {self.proc.returncode}: {why}")
            events = self.events(name)
            return events[nth] if len(events) > nth else None

        return wait(found, timeout, f"shard {self.index}: {name}")

    def url(self, nth: int = 0) -> str:
        return str(self.event("metrics.listening", nth=nth)["url"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def wait(predicate: Callable[[], T], timeout: float, what: str) -> T:
    try:
        return Stack.wait_until(predicate, timeout=timeout, interval=0.25, what=what)
    except TimeoutError as e:
        raise AssertionError(str(e)) from None


def global_arrivals(profile_text: str, start: float) -> int:
    """How many arrivals the fleet's one sequence holds over the run: the windows drawn as every shard draws them."""
    plan = build_plan(parse_profile(tomllib.loads(profile_text), "fleet.toml"), virtual=False, wall_epoch=start)
    assert plan.arrivals is ArrivalKind.POISSON
    arrivals = ShardArrivals(plan.schedule, plan.arrivals, RunRandom.from_seed(plan.seed).arrivals, Shard(0, 1))
    t0 = 0.0
    while t0 < plan.duration:
        t1 = min(t0 + plan.tick, plan.duration)
        arrivals.draw(t0, t1)  # error-rate-crit leaves the arrival scale at 1
        t0 = t1
    return arrivals.drawn


@pytest.mark.stack
@pytest.mark.slow
def test_four_job_shards_are_one_relay_to_prometheus_and_its_rules(tmp_path: Path):
    require_stack()
    (tmp_path / "fleet.toml").write_text(profile := fleet_profile())
    start = time.time() + LEAD
    start_at = datetime.fromtimestamp(math.ceil(start), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    start = datetime.fromisoformat(start_at).timestamp()
    pods = [Pod(k, tmp_path, start_at) for k in range(4)]
    try:
        urls = [p.url() for p in pods]
        assert len({u.split("/")[2] for u in urls}) == 4
        with Stack(urls, alerts="v1") as stack:
            report = run_fleet(stack, pods, start, tmp_path, start_at)
    finally:
        for p in pods:
            p.stop()
    summaries = [p.dir / "summary.json" for p in pods]
    fleet = merge(read(summaries))
    sends = fleet["sends"]
    total = global_arrivals(profile, start)
    # The fleet lost exactly what shard 2 counted as missed while it was down, nothing else.
    assert sends["missed_while_down"] > 0
    assert sends["started"] + sends["missed_while_down"] == total, (sends, total)
    assert sends["abandoned"] == 0
    skew = fleet["shards"]["first_window_lateness_seconds"]["by_shard"]
    print(json.dumps({**report, "first_window_lateness_seconds": skew, "sends": sends, "global": total}))


def run_fleet(stack: Stack, pods: list[Pod], start: float, tmp: Path, start_at: str) -> dict[str, Any]:
    """Drive the run: kill and restart shard 2, read the rate and the alerts; returns the figures."""
    # The synchronized start: every shard hands its first window over within a few ms of START_AT.
    firsts = [p.event("fleet.first_window", timeout=LEAD + 10) for p in pods]
    for e in firsts:
        assert e["run_seconds"] == 0.0
        assert e["lateness_seconds"] < 0.05, firsts
    # Shard 2 dies (no clean exit) and comes back with the same arguments on the same address.
    wait(lambda: time.time() >= start + KILL_AT, KILL_AT + 5, "kill time")
    victim = pods[2]
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(5)
    port = int(victim.url().rsplit(":", 1)[1].split("/")[0])
    wait(lambda: time.time() >= start + RESTART_AT, RESTART_AT, "restart time")
    pods[2] = again = Pod(2, tmp, start_at, port=port)
    joined = again.event("fleet.joined", timeout=15)
    assert joined["missed"] > 0
    assert again.event("state.resumed", timeout=5)["checkpoint_run_seconds"] < joined["run_seconds"]
    stack.wait_scraped("relay", 4, timeout=15)

    # Before the incident: which of the contract's alerts were even pending (none should be firing).
    at = start + OVERLAY_START - 0.5
    wait(lambda: time.time() >= at + 1, OVERLAY_START + 5, "end of the healthy window")
    healthy = {
        s.labels["alertname"]
        for s in stack.query('count by (alertname) (ALERTS{alertstate="firing"})', at=at)
        if s.labels["alertname"] in ALL_ALERTS
    }
    assert healthy == set(), healthy
    assert stack.query("count(count by (instance) (action_exec_total))", at=at)[0].value == 4
    # The fleet's rate over 30 s windows that start after shard 2 came back (the incident changes outcomes,
    # not the number of executions: action_exec_total counts ok and error alike).
    rates = {}
    for t in (50.0, 53.0, 56.0):
        wait(lambda t=t: time.time() >= start + t + 1, DURATION, f"run time {t:g}s")
        result = stack.query("sum(rate(action_exec_total[30s]))", at=start + t)
        rates[t] = result[0].value if result else math.nan
    for value in rates.values():
        # 2,000 sends/s over 30 s is 60,000 sends: Poisson noise 0.4%; the exposure is the last checkpoint (1 s),
        # so each end of the window may lag up to 1 s, mostly alike at both ends: 2% holds, as the issue asks.
        assert abs(value - 2000) / 2000 < 0.02, rates
    # The incident: the relay's error-ratio rules (sum over instances) fire both alerts, as on one process.
    deadline = start + DURATION - time.time() + 5
    wait(lambda: {ERR_WARN, ERR_CRIT} <= stack.firing(), max(deadline, 1), "warning and critical firing")
    fired = stack.firing() & set(ALL_ALERTS)
    assert fired == {ERR_WARN, ERR_CRIT}, fired
    for p in pods:
        p.event("run.summary", timeout=DURATION + 20)
    return {"rate_by_run_second": rates, "fired": sorted(fired), "joined": joined}
