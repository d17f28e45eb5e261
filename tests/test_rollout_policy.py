"""The rollout policy: one controller run as a pure function, guard by guard, in the relay's order."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace

import pytest

from loadsim.rollout.policy import Decision, Fidelity, PolicyParams, PolicyState, Reading, decide

IMPL = PolicyParams(Fidelity.AS_IMPLEMENTED)
INTENDED = PolicyParams(Fidelity.AS_INTENDED)
DRY = PolicyParams(Fidelity.AS_IMPLEMENTED, dry_run=True)


def reading(error_rate: float = 0.0, p95: float = 0.1, oauth: float = 0.0) -> Reading:
    """A reachable reading; the defaults are green."""
    raw: dict[str, float | None] = {"error_rate": error_rate, "p95": p95, "oauth_failures": oauth}
    return Reading(error_rate, p95, oauth, raw=raw)


PUSH, NO_PUSH = True, False
"""Whether the run pushes its result."""
VIOLATED, HEALTHY = True, False
"""Whether the reading breaks a threshold."""

GREEN = reading()
SLOW = reading(p95=0.84)


@dataclass(frozen=True)
class Case:
    name: str
    params: PolicyParams
    state: PolicyState
    reading: Reading
    t: float
    result: str
    target: int
    reason: str
    pushed: bool
    violated: bool
    after: PolicyState | None = None
    """The state the run leaves; None means unchanged."""


CASES = [
    # -- the policy (no guard engaged) ------------------------------------------------------------
    Case("green from 0 promotes to 10", IMPL, PolicyState(0), GREEN, 0, "promote", 10, "healthy", PUSH, HEALTHY,
         PolicyState(10, 0, None)),
    Case("green from 10 promotes to 50", IMPL, PolicyState(10, 0), GREEN, 1200, "promote", 50, "healthy", PUSH, HEALTHY,
         PolicyState(50, 1200, None)),
    Case("green from 50 promotes to 100", IMPL, PolicyState(50, 0), GREEN, 1200, "promote", 100, "healthy", PUSH,
         HEALTHY, PolicyState(100, 1200, None)),
    Case("green at 100 holds", IMPL, PolicyState(100, 0), GREEN, 600, "hold", 100, "healthy", PUSH, HEALTHY),
    Case("green off the ladder holds", IMPL, PolicyState(25, 0), GREEN, 9000, "hold", 25, "healthy", PUSH, HEALTHY),
    Case("error rate above 0.01 rolls 100 back to 10", IMPL, PolicyState(100, 0), reading(error_rate=0.02), 1200,
         "rollback", 10, "slo_violated: error_rate 0.02 > 0.01", PUSH, VIOLATED, PolicyState(10, 1200, 1200)),
    Case("p95 above 0.5 s rolls 50 back to 10", IMPL, PolicyState(50, 0), SLOW, 1200, "rollback", 10,
         "slo_violated: p95 0.84 > 0.5", PUSH, VIOLATED, PolicyState(10, 1200, 1200)),
    Case("oauth failures above 5 roll 100 back to 10", IMPL, PolicyState(100, 0), reading(oauth=6), 1200, "rollback",
         10, "slo_violated: oauth_failures 6 > 5", PUSH, VIOLATED, PolicyState(10, 1200, 1200)),
    Case("every broken threshold is named", IMPL, PolicyState(100, 0), reading(0.02, 0.84, 7), 1200, "rollback", 10,
         "slo_violated: error_rate 0.02 > 0.01, p95 0.84 > 0.5, oauth_failures 7 > 5", PUSH, VIOLATED,
         PolicyState(10, 1200, 1200)),
    Case("thresholds are strict: 0.01, 0.5 and 5 pass", IMPL, PolicyState(0), reading(0.01, 0.5, 5), 0, "promote", 10,
         "healthy", PUSH, HEALTHY, PolicyState(10, 0, None)),
    Case("violated at 10 holds at 10", IMPL, PolicyState(10, 0), SLOW, 1200, "hold", 10,
         "slo_violated: p95 0.84 > 0.5", PUSH, VIOLATED),
    Case("violated at 0 holds at 0", IMPL, PolicyState(0), SLOW, 0, "hold", 0, "slo_violated: p95 0.84 > 0.5", PUSH,
         VIOLATED),
    Case("violated below rollback_to holds (never down to 0)", IMPL, PolicyState(5, 0), SLOW, 1200, "hold", 5,
         "slo_violated: p95 0.84 > 0.5", PUSH, VIOLATED),
    Case("a NaN p95 compares false and passes", IMPL, PolicyState(0), reading(p95=math.nan), 0, "promote", 10,
         "healthy", PUSH, HEALTHY, PolicyState(10, 0, None)),
    Case("a NaN error rate compares false and passes", IMPL, PolicyState(0), reading(error_rate=math.nan), 0,
         "promote", 10, "healthy", PUSH, HEALTHY, PolicyState(10, 0, None)),
    # -- guard 1: paused -----------------------------------------------------------------------------
    Case("paused: skipped, nothing pushed, even when violated", IMPL, PolicyState(100, 0, paused=True), SLOW, 1200,
         "skipped", 100, "paused", NO_PUSH, HEALTHY),
    Case("paused comes before unreachable (as intended)", INTENDED, PolicyState(50, paused=True),
         Reading.unreachable(), 0, "skipped", 50, "paused", NO_PUSH, HEALTHY),
    # -- guard 2: target == current, before dwell ---------------------------------------------------
    Case("a hold pushes even within dwell", IMPL, PolicyState(10, 900, 900), SLOW, 1200, "hold", 10,
         "slo_violated: p95 0.84 > 0.5", PUSH, VIOLATED),
    # -- guard 3: dwell ------------------------------------------------------------------------------
    Case("dwell skips a promotion", IMPL, PolicyState(10, 600), GREEN, 900, "skipped", 50,
         "dwell: last change 300 s ago < 900 s", NO_PUSH, HEALTHY),
    Case("dwell delays a rollback too", IMPL, PolicyState(100, 2400), SLOW, 3000, "skipped", 10,
         "dwell: last change 600 s ago < 900 s", NO_PUSH, VIOLATED),
    Case("dwell ends at exactly 900 s", IMPL, PolicyState(10, 0), GREEN, 900, "promote", 50, "healthy", PUSH, HEALTHY,
         PolicyState(50, 900, None)),
    Case("dwell is checked before cooldown", IMPL, PolicyState(10, 3600, 3600), GREEN, 4200, "skipped", 50,
         "dwell: last change 600 s ago < 900 s", NO_PUSH, HEALTHY),
    # -- guard 4: cooldown -----------------------------------------------------------------------------
    Case("cooldown skips a promotion within 1 h of a rollback", IMPL, PolicyState(10, 3600, 3600), GREEN, 4800,
         "skipped", 50, "cooldown: last rollback 1200 s ago < 3600 s", NO_PUSH, HEALTHY),
    Case("cooldown ends at exactly 3600 s", IMPL, PolicyState(10, 3600, 3600), GREEN, 7200, "promote", 50, "healthy",
         PUSH, HEALTHY, PolicyState(50, 7200, 3600)),
    Case("cooldown never blocks a rollback", IMPL, PolicyState(50, 1000, 1000), SLOW, 2000, "rollback", 10,
         "slo_violated: p95 0.84 > 0.5", PUSH, VIOLATED, PolicyState(10, 2000, 2000)),
    # -- unreachable Prometheus ------------------------------------------------------------------------
    Case("as implemented, unreachable reads 0.0: green", IMPL, PolicyState(0), Reading.unreachable(), 0, "promote",
         10, "healthy: prometheus unreachable, every query read as 0.0", PUSH, HEALTHY, PolicyState(10, 0, None)),
    Case("as implemented, unreachable ignores any value carried", IMPL, PolicyState(0),
         Reading(0.5, 2.0, 9.0, reachable=False), 0, "promote", 10,
         "healthy: prometheus unreachable, every query read as 0.0", PUSH, HEALTHY, PolicyState(10, 0, None)),
    Case("as intended, unreachable holds and pushes", INTENDED, PolicyState(50, 0), Reading.unreachable(), 1200,
         "hold", 50, "prometheus_unreachable", PUSH, HEALTHY),
    Case("as intended, green promotes like as implemented", INTENDED, PolicyState(0), GREEN, 0, "promote", 10,
         "healthy", PUSH, HEALTHY, PolicyState(10, 0, None)),
    Case("as intended, violated rolls back like as implemented", INTENDED, PolicyState(100, 0), SLOW, 1200,
         "rollback", 10, "slo_violated: p95 0.84 > 0.5", PUSH, VIOLATED, PolicyState(10, 1200, 1200)),
    # -- dry run -----------------------------------------------------------------------------------------
    Case("dry run: green from 0 says promote to 10, writes nothing", DRY, PolicyState(0), GREEN, 0, "promote", 10,
         "healthy", PUSH, HEALTHY),
    Case("dry run: violated at 0 holds at 0", DRY, PolicyState(0), SLOW, 0, "hold", 0,
         "slo_violated: p95 0.84 > 0.5", PUSH, VIOLATED),
    Case("dry run: a rollback is reported, not written", DRY, PolicyState(50, 0), SLOW, 1200, "rollback", 10,
         "slo_violated: p95 0.84 > 0.5", PUSH, VIOLATED),
]  # fmt: skip


class TestDecide:
    @pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
    def test_table(self, case: Case) -> None:
        """Each row of the spec: result, target, reason, push and the state left behind."""
        decision, after = decide(case.params, case.state, case.reading, case.t)
        expected = Decision(
            case.t, case.params.fidelity, case.params.dry_run, case.reading, case.state.percent, case.target,
            case.result, case.reason, case.pushed, case.violated,  # type: ignore[arg-type]
        )  # fmt: skip
        assert decision == expected
        assert after == (case.after or case.state)

    def test_healthy_ramp_from_zero(self) -> None:
        """Interval 600, dwell 900: promote at 0, 1200 and 2400; the runs between are skipped by dwell."""
        state = PolicyState(0)
        seen = []
        for t in range(0, 3001, 600):
            decision, state = decide(IMPL, state, GREEN, float(t))
            seen.append((t, decision.result, decision.target, state.percent, decision.pushed))
        assert seen == [
            (0, "promote", 10, 10, True),
            (600, "skipped", 50, 10, False),
            (1200, "promote", 50, 50, True),
            (1800, "skipped", 100, 50, False),
            (2400, "promote", 100, 100, True),
            (3000, "hold", 100, 100, True),
        ]

    def test_rollback_then_cooldown(self) -> None:
        """The module docstring's table from 2400 on: dwell delays the rollback, cooldown the next promotion."""
        state = PolicyState(100, last_change=2400.0)
        runs = [(3000, SLOW), (3600, SLOW)] + [(t, GREEN) for t in range(4200, 7201, 600)]
        seen = []
        for t, r in runs:
            decision, state = decide(IMPL, state, r, float(t))
            seen.append((t, decision.result, decision.reason, state.percent))
        assert seen == [
            (3000, "skipped", "dwell: last change 600 s ago < 900 s", 100),
            (3600, "rollback", "slo_violated: p95 0.84 > 0.5", 10),
            (4200, "skipped", "dwell: last change 600 s ago < 900 s", 10),
            (4800, "skipped", "cooldown: last rollback 1200 s ago < 3600 s", 10),
            (5400, "skipped", "cooldown: last rollback 1800 s ago < 3600 s", 10),
            (6000, "skipped", "cooldown: last rollback 2400 s ago < 3600 s", 10),
            (6600, "skipped", "cooldown: last rollback 3000 s ago < 3600 s", 10),
            (7200, "promote", "healthy", 50),
        ]
        assert state == PolicyState(50, 7200.0, 3600.0)

    def test_dry_run_never_moves(self) -> None:
        """Dry run: every green run says promote to 10, every violated run hold at 0, and dwell never engages."""
        state = PolicyState(0)
        seen = []
        for i in range(8):
            r = SLOW if i % 3 == 2 else GREEN
            decision, state = decide(DRY, state, r, 600.0 * i)
            seen.append((decision.result, decision.target))
        expected = [("hold", 0) if i % 3 == 2 else ("promote", 10) for i in range(8)]
        assert seen == expected
        assert state == PolicyState(0)


