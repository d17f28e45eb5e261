"""The relay's metric families as Prometheus scrapes them, read back the way the relay's rules read them."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
from conftest import (
    Run,
    Samples,
    bucket_delta,
    buckets,
    histogram_quantile,
    make_plan,
    rate,
    run_plan,
    scrape,
    total,
)
from prometheus_client import generate_latest

from loadsim.model.params import default_error_probabilities
from loadsim.model.sampler import OutcomeModel
from loadsim.plan import RunPlan

HOUR = 3600.0
FIVE_MINUTES = 300.0
SEED = 7

# -- the contract, written out from shared/relay-config/README.md (not imported from loadsim) ----------

PA = {"provider": "google", "action": "gmail.send"}
EARLY_GUARDS = ("provider_disabled", "rollout_gated", "validation_error", "oauth_token_missing")
GMAIL_REASONS = ("gmail_4xx", "gmail_5xx", "gmail_timeout", "gmail_network_error")
CODES = (
    "validation_error_attachment_too_large",
    "validation_error_blocked_mime_type",
    "validation_error_missing_inline_image",
    "validation_error_cid_not_referenced",
    "validation_error_total_size_exceeded",
    "validation_error_invalid_attachment_data",
    "validation_error_invalid_inline_data",
    "validation_error_mime_build",
    "internal_only_recipient_blocked",
    "unknown_mime_error",
    "unknown_error",
)
DOUBLE_COUNTED = ("validation_error_attachment_too_large", "validation_error_blocked_mime_type")
LATENCY_LE = ("0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "30.0", "60.0", "+Inf")
MIME_LE = ("0.01", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "+Inf")

TYPES = {
    "action_exec_total": "counter",
    "action_error_total": "counter",
    "action_latency_seconds": "histogram",
    "structured_error_total": "counter",
    "oauth_events_total": "counter",
    "gmail_mime_build_seconds": "histogram",
    "gmail_attachment_bytes_total": "counter",
    "gmail_inline_refs_total": "counter",
    "gmail_html_sanitization_changes_total": "counter",
    "rollout_controller_runs_total": "counter",
    "rollout_controller_changes_total": "counter",
    "rollout_controller_percent": "gauge",
}
LABELS = {
    "action_exec_total": {"provider", "action", "status"},
    "action_error_total": {"provider", "action", "reason"},
    "action_latency_seconds_bucket": {"provider", "action", "le"},
    "action_latency_seconds_count": {"provider", "action"},
    "action_latency_seconds_sum": {"provider", "action"},
    "structured_error_total": {"provider", "action", "code", "source"},
    "oauth_events_total": {"provider", "event"},
    "gmail_mime_build_seconds_bucket": {"le"},
    "gmail_mime_build_seconds_count": set(),
    "gmail_mime_build_seconds_sum": set(),
    "gmail_attachment_bytes_total": {"result"},
    "gmail_inline_refs_total": {"result"},
    "gmail_html_sanitization_changes_total": {"change_type"},
    "rollout_controller_runs_total": {"status"},
    "rollout_controller_changes_total": {"feature", "result"},
    "rollout_controller_percent": {"feature"},
}


def contract_series() -> set[tuple[str, frozenset[tuple[str, str]]]]:
    """Every series the relay exports (without options), each of which must exist from the start."""

    def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
        return name, frozenset(labels.items())

    out = {key("action_exec_total", **PA, status=s) for s in ("ok", "error")}
    out |= {key("action_error_total", **PA, reason=r) for r in (*EARLY_GUARDS, *GMAIL_REASONS, *CODES)}
    out |= {key("structured_error_total", **PA, code=c, source="gmail.adapter") for c in CODES}
    out |= {key("structured_error_total", **PA, code=c, source="gmail.validation") for c in DOUBLE_COUNTED}
    out |= {key("action_latency_seconds_bucket", **PA, le=le) for le in LATENCY_LE}
    out |= {key("action_latency_seconds_count", **PA), key("action_latency_seconds_sum", **PA)}
    events = ("refresh_start", "refresh_ok", "refresh_failed", "refresh_locked")
    out |= {key("oauth_events_total", provider="google", event=e) for e in events}
    out |= {key("gmail_mime_build_seconds_bucket", le=le) for le in MIME_LE}
    out |= {key("gmail_mime_build_seconds_count"), key("gmail_mime_build_seconds_sum")}
    out |= {key("gmail_attachment_bytes_total", result=r) for r in ("accepted", "rejected")}
    out |= {key("gmail_inline_refs_total", result=r) for r in ("matched", "orphan_cid")}
    changes = ("tag_removed", "attr_removed", "script_blocked", "style_sanitized")
    out |= {key("gmail_html_sanitization_changes_total", change_type=c) for c in changes}
    out |= {key("rollout_controller_runs_total", status=s) for s in ("ok", "prom_unreachable", "redis_error")}
    out |= {
        key("rollout_controller_changes_total", feature="google", result=r) for r in ("promote", "rollback", "hold")
    }
    out |= {key("rollout_controller_percent", feature="google")}
    return out


def relay_only(samples: Samples) -> Samples:
    return {k: v for k, v in samples.items() if not k[0].startswith("loadsim_")}


def steady(rate_per_s: float, hours: float = 3.0, seed: int = SEED, **extra: object) -> RunPlan:
    return make_plan(
        duration=f"{hours}h", seed=seed, schedule=[{"kind": "constant", "rate": f"{rate_per_s}/s"}], **extra
    )


def every(step: float, duration: float) -> list[float]:
    return [i * step for i in range(int(duration // step) + 1)]


@pytest.fixture(scope="module")
def healthy() -> Run:
    """Healthy defaults at 20/s for 3 virtual hours, scraped every 5 minutes from before the first window."""
    plan = steady(20)
    return run_plan(plan, scrape_at=every(FIVE_MINUTES, plan.duration))


@pytest.fixture(scope="module")
def peak() -> Run:
    """Healthy defaults at the realistic peak of 6/s."""
    plan = steady(6)
    return run_plan(plan, scrape_at=every(FIVE_MINUTES, plan.duration))


def windows(run: Run) -> list[tuple[Samples, Samples]]:
    """Consecutive 5-minute scrape pairs, skipping the first 5 minutes (rates need a full window)."""
    times = sorted(run.scrapes)
    return [(run.scrapes[a], run.scrapes[b]) for a, b in itertools.pairwise(times[1:])]


class TestContract:
    def test_every_series_exists_before_any_traffic(self, healthy: Run) -> None:
        before = relay_only(healthy.scrapes[0.0])
        assert set(before) == contract_series()
        assert all(v == 0 for v in before.values())
        assert before["action_exec_total", frozenset({**PA, "status": "error"}.items())] == 0

    def test_the_same_series_after_traffic(self, healthy: Run) -> None:
        after = relay_only(healthy.scrapes[max(healthy.scrapes)])
        assert set(after) == contract_series()
        assert total(after, "action_exec_total") > 200_000

    def test_types_exactly(self, healthy: Run) -> None:
        text = generate_latest(healthy.registry).decode()
        types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE))
        relay = {k: v for k, v in types.items() if not k.startswith("loadsim_")}
        assert relay == TYPES

    def test_label_names_exactly(self, healthy: Run) -> None:
        names: dict[str, set[frozenset[str]]] = {}
        for name, labels in relay_only(healthy.scrapes[0.0]):
            names.setdefault(name, set()).add(frozenset(k for k, _ in labels))
        assert names == {n: {frozenset(ls)} for n, ls in LABELS.items()}

    @pytest.mark.parametrize(
        ("histogram", "le"), [("action_latency_seconds", LATENCY_LE), ("gmail_mime_build_seconds", MIME_LE)]
    )
    def test_bucket_bounds_render_as_prometheus_client_does(
        self, healthy: Run, histogram: str, le: tuple[str, ...]
    ) -> None:
        text = generate_latest(healthy.registry).decode()
        rendered = re.findall(rf'^{histogram}_bucket\{{.*?le="([^"]+)"', text, flags=re.MULTILINE)
        assert tuple(rendered) == le

    def test_histograms_are_whole_and_consistent(self, healthy: Run) -> None:
        for s in healthy.scrapes.values():
            for h in ("action_latency_seconds", "gmail_mime_build_seconds"):
                counts = [v for _, v in buckets(s, h)]
                assert counts == sorted(counts)  # cumulative
                assert counts[-1] == total(s, f"{h}_count")
            assert total(s, "action_latency_seconds_count") == total(s, "action_exec_total")


def mc_buckets(plan: RunPlan, bounds: tuple[str, ...], mime: bool, n: int = 1_000_000) -> list[tuple[float, float]]:
    """The same outcome model, sampled independently (another seed), pushed through ``bounds``."""
    effects, done = OutcomeModel(plan.model).sample(np.random.default_rng(12345), np.zeros(n))
    values = effects.mime_seconds if mime else done.latency
    return [(float(le), float((values <= float(le)).sum())) for le in bounds]


def quantile_sd(q: float, cumulative: list[tuple[float, float]]) -> float:
    """Rough sd of an interpolated quantile: rank noise sqrt(q(1-q)/n), scaled by bucket width / bucket mass."""
    n = cumulative[-1][1]
    prev_le, prev_c = 0.0, 0.0
    for le, c in cumulative:
        if c >= q * n and math.isfinite(le):
            return (le - prev_le) / ((c - prev_c) / n) * math.sqrt(q * (1 - q) / n)
        prev_le, prev_c = le, c
    return 0.0


class TestReadBack:
    """What the recording rules compute from the exposition, against the model's own expectation."""

    @pytest.mark.parametrize(
        ("histogram", "bounds", "mime", "q"),
        [
            ("action_latency_seconds", LATENCY_LE, False, 0.5),
            ("action_latency_seconds", LATENCY_LE, False, 0.95),
            ("action_latency_seconds", LATENCY_LE, False, 0.99),
            ("gmail_mime_build_seconds", MIME_LE, True, 0.95),
        ],
    )
    def test_quantile_matches_monte_carlo(
        self, healthy: Run, histogram: str, bounds: tuple[str, ...], mime: bool, q: float
    ) -> None:
        got_b = buckets(healthy.scrapes[max(healthy.scrapes)], histogram)
        want_b = mc_buckets(healthy.engine.plan, bounds, mime)
        got, want = histogram_quantile(q, got_b), histogram_quantile(q, want_b)
        # Both are interpolations read through the same buckets; each has sd ~ width/mass * sqrt(q(1-q)/n).
        sd = math.hypot(quantile_sd(q, got_b), quantile_sd(q, want_b))
        assert abs(got - want) < 5 * sd + 1e-9, (got, want, sd)

    @pytest.mark.parametrize(
        ("histogram", "bounds", "mime"),
        [("action_latency_seconds", LATENCY_LE, False), ("gmail_mime_build_seconds", MIME_LE, True)],
    )
    def test_every_bucket_matches_monte_carlo(
        self, healthy: Run, histogram: str, bounds: tuple[str, ...], mime: bool
    ) -> None:
        got_b = buckets(healthy.scrapes[max(healthy.scrapes)], histogram)
        want_b = mc_buckets(healthy.engine.plan, bounds, mime)
        n, m = got_b[-1][1], want_b[-1][1]
        for (le, got), (_, want) in zip(got_b, want_b, strict=True):
            # Each cumulative fraction is binomial in both samples; 5 sd of their difference.
            p = want / m
            sd = math.sqrt(p * (1 - p) * (1 / n + 1 / m))
            assert abs(got / n - p) <= 5 * sd + 1e-12, (le, got / n, p)

    def test_latency_p95_sits_where_params_say(self, healthy: Run) -> None:
        # params.py: "latency p95 about 0.4 s against 0.5 s read through the relay's buckets".
        p95 = histogram_quantile(0.95, buckets(healthy.scrapes[max(healthy.scrapes)], "action_latency_seconds"))
        assert 0.35 < p95 < 0.45

    def test_error_ratio_as_the_rule_computes_it(self, healthy: Run) -> None:
        a, b = healthy.scrapes[FIVE_MINUTES], healthy.scrapes[max(healthy.scrapes)]
        seconds = max(healthy.scrapes) - FIVE_MINUTES
        ratio = rate(a, b, seconds, "action_error_total", **PA) / max(rate(a, b, seconds, "action_exec_total", **PA), 1)
        want = healthy.engine.plan.model.error_ratio()
        # ~200k executions, ~730 errors: Poisson sd of the count is sqrt(730) = 2.7% of it; 5 sd.
        execs = total(b, "action_exec_total") - total(a, "action_exec_total")
        assert abs(ratio - want) < 5 * math.sqrt(want * execs) / execs

    def test_error_ratio_counts_guards_over_executions_only(self) -> None:
        # Early guards are in the numerator but not in the denominator: (0.2 + 0.05) / 0.8.
        only = {**dict.fromkeys(default_error_probabilities(), 0.0), "rollout_gated": 0.2, "gmail_5xx": 0.05}
        plan = steady(20, hours=1, model={"errors": only})
        run = run_plan(plan, scrape_at=[FIVE_MINUTES, HOUR])
        a, b = run.scrapes[FIVE_MINUTES], run.scrapes[HOUR]
        seconds = HOUR - FIVE_MINUTES
        errs, execs = rate(a, b, seconds, "action_error_total"), rate(a, b, seconds, "action_exec_total")
        ratio = errs / max(execs, 1)
        want = plan.model.error_ratio()
        assert want == pytest.approx(0.25 / 0.8)
        n = execs * seconds  # ~53k executions; the ratio's sd is ~ sqrt(want (1 + want) / n) = 0.3%
        assert abs(ratio - want) < 5 * math.sqrt(want * (1 + want) / n)


