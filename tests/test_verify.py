"""loadsim verify: recorded runs become promtool tests; promtool says which alerts fire."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loadsim.cli import main
from loadsim.overlays.scenarios import SCENARIOS
from loadsim.relayconfig import RELAY_CONFIG
from loadsim.verify.matrix import Case, default_cases, default_rule_sets, run_matrix
from loadsim.verify.promtool import PromtoolCase, encode_values, first_firing, group_names, parse_first_firing
from loadsim.verify.recorder import SeriesKey

RECORDING = RELAY_CONFIG / "prometheus" / "prometheus-recording.yml"
ALERTS_V2 = RELAY_CONFIG / "prometheus" / "prometheus-alerts-v2.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed; scripts/setup-stack.sh should have installed it")
        pytest.skip("promtool is not installed (run scripts/setup-stack.sh)")
    return path


class TestSeriesNotation:
    @pytest.mark.parametrize(
        ("values", "expected"),
        [
            ([1.0, 2.0, 3.0], "1 2 3"),
            ([0.0, 0.0, 0.0, 0.0], "0x3"),  # promtool: 0x3 is four zeros
            ([5.0, None, None, None, 7.0], "5 stale _x2 7"),  # a failed scrape marks series stale once
            ([None, None, 3.0], "_x2 3"),  # absent before the series first appears: no stale marker
            ([1.5, 1.5, 2.25], "1.5x1 2.25"),
        ],
    )
    def test_encode(self, values, expected):
        assert encode_values(values) == expected

    def test_round_trip_through_promtool(self, promtool: str, tmp_path: Path) -> None:
        rules = tmp_path / "r.yml"
        rules.write_text("groups:\n- name: g\n  rules:\n  - record: y\n    expr: x * 2\n")
        values = [1.0, 1.0, 1.0, None, None, 4.0, 4.0, 6.5]
        doc = {
            "rule_files": [str(rules)],
            # promtool only sees input samples up to the last evaluation step before an eval_time,
            # so the steps must fall on every sample checked here.
            "evaluation_interval": "15s",
            "tests": [
                {
                    "interval": "15s",
                    "input_series": [{"series": 'x{a="b"}', "values": encode_values(values)}],
                    # In time order: promtool evaluates as it goes, and an earlier eval_time listed
                    # after a later one sees the wrong data.
                    "promql_expr_test": [
                        {
                            "expr": "x",
                            "eval_time": f"{i * 15}s",
                            "exp_samples": [] if v is None else [{"labels": 'x{a="b"}', "value": v}],
                        }
                        for i, v in enumerate(values)
                        if v is not None or i == 3  # 45 s: the stale marker hides the old value
                    ],
                }
            ],
        }
        path = tmp_path / "t.yml"
        path.write_text(json.dumps(doc))
        proc = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_parse_first_firing():
    output = """  FAILED:
    expr: "min by (alertname) (...)", time: 1h20m,
        exp: nil
        got: {alertname="GmailSendErrorBudgetFastBurn"} 1.68E+03, {alertname="GmailSendHighErrorRateCritical"} 2.07E+03
