"""The controller's queries in process: Prometheus's range selection, extrapolation, matching and quantiles."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from loadsim import contract
from loadsim.contract import MetricOptions
from loadsim.model import catalog
from loadsim.rollout import series
from loadsim.rollout.policy import Fidelity
from loadsim.rollout.series import (
    Sample,
    SampleWindow,
    error_rate,
    extrapolated_rate,
    latency_p95,
    oauth_failures,
    read,
)
from loadsim.sinks.relay_metrics import RelayMetrics

R = len(catalog.ERROR_REASONS)
B = len(contract.LATENCY_BUCKETS) + 1
GMAIL_5XX = catalog.ERROR_REASONS.index("gmail_5xx")


def steady_window(
    until: float,
    *,
    step: float = 15.0,
    ok: int = 0,
    failed: int = 0,
    latency: tuple[int, ...] = (0,) * B,
    oauth: int = 0,
    window: SampleWindow | None = None,
) -> SampleWindow:
    """Scrapes every ``step`` from 0 to ``until`` of counters starting at 0 and growing by these amounts per step.

    ``failed`` sends are Gmail 5xx: executions with ``status="error"`` and ``reason="gmail_5xx"``.
    """
    w = window or SampleWindow.covering(960.0, step)
    for k in range(round(until / step) + 1):
        errors = np.zeros(R, dtype=np.int64)
        errors[GMAIL_5XX] = failed * k
        w.add(
            Sample(
                t=k * step,
                errors=errors,
                exec_by_status=np.array([ok * k, failed * k], dtype=np.int64),
                latency_buckets=np.array(latency, dtype=np.int64) * k,
                oauth_failed=oauth * k,
            )
        )
    return w


class TestExtrapolatedRate:
    """Hand-worked cases of Prometheus's formula: increase * (sampled + to_start + to_end) / sampled."""

    def test_samples_cover_the_range(self) -> None:
        """15..300 s, 1000..1038: extrapolated 15 s back to the start: 38 * 300 / 285 = 40."""
        ts = [15.0 * k for k in range(1, 21)]
        vs = [1000.0 + 2 * (k - 1) for k in range(1, 21)]
        assert extrapolated_rate(ts, vs, 0.0, 300.0, is_rate=False) == pytest.approx(40.0, rel=1e-12)
        assert extrapolated_rate(ts, vs, 0.0, 300.0, is_rate=True) == pytest.approx(40.0 / 300, rel=1e-12)

    def test_series_starts_late_in_the_range(self) -> None:
        """First sample 150 s after the range start (>= 1.1 * 15 s): extrapolate only 7.5 s: 20 * 157.5 / 150 = 21."""
        ts = [150.0 + 15 * i for i in range(11)]
        vs = [1000.0 + 2 * i for i in range(11)]
        assert extrapolated_rate(ts, vs, 0.0, 300.0, is_rate=False) == pytest.approx(21.0, rel=1e-12)

    def test_series_ends_early_in_the_range(self) -> None:
        """Last sample 150 s before the range end: 7.5 s at the end, 15 s at the start: 18 * 157.5 / 135 = 21."""
        ts = [15.0 * k for k in range(1, 11)]
        vs = [1000.0 + 2 * (k - 1) for k in range(1, 11)]
        assert extrapolated_rate(ts, vs, 0.0, 300.0, is_rate=False) == pytest.approx(21.0, rel=1e-12)

    def test_threshold_is_inclusive(self) -> None:
        """A gap of exactly 1.1 average spacings (16.5 s) is too far: half a spacing instead, 30 * 52.5 / 45 = 35."""
        ts = [16.5, 31.5, 46.5, 61.5]
        vs = [1000.0, 1010.0, 1020.0, 1030.0]
        assert extrapolated_rate(ts, vs, 0.0, 61.5, is_rate=False) == pytest.approx(35.0, rel=1e-12)

    def test_counter_reset(self) -> None:
        """100, 110, reset, 5, 15: increase 15 - 100 + 110 = 25, extrapolated 15 s back: 25 * 60 / 45."""
        ts = [15.0, 30.0, 45.0, 60.0]
        vs = [100.0, 110.0, 5.0, 15.0]
        assert extrapolated_rate(ts, vs, 0.0, 60.0, is_rate=False) == pytest.approx(100 / 3, rel=1e-12)
        assert extrapolated_rate(ts, vs, 0.0, 60.0, is_rate=True) == pytest.approx(100 / 3 / 60, rel=1e-12)

    def test_extrapolation_toward_zero_is_capped(self) -> None:
        """1, 11, 21, 31: the counter was 0 just 1.5 s before the first sample: 1.5 s, not 15: 30 * 46.5 / 45 = 31."""
        ts = [15.0, 30.0, 45.0, 60.0]
        vs = [1.0, 11.0, 21.0, 31.0]
        assert extrapolated_rate(ts, vs, 0.0, 60.0, is_rate=False) == pytest.approx(31.0, rel=1e-12)

    def test_counter_from_zero_is_not_extrapolated_back(self) -> None:
        """A first sample of 0 caps the start at 0 s: 0, 10, 20, 30 over (0, 60] reads 30 * 45 / 45 = 30."""
        assert extrapolated_rate([15.0, 30.0, 45.0, 60.0], [0.0, 10.0, 20.0, 30.0], 0.0, 60.0, is_rate=False) == 30.0

    def test_flat_counter(self) -> None:
        assert extrapolated_rate([15.0, 30.0], [7.0, 7.0], 0.0, 60.0, is_rate=True) == 0.0

    @pytest.mark.parametrize("n", [0, 1])
    def test_fewer_than_two_samples_is_no_result(self, n: int) -> None:
        assert extrapolated_rate([15.0] * n, [1.0] * n, 0.0, 60.0, is_rate=True) is None

    def test_timestamps_must_increase(self) -> None:
        with pytest.raises(ValueError, match="strictly increasing"):
            extrapolated_rate([15.0, 15.0], [1.0, 2.0], 0.0, 60.0, is_rate=True)


