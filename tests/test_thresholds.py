"""Thresholds: expressions, measures, the judge on the virtual clock, abort_on_fail, exit codes for both drivers."""

from __future__ import annotations

import asyncio
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import loadsim_process, make_plan
from hdrh.histogram import HdrHistogram

from loadsim.cli import main
from loadsim.runtime.factory import build
from loadsim.runtime.measures import hdr_counts, hdr_values, sample_reader
from loadsim.sinks.summary import LatencyQuantiles
from loadsim.thresholds import EXIT_THRESHOLDS, Histogram, Judge, parse_option, parse_threshold

pytestmark = pytest.mark.bad_input  # any traceback in a test's captured output fails it (conftest)

VIRTUAL = ["--virtual", "--no-listen", "--progress", "off", "--log-format", "json"]


class TestExpressions:
    @pytest.mark.parametrize(
        ("metric", "text", "aggregation", "op", "bound", "window"),
        [
            ("latency", "p(95)<500ms", "p", "<", 0.5, None),
            ("latency", "p(99.9) <= 2s every 5m", "p", "<=", 2.0, 300.0),
            ("latency", "med<300", "p", "<", 0.3, None),  # a bare latency is milliseconds, as in k6
            ("latency", "max<1m", "max", "<", 60.0, None),
            ("errors", "rate<1%", "rate", "<", 0.01, None),
            ("errors", "count<=10", "count", "<=", 10.0, None),
            ("achieved_rate", "ratio>0.95", "ratio", ">", 0.95, None),
            ("achieved_rate", "value>=40/s", "value", ">=", 40.0, None),
            ("drops", "count==0", "count", "==", 0.0, None),
            ("reason.gmail_5xx", "rate<0.001 every 1h", "rate", "<", 0.001, 3600.0),
        ],
    )
    def test_valid(self, metric, text, aggregation, op, bound, window):  # noqa: PLR0917 - one per column
        th = parse_threshold(metric, text)
        assert (th.aggregation, th.op, th.window) == (aggregation, op, window)
        assert th.bound == pytest.approx(bound)

    @pytest.mark.parametrize(
        ("metric", "item", "message"),
        [
            ("latency", "rate<1", "latency has no aggregation 'rate'; expected one of: p(N), med, max"),
            (
                "latency",
                "p(95)<5xx",
                "expected a latency such as 500ms, 1.5s or 500 (milliseconds, as in k6), got '5xx'",
            ),
            ("latency", "p(0)<1s", "p(N) needs 0 < N <= 100, got p(0)"),
            ("errors", "rate 0.1", "expected AGGREGATION OP VALUE [every DURATION] such as rate<0.01, got 'rate 0.1'"),
            ("errors", "rate<0.1 every 0s", "window must be > 0, got '0s'"),
            (
                "errors",
                "rate<0.1, abort",
                "unknown option 'abort' after the expression; expected abort_on_fail or delay_abort_eval=DURATION",
            ),
            ("errors", {"threshold": "rate<0.1", "delay_abort_eval": "1m"}, "delay_abort_eval goes with abort_on_fail"),
            (
                "errors",
                {"threshold": "rate<0.1", "x": 1},
                "unknown key 'x'; expected: threshold, window, abort_on_fail, delay_abort_eval",
            ),
            (
                "p95",
                "x<1",
                (
                    "unknown measure 'p95'; expected one of: errors, latency, latency_intended, achieved_rate, drops, "
                    "reason.NAME"
                ),
            ),
            ("reason", "count<1", "expected reason.NAME, e.g. reason.gmail_5xx"),
        ],
    )
    def test_refused_with_what_was_expected(self, metric, item, message):
        with pytest.raises(ValueError, match=re.escape(message)) as e:
            parse_threshold(metric, item)
        assert str(e.value) == message

    def test_option_form_carries_abort_and_delay(self):
        th = parse_option("errors:rate<0.05 every 1m, abort_on_fail, delay_abort_eval=30s")
        assert (th.metric, th.window, th.abort_on_fail, th.delay_abort_eval) == ("errors", 60.0, True, 30.0)
        assert th.label == "errors rate<0.05 every 1m (abort_on_fail after 30s)"

    def test_bad_profile_thresholds_exit_2_naming_file_and_key(self, tmp_path: Path, capsys):
        profile = tmp_path / "p.toml"
        profile.write_text(
            '[thresholds]\nlatency = ["p(95)<500ms", "p(99)<bad"]\n[thresholds.reason]\ngmail_5xx = ["p(95)<1"]\n'
        )
        assert main(["run", str(profile), *VIRTUAL]) == 2
        err = capsys.readouterr().err.splitlines()
        assert err == [
            (
                f"loadsim: {profile}: thresholds.latency[1]: expected a latency such as 500ms, 1.5s or 500 "
                "(milliseconds, as in k6), got 'bad'"
            ),
            (
                f"loadsim: {profile}: thresholds.reason: gmail_5xx[0]: reason.gmail_5xx has no aggregation 'p(95)'; "
                "expected one of: count, rate"
            ),
        ]

    def test_what_the_driver_cannot_measure_is_refused_before_the_run(self, capsys):
        argv = ["run", *VIRTUAL, "--threshold", "latency_intended:p(99)<1s", "--threshold", "reason.5xx:count<1"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "loadsim: --threshold: latency_intended is the HTTP driver's" in err
        assert "loadsim: --threshold: unknown reason '5xx'; expected one of:" in err
        assert main(["run", *VIRTUAL, "--threshold", "latency p(95)<1s"]) == 2
        assert "expected METRIC:EXPRESSION such as latency:p(95)<500ms" in capsys.readouterr().err


class TestHistogram:
    def test_whole_run_quantiles_are_the_summary_s(self):
        rng = np.random.default_rng(7)
        lq = LatencyQuantiles()
        lq.add(rng.lognormal(-1.5, 1.0, 20_000))
        h = Histogram(lq.counts, LatencyQuantiles.values())
        for q in (0.5, 0.9, 0.95, 0.99, 0.999):
            assert h.quantile(q) == lq.quantile(q)

    def test_hdr_quantiles_are_hdrhistogram_s(self):
        hdr = HdrHistogram(1, 600_000_000, 3)
        rng = np.random.default_rng(3)
        for v in rng.lognormal(12, 2, 5000).astype(np.int64):
            hdr.record_value(int(min(max(v, 1), 600_000_000)))
        counts = hdr_counts(hdr)
        assert counts is not None
        h = Histogram(counts, hdr_values(hdr), hdr=True)
        for q in (0.5, 0.9, 0.95, 0.99, 0.999, 0.123):
            assert h.quantile(q) == hdr.get_value_at_percentile(q * 100) / 1e6
        assert h.maximum() == hdr.get_max_value() / 1e6

    def test_a_window_is_the_difference_of_two_snapshots(self):
        lq = LatencyQuantiles()
        lq.add(np.full(1000, 0.1))
        before = Histogram(lq.counts, LatencyQuantiles.values()).frozen()
        lq.add(np.full(100, 5.0))
        now = Histogram(lq.counts, LatencyQuantiles.values())
        assert now.quantile(0.5, before) == pytest.approx(5.0, rel=0.012)  # one log bin: 1.2%
        assert now.quantile(0.5) == pytest.approx(0.1, rel=0.012)
        assert math.isnan(now.quantile(0.5, now.frozen()))


def _judged(plan_keys: dict, thresholds: list[str]) -> tuple[Judge, object, list[float]]:
    """Run a virtual plan with a judge after every window; returns it, the run and when an abort fired."""
    plan = make_plan(**plan_keys)
    run = build(plan)
    read = sample_reader(run)
    aborts: list[float] = []

    def on_abort(_verdict):
        aborts.append(run.engine.t)
        run.engine.request_stop()

    judge = Judge([parse_option(t) for t in thresholds], read, on_abort=on_abort)
    run.engine.after_window.append(judge.after_window)
    result = asyncio.run(run.engine.run())
    return judge, (run, read, result), aborts


class TestJudgeOnTheVirtualClock:
    def test_one_slow_window_fails_the_windowed_bound_but_not_the_whole_run(self):
        # 1 hour at 20/s; latency-crit (p95 3.6 s) acts in [25m, 30m): the fifth 5-minute window.
        # Over the run 1/12 of the sends are slow, under the 5% that would move the whole-run p95.
        keys = {
            "duration": "1h",
            "schedule": [{"kind": "constant", "rate": "20/s"}],
            "overlay": [{"scenario": "latency-crit", "start": "25m", "duration": "5m"}],
        }
        judge, (run, read, result), _ = _judged(keys, ["latency:p(95)<2s every 5m", "latency:p(95)<2s"])
        windowed, whole = judge.verdicts(read(result.run_seconds))
        assert (windowed.ok, windowed.windows, windowed.failed_windows) == (False, 12, 1)
        assert windowed.worst_window == 1500.0
        assert windowed.value > 2.0
        assert whole.ok
        assert whole.value == run.summary.latency.quantile(0.95)

    def test_abort_on_fail_stops_within_the_delay_plus_one_tick(self):
        # error-rate-crit from the start: the error ratio is far above 1% at once, so the abort
        # fires at the first window past the delay; the virtual tick is 5 s.
        keys = {
            "duration": "2h",
            "schedule": [{"kind": "constant", "rate": "20/s"}],
            "overlay": [{"scenario": "error-rate-crit", "start": "0s", "duration": "2h"}],
        }
        judge, (run, _read, result), aborts = _judged(keys, ["errors:rate<0.01, abort_on_fail, delay_abort_eval=1m"])
        tick = run.plan.tick
        assert len(aborts) == 1
        assert 60.0 <= aborts[0] <= 60.0 + tick
        assert result.stopped_early
        assert result.run_seconds <= 60.0 + tick
        assert judge.aborted is not None
        assert judge.aborted.threshold.metric == "errors"

    def test_a_lull_is_not_a_failing_window(self):
        keys = {
            "duration": "30m",
            "schedule": [{"kind": "constant", "rate": "5/s"}],
            # 0.0001/s: 0.03 sends expected per 5-minute window, so (seed 1) none at all in the lull.
            "overlay": [{"scenario": "traffic-drop", "start": "10m", "duration": "10m", "options": {"rate": 0.0001}}],
        }
        judge, (run, read, result), _ = _judged(keys, ["errors:rate<0.5 every 5m", "achieved_rate:ratio>0.5 every 5m"])
        errors, achieved = judge.verdicts(read(result.run_seconds))
        assert run.engine.counts.started == pytest.approx(20 * 60 * 5, rel=0.05)  # 20 minutes at 5/s, Poisson
        assert errors.ok
        # Skipped: [15m, 20m) alone; [10m, 15m) still sees the sends that finish in its first seconds.
        assert errors.windows == 5
        assert not achieved.ok  # but the achieved rate did fall: those windows count
        assert (achieved.windows, achieved.failed_windows) == (6, 2)


class TestExitCodes:
    def test_simulated_driver_passing_0_failing_99_and_the_summary_fields(self, tmp_path: Path):
        out = tmp_path / "s.json"
        base = ["run", *VIRTUAL, "--duration", "10m", "--rate", "10/s", "--summary-json", str(out)]
        assert main([*base, "--threshold", "errors:rate<0.5", "--threshold", "latency:p(95)<10s"]) == 0
        s = json.loads(out.read_text())
        assert s["thresholds_ok"] is True
        assert [t["ok"] for t in s["thresholds"]] == [True, True]
        assert s["thresholds"][0]["value"] == pytest.approx(s["error_ratio"])
        assert main([*base, "--threshold", "latency:p(50)<1ms"]) == EXIT_THRESHOLDS == 99
        s = json.loads(out.read_text())
        assert s["thresholds_ok"] is False
        assert s["thresholds"][0]["value"] == pytest.approx(s["latency_seconds"]["p50"], rel=1e-3)

    def test_a_run_without_thresholds_has_no_new_summary_fields(self, tmp_path: Path):
        out = tmp_path / "s.json"
        assert main(["run", *VIRTUAL, "--duration", "1m", "--summary-json", str(out)]) == 0
        assert not {"thresholds", "thresholds_ok", "aborted_by_threshold"} & set(json.loads(out.read_text()))

    def test_http_driver_passing_0_failing_99(self, tmp_path: Path, monkeypatch):
        monkeypatch.setenv("LOADSIM_TEST_TOKEN", "token-1")
        out = tmp_path / "s.json"
        with loadsim_process("fake-gmail", "--listen", "127.0.0.1:0", "--log-format", "json") as fake:
            url = fake.wait_for_event("fakegmail.listening")["url"]
            base = [
                "run", "--driver", "http", "--target", url, "--token-env", "LOADSIM_TEST_TOKEN", "--no-listen",
                "--progress", "off", "--log-format", "json", "--rate", "20/s", "--duration", "2s", "--grace", "1s",
                "--summary-json", str(out),
            ]  # fmt: skip
            passing = ["--threshold", "errors:rate<0.5", "--threshold", "latency_intended:p(99)<20s"]
            assert main([*base, *passing, "--threshold", "reason.2xx:count>0"]) == 0
            s = json.loads(out.read_text())
            assert s["thresholds_ok"] is True
            assert main([*base, "--threshold", "latency:p(50)<1ms"]) == 99
            s = json.loads(out.read_text())
            assert s["thresholds"][0]["value"] == pytest.approx(s["latency_from_actual_seconds"]["p50"])
