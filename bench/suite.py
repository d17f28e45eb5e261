"""Every benchmark in one command: runs each part, collects its JSON, prints the headline figures against targets.

Parts, each run as its own process, one after the other (``python -m bench.NAME --json FILE
[--quick]``, from the repository root), with a wall-time limit:

==================  ====================================================  ===========  ==========
part                what it measures                                      quick        default
==================  ====================================================  ===========  ==========
sim_throughput      simulated sends/s of wall time, vs a per-event loop    ~15 s        ~60 s
rate_accuracy       wall-clock rate, per-second counts, window lateness    ~1.5 min     ~9 min
time_compression    48 virtual hours of realistic.toml + 7 overlays        ~45 s        ~2 min
soak_memory         RSS over a long virtual run (``--seconds 30`` / 120)   ~35 s        ~2 min
http_throughput     HTTP req/s vs Locust, naive; 90% hold (if present)     ~1 min       ~6 min
==================  ====================================================  ===========  ==========

Each part's flags are read from its ``--help`` first, so a part that lacks ``--quick``
is run without it. A part that fails, times out or writes no JSON is reported as such;
the others still run. The headline table shows each figure, its target and whether it
was met; the combined report (every part's own JSON, its command, exit status, wall time
and the tail of its output) goes to ``$TMPDIR/loadsim-bench/suite.json``, and each part's
JSON to ``$TMPDIR/loadsim-bench/suite/NAME.json``.

    .venv/bin/python -m bench.suite --quick                      # about 5 minutes
    .venv/bin/python -m bench.suite                              # about 20 minutes
    .venv/bin/python -m bench.suite --only time_compression soak_memory --check

Exit status: 1 when a part failed, 2 with ``--check`` when a target was missed, else 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in {None, ""}:  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import BENCH_DIR, REPO, environment, met

DEFAULT_JSON = BENCH_DIR / "suite.json"
DEFAULT_PARTS_DIR = BENCH_DIR / "suite"
OUTPUT_TAIL = 60
"""Lines of each part's output kept in the combined report."""

Headline = dict[str, Any]
"""One row of the table: part, figure, value, target, met (True, False or None: no target)."""


def row(part: str, figure: str, value: str, target: str = "as measured", ok: bool | None = None) -> Headline:
    return {"part": part, "figure": figure, "value": value, "target": target, "met": ok}


def dig(report: dict[str, Any], *keys: str) -> Any:
    """``report[k1][k2]...`` or None when any level is missing."""
    cur: Any = report
    for k in keys:
        if not isinstance(cur, dict) or k not in cur:
            return None
        cur = cur[k]
    return cur


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not math.isnan(float(x)) else None


# -- headline figures, one extractor per part -------------------------------------------------------


def sim_throughput_rows(r: dict[str, Any]) -> list[Headline]:
    out = []
    eng = dig(r, "figures", "engine")
    if eng:
        target = dig(r, "targets", "engine_sends_per_s") or 5e6
        out.append(
            row(
                "sim_throughput",
                "engine, simulated sends/s",
                f"{eng['sends_per_s_median'] / 1e6:.2f} M/s "
                f"({eng['sends_per_s_min'] / 1e6:.2f}..{eng['sends_per_s_max'] / 1e6:.2f})",
                f">= {target / 1e6:g} M/s",
                dig(r, "targets", "met_rate"),
            )
        )
    ratio = _num(dig(r, "ratios", "engine_over_per_event"))
    if ratio is not None:
        worst = _num(dig(r, "ratios", "engine_over_per_event_worst")) or math.nan
        target = dig(r, "targets", "engine_over_per_event") or 20
        out.append(
            row(
                "sim_throughput",
                "engine / per-event prometheus loop",
                f"{ratio:.1f}x (worst {worst:.1f}x)",
                f">= {target:g}x",
                dig(r, "targets", "met_ratio"),
            )
        )
    sane = dig(r, "sanity", "ok")
    if sane is not None:
        out.append(row("sim_throughput", "exported == started (sanity)", "ok" if sane else "FAILED", "ok", sane))
    return out


