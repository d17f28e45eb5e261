"""How long do 48 virtual hours take? ``loadsim run --virtual --no-listen`` on the realistic profile, timed.

Each run is the real command, in its own process: ``python -m loadsim run
profiles/realistic.toml --virtual --no-listen --progress off --summary-json FILE``
(``python -m loadsim`` is what the ``loadsim`` script runs), pinned to one core. Three
variants, interleaved round by round so a noisy neighbour hurts them alike:

* **baseline**: the profile alone (48 h, diurnal 1.2..6 sends/s, about 519k sends);
* **7 overlays**: the same with all seven seed overlays placed across the 48 hours with
  ``--overlay NAME@START+DURATION`` (one hour each, 90 minutes for controller-stalled so
  its alert could fire, six hours apart from 2h);
* **7 overlays, ramped**: the same windows as ``[[overlay]]`` tables with ``ramp = "5m"``
  in a copy of the profile (a temporary file): each ramp step builds a new outcome model.

Per run: wall time of the whole process (start-up and imports included: what a user
waits for), the run's own ``wall_seconds`` from its summary, the child's CPU time, and
checks that it really did the work (172,800 s of run time, the expected sends, every
overlay's ``overlay.start`` log event, a higher error ratio than the baseline's). Each
figure is the median of ``--repeats`` runs with the min..max range; the ratio overlays /
baseline is taken round by round (same conditions) and shown as median and range.

Target (issue 7): 48 virtual hours with the seven overlays in at most 10 s of wall time
(the process, start-up included).

    .venv/bin/python -m bench.time_compression             # 5 rounds: about 90 s
    .venv/bin/python -m bench.time_compression --quick     # 2 rounds: about 40 s
    .venv/bin/python -m bench.time_compression --profile   # plus one in-process run under cProfile

The JSON report goes to ``$TMPDIR/loadsim-bench/time_compression.json`` unless ``--json``
names a file; ``--profile`` also writes ``time_compression.prof`` (pstats) next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import math
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in {None, ""}:  # run as a file: make `bench` and `loadsim` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    REPO,
    cancel_watchdog,
    cpu_ticks,
    default_json,
    environment,
    least_busy_cpu,
    met,
    spread,
    watchdog,
)

DEFAULT_JSON = default_json("time_compression")
PROFILE = REPO / "profiles" / "realistic.toml"
VIRTUAL_SECONDS = 48 * 3600.0
TARGET_WALL = 10.0
"""Issue 7: 48 virtual hours with the seven overlays in at most this many seconds of wall time."""
OVERLAYS = (
    ("error-rate-warn", "2h", "1h"),
    ("error-rate-crit", "8h", "1h"),
    ("latency-crit", "14h", "1h"),
    ("controller-stalled", "20h", "90m"),
    ("validation-spike", "26h", "1h"),
    ("mime-slow", "32h", "1h"),
    ("sanitization-spike", "38h", "1h"),
)
"""The seven seed scenarios, six hours apart: none overlaps another, each fits in 48 h."""
RAMP = "5m"
RUN_TIMEOUT = 120.0
"""A run that takes longer than this is killed and counted as failed (12x the target)."""


@dataclass(frozen=True, slots=True)
class Variant:
    key: str
    label: str
    overlays: int
    """Overlay windows the run must announce (``overlay.start`` events)."""


BASELINE = Variant("baseline", "baseline (no overlays)", 0)
WITH_OVERLAYS = Variant("overlays", "7 overlays (--overlay)", len(OVERLAYS))
RAMPED = Variant("overlays_ramped", f"7 overlays, ramp {RAMP} ([[overlay]])", len(OVERLAYS))
VARIANTS = (BASELINE, WITH_OVERLAYS, RAMPED)


def overlay_flags() -> list[str]:
    return [arg for name, start, duration in OVERLAYS for arg in ("--overlay", f"{name}@{start}+{duration}")]


def ramped_profile(directory: Path) -> Path:
    """A copy of the realistic profile with the seven overlays as ramped ``[[overlay]]`` tables."""
    tables = "".join(
        f'\n[[overlay]]\nscenario = "{name}"\nstart = "{start}"\nduration = "{duration}"\nramp = "{RAMP}"\n'
        for name, start, duration in OVERLAYS
    )
    path = directory / "realistic-7-overlays-ramped.toml"
    path.write_text(PROFILE.read_text() + tables)
    return path


def command(variant: Variant, summary: Path, ramped: Path, duration: str | None = None) -> list[str]:
    profile = ramped if variant is RAMPED else PROFILE
    cmd = [sys.executable, "-m", "loadsim", "run", str(profile), "--virtual", "--no-listen", "--progress", "off"]
    cmd += ["--summary-json", str(summary)]
    if variant is WITH_OVERLAYS:
        cmd += overlay_flags()
    if duration is not None:
        cmd += ["--duration", duration]
    return cmd


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_once(variant: Variant, workdir: Path, ramped: Path, cpu: int | None) -> dict[str, Any]:
    """One timed ``loadsim run`` process; returns its figures or ``{"error": ...}``."""
    summary = workdir / f"{variant.key}.summary.json"
    summary.unlink(missing_ok=True)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})  # the child inherits it
    ticks0 = cpu_ticks(cpu) if cpu is not None else None
    cpu0 = child_cpu()
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            command(variant, summary, ramped),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"variant": variant.key, "cpu": cpu, "error": f"timed out after {RUN_TIMEOUT:g} s"}
    wall = time.perf_counter() - start
    own = child_cpu() - cpu0
    ticks1 = cpu_ticks(cpu) if cpu is not None else None
    if proc.returncode != 0 or not summary.exists():
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        return {"variant": variant.key, "cpu": cpu, "error": f"exit {proc.returncode}: {tail}"}
    s = json.loads(summary.read_text())
    events = [json.loads(line).get("event") for line in proc.stdout.splitlines() if line.startswith("{")]
    others = None
    if ticks0 is not None and ticks1 is not None:
        others = max(0.0, (ticks1[0] - ticks0[0] - own) / wall)
    return {
        "variant": variant.key,
        "cpu": cpu,
        "process_wall_s": wall,
        "run_wall_s": s["wall_seconds"],
        "startup_and_exit_s": wall - s["wall_seconds"],
        "child_cpu_s": own,
        "others_share": others,
        "run_seconds": s["run_seconds"],
        "speedup": s["run_seconds"] / wall,
        "started": s["sends"]["started"],
        "target_sends": s["sends"]["target"],
        "error_ratio": s["error_ratio"],
        "overlay_starts": events.count("overlay.start"),
        "overlay_ends": events.count("overlay.end"),
    }


def check_run(r: dict[str, Any], variant: Variant, baseline_error: float | None) -> list[str]:
    """Problems with a run's own account of what it did (empty when it did all the work)."""
    problems = []
    if abs(r["run_seconds"] - VIRTUAL_SECONDS) > 1e-6:
        problems.append(f"ran {r['run_seconds']} s of virtual time, not {VIRTUAL_SECONDS:g}")
    if abs(r["started"] - r["target_sends"]) > 5 * r["target_sends"] ** 0.5:
        problems.append(f"started {r['started']:,} sends against {r['target_sends']:,.0f} expected")
    if r["overlay_starts"] != variant.overlays:
        problems.append(f"{r['overlay_starts']} overlay.start events, expected {variant.overlays}")
    if variant.overlays and baseline_error is not None and r["error_ratio"] <= baseline_error:
        problems.append(f"error ratio {r['error_ratio']:.4f} not above the baseline's {baseline_error:.4f}")
    return problems


