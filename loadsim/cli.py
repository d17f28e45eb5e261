"""The ``loadsim`` command line: ``run``, ``check``, ``scenarios`` and ``scenario``.

Bad input (a profile, an option, a file) is reported as one line per problem,
``file: key: message``, with exit code 2 and no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import ssl
import sys
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from loadsim import __version__
from loadsim.errors import EXIT_ERROR, EXIT_FAILURE, EXIT_NO_GO, EXIT_OK, EXIT_USAGE, ConfigError, Problem, one_line
from loadsim.files import KIB, MIB, InputFileError, check_regular, read_text
from loadsim.logs import FORMATS, LEVELS, configure
from loadsim.net import DEFAULT_LISTEN, LOOPBACK_ONLY, ListenAddress, Reach, is_loopback, split_userinfo
from loadsim.outputs import OutputError, directory_problem, file_problem, write_atomically
from loadsim.plan import OVERLAY_HELP, Overrides, RunPlan, apply_overrides, build_plan, positive_option
from loadsim.profile import EMBEDDED_DEFAULT, MAX_IN_FLIGHT, OverlaySpec, Profile, load_profile
from loadsim.redaction import redact, redacted_output, remember, remember_in
from loadsim.runtime.signals import TRAFFIC_COMMANDS, StopSignals
from loadsim.sensitivity.command import HELP as SENSITIVITY_HELP
from loadsim.sensitivity.command import add_arguments as sensitivity_arguments
from loadsim.sensitivity.command import main as sensitivity_main
from loadsim.shard import INDEX_ENV, Shard
from loadsim.sinks.pushgateway import DEFAULT_INSTANCE, DEFAULT_JOB, PushTarget, redact_url
from loadsim.thresholds import EXIT_THRESHOLDS, Threshold, parse_option
from loadsim.units import MAX_SECONDS, format_duration, parse_duration, parse_rate

if TYPE_CHECKING:
    from loadsim.drivers.http import HttpOptions
    from loadsim.engine.keeper import StateOptions
    from loadsim.runtime.fleet import FleetOptions

ALLOW_HOSTS_ENV = "LOADSIM_ALLOW_HOSTS"
TOKEN_LIMIT = 64 * KIB
"""Largest token file read: a bearer token is a few hundred bytes, a JWT a few KiB."""
SCORE_CARD_LIMIT = 16 * MIB
"""Largest drill score card read by ``loadsim report --drill`` (one is about 2 KiB)."""
URL_ENVIRONMENT = ("PUSHGATEWAY_URL",)
"""Environment variables that give URLs (option defaults): their credentials are masked too."""
T = TypeVar("T")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="loadsim", description="Gmail-send traffic and the relay's real metrics, on demand."
    )
    parser.add_argument("--version", action="version", version=f"loadsim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="generate traffic and serve the relay's metrics")
    run.add_argument("profile", nargs="?", help="profile TOML file (default: the embedded default profile)")
    _schedule_args(run)
    _runtime_args(run)
    _fleet_args(run)
    _http_args(run)

    check = sub.add_parser("check", help="validate a profile and describe its plan without running it")
    check.add_argument("profile", nargs="?", help="profile TOML file (default: the embedded default profile)")
    _schedule_args(check)
    check.add_argument("--virtual", action="store_true", help="plan on the virtual calendar (default: now)")

    scenarios = sub.add_parser("scenarios", help="list the fault scenarios and the relay alerts each should fire")
    scenarios.add_argument(
        "--format",
        choices=("text", "github-choices"),
        default="text",
        help="text (default), or github-choices: the names as a YAML list, for a workflow_dispatch choice input",
    )

    _verify_args(sub)

    merge = sub.add_parser(
        "merge", help="a fleet's summary from its shards' --summary-json files (quantiles from merged histograms)"
    )
    merge.add_argument("summaries", nargs="+", type=Path, metavar="SUMMARY", help="one --summary-json file per shard")
    merge.add_argument("--out", type=Path, metavar="FILE", help="also write the fleet's summary here")
    merge.add_argument("--allow-missing", action="store_true", help="merge even if some shards' files are missing")

    _rollout_args(sub)
    sensitivity_arguments(sub.add_parser("sensitivity", help=SENSITIVITY_HELP))
    _history_args(sub)

    drill = sub.add_parser("drill", help="tabletop drill 01, automated against a live Prometheus and Alertmanager")
    drill.add_argument("--prometheus", required=True, metavar="URL", help="Prometheus base URL")
    drill.add_argument("--alertmanager", required=True, metavar="URL", help="Alertmanager base URL")
    drill.add_argument(
        "--time-scale", type=float, default=1.0, metavar="K", help="rules time-scaled K times (default 1)"
    )
    drill.add_argument("--rate", help="background rate (default 5/s; 15/s times the time scale when scaled, <= 500/s)")
    drill.add_argument("--seed", type=int, help="random seed")
    drill.add_argument("--json", type=Path, metavar="FILE", help="also write the score card here")
    _runtime_args(drill)

    from loadsim.fakegmail import HELP as FAKE_GMAIL_HELP
    from loadsim.fakegmail import main_args as fake_gmail_args

    fake_gmail_args(sub.add_parser("fake-gmail", help=FAKE_GMAIL_HELP))

    scale = sub.add_parser("scale-rules", help="write time-scaled copies of rule files (for fast drills and tests)")
    scale.add_argument("factor", type=float, help="divide every time constant by this, e.g. 30")
    scale.add_argument("out", type=Path, help="output directory")
    scale.add_argument("files", nargs="*", type=Path, help="rule files (default: the relay's, from deploy/relay)")

    scenario = sub.add_parser(
        "scenario",
        help="run one scenario on steady background load (drop-in for the seed's pushgateway_synth.py)",
    )
    scenario.add_argument("name", help="scenario name (see `loadsim scenarios`)")
    scenario.add_argument("--duration", default="15m", help="how long the scenario runs (default 15m)")
    scenario.add_argument("--rate", default="5/s", help="background rate (default 5/s)")
    scenario.add_argument("--seed", type=int, help="random seed")
    _runtime_args(scenario)
    return parser


def _verify_args(sub: Any) -> None:
    verify = sub.add_parser(
        "verify", help="the scenario x alert matrix: which relay alerts each scenario fires (virtual time, promtool)"
    )
    verify.add_argument(
        "--rules",
        nargs="+",
        action="append",
        type=Path,
        metavar="FILE",
        help="rule files evaluated together, one rule set, their groups in the order given (recording rules "
        "first); repeat for more sets (default: the relay's recording rules with each of its two alert files)",
    )
    verify.add_argument("--scenario", action="append", default=[], metavar="NAME", help="only these scenarios")
    verify.add_argument("--background-hours", type=float, default=48.0, help="length of the background-only run")
    verify.add_argument("--rate", default="20/s", help="background rate (default 20/s)")
    verify.add_argument("--seed", type=int, default=1)
    verify.add_argument("--export", type=Path, metavar="DIR", help="keep the generated promtool test files here")
    verify.add_argument(
        "--junit",
        type=Path,
        metavar="FILE",
        help="also write JUnit XML: one test case per scenario x alert expectation",
    )


def _history_args(sub: Any) -> None:
    """The commands that write or read a window of history: backfill, report, calibrate."""
    _backfill_args(sub)
    _report_args(sub)
    _calibrate_args(sub)


def _backfill_args(sub: Any) -> None:
    backfill = sub.add_parser(
        "backfill",
        help="write a virtual run's relay series as OpenMetrics for promtool tsdb create-blocks-from openmetrics",
    )
    backfill.add_argument("profile", nargs="?", help="profile TOML file (default: the embedded default profile)")
    _schedule_args(backfill)
    backfill.add_argument("--out", type=Path, required=True, metavar="FILE", help="the OpenMetrics file to write")
    backfill.add_argument("--scrape-interval", default="15s", help="time between samples (default 15s)")
    backfill.add_argument(
        "--end",
        default="now",
        metavar="TIME",
        help="when the run ends: now (default), now-DURATION or an ISO time such as 2026-11-30T12:00:00Z",
    )


def _report_args(sub: Any) -> None:
    report = sub.add_parser(
        "report",
        help="the observation report and 10-point readiness score for a window: HTML with plots, Markdown, JSON, CSV",
    )
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument("--prometheus", metavar="URL", help="the Prometheus that holds the window")
    source.add_argument(
        "--run",
        nargs="?",
        const="",
        metavar="PROFILE",
        help="report on a run of loadsim's own (default: the embedded profile), backfilled into a private Prometheus",
    )
    report.add_argument(
        "--from",
        dest="start",
        metavar="TIME",
        help="window start: ISO time or now-DURATION, e.g. now-24h (with --prometheus)",
    )
    report.add_argument(
        "--to",
        dest="end",
        default="now",
        metavar="TIME",
        help="window end: ISO time, now (default) or now-DURATION; with --run, when the run ends",
    )
    for option, what in (
        ("--duration", "run length (with --run)"),
        ("--rate", "constant rate (with --run)"),
        ("--overlay", "a fault overlay NAME@START+DURATION (with --run; repeatable)"),
    ):
        report.add_argument(option, action="append" if option == "--overlay" else "store", help=what)
    report.add_argument("--seed", type=int, help="random seed (with --run)")
    report.add_argument("--out", type=Path, required=True, metavar="DIR", help="where the four files go")
    report.add_argument("--alertmanager", metavar="URL", help="check routing and read its alerts")
    report.add_argument("--drill", type=Path, metavar="FILE", help="the score card of `loadsim drill --json`")
    report.add_argument("--runbooks", type=Path, metavar="DIR", help="where each alert's runbook_url should resolve")
    report.add_argument(
        "--dashboards",
        type=Path,
        metavar="DIR",
        help="Grafana dashboard JSON (default: the relay's, deploy/relay/grafana)",
    )
    report.add_argument("--rules", nargs="+", type=Path, metavar="FILE", help="rule files (default: the relay's, v1)")
    report.add_argument("--step", default="60s", help="time between the plotted points (default 60s)")
    report.add_argument("--allow-host", action="append", default=[], metavar="HOST", help="allow a non-loopback URL")
    report.add_argument(
        "--junit", type=Path, metavar="FILE", help="also write JUnit XML: one test case per readiness item"
    )


def _calibrate_args(sub: Any) -> None:
    calibrate = sub.add_parser(
        "calibrate",
        help="fit a profile to a relay's history in Prometheus: daily curve, latency, MIME, errors, side counters",
    )
    calibrate.add_argument("--prometheus", required=True, metavar="URL", help="the Prometheus that holds the history")
    calibrate.add_argument("--from", dest="start", required=True, metavar="TIME", help="window start: ISO time")
    calibrate.add_argument("--to", dest="end", default="now", metavar="TIME", help="window end: ISO time or now")
    calibrate.add_argument("--out", type=Path, required=True, metavar="FILE", help="the profile to write (TOML)")
    calibrate.add_argument(
        "--shape",
        choices=("auto", "diurnal", "hourly"),
        default="auto",
        help="send-rate shape: the diurnal curve, the hours replayed, or auto (diurnal unless it fits poorly)",
    )
    calibrate.add_argument("--name", default="calibrated", help="the profile's name (default calibrated)")
    calibrate.add_argument("--allow-host", action="append", default=[], metavar="HOST", help="allow a non-loopback URL")


def _rollout_args(sub: Any) -> None:
    rollout = sub.add_parser(
        "rollout",
        help="what the relay's rollout controller would do: every scenario striking at 100%%, both fidelities, "
        "and the hazards found (virtual time)",
    )
    rollout.add_argument("--scenario", action="append", default=[], metavar="NAME", help="only these scenarios")
    rollout.add_argument("--rate", default="20/s", help="background rate (default 20/s)")
    rollout.add_argument("--seed", type=int, default=1)
    rollout.add_argument("--json", type=Path, metavar="FILE", help="also write every decision here")


def _schedule_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", help="run length, e.g. 30s, 15m, 48h (overrides the profile)")
    p.add_argument("--rate", help="constant rate, e.g. 1/s (replaces the profile's schedule)")
    p.add_argument("--seed", type=int, help="random seed (overrides the profile)")
    p.add_argument(
        "--overlay", action="append", default=[], metavar="SPEC", help=f"add a fault overlay, {OVERLAY_HELP}"
    )


def _runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", default=DEFAULT_LISTEN, help=f"metrics address (default {DEFAULT_LISTEN})")
    p.add_argument("--no-listen", action="store_true", help="do not serve /metrics")
    p.add_argument("--virtual", action="store_true", help="run on the virtual clock (as fast as the CPU allows)")
    p.add_argument("--summary-json", type=Path, metavar="FILE", help="also write the end-of-run summary here")
    p.add_argument(
        "--progress",
        choices=("auto", "live", "line", "json", "off"),
        default="auto",
        help="auto (default): the live view on a terminal, a plain line on a dumb or narrow one, JSON events elsewhere",
    )
    _log_args(p)
    p.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="METRIC:EXPR",
        help="pass/fail criterion, e.g. 'latency:p(95)<500ms' or 'errors:rate<0.01 every 5m, abort_on_fail' "
        f"(repeatable; any failing exits {EXIT_THRESHOLDS})",
    )
    p.add_argument(
        "--pushgateway",
        metavar="URL",
        help="also push to this Pushgateway (default: $PUSHGATEWAY_URL)",
    )
    p.add_argument("--push-interval", default="10s", help="time between pushes (default 10s)")
    p.add_argument("--push-job", default=DEFAULT_JOB, help=f"grouping key job (default {DEFAULT_JOB})")
    p.add_argument(
        "--push-instance", default=DEFAULT_INSTANCE, help=f"grouping key instance (default {DEFAULT_INSTANCE})"
    )
    p.add_argument("--keep-group", action="store_true", help="leave the pushed group in place at a clean exit")
    p.add_argument("--grace", help="how long sends in flight may finish after the schedule or a signal (default 35s)")
    p.add_argument("--state", type=Path, metavar="FILE", help="checkpoint here and resume from it after a restart")
    fresh = p.add_mutually_exclusive_group()
    fresh.add_argument("--fresh", action="store_true", help="with --state: start a new run (old file kept as .bak)")
    fresh.add_argument(
        "--fresh-if-missing", action="store_true", help="with --state: resume if the file exists, else start"
    )
    p.add_argument("--checkpoint-interval", default="5s", help="time between checkpoints (default 5s)")
    p.add_argument(
        "--decision-log",
        type=Path,
        metavar="FILE",
        help="controller policy mode: write one JSON line per controller run here",
    )
    p.add_argument(
        "--controller-prometheus",
        metavar="URL",
        help="controller policy mode: send the controller's queries to this Prometheus (wall clock)",
    )
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST",
        help=f"allow pushing to this non-loopback host (also ${ALLOW_HOSTS_ENV}, comma-separated)",
    )


MIN_TIMEOUT = 0.01
"""Shortest ``--timeout`` (seconds)."""


def _fleet_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("fleet (one run split over N processes; see deploy/k8s)")
    who = g.add_mutually_exclusive_group()
    who.add_argument("--shard", metavar="K/N", help="be shard K (from 0) of N: keep every N-th arrival of the run")
    who.add_argument(
        "--shards", type=int, metavar="N", help=f"be shard ${INDEX_ENV} of N (a Kubernetes Indexed Job's pod index)"
    )
    g.add_argument(
        "--start-at",
        metavar="TIME",
        help="run time 0 for every shard: an ISO time such as 2026-11-30T12:00:00Z, or Unix seconds",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="check the profile and every option as a run would, then exit"
    )


def _log_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", choices=LEVELS, default=None, help="default: $LOADSIM_LOG_LEVEL or info")
    p.add_argument(
        "--log-format",
        choices=FORMATS,
        default="auto",
        help="auto (default): human lines on a terminal (NO_COLOR honoured), JSON lines elsewhere",
    )


HTTP_ONLY = (
    "target",
    "template",
    "timeout",
    "connections",
    "token_env",
    "token_file",
    "ca_file",
    "allow_target",
    "max_rate",
    "fault_control",
)
"""Options of the HTTP driver alone: refused with the simulated driver, never silently ignored."""


def _http_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("HTTP driver (--driver http)")
    g.add_argument("--driver", choices=("sim", "http"), default="sim", help="simulate sends, or make real requests")
    g.add_argument("--target", metavar="URL", help="base URL of the target (loopback unless --allow-target)")
    g.add_argument("--template", help="gmail (Gmail's send API, the default) or relay (preview + execute)")
    g.add_argument("--timeout", help="per-request timeout (default 30s)")
    g.add_argument(
        "--max-in-flight", type=int, help="drop (and count) arrivals beyond this (default: the profile's engine key)"
    )
    g.add_argument("--connections", type=int, help="connection pool size (default 256)")
    g.add_argument("--token-env", metavar="VAR", help="read the bearer token from this environment variable")
    g.add_argument("--token-file", type=Path, metavar="FILE", help="read the bearer token from this file")
    g.add_argument(
        "--ca-file", type=Path, metavar="PEM", help="trust this CA (PEM) for an https target, besides the system's"
    )
    g.add_argument("--allow-target", action="append", metavar="HOST", help="allow a non-loopback host")
    g.add_argument("--max-rate", help="rate limit (non-loopback targets: 10/s unless raised)")
    g.add_argument(
        "--fault-control",
        metavar="URL",
        help="a loadsim fake-gmail whose control API gets the run's Gmail-side overlays (5xx, latency, 429s)",
    )


def _driver_problems(args: argparse.Namespace) -> list[Problem]:
    """Options given to a driver that cannot honour them."""
    if getattr(args, "driver", "sim") == "http":
        return [Problem("--virtual", "", "the HTTP driver runs on the wall clock only")] if args.virtual else []
    given = [name for name in HTTP_ONLY if getattr(args, name, None) not in (None, [])]
    return [
        Problem(f"--{name.replace('_', '-')}", "", "applies to --driver http only; the simulated driver has no target")
        for name in given
    ]


def _http_options(args: argparse.Namespace, plan: RunPlan, problems: list[Problem]) -> HttpOptions | None:
    """The HTTP driver's options; every problem goes to ``problems`` (None when there are any)."""
    from loadsim.drivers.http import HttpOptions, check_target, overlay_problems, peak_rate

    if args.target is None:
        problems.append(Problem("--target", "", "--driver http needs --target URL"))
        return None
    try:
        target, user, password = split_userinfo(args.target)
    except ValueError:
        problems.append(Problem("--target", "", f"expected a URL such as http://127.0.0.1:9480, got {args.target!r}"))
        return None
    max_rate = None
    if args.max_rate is not None:
        max_rate = positive_option("--max-rate", args.max_rate, parse_rate, problems)
    timeout = positive_option("--timeout", args.timeout or "30s", parse_duration, problems)
    if timeout is not None and timeout < MIN_TIMEOUT:
        why = f"must be at least {format_duration(MIN_TIMEOUT)}, got {args.timeout!r} (shorter, requests time out"
        problems.append(Problem("--timeout", "", f"{why} before their connection opens and the pool only reconnects)"))
        timeout = None
    token = _read_token(args, problems)
    basic = _basic_auth(user, password, token, problems)
    ca_file = args.ca_file
    if ca_file is not None:
        _check_ca_file(ca_file, problems)
    connections = 256 if args.connections is None else args.connections
    if connections <= 0:
        problems.append(Problem("--connections", "", f"must be > 0, got {connections}"))
    template = args.template or "gmail"
    allowed_targets = set(args.allow_target or ())
    problems += check_target(
        target,
        allowed=allowed_targets,
        max_rate=max_rate,
        peak_rate=peak_rate(plan.schedule, plan.duration),
        template=template,
    )
    fault_control = None
    if args.fault_control is not None:
        fault_control = _control_url(args, "--fault-control", args.fault_control, problems)
    overlays = [
        (f"overlay[{i}]", ov.name, ov.ramp_in > 0 or ov.ramp_out > 0) for i, ov in enumerate(plan.timeline.overlays)
    ]
    problems += overlay_problems(overlays, template, fault_control is not None)
    if problems:
        return None
    return HttpOptions(
        target=target,
        template=template,
        timeout=timeout or 30.0,
        max_in_flight=_http_in_flight(plan),
        connections=connections,
        token=token,
        ca_file=ca_file,
        fault_control=fault_control,
        basic_auth=basic,
        reach=Reach.of(urlsplit(target).hostname or "", allowed_targets),
        fault_control_reach=_reach(args, fault_control),
    )