def rate_accuracy_rows(r: dict[str, Any]) -> list[Headline]:
    out = []
    t = r.get("targets") or {}
    target_rate = t.get("rate", 1000.0)
    for x in r.get("rows", []):
        if "rel_error" not in x:
            out.append(row("rate_accuracy", f"{x['rate']:,.0f}/s {x['arrivals']} {x['loop']}", "FAILED", ok=False))
            continue
        label = f"{x['rate']:,.0f}/s {x['arrivals']}, {x['loop']}"
        has_target = x["rate"] == target_rate and x["arrivals"] == t.get("arrivals", "even")
        v = dig(t, "by_loop", x["loop"]) or {}
        out.append(
            row(
                "rate_accuracy",
                f"{label}: achieved vs target",
                f"{x['rel_error']['median'] * 100:+.4f}% ({x['started']['median']:,.0f} sends"
                + (f", z {x['z_score']['median']:+.1f})" if x["arrivals"] == "poisson" and "z_score" in x else ")"),
                f"within {t.get('max_rel_error', 0.001) * 100:g}%" if has_target else "as measured",
                v.get("rel_error_met") if has_target else None,
            )
        )
        out.append(
            row(
                "rate_accuracy",
                f"{label}: window lateness",
                f"p99 {x['lateness_p99_s']['median'] * 1e3:.2f} ms, max {x['lateness_max_s']['median'] * 1e3:.2f} ms",
                f"p99 <= {t.get('max_lateness_p99_s', 0.002) * 1e3:g} ms" if has_target else "as measured",
                v.get("lateness_met") if has_target else None,
            )
        )
    return out


def time_compression_rows(r: dict[str, Any]) -> list[Headline]:
    out = []
    target = dig(r, "targets", "max_wall_s") or 10.0
    for key, has_target in (("overlays", True), ("overlays_ramped", True), ("baseline", False)):
        f = dig(r, "figures", key)
        if not f or not f.get("good_runs"):
            continue
        w = f["process_wall_s"]
        ok = None
        if has_target:
            ok = dig(r, "targets", "met") if key == "overlays" else dig(r, "targets", "ramped_met")
        out.append(
            row(
                "time_compression",
                f"48 h virtual, {f['label']}",
                f"{w['median']:.2f} s ({w['min']:.2f}..{w['max']:.2f}; run {f['run_wall_s']['median']:.2f} s)",
                f"<= {target:g} s" if has_target else "as measured",
                ok,
            )
        )
    ratio = dig(r, "ratios", "overlays")
    if ratio and _num(ratio.get("median")) is not None:
        out.append(
            row(
                "time_compression",
                "7 overlays / baseline (same rounds)",
                f"{ratio['median']:.3f}x ({ratio['min']:.3f}..{ratio['max']:.3f})",
            )
        )
    return out


def soak_memory_rows(r: dict[str, Any]) -> list[Headline]:
    out = []
    steady, growth = _num(r.get("rss_steady_mb")), _num(r.get("growth_mb_per_10m_sends"))
    if steady is not None:
        out.append(row("soak_memory", "steady RSS", f"{steady:.1f} MB", "<= 120 MB", steady <= 120))
    if growth is not None:
        sends = r.get("sends", 0)
        out.append(
            row(
                "soak_memory",
                "RSS growth per 10M sends",
                f"{growth:+.3f} MB ({sends / 1e6:.0f}M sends in {r.get('wall_seconds')} s)",
                "<= 1 MB",
                growth <= 1.0,
            )
        )
    return out


def http_throughput_rows(r: dict[str, Any]) -> list[Headline]:
    out = []
    ratio = _num(dig(r, "ratios", "loadsim_over_locust"))
    target = dig(r, "targets", "loadsim_over_locust") or 2.5
    if ratio is not None:
        worst = _num(dig(r, "ratios", "loadsim_over_locust_worst"))
        out.append(
            row(
                "http_throughput",
                "loadsim / Locust, requests per core",
                f"{ratio:.2f}x" + (f" (worst {worst:.2f}x)" if worst is not None else ""),
                f">= {target:g}x",
                dig(r, "targets", "met_ratio"),
            )
        )
    else:
        out.append(row("http_throughput", "loadsim / Locust", "no figure in the report", f">= {target:g}x", None))
    naive = _num(dig(r, "ratios", "loadsim_over_naive"))
    if naive is not None:
        out.append(row("http_throughput", "loadsim / naive aiohttp loop", f"{naive:.2f}x"))
    out += http_hold_rows(r)
    return out


