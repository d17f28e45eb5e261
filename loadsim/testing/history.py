"""History in a real Prometheus: a profile's virtual run backfilled, made into TSDB blocks by promtool, served.

Tests that read a window back (``loadsim report``, ``loadsim calibrate``) need days of
the relay's series in a real Prometheus: the run is written as OpenMetrics
(:mod:`loadsim.report.backfill`), promtool makes the blocks, and a
:class:`~loadsim.testing.stack.Prometheus` (started by the caller, as a context manager)
serves them.
"""

from __future__ import annotations

import subprocess
import time
from datetime import datetime
from pathlib import Path

from loadsim.profile import Profile
from loadsim.report.backfill import backfill, plan_ending_at
from loadsim.testing.stack import Prometheus, find_binary

MAX_BLOCK = "744h"
"""Blocks up to 31 days long. promtool reads its whole input once per block it makes, and
makes 2-hour blocks by default: 7 days of history were 84 passes and 37 s here, one
31-day block 1.3 s. Prometheus reads a long block like any other."""


def make_blocks(promtool: str, openmetrics: Path, tsdb: Path, timeout: float = 300.0) -> None:
    """``promtool tsdb create-blocks-from openmetrics`` into ``tsdb``; AssertionError with its output on failure."""
    done = subprocess.run(  # noqa: S603 - a resolved binary, arguments built here
        [promtool, "tsdb", "create-blocks-from", "openmetrics", "-q", f"--max-block-duration={MAX_BLOCK}",
         str(openmetrics), str(tsdb)],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def backfilled(
    profile: Profile,
    end: datetime,
    directory: Path,
    promtool: str,
    *,
    interval: float = 15.0,
    timings: dict[str, float] | None = None,
) -> Prometheus:
    """``profile`` run on the virtual clock ending at ``end``, in a Prometheus (not started) under ``directory``."""
    timings = {} if timings is None else timings
    t0 = time.monotonic()
    done = backfill(plan_ending_at(profile, end.timestamp(), profile.name), directory / "relay.om", interval=interval)
    timings["backfill"] = time.monotonic() - t0
    prometheus = Prometheus(
        {"global": {"evaluation_interval": "15s"}}, find_binary("prometheus"), directory / "prometheus"
    )
    t0 = time.monotonic()
    make_blocks(promtool, done.path, prometheus.directory / "tsdb")
    timings["create_blocks"] = time.monotonic() - t0
    done.path.unlink()
    return prometheus
