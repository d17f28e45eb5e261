"""Shards of one run (``--shard K/N``): exact arrivals, outcomes that do not depend on N, catch-up, merge, bad input.

Everything here runs on the virtual clock in-process (each shard is built exactly as
``loadsim run --shard K/N`` builds it, through the one factory); the wall-clock fleet
against a real Prometheus is ``tests/test_fleet_live.py``.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_plan, scrape

from loadsim.cli import main
from loadsim.engine.checkpoint import Checkpoint
from loadsim.engine.checkpoint import restore as restore_checkpoint
from loadsim.merge import ShardFile, merge
from loadsim.model import catalog
from loadsim.plan import Overrides, RunPlan, apply_overrides, build_plan
from loadsim.profile import load_profile
from loadsim.runtime.factory import Run, build
from loadsim.runtime.fleet import FleetOptions, catch_up, histograms, shard_summary
from loadsim.shard import Shard, ShardArrivals
from loadsim.sinks.pushgateway import PushTarget

PROFILES = Path(__file__).resolve().parents[1] / "profiles"
SEED_OVERLAYS = (
    "error-rate-warn@2h+2h",
    "error-rate-crit@8h+2h",
    "latency-crit@14h+2h",
    "controller-stalled@20h+2h",
    "validation-spike@26h+2h",
    "mime-slow@32h+2h",
    "sanitization-spike@38h+2h",
)


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, err, out


@dataclass
class Done:
    run: Run
    windows: list[tuple[float, np.ndarray]] = field(default_factory=list)

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate([s for _, s in self.windows]) if self.windows else np.empty(0)


def go(plan: RunPlan, shard: Shard | None) -> Done:
    done = Done(None)  # type: ignore[arg-type]
    run = build(plan, shard=shard, observers=[lambda t0, _t1, s: done.windows.append((t0, s.copy()))])
    done.run = run
    asyncio.run(run.engine.run())
    return done


def fleet(plan: RunPlan, n: int) -> list[Done]:
    return [go(plan, Shard(k, n)) for k in range(n)]


# -- the split is exact ------------------------------------------------------------------------

SCHEDULES: dict[str, list[dict[str, Any]]] = {
    "constant": [{"kind": "constant", "rate": "40/s"}],
    "ramp": [{"kind": "ramp", "from": "5/s", "to": "80/s", "duration": "10m"}],
    "steps": [{"kind": "steps", "rates": ["10/s", "60/s", "25/s"], "step": "4m"}],
    "diurnal": [{"kind": "diurnal", "trough": "1.2/s", "peak": "60/s", "peak_hour": 14}],
    "mixed": [
        {"kind": "ramp", "from": "1/s", "to": "30/s", "duration": "3m"},
        {"kind": "constant", "rate": "30/s", "duration": "3m"},
        {"kind": "diurnal", "trough": "5/s", "peak": "50/s", "peak_hour": 3},
    ],
}


@pytest.mark.parametrize("arrivals", ["poisson", "even"])
@pytest.mark.parametrize("kind", list(SCHEDULES))
def test_union_of_the_shards_arrivals_is_the_single_run_time_for_time(kind: str, arrivals: str):
    """Every schedule kind and both arrival kinds, with overlays that change the rate (traffic-drop) and not."""
    overlays = [
        {"scenario": "traffic-drop", "start": "2m", "duration": "3m", "ramp_in": "30s"},
        {"scenario": "error-rate-crit", "start": "6m", "duration": "2m"},
    ]
    plan = make_plan(name=kind, duration="12m", seed=7, arrivals=arrivals, schedule=SCHEDULES[kind], overlay=overlays)
    single = go(plan, None)
    assert len(single.starts) > 500
    for n in (3, 4):
        shards = fleet(plan, n)
        # Window by window: the shards' stripes put together are the single run's window, time for time.
        for w, (t0, want) in enumerate(single.windows):
            got = np.concatenate([d.windows[w][1] for d in shards])
            assert all(d.windows[w][0] == t0 for d in shards)
            np.testing.assert_array_equal(np.sort(got), np.sort(want))
        # Exact shares: each shard's count is within one arrival per window of 1/n.
        counts = [len(d.starts) for d in shards]
        assert sum(counts) == len(single.starts)
        assert max(counts) - min(counts) <= len(single.windows)


# -- the 48-hour realistic profile with the seed's seven overlays -------------------------------

TICK = 300.0
"""Windows of 5 minutes (the profile's engine key; hours and the overlays' 2 h edges fall on them): 14 shard runs
of 48 hours take ~8 s here, against ~30 s at the default 5 s."""


@pytest.fixture(scope="module")
def realistic() -> RunPlan:
    profile = apply_overrides(load_profile(PROFILES / "realistic.toml"), Overrides(overlays=SEED_OVERLAYS))
    profile = profile.model_copy(update={"engine": profile.engine.model_copy(update={"virtual_tick": TICK})})
    return build_plan(profile, virtual=True)


def hourly(done: Done) -> Counter[int]:
    out: Counter[int] = Counter()
    for t0, starts in done.windows:
        out[int(t0 // 3600)] += len(starts)
    return out


def totals(shards: list[Done]) -> dict[str, np.ndarray]:
    """The fleet's sums of every integer total the relay's metrics and the summary hold."""
    out: dict[str, np.ndarray] = {}
    for d in shards:
        relay, summary = d.run.relay, d.run.summary
        assert relay is not None
        assert summary is not None
        parts = {
            "class_counts": summary.class_counts,
            "latency_bins": summary.latency.counts,
            "exec": relay.exec,
            "errors": relay.errors,
            "structured": relay.structured,
            "latency_buckets": relay.latency_buckets,
            "mime_buckets": relay.mime_buckets,
            "inline_refs": relay.inline_refs,
            "sanitization": relay.sanitization,
            "oauth": relay.oauth,
            "controller_runs": relay.controller_runs,
        }
        for k, v in parts.items():
            out[k] = out.get(k, 0) + v
    return out


def fleet_summary(shards: list[Done], n: int) -> dict[str, Any]:
    files = []
    for k, d in enumerate(shards):
        engine = d.run.engine
        out = engine.summary(run_seconds=engine.t, wall_seconds=0.0, stopped_early=False)
        out = shard_summary(out, FleetOptions(Shard(k, n)), None)
        out["histograms"] = histograms(d.run.summary, d.run.driver)
        files.append(ShardFile(Path(f"shard-{k}"), json.loads(json.dumps(out))))
    return merge(files)


def test_realistic_48h_with_seven_overlays_is_the_same_run_for_1_2_4_7_shards(realistic: RunPlan):
    single = go(realistic, None)
    want_hourly = hourly(single)
    assert len(want_hourly) == 48
    reference: dict[str, np.ndarray] | None = None
    merged: dict[int, dict[str, Any]] = {}
    for n in (1, 2, 4, 7):
        shards = fleet(realistic, n)
        started = [d.run.engine.counts.started for d in shards]
        # Arrivals: the summed started count and every hourly count are the single run's, exactly.
        assert sum(started) == single.run.engine.counts.started == len(single.starts), n
        assert sum((hourly(d) for d in shards), Counter()) == want_hourly, n
        assert max(started) - min(started) <= 1, started
        # Outcomes: every integer total of the fleet is the same whatever n (bit for bit).
        got = totals(shards)
        if reference is None:
            reference = got
        for key, value in reference.items():
            np.testing.assert_array_equal(got[key], value, err_msg=f"{key}, {n} shards")
        # The controller's heartbeat ran once: on shard 0 alone.
        assert [int(d.run.relay.controller_runs.sum() > 0) for d in shards] == [1] + [0] * (n - 1)  # type: ignore[union-attr]
        merged[n] = fleet_summary(shards, n)
    # Merged quantiles come from the merged bins, so they are identical for every n.
    assert all(m["latency_seconds"] == merged[1]["latency_seconds"] for m in merged.values())
    assert all(m["by_outcome"] == merged[1]["by_outcome"] for m in merged.values())
    assert merged[7]["sends"]["started"] == len(single.starts)
    assert math.isclose(merged[7]["sends"]["target"], single.run.plan.expected_sends(), rel_tol=1e-6)

    # Against the plain (unsharded) run, which draws outcomes from one stream: equal within sampling noise.
    assert reference is not None
    sharded = reference["class_counts"]
    plain = single.run.summary.class_counts  # type: ignore[union-attr]
    n_sends = int(plain.sum())
    assert int(sharded.sum()) == n_sends
    for cls in np.flatnonzero(plain + sharded):
        # Two independent binomial counts of the same p: their difference has sd sqrt(2 n p (1 - p)); 5 sd
        # (1 in 1.7 million per class, 21 classes) keeps a correct implementation from failing by chance.
        p = (plain[cls] + sharded[cls]) / (2 * n_sends)
        sd = math.sqrt(2 * n_sends * p * (1 - p))
        assert abs(int(plain[cls]) - int(sharded[cls])) <= 5 * sd + 1, catalog.CLASSES[cls].name
    plain_q = single.run.summary.latency_quantiles()  # type: ignore[union-attr]
    for q, value in merged[4]["latency_seconds"].items():
        # 519k sends: the quantile's own sampling noise is under 0.5% up to p99; bins are 1.2% wide; p99.9
        # rests on ~500 sends in the tail (sd ~5%).
        tolerance = 0.15 if q == "p99.9" else 0.03
        assert math.isclose(value, plain_q[q], rel_tol=tolerance), (q, value, plain_q[q])


def test_only_shard_0_exposes_the_controller_and_each_shard_says_which_it_is():
    plan = make_plan(name="ctl", duration="30m", seed=3, schedule=[{"kind": "constant", "rate": "5/s"}])
    exposed = []
    for d in fleet(plan, 3):
        samples = scrape(d.run.registry)
        controller = {name for name, _ in samples if name.startswith("rollout_controller")}
        shard = [dict(labels) for name, labels in samples if name == "loadsim_shard"]
        exposed.append((bool(controller), shard))
    assert [e[0] for e in exposed] == [True, False, False]
    assert [e[1] for e in exposed] == [[{"shard": str(k), "shards": "3"}] for k in range(3)]


def test_a_restarted_shard_catches_up_counting_exactly_its_missed_stripe():
    """Killed at 10 min (last checkpoint), back at 17 min: the windows in between are drawn, not run, and missed."""
    plan = make_plan(name="restart", duration="30m", seed=5, schedule=[{"kind": "constant", "rate": "50/s"}])
    shard = Shard(1, 3)
    whole = go(plan, shard)
    tick = plan.tick

    def window_grid(until: float) -> list[tuple[float, float]]:
        grid, t0 = [], 0.0
        while t0 < until:
            t1 = min(t0 + tick, plan.duration)
            grid.append((t0, t1))
            t0 = t1
        return grid

    before = build(plan, shard=shard)
    for t0, t1 in window_grid(600.0):
        before.engine.step(t0, t1)
    components = {"engine": before.engine, "driver": before.driver, "shard": before.engine.arrivals}
    parts = {name: c.snapshot() for name, c in components.items()}

    after = build(plan, shard=shard, observers=[lambda t0, _t1, s: resumed.append((t0, s.copy()))])
    resumed: list[tuple[float, np.ndarray]] = []
    arrivals = after.engine.arrivals
    assert isinstance(arrivals, ShardArrivals)
    restore_checkpoint(Checkpoint({}, parts), {"driver": after.driver, "engine": after.engine, "shard": arrivals})
    missed = catch_up(after.engine, arrivals, until=1020.0 + 2.0)  # mid-window: that window is run, late
    asyncio.run(after.engine.run())

    expected_missed = sum(len(s) for t0, s in whole.windows if t0 >= 600.0 and t0 + tick <= 1022.0)
    assert missed == expected_missed == after.engine.counts.missed > 0
    # From where it joined, the resumed shard draws exactly what it would have drawn without the restart.
    want = [(t0, s) for t0, s in whole.windows if t0 + tick > 1022.0]
    assert [t0 for t0, _ in resumed] == [t0 for t0, _ in want]
    for (_, got), (_, s) in zip(resumed, want, strict=True):
        np.testing.assert_array_equal(got, s)
    # The fleet's totals lose exactly what was counted missed.
    assert after.engine.counts.started + missed == whole.run.engine.counts.started


def test_a_state_file_of_another_shard_is_refused():
    plan = make_plan(name="other", duration="5m", seed=5, schedule=[{"kind": "constant", "rate": "5/s"}])
    a, b = build(plan, shard=Shard(0, 2)), build(plan, shard=Shard(1, 2))
    with pytest.raises(ValueError, match=r"written by shard 0/2, this is shard 1/2"):
        b.engine.arrivals.restore(a.engine.arrivals.snapshot())  # type: ignore[attr-defined]


def test_each_shard_pushes_under_its_own_grouping_key():
    target = PushTarget.parse("http://127.0.0.1:9091", instance="loadsim", shard="3")
    assert target.grouping_key == {"instance": "loadsim", "shard": "3"}
    assert PushTarget.parse("http://127.0.0.1:9091").grouping_key == {"instance": "loadsim"}


# -- the command line ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--shard", "4/4"], {}, "--shard: the shard index must be in 0..3 for 4 shards, got 4"),
        (["--shard", "0/0"], {}, "--shard: the shard count must be >= 1, got 0"),
        (["--shard", "two"], {}, "--shard: expected K/N with 0 <= K < N, e.g. 0/4, got 'two'"),
        (["--shards", "4"], {}, "--shards: needs $JOB_COMPLETION_INDEX set to the pod's index (0..3), got None"),
        (["--shards", "4"], {"JOB_COMPLETION_INDEX": "4"}, "--shards: the shard index must be in 0..3 for 4 shards"),
        (["--shard", "1/4"], {}, "--shard: shards on the wall clock need --start-at TIME"),
        (["--start-at", "2001-01-01T00:00:00Z"], {}, "plus the run's 1m00s is already past; nothing is left to run"),
        (["--start-at", "2999-01-01T00:00:00Z"], {}, "--start-at: 2999-01-01T00:00:00+00:00 is more than 24h00m ahead"),
        (["--start-at", "soon"], {}, "--start-at: expected an ISO time such as 2026-11-30T12:00:00Z or Unix seconds"),
        (["--start-at", "2999-01-01T00:00:00Z", "--virtual"], {}, "--start-at: a virtual run has no wall-clock start"),
    ],
)
def test_bad_fleet_options_exit_2_before_anything_runs(capsys, monkeypatch, argv, env, message):
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code, err, _ = run_main(capsys, "run", "--rate", "5/s", "--duration", "1m", "--no-listen", *argv)
    assert code == 2
    assert err.startswith("loadsim: ")
    assert message in err
    assert "Traceback" not in err


def test_policy_mode_is_refused_for_a_fleet(capsys, tmp_path):
    profile = tmp_path / "policy.toml"
    profile.write_text('name = "p"\nduration = "1m"\n[[schedule]]\nkind = "constant"\nrate = "5/s"\n'
                       '[controller]\nmode = "policy"\n')  # fmt: skip
    code, err, _ = run_main(capsys, "run", str(profile), "--shard", "0/2", "--virtual", "--no-listen")
    assert code == 2
    assert "--shard: controller.mode: controller.mode = policy runs the relay's controller on one process" in err


def test_merge_the_shards_summary_files_and_logs(capsys, tmp_path):
    """Two shards run by the CLI on the virtual clock; one leaves a summary file, the other only its JSON log."""
    common = ["run", "--rate", "50/s", "--duration", "20m", "--seed", "9", "--virtual", "--no-listen"]
    code, _, _ = run_main(capsys, *common, "--shard", "0/2", "--summary-json", str(tmp_path / "s0.json"))
    assert code == 0
    code, _, _ = run_main(capsys, *common, "--shard", "1/2", "--summary-json", str(tmp_path / "s1.json"))
    assert code == 0
    one = json.loads((tmp_path / "s1.json").read_text())
    log = tmp_path / "pods.log"
    log.write_text('not json\n{"event": "run.start"}\n' + json.dumps({**one, "event": "run.summary"}) + "\n")
    code, err, out = run_main(capsys, "merge", str(tmp_path / "s0.json"), str(log), "--out", str(tmp_path / "f.json"))
    assert code == 0, err
    fleet_out = json.loads(out)
    whole = json.loads((tmp_path / "f.json").read_text())
    assert fleet_out["shards"]["merged"] == [0, 1]
    zero = json.loads((tmp_path / "s0.json").read_text())
    assert fleet_out["sends"]["started"] == zero["sends"]["started"] + one["sends"]["started"]
    assert "histograms" in whole
    assert "histograms" not in fleet_out
    # The unsharded run of the same seed: the same arrivals, so the same count.
    code, _, _ = run_main(capsys, *common, "--summary-json", str(tmp_path / "plain.json"))
    assert json.loads((tmp_path / "plain.json").read_text())["sends"]["started"] == fleet_out["sends"]["started"]

    code, err, _ = run_main(capsys, "merge", str(tmp_path / "s0.json"))
    assert (code, err.strip()) == (
        2,
        "loadsim: merge: shards 1 of 2 are missing; pass --allow-missing to merge the rest",
    )
    code, err, _ = run_main(capsys, "merge", str(tmp_path / "s0.json"), str(tmp_path / "s0.json"))
    assert code == 2
    assert "shard.index: shard 0 again" in err
    code, err, _ = run_main(capsys, "merge", str(tmp_path / "plain.json"))
    assert code == 2
    assert "no shard summary: expected the --summary-json file or the JSON log of a run with --shard" in err


def test_http_shards_merge_through_hdrhistograms_own_encoding():
    """Requests: each shard's HdrHistograms travel encoded; the merge equals one histogram of every latency."""
    from loadsim.drivers.http import HttpResults, record_bulk

    rng = np.random.default_rng(4)
    # Shards that saw different latencies (one behind a slower node): 20, 40 and 80 ms medians.
    latencies = [rng.lognormal(np.log(0.02 * 2**k), 0.3, 20_000 * (k + 1)) for k in range(3)]
    files, whole = [], HttpResults()
    for k, values in enumerate(latencies):
        shard = HttpResults()
        for h in (shard.intended, shard.actual, shard.lateness, whole.intended, whole.actual, whole.lateness):
            record_bulk(h, values)
        shard.results.update({"2xx": len(values)})
        data = {
            "profile": "p",
            "seed": 1,
            "run_seconds": 10.0,
            "requests": {"started": len(values), "target": 1.0},
            "shard": {"index": k, "count": 3},
            "histograms": histograms(None, type("D", (), {"results": shard})()),  # what execute() writes
            **shard.to_dict(),
        }
        files.append(ShardFile(Path(f"s{k}"), json.loads(json.dumps(data))))
    fleet_out = merge(files)
    assert fleet_out["requests"]["started"] == sum(len(v) for v in latencies)
    assert fleet_out["by_result"] == {"2xx": sum(len(v) for v in latencies)}
    assert fleet_out["latency_from_intended_seconds"] == whole.to_dict()["latency_from_intended_seconds"]
    # Not the average of the shards' medians (about 47 ms): the fleet's median is the 40 ms shard's region.
    averaged = np.mean([f.data["latency_from_intended_seconds"]["p50"] for f in files])
    assert abs(fleet_out["latency_from_intended_seconds"]["p50"] - averaged) > 0.005
