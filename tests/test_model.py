"""The outcome model: class frequencies, latency shape, and how the relay would account for each send."""

from __future__ import annotations

import dataclasses
import math
from statistics import NormalDist

import numpy as np
import pytest
from conftest import Samples, buckets, scrape, total
from prometheus_client import CollectorRegistry

from loadsim.contract import MetricOptions
from loadsim.model import catalog
from loadsim.model.params import (
    AttachmentParams,
    LatencyParams,
    MimeParams,
    ModelParams,
    default_error_probabilities,
)
from loadsim.model.sampler import MAX_ATTACHMENTS, Z95, Executions, OutcomeModel, StartEffects
from loadsim.sinks.relay_metrics import RelayMetrics

NO_ERRORS = dict.fromkeys(default_error_probabilities(), 0.0)
QUIET_MIME = MimeParams(base_p50=1e-6, base_p95=2e-6, per_attachment=0.0, per_megabyte=0.0)
NO_ATTACHMENTS = AttachmentParams(probability=0.0)


def params(errors: dict[str, float] | None = None, **kw: object) -> ModelParams:
    """Model parameters with only ``errors`` as error classes (the healthy defaults removed)."""
    return ModelParams(errors={**NO_ERRORS, **(errors or {})}, **kw)  # type: ignore[arg-type]


def sample(p: ModelParams, n: int, seed: int) -> tuple[StartEffects, Executions]:
    return OutcomeModel(p).sample(np.random.default_rng(seed), np.zeros(n))


def relay_scrape(p: ModelParams, n: int, seed: int, options: MetricOptions | None = None) -> Samples:
    """Sample ``n`` sends, record them all (as if every one had completed), and scrape."""
    effects, done = sample(p, n, seed)
    relay = RelayMetrics(options or MetricOptions(), np.random.default_rng(seed + 1))
    relay.record_starts(effects)
    relay.record_executions(done)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(relay)
    return scrape(registry)


def all_classes(effects: StartEffects, done: Executions) -> np.ndarray:
    """Sends per outcome class, early guards and executions together."""
    return effects.guard_counts + np.bincount(done.cls, minlength=catalog.K)


