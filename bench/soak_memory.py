"""Does loadsim stay flat for days? RSS over a long, high-rate run on the virtual clock.

One process runs the engine at a high constant rate (every relay family updated, the
summary, the health metrics, a checkpoint-sized snapshot and a full scrape now and then,
and all seven seed overlays cycling, so the model cache and the overlay paths are
exercised) for a fixed wall time, and samples its resident set size (``VmRSS`` from
``/proc/self/status``) at intervals. It prints the curve, the steady RSS (median of the
second half) and the growth per 10 million sends (least-squares slope over the second
half: the first half includes numpy's and the allocator's warm-up).

Targets (issue 5): growth at most 1 MB per 10 million sends, steady RSS at most 120 MB.

    .venv/bin/python -m bench.soak_memory                # 120 s of wall time
    .venv/bin/python -m bench.soak_memory --seconds 20   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
from prometheus_client import generate_latest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadsim.plan import build_plan
from loadsim.profile import parse_profile
from loadsim.runtime.factory import build

SEED_SCENARIOS = (
    "error-rate-warn",
    "error-rate-crit",
    "latency-crit",
    "controller-stalled",
    "validation-spike",
    "mime-slow",
    "sanitization-spike",
)


def rss_mb() -> float:
    """Resident set size of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def profile(rate: float, hours: float) -> dict[str, object]:
    """A constant high rate with the seven seed overlays repeating every 7 virtual minutes."""
    overlays: list[dict[str, object]] = []
    t = 60.0
    while t + 300 < hours * 3600:
        name = SEED_SCENARIOS[len(overlays) % len(SEED_SCENARIOS)]
        overlays.append({"scenario": name, "start": t, "duration": 300.0, "ramp": 30.0})
        t += 420.0
    return {
        "duration": hours * 3600,
        "schedule": [{"kind": "constant", "rate": rate}],
        "engine": {"virtual_tick": "1s"},
        "overlay": overlays,
    }


async def soak(rate: float, seconds: float, every: float) -> dict[str, object]:
    plan = build_plan(parse_profile(profile(rate, hours=48), "bench:soak"), virtual=True)
    run = build(dataclasses.replace(plan, seed=7))
    engine, registry, relay = run.engine, run.registry, run.relay
    assert relay is not None
    points: list[tuple[float, int, float]] = []
    start = time.monotonic()
    next_sample = 0.0
    t0 = 0.0
    while time.monotonic() - start < seconds and t0 < plan.duration:
        t1 = t0 + plan.tick
        engine.step(t0, t1)
        t0 = t1
        now = time.monotonic() - start
        if now >= next_sample:
            relay.snapshot()
            generate_latest(registry)
            points.append((now, engine.counts.started, rss_mb()))
            next_sample += every
    await asyncio.sleep(0)
    wall = time.monotonic() - start
    sends = engine.counts.started
    half = points[len(points) // 2 :]
    x = np.array([p[1] for p in half], dtype=np.float64)
    y = np.array([p[2] for p in half], dtype=np.float64)
    slope = float(np.polyfit(x, y, 1)[0]) if len(half) >= 3 and np.ptp(x) > 0 else float("nan")
    return {
        "rate_per_virtual_s": rate,
        "wall_seconds": round(wall, 1),
        "virtual_seconds": round(t0, 1),
        "sends": sends,
        "sends_per_wall_s": round(sends / wall),
        "rss_start_mb": round(points[0][2], 1),
        "rss_end_mb": round(points[-1][2], 1),
        "rss_steady_mb": round(float(np.median(y)), 1),
        "growth_mb_per_10m_sends": round(slope * 1e7, 3),
        "curve": [{"wall_s": round(a, 1), "sends": b, "rss_mb": round(c, 1)} for a, b, c in points],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="wall time to run (default 120)")
    parser.add_argument(
        "--rate",
        type=float,
        default=200_000.0,
        help="virtual sends/s (default 200k: about an hour of virtual time, every seed overlay)",
    )
    parser.add_argument("--every", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    result = asyncio.run(soak(args.rate, args.seconds, args.every))
    curve = result.pop("curve")
    print("wall_s      sends        rss_mb")
    for p in curve:  # type: ignore[attr-defined]
        print(f"{p['wall_s']:>6} {p['sends']:>14,} {p['rss_mb']:>8}")
    for k, v in result.items():
        print(f"{k:<26} {v}")
    steady_ok = result["rss_steady_mb"] <= 120  # type: ignore[operator]
    growth_ok = result["growth_mb_per_10m_sends"] <= 1.0  # type: ignore[operator]
    print(
        f"targets: steady RSS <= 120 MB {'met' if steady_ok else 'MISSED'}; "
        f"growth <= 1 MB per 10M sends {'met' if growth_ok else 'MISSED'}"
    )
    if args.json:
        args.json.write_text(json.dumps({**result, "curve": curve}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