class TestHealthyDefaultsStayQuiet:
    """The defaults sit under every relay alert threshold, in every 5-minute window."""

    def test_error_ratio_under_1_percent(self, healthy: Run) -> None:
        for a, b in windows(healthy):
            errors = rate(a, b, FIVE_MINUTES, "action_error_total", **PA)
            assert errors / max(rate(a, b, FIVE_MINUTES, "action_exec_total", **PA), 1) < 0.01

    def test_latency_p95_under_half_a_second(self, healthy: Run) -> None:
        for a, b in windows(healthy):
            assert histogram_quantile(0.95, bucket_delta(a, b, "action_latency_seconds")) < 0.5

    def test_mime_p95_under_half_a_second(self, healthy: Run) -> None:
        for a, b in windows(healthy):
            assert histogram_quantile(0.95, bucket_delta(a, b, "gmail_mime_build_seconds")) < 0.5

    def test_structured_errors_under_0_1_per_second_at_peak(self, peak: Run) -> None:
        worst = max(rate(a, b, FIVE_MINUTES, "structured_error_total", **PA) for a, b in windows(peak))
        assert worst < 0.1
        # And not because nothing happens: ~0.00115 structured increments per send at 6/s.
        a, b = peak.scrapes[0.0], peak.scrapes[max(peak.scrapes)]
        mean = rate(a, b, max(peak.scrapes), "structured_error_total")
        assert 0.003 < mean < 0.012

    def test_sanitization_under_50_per_second_at_peak(self, peak: Run) -> None:
        worst = max(rate(a, b, FIVE_MINUTES, "gmail_html_sanitization_changes_total") for a, b in windows(peak))
        assert worst < 50
        assert worst > 6 * 1.62 * 0.9  # about 1.6 changes per send: the counter is live

    def test_exec_rate_is_the_target(self, peak: Run) -> None:
        for a, b in windows(peak):
            # 1800 sends per window, Poisson sd 42 -> 0.14/s; 5 sd = 0.7/s.
            assert abs(rate(a, b, FIVE_MINUTES, "action_exec_total") - 6.0) < 0.71


