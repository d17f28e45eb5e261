"""A report for a run of loadsim's own: the run backfilled into a private Prometheus, then read like any other.

One path for every source keeps the report's figures one computation: the run is
written as OpenMetrics (:mod:`loadsim.report.backfill`), promtool makes its blocks,
and a Prometheus started on them (a temporary directory, a free loopback port, its
lifecycle tied to this call) answers the report's queries. Debian's ``prometheus``
package provides both binaries.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from loadsim.clock import WallClock, wait_for
from loadsim.net import session
from loadsim.plan import RunPlan
from loadsim.report.backfill import Backfilled, backfill
from loadsim.report.prom import SourceError

READY_SECONDS = 60.0
RETENTION = 3650 * 86400.0
"""How far back the private Prometheus keeps samples: a run reported on must start within it."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def binaries() -> tuple[str, str]:
    """Promtool and prometheus, or SourceError naming what is missing."""
    found = {name: shutil.which(name) for name in ("promtool", "prometheus")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        msg = f"{' and '.join(missing)} not installed (Debian's prometheus package has both)"
        raise SourceError(msg)
    return found["promtool"] or "", found["prometheus"] or ""


@contextlib.contextmanager
def served(plan: RunPlan) -> Iterator[tuple[str, Backfilled]]:
    """Backfill ``plan`` into a private Prometheus; yields its URL and what was written, stops it on exit."""
    promtool, prometheus = binaries()
    with tempfile.TemporaryDirectory(prefix="loadsim-report-") as tmp:
        root = Path(tmp)
        done = backfill(plan, root / "run.om")
        blocks = subprocess.run(  # noqa: S603 - resolved binaries, arguments built here
            [promtool, "tsdb", "create-blocks-from", "openmetrics", "-q", str(done.path), str(root / "tsdb")],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if blocks.returncode != 0:
            raise SourceError(f"promtool could not make blocks: {blocks.stderr.strip()[:300]}")
        (root / "prometheus.yml").write_text("global:\n  evaluation_interval: 15s\n", encoding="utf-8")
        port = _free_port()
        argv = [
            prometheus,
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'tsdb'}",
            f"--storage.tsdb.retention.time={RETENTION:.0f}s",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        with (root / "prometheus.log").open("wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, proc)
            yield url, done
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    """Wait for ``/-/ready`` (a real process starting: wall time, bounded, through the clock)."""
    if not asyncio.run(_ready(url, proc)):
        raise SourceError(f"a private Prometheus did not start on {url}")


async def _ready(url: str, proc: subprocess.Popen[bytes]) -> bool:
    clock = WallClock()
    async with session() as http:  # its own Prometheus, on loopback: checked as every client is
        while clock.now() < READY_SECONDS and proc.poll() is None:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                get = http.get(f"{url}/-/ready")
                async with await wait_for(clock, get, 2.0) as r:
                    if r.status == 200:
                        return True
            await clock.sleep(0.2)
    return False
