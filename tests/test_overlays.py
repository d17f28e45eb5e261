"""Scenario overlays, read back the way the relay's recording rules read them.

Each test runs the engine on the virtual clock with a fixed seed, records a scrape
every 15 s of run time, and computes 5-minute rates and histogram_quantile over
the relay's buckets, before, inside and after the overlay's window.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from loadsim.errors import ConfigError
from loadsim.overlays.scenarios import SCENARIOS
from loadsim.plan import Overrides, apply_overrides, build_plan
from loadsim.profile import parse_profile
from loadsim.runtime.factory import build
from loadsim.verify.recorder import ScrapeRecorder

MIN = 60.0
GS = {"provider": "google", "action": "gmail.send"}


def run(profile: dict[str, Any], seed: int = 11) -> ScrapeRecorder:
    plan = build_plan(parse_profile({"seed": seed, **profile}, "test.toml"), virtual=True)
    run = build(plan)
    assert run.relay is not None
    recorder = ScrapeRecorder(run.relay)
    run.engine.after_window.append(recorder)
    asyncio.run(run.engine.run())
    return recorder


def steady(rate: str, *overlays: dict[str, Any], duration: str = "1h") -> dict[str, Any]:
    return {"duration": duration, "schedule": [{"kind": "constant", "rate": rate}], "overlay": list(overlays)}


def window(scenario: str, start: str = "20m", duration: str = "20m", **options: Any) -> dict[str, Any]:
    return {"scenario": scenario, "start": start, "duration": duration, "options": options}


def error_ratio(r: ScrapeRecorder, t: float) -> float:
    """job:gmail_send_errors_rate:5m."""
    errors = r.rate("action_error_total", t, **GS) or 0.0
    execs = r.rate("action_exec_total", t, **GS) or 0.0
    return errors / max(execs, 1.0)


def p95(r: ScrapeRecorder, t: float, hist: str = "action_latency_seconds") -> float:
    return r.quantile(0.95, hist, t)


BEFORE, INSIDE, AFTER = 19 * MIN, 38 * MIN, 50 * MIN
"""Windows [14m, 19m], [33m, 38m] and [45m, 50m]: wholly before, inside and after 20m..40m."""


class TestErrorScenarios:
    @pytest.mark.parametrize(("scenario", "target"), [("error-rate-warn", 0.02), ("error-rate-crit", 0.06)])
    def test_error_ratio_inside_and_healthy_outside(self, scenario, target):
        r = run(steady("20/s", window(scenario)))
        # 5 min at 20/s = 6000 executions; binomial sd of the ratio = sqrt(p(1-p)/6000).
        sd = math.sqrt(target * (1 - target) / 6000)
        assert abs(error_ratio(r, INSIDE) - target) < 4 * sd
        assert error_ratio(r, BEFORE) < 0.01
        assert error_ratio(r, AFTER) < 0.01

    def test_error_mix_is_not_a_constant(self):
        r = run(steady("20/s", window("error-rate-crit")))
        reasons = {
            reason: r.increase("action_error_total", INSIDE, reason=reason) or 0.0
            for reason in ("gmail_5xx", "gmail_4xx", "gmail_timeout", "gmail_network_error")
        }
        assert all(v > 0 for v in reasons.values()), reasons
        assert reasons["gmail_5xx"] > reasons["gmail_timeout"]

    def test_rate_limit_storm_is_429s(self):
        r = run(steady("20/s", window("rate-limit-storm")))
        gmail_4xx = r.rate("action_error_total", INSIDE, reason="gmail_4xx") or 0.0
        execs = r.rate("action_exec_total", INSIDE) or 1.0
        assert abs(gmail_4xx / execs - 0.0809) < 4 * math.sqrt(0.08 * 0.92 / 6000)
        assert error_ratio(r, INSIDE) > 0.05


class TestLatencyScenarios:
    def test_latency_crit_p95_inside_the_2_5_to_5_bucket(self):
        r = run(steady("10/s", window("latency-crit")))
        assert 2.5 < p95(r, INSIDE) <= 5.0
        assert p95(r, BEFORE) < 0.5
        assert p95(r, AFTER) < 0.5

    def test_latency_warn_between_half_a_second_and_two(self):
        r = run(steady("10/s", window("latency-warn")))
        assert 0.5 < p95(r, INSIDE) <= 2.0
        assert p95(r, BEFORE) < 0.5
        assert p95(r, AFTER) < 0.5


class TestSideSignals:
    def test_validation_spike_uses_the_relay_codes(self):
        r = run(steady("5/s", window("validation-spike")))
        inside = r.rate("structured_error_total", INSIDE, **GS) or 0.0
        # 15% of 5/s, 30% + 20% of them double-counted (gmail.validation): 0.75 * 1.5 = 1.125/s.
        assert 0.9 < inside < 1.35
        assert (r.rate("structured_error_total", BEFORE, **GS) or 0.0) < 0.1
        assert (r.rate("structured_error_total", AFTER, **GS) or 0.0) < 0.1
        too_large = r.increase("structured_error_total", INSIDE, code="validation_error_attachment_too_large")
        by_adapter = r.increase(
            "structured_error_total", INSIDE, code="validation_error_attachment_too_large", source="gmail.adapter"
        )
        assert too_large == 2 * (by_adapter or 0)

    def test_mime_slow_p95_above_half_a_second(self):
        r = run(steady("10/s", window("mime-slow")))
        assert p95(r, INSIDE, "gmail_mime_build_seconds") > 0.5
        assert p95(r, BEFORE, "gmail_mime_build_seconds") < 0.5
        assert p95(r, AFTER, "gmail_mime_build_seconds") < 0.5

    def test_sanitization_spike_above_fifty_per_second(self):
        r = run(steady("5/s", window("sanitization-spike")))
        assert (r.rate("gmail_html_sanitization_changes_total", INSIDE) or 0.0) > 50
        assert (r.rate("gmail_html_sanitization_changes_total", BEFORE) or 0.0) < 50
        assert (r.rate("gmail_html_sanitization_changes_total", AFTER) or 0.0) < 50
        for change_type in ("tag_removed", "attr_removed", "script_blocked", "style_sanitized"):
            assert (r.increase("gmail_html_sanitization_changes_total", INSIDE, change_type=change_type) or 0) > 0

    def test_oauth_refresh_failures_exceed_the_controller_threshold(self):
        r = run(steady("2/s", window("oauth-refresh-failures")))
        failed = r.increase("oauth_events_total", INSIDE, 15 * MIN, event="refresh_failed")
        assert failed is not None
        assert failed > 5
        assert (r.increase("oauth_events_total", BEFORE, 15 * MIN, event="refresh_failed") or 0) <= 5

    def test_traffic_drop_takes_the_rate_below_the_alert_guard(self):
        r = run(steady("5/s", window("traffic-drop")))
        assert (r.rate("action_exec_total", INSIDE) or 0.0) <= 0.1
        assert (r.rate("action_exec_total", BEFORE) or 0.0) > 4


class TestControllerAndMissingMetrics:
    def runs_ok(self, r: ScrapeRecorder, t: float) -> float | None:
        i = r.at(t)
        values = [
            v
            for k, v in r.samples(r.scrapes[i]).items()
            if k[0] == "rollout_controller_runs_total" and ("status", "ok") in k[1]
        ]
        return values[0] if values else None

    def test_frozen_controller_keeps_its_series_unchanged(self):
        r = run(steady("2/s", window("controller-stalled", start="20m", duration="30m", mode="frozen")))
        assert self.runs_ok(r, 15 * MIN) == 2  # runs at 0m and 10m
        frozen = {self.runs_ok(r, t * MIN) for t in range(20, 50, 2)}
        assert frozen == {2.0}  # the 20m run falls inside the stall, and so do 30m and 40m
        assert self.runs_ok(r, 55 * MIN) == 3  # the 50m run, after the window

    def test_absent_controller_series_disappear(self):
        r = run(steady("2/s", window("controller-stalled", start="20m", duration="30m", mode="absent")))
        assert self.runs_ok(r, 15 * MIN) == 2
        assert all(self.runs_ok(r, t * MIN) is None for t in range(21, 50, 2))
        assert self.runs_ok(r, 55 * MIN) is not None

    def test_metrics_missing_leaves_gaps_in_every_scrape(self):
        r = run(steady("2/s", window("metrics-missing")))
        inside = [s.snapshot for s in r.scrapes if 20 * MIN < s.t < 40 * MIN]
        outside = [s.snapshot for s in r.scrapes if s.t < 20 * MIN or s.t > 41 * MIN]
        assert inside
        assert all(s is None for s in inside)
        assert all(s is not None for s in outside)


class TestComposition:
    def test_validation_spike_during_latency_crit_on_diurnal_background(self):
        profile = {
            "duration": "3h",
            "schedule": [{"kind": "diurnal", "trough": "2/s", "peak": "8/s"}],
            "engine": {"virtual_start": "2026-01-05T12:00:00Z"},
            "overlay": [
                window("latency-crit", start="30m", duration="1h"),
                window("validation-spike", start="50m", duration="30m"),
            ],
        }
        r = run(profile)
        t = 75 * MIN  # both active over [70m, 75m]
        assert 2.5 < p95(r, t) <= 5.0
        rate = r.rate("action_exec_total", t) or 0.0
        assert (r.rate("structured_error_total", t) or 0.0) > 0.1 * rate
        t_latency_only = 45 * MIN
        assert 2.5 < p95(r, t_latency_only) <= 5.0
        assert (r.rate("structured_error_total", t_latency_only) or 0.0) < 0.1

    def test_counters_never_go_backwards_through_overlays(self):
        r = run(
            steady(
                "5/s",
                window("error-rate-crit"),
                window("latency-crit", start="30m"),
                window("traffic-drop", start="45m", duration="10m"),
            )
        )
        for key, values in r.series().items():
            if key[0].endswith(("_total", "_count", "_bucket", "_sum")):
                seen = [v for v in values if v is not None]
                assert seen == sorted(seen), key


class TestBadOverlays:
    @pytest.mark.parametrize(
        ("overlay", "expected"),
        [
            ({"scenario": "nope", "start": "1m", "duration": "1m"}, "overlay[0].scenario: unknown scenario 'nope'"),
            (
                {"scenario": "error-rate-warn", "start": "-5m", "duration": "1m"},
                "overlay[0].start: must be >= 0, got '-5m'",
            ),
            (
                {"scenario": "error-rate-warn", "start": "50m", "duration": "15m"},
                "overlay[0]: window 50m00s..1h05m ends after the run (1h00m)",
            ),
            (
                {"scenario": "error-rate-warn", "start": "1m", "duration": "1m", "options": {"bogus": 1}},
                "overlay[0].options: bogus: unknown option for error-rate-warn; allowed: ratio (default 0.02)",
            ),
            (
                {"scenario": "error-rate-warn", "start": "1m", "duration": "1m", "ramp": "40s"},
                "overlay[0]: ramp in and out together must fit in the duration",
            ),
        ],
    )
    def test_rejected_with_file_and_key(self, overlay, expected):
        with pytest.raises(ConfigError) as e:
            build_plan(parse_profile({"duration": "1h", "overlay": [overlay]}, "p.toml"), virtual=True, source="p.toml")
        (problem,) = e.value.problems
        assert str(problem).startswith(f"p.toml: {expected}"), problem

    def test_overlapping_windows_of_one_scenario(self):
        overlays = [
            window("error-rate-warn", start="10m", duration="15m"),
            window("error-rate-warn", start="20m", duration="5m"),
        ]
        with pytest.raises(ConfigError) as e:
            build_plan(parse_profile({"duration": "1h", "overlay": overlays}, "p.toml"), virtual=True, source="p.toml")
        assert [str(p) for p in e.value.problems] == [
            "p.toml: overlay[1]: overlaps overlay[0] of the same scenario (error-rate-warn)"
        ]

    def test_command_line_overlay(self):
        profile = apply_overrides(parse_profile({"duration": "1h"}, "p"), Overrides(overlays=("latency-crit@10m+15m",)))
        plan = build_plan(profile, virtual=True)
        (ov,) = plan.timeline.overlays
        assert (ov.name, ov.start, ov.end) == ("latency-crit", 600.0, 1500.0)
        with pytest.raises(ConfigError) as e:
            apply_overrides(profile, Overrides(overlays=("latency-crit@10m", "x@-1m+1m")))
        assert [str(p) for p in e.value.problems] == [
            "--overlay: expected NAME@START+DURATION, e.g. error-rate-crit@10m+15m, got 'latency-crit@10m'",
            "--overlay x@-1m+1m: scenario: unknown scenario 'x'; expected one of: " + ", ".join(SCENARIOS),
            "--overlay x@-1m+1m: start: must be >= 0, got '-1m'",
        ]

    def test_absolute_start_time(self):
        spec = {"scenario": "latency-crit", "start": "2026-01-05T00:30:00Z", "duration": "10m"}
        plan = build_plan(parse_profile({"duration": "1h", "overlay": [spec]}, "p"), virtual=True)
        assert plan.timeline.overlays[0].start == 1800.0
