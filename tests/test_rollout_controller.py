"""The relay's rollout controller in the loop: its decisions on the simulated SLOs, and its percent gating the traffic.

Virtual runs with a fixed seed; each reads the controller's decision records (what
``--decision-log`` writes) and the relay's families the way Prometheus would.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import pytest
from conftest import scrape, total

from loadsim.cli import main
from loadsim.engine import checkpoint
from loadsim.engine.checkpoint import Identity
from loadsim.model.catalog import EARLY_GUARD_REASONS
from loadsim.plan import build_plan
from loadsim.profile import parse_profile
from loadsim.runtime.factory import Run, build, population

MIN = 60.0
FAULT = 20 * MIN


def plan_for(
    hours: float, controller: dict[str, Any], *overlays: dict[str, Any], rate: str = "20/s", **extra: Any
) -> Any:
    data = {
        "name": "rollout-test",
        "seed": 7,
        "duration": hours * 3600,
        "schedule": [{"kind": "constant", "rate": rate}],
        "controller": {"mode": "policy", **controller},
        "overlay": list(overlays),
        **extra,
    }
    return build_plan(parse_profile(data, "test.toml"), virtual=True)


def run(plan: Any) -> tuple[Run, list[dict[str, Any]]]:
    decisions: list[dict[str, Any]] = []
    r = build(plan, decisions=decisions.append)
    asyncio.run(r.engine.run())
    return r, decisions


def fault(scenario: str) -> dict[str, Any]:
    return {"scenario": scenario, "start": FAULT, "duration": 40 * MIN}


def rolled_back_at(decisions: list[dict[str, Any]]) -> float | None:
    return next((d["t"] for d in decisions if d["result"] == "rollback"), None)


class TestHealthyPromotion:
    def test_goes_0_10_50_100_at_the_times_the_cron_the_dwell_and_the_steps_imply(self) -> None:
        """Runs every 600 s from t=0; the 900 s dwell skips every other run; three steps to 100."""
        r, decisions = run(plan_for(6, {"percent": 0}))
        assert r.driver.report()["controller"]["percent_trace"] == [[0.0, 0], [0.0, 10], [1200.0, 50], [2400.0, 100]]
        assert [d["t"] for d in decisions] == [k * 600.0 for k in range(36)]
        first = [(d["t"], d["result"]) for d in decisions[:6]]
        assert first == [(0.0, "promote"), (600.0, "skipped"), (1200.0, "promote"), (1800.0, "skipped"),
                         (2400.0, "promote"), (3000.0, "hold")]  # fmt: skip
        assert "dwell" in decisions[1]["reason"]
        assert all(d["result"] == "hold" for d in decisions[5:])


class TestFaultsFrom100:
    def test_error_rate_crit_as_intended_rolls_back_within_one_interval_plus_the_dwell(self) -> None:
        _, decisions = run(plan_for(2, {"percent": 100, "fidelity": "as-intended"}, fault("error-rate-crit")))
        back = rolled_back_at(decisions)
        assert back is not None
        assert FAULT < back <= FAULT + 600 + 900
        rollback = next(d for d in decisions if d["t"] == back)
        assert rollback["target"] == 10
        assert rollback["error_rate"] > 0.01

    def test_error_rate_crit_as_implemented_does_not_roll_back_and_reads_the_error_rate_as_zero(self) -> None:
        _, decisions = run(plan_for(2, {"percent": 100, "fidelity": "as-implemented"}, fault("error-rate-crit")))
        assert rolled_back_at(decisions) is None
        during = [d for d in decisions if FAULT + 300 <= d["t"] < FAULT + 40 * MIN]
        assert during
        assert all(d["error_rate"] == 0.0 for d in during)
        assert all(d["raw_error_rate"] is None for d in during)  # the query's empty vector

    @pytest.mark.parametrize("fidelity", ["as-implemented", "as-intended"])
    @pytest.mark.parametrize("scenario", ["latency-crit", "oauth-refresh-failures"])
    def test_rolls_back_under_both_fidelities(self, scenario: str, fidelity: str) -> None:
        r, decisions = run(plan_for(2, {"percent": 100, "fidelity": fidelity}, fault(scenario)))
        back = rolled_back_at(decisions)
        assert back is not None, [(d["t"], d["result"], d.get("reason")) for d in decisions]
        assert FAULT < back <= FAULT + 600 + 900
        assert r.driver.report()["controller"]["percent_trace"][1] == [back, 10]


class TestGate:
    @pytest.mark.parametrize("percent", [10, 50])
    def test_gated_share_follows_the_populations_buckets_and_shows_only_as_rollout_gated(self, percent: int) -> None:
        """A dry run holds the percent; the share gated is the population's weight with bucket > percent."""
        plan = plan_for(1, {"percent": percent, "dry_run": True}, rate="200/s")
        r, _ = run(plan)
        s = scrape(r.registry)
        started = r.engine.counts.started
        gated = total(s, "action_error_total", reason="rollout_gated")
        share = population(plan.population, plan.seed).gated_share(percent)
        assert 0.0 < share < 1.0
        sd = math.sqrt(share * (1 - share) / started)
        assert abs(gated / started - share) < 5 * sd, (gated / started, share)
        # Gated sends are early guards: never executions, never latency, nowhere else.
        guards = sum(total(s, "action_error_total", reason=g) for g in EARLY_GUARD_REASONS)
        assert total(s, "action_exec_total") + guards == started
        assert total(s, "action_latency_seconds_count") == total(s, "action_exec_total")

    def test_at_100_nothing_is_gated(self) -> None:
        r, _ = run(plan_for(0.5, {"percent": 100, "dry_run": True}))
        assert total(scrape(r.registry), "action_error_total", reason="rollout_gated") == 0