def http_hold_rows(r: dict[str, Any]) -> list[Headline]:
    """loadsim held at 90% of its own maximum: finished over target, drops; absent from older reports."""
    hold = r.get("hold")
    if not isinstance(hold, dict):
        return []
    fraction = _num(hold.get("fraction_of_max")) or 0.9
    c = hold.get("criterion") or {}
    finished, dropped = c.get("min_finished_over_target", 0.97), c.get("max_dropped_share", 0.01)
    p99_max = c.get("max_latency_from_intended_p99_s", 1.0)
    if "bar" in c:  # judged against min(target, the driver's capacity beside the hold run) (bench/README.md)
        target = (
            f"finished >= {c.get('min_finished', '0.97 x bar')}, bar = min(target, capacity now); dropped <= "
            f"{c.get('max_dropped_share', '')} (or caught up), no stall, p99 < {p99_max:g} s"
        )
    elif isinstance(finished, str):  # the criterion scaled by the room the machine left (bench/README.md)
        target = f">= 0.95 x room finished, dropped <= 1 - 0.97 x room (or caught up), no stall, p99 < {p99_max:g} s"
    else:
        target = f">= {finished:g} achieved, <= {dropped:.0%} dropped, p99 < {p99_max:g} s"
    figure = f"loadsim held at {fraction:.0%} of its max"
    rate, finished = _num(hold.get("target_rate_per_s")), _num(hold.get("finished_over_target_median"))
    if rate is None or finished is None:
        return [row("http_throughput", figure, "no hold runs in the report", target, dig(r, "targets", "met_hold"))]
    dropped = _num(hold.get("dropped_median")) or 0.0
    value = f"{finished:.3f} of {rate:,.0f}/s, {dropped:,.0f} dropped"
    p99 = _num(hold.get("latency_from_intended_p99_s_median"))
    if p99 is not None:
        value += f", p99 {p99 * 1e3:,.0f} ms"
    room = _num(hold.get("room_min"))
    if room is not None and room < 1:
        value += f", bar >= {room:.2f} x target"
    if (hold.get("runs") or 0) > 1 and hold.get("runs_held") != hold.get("runs"):
        value += f" (held in {hold.get('runs_held')} of {hold.get('runs')} runs)"
    return [row("http_throughput", figure, value, target, dig(r, "targets", "met_hold"))]


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    extra_quick: tuple[str, ...]
    """Arguments for ``--quick`` (used only when the part's ``--help`` lists them)."""
    extra_full: tuple[str, ...]
    timeout_quick: float
    timeout_full: float
    headlines: Callable[[dict[str, Any]], list[Headline]]
    optional: bool = False
    """Run only if ``bench/NAME.py`` exists and defines ``main`` (a part still being written)."""
    quick_note: str = ""
    """What to keep in mind about this part's figures in quick mode."""


PARTS = (
    Part("sim_throughput", ("--quick",), (), 120, 300, sim_throughput_rows),
    Part(
        "rate_accuracy",
        ("--quick",),
        (),
        360,
        1200,
        rate_accuracy_rows,
        quick_note="10 s runs have 100 windows: a p99 is the second-worst window, one interruption decides it",
    ),
    Part("time_compression", ("--quick",), (), 300, 600, time_compression_rows),
    Part(
        "soak_memory",
        ("--seconds", "30"),
        ("--seconds", "120"),
        150,
        300,
        soak_memory_rows,
        quick_note="30 s is within the RSS warm-up (it settles after 20-30 s): judge growth from the default 120 s",
    ),
    # Limits above the part's own watchdog (about 570 s quick, 1340 s default, after setup) so it reports itself.
    Part("http_throughput", ("--quick",), (), 660, 1650, http_throughput_rows, optional=True),
)


