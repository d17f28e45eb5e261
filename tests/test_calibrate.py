"""``loadsim calibrate``: a known profile's week in a real Prometheus, fitted back, and run again.

One module-scoped history: :data:`TRUTH`, a profile whose traffic shape, latency, MIME
build, attachments, error mix, OAuth, sanitization and controller all differ from the
defaults, run for 7 virtual days (a whole week, so the weekend factor is seen),
backfilled (scraped every 60 s: the fits read hourly increases, which need only the
samples on the hours, at a quarter of 15 s's cost) into a real Prometheus. Calibration
must recover each parameter within its stated uncertainty, and the calibrated profile's
own week must match the original's counts (the round trip).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import require_binary
from scipy import stats

from loadsim.calibrate.read import read
from loadsim.cli import main
from loadsim.model import catalog
from loadsim.model.params import ModelParams
from loadsim.profile import load_profile, parse_profile
from loadsim.report.prom import Prometheus as PromClient
from loadsim.testing.history import backfilled, make_blocks
from loadsim.testing.stack import Prometheus

END = datetime(2026, 11, 30, tzinfo=UTC)
"""A Monday 00:00: the window is Monday to Monday, five weekdays and a weekend."""
START = END - timedelta(days=7)
TRUTH = """
name = "calibration-truth"
duration = "7d"
seed = 17

[[schedule]]
kind = "diurnal"
trough = "0.8/s"
peak = "4/s"
peak_hour = 10.5
sharpness = 1.5
weekend_factor = 0.25

[engine]
virtual_tick = "60s"  # windows as long as the scrape interval: counts per hour are the same, 4x fewer windows

[model.latency]
p50 = "200ms"
p95 = "450ms"
tail_fraction = 0.012
tail_p50 = "2s"
tail_p95 = "8s"

[model.mime]
base_p50 = "12ms"
base_p95 = "40ms"

[model.attachments]
size_p50_bytes = 300000   # twice the default, the default's spread (p95 / p50) kept
size_p95_bytes = 4000000
rejected_size_p50_bytes = 20000000

[model.sanitization]
script_blocked = 0.1

[model.oauth]
refresh = 0.03
failure = 0.01

[model.errors]
validation_error = 0.002
gmail_5xx = 0.003
gmail_timeout = 0.0008
validation_error_attachment_too_large = 0.001
internal_only_recipient_blocked = 0.0004

[controller]
interval = "5m"
failure_probability = 0.05
"""
ROUND_TRIP_P = 0.001
"""The round trip's tests reject at the same bound as a poor fit (documented in loadsim.calibrate.estimate)."""


@dataclass
class History:
    prometheus: Prometheus
    timings: dict[str, float]


