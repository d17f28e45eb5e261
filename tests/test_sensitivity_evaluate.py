"""The in-process rule evaluator against promtool: the same recorded series, the same rule files, the same firing.

Each case is a virtual run recorded as ``verify`` records it. promtool evaluates the
relay's rule files over it (groups in file order, as the evaluator does) and reports,
per alert, the first and the last evaluation at which it was firing and at how many
evaluations it was; the evaluator's episodes must give the same three numbers for
every alert it implements. The cases cover every sweepable alert firing, alerts
flapping around their threshold (several episodes, so ``for:`` restarts), scrape gaps
(stale markers) and a relay restart (counter resets).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from loadsim.plan import build_plan
from loadsim.profile import parse_profile
from loadsim.relayconfig import ALERTS, ALERTS_V2, RECORDING_RULES
from loadsim.sensitivity import evaluate, rules
from loadsim.sensitivity.evaluate import UnsupportedError
from loadsim.sensitivity.runs import record
from loadsim.sensitivity.series import EXTRA_LABELS, Labels, Store, dense, milliseconds
from loadsim.verify.promtool import PromtoolCase

V1 = [RECORDING_RULES, ALERTS]
V2 = [RECORDING_RULES, ALERTS_V2]
QUERIES = {
    "first": 'min by (alertname) (min_over_time(timestamp(ALERTS{{alertstate="firing"}})[{end}:30s]))',
    "last": 'max by (alertname) (max_over_time(timestamp(ALERTS{{alertstate="firing"}})[{end}:30s]))',
    "count": 'sum by (alertname) (count_over_time(ALERTS{{alertstate="firing"}}[{end}:30s]))',
}
_BLOCK = re.compile(r'expr: "(?P<expr>(?:[^"\\]|\\.)*)".*?got: (?P<got>[^\n]*)', re.DOTALL)
_SAMPLE = re.compile(r'\{alertname="([^"]+)"\} ([0-9.eE+-]+)')


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed; scripts/setup-stack.sh should have installed it")
        pytest.skip("promtool is not installed (run scripts/setup-stack.sh)")
    return path


Series = dict[tuple[str, tuple[tuple[str, str], ...]], list[float | None]]


def recorded(
    scenario: str | None,
    rate: float,
    seed: int,
    options: dict[str, Any] | None = None,
    *,
    fault: float = 1200.0,
    extra: tuple[dict[str, Any], ...] = (),
) -> Series:
    """15 healthy minutes, the fault, 10 healthy minutes, recorded as verify records them."""
    data: dict[str, Any] = {
        "name": "equivalence",
        "seed": seed,
        "duration": 900.0 + fault + 600.0,
        "schedule": [{"kind": "constant", "rate": rate}],
        "engine": {"virtual_tick": 15.0},
        "overlay": list(extra),
    }
    if scenario is not None:
        data["overlay"].insert(0, {"scenario": scenario, "start": 900.0, "duration": fault, "options": options or {}})
    return record(build_plan(parse_profile(data, "test"), virtual=True)).series()


def restarted(series: Series, at: int) -> Series:
    """The relay restarted at scrape ``at``: every counter starts again from zero (histograms too)."""
    out: Series = {}
    for key, values in series.items():
        base = values[at - 1] if key[0] != "rollout_controller_percent" else None
        out[key] = [v if (i < at or v is None or base is None) else v - base for i, v in enumerate(values)]
    return out


def promtool_firing(promtool: str, series: Series, files: list[Path], tmp: Path) -> dict[str, dict[str, float]]:
    """What promtool says: per query, alertname -> value."""

    class Frozen:  # PromtoolCase reads series() and the scrape count off a recorder
        interval = 15.0

        def __init__(self, s: Series) -> None:
            self._s = s
            self.scrapes = list(range(len(next(iter(s.values())))))

        def series(self) -> Series:
            return self._s

    doc = PromtoolCase("equivalence", Frozen(series), tuple(files)).document()  # type: ignore[arg-type]
    test = doc["tests"][0]
    end = test["promql_expr_test"][0]["eval_time"]
    assert test["interval"] == "15s"
    test["promql_expr_test"] = [
        {"expr": q.format(end=end), "eval_time": end, "exp_samples": []} for q in QUERIES.values()
    ]
    # verify tells promtool the order the evaluator uses (promtool's own is random): files', then groups'.
    assert doc["group_eval_order"] == [g.name for g in rules.load(files).groups]
    path = tmp / "case.test.yml"
    path.write_text(json.dumps(doc), encoding="utf-8")
    proc = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    out = proc.stdout + proc.stderr
    found: dict[str, dict[str, float]] = {name: {} for name in QUERIES}
    for block in _BLOCK.finditer(out):
        expr = block["expr"].replace('\\"', '"')
        name = next(
            n
            for n, fn in (("first", "min_over_time"), ("last", "max_over_time"), ("count", "count_over_time"))
            if fn in expr
        )
        found[name] = {a: float(v) for a, v in _SAMPLE.findall(block["got"])}
    if proc.returncode != 0 and not any(found.values()):
        pytest.fail(f"promtool failed: {out}")
    return found


def store_of(series: Series) -> Store:
    store = Store()
    n = len(next(iter(series.values())))
    t = milliseconds(np.arange(n) * 15.0)
    for (name, labels), values in series.items():
        key: Labels = tuple(sorted({**dict(labels), **dict(EXTRA_LABELS), "__name__": name}.items()))
        present = np.array([v is not None for v in values])
        store.add(key, dense(t, np.array([0.0 if v is None else v for v in values]), present))
    return store


def evaluator_firing(series: Series, files: list[Path]) -> tuple[dict[str, dict[str, float]], list[str]]:
    """What the evaluator says, in promtool's three numbers, over the alerts it implements."""
    rule_set = rules.load(files)
    supported = []
    for alert in rule_set.alerts():
        try:
            evaluate.evaluate(rule_set.closure([alert]), Store(), 60.0)
        except UnsupportedError:
            continue
        supported.append(alert)
    end = (len(next(iter(series.values()))) - 1) * 15.0
    episodes = evaluate.evaluate(rule_set.closure(supported), store_of(series), end)
    out: dict[str, dict[str, float]] = {name: {} for name in QUERIES}
    for alert, eps in episodes.items():
        if not eps:
            continue
        steps = [np.arange(e.fired, end + 1e-9 if e.resolved is None else e.resolved - 1e-9, 30.0) for e in eps]
        out["first"][alert] = eps[0].fired
        out["last"][alert] = float(max(s[-1] for s in steps))
        out["count"][alert] = float(sum(len(s) for s in steps))
    return out, supported