class TestCumulative:
    def test_counters_never_decrease(self, healthy: Run) -> None:
        times = sorted(healthy.scrapes)
        increased: set[tuple[str, frozenset[tuple[str, str]]]] = set()
        for a, b in itertools.pairwise(times):
            sa, sb = relay_only(healthy.scrapes[a]), relay_only(healthy.scrapes[b])
            for key, v in sb.items():
                if key[0] == "rollout_controller_percent":
                    continue
                assert v >= sa[key], key
                if v > sa[key]:
                    increased.add(key)
        assert ("action_exec_total", frozenset({**PA, "status": "error"}.items())) in increased


class TestOptions:
    def test_status_label_splits_the_latency_histogram(self) -> None:
        run = run_plan(steady(20, hours=0.5, metrics={"status_label": True}))
        s = relay_only(scrape(run.registry))
        labelled = {frozenset(k for k, _ in labels) for name, labels in s if name.startswith("action_latency_seconds")}
        assert labelled == {
            frozenset({"provider", "action", "status", "le"}),
            frozenset({"provider", "action", "status"}),
        }
        for status in ("ok", "error"):
            assert total(s, "action_latency_seconds_count", status=status) == total(
                s, "action_exec_total", status=status
            )
            assert len(buckets(s, "action_latency_seconds", status=status)) == len(LATENCY_LE)
        assert total(s, "action_latency_seconds_count", status="error") > 0

    def test_without_the_option_there_is_no_status_label(self, healthy: Run) -> None:
        s = relay_only(healthy.scrapes[0.0])
        assert not any(("status" in dict(labels)) for name, labels in s if name.startswith("action_latency"))

    def test_workspace_ids_split_executions_by_weight(self) -> None:
        ids, weights = ["acme", "globex", "initech"], [5.0, 3.0, 2.0]
        run = run_plan(steady(20, hours=1, metrics={"workspace_ids": ids, "workspace_weights": weights}))
        s = relay_only(scrape(run.registry))
        exec_labels = {frozenset(k for k, _ in labels) for name, labels in s if name == "action_exec_total"}
        assert exec_labels == {frozenset({"provider", "action", "status", "workspace_id"})}
        assert total(s, "action_error_total") > 0
        assert all("workspace_id" not in dict(labels) for name, labels in s if name != "action_exec_total")
        n = total(s, "action_exec_total")
        assert n == run.summary.finished - (
            total(s, "action_error_total") - total(s, "action_exec_total", status="error")
        )
        for ws, w in zip(ids, weights, strict=True):
            p = w / sum(weights)
            k = total(s, "action_exec_total", workspace_id=ws)
            # Multinomial marginal: Binomial(n, p); 5 sd.
            assert abs(k - n * p) < 5 * math.sqrt(n * p * (1 - p)), (ws, k, n * p)