HTTP_IN_FLIGHT = 10_000
"""The HTTP driver's in-flight cap unless ``--max-in-flight`` or the profile's ``engine.max_in_flight``
names one (the HTTP driver's own default, and the benchmarks'): a request out holds its exchange,
its measurements and a place in a connection's queue, about 2.5 KB (measured: 100,000 out took
the process to 565 MB), so the simulated driver's 10,000,000 would be gigabytes against a
target that stops answering."""


def _http_in_flight(plan: RunPlan) -> int:
    explicit = "max_in_flight" in plan.engine.model_fields_set
    return plan.engine.max_in_flight if explicit else min(plan.engine.max_in_flight, HTTP_IN_FLIGHT)


def _check_ca_file(ca_file: Path, problems: list[Problem]) -> None:
    """Read ``--ca-file`` now: a bad file is a usage error, not a failure at the first connection."""
    from loadsim.drivers.http import tls_context

    try:
        tls_context(ca_file)
    except InputFileError as e:
        problems.append(Problem("--ca-file", "", f"cannot use {ca_file} ({e}); expected a PEM CA certificate"))
    except (OSError, ValueError) as e:
        why = "not a PEM certificate"  # ssl.SSLError (an OSError) and ValueError: what the file holds
        if isinstance(e, OSError) and not isinstance(e, ssl.SSLError) and e.strerror:
            why = e.strerror
        problems.append(Problem("--ca-file", "", f"cannot use {ca_file} ({why}); expected a PEM CA certificate"))