class TestSampleWindow:
    def test_range_is_left_open(self) -> None:
        """``[300s]`` at 600 selects 300 < t <= 600: not the sample at 300, but the one at 600."""
        w = steady_window(900.0)
        assert [s.t for s in w.samples_in(600.0, 300.0)] == [15.0 * k for k in range(21, 41)]

    def test_bounded(self) -> None:
        """The default window keeps 16 minutes at 15 s: 65 samples, the newest."""
        w = steady_window(3000.0, window=SampleWindow())
        assert len(w) == w.capacity == 65
        assert w.samples_in(3000.0, 10_000.0)[0].t == 3000.0 - 64 * 15

    def test_covering(self) -> None:
        assert SampleWindow.covering(16.0, 1.0).capacity == 17
        assert SampleWindow.covering(960.0).capacity == series.DEFAULT_CAPACITY

    def test_rejects_out_of_order_and_bad_shapes(self) -> None:
        w = steady_window(30.0)
        with pytest.raises(ValueError, match=r"sample.t: must be after the last sample \(30.0\), got 30.0"):
            w.add(w.samples_in(30.0, 1.0)[0])
        bad = Sample(45.0, np.zeros(3, dtype=np.int64), np.zeros(2, dtype=np.int64), np.zeros(B, dtype=np.int64), 0)
        with pytest.raises(ValueError, match=rf"sample.errors: must have shape \({R},\), got \(3,\)"):
            w.add(bad)

    def test_snapshot_round_trips_through_json(self) -> None:
        """A restored window answers every query exactly as the original."""
        w = steady_window(900.0, ok=98, failed=2, latency=(50, 30, 10, 5, 3, 1, 1, 0, 0, 0), oauth=1)
        restored = SampleWindow(2)
        restored.restore(json.loads(json.dumps(w.snapshot())))
        assert restored.capacity == w.capacity
        assert restored.snapshot() == w.snapshot()
        for fidelity in Fidelity:
            assert read(restored, 900.0, fidelity) == read(w, 900.0, fidelity)

    def test_sample_of_relay_totals(self) -> None:
        """A scrape of RelayMetrics sums exec over workspaces and latency over status rows."""
        options = MetricOptions(status_label=True, workspace_ids=("a", "b"))
        relay = RelayMetrics(options, np.random.default_rng(0))
        relay.exec[...] = [[5, 1], [7, 2]]
        relay.errors[GMAIL_5XX] = 3
        relay.latency_buckets[...] = np.arange(2 * B).reshape(2, B)
        relay.oauth[catalog.OAUTH_EVENTS.index("refresh_failed")] = 4
        s = Sample.of(15.0, relay.snapshot())
        assert s.t == 15.0
        assert s.exec_by_status.tolist() == [12, 3]
        assert s.errors.tolist() == relay.errors.tolist()
        assert s.latency_buckets.tolist() == [i + (i + B) for i in range(B)]
        assert s.oauth_failed == 4


