"""Helpers shared by the benchmarks (soak_memory needs none of them).

Nothing here runs anything on import: pinning, the environment block every
report carries, where reports go by default, a watchdog, and small formatting.
"""

from __future__ import annotations

import contextlib
import faulthandler
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(tempfile.gettempdir()) / "loadsim-bench"
"""Reports go here by default: outside the repository, so a benchmark never leaves files for git to see."""


def default_json(name: str) -> Path:
    """``$TMPDIR/loadsim-bench/NAME.json``."""
    return BENCH_DIR / f"{name}.json"


def pin(cpu: int | None) -> int | None:
    """Pin this process (and the children it starts later) to one CPU, the last allowed one by default."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    chosen = allowed[-1] if cpu is None else cpu
    if chosen not in allowed:
        raise SystemExit(f"--cpu: must be one of {allowed}, got {cpu}")
    os.sched_setaffinity(0, {chosen})
    return chosen


def cpu_ticks(cpu: int) -> tuple[float, float, float] | None:
    """(busy, steal, total) seconds of one CPU since boot, from ``/proc/stat``; None where unavailable."""
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + v[4]
                steal = v[7] if len(v) > 7 else 0
                total = sum(v[:8])
                return (total - idle - steal) / hz, steal / hz, total / hz
    return None


def run_queue_wait() -> float | None:
    """Seconds this thread has spent runnable but waiting for a CPU (``/proc/thread-self/schedstat``)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path("/proc/thread-self/schedstat").read_text().split()[1]) / 1e9
    return None


def least_busy_cpu(sample: float = 0.5) -> int | None:
    """The allowed CPU that was busy the least over ``sample`` seconds (the last one on a tie)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    before = {c: cpu_ticks(c) for c in allowed}
    time.sleep(sample)
    busy = {}
    for c in allowed:
        a, b = before[c], cpu_ticks(c)
        busy[c] = (b[0] + b[1] - a[0] - a[1]) if a and b else 0.0
    return min(reversed(allowed), key=lambda c: busy[c])


def watchdog(seconds: float) -> None:
    """End the process (with every thread's traceback on stderr) if it is still running after ``seconds``."""
    faulthandler.dump_traceback_later(seconds, exit=True)


def cancel_watchdog() -> None:
    faulthandler.cancel_dump_traceback_later()


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (what ``platform`` says elsewhere)."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return model


def git_state() -> tuple[str | None, bool | None]:
    """The commit checked out, and whether ``loadsim/`` has uncommitted changes (None, None outside git)."""
    commit, dirty = None, None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "loadsim"],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
        )
    return commit, dirty


def environment(cpu: int | str | None, **extra: Any) -> dict[str, Any]:
    """Enough about the machine and the code to compare two reports honestly."""
    commit, dirty = git_state()
    return {
        "cpu": cpu,
        "cpu_model": cpu_model(),
        "cpus_online": os.cpu_count(),
        "python": sys.version.split()[0],
        "numpy": version("numpy"),
        "uvloop": version("uvloop"),
        "prometheus_client": version("prometheus_client"),
        "git_commit": commit,
        "loadsim_dirty": dirty,
        **extra,
    }


def version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _version

    try:
        return _version(dist)
    except PackageNotFoundError:
        return None


def spread(values: Iterable[float]) -> dict[str, float]:
    """Median and min..max of repeated measurements."""
    v = list(values)
    if not v:
        return {"median": math.nan, "min": math.nan, "max": math.nan}
    return {"median": statistics.median(v), "min": min(v), "max": max(v)}


def quantiles(values: Sequence[float], qs: Sequence[float] = (0.5, 0.99)) -> dict[str, float]:
    """Nearest-rank quantiles (no interpolation: a p99 is a value that happened) plus the max."""
    if not values:
        return {**{f"p{q * 100:g}": math.nan for q in qs}, "max": math.nan}
    s = sorted(values)
    out = {f"p{q * 100:g}": s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))] for q in qs}
    out["max"] = s[-1]
    return out


def met(flag: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "n/a"}[flag]