def _basic_auth(
    user: str | None, password: str | None, token: str | None, problems: list[Problem]
) -> tuple[str, str] | None:
    """The target URL's userinfo as HTTP Basic credentials (remembered, so never shown), or None."""
    if user is None:
        return None
    remember(user if password is None else password)
    if token is not None:
        why = "carries credentials and a bearer token is given too: one Authorization header; drop one of them"
        problems.append(Problem("--target", "", why))
        return None
    if ":" in user or not _header_safe(user) or not _header_safe(password or ""):
        why = "the credentials in the URL have control characters, or a ':' in the user"
        problems.append(Problem("--target", "", why))
        return None
    return user, password or ""


def _reach(args: argparse.Namespace, url: str | None) -> Reach:
    """The reach of a client of ``url``: beyond loopback only if its host was allowed with --allow-host."""
    if url is None:
        return LOOPBACK_ONLY
    return Reach.of(urlsplit(url).hostname or "", _allowed_hosts(args))


def _control_url(args: argparse.Namespace, option: str, url: str, problems: list[Problem]) -> str | None:
    """A control-plane URL (Prometheus, Alertmanager, fake-gmail): loopback, or a host allowed with --allow-host."""
    parts = urlsplit(url)
    host = parts.hostname
    try:
        _ = parts.port
    except ValueError:
        host = None
    if not host or parts.scheme not in ("http", "https"):
        problems.append(Problem(option, "", f"expected a URL such as http://127.0.0.1:9090, got {url!r}"))
        return None
    if not is_loopback(host) and host not in _allowed_hosts(args):
        problems.append(Problem(option, "", f"{host} is not on loopback; allow it with --allow-host {host}"))
        return None
    return url


def _read_token(args: argparse.Namespace, problems: list[Problem]) -> str | None:
    """The bearer token from --token-env or --token-file (never logged, never echoed)."""
    token, where = None, ""
    if args.token_env:
        token, where = os.environ.get(args.token_env), "--token-env"
        if not token:
            problems.append(Problem("--token-env", "", f"environment variable {args.token_env} is empty or unset"))
            return None
    elif args.token_file is not None:
        where = str(args.token_file)
        try:
            token = read_text(args.token_file, TOKEN_LIMIT).strip()
        except InputFileError as e:
            problems.append(Problem(where, "", f"cannot read token file: {e}"))
            return None
    remember(token)
    if token is not None and not _header_safe(token):
        # It goes into an Authorization header as is: a line break would add headers of its own.
        problems.append(Problem(where, "", "the token has control or non-ASCII characters; expected a bearer token"))
        return None
    return token