def within_binomial(k: float, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(k - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


class TestClassFrequencies:
    N = 1_000_000

    def test_configured_mix(self) -> None:
        # Every non-ok class at a probability big enough that 5 binomial sd is a sharp test.
        errors = {c.name: 0.002 * (1 + i % 5) for i, c in enumerate(catalog.CLASSES) if c.name != "ok"}
        p = params(errors, latency=LatencyParams(tail_fraction=0.0))
        counts = all_classes(*sample(p, self.N, 1))
        assert counts.sum() == self.N
        for c, k in zip(catalog.CLASSES, counts, strict=True):
            want = errors.get(c.name, 1.0 - sum(errors.values()))
            assert within_binomial(k, self.N, want), (c.name, int(k), self.N * want)

    def test_healthy_defaults(self) -> None:
        p = ModelParams(latency=LatencyParams(tail_fraction=0.0))
        counts = all_classes(*sample(p, self.N, 2))
        for c, k in zip(catalog.CLASSES, counts, strict=True):
            want = p.errors.get(c.name, 1.0 - sum(p.errors.values()))
            assert within_binomial(k, self.N, want), (c.name, int(k), self.N * want)

    def test_zero_probability_never_happens(self) -> None:
        counts = all_classes(*sample(params({"gmail_5xx": 0.5}), 200_000, 3))
        nonzero = {c.name for c, k in zip(catalog.CLASSES, counts, strict=True) if k}
        assert nonzero == {"ok", "gmail_5xx"}

    def test_probabilities_adding_to_one_leave_no_ok(self) -> None:
        counts = all_classes(*sample(params({"gmail_4xx": 0.25, "rollout_gated": 0.75}), 200_000, 4))
        assert counts[catalog.OK] == 0
        assert within_binomial(counts[catalog.CLASS_INDEX["gmail_4xx"]], 200_000, 0.25)


class TestLatency:
    N = 500_000

    @pytest.mark.parametrize(("p50", "p95"), [(0.14, 0.28), (0.05, 0.4), (1.0, 1.5)])
    def test_call_body_quantiles(self, p50: float, p95: float) -> None:
        # Only the lognormal body: no tail, no errors, MIME ~1 microsecond, no attachments.
        p = params(
            latency=LatencyParams(p50=p50, p95=p95, tail_fraction=0.0), mime=QUIET_MIME, attachments=NO_ATTACHMENTS
        )
        _, done = sample(p, self.N, 5)
        # Sample-quantile sd for 500k draws: p50 0.18% * sigma, p95 0.3% * sigma (sigma <= 1.3)
        # of the value; 1% is about 3 to 5 sd for the widest case.
        assert np.quantile(done.latency, 0.5) == pytest.approx(p50, rel=0.01)
        assert np.quantile(done.latency, 0.95) == pytest.approx(p95, rel=0.01)

    def test_tail_fraction_moves_the_high_quantiles_only(self) -> None:
        base = params(mime=QUIET_MIME, attachments=NO_ATTACHMENTS, latency=LatencyParams(tail_fraction=0.0))
        tail = params(mime=QUIET_MIME, attachments=NO_ATTACHMENTS, latency=LatencyParams(tail_fraction=0.05))
        _, a = sample(base, self.N, 6)
        _, b = sample(tail, self.N, 6)
        sigma = math.log(2.0) / Z95
        assert np.quantile(a.latency, 0.5) == pytest.approx(0.14, rel=0.01)
        # The tail (median 1.2 s) sits almost wholly above the body's median, so the mixture's
        # median is the body's 0.5 / 0.95 quantile (z = 0.066): 0.14 * exp(0.066 * sigma).
        z = NormalDist().inv_cdf(0.5 / 0.95)
        assert np.quantile(b.latency, 0.5) == pytest.approx(0.14 * math.exp(z * sigma), rel=0.01)
        # 5% of calls from a tail with median 1.2 s: about 2.5% of sends over 1 s (body: ~0).
        assert (a.latency > 1.0).mean() < 1e-4
        assert within_binomial((b.latency > 1.0).sum(), self.N, 0.05 * 0.5 * 1.18, sigmas=6)

    def test_latency_includes_the_mime_build(self) -> None:
        slow_mime = MimeParams(base_p50=0.5, base_p95=0.6, per_attachment=0.0, per_megabyte=0.0)
        p = params(latency=LatencyParams(tail_fraction=0.0), mime=slow_mime, attachments=NO_ATTACHMENTS)
        _, done = sample(p, 200_000, 7)
        assert np.quantile(done.latency, 0.5) == pytest.approx(0.14 + 0.5, rel=0.02)

    def test_done_at_is_start_plus_latency(self) -> None:
        starts = np.linspace(0.0, 5.0, 10_000)
        _, done = OutcomeModel(ModelParams()).sample(np.random.default_rng(8), starts)
        assert np.all(done.latency > 0)
        assert np.all(done.done_at >= done.latency)  # starts >= 0
        assert np.all(done.done_at <= 5.0 + done.latency + 1e-12)


class TestRelayAccounting:
    """How each stage shows up in the relay's counters (the catalogue's rules, through RelayMetrics)."""

    N = 200_000

    def test_early_guards_are_not_executions(self) -> None:
        guards = {"provider_disabled": 0.1, "rollout_gated": 0.2, "validation_error": 0.3, "oauth_token_missing": 0.4}
        p = params(guards)
        effects, done = sample(p, self.N, 10)
        assert len(done) == 0
        assert int(effects.guard_counts.sum()) == self.N
        assert len(effects.mime_seconds) == 0
        assert effects.oauth.sum() == 0  # no token refresh before a guard
        s = relay_scrape(p, self.N, 10)
        assert total(s, "action_exec_total") == 0
        assert total(s, "action_latency_seconds_count") == 0
        assert total(s, "action_latency_seconds_sum") == 0
        assert total(s, "gmail_mime_build_seconds_count") == 0
        assert total(s, "structured_error_total") == 0
        assert total(s, "action_error_total") == self.N
        for reason, prob in guards.items():
            assert within_binomial(total(s, "action_error_total", reason=reason), self.N, prob)

    def test_early_guard_mix_with_ok(self) -> None:
        p = params({"oauth_token_missing": 0.05})
        effects, done = sample(p, self.N, 11)
        s = relay_scrape(p, self.N, 11)
        guards = total(s, "action_error_total", reason="oauth_token_missing")
        assert guards == effects.guard_counts.sum()
        assert total(s, "action_exec_total") == len(done) == self.N - guards
        assert total(s, "action_exec_total", status="error") == 0
        assert total(s, "action_latency_seconds_count") == len(done)

    @pytest.mark.parametrize("code", catalog.STRUCTURED_CODES)
    def test_structured_code(self, code: str) -> None:
        n = 20_000
        p = params({code: 0.5})
        effects, done = sample(p, n, 12)
        s = relay_scrape(p, n, 12)
        k = total(s, "action_error_total", reason=code)
        assert within_binomial(k, n, 0.5)
        assert total(s, "action_error_total") == k
        assert total(s, "action_exec_total", status="error") == k
        assert total(s, "action_exec_total", status="ok") == n - k
        assert total(s, "action_latency_seconds_count") == n  # structured failures observe latency
        assert total(s, "structured_error_total", code=code, source="gmail.adapter") == k
        validation = total(s, "structured_error_total", code=code, source="gmail.validation")
        assert validation == (k if code in catalog.DOUBLE_COUNTED_CODES else 0)
        assert total(s, "structured_error_total") == k * (2 if code in catalog.DOUBLE_COUNTED_CODES else 1)
        # They fail while the message is built: no MIME build time is observed for them.
        assert len(effects.mime_seconds) == n - k
        assert total(s, "gmail_mime_build_seconds_count") == n - k
        # And fast: a validation failure takes milliseconds, not a Gmail call.
        failed = done.latency[done.cls == catalog.CLASS_INDEX[code]]
        assert np.median(failed) == pytest.approx(0.004, rel=0.05)

    def test_only_two_codes_count_under_gmail_validation(self) -> None:
        s = relay_scrape(ModelParams(), 10, 13)
        validation_codes = {
            dict(labels)["code"]
            for (name, labels) in s
            if name == "structured_error_total" and ("source", "gmail.validation") in labels
        }
        assert validation_codes == {"validation_error_attachment_too_large", "validation_error_blocked_mime_type"}

    @pytest.mark.parametrize(
        ("cls", "reason"),
        [
            ("gmail_429", "gmail_4xx"),
            ("gmail_4xx", "gmail_4xx"),
            ("gmail_5xx", "gmail_5xx"),
            ("gmail_network_error", "gmail_network_error"),
            ("gmail_timeout", "gmail_timeout"),
        ],
    )
    def test_gmail_failures_are_error_executions(self, cls: str, reason: str) -> None:
        n = 20_000
        p = params({cls: 0.3}, latency=LatencyParams(tail_fraction=0.0))
        s = relay_scrape(p, n, 14)
        k = total(s, "action_error_total", reason=reason)
        assert within_binomial(k, n, 0.3)
        assert total(s, "action_error_total") == k
        assert total(s, "action_exec_total", status="error") == k
        assert total(s, "structured_error_total") == 0
        assert total(s, "gmail_mime_build_seconds_count") == n  # Gmail failures built their message

    def test_timeouts_observe_about_30_seconds(self) -> None:
        n = 100_000
        p = params({"gmail_timeout": 0.1})
        s = relay_scrape(p, n, 15, MetricOptions(status_label=True))
        count = total(s, "action_latency_seconds_count", status="error")
        assert within_binomial(count, n, 0.1)
        # 30 s timeout + MIME build (mean ~16 ms) + exponential overhead (mean 5 ms).
        assert 30.0 <= total(s, "action_latency_seconds_sum", status="error") / count <= 30.2
        err = dict(_cumulative(s, status="error"))
        assert err[30.0] == 0
        assert err[60.0] == count
        ok = dict(_cumulative(s, status="ok"))
        assert ok[30.0] == ok[math.inf] == n - count  # no ok send near the timeout

    def test_calls_slower_than_the_timeout_become_timeouts(self) -> None:
        n = 50_000
        # Calls of 45..50 s: P(call < 30 s) = P(z < ln(2/3) / (ln(50/45) / 1.645)) ~ 1e-10.
        slow = LatencyParams(p50=45.0, p95=50.0, tail_fraction=0.0)
        p = params({"gmail_5xx": 0.2}, latency=slow)
        effects, done = sample(p, n, 16)
        counts = all_classes(effects, done)
        assert counts[catalog.CLASS_INDEX["gmail_timeout"]] == n
        # Relay gives up at 30 s: MIME build + 30 s + a few ms.
        assert done.latency.min() > 30.0
        assert np.median(done.latency) == pytest.approx(30.0 + 0.008 + 0.005, abs=0.01)

    def test_only_the_slow_calls_become_timeouts(self) -> None:
        n = 200_000
        # Body p50 20 s, p95 32 s: P(call > 30 s) = P(z > ln(1.5) / (ln(1.6) / 1.645)) = 4.0%.
        p = params(
            latency=LatencyParams(p50=20.0, p95=32.0, tail_fraction=0.0), mime=QUIET_MIME, attachments=NO_ATTACHMENTS
        )
        _, done = sample(p, n, 17)
        z = math.log(1.5) / (math.log(1.6) / Z95)
        p_slow = 0.5 * math.erfc(z / math.sqrt(2))
        timeouts = (done.cls == catalog.CLASS_INDEX["gmail_timeout"]).sum()
        assert within_binomial(timeouts, n, p_slow)
        assert done.latency[done.cls == catalog.OK].max() <= 30.0

    def test_a_call_under_the_timeout_is_not_a_timeout_however_long_the_mime_build(self) -> None:
        # Calls of 29 s (max ~29.8 s over 10k draws), MIME builds of ~2 s: every call beats the timeout.
        call = LatencyParams(p50=29.0, p95=29.3, tail_fraction=0.0)
        mime = MimeParams(base_p50=2.0, base_p95=2.1, per_attachment=0.0, per_megabyte=0.0)
        p = params(latency=call, mime=mime, attachments=NO_ATTACHMENTS)
        _, done = sample(p, 10_000, 18)
        assert (done.cls == catalog.OK).all()


def _cumulative(s: Samples, **match: str) -> list[tuple[float, float]]:
    return buckets(s, "action_latency_seconds", **match)


class TestMime:
    N = 200_000

    def mean_mime(self, attachments: AttachmentParams, seed: int = 20) -> float:
        effects, _ = sample(params(attachments=attachments), self.N, seed)
        return float(effects.mime_seconds.mean())

    def test_attachments_add_their_cost(self) -> None:
        none = AttachmentParams(probability=0.0)
        every = AttachmentParams(probability=1.0)
        base, loaded = self.mean_mime(none), self.mean_mime(every)
        # Base: lognormal p50 8 ms, p95 20 ms -> mean 8 ms * exp(sigma^2 / 2).
        sigma = math.log(0.02 / 0.008) / Z95
        assert base == pytest.approx(0.008 * math.exp(sigma**2 / 2), rel=0.01)
        # Attachments: count C = min(1 + Poisson(0.8), 10), one lognormal size S per send, bytes C * S.
        pois = [math.exp(-0.8) * 0.8**k / math.factorial(k) for k in range(60)]
        e_count = sum(min(1 + k, MAX_ATTACHMENTS) * q for k, q in enumerate(pois))
        s_sigma = math.log(2_000_000 / 150_000) / Z95
        e_size = 150_000 * math.exp(s_sigma**2 / 2)
        want = MimeParams().per_attachment * e_count + MimeParams().per_megabyte * e_count * e_size / 1e6
        # S is heavy-tailed (sd ~3.3x its mean): the mean of 200k draws has ~1.2% sd on the
        # megabyte part (and C*S more); 6% is ~4 sd.
        assert loaded - base == pytest.approx(want, rel=0.06)

    def test_more_and_bigger_attachments_take_longer(self) -> None:
        few = self.mean_mime(AttachmentParams(probability=1.0, extra_mean=0.0))
        many = self.mean_mime(AttachmentParams(probability=1.0, extra_mean=4.0))
        big = self.mean_mime(
            AttachmentParams(probability=1.0, extra_mean=4.0, size_p50_bytes=1.5e6, size_p95_bytes=2e7)
        )
        assert few < many < big
        assert many - few > 4 * MimeParams().per_attachment * 0.9  # at least the per-attachment cost

    def test_attachment_bytes_are_counted_as_accepted(self) -> None:
        effects, _ = sample(params(attachments=AttachmentParams(probability=0.0)), 10_000, 21)
        assert effects.attachment_bytes == (0.0, 0.0)
        effects, _ = sample(params(attachments=AttachmentParams(probability=1.0)), 10_000, 21)
        assert effects.attachment_bytes[0] > 10_000 * 150_000  # at least one median-sized file each, on average

    def test_accepted_bytes_respect_the_relays_size_limits(self) -> None:
        # One attachment per send, median 60 MB (P(< 25 MB) ~ 3e-7): the relay accepts none of
        # them, so accepted bytes can average at most the 25 MB per-attachment limit.
        huge = AttachmentParams(probability=1.0, extra_mean=0.0, size_p50_bytes=60e6, size_p95_bytes=80e6)
        effects, _ = sample(params(attachments=huge), 10_000, 23)
        assert effects.attachment_bytes[0] / len(effects.mime_seconds) <= 25e6

    def test_rejected_bytes_only_for_rejecting_codes(self) -> None:
        effects, _ = sample(params({"validation_error_attachment_too_large": 0.01}), 100_000, 22)
        assert effects.attachment_bytes[1] > 0
        effects, _ = sample(params({"validation_error_blocked_mime_type": 0.01}), 100_000, 22)
        assert effects.attachment_bytes[1] == 0


class TestSideCounters:
    N = 500_000

    def test_sanitization_inline_and_oauth_rates(self) -> None:
        p = ModelParams()
        effects, _ = sample(p, self.N, 30)
        built = len(effects.mime_seconds)
        for k, mean in zip(effects.sanitization, p.sanitization.means(), strict=True):
            assert abs(k - mean * built) < 5 * math.sqrt(mean * built) + 1
        matched, orphan = effects.inline_refs
        assert abs(matched - p.inline.matched * built) < 5 * math.sqrt(p.inline.matched * built)
        assert abs(orphan - p.inline.orphan_cid * built) < 5 * math.sqrt(p.inline.orphan_cid * built) + 1
        start, ok, failed, locked = (int(x) for x in effects.oauth)
        assert start == ok + failed
        attempts = start + locked
        assert within_binomial(attempts, self.N - int(effects.guard_counts.sum()), p.oauth.refresh)
        assert within_binomial(locked, attempts, p.oauth.locked)


def test_error_ratio_formula() -> None:
    p = params({"validation_error": 0.1, "gmail_5xx": 0.05})
    assert p.error_ratio() == pytest.approx(0.15 / 0.9)


def test_default_error_ratio_is_the_documented_0_36_percent() -> None:
    assert ModelParams().error_ratio() == pytest.approx(0.0036, rel=0.05)


def test_overlay_replaces_parameters() -> None:
    slow = dataclasses.replace(ModelParams(), latency=LatencyParams(p50=1.0, p95=2.0))
    assert slow.latency.p50 == 1.0
    assert slow.errors == ModelParams().errors