class TestQueries:
    def test_constant_two_percent_error_rate(self) -> None:
        """98 ok and 2 failed per second: 0.02 as intended; as implemented no series match, an empty vector."""
        w = steady_window(600.0, ok=98 * 15, failed=2 * 15)
        assert error_rate(w, 600.0, Fidelity.AS_INTENDED) == pytest.approx(0.02, rel=1e-12)
        assert error_rate(w, 600.0, Fidelity.AS_IMPLEMENTED) is None
        intended, implemented = read(w, 600.0, Fidelity.AS_INTENDED), read(w, 600.0, Fidelity.AS_IMPLEMENTED)
        assert intended.error_rate == pytest.approx(0.02, rel=1e-12)
        assert (implemented.error_rate, implemented.raw["error_rate"]) == (0.0, None)

    def test_matching_pairs_identical_label_sets_only(self) -> None:
        """The as-implemented division is the matching rule: it divides where label sets agree, and they never do."""
        same = series._labels(status="ok")
        assert series._match_one_to_one([(same, 6.0)], [(same, 3.0)]) == [(same, 2.0)]
        assert not set(series._ERROR_LABELS) & set(series._EXEC_LABELS)

    def test_clamp_min_understates_low_traffic(self) -> None:
        """0.4 executions/s, 2 of 6 failing: the clamped denominator is 1/s, so 2/15 is read instead of 1/3."""
        w = steady_window(600.0, ok=4, failed=2)
        assert error_rate(w, 600.0, Fidelity.AS_INTENDED) == pytest.approx(2 / 15, rel=1e-12)

    def test_latency_p95_interpolates_in_its_bucket(self) -> None:
        """Bucket rates 90/4/4/2 over (0.25, 0.5], (0.5, 1], (1, 2.5], (2.5, 5]: rank 95 is 1/4 into (1, 2.5]: 1.375."""
        w = steady_window(600.0, latency=(0, 0, 90, 4, 4, 2, 0, 0, 0, 0))
        assert latency_p95(w, 600.0) == pytest.approx(1.375, rel=1e-12)

    def test_latency_p95_in_inf_bucket_is_the_top_bound(self) -> None:
        w = steady_window(600.0, latency=(90, 0, 0, 0, 0, 0, 0, 0, 0, 10))
        assert latency_p95(w, 600.0) == 60.0

    def test_latency_p95_is_nan_without_executions(self) -> None:
        """Old observations but none in the range: every rate 0, and histogram_quantile gives NaN."""
        w = SampleWindow()
        for t in (0.0, 300.0, 315.0, 330.0):
            w.add(Sample(t, np.zeros(R, dtype=np.int64), np.array([9, 1]), np.full(B, 3, dtype=np.int64), 0))
        p95 = latency_p95(w, 330.0)
        assert p95 is not None
        assert math.isnan(p95)

    def test_empty_range_is_no_result(self) -> None:
        """One sample in range: every query is an empty vector, which the controller reads as 0.0."""
        w = steady_window(0.0, ok=10, failed=1, latency=(1,) * B, oauth=1)
        for fidelity in Fidelity:
            assert error_rate(w, 0.0, fidelity) is None
            r = read(w, 0.0, fidelity)
            assert (r.error_rate, r.p95, r.oauth_failures, r.reachable) == (0.0, 0.0, 0.0, True)
            assert r.raw == {"error_rate": None, "p95": None, "oauth_failures": None}
        assert latency_p95(w, 0.0) is None
        assert oauth_failures(w, 0.0) is None

    def test_oauth_failures_over_15_minutes(self) -> None:
        """One failure per scrape: 60 samples in (900, 1800] rose by 59 over 885 s, extrapolated to 900 s: 60."""
        w = steady_window(1800.0, oauth=1)
        assert oauth_failures(w, 1800.0) == pytest.approx(60.0, rel=1e-12)

    def test_read_divides_every_range_by_scale(self) -> None:
        """At 60x with a 1 s scrape: error and latency over 5 s, OAuth over 15 s (86..100 rose 14: 14 * 15 / 14)."""
        w = steady_window(100.0, step=1.0, ok=98, failed=2, latency=(0, 0, 90, 4, 4, 2, 0, 0, 0, 0), oauth=1)
        r = read(w, 100.0, Fidelity.AS_INTENDED, scale=60.0)
        assert r.error_rate == pytest.approx(0.02, rel=1e-12)
        assert r.p95 == pytest.approx(1.375, rel=1e-12)
        assert r.oauth_failures == pytest.approx(15.0, rel=1e-12)
        assert r.raw == {"error_rate": r.error_rate, "p95": r.p95, "oauth_failures": r.oauth_failures}

    def test_monotonic_fix(self) -> None:
        """Prometheus flattens decreasing cumulative bucket rates, and float noise in either direction."""
        assert series._monotonic([1.0, 0.5, 2.0, 1.5, 3.0]) == [1.0, 1.0, 2.0, 2.0, 3.0]
        assert series._monotonic([1.0, 1.0 + 1e-15, 2.0]) == [1.0, 1.0, 2.0]
