"""``loadsim sensitivity``: options, their checks (all before anything runs), the cluster, the output.

Only argparse and the units parser are imported at module level: the CLI builds every
subcommand's parser at start, and ``loadsim --help`` must not pay for Dask, scipy or
matplotlib.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadsim.errors import EXIT_OK, ConfigError, Problem
from loadsim.outputs import directory_problem
from loadsim.units import parse_duration, parse_rate

if TYPE_CHECKING:
    from distributed import Client

    from loadsim.sensitivity.sweep import Report, Spec

HELP = "how likely, and how fast, each relay alert fires for faults of each size (virtual runs on Dask)"
CONNECT_TIMEOUT = 5.0
"""Seconds to wait for ``--scheduler`` before giving up (exit 2)."""
ALLOW_HOSTS_ENV = "LOADSIM_ALLOW_HOSTS"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The subcommand's options."""
    p.add_argument(
        "--alert",
        action="append",
        default=[],
        metavar="NAME",
        help="alert to measure (repeat; default: the error, latency, validation and sanitization alerts)",
    )
    p.add_argument(
        "--intensity",
        action="append",
        default=[],
        metavar="ALERT=X,Y,...",
        help="intensities to sweep for ALERT's scenario (default: its axis's grid)",
    )
    p.add_argument("--rate", default="5/s,50/s", help="background rates, comma-separated (default 5/s,50/s)")
    p.add_argument("--runs", type=int, default=200, help="virtual runs per point (default 200; 0: background only)")
    p.add_argument("--deadline", default="30m", help="detection deadline after the fault starts (default 30m)")
    p.add_argument("--background-hours", type=float, default=48.0, help="length of each background run (default 48)")
    p.add_argument("--background-runs", type=int, default=2, help="background runs per rate (default 2; 0: none)")
    p.add_argument("--seed", type=int, default=1, help="base seed (default 1)")
    p.add_argument("--batch", type=int, default=25, help="virtual runs per Dask task (default 25)")
    p.add_argument("--workers", type=int, help="local cluster workers (default: this machine's cores)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler, e.g. tcp://10.0.0.5:8786")
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST",
        help=f"allow a non-loopback --scheduler host (also ${ALLOW_HOSTS_ENV}, comma-separated)",
    )
    p.add_argument(
        "--compare-workers",
        metavar="N,M,...",
        help="run the sweep once per local worker count and report the speed-up (e.g. 1,2)",
    )
    p.add_argument("--out", type=Path, metavar="DIR", help="write sensitivity.json, sensitivity.html and SVGs here")
    p.add_argument("--progress", choices=("auto", "line", "off"), default="auto", help="progress on stderr")


@dataclass(frozen=True, slots=True)
class Options:
    """Checked options."""

    spec: Spec
    scheduler: str | None
    workers: tuple[int, ...]
    """Local worker counts to run with, in order (one unless --compare-workers)."""
    out: Path | None
    progress: str


def check(args: argparse.Namespace) -> Options:
    """Every option checked; ConfigError with all problems at once."""
    from loadsim.sensitivity.sweep import Spec

    problems: list[Problem] = []
    alerts, grids = _alerts(args, problems)
    rates = _rates(args.rate, problems)
    deadline = _duration("--deadline", args.deadline, problems)
    if deadline is not None and (deadline < 60 or abs(deadline / 15 - round(deadline / 15)) > 1e-9):
        problems.append(Problem("--deadline", "", f"must be a multiple of 15s and at least 1m, got {args.deadline!r}"))
    _counts(args, problems)
    workers = _workers(args, problems)
    scheduler = _scheduler(args, problems)
    why = None if args.out is None else directory_problem(args.out)  # probed now, not after the sweep
    if why is not None:
        problems.append(Problem("--out", "", why))
    if problems:
        raise ConfigError(problems)
    assert deadline is not None
    spec = Spec(
        alerts=alerts,
        grids=grids,
        rates=tuple(rates),
        runs=args.runs,
        deadline=deadline,
        background_hours=args.background_hours,
        background_runs=args.background_runs,
        seed=args.seed,
        batch=args.batch,
    )
    progress = args.progress
    if progress == "auto":
        progress = "line" if sys.stderr.isatty() else "off"
    return Options(spec, scheduler, workers, args.out, progress)