@pytest.fixture(scope="module")
def truth_week(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    promtool = require_binary("promtool")
    timings: dict[str, float] = {}
    profile = parse_profile(tomllib.loads(TRUTH), "truth")
    prometheus = backfilled(profile, END, tmp_path_factory.mktemp("truth"), promtool, interval=60.0, timings=timings)
    with prometheus:
        yield History(prometheus, timings)


@pytest.fixture(scope="module")
def calibrated(truth_week: History, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("calibrated") / "profile.toml"
    t0 = time.monotonic()
    code = main(["calibrate", "--prometheus", truth_week.prometheus.url, "--from", START.isoformat(),
                 "--to", END.isoformat(), "--out", str(out)])  # fmt: skip
    truth_week.timings["calibrate"] = time.monotonic() - t0
    assert code == 0
    return out


def _truth_values() -> dict[str, float]:
    """Every parameter the profile sets, by the key calibration reports it under."""
    profile = parse_profile(tomllib.loads(TRUTH), "truth")
    seg = profile.schedule[0]
    values = {f"schedule.diurnal.{k}": float(getattr(seg, k)) for k in
              ("trough", "peak", "peak_hour", "sharpness", "weekend_factor")}  # fmt: skip
    model: ModelParams = profile.model
    for section in ("latency", "mime", "attachments", "inline", "sanitization", "oauth"):
        params = getattr(model, section)
        values |= {
            f"model.{section}.{k}": float(getattr(params, k)) for k in (f.name for f in dataclasses.fields(params))
        }
    values |= {f"model.errors.{k}": v for k, v in model.errors.items()}
    values |= {"controller.interval": profile.controller.interval,
               "controller.failure_probability": profile.controller.failure_probability,
               "controller.percent": float(profile.controller.percent)}  # fmt: skip
    return values


@pytest.mark.stack
class TestRecovery:
    def test_every_parameter_is_recovered_within_its_uncertainty(self, calibrated: Path, truth_week: History) -> None:
        out = calibrated
        report = json.loads(out.with_name("profile.fit.json").read_text())
        truth = _truth_values()
        table, misses = [], []
        for p in report["parameters"]:
            true = truth[p["key"]]
            if p["se"] is None:
                # Held (not identifiable) or exact: the truth keeps the model's value there.
                ok = math.isclose(p["value"], true, rel_tol=1e-9)
                z = 0.0
            else:
                # 3 standard errors: ~0.3% per parameter if the errors are right; 60 parameters, fixed seed.
                z = (p["value"] - true) / p["se"]
                ok = abs(z) <= 3.0
            table.append(f"{p['key']:52} {true:<12.6g} {p['value']:<12.6g} {p['se'] or 0:<10.2g} {z:+.2f}")
            if not ok:
                misses.append(table[-1])
        print("\nparameter true fitted se z\n" + "\n".join(table))
        print("wall seconds:", {k: round(v, 1) for k, v in truth_week.timings.items()})
        assert not misses, misses
        # The error bars are honest, not padded: the z-scores of the fitted parameters spread like N(0, 1).
        zs = [(p["value"] - truth[p["key"]]) / p["se"] for p in report["parameters"] if "MLE" in p["how"]]
        assert 0.4 < float(np.std(zs)) < 1.6, zs
        assert report["rate_shape"] == "diurnal"
        assert report["warnings"] == []
        assert all(not g["poor"] for g in report["goodness"])

    def test_the_profile_loads_and_the_report_and_plot_are_beside_it(self, calibrated: Path) -> None:
        out = calibrated
        profile = load_profile(out)
        assert profile.engine.virtual_start == START
        assert profile.duration == 7 * 86400
        assert "± " in out.read_text()  # every fitted value says its standard error
        md = out.with_name("profile.fit.md").read_text()
        assert "## Goodness of fit" in md
        assert "| 0.1…0.25 |" in md  # the latency table, bucket by bucket
        assert out.with_name("profile.fit.png").read_bytes().startswith(b"\x89PNG")


def _two_poisson(a: np.ndarray, b: np.ndarray) -> tuple[float, int, float]:
    """X² = sum (a - b)^2 / (a + b) over cells with counts: two independent Poisson counts of one mean each."""
    keep = (a + b) > 0
    x2 = float(np.sum((a[keep] - b[keep]) ** 2 / (a[keep] + b[keep])))
    df = int(keep.sum())
    return x2, df, float(stats.chi2.sf(x2, df))


@pytest.mark.stack
def test_the_calibrated_profile_reproduces_the_history(calibrated: Path, truth_week: History, tmp_path: Path) -> None:
    """The round trip: the calibrated profile's week, in a second Prometheus, against the original's.

    Both weeks are read the same way (the calibration's reader). Each comparison treats the
    two counts of a cell as independent Poisson counts of one mean (X² on as many df as
    cells). That is conservative: the calibrated means were fitted to the original week, so
    the two differ by less than two independent draws would.
    """
    out = calibrated
    profile = load_profile(out)
    # The run setting, not a fitted value: 60 s windows as in the original, for speed.
    profile = profile.model_copy(update={"engine": profile.engine.model_copy(update={"virtual_tick": 60.0})})
    t0 = time.monotonic()
    again = backfilled(profile, END, tmp_path, require_binary("promtool"), interval=60.0)
    with again:
        copy = read(PromClient(again.url), START.timestamp(), END.timestamp())
    truth_week.timings["round_trip"] = time.monotonic() - t0
    original = read(PromClient(truth_week.prometheus.url), START.timestamp(), END.timestamp())
    reasons = [r for r in catalog.ERROR_REASONS if original.errors[r] + copy.errors[r] > 0]
    comparisons = {
        "hourly sends": (original.hourly_sends, copy.hourly_sends),
        "latency buckets": (original.latency, copy.latency),
        "MIME buckets": (original.mime, copy.mime),
        "errors by reason": (
            np.array([original.errors[r] for r in reasons]),
            np.array([copy.errors[r] for r in reasons]),
        ),
    }
    results = {name: _two_poisson(a, b) for name, (a, b) in comparisons.items()}
    print("\nround trip (X², df, p):", {k: (round(x, 1), d, round(p, 3)) for k, (x, d, p) in results.items()})
    for name, (_x2, _df, p) in results.items():
        assert p > ROUND_TRIP_P, (name, results[name])
    # And in plain terms: the week's sends within 1%, and each hour's within 5 Poisson standard deviations.
    assert abs(copy.sends / original.sends - 1) < 0.01
    diff = np.abs(copy.hourly_sends - original.hourly_sends) / np.sqrt(original.hourly_sends + copy.hourly_sends)
    assert float(diff.max()) < 5.0


# -- bad input ------------------------------------------------------------------------------------------


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    [line] = capsys.readouterr().err.splitlines()
    return line


def _calibrate(prometheus: str, start: datetime, end: datetime, out: Path, *extra: str) -> int:
    return main(["calibrate", "--prometheus", prometheus, "--from", start.isoformat(), "--to", end.isoformat(),
                 "--out", str(out), *extra])  # fmt: skip


class TestBadInput:
    def test_an_unreachable_prometheus(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert _calibrate("http://127.0.0.1:9", START, END, tmp_path / "p.toml") == 2
        assert _one_line(capsys).startswith(
            "loadsim: --prometheus: http://127.0.0.1:9/api/v1/status/buildinfo cannot be read: "
        )
        assert not (tmp_path / "p.toml").exists()

    def test_a_window_shorter_than_a_day_for_a_diurnal_fit(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert _calibrate("http://127.0.0.1:9", END - timedelta(hours=6), END, tmp_path / "p.toml") == 2
        assert _one_line(capsys) == (
            "loadsim: --from/--to: the window is 6h00m; a diurnal fit needs at least 24h of history "
            "(--shape hourly replays a shorter one)"
        )

    def test_a_remote_prometheus_and_an_unwritable_output(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert _calibrate("http://prometheus.example:9090", START, END, tmp_path / "none" / "p.toml") == 2
        err = capsys.readouterr().err.splitlines()
        host = "prometheus.example"
        assert err[0] == f"loadsim: --prometheus: {host} is not on loopback; allow it with --allow-host {host}"
        assert err[1].startswith(f"loadsim: --out: {tmp_path / 'none'} does not exist")
        assert len(err) == 2

    @pytest.mark.stack
    def test_an_empty_window(self, truth_week: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        code = _calibrate(truth_week.prometheus.url, datetime(2020, 1, 1, tzinfo=UTC),
                          datetime(2020, 1, 3, tzinfo=UTC), tmp_path / "p.toml")  # fmt: skip
        assert code == 2
        line = _one_line(capsys)
        assert line.startswith(f"loadsim: --prometheus: {truth_week.prometheus.url}: no action_exec_total{{")
        assert line.endswith("samples from 2020-01-01T00:00:00Z to 2020-01-03T00:00:00Z: the window is empty")


# -- a history made by hand: too little data, another bucket layout, a missing series, a poor fit -------

DAY = 86400
T0 = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday
"""Days 0-2: 10 sends an hour. Days 2-4: other latency buckets and no MIME histogram. Days 4-6: a square wave."""
SEL = 'provider="google",action="gmail.send"'


def _series_lines(name: str, labels: str, values: list[tuple[float, float]]) -> list[str]:
    return [f"{name}{{{labels}}} {v:g} {t:.3f}" for t, v in values]


def _hand_made(path: Path) -> None:
    """Every 5 minutes for 6 days, the counters of a relay whose history the model cannot fit."""
    t0 = T0.timestamp()
    times = [t0 + 300 * i for i in range(6 * DAY // 300 + 1)]
    sends, latency, mime = [], [], []
    total = 0.0
    relay_le = ("0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "+Inf")
    other_le = ("0.005", "0.05", "0.5", "5", "+Inf")
    for t in times:
        day = (t - t0) / DAY
        hour = (t - t0) % DAY / 3600
        if day <= 2:
            step = 10 / 12
        elif day <= 4:
            step = 1000
        else:
            step = 3000 if 8 <= hour < 16 else 300  # office hours only: no diurnal curve has a square top
        total += step if t > t0 else 0
        sends.append((t, total))
    lines = ["# TYPE action_exec_total counter", "# HELP action_exec_total Total action executions"]
    lines += _series_lines("action_exec_total", f'{SEL},status="ok"', sends)
    lines += ["# TYPE action_latency_seconds histogram", "# HELP action_latency_seconds Action execution latency"]
    relay = dict(zip(relay_le, (0.05, 0.45, 0.9, 0.97, 0.99, 0.995, 0.998, 0.999, 1.0, 1.0), strict=True))
    other = dict(zip(other_le, (0.01, 0.3, 0.9, 0.999, 1.0), strict=True))
    by_le: dict[str, list[tuple[float, float]]] = {}
    for t, v in sends:  # a bound both layouts have (0.5, 5, +Inf) is one series: its samples stay in time order
        layout = other if 2 * DAY <= t - t0 <= 4 * DAY else relay
        for le, share in layout.items():
            by_le.setdefault(le, []).append((t, v * share))
    for le, points in by_le.items():
        latency += _series_lines("action_latency_seconds_bucket", f'{SEL},le="{le}"', points)
    lines += latency
    lines += [
        "# TYPE gmail_mime_build_seconds histogram",
        "# HELP gmail_mime_build_seconds Time to build a MIME message",
    ]
    for le, share in zip(("0.01", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf"),
                         (0.3, 0.9, 0.97, 0.99, 0.999, 1, 1, 1, 1), strict=True):  # fmt: skip
        mime += _series_lines("gmail_mime_build_seconds_bucket", f'le="{le}"',
                              [(t, v * share) for t, v in sends if not 2 * DAY <= t - t0 <= 4 * DAY])  # fmt: skip
    lines += mime
    path.write_text("\n".join([*lines, "# EOF", ""]), encoding="utf-8")


@pytest.fixture(scope="module")
def hand_made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    promtool = require_binary("promtool")
    root = tmp_path_factory.mktemp("hand-made")
    _hand_made(root / "relay.om")
    prometheus = Prometheus({"global": {"evaluation_interval": "15s"}}, directory=root / "prometheus")
    make_blocks(promtool, root / "relay.om", prometheus.directory / "tsdb")
    with prometheus:
        yield prometheus


@pytest.mark.stack
class TestHandMade:
    def test_too_little_data(self, hand_made: Prometheus, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert _calibrate(hand_made.url, T0, T0 + timedelta(days=2), tmp_path / "p.toml") == 2
        assert _one_line(capsys) == (
            f"loadsim: --prometheus: {hand_made.url}: too little data from 2026-11-02T00:00:00Z to "
            "2026-11-04T00:00:00Z: 480 executions; calibrate needs at least 1,000 to fit the latency"
        )

    def test_another_bucket_layout_and_a_missing_histogram(
        self, hand_made: Prometheus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        start = T0 + timedelta(days=2, hours=1)
        assert _calibrate(hand_made.url, start, start + timedelta(days=1, hours=22), tmp_path / "p.toml") == 2
        line = _one_line(capsys)
        relay = "0.1,0.25,0.5,1,2.5,5,10,30,60,+Inf"
        assert (
            f"action_latency_seconds has buckets le=0.005,0.05,0.5,5,+Inf; calibrate fits the relay's layout le={relay}"
            in line
        )
        assert "; no gmail_mime_build_seconds_bucket series from 2026-11-04T01:00:00Z to 2026-11-05T23:00:00Z" in line

    def test_a_poor_fit_is_written_with_a_warning_and_auto_replays_the_hours(
        self, hand_made: Prometheus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        start, end = T0 + timedelta(days=4, hours=1), T0 + timedelta(days=6)
        assert _calibrate(hand_made.url, start, end, tmp_path / "forced.toml", "--shape", "diurnal") == 0
        captured = capsys.readouterr()
        warnings = [x for x in captured.err.splitlines() if x.startswith("loadsim: warning: sends per hour (diurnal)")]
        assert len(warnings) == 1, captured.err
        assert "the fit is poor (Pearson X² = " in warnings[0]
        forced = tomllib.loads((tmp_path / "forced.toml").read_text())
        assert forced["schedule"][0]["kind"] == "diurnal"
        assert "sends per hour (diurnal): the fit is poor" in (tmp_path / "forced.fit.md").read_text()

        assert _calibrate(hand_made.url, start, end, tmp_path / "auto.toml") == 0
        out = capsys.readouterr().out
        assert "send rate: hourly, the diurnal form fits poorly (Pearson X² = " in out
        auto: dict[str, Any] = tomllib.loads((tmp_path / "auto.toml").read_text())
        assert auto["schedule"][0]["kind"] == "steps"
        rates = auto["schedule"][0]["rates"]
        assert len(rates) == 47  # one per whole hour of the window
        # 01:00-02:00 at 300 sends per 5 minutes; 08:00-09:00 at 3000 (each hour's increase ends on the hour).
        assert rates[0] == pytest.approx(300 * 12 / 3600)
        assert rates[7] == pytest.approx(3000 * 12 / 3600)


# -- the pieces ----------------------------------------------------------------------------------------


class TestPieces:
    def test_the_closed_form_attachment_bytes_agree_with_the_samplers_draws(self) -> None:
        from loadsim.calibrate.fit_mime import bytes_moments
        from loadsim.model.params import AttachmentParams
        from loadsim.model.sampler import draw_attachments

        # Large sizes, so the relay's caps (25 MB an attachment, 50 MB a send) matter.
        params = AttachmentParams(extra_mean=2.5, size_p50_bytes=4e6, size_p95_bytes=3e7)
        mean, second = bytes_moments(params)
        _, drawn = draw_attachments(np.random.default_rng(5), 400_000, params)
        se = math.sqrt((second - mean**2) / len(drawn))
        assert abs(float(drawn.mean()) - mean) < 4 * se, (float(drawn.mean()), mean, se)
        assert float((drawn**2).mean()) == pytest.approx(second, rel=0.01)

    def test_cells_expecting_fewer_than_five_join_a_neighbour(self) -> None:
        from loadsim.calibrate.estimate import Row
        from loadsim.calibrate.goodness import merged, pearson

        cells = (("0…1", 2, 1.0), ("1…2", 10, 9.0), ("2…5", 50, 52.0), ("5…9", 3, 2.0), ("9…+Inf", 0, 1.0))
        rows = [Row(*cell) for cell in cells]
        assert merged(rows) == [Row("0…2", 12, 10.0), Row("2…+Inf", 53, 55.0)]
        g = pearson("x", rows, fitted=0, effect="")
        assert g.df == 1
        assert g.statistic == pytest.approx(2**2 / 10 + 2**2 / 55)