class TestValues:
    def test_state_round_trips_through_json(self) -> None:
        """A checkpointed state comes back equal, through real JSON."""
        state = PolicyState(50, 1200.0, 600.0, paused=True)
        assert PolicyState.from_json(json.loads(json.dumps(state.to_json()))) == state
        assert PolicyState.from_json(PolicyState(0).to_json()) == PolicyState(0)

    def test_bad_state_names_every_key(self) -> None:
        with pytest.raises(ValueError, match="rollout state: ") as err:
            PolicyState.from_json({"percent": 120, "last_change": "soon", "paused": "no"})
        assert str(err.value) == (
            "rollout state: percent: must be an int in 0..100, got 120; "
            "last_change: must be a number or null, got 'soon'; paused: must be true or false, got 'no'"
        )

    def test_decision_json_is_flat_and_strict(self) -> None:
        """NaN readings are written as "NaN" so the log is strict JSON; raw None stays null."""
        r = Reading(0.0, math.nan, 2.0, raw={"error_rate": None, "p95": math.nan, "oauth_failures": 2.0})
        decision, _ = decide(IMPL, PolicyState(0), r, 0.0)
        out = decision.to_json()
        json.dumps(out, allow_nan=False)
        assert out == {
            "t": 0.0,
            "fidelity": "as-implemented",
            "dry_run": False,
            "current": 0,
            "target": 10,
            "result": "promote",
            "reason": "healthy",
            "pushed": True,
            "violated": False,
            "reachable": True,
            "error_rate": 0.0,
            "raw_error_rate": None,
            "p95": "NaN",
            "raw_p95": "NaN",
            "oauth_failures": 2.0,
            "raw_oauth_failures": 2.0,
        }

    def test_params_name_every_problem(self) -> None:
        with pytest.raises(ValueError, match="rollout policy: ") as err:
            PolicyParams("bold", dwell=-1.0, steps=(0, 50, 10), rollback_to=101)  # type: ignore[arg-type]
        assert str(err.value) == (
            "rollout policy: fidelity: must be one of as-implemented, as-intended, got 'bold'; "
            "dwell: must be >= 0, got -1.0; steps: must be strictly increasing percents in 0..100, got (0, 50, 10); "
            "rollback_to: must be a percent in 0..100, got 101"
        )

    def test_fidelity_accepts_its_string(self) -> None:
        """A profile gives the fidelity as a string; params hold the enum."""
        assert PolicyParams("as-intended").fidelity is Fidelity.AS_INTENDED  # type: ignore[arg-type]

    def test_custom_ladder(self) -> None:
        """Steps and rollback_to come from params, not constants."""
        params = replace(IMPL, steps=(0, 1, 5, 25, 100), rollback_to=1)
        decision, state = decide(params, PolicyState(5, 0), GREEN, 1000.0)
        assert (decision.result, state.percent) == ("promote", 25)
        decision, state = decide(params, state, SLOW, 2000.0)
        assert (decision.result, state.percent) == ("rollback", 1)