def _alerts(args: argparse.Namespace, problems: list[Problem]) -> tuple[tuple[str, ...], dict[str, tuple[float, ...]]]:
    """The alerts measured, and the intensities of each axis they are on (``--intensity`` replaces the grid)."""
    from loadsim.sensitivity.knobs import DEFAULT_ALERTS, KNOBS

    alerts = tuple(dict.fromkeys(args.alert)) or DEFAULT_ALERTS
    problems += [
        Problem("--alert", "", f"unknown alert {a!r}; one of: {', '.join(KNOBS)}") for a in alerts if a not in KNOBS
    ]
    known = tuple(a for a in alerts if a in KNOBS)
    grids = {KNOBS[a].axis.scenario: list(KNOBS[a].axis.grid) for a in known}
    given: dict[str, list[float]] = {}
    for text in args.intensity:
        _intensity(text, known, given, problems)
    grids.update(given)
    return known, {k: tuple(sorted(set(v))) for k, v in grids.items()}


def _counts(args: argparse.Namespace, problems: list[Problem]) -> None:
    for option, value, low in (
        ("--runs", args.runs, 0),
        ("--batch", args.batch, 1),
        ("--background-runs", args.background_runs, 0),
        ("--seed", args.seed, 0),
    ):
        if value < low:
            problems.append(Problem(option, "", f"must be >= {low}, got {value}"))
    if args.runs == 0 and args.background_runs == 0:
        problems.append(Problem("--runs", "", "and --background-runs are both 0: nothing to run"))
    if args.runs == 0 and args.intensity:
        problems.append(Problem("--intensity", "", "goes with --runs > 0 (no fault is swept with --runs 0)"))
    if args.background_runs and not 1 <= args.background_hours <= 24 * 30:
        problems.append(Problem("--background-hours", "", f"must be in [1, 720], got {args.background_hours:g}"))


def _intensity(text: str, alerts: Sequence[str], given: dict[str, list[float]], problems: list[Problem]) -> None:
    from loadsim.sensitivity.knobs import KNOBS

    name, sep, values = text.partition("=")
    if not sep or not values:
        problems.append(Problem("--intensity", "", f"expected ALERT=X,Y,... got {text!r}"))
        return
    if name not in alerts:
        why = "unknown alert" if name not in KNOBS else "not among the alerts measured (add --alert)"
        problems.append(Problem("--intensity", name, f"{why}: {name!r}"))
        return
    axis = KNOBS[name].axis
    for item in values.split(","):
        try:
            x = float(item)
        except ValueError:
            problems.append(Problem("--intensity", name, f"expected a number, got {item!r}"))
            continue
        if not axis.valid(x):
            problems.append(
                Problem(
                    "--intensity",
                    name,
                    f"{item} is outside the valid range of {axis.scenario}'s {axis.option} ({axis.name}): "
                    f"{axis.range_text}",
                )
            )
            continue
        given.setdefault(axis.scenario, []).append(x)


def _rates(text: str, problems: list[Problem]) -> list[float]:
    rates = []
    for item in text.split(","):
        try:
            rate = parse_rate(item.strip())
        except ValueError as e:
            problems.append(Problem("--rate", "", str(e)))
            continue
        if not 0.01 <= rate <= 100_000:
            problems.append(Problem("--rate", "", f"must be in [0.01/s, 100000/s], got {item.strip()!r}"))
            continue
        rates.append(rate)
    return list(dict.fromkeys(rates))


def _duration(option: str, text: str, problems: list[Problem]) -> float | None:
    try:
        return parse_duration(text)
    except ValueError as e:
        problems.append(Problem(option, "", str(e)))
        return None


def _workers(args: argparse.Namespace, problems: list[Problem]) -> tuple[int, ...]:
    if args.scheduler is not None:
        for option, value in (("--workers", args.workers), ("--compare-workers", args.compare_workers)):
            if value is not None:
                problems.append(Problem(option, "", "sizes the local cluster; it does not go with --scheduler"))
        return ()
    if args.compare_workers is not None:
        if args.workers is not None:
            problems.append(Problem("--workers", "", "does not go with --compare-workers"))
        try:
            counts = tuple(int(x) for x in args.compare_workers.split(","))
        except ValueError:
            problems.append(
                Problem("--compare-workers", "", f"expected counts such as 1,2, got {args.compare_workers!r}")
            )
            return ()
        if not counts or any(c < 1 for c in counts):
            problems.append(Problem("--compare-workers", "", f"every count must be >= 1, got {args.compare_workers!r}"))
        return counts
    if args.workers is not None and args.workers < 1:
        problems.append(Problem("--workers", "", f"must be >= 1, got {args.workers}"))
    return (args.workers or len(os.sched_getaffinity(0)),)


