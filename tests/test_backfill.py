"""``loadsim backfill``: a virtual run's history loaded into a real Prometheus by promtool, and read back.

The run writes OpenMetrics; promtool makes TSDB blocks; a real Prometheus starts on
them; what it answers must be what the run counted, and its recording rules must read
the overlay's window where the run put it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from loadsim.cli import main
from loadsim.relayconfig import RECORDING_RULES
from loadsim.testing.stack import Prometheus, find_binary

HOUR = 3600.0


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{binary} is not installed; scripts/setup-stack.sh should have installed it")
        pytest.skip(f"{binary} is not installed")
    return path


def test_the_file_is_openmetrics_with_families_apart_and_growing_timestamps(tmp_path: Path) -> None:
    out = tmp_path / "relay.om"
    assert (
        main(["backfill", "--duration", "1h", "--rate", "5/s", "--out", str(out), "--end", "2026-11-30T12:00:00Z"]) == 0
    )
    lines = out.read_text().splitlines()
    assert lines[-1] == "# EOF"
    families = [line.split()[2] for line in lines if line.startswith("# TYPE")]
    assert len(families) == len(set(families))  # no family interleaved with another
    last: dict[str, float] = {}
    for line in lines:
        if line.startswith("#"):
            continue
        series, _value, stamp = line.rsplit(" ", 2)
        assert float(stamp) > last.get(series, 0.0), line
        last[series] = float(stamp)
    end = max(last.values())
    assert end == datetime(2026, 11, 30, 12, tzinfo=UTC).timestamp()
    # 1 hour at 15 s: 241 scrapes per series, from the run's start to its end.
    stamps = sorted({float(line.rsplit(" ", 1)[1]) for line in lines if not line.startswith("#")})
    assert len(stamps) == 241
    assert stamps[-1] - stamps[0] == HOUR


@pytest.mark.parametrize(
    ("end", "error"),
    [
        ("0001-01-01T00:00:00Z", "the run would start before 1970-01-01 (Unix time 0); got '0001-01-01T00:00:00Z'"),
        ("1970-01-01T00:30:00Z", "the run would start before 1970-01-01 (Unix time 0); got '1970-01-01T00:30:00Z'"),
        ("yesterday", "expected now, now-DURATION such as now-24h, or an ISO time such as 2026-11-30T12:00:00Z"),
    ],
)
def test_an_end_the_run_cannot_have_is_refused_before_it_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], end: str, error: str
) -> None:
    out = tmp_path / "relay.om"
    assert main(["backfill", "--duration", "1h", "--out", str(out), "--end", end]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"loadsim: --end: {error}"), line
    assert not out.exists()


def test_an_end_relative_to_now(tmp_path: Path) -> None:
    out = tmp_path / "relay.om"
    assert main(["backfill", "--duration", "10m", "--rate", "1/s", "--out", str(out), "--end", "now-2h"]) == 0
    stamps = [float(line.rsplit(" ", 1)[1]) for line in out.read_text().splitlines() if not line.startswith("#")]
    assert abs(max(stamps) - (datetime.now(UTC).timestamp() - 2 * HOUR)) < 60


@pytest.mark.stack
def test_a_real_prometheus_on_the_blocks_answers_what_the_run_counted(tmp_path: Path) -> None:
    promtool = require("promtool")
    out = tmp_path / "relay.om"
    argv = ["backfill", "--duration", "6h", "--rate", "20/s", "--out", str(out), "--overlay", "error-rate-crit@2h+1h"]
    assert main([*argv, "--seed", "4"]) == 0
    prometheus = Prometheus(
        {"global": {"evaluation_interval": "15s"}, "rule_files": [str(RECORDING_RULES)]}, find_binary("prometheus")
    )
    blocks = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", "-q", str(out), str(prometheus.directory / "tsdb")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert blocks.returncode == 0, blocks.stdout + blocks.stderr
    lines = [line for line in out.read_text().splitlines() if not line.startswith("#")]
    stamps = [float(line.rsplit(" ", 1)[1]) for line in lines]
    start, end = min(stamps), max(stamps)
    written = {line.rsplit(" ", 2)[0]: float(line.rsplit(" ", 2)[1]) for line in lines if line.endswith(f" {end:.3f}")}
    with prometheus:
        ok = prometheus.query('action_exec_total{status="ok"}', at=end)
        assert ok[0].value == written['action_exec_total{provider="google",action="gmail.send",status="ok"}'] > 0
        # Inside the overlay the error ratio reads about 6% (1 h at 20/s: sd of a 5 min ratio ~0.9%).
        inside = prometheus.query(
            "sum(increase(action_error_total[5m])) / sum(increase(action_exec_total[5m]))", at=start + 2.5 * HOUR
        )
        outside = prometheus.query(
            "sum(increase(action_error_total[5m])) / sum(increase(action_exec_total[5m]))", at=start + 4.5 * HOUR
        )
        assert 0.03 < inside[0].value < 0.09
        assert outside[0].value < 0.015
        overlay = prometheus.query('loadsim_overlay_active{overlay="error-rate-crit"}', at=start + 2.5 * HOUR)
        assert overlay[0].value == 1.0