def _header_safe(value: str) -> bool:
    return value.isascii() and value.isprintable()


def main(argv: Sequence[str] | None = None, *, signals: StopSignals | None = None) -> int:
    """Entry point; returns the exit code.

    Everything the command prints, on either stream, goes through the one redaction
    (:mod:`loadsim.redaction`); the credentials of every URL given on the command line
    or in the environment are remembered first, so they are masked wherever they appear.
    A command that runs traffic catches its stop signals from here on (``signals``: caught
    earlier still, by ``loadsim.__main__``), and gives them back when it returns.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    remember_in(argv)
    remember_in([os.environ.get(name, "") for name in URL_ENVIRONMENT])
    with redacted_output():
        return _main(argv, signals)


def _main(argv: list[str], signals: StopSignals | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in TRAFFIC_COMMANDS:
        return _command(args)
    if signals is None:
        signals = StopSignals()
        signals.catch_early()
    args.stop_signals = signals
    try:
        return _command(args)
    finally:
        signals.restore()


def _command(args: argparse.Namespace) -> int:
    commands = {
        "check": _check,
        "scenarios": _scenarios,
        "scenario": _scenario,
        "run": _run,
        "verify": _verify,
        "rollout": _rollout,
        "sensitivity": sensitivity_main,
        "backfill": _backfill,
        "report": _report,
        "calibrate": _calibrate,
        "drill": _drill,
        "scale-rules": _scale_rules,
        "merge": _merge,
        "fake-gmail": _fake_gmail,
    }
    try:
        return commands[args.command](args)
    except ConfigError as e:
        for problem in e.problems:
            print(f"loadsim: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except OutputError as e:  # the run happened; its output could not be written
        print(f"loadsim: {one_line(str(e))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error of ours.
        sys.stderr.close()
        return EXIT_OK
    except Exception:  # noqa: BLE001 - the last resort: a bug gets its own exit code, never 1 ("an expectation failed")
        import traceback

        traceback.print_exc()
        print(f"loadsim: {args.command}: internal error (the traceback above); exit {EXIT_ERROR}", file=sys.stderr)
        return EXIT_ERROR


def _load(args: argparse.Namespace) -> tuple[Profile, str]:
    profile = EMBEDDED_DEFAULT if args.profile is None else load_profile(args.profile)
    source = args.profile or "embedded default"
    overrides = Overrides(duration=args.duration, rate=args.rate, seed=args.seed, overlays=tuple(args.overlay))
    return apply_overrides(profile, overrides), source


def _check(args: argparse.Namespace) -> int:
    from loadsim.describe import describe_plan

    profile, source = _load(args)
    plan = build_plan(profile, virtual=args.virtual, wall_epoch=time.time(), source=source)
    print("\n".join(describe_plan(plan, source)))
    return EXIT_OK


def _scenarios(args: argparse.Namespace) -> int:
    from loadsim.overlays.scenarios import ALL_ALERTS, SCENARIOS

    if args.format == "github-choices":
        # A YAML list, one name a line: deploy/github/sync-choices.sh puts it under a workflow's choice input.
        print("\n".join(f"- {name}" for name in SCENARIOS))
        return EXIT_OK
    for s in SCENARIOS.values():
        seed = "  (seed scenario)" if s.from_seed else ""
        print(f"{s.name}{seed}\n  {s.summary}")
        print(f"  fires:     {', '.join(s.fires) or 'nothing'}")
        if s.may_fire:
            print(f"  may fire:  {', '.join(s.may_fire)} ({s.why_also})")
        never = [a for a in ALL_ALERTS if a not in s.fires and a not in s.may_fire]
        print(f"  must not:  {', '.join(never)}")
        if s.options:
            print(f"  options:   {', '.join(f'{k}={v}' for k, v in s.options.items())}")
    return EXIT_OK


def _scenario(args: argparse.Namespace) -> int:
    from loadsim.overlays.scenarios import SCENARIOS

    if args.name not in SCENARIOS:
        raise ConfigError.single(
            "scenario", "", f"unknown scenario {args.name!r}; expected one of: {', '.join(SCENARIOS)}"
        )
    try:
        seconds = parse_duration(args.duration)
    except ValueError as e:
        raise ConfigError.single("--duration", "", str(e)) from None
    overrides = Overrides(duration=args.duration, rate=args.rate, seed=args.seed)
    profile = apply_overrides(EMBEDDED_DEFAULT.model_copy(update={"name": f"scenario-{args.name}"}), overrides)
    overlay = OverlaySpec(scenario=args.name, start=0.0, duration=seconds)
    profile = profile.model_copy(update={"overlay": [overlay]})
    return _execute(args, profile, f"scenario {args.name}")


def _verify_problems(args: argparse.Namespace, rule_sets: Sequence[Sequence[Path]]) -> list[Problem]:
    """Everything wrong with ``loadsim verify``'s options and files, found before any run."""
    from loadsim.overlays.scenarios import SCENARIOS
    from loadsim.verify.promtool import PromtoolError, find_promtool, rule_file_problems

    problems = [
        Problem("--scenario", "", f"unknown scenario {n!r}; expected one of: {', '.join(SCENARIOS)}")
        for n in args.scenario
        if n not in SCENARIOS
    ]
    unreadable = _input_problems("--rules", [p for group in args.rules or [] for p in group])
    problems += unreadable
    if not 0 < args.background_hours <= MAX_SECONDS / 3600:  # also refuses nan
        why = f"must be > 0 and <= {MAX_SECONDS / 3600:g}, got {args.background_hours:g}"
        problems.append(Problem("--background-hours", "", why))
    positive_option("--rate", args.rate, parse_rate, problems)
    _check_output_dir(args.export, "--export", problems)
    try:
        promtool = find_promtool()
    except PromtoolError as e:
        problems.append(Problem("promtool", "", str(e)))
    else:
        if not unreadable:  # every file there and readable: promtool says whether it is a rule file
            for path, why in rule_file_problems([p for rules in rule_sets for p in rules], promtool).items():
                problems.append(Problem("--rules", "", f"{path}: {why}; expected a Prometheus rule file"))
    _check_output(args.junit, "--junit", problems)
    return problems


def _verify(args: argparse.Namespace) -> int:
    from loadsim.junit import write as write_junit
    from loadsim.verify.junit import suite as junit_suite
    from loadsim.verify.matrix import default_cases, default_rule_sets, render, run_matrix
    from loadsim.verify.promtool import PromtoolError

    rule_sets = [list(group) for group in args.rules] if args.rules else default_rule_sets()
    problems = _verify_problems(args, rule_sets)
    if problems:
        raise ConfigError(problems)
    if args.export is not None:
        args.export.mkdir(parents=True, exist_ok=True)
    cases = default_cases(args.background_hours, args.scenario or None)
    started = time.monotonic()
    failed = False
    suites = []
    for i, rules in enumerate(rule_sets, 1):
        # Several sets name the same cases: each keeps its promtool files in a folder of its own.
        export = args.export / f"rules-{i}" if args.export is not None and len(rule_sets) > 1 else args.export
        set_started = time.time()
        try:
            rows = run_matrix(cases, rules, export=export, rate=args.rate, seed=args.seed)
        except PromtoolError as e:
            print(f"loadsim: verify: {e}", file=sys.stderr)
            return EXIT_ERROR
        print("\n".join(render(rows, rules)))
        print()
        failed |= not all(r.ok for r in rows)
        suites.append(
            junit_suite(
                rows, rules, started=set_started, seconds=time.time() - set_started, rate=args.rate, seed=args.seed
            )
        )
    if args.junit is not None:
        write_junit(args.junit, "loadsim verify", suites)
    print(f"verify: {'FAIL' if failed else 'ok'} in {time.monotonic() - started:.0f}s wall")
    return EXIT_FAILURE if failed else EXIT_OK