def available(part: Part) -> str | None:
    """None when the part can run, else why not."""
    path = REPO / "bench" / f"{part.name}.py"
    if not path.exists():
        return f"bench/{part.name}.py does not exist"
    if not re.search(r"^def main\(", path.read_text(encoding="utf-8"), re.MULTILINE):
        return f"bench/{part.name}.py has no main()"
    return None


def supported_flags(part: Part) -> set[str] | None:
    """The long options the part's ``--help`` lists; None when ``--help`` itself failed."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", f"bench.{part.name}", "--help"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0:
        return None
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", proc.stdout))


def command_for(part: Part, quick: bool, json_path: Path, flags: set[str]) -> tuple[list[str], list[str]]:
    """The part's command line, and notes on flags it does not take."""
    notes = []
    cmd = [sys.executable, "-m", f"bench.{part.name}"]
    if "--json" in flags:
        cmd += ["--json", str(json_path)]
    else:
        notes.append("no --json flag: no report to collect")
    extra = part.extra_quick if quick else part.extra_full
    if extra and extra[0] not in flags:
        notes.append(f"no {extra[0]} flag: run with its defaults")
    else:
        cmd += list(extra)
    return cmd, notes


def _stream(proc: subprocess.Popen[str], name: str, lines: list[str], echo: bool) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if echo:
            print(f"  [{name}] {line}", end="", flush=True)