# -- in-process, under cProfile -------------------------------------------------------------------


def profile_in_process(out: Path, top: int) -> dict[str, Any]:
    """The 7-overlay run in this process, as ``loadsim run`` builds it, under cProfile; prints the top entries."""
    import uvloop

    from loadsim.logs import configure
    from loadsim.plan import Overrides, apply_overrides, build_plan
    from loadsim.profile import load_profile
    from loadsim.runtime.execute import RunOptions, execute

    profile = apply_overrides(load_profile(PROFILE), Overrides(overlays=tuple(overlay_flags()[1::2])))
    plan = build_plan(profile, virtual=True, wall_epoch=time.time(), source=str(PROFILE))
    configure("warning", stream=io.StringIO())
    profiler = cProfile.Profile()
    start = time.perf_counter()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        profiler.enable()
        summary = runner.run(execute(plan, RunOptions(listen=None, progress="off")))
        profiler.disable()
    wall = time.perf_counter() - start
    profiler.dump_stats(out)
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("tottime")
    stats.print_stats(top)
    print(f"\nin-process run under cProfile: {wall:.2f} s ({summary['sends']['started']:,} sends); top by own time:")
    body = text.getvalue().split("\n")
    head = next((i for i, line in enumerate(body) if "ncalls" in line), 0)
    print("\n".join(body[head : head + top + 1]))
    print(f"pstats: {out}")
    return {"wall_s_under_cprofile": wall, "pstats": str(out)}