"""
    assert parse_first_firing(output) == {
        "GmailSendErrorBudgetFastBurn": 1680.0,
        "GmailSendHighErrorRateCritical": 2070.0,
    }


@pytest.mark.usefixtures("promtool")
class TestMatrix:
    def test_scenarios_fire_what_they_declare(self, tmp_path: Path) -> None:
        cases = [
            c
            for c in default_cases(background_hours=2)
            if c.label
            in {
                "background",
                "error-rate-crit",
                "latency-crit",
                "sanitization-spike",
                "controller-stalled[mode=frozen]",
            }
        ]
        rows = {r.case.label: r for r in run_matrix(cases, [RECORDING, ALERTS_V2], export=tmp_path)}
        assert all(r.ok for r in rows.values()), {k: (r.missing, r.unexpected) for k, r in rows.items()}
        assert rows["background"].fired == {}
        assert rows["controller-stalled[mode=frozen]"].fired == {}
        crit = rows["error-rate-crit"].fired
        # for: 10m over 5-minute windows: the critical cannot fire before 10 minutes, and does within the window.
        assert 10 <= crit["GmailSendHighErrorRateCritical"] <= 30
        assert set(crit) >= {"GmailSendHighErrorRateCritical", "GmailSendHighErrorRateWarning"}
        assert set(rows["latency-crit"].fired) == {"GmailSendHighLatencyCritical", "GmailSendHighLatencyWarning"}
        assert set(rows["sanitization-spike"].fired) == {"HighSanitizationActivity"}
        # The generated files are kept and are valid promtool input on their own.
        kept = sorted(p.name for p in tmp_path.glob("*.test.yml"))
        assert "error-rate-crit.test.yml" in kept

    def test_a_missing_alert_is_a_mismatch(self) -> None:
        # With the recording rules alone nothing can fire: every declared alert is missing.
        (row,) = run_matrix([Case("latency-crit", "latency-crit", fires=SCENARIOS["latency-crit"].fires)], [RECORDING])
        assert not row.ok
        assert set(row.missing) == {"GmailSendHighLatencyCritical", "GmailSendHighLatencyWarning"}

    def test_an_undeclared_alert_is_a_mismatch(self) -> None:
        # Declaring that validation-spike fires only its own alert: the error-rate alerts it really
        # fires (the relay counts structured codes as errors) are reported as unexpected.
        case = Case("validation-spike", "validation-spike", fires=("GmailValidationErrorSpike",))
        (row,) = run_matrix([case], [RECORDING, ALERTS_V2])
        assert not row.ok
        assert "GmailSendHighErrorRateCritical" in row.unexpected


@pytest.mark.slow
@pytest.mark.usefixtures("promtool")
def test_full_matrix_both_alert_files_48h_background() -> None:
    """The must-show: every scenario against both alert files, 48 virtual hours of background."""
    proc = subprocess.run(
        [sys.executable, "-m", "loadsim", "verify"], capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("ok   background") == 2
    assert "FAIL" not in proc.stdout
    assert "finding: RolloutControllerStalled uses absent_over_time" in proc.stdout
    print(proc.stdout)


def test_default_rule_sets_exist():
    for rules in default_rule_sets():
        for p in rules:
            assert Path(p).is_file(), p


class TestRuleFilesCheckedFirst:
    """A file promtool refuses is refused before any run, in promtool's own words (it was a traceback or exit 4)."""

    @pytest.mark.parametrize(
        ("text", "why"),
        [
            ("groups:\n- name: [oops\n", "yaml: line 1: did not find expected"),
            ("- a list\n", "cannot unmarshal !!seq"),
            ("groups:\n- rules: []\n", "Groupname must not be empty"),
            ("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: rate(x[5m]\n", "unclosed left parenthesis"),
        ],
    )
    @pytest.mark.usefixtures("promtool")
    def test_a_file_promtool_refuses(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, why: str
    ) -> None:
        bad = tmp_path / "bad.yml"
        bad.write_text(text)
        assert main(["verify", "--rules", str(RECORDING), str(bad), "--scenario", "latency-crit"]) == 2
        [line] = capsys.readouterr().err.splitlines()
        assert line.startswith(f"loadsim: --rules: {bad}: "), line
        assert why in line
        assert line.endswith("; expected a Prometheus rule file")


class TestGroupOrder:
    """promtool is told the groups' order, so an alert reading another group's recording rule fires at one time."""

    RECORD = "- name: {name}\n  interval: 30s\n  rules:\n  - record: job:x:max\n    expr: max(x)\n"
    ALERT = "- name: {name}\n  interval: 30s\n  rules:\n  - alert: XHigh\n    expr: job:x:max > 5\n"

    def test_names_in_file_order_each_once(self, tmp_path: Path) -> None:
        a, b = tmp_path / "a.yml", tmp_path / "b.yml"
        a.write_text("groups:\n" + self.ALERT.format(name="zeta") + self.RECORD.format(name="alpha"))
        b.write_text("groups:\n" + self.RECORD.format(name="alpha") + self.RECORD.format(name="mid"))
        assert group_names([a, b]) == ["zeta", "alpha", "mid"]

    def test_same_first_firing_every_run(self, promtool: str, tmp_path: Path) -> None:
        # The alerts' group first: in the order given, the alert reads the recording rule one step
        # late every time. Unordered, promtool picked the other order in 5 of 40 runs (measured),
        # so 20 runs pass without the order about 7% of the time.
        rules = tmp_path / "rules.yml"
        rules.write_text("groups:\n" + self.ALERT.format(name="alerts") + self.RECORD.format(name="recording"))
        case = PromtoolCase("order", _Recorded(30.0, {("x", ()): [0.0] * 11 + [10.0] * 20}), (rules,))  # type: ignore[arg-type]
        assert case.document()["group_eval_order"] == ["alerts", "recording"]
        firings = {first_firing(case, tmp_path, promtool)["XHigh"] for _ in range(20)}
        assert firings == {360.0}


class _Recorded:
    """What PromtoolCase reads off a recorder: the scrape interval, the scrapes, the series."""

    def __init__(self, interval: float, series: dict[SeriesKey, list[float | None]]) -> None:
        self.interval = interval
        self._series = series
        self.scrapes = list(range(len(next(iter(series.values())))))

    def series(self) -> dict[SeriesKey, list[float | None]]:
        return self._series