def _scheduler(args: argparse.Namespace, problems: list[Problem]) -> str | None:
    """The scheduler's address, its host on loopback or allowed; reachability is checked when connecting."""
    from distributed.comm.addressing import parse_address, parse_host_port

    from loadsim.net import is_loopback

    if args.scheduler is None:
        return None
    try:
        _scheme, location = parse_address(args.scheduler)
        host, _port = parse_host_port(location)
    except ValueError as e:
        problems.append(Problem("--scheduler", "", f"expected an address such as tcp://127.0.0.1:8786 ({e})"))
        return None
    allowed = set(args.allow_host) | {h.strip() for h in os.environ.get(ALLOW_HOSTS_ENV, "").split(",") if h.strip()}
    if not is_loopback(host) and host not in allowed:
        problems.append(Problem("--scheduler", "", f"{host} is not on loopback; allow it with --allow-host {host}"))
        return None
    return str(args.scheduler)


@contextmanager
def connect(scheduler: str | None, workers: int, *, processes: bool = True) -> Iterator[Client]:
    """A client of the scheduler at ``scheduler``, or of a local cluster of ``workers`` single-threaded workers.

    The local cluster listens on loopback only, on ephemeral ports, without a dashboard.
    An unreachable scheduler is a ConfigError (exit 2) before any work is submitted.
    """
    import logging

    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT:g}s")  # type: ignore[no-untyped-call] # distributed is untyped
        except (OSError, TimeoutError) as e:
            raise ConfigError.single("--scheduler", "", f"no Dask scheduler answered at {scheduler}: {e}") from None
        with client:
            yield client
        return
    # Worker processes talk to the scheduler over TCP on loopback; threads in this process use
    # Dask's in-process transport, which opens no socket at all.
    network: dict[str, Any] = {"host": "127.0.0.1", "scheduler_port": 0} if processes else {}
    with (
        LocalCluster(  # type: ignore[no-untyped-call] # distributed is untyped
            n_workers=workers,
            threads_per_worker=1,
            processes=processes,
            dashboard_address=None,
            silence_logs=logging.ERROR,
            **network,
        ) as cluster,
        Client(cluster) as client,  # type: ignore[no-untyped-call]
    ):
        yield client


def _progress(mode: str) -> Any:
    if mode == "off":
        return None
    t0 = time.monotonic()
    last = [0.0]

    def show(done: int, tasks: int, runs_done: int, runs: int) -> None:
        now = time.monotonic()
        if done < tasks and now - last[0] < 1.0:
            return
        last[0] = now
        elapsed = now - t0
        eta = elapsed / runs_done * (runs - runs_done) if runs_done else 0.0
        print(
            f"sensitivity: {done}/{tasks} tasks, {runs_done}/{runs} runs, {elapsed:.0f} s, about {eta:.0f} s to go",
            file=sys.stderr,
            flush=True,
        )

    return show


def run(options: Options, *, processes: bool = True) -> Report:
    """The sweep on the scheduler, or once per local worker count (timing each)."""
    from loadsim.sensitivity import render
    from loadsim.sensitivity.sweep import sweep

    if options.scheduler is not None:
        with connect(options.scheduler, 0) as client:
            return sweep(options.spec, client, _progress(options.progress))
    report: Report | None = None
    walls: dict[str, float] = {}
    documents = []
    load = os.getloadavg()
    for count in options.workers:
        with connect(None, count, processes=processes) as client:
            report = sweep(options.spec, client, _progress(options.progress))
        walls[str(count)] = round(report.wall_seconds, 2)
        documents.append(render.document(report)["alerts"])
    assert report is not None
    if len(options.workers) > 1:
        first, last = options.workers[0], options.workers[-1]
        report.timings = {
            "wall_seconds_by_workers": walls,
            "speedup": round(walls[str(first)] / walls[str(last)], 2),
            "load_average_before": [round(x, 2) for x in load],
            "identical_results": all(d == documents[0] for d in documents),
        }
    return report


def main(args: argparse.Namespace) -> int:
    """``loadsim sensitivity``."""
    from loadsim.sensitivity import plot, render

    options = check(args)
    report = run(options)
    table = render.table(report)
    summary = render.summary(report)
    print("\n".join(table))
    print(summary)
    if report.timings:
        t = report.timings
        walls = ", ".join(
            f"{n} worker{'s' if n != '1' else ''} {s:g} s" for n, s in t["wall_seconds_by_workers"].items()
        )
        load = ", ".join(map(str, t["load_average_before"]))
        same = "yes" if t["identical_results"] else "NO"
        print(f"speed-up: {walls} -> x{t['speedup']:g} (load average before: {load}; results identical: {same})")
    if options.out is not None:
        options.out.mkdir(parents=True, exist_ok=True)
        (options.out / "sensitivity.json").write_text(
            json.dumps(render.document(report), indent=1) + "\n", encoding="utf-8"
        )
        written = plot.write(report, "\n".join(table), summary, options.out)
        print(f"wrote {options.out / 'sensitivity.json'} and {len(written)} plot files in {options.out}")
    return EXIT_OK