def _backfill(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from loadsim.report.backfill import backfill, plan_ending_at

    profile, source = _load(args)
    problems: list[Problem] = []
    interval = positive_option("--scrape-interval", args.scrape_interval, parse_duration, problems) or 15.0
    end = _run_end("--end", args.end, profile.duration, problems)
    if problems:
        raise ConfigError(problems)
    _check_output(args.out, "--out")
    plan = plan_ending_at(profile, end, source)
    done = backfill(plan, args.out, interval=interval)
    start, stop = (datetime.fromtimestamp(x, UTC).isoformat(timespec="seconds") for x in (done.start, done.end))
    print(
        f"{done.path}: {done.samples:,} samples in {done.scrapes:,} scrapes from {start} to {stop} "
        f"({done.sends:,} sends, {done.wall_seconds:.1f}s wall)\n"
        f"next: promtool tsdb create-blocks-from openmetrics {done.path} DATA_DIR"
    )
    return EXIT_OK


def _when(option: str, text: str, problems: list[Problem]) -> float:
    """``now``, ``now-DURATION`` (``now-24h``) or an ISO time, as Unix time."""
    from datetime import UTC, datetime

    expected = f"expected now, now-DURATION such as now-24h, or an ISO time such as 2026-11-30T12:00:00Z, got {text!r}"
    if text == "now":
        return time.time()
    if text.startswith("now-"):
        try:
            return time.time() - parse_duration(text.removeprefix("now-"))
        except ValueError:
            problems.append(Problem(option, "", expected))
            return 0.0
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        problems.append(Problem(option, "", expected))
        return 0.0
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _run_end(option: str, text: str, duration: float, problems: list[Problem]) -> float:
    """When a run placed on the calendar ends (``now``, ``now-DURATION`` or an ISO time); it must start after 1970."""
    found: list[Problem] = []
    end = _when(option, text, found)
    if not found and end - duration < 0:
        found.append(Problem(option, "", f"the run would start before 1970-01-01 (Unix time 0); got {text!r}"))
    problems += found
    return end


def _report_inputs(args: argparse.Namespace, problems: list[Problem]) -> Any:
    """``loadsim report``'s options checked together; every problem goes to ``problems``."""
    from loadsim.relayconfig import RELAY_CONFIG
    from loadsim.report.observe import Inputs

    prometheus, start, end = None, 0.0, 0.0
    if args.prometheus is not None:
        prometheus = _control_url(args, "--prometheus", args.prometheus, problems)
        if args.start is None:
            problems.append(Problem("--from", "", "needed with --prometheus: the window's start"))
        else:
            start, end = _when("--from", args.start, problems), _when("--to", args.end, problems)
            if not problems and end <= start:
                problems.append(Problem("--to", "", "must be after --from"))
    elif args.start is not None:
        problems.append(Problem("--from", "", "goes with --prometheus; a run's window is the run"))
    alertmanager = None
    if args.alertmanager is not None:
        alertmanager = _control_url(args, "--alertmanager", args.alertmanager, problems)
    step = positive_option("--step", args.step, parse_duration, problems) or 60.0
    problems += _input_problems("--drill", [args.drill] if args.drill is not None else [])
    problems += _input_problems("--rules", args.rules or [])
    for option, path in (("--runbooks", args.runbooks), ("--dashboards", args.dashboards)):
        if path is not None and not path.is_dir():
            problems.append(Problem(option, "", f"{path}: not a directory"))
    if args.drill is not None and args.drill.is_file() and not _is_score_card(args.drill):
        problems.append(Problem("--drill", "", f"{args.drill}: not a loadsim drill score card (JSON with a score)"))
    _check_output_dir(args.out, "--out", problems)
    return Inputs(
        prometheus=prometheus or "",
        start=start,
        end=end,
        out=args.out,
        alertmanager=alertmanager,
        drill=args.drill,
        runbooks=args.runbooks,
        dashboards=args.dashboards or RELAY_CONFIG / "grafana",
        rules=tuple(args.rules) if args.rules else Inputs.rules_default(),
        step=step,
        allowed=frozenset(_allowed_hosts(args)),
    )


def _is_score_card(path: Path) -> bool:
    try:
        return "score" in json.loads(read_text(path, SCORE_CARD_LIMIT))
    except (ValueError, TypeError, OSError, RecursionError, InputFileError):
        return False


def _input_problems(option: str, paths: Sequence[Path]) -> list[Problem]:
    """One problem per path that is not a regular file (missing, a directory, a FIFO, a device): never read."""
    problems = []
    for path in paths:
        try:
            check_regular(path)
        except InputFileError as e:
            problems.append(Problem(option, "", f"{path}: {e}") if option else Problem(str(path), "", str(e)))
    return problems


def _report_run(args: argparse.Namespace, problems: list[Problem]) -> Any:
    """With ``--run``: the plan of the run to report on (None otherwise); ``--run``'s options checked."""
    from loadsim.report.backfill import plan_ending_at
    from loadsim.report.own import RETENTION, binaries
    from loadsim.report.prom import SourceError

    if args.run is None:
        given = {"--duration": args.duration, "--rate": args.rate, "--overlay": args.overlay, "--seed": args.seed}
        problems += [Problem(o, "", "goes with --run") for o, v in given.items() if v is not None]
        return None
    try:
        profile = EMBEDDED_DEFAULT if not args.run else load_profile(args.run)
        overrides = Overrides(
            duration=args.duration, rate=args.rate, seed=args.seed, overlays=tuple(args.overlay or ())
        )
        profile = apply_overrides(profile, overrides)
        # The run ends at --to (default now): a profile's daily curve follows the clock, so a fixed --to
        # gives the same run, series and report at any time of day.
        found: list[Problem] = []
        end = _run_end("--to", args.end, profile.duration, found)
        now = time.time()
        if not found and end > now + 1.0:
            found.append(Problem("--to", "", f"with --run, the run must have ended by now; got {args.end!r}"))
        elif not found and end - profile.duration < now - RETENTION:
            what = f"with --run, the run must start within the last {RETENTION / 86400:.0f} days"
            found.append(Problem("--to", "", f"{what} (the private Prometheus keeps no more); got {args.end!r}"))
        if found:
            problems += found
            return None
        plan = plan_ending_at(profile, end, args.run or "embedded default")
        binaries()
    except ConfigError as e:
        problems += e.problems
        return None
    except SourceError as e:
        problems.append(Problem("--run", "", str(e)))
        return None
    return plan


def _report(args: argparse.Namespace) -> int:

    from loadsim.junit import write as write_junit
    from loadsim.report.junit import suite as junit_suite
    from loadsim.report.observe import observe
    from loadsim.report.own import served
    from loadsim.report.prom import SourceError

    problems: list[Problem] = []
    plan = _report_run(args, problems)
    inputs = _report_inputs(args, problems)
    _check_output(args.junit, "--junit", problems)
    if problems:
        raise ConfigError(problems)
    started = time.monotonic()
    try:
        if plan is None:
            report, files = observe(inputs)
        else:
            with served(plan) as (url, done):
                source = f"loadsim run {plan.name}, seed {plan.seed}"
                report, files = observe(
                    dataclasses.replace(inputs, prometheus=url, start=done.start, end=done.end, source=source)
                )
    except SourceError as e:
        option = "--prometheus" if args.prometheus and args.prometheus in str(e) else "--run"
        raise ConfigError.single(option, "", str(e)) from None
    r = report.readiness
    print(f"{report.decision}: readiness {r.score}/10 ({r.grade}), technical {r.technical}/6")
    for item in r.items:
        print(f"  {'PASS' if item.passed else 'FAIL'}  {item.name}: {item.evidence}")
    print("\n".join(f"{kind}: {path}" for kind, path in files.items()))
    if args.junit is not None:
        write_junit(args.junit, "loadsim report", [junit_suite(report, time.monotonic() - started)])
        print(f"junit: {args.junit}")
    return EXIT_OK if r.go else EXIT_NO_GO


def _calibrate_inputs(args: argparse.Namespace) -> tuple[str, float, float]:
    """``loadsim calibrate``'s options checked together: the URL and the window, or ConfigError with every problem."""
    from loadsim.calibrate.fit_rate import MIN_DIURNAL_SECONDS
    from loadsim.calibrate.read import HOUR
    from loadsim.calibrate.run import outputs

    problems: list[Problem] = []
    url = _control_url(args, "--prometheus", args.prometheus, problems)
    start, end = _when("--from", args.start, problems), _when("--to", args.end, problems)
    span = end - start
    if not problems and span < HOUR:
        problems.append(Problem("--to", "", f"the window is {format_duration(max(span, 0))}; it needs at least 1h"))
    elif not problems and args.shape != "hourly" and span < MIN_DIURNAL_SECONDS:
        problems.append(
            Problem(
                "--from/--to",
                "",
                f"the window is {format_duration(span)}; a diurnal fit needs at least 24h of history "
                "(--shape hourly replays a shorter one)",
            )
        )
    before = len(problems)
    for path in outputs(args.out).values():  # the profile, then what goes beside it (one problem at most)
        if len(problems) == before:
            _check_output(path, "--out", problems)
    if problems or url is None:
        raise ConfigError(problems)
    return url, start, end


def _calibrate(args: argparse.Namespace) -> int:
    from loadsim.calibrate.read import iso
    from loadsim.calibrate.run import run
    from loadsim.report.prom import SourceError

    url, start, end = _calibrate_inputs(args)
    t0 = time.monotonic()
    try:
        cal, files = run(url, (start, end), args.out, args.shape, args.name, _reach(args, url))
    except SourceError as e:
        raise ConfigError.single("--prometheus", "", str(e)) from None
    w = cal.window
    print(
        f"calibrated from {w.prometheus}, {iso(w.start)} to {iso(w.end)}: {w.hours} hours, {w.sends:,.0f} sends "
        f"(fits {cal.seconds:.1f}s, {time.monotonic() - t0:.1f}s in all)"
    )
    print(f"send rate: {cal.rate.shape}, {cal.rate.why}")
    for g in cal.goodness:
        print(f"  {g.name}: {g.verdict()}")
    shown = ("schedule.", "model.latency.", "model.mime.", "model.attachments.", "controller.")
    for est in cal.estimates:
        if est.fitted and est.key.startswith(shown):
            se = "" if est.se is None else f" ± {est.se:.2g}"
            print(f"  {est.key:42} {est.value:.6g}{se} {est.unit}".rstrip())
    fitted = [est for est in cal.estimates if est.key.startswith("model.errors.")]
    total = sum(est.value for est in fitted)
    print(f"  error mix: {len(fitted)} outcomes, {total:.4%} of sends fail (each with its error in the report)")
    for warning in cal.warnings:
        print(f"loadsim: warning: {warning}", file=sys.stderr)
    print("\n".join(f"{kind}: {path}" for kind, path in files.items()))
    return EXIT_OK


def _rollout(args: argparse.Namespace) -> int:
    from loadsim.overlays.scenarios import SCENARIOS
    from loadsim.verify.rollout import default_cases, render, run_all

    problems = [
        Problem("--scenario", "", f"unknown scenario {n!r}; expected one of: {', '.join(SCENARIOS)}")
        for n in args.scenario
        if n not in SCENARIOS
    ]
    positive_option("--rate", args.rate, parse_rate, problems)
    if args.seed < 0:
        problems.append(Problem("--seed", "", f"must be >= 0, got {args.seed}"))
    _check_output(args.json, "--json")
    if problems:
        raise ConfigError(problems)
    started = time.monotonic()
    outcomes = run_all(default_cases(args.scenario or None), rate=args.rate, seed=args.seed)
    print("\n".join(render(outcomes)))
    print(f"\nrollout: {len(outcomes)} runs in {time.monotonic() - started:.0f}s wall")
    if args.json is not None:
        cases = [{"case": o.case.label, "fidelity": o.case.fidelity, **o.summary, "log": o.decisions} for o in outcomes]
        write_atomically(args.json, json.dumps(cases, indent=1) + "\n")
    return EXIT_OK


def _merge(args: argparse.Namespace) -> int:
    from loadsim.merge import merge, read

    _check_output(args.out, "--out")
    fleet = merge(read(list(args.summaries)), allow_missing=args.allow_missing)
    text = redact(json.dumps(fleet, indent=2) + "\n")
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    brief = {k: v for k, v in fleet.items() if k != "histograms"}
    print(json.dumps(brief, indent=2))
    return EXIT_OK


def _fake_gmail(args: argparse.Namespace) -> int:
    from loadsim.fakegmail import command

    return command(args)


def _scale_rules(args: argparse.Namespace) -> int:
    from loadsim.relayconfig import RELAY_CONFIG
    from loadsim.verify.scaling import RULES_LIMIT, scale_rules, write_scaled

    files = list(args.files) or sorted((RELAY_CONFIG / "prometheus").glob("*.yml"))
    problems = _input_problems("", files)
    if not math.isfinite(args.factor) or args.factor <= 0:
        problems.append(Problem("factor", "", f"must be a number > 0, got {args.factor:g}"))
    elif not problems:
        for path in files:
            # Scaled once now, so a file that cannot be is refused before any file is written.
            try:
                scale_rules(read_text(path, RULES_LIMIT), args.factor)
            except InputFileError as e:
                problems.append(Problem(str(path), "", f"{e}; expected a Prometheus rule file"))
            except ValueError as e:
                problems.append(Problem(str(path), "", f"a time in it cannot be scaled: {e}"))
    _check_output_dir(args.out, "out", problems)
    if problems:
        raise ConfigError(problems)
    for path in write_scaled(files, args.out, args.factor):
        print(path)
    return EXIT_OK


def _drill(args: argparse.Namespace) -> int:
    from loadsim.drill import Drill, card_json

    problems = []
    if not math.isfinite(args.time_scale) or not 0 < args.time_scale <= MAX_TIME_SCALE:
        problems.append(Problem("--time-scale", "", f"must be > 0 and <= {MAX_TIME_SCALE:g}, got {args.time_scale:g}"))
    urls = [(option, url) for option, url in (("--prometheus", args.prometheus), ("--alertmanager", args.alertmanager))]
    for option, url in urls:
        _control_url(args, option, url, problems)
    _check_output(args.json, "--json", problems)
    if problems:
        raise ConfigError(problems)
    _check_drill_stack(args.prometheus, args.alertmanager)
    # A scaled window holds K times fewer sends; three times K x 5/s keeps ratios steady near thresholds.
    rate = args.rate or f"{5.0 if args.time_scale <= 1 else min(15.0 * args.time_scale, 500.0):g}/s"
    overrides = Overrides(duration="7d", rate=rate, seed=args.seed)
    profile = apply_overrides(EMBEDDED_DEFAULT.model_copy(update={"name": "drill-01"}), overrides)
    profile = profile.model_copy(update={"engine": profile.engine.model_copy(update={"grace": 5.0})})
    drills: list[Drill] = []

    async def drill(engine: Any, log: Any) -> None:
        drills.append(
            Drill(
                engine,
                args.prometheus,
                args.alertmanager,
                time_scale=args.time_scale,
                log=log,
                allowed=_allowed_hosts(args),
            )
        )
        await drills[0].run()

    code = _execute(args, profile, "drill", companion=drill)
    card = drills[0].card  # partial when a signal stopped the drill: the phases it finished
    print("\n".join(card.lines()))
    if args.json is not None:
        write_atomically(args.json, card_json(card))
    return code if card.score == 6 else EXIT_FAILURE


MAX_TIME_SCALE = 1000.0
"""Fastest time scale of the rules a drill runs against (the controller's own limit)."""


def _check_drill_stack(prometheus: str, alertmanager: str) -> None:
    """Before the drill's traffic starts: both answer as what they are named (exit 2 if not).

    Without this a drill against a wrong port ran its traffic and waited out every phase's budget.
    """
    from loadsim.report.prom import Alertmanager, Prometheus, SourceError

    problems = []
    for option, check in (
        ("--prometheus", Prometheus(prometheus, timeout=5.0).check),
        ("--alertmanager", Alertmanager(alertmanager, timeout=5.0).status),
    ):
        try:
            check()
        except SourceError as e:
            problems.append(Problem(option, "", f"{e}; expected a running {option.removeprefix('--').title()}"))
    if problems:
        raise ConfigError(problems)


def _allowed_hosts(args: argparse.Namespace) -> set[str]:
    return set(args.allow_host) | {h.strip() for h in os.environ.get(ALLOW_HOSTS_ENV, "").split(",") if h.strip()}


def _run(args: argparse.Namespace) -> int:
    profile, source = _load(args)
    return _execute(args, profile, source)


def _execute(args: argparse.Namespace, profile: Profile, source: str, companion: Any = None) -> int:
    """Every command that runs traffic comes here: check everything, then one ``execute`` for either driver."""
    from loadsim.engine.checkpoint import StateError
    from loadsim.engine.keeper import StateLock
    from loadsim.runtime.execute import ListenError, RunOptions, execute, identity

    problems = _driver_problems(args)
    listen = _listen_address(args)
    _check_output(getattr(args, "decision_log", None), "--decision-log")
    profile = _with_engine_options(args, profile)
    fleet = _fleet_options(args, profile, problems)
    push = _push_target(args, fleet)
    state = _state_options(args)
    _check_output(args.summary_json, "--summary-json")
    start_at = None if fleet is None else fleet.start_at
    plan = build_plan(profile, virtual=args.virtual, wall_epoch=start_at or time.time(), source=source)
    http = _http_options(args, plan, problems) if getattr(args, "driver", "sim") == "http" else None
    controller_prometheus = _controller_options(args, plan, problems)
    thresholds = _thresholds(args, profile, source, problems)
    if problems:
        raise ConfigError(problems)
    if http is not None and http.fault_control is not None:
        _check_fault_control(http.fault_control, plan, http.fault_control_reach)
    options = RunOptions(
        listen=listen,
        progress=args.progress,
        summary_json=args.summary_json,
        push=push,
        state=state,
        http=http,
        decision_log=getattr(args, "decision_log", None),
        controller_prometheus=controller_prometheus,
        controller_reach=_reach(args, controller_prometheus),
        fleet=fleet,
        thresholds=thresholds,
        signals=getattr(args, "stop_signals", None),
    )
    if getattr(args, "dry_run", False):
        resume = _resumed(state, identity(plan, options), start_at) if state is not None else None
        if resume is not None and not plan.virtual:
            plan = build_plan(profile, virtual=False, wall_epoch=resume.epoch, source=source)
        return _dry_run(plan, options, source)
    with contextlib.ExitStack() as held:
        resume = None
        if state is not None:
            try:
                held.enter_context(StateLock(state.path))  # until the run ends: no other run shares the file
            except StateError as e:
                raise ConfigError.single(str(state.path), "", str(e)) from None
            resume = _resumed(state, identity(plan, options), start_at)
            if resume is not None and not plan.virtual:
                plan = build_plan(profile, virtual=False, wall_epoch=resume.epoch, source=source)
        options = dataclasses.replace(options, logs=configure(args.log_level, fmt=args.log_format))
        try:
            summary = _run_loop(execute(plan, options, companion, resume))
        except ListenError as e:
            raise ConfigError([Problem("--listen", "", str(e))]) from None
        except StateError as e:
            raise ConfigError.single(str(args.state), "", str(e)) from None
    _print_summary(plan, summary, thresholds, driver="sim" if http is None else "http")
    return EXIT_OK if summary.get("thresholds_ok", True) else EXIT_THRESHOLDS


def _thresholds(
    args: argparse.Namespace, profile: Profile, source: str, problems: list[Problem]
) -> tuple[Threshold, ...]:
    """The profile's thresholds, then ``--threshold``'s; what the driver cannot measure goes to ``problems``."""
    from loadsim.runtime.measures import reason_problem

    http = getattr(args, "driver", "sim") == "http"
    found: list[tuple[str, str, Threshold]] = [
        (source, f"thresholds.{th.metric}", th) for th in profile.thresholds.all()
    ]
    for text in args.threshold:
        try:
            found.append(("--threshold", "", parse_option(text)))
        except ValueError as e:
            problems.append(Problem("--threshold", "", f"{text}: {e}"))
    for where, key, th in found:
        if th.family == "latency_intended" and not http:
            intended = "latency_intended is the HTTP driver's (from each request's intended start); use latency"
            problems.append(Problem(where, key, intended))
        elif th.reason is not None and (why := reason_problem(th.reason, http=http)) is not None:
            problems.append(Problem(where, key, why))
    return tuple(th for _, _, th in found)


def _dry_run(plan: RunPlan, options: Any, source: str) -> int:
    """What ``--dry-run`` prints: the plan, and where this process stands in its fleet."""
    from loadsim.describe import describe_plan

    print("\n".join(describe_plan(plan, source)))
    fleet = options.fleet
    if fleet is not None:
        start = "when it starts" if fleet.start_at is None else _iso(fleet.start_at)
        k, n = fleet.shard.index, fleet.shard.count
        print(f"fleet: shard {fleet.shard} keeps arrival i when i % {n} == {k}; run time 0 at {start}")
    print("dry run: every option checked; nothing ran")
    return EXIT_OK


def _resumed(state: StateOptions, ident: Any, start_at: float | None) -> Any:
    """The checkpoint to resume (None: start anew); exit 2 if it is another run's, or another start's."""
    from loadsim.engine.checkpoint import StateError
    from loadsim.engine.keeper import open_state

    try:
        resume = open_state(state, ident)
    except StateError as e:
        raise ConfigError.single(str(state.path), "", str(e)) from None
    if resume is not None and start_at is not None and abs(resume.epoch - start_at) > 1e-3:
        why = f"written by a run that started at {_iso(resume.epoch)}, --start-at says {_iso(start_at)}"
        raise ConfigError.single(str(state.path), "", f"{why}; pass --fresh to start a new run")
    return resume


def _fleet_options(args: argparse.Namespace, profile: Profile, problems: list[Problem]) -> FleetOptions | None:
    """``--shard`` / ``--shards`` and ``--start-at``, checked against each other and the clock (None: no fleet)."""
    from loadsim.runtime.fleet import FleetOptions

    text, count, when = getattr(args, "shard", None), getattr(args, "shards", None), getattr(args, "start_at", None)
    if text is None and count is None and when is None:
        return None
    shard = Shard(0, 1)
    try:
        if text is not None:
            shard = Shard.parse(text)
        elif count is not None:
            shard = Shard.from_env(count)
    except ValueError as e:
        problems.append(Problem("--shard" if text is not None else "--shards", "", str(e)))
        return None
    start_at = None
    if when is not None:
        if args.virtual:
            problems.append(Problem("--start-at", "", "a virtual run has no wall-clock start; drop --virtual"))
            return None
        start_at = _start_time(when, profile.duration, problems)
        if start_at is None:
            return None
    elif shard.count > 1 and not args.virtual:
        why = "shards on the wall clock need --start-at TIME, one start shared by every shard, to line up"
        problems.append(Problem("--shard" if text is not None else "--shards", "", why))
    if profile.controller.mode == "policy":
        why = (
            "controller.mode = policy runs the relay's controller on one process's figures; a fleet's shards "
            "would each gate on their own share (use mode = heartbeat: shard 0 alone reports the controller)"
        )
        problems.append(Problem("--shard" if text or count else "--start-at", "controller.mode", why))
    return FleetOptions(shard=shard, start_at=start_at)


def _start_time(text: str, duration: float, problems: list[Problem]) -> float | None:
    """``--start-at``: an ISO time (UTC unless it says otherwise) or Unix seconds, neither far ahead nor past."""
    from datetime import UTC, datetime

    from loadsim.runtime.fleet import MAX_LEAD_SECONDS

    try:
        start_at = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            why = f"expected an ISO time such as 2026-11-30T12:00:00Z or Unix seconds, got {text!r}"
            problems.append(Problem("--start-at", "", why))
            return None
        start_at = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    now = time.time()
    if start_at > now + MAX_LEAD_SECONDS:
        why = f"{_iso(start_at)} is more than {format_duration(MAX_LEAD_SECONDS)} ahead; expected the Job's start"
        problems.append(Problem("--start-at", "", why))
        return None
    if start_at + duration <= now:
        why = f"{_iso(start_at)} plus the run's {format_duration(duration)} is already past; nothing is left to run"
        problems.append(Problem("--start-at", "", why))
        return None
    return start_at


def _iso(unix: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="seconds")


def _controller_options(args: argparse.Namespace, plan: RunPlan, problems: list[Problem]) -> str | None:
    """The controller's options against its mode and the driver; the live Prometheus URL if any."""
    policy = plan.controller.mode == "policy"
    url = getattr(args, "controller_prometheus", None)
    if policy and getattr(args, "driver", "sim") == "http":
        why = (
            "controller.mode = policy gates simulated sends; with --driver http the relay's own controller "
            "gates its traffic (use the simulated driver, or mode = heartbeat)"
        )
        problems.append(Problem("--driver http", "controller.mode", why))
    for option, value in (("--decision-log", getattr(args, "decision_log", None)), ("--controller-prometheus", url)):
        if value is not None and not policy:
            problems.append(Problem(option, "", 'needs controller.mode = "policy" in the profile'))
    if url is None or not policy:
        return None
    if args.virtual:
        why = "a live Prometheus runs on the wall clock; drop --virtual"
        problems.append(Problem("--controller-prometheus", "", why))
        return None
    return _control_url(args, "--controller-prometheus", url, problems)


def _check_fault_control(url: str, plan: RunPlan, reach: Reach) -> None:
    """Before the run: the fake Gmail answers and accepts the plan's Gmail-side scenarios (exit 2 if not)."""
    from loadsim.clock import WallClock
    from loadsim.drivers.faults import GMAIL_SIDE, FaultControl, FaultControlError

    wanted = sorted({ov.name for ov in plan.timeline.overlays if ov.name in GMAIL_SIDE})

    async def probe() -> str | None:
        control = FaultControl(url, WallClock(), reach=reach)
        try:
            await control.check(wanted)
        except FaultControlError as e:
            return str(e)
        finally:
            await control.close(seconds=1.0)
        return None

    error = _run_loop(probe())
    if error is not None:
        raise ConfigError.single("--fault-control", "", error)


def _check_output(path: Path | None, option: str, problems: list[Problem] | None = None) -> None:
    """An output file must be writable before the run starts, not found unwritable hours later.

    Probed by doing what the final write does (:func:`loadsim.outputs.file_problem`); the
    problem is raised at once, or added to ``problems`` when given.
    """
    if path is None:
        return
    _refuse(option, file_problem(path), problems)


def _check_output_dir(path: Path | None, option: str, problems: list[Problem] | None = None) -> None:
    """An output directory must exist and take files, or be creatable, before anything runs."""
    if path is None:
        return
    _refuse(option, directory_problem(path), problems)


def _refuse(option: str, why: str | None, problems: list[Problem] | None) -> None:
    if why is None:
        return
    if problems is None:
        raise ConfigError.single(option, "", why)
    problems.append(Problem(option, "", why))


def _listen_address(args: argparse.Namespace) -> ListenAddress | None:
    """``--listen`` parsed, or None with ``--no-listen``."""
    if args.no_listen:
        return None
    try:
        return ListenAddress.parse(args.listen)
    except ValueError as e:
        raise ConfigError([Problem("--listen", "", str(e))]) from None


def _with_engine_options(args: argparse.Namespace, profile: Profile) -> Profile:
    """``--grace`` and ``--max-in-flight`` into the profile's engine settings (either driver)."""
    updates: dict[str, Any] = {}
    if args.grace is not None:
        try:
            updates["grace"] = parse_duration(args.grace)
        except ValueError as e:
            raise ConfigError.single("--grace", "", str(e)) from None
    max_in_flight = getattr(args, "max_in_flight", None)
    if max_in_flight is not None:
        if not 0 < max_in_flight <= MAX_IN_FLIGHT:
            why = f"must be > 0 and <= {MAX_IN_FLIGHT:,}, got {max_in_flight}"
            raise ConfigError.single("--max-in-flight", "", why)
        updates["max_in_flight"] = max_in_flight
    if not updates:
        return profile
    return profile.model_copy(update={"engine": profile.engine.model_copy(update=updates)})


def _state_options(args: argparse.Namespace) -> StateOptions | None:
    from loadsim.engine.keeper import StateOptions, state_problem

    if args.state is None:
        if args.fresh or args.fresh_if_missing:
            raise ConfigError.single("--fresh", "", "needs --state FILE")
        return None
    try:
        interval = parse_duration(args.checkpoint_interval)
    except ValueError as e:
        raise ConfigError.single("--checkpoint-interval", "", str(e)) from None
    if interval <= 0:
        raise ConfigError.single("--checkpoint-interval", "", f"must be > 0, got {args.checkpoint_interval!r}")
    why = state_problem(args.state)
    if why is not None:
        raise ConfigError.single("--state", "", f"{args.state} {why}")
    mode = "fresh" if args.fresh else "fresh-if-missing" if args.fresh_if_missing else "resume"
    return StateOptions(path=args.state, mode=mode, interval=interval)


def _push_target(args: argparse.Namespace, fleet: FleetOptions | None = None) -> PushTarget | None:
    """``--pushgateway`` (or ``$PUSHGATEWAY_URL``) checked; None when neither names one.

    An empty ``--pushgateway ""`` is refused, not read as "no push": in CI it is a variable
    or secret that is not set, and a scenario that pushes nowhere would pass while testing nothing.
    """
    url = args.pushgateway if args.pushgateway is not None else os.environ.get("PUSHGATEWAY_URL") or None
    if url is None:
        return None
    if not url.strip():
        raise ConfigError.single(
            "--pushgateway",
            "",
            "is empty; expected the Pushgateway's URL, e.g. http://127.0.0.1:9091 "
            "(if a CI variable or secret should hold it, it is not set)",
        )
    problems: list[Problem] = []
    interval = positive_option("--push-interval", args.push_interval, parse_duration, problems) or 10.0
    for option, value in (("--push-job", args.push_job), ("--push-instance", args.push_instance)):
        # The grouping key's values: an empty one is refused by the Pushgateway at the first push.
        if not value or not _header_safe(value):
            problems.append(Problem(option, "", f"expected a non-empty printable label value, got {value!r}"))
    try:
        target = PushTarget.parse(
            url,
            job=args.push_job,
            instance=args.push_instance,
            interval=interval,
            keep_group=args.keep_group,
            shard=None if fleet is None else str(fleet.shard.index),
        )
    except ValueError as e:
        raise ConfigError([*problems, Problem("--pushgateway", "", str(e))]) from None
    allowed = _allowed_hosts(args)
    target = dataclasses.replace(target, reach=Reach.of(target.host, allowed))
    if not is_loopback(target.host) and target.host not in allowed:
        problems.append(
            Problem(
                "--pushgateway",
                "",
                f"{redact_url(url)} is not on loopback; allow it with --allow-host {target.host} "
                f"(or {ALLOW_HOSTS_ENV}={target.host})",
            )
        )
    if problems:
        raise ConfigError(problems)
    return target


def _run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop (faster timers and sockets than the default loop)."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _print_summary(plan: RunPlan, s: dict[str, Any], thresholds: Sequence[Threshold], *, driver: str) -> None:
    """The end-of-run table on a terminal (off one, the ``run.summary`` event already carries it all)."""
    if not sys.stdout.isatty():
        return
    from rich.console import Console

    from loadsim.logs import no_color
    from loadsim.sinks.summary_table import OverlayRun, render_summary
    from loadsim.thresholds import from_summary

    end = s["run_seconds"]
    overlays = [OverlayRun(ov.name, ov.start, min(ov.end, end)) for ov in plan.timeline.overlays if ov.start < end]
    stopped = None
    if s.get("aborted_by_threshold"):
        stopped = f"threshold {s['aborted_by_threshold']}"
    elif s.get("stopped_early"):
        stopped = "signal"
    title = f"{plan.name} · {driver} · seed {plan.seed}" + (" · virtual" if plan.virtual else "")
    table = render_summary(s, title=title, overlays=overlays, verdicts=from_summary(thresholds, s), stopped=stopped)
    Console(no_color=no_color() or None, highlight=False).print(table)