def stop_group(proc: subprocess.Popen[str]) -> None:
    """End the part and everything it started (its own session), TERM first, KILL after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        return


def run_part(part: Part, args: argparse.Namespace) -> dict[str, Any]:
    """Run one part (bounded); its status, report and headline rows."""
    json_path = args.parts_dir / f"{part.name}.json"
    json_path.unlink(missing_ok=True)
    flags = supported_flags(part)
    if flags is None:
        return {"status": "failed", "detail": "--help failed: the part does not start", "headlines": []}
    cmd, notes = command_for(part, args.quick, json_path, flags)
    timeout = (part.timeout_quick if args.quick else part.timeout_full) * args.timeout_scale
    shown = " ".join(["python", *cmd[1:]]).replace(str(args.parts_dir), "$PARTS")
    print(f"== {part.name}: {shown}  (limit {timeout:.0f} s)", flush=True)
    lines: list[str] = []
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    reader = threading.Thread(target=_stream, args=(proc, part.name, lines, not args.quiet), daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        stop_group(proc)
    except KeyboardInterrupt:
        stop_group(proc)
        raise
    reader.join(timeout=5)
    wall = time.monotonic() - start
    out: dict[str, Any] = {
        "command": cmd,
        "returncode": proc.returncode,
        "wall_seconds": round(wall, 1),
        "timeout_s": timeout,
        "notes": notes,
        "json_path": str(json_path),
        "output_tail": lines[-OUTPUT_TAIL:],
    }
    if args.quick and part.quick_note:
        out["quick_note"] = part.quick_note
    report = None
    if json_path.exists():
        with contextlib.suppress(ValueError):
            report = json.loads(json_path.read_text())
    out["report"] = report
    if timed_out:
        out["status"], out["detail"] = "failed", f"timed out after {timeout:.0f} s"
    elif proc.returncode not in {0, 2}:
        out["status"], out["detail"] = "failed", f"exit status {proc.returncode}"
    elif report is None:
        out["status"], out["detail"] = "failed", "wrote no JSON report"
    else:
        out["status"], out["detail"] = "ok", ""
    try:
        out["headlines"] = part.headlines(report) if report is not None else []
    except (KeyError, TypeError, ValueError) as e:
        out["headlines"] = []
        out["detail"] = (out["detail"] + "; " if out["detail"] else "") + f"report not understood: {e!r}"
    print(
        f"== {part.name}: {out['status']}{' (' + out['detail'] + ')' if out['detail'] else ''} in {wall:.0f} s",
        flush=True,
    )
    return out


def print_table(results: dict[str, dict[str, Any]], wall: float, quick: bool) -> None:
    rows: list[Headline] = [h for r in results.values() for h in r.get("headlines", [])]
    width_fig = max([len(h["figure"]) for h in rows] + [20])
    width_val = max([len(h["value"]) for h in rows] + [10])
    width_tgt = max([len(h["target"]) for h in rows] + [16])
    print()
    print(f"loadsim benchmark suite ({'quick' if quick else 'default'}) | wall {wall:.0f} s")
    print()
    print(f"{'part':<17} {'status':<7} {'wall':>6}  detail")
    for name, r in results.items():
        wall_s = f"{r['wall_seconds']:.0f} s" if "wall_seconds" in r else "-"
        print(f"{name:<17} {r['status']:<7} {wall_s:>6}  {r.get('detail', '')}")
    print()
    print(f"{'part':<17} {'figure':<{width_fig}}  {'value':<{width_val}}  {'target':<{width_tgt}} result")
    for h in rows:
        print(
            f"{h['part']:<17} {h['figure']:<{width_fig}}  {h['value']:<{width_val}}  {h['target']:<{width_tgt}} "
            f"{met(h['met']) if h['met'] is not None else '-'}"
        )
    for name, r in results.items():
        if r.get("quick_note"):
            print(f"note ({name}, quick): {r['quick_note']}")
    targets = [h for h in rows if h["met"] is not None]
    missed = [h for h in targets if not h["met"]]
    failed = [n for n, r in results.items() if r["status"] == "failed"]
    print()
    print(
        f"targets: {len(targets) - len(missed)} of {len(targets)} met"
        + (f"; missed: {', '.join(h['part'] + ' ' + h['figure'] for h in missed)}" if missed else "")
        + (f"; failed parts: {', '.join(failed)}" if failed else "")
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = [p.name for p in PARTS]
    p = argparse.ArgumentParser(prog="python -m bench.suite", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="every part's quick mode (soak_memory: --seconds 30)")
    p.add_argument("--only", nargs="+", choices=names, metavar="NAME", help=f"run only these parts: {', '.join(names)}")
    p.add_argument("--skip", nargs="+", choices=names, metavar="NAME", default=[], help="leave these parts out")
    p.add_argument("--quiet", action="store_true", help="do not echo each part's output (it is kept in the report)")
    p.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every part's time limit (slow machines)")
    p.add_argument(
        "--parts-dir", type=Path, default=DEFAULT_PARTS_DIR, help=f"each part's JSON (default {DEFAULT_PARTS_DIR})"
    )
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"the combined report (default {DEFAULT_JSON})")
    p.add_argument("--check", action="store_true", help="exit 2 when a target was missed")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = [p for p in PARTS if (args.only is None or p.name in args.only) and p.name not in args.skip]
    args.parts_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    for part in chosen:
        why_not = available(part)
        if why_not is not None:
            status = "skipped" if part.optional else "failed"
            results[part.name] = {"status": status, "detail": why_not, "headlines": []}
            print(f"== {part.name}: {status} ({why_not})", flush=True)
            continue
        results[part.name] = run_part(part, args)
    wall = time.monotonic() - start
    print_table(results, wall, args.quick)
    headlines = [h for r in results.values() for h in r.get("headlines", [])]
    report: dict[str, Any] = {
        "benchmark": "suite",
        "environment": environment(None),
        "config": {"quick": args.quick, "parts": [p.name for p in chosen], "timeout_scale": args.timeout_scale},
        "headlines": headlines,
        "targets": {
            "total": sum(h["met"] is not None for h in headlines),
            "met": sum(h["met"] is True for h in headlines),
            "missed": [f"{h['part']}: {h['figure']}" for h in headlines if h["met"] is False],
        },
        "parts": results,
        "wall_seconds": round(wall, 1),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {args.json}")
    if any(r["status"] == "failed" for r in results.values()):
        return 1
    return 2 if args.check and report["targets"]["missed"] else 0


if __name__ == "__main__":
    sys.exit(main())
