"""``loadsim report``: the observation report from a real Prometheus holding backfilled history.

One module-scoped window: 48 hours of ``realistic`` with the seed's seven overlays,
backfilled (``loadsim backfill``), turned into blocks by promtool and served by a real
Prometheus; the report reads it. A second, 6-hour window per case shows the score.
The HTML is opened in Debian's headless Chromium.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import xmlschema

from loadsim.cli import main
from loadsim.report.figures import ERROR_RATIO, LATENCY
from loadsim.testing.history import make_blocks
from loadsim.testing.stack import Prometheus, find_binary

END = datetime(2026, 11, 30, 12, tzinfo=UTC)
SEED_OVERLAYS = [
    "error-rate-warn@2h+2h",
    "error-rate-crit@8h+2h",
    "latency-crit@14h+2h",
    "controller-stalled@20h+2h",
    "validation-spike@26h+2h",
    "mime-slow@32h+2h",
    "sanitization-spike@38h+2h",
]
PROFILES = Path(__file__).resolve().parents[1] / "profiles"
ARTIFACTS = Path(os.environ.get("LOADSIM_ARTIFACTS", "/tmp/loadsim-artifacts"))


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{binary} is not installed; scripts/setup-stack.sh should have installed it")
        pytest.skip(f"{binary} is not installed (run scripts/setup-stack.sh)")
    return path


@dataclass
class Window:
    prometheus: Prometheus
    start: float
    end: float
    timings: dict[str, float]


def serve(tmp: Path, hours: float, overlays: list[str], timings: dict[str, float]) -> Prometheus:
    """Backfill ``realistic`` ending at END, make blocks, and return a Prometheus (not started) on them."""
    promtool = require("promtool")
    out = tmp / "relay.om"
    argv = ["backfill", str(PROFILES / "realistic.toml"), "--duration", f"{hours:g}h", "--out", str(out)]
    argv += ["--end", END.isoformat()] + [x for o in overlays for x in ("--overlay", o)]
    t0 = time.monotonic()
    assert main(argv) == 0
    timings["backfill"] = time.monotonic() - t0
    prometheus = Prometheus({"global": {"evaluation_interval": "15s"}}, find_binary("prometheus"), tmp / "prometheus")
    t0 = time.monotonic()
    make_blocks(promtool, out, prometheus.directory / "tsdb")
    timings["create_blocks"] = time.monotonic() - t0
    return prometheus


@pytest.fixture(scope="module")
def seed_window(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Window]:
    timings: dict[str, float] = {}
    prometheus = serve(tmp_path_factory.mktemp("seed-window"), 48, SEED_OVERLAYS, timings)
    t0 = time.monotonic()
    with prometheus:
        timings["prometheus_ready"] = time.monotonic() - t0
        yield Window(prometheus, END.timestamp() - 48 * 3600, END.timestamp(), timings)


def report(tmp: Path, window: Window, *extra: str) -> tuple[int, dict[str, Any]]:
    out = tmp / "report"
    argv = ["report", "--prometheus", window.prometheus.url, "--out", str(out)]
    argv += ["--from", _iso(window.start), "--to", _iso(window.end), *extra]
    t0 = time.monotonic()
    code = main(argv)
    window.timings["report"] = time.monotonic() - t0
    return code, json.loads((out / "report.json").read_text())


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat()


def _sig4(a: float, b: float) -> bool:
    return a == b or math.isclose(a, b, rel_tol=5e-5)


@pytest.mark.stack
class TestSeedWindow:
    def test_slo_figures_equal_direct_promql_to_four_significant_digits(
        self, seed_window: Window, tmp_path: Path
    ) -> None:
        code, data = report(tmp_path, seed_window)
        assert code == 3  # seven faults in 48 hours: no-go
        prom, end = seed_window.prometheus, seed_window.end
        figures = data["figures"]
        for name, expr in (("error_ratio", ERROR_RATIO), ("latency_p95", LATENCY.format(q=0.95))):
            for key, promql in (("p50", "quantile_over_time(0.5, ({e})[48h:60s])"),
                                ("p95", "quantile_over_time(0.95, ({e})[48h:60s])"),
                                ("p99", "quantile_over_time(0.99, ({e})[48h:60s])"),
                                ("max", "max_over_time(({e})[48h:60s])")):  # fmt: skip
                direct = prom.query(promql.format(e=expr), at=end)[0].value
                assert _sig4(figures[name][key], direct), (name, key, figures[name][key], direct)
        # The time above 1% is the count of the same points above it, a minute each.
        above = prom.query(f"count_over_time((({ERROR_RATIO}) > 0.01)[48h:60s])", at=end)[0].value
        assert figures["error_ratio_above_1pct_seconds"] == above * 60
        print("\nseed window, wall seconds:", {k: round(v, 1) for k, v in seed_window.timings.items()})

    def test_the_html_opens_offline_and_every_plot_renders(self, seed_window: Window, tmp_path: Path) -> None:
        from loadsim.testing.browser import find_chromium, open_file

        if find_chromium() is None:
            require("chromium")
        report(tmp_path, seed_window)
        html = tmp_path / "report" / "report.html"
        page = open_file(html, ".plot")
        assert page.requests == [html.resolve().as_uri()]  # the file itself, and nothing from any network
        assert set(page.sizes) == {
            f"plot-{p}" for p in ("rate", "error_ratio", "latency", "mime", "errors_by_reason", "rollout", "alerts")
        }
        assert all(w > 100 and h > 50 for w, h in page.sizes.values()), page.sizes
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "report-48h-seed-overlays.png").write_bytes(page.screenshot)
        assert page.screenshot.startswith(b"\x89PNG")


@pytest.mark.stack
class TestScore:
    def test_a_healthy_window_scores_six_technical_points(self, tmp_path: Path) -> None:
        prometheus = serve(tmp_path, 6, [], {})
        with prometheus:
            _, data = report(tmp_path, Window(prometheus, END.timestamp() - 6 * 3600, END.timestamp(), {}))
        r = data["readiness"]
        assert r["technical"] == 6, [i for i in r["items"] if not i["passed"]]
        assert len(r["items"]) == 10
        assert {"id", "name", "passed", "evidence"} <= set(r["items"][0])
        # A backfilled window has no scrape history: said so, never scored as 0% or 100%.
        assert data["figures"]["scrape_success"] is None
        markdown = (tmp_path / "report" / "report.md").read_text()
        assert "Scrape success (avg of up): no up series in the window." in markdown

    def test_a_two_hour_crit_window_is_a_sustained_violation_named_in_the_evidence(self, tmp_path: Path) -> None:
        prometheus = serve(tmp_path, 6, ["error-rate-crit@2h+2h"], {})
        junit = tmp_path / "junit.xml"
        with prometheus:
            window = Window(prometheus, END.timestamp() - 6 * 3600, END.timestamp(), {})
            code, data = report(tmp_path, window, "--junit", str(junit))
        assert code == 3
        item = next(i for i in data["readiness"]["items"] if i["id"] == "no_sustained_violation")
        assert not item["passed"]
        # The fault ran 08:00 to 10:00 UTC; the 5-minute windows see it from a minute in to 5 minutes after.
        assert "error rate > 1% from 2026-11-30 08:0" in item["evidence"], item["evidence"]
        assert "to 2026-11-30 10:0" in item["evidence"], item["evidence"]
        # The same verdict as JUnit: one case per item, this one failed with the same evidence.
        schema = xmlschema.XMLSchema(Path(__file__).parent / "data" / "junit-10.xsd")
        schema.validate(junit)
        [suite] = schema.to_dict(junit)["testsuite"]
        cases = {c["@name"]: c for c in suite["testcase"]}
        assert list(cases) == [i["name"] for i in data["readiness"]["items"]]
        assert cases["No sustained SLO violation"]["failure"][0]["@message"] == item["evidence"]
        skipped = {name for name, c in cases.items() if "skipped" in c}
        assert skipped == {i["name"] for i in data["readiness"]["items"] if not i["checked"]}


class TestBadInput:
    def test_an_unreachable_prometheus(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        code = main(
            ["report", "--prometheus", "http://127.0.0.1:9", "--from", "2026-11-30T00:00:00Z", "--out", str(tmp_path)]
        )
        assert code == 2
        [line] = capsys.readouterr().err.splitlines()
        assert line.startswith("loadsim: --prometheus: http://127.0.0.1:9/api/v1/status/buildinfo cannot be read: ")

    def test_a_relative_window_and_a_malformed_one(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        argv = ["report", "--prometheus", "http://127.0.0.1:9", "--out", str(tmp_path)]
        # now-24h is read: the problem left is the Prometheus that does not answer.
        assert main([*argv, "--from", "now-24h"]) == 2
        [line] = capsys.readouterr().err.splitlines()
        assert line.startswith("loadsim: --prometheus: ")
        assert main([*argv, "--from", "now-a-day"]) == 2
        [line] = capsys.readouterr().err.splitlines()
        assert line == (
            "loadsim: --from: expected now, now-DURATION such as now-24h, or an ISO time such as "
            "2026-11-30T12:00:00Z, got 'now-a-day'"
        )

    @pytest.mark.parametrize(
        ("to", "expected"),
        [
            ("now-1h", None),  # accepted: the problem left is the output path
            (
                "2099-01-01T00:00:00Z",
                "loadsim: --to: with --run, the run must have ended by now; got '2099-01-01T00:00:00Z'",
            ),
            (
                "2000-01-01T00:00:00Z",
                (
                    "loadsim: --to: with --run, the run must start within the last 3650 days (the private "
                    "Prometheus keeps no more); got '2000-01-01T00:00:00Z'"
                ),
            ),
        ],
    )
    def test_a_run_ends_at_to_which_must_be_past_and_kept(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], to: str, expected: str | None
    ) -> None:
        blocker = tmp_path / "file"
        blocker.write_text("x")
        code = main(["report", "--run", "--duration", "1h", "--to", to, "--out", str(blocker / "out")])
        assert code == 2
        err = capsys.readouterr().err.splitlines()
        assert any(line.startswith("loadsim: --out: ") for line in err), err
        assert (expected in err) if expected else not any("--to" in line for line in err), err

    def test_a_missing_drill_file_and_an_unwritable_output(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        blocker = tmp_path / "file"
        blocker.write_text("x")
        code = main([
            "report", "--prometheus", "http://127.0.0.1:9", "--from", "2026-11-30T00:00:00Z",
            "--drill", str(tmp_path / "none.json"), "--out", str(blocker / "out"),
        ])  # fmt: skip
        assert code == 2
        err = capsys.readouterr().err.splitlines()
        assert f"loadsim: --drill: {tmp_path / 'none.json'}: file not found" in err
        assert any(line.startswith("loadsim: --out: ") for line in err), err

    @pytest.mark.stack
    def test_a_window_with_no_data(
        self, seed_window: Window, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code = main([
            "report", "--prometheus", seed_window.prometheus.url, "--out", str(tmp_path / "r"),
            "--from", "2020-01-01T00:00:00Z", "--to", "2020-01-02T00:00:00Z",
        ])  # fmt: skip
        assert code == 2
        [line] = capsys.readouterr().err.splitlines()
        assert "no Gmail send series in the window" in line


@pytest.mark.stack
def test_a_run_of_its_own_is_reported_through_a_private_prometheus(tmp_path: Path) -> None:
    """``--run``: the run backfilled into a Prometheus of its own, then the same report."""
    require("promtool")
    out = tmp_path / "own"
    # A fixed end: the profile's daily curve follows the clock, so "now" made this a different run at each
    # time of day (ending at 00:00 UTC, healthy traffic at the 1.2/s trough had an error-rate P95 of 1.06%).
    end = "2026-11-25T18:00:00Z"  # a Wednesday, the three hours before the day's end of business
    argv = ["report", "--run", str(PROFILES / "realistic.toml"), "--duration", "3h", "--to", end, "--out", str(out)]
    code = main(argv)
    data = json.loads((out / "report.json").read_text())
    assert code == (0 if data["readiness"]["go"] else 3)
    assert data["source"] == "loadsim run realistic, seed 1"
    assert data["window"]["end"] == datetime(2026, 11, 25, 18, tzinfo=UTC).timestamp()
    assert data["window"]["end"] - data["window"]["start"] == 3 * 3600
    assert data["readiness"]["technical"] == 6  # healthy traffic
    assert data["figures"]["sends"] > 10_000