class TestControllerHeartbeat:
    def test_one_ok_run_per_ten_virtual_minutes(self, healthy: Run) -> None:
        times = [t for t in sorted(healthy.scrapes) if t % 600 == 0 and t > 0]
        runs = [total(healthy.scrapes[t], "rollout_controller_runs_total", status="ok") for t in times]
        assert np.all(np.diff(runs) == 1)
        assert runs[-1] == healthy.engine.plan.duration / 600  # runs at 0, 600, ..., duration - 600
        holds = [total(healthy.scrapes[t], "rollout_controller_changes_total", result="hold") for t in times]
        assert holds == runs
        last = healthy.scrapes[times[-1]]
        assert total(last, "rollout_controller_runs_total", status="prom_unreachable") == 0
        assert total(last, "rollout_controller_runs_total", status="redis_error") == 0

    def test_percent_gauge_is_present(self, healthy: Run) -> None:
        for s in healthy.scrapes.values():
            assert ("rollout_controller_percent", frozenset({("feature", "google")})) in s
            assert total(s, "rollout_controller_percent") == 0.0

    def test_percent_follows_the_controller(self) -> None:
        run = run_plan(steady(1, hours=0.5, controller={"percent": 10.0}))
        assert total(scrape(run.registry), "rollout_controller_percent", feature="google") == 10.0


class TestFastSampleValues:
    """RelayMetrics.sample_values must equal render(), sample by sample, in every shape."""

    @pytest.mark.parametrize(
        "metrics",
        [{}, {"status_label": True}, {"workspace_ids": ["a", "b", "c"], "workspace_weights": [1, 2, 3]}],
    )
    @pytest.mark.parametrize("controller_visible", [True, False])
    @pytest.mark.parametrize("controller", [{}, {"mode": "policy"}])
    def test_matches_render(self, metrics, controller_visible, controller) -> None:
        plan = make_plan(
            duration="20m", schedule=[{"kind": "constant", "rate": "30/s"}], metrics=metrics, controller=controller
        )
        run = run_plan(plan)
        relay = run.relay
        snap = relay.snapshot(controller_visible=controller_visible)
        rendered = [s.value for fam in relay.render(snap) for s in fam.samples]
        assert relay.sample_values(snap).tolist() == rendered
        assert sum(rendered) > 0