# -- report ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.time_compression", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 rounds instead of 5: about 40 s")
    p.add_argument("--repeats", type=int, default=None, help="rounds (default 5, quick 2); medians are reported")
    p.add_argument("--no-ramped", action="store_true", help="skip the ramped variant")
    p.add_argument("--cpu", type=int, default=None, help="CPU for every run (default: the least busy before each)")
    p.add_argument("--profile", action="store_true", help="also one in-process run under cProfile")
    p.add_argument("--top", type=int, default=20, help="cProfile entries to print (default 20)")
    p.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help=f"where to write the report (default {DEFAULT_JSON})"
    )
    p.add_argument("--check", action="store_true", help="exit 2 when the 10 s target is missed")
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if args.repeats < 1:
        p.error(f"--repeats: must be >= 1, got {args.repeats}")
    return args


def summarise(variants: tuple[Variant, ...], runs: list[dict[str, Any]]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for v in variants:
        ok = [r for r in runs if r["variant"] == v.key and "error" not in r and not r["problems"]]
        figures[v.key] = {
            "label": v.label,
            "runs": len([r for r in runs if r["variant"] == v.key]),
            "good_runs": len(ok),
            "process_wall_s": spread(r["process_wall_s"] for r in ok),
            "run_wall_s": spread(r["run_wall_s"] for r in ok),
            "startup_and_exit_s": spread(r["startup_and_exit_s"] for r in ok),
            "child_cpu_s": spread(r["child_cpu_s"] for r in ok),
            "speedup": spread(r["speedup"] for r in ok),
            "started": spread(r["started"] for r in ok),
        }
    return figures


def round_ratios(runs: list[dict[str, Any]], key: str) -> list[float]:
    """``key`` over baseline, process wall, within each round."""
    out = []
    for rnd in {r["round"] for r in runs}:
        by = {r["variant"]: r for r in runs if r["round"] == rnd and "error" not in r and not r["problems"]}
        if key in by and "baseline" in by:
            out.append(by[key]["process_wall_s"] / by["baseline"]["process_wall_s"])
    return out


def _s(x: dict[str, float]) -> str:
    return f"{x['median']:6.2f} s  ({x['min']:.2f} .. {x['max']:.2f})"


def print_table(report: dict[str, Any]) -> None:
    env, cfg, figs = report["environment"], report["config"], report["figures"]
    print(
        f"loadsim time compression | {env['cpu_model']} | python {env['python']} | numpy {env['numpy']} | "
        f"median of {cfg['repeats']} rounds, interleaved | wall {report['wall_seconds']:.0f} s"
    )
    print(
        "`python -m loadsim run profiles/realistic.toml --virtual --no-listen`: "
        f"{VIRTUAL_SECONDS / 3600:g} virtual hours, one process per run"
    )
    print()
    print(f"{'variant':<38} {'process wall (min..max)':<29} {'in-run wall':>11} {'start+exit':>10} {'x real time':>11}")
    for f in figs.values():
        if not f["good_runs"]:
            print(f"{f['label']:<38} FAILED (see runs)")
            continue
        print(
            f"{f['label']:<38} {_s(f['process_wall_s']):<29} {f['run_wall_s']['median']:9.2f} s "
            f"{f['startup_and_exit_s']['median']:8.2f} s {f['speedup']['median']:>10,.0f}x"
        )
    print()
    for key, ratio in report["ratios"].items():
        if not math.isnan(ratio["median"]):
            print(
                f"{figs[key]['label']} / baseline: {ratio['median']:.3f}x "
                f"(per round {ratio['min']:.3f} .. {ratio['max']:.3f})"
            )
    t = report["targets"]
    print(
        f"target: 48 virtual hours with 7 overlays in <= {TARGET_WALL:g} s of wall time: "
        f"{t['process_wall_s']:.2f} s {met(t['met'])}"
        + (
            f" (ramped: {t['ramped_process_wall_s']:.2f} s {met(t['ramped_met'])})"
            if t["ramped_met"] is not None
            else ""
        )
    )
    for w in report["warnings"]:
        print(f"WARNING: {w}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    variants = (BASELINE, WITH_OVERLAYS) if args.no_ramped else VARIANTS
    watchdog((args.repeats * len(variants) + 1) * (RUN_TIMEOUT + 2) + 600)
    wall = time.perf_counter()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="loadsim-time-compression-") as tmp:
        workdir = Path(tmp)
        ramped = ramped_profile(workdir)
        # Untimed warm-up: the first process pays for cold caches (imports, page cache).
        subprocess.run(
            command(BASELINE, workdir / "warm.json", ramped, duration="1h"),
            cwd=REPO,
            capture_output=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        for rnd in range(args.repeats):
            baseline_error = None
            for v in variants:
                cpu = args.cpu if args.cpu is not None else least_busy_cpu()
                r = run_once(v, workdir, ramped, cpu)
                r["round"] = rnd
                r["problems"] = [] if "error" in r else check_run(r, v, baseline_error)
                if v is BASELINE and "error" not in r:
                    baseline_error = r["error_ratio"]
                runs.append(r)
                if "error" in r:
                    print(f"  round {rnd + 1} {v.key:<16} FAILED: {r['error']}", flush=True)
                else:
                    bad = f"  PROBLEMS: {'; '.join(r['problems'])}" if r["problems"] else ""
                    print(
                        f"  round {rnd + 1} {v.key:<16} {r['process_wall_s']:6.2f} s "
                        f"(run {r['run_wall_s']:.2f} s, cpu {r['cpu']}, sends {r['started']:,}, "
                        f"overlays {r['overlay_starts']}){bad}",
                        flush=True,
                    )
    figures = summarise(variants, runs)
    ratios = {v.key: spread(round_ratios(runs, v.key)) for v in variants if v is not BASELINE}
    main_wall = figures["overlays"]["process_wall_s"]["median"]
    ramped_wall = figures.get("overlays_ramped", {}).get("process_wall_s", {}).get("median")
    warnings = [
        f"round {r['round'] + 1} {r['variant']}: other processes used {r['others_share']:.0%} of cpu {r['cpu']}"
        for r in runs
        if "error" not in r and (r["others_share"] or 0) > 0.25
    ]
    report: dict[str, Any] = {
        "benchmark": "time_compression",
        "environment": environment(args.cpu if args.cpu is not None else "least busy, per run"),
        "config": {
            "quick": args.quick,
            "repeats": args.repeats,
            "profile": str(PROFILE.relative_to(REPO)),
            "virtual_seconds": VIRTUAL_SECONDS,
            "overlays": [f"{n}@{s}+{d}" for n, s, d in OVERLAYS],
            "ramp": RAMP,
            "command": "python -m loadsim run profiles/realistic.toml --virtual --no-listen --progress off "
            "--summary-json FILE [--overlay ...]",
        },
        "figures": figures,
        "ratios": ratios,
        "targets": {
            "max_wall_s": TARGET_WALL,
            "process_wall_s": main_wall,
            "met": None if math.isnan(main_wall) else main_wall <= TARGET_WALL,
            "ramped_process_wall_s": ramped_wall,
            "ramped_met": None if ramped_wall is None or math.isnan(ramped_wall) else ramped_wall <= TARGET_WALL,
        },
        "runs": runs,
        "warnings": warnings,
    }
    if args.profile:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report["cprofile"] = profile_in_process(args.json.with_suffix(".prof"), args.top)
    report["wall_seconds"] = round(time.perf_counter() - wall, 1)
    print()
    print_table(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {args.json}")
    cancel_watchdog()
    if any("error" in r or r["problems"] for r in runs):
        return 1
    return 2 if args.check and not report["targets"]["met"] else 0


if __name__ == "__main__":
    sys.exit(main())