class TestResume:
    def test_a_resumed_run_keeps_the_percent_and_the_guards_and_decides_as_one_run_would(self) -> None:
        """Stop at 25 min (after the promotion to 50 at 20 min, mid-dwell), checkpoint, restore into a new run."""
        plan = plan_for(1, {"percent": 0})
        _, whole = run(plan)

        first = build(plan, decisions=(cut := []).append)

        def stop_at(t: float, _state: object) -> None:
            if t >= 25 * MIN:
                first.engine.request_stop()

        first.engine.after_window.append(stop_at)
        asyncio.run(first.engine.run())
        identity = Identity(plan.name, plan.seed, plan.fingerprint, virtual=True, epoch=plan.epoch, driver="sim")
        ck = checkpoint.capture(identity, {"engine": first.engine, "driver": first.driver})
        second_decisions: list[dict[str, Any]] = []
        from loadsim.clock import VirtualClock

        second = build(plan, clock=VirtualClock(plan.epoch, start=ck.t), decisions=second_decisions.append)
        checkpoint.restore(ck, {"driver": second.driver, "engine": second.engine})
        asyncio.run(second.engine.run())
        resumed = [(d["t"], d["result"], d.get("target")) for d in cut + second_decisions]
        assert resumed == [(d["t"], d["result"], d.get("target")) for d in whole]
        assert second.driver.report()["controller"]["percent"] == 100


class TestBadSettings:
    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            ("[controller]\ninterval = 0\n", "controller.interval: must be > 0, got 0"),
            (
                '[controller]\nfidelity = "as-hoped"\n',
                "controller.fidelity: input should be 'as-implemented' or 'as-intended', got 'as-hoped'",
            ),
            ("[population]\nactors = 0\n", "population.actors: must be >= 1, got 0"),
            ('[controller]\nmode = "cron"\n', "controller.mode: input should be 'heartbeat' or 'policy', got 'cron'"),
        ],
    )
    def test_refused_up_front(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, expected: str
    ) -> None:
        p = tmp_path / "p.toml"
        p.write_text(body)
        assert main(["run", str(p), "--virtual", "--duration", "1m", "--no-listen"]) == 2
        assert capsys.readouterr().err.strip() == f"loadsim: {p}: {expected}"

    def test_a_decision_log_needs_policy_mode(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        code = main(
            ["run", "--virtual", "--duration", "1m", "--no-listen", "--decision-log", str(tmp_path / "d.jsonl")]
        )
        assert code == 2
        assert (
            capsys.readouterr().err.strip()
            == 'loadsim: --decision-log: needs controller.mode = "policy" in the profile'
        )


def test_the_decision_log_is_one_json_line_per_run(tmp_path: Path) -> None:
    p = tmp_path / "p.toml"
    p.write_text('[controller]\nmode = "policy"\n')
    log = tmp_path / "decisions.jsonl"
    argv = ["run", str(p), "--virtual", "--duration", "1h", "--rate", "5/s", "--no-listen", "--progress", "off"]
    assert main([*argv, "--decision-log", str(log), "--summary-json", str(tmp_path / "s.json")]) == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["t"] for r in records] == [k * 600.0 for k in range(6)]
    assert {
        "t",
        "fidelity",
        "dry_run",
        "error_rate",
        "p95",
        "oauth_failures",
        "current",
        "target",
        "result",
        "reason",
    } <= set(records[0])
    summary = json.loads((tmp_path / "s.json").read_text())["controller"]
    assert summary["decisions"] == {"hold": 1, "promote": 3, "skipped": 2}
    assert summary["percent"] == 100


class TestPushedTheRelaysWay:
    def test_only_the_last_runs_series_exist_each_at_one(self) -> None:
        r, decisions = run(plan_for(1, {"percent": 100}))
        s = scrape(r.registry)
        assert decisions[-1]["result"] == "hold"
        runs = {dict(labels)["status"]: v for (name, labels), v in s.items() if name == "rollout_controller_runs_total"}
        changes = {
            dict(labels)["result"]: v for (name, labels), v in s.items() if name == "rollout_controller_changes_total"
        }
        assert runs == {"ok": 1.0}  # a PUT replaced the group: no zero series beside it, and never more than 1
        assert changes == {"hold": 1.0}
        assert total(s, "rollout_controller_percent", feature="google") == 100.0

    def test_a_failed_run_pushes_no_percent(self) -> None:
        failing = {"scenario": "controller-failing", "start": 0, "duration": "1h"}
        r, decisions = run(plan_for(1, {"percent": 100}, failing))
        s = scrape(r.registry)
        assert decisions[-1]["status"] in ("prom_unreachable", "redis_error")
        assert not any(name == "rollout_controller_percent" for name, _ in s)
        statuses = [
            dict(labels)["status"] for (name, labels), _ in s.items() if name == "rollout_controller_runs_total"
        ]
        assert statuses == [decisions[-1]["status"]]