GAP = {"scenario": "metrics-missing", "start": 1650.0, "duration": 300.0}
"""Scrapes fail for 5 minutes (a whole rate window) while the error alerts fire: stale markers, then again."""


def gap() -> Series:
    """40 minutes of 6% errors at 20/s with the scrape gap in the middle."""
    return recorded("error-rate-crit", 20.0, 8, fault=2400.0, extra=(GAP,))


def flapping() -> Series:
    """Two hours at 1.3% errors, 5/s: the 5-minute ratio wanders across 1%, the warning fires and resolves."""
    return recorded("error-rate-warn", 5.0, 5, {"ratio": 0.013}, fault=7200.0)


CASES = [
    pytest.param(lambda: recorded("error-rate-warn", 5.0, 1), V2, id="error-rate-warn@5/s"),
    pytest.param(lambda: recorded("error-rate-crit", 20.0, 2), V1, id="error-rate-crit@20/s"),
    pytest.param(flapping, V1, id="warn-flapping@5/s"),
    pytest.param(lambda: recorded("latency-crit", 5.0, 4, {"p50": 1.0, "p95": 2.2}), V2, id="latency-near-2s@5/s"),
    pytest.param(lambda: recorded("validation-spike", 5.0, 5, {"share": 0.02}), V2, id="validation@5/s"),
    pytest.param(lambda: recorded("sanitization-spike", 5.0, 6, {"per_second": 44.0}), V2, id="sanitization@5/s"),
    pytest.param(lambda: recorded("mime-slow", 10.0, 7), V2, id="mime-slow@10/s"),
    pytest.param(gap, V2, id="scrape-gap@20/s"),
    pytest.param(lambda: restarted(recorded("error-rate-crit", 20.0, 9), 100), V2, id="relay-restart@20/s"),
    pytest.param(lambda: recorded(None, 60.0, 10), V1, id="background@60/s"),
]


@pytest.mark.parametrize(("make", "files"), CASES)
def test_evaluator_fires_when_promtool_does(promtool: str, tmp_path: Path, make: Any, files: list[Path]) -> None:
    series = make()
    mine, supported = evaluator_firing(series, files)
    theirs = promtool_firing(promtool, series, files, tmp_path)
    theirs = {q: {a: v for a, v in got.items() if a in supported} for q, got in theirs.items()}
    assert mine == theirs
    assert theirs["first"], "every case fires something: a case firing nothing would prove little"


def test_the_flapping_case_has_several_episodes() -> None:
    series = flapping()
    end = (len(next(iter(series.values()))) - 1) * 15.0
    found = evaluate.evaluate(rules.load(V1).closure(["GmailSendHighErrorRateWarning"]), store_of(series), end)
    assert len(found["GmailSendHighErrorRateWarning"]) >= 3  # for: restarts twice at least


def test_the_gap_case_resolves_and_fires_again() -> None:
    series = gap()
    end = (len(next(iter(series.values()))) - 1) * 15.0
    found = evaluate.evaluate(rules.load(V2).closure(["GmailSendHighErrorRateWarning"]), store_of(series), end)
    first, second = found["GmailSendHighErrorRateWarning"]
    assert first.resolved is not None
    assert GAP["start"] < first.resolved <= GAP["start"] + GAP["duration"] + 300  # no samples: the rate is gone
    assert second.fired >= first.resolved + 600  # for: 10m from scratch


def test_unsupported_constructs_are_refused_by_name() -> None:
    rule_set = rules.load(V1)
    with pytest.raises(UnsupportedError, match="absent"):
        evaluate.evaluate(rule_set.closure(["GmailMetricsMissing"]), Store(), 60.0)
