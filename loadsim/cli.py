"""The ``loadsim`` command line: ``run`` and ``check``.

Bad input (a profile, an option, a file) is reported as one line per problem,
``file: key: message``, with exit code 2 and no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from loadsim import __version__
from loadsim.errors import EXIT_OK, EXIT_USAGE, ConfigError, Problem
from loadsim.logs import LEVELS, configure
from loadsim.plan import Overrides, RunPlan, apply_overrides, build_plan
from loadsim.profile import EMBEDDED_DEFAULT, Profile, load_profile
from loadsim.sinks.metrics_server import DEFAULT_LISTEN, ListenAddress
from loadsim.units import format_duration


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="loadsim", description="Gmail-send traffic and the relay's real metrics, on demand."
    )
    parser.add_argument("--version", action="version", version=f"loadsim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="generate traffic and serve the relay's metrics")
    _profile_args(run)
    run.add_argument("--listen", default=DEFAULT_LISTEN, help=f"metrics address (default {DEFAULT_LISTEN})")
    run.add_argument("--no-listen", action="store_true", help="do not serve /metrics")
    run.add_argument("--virtual", action="store_true", help="run on the virtual clock (as fast as the CPU allows)")
    run.add_argument("--summary-json", type=Path, metavar="FILE", help="also write the end-of-run summary here")
    run.add_argument("--progress", choices=("auto", "line", "json", "off"), default="auto")
    run.add_argument("--log-level", choices=LEVELS, default=None, help="default: $LOADSIM_LOG_LEVEL or info")

    check = sub.add_parser("check", help="validate a profile and describe its plan without running it")
    _profile_args(check)
    check.add_argument("--virtual", action="store_true", help="plan on the virtual calendar (default: now)")
    return parser


def _profile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("profile", nargs="?", help="profile TOML file (default: the embedded default profile)")
    p.add_argument("--duration", help="run length, e.g. 30s, 15m, 48h (overrides the profile)")
    p.add_argument("--rate", help="constant rate, e.g. 1/s (replaces the profile's schedule)")
    p.add_argument("--seed", type=int, help="random seed (overrides the profile)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check":
            return _check(args)
        return _run(args)
    except ConfigError as e:
        for problem in e.problems:
            print(f"loadsim: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _load(args: argparse.Namespace) -> tuple[Profile, str]:
    profile = EMBEDDED_DEFAULT if args.profile is None else load_profile(args.profile)
    source = args.profile or "embedded default"
    profile = apply_overrides(profile, Overrides(duration=args.duration, rate=args.rate, seed=args.seed))
    return profile, source


def _check(args: argparse.Namespace) -> int:
    from loadsim.describe import describe_plan

    profile, source = _load(args)
    plan = build_plan(profile, virtual=args.virtual, wall_epoch=_now())
    print("\n".join(describe_plan(plan, source)))
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from loadsim.runner import ListenError, RunOptions, execute

    profile, _source = _load(args)
    listen = None
    if not args.no_listen:
        try:
            listen = ListenAddress.parse(args.listen)
        except ValueError as e:
            raise ConfigError([Problem("--listen", "", str(e))]) from None
    configure(args.log_level)
    plan = build_plan(profile, virtual=args.virtual, wall_epoch=_now())
    options = RunOptions(listen=listen, progress=args.progress, summary_json=args.summary_json)
    try:
        summary = _run_loop(execute(plan, options))
    except ListenError as e:
        raise ConfigError([Problem("--listen", "", str(e))]) from None
    _print_summary(plan, summary)
    return EXIT_OK


def _run_loop(coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run on uvloop (faster timers and sockets than the default loop)."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _print_summary(plan: RunPlan, s: dict[str, Any]) -> None:
    if not sys.stdout.isatty():
        return  # the run.summary log event already carries it
    sends = s["sends"]
    lat = s["latency_seconds"]
    print(
        f"\n{plan.name}: {format_duration(s['run_seconds'])} of traffic in {format_duration(s['wall_seconds'])}"
        f"\n  sends     {sends['started']:,} started, {sends['finished']:,} finished, "
        f"{sends['dropped']:,} dropped, {sends['abandoned']:,} abandoned"
        f"\n  rate      {s['achieved_rate_per_s']:.3f}/s achieved, {s['target_rate_per_s']:.3f}/s target"
        f"\n  status    {json.dumps(s['by_status'])}"
        f"\n  reasons   {json.dumps(s['by_reason'])}"
        f"\n  latency   p50 {lat['p50']}s  p95 {lat['p95']}s  p99 {lat['p99']}s"
    )


def _now() -> float:
    import time

    return time.time()
