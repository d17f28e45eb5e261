"""``loadsim fake-gmail``: the options, their validation, and the serve-until-signalled loop.

Kept apart from ``loadsim/cli.py`` so the command can be wired in with two calls
(:func:`main_args` on a subparser, :func:`command` as its handler). Bad options raise
:class:`~loadsim.errors.ConfigError` with every problem, which the CLI prints as
``loadsim: --option: message`` and exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from loadsim.clock import WallClock
from loadsim.errors import EXIT_OK, ConfigError, Problem
from loadsim.fakegmail.quota import DEFAULT_BURST, DEFAULT_RATE, QuotaParams
from loadsim.fakegmail.server import DEFAULT_LISTEN, DEFAULT_MAX_HOLD, FakeGmail, FakeGmailConfig
from loadsim.logs import FORMATS, LEVELS, LogOutput, configure, get_logger
from loadsim.model.params import ModelParams
from loadsim.net import ListenAddress
from loadsim.profile import load_profile
from loadsim.units import parse_duration, parse_rate

HELP = "serve a fake Gmail send API whose answers follow the outcome model (with a control API for faults)"


def main_args(parser: argparse.ArgumentParser) -> None:
    """Add the ``fake-gmail`` options to ``parser`` (a subparser)."""
    parser.add_argument(
        "--listen", default=DEFAULT_LISTEN, help=f"address (default {DEFAULT_LISTEN}; port 0 picks one)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed: same seed, same sequence of outcomes")
    parser.add_argument(
        "--profile", type=Path, metavar="FILE", help="take the healthy baseline from this profile's [model] tables"
    )
    parser.add_argument(
        "--quota-per-user",
        default=f"{DEFAULT_RATE:g}/s",
        metavar="RATE",
        help=f"per-user send quota, e.g. 2.5/s, or 'off' (default {DEFAULT_RATE:g}/s: Gmail's 250 units/s / 100)",
    )
    parser.add_argument(
        "--quota-burst",
        type=float,
        default=DEFAULT_BURST,
        metavar="N",
        help=f"sends a user may make at once (default {DEFAULT_BURST:g})",
    )
    parser.add_argument(
        "--max-hold",
        default=f"{DEFAULT_MAX_HOLD:g}s",
        metavar="DURATION",
        help="cap on how long a timed-out call is held (default 60s; the model holds about 30 s)",
    )
    parser.add_argument("--log-level", choices=LEVELS, default=None, help="default: $LOADSIM_LOG_LEVEL or info")
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default="auto",
        help="auto (default): human lines on a terminal (NO_COLOR honoured), JSON lines elsewhere",
    )
    parser.add_argument(
        "--progress",
        choices=("auto", "live", "line", "off"),
        default="auto",
        help="auto (default): a live view on a terminal, a plain line on a dumb or narrow one, nothing elsewhere",
    )


def config_from_args(args: argparse.Namespace) -> tuple[ListenAddress, FakeGmailConfig]:
    """The address and config the options ask for; raises :class:`ConfigError` naming every bad option."""
    problems: list[Problem] = []
    address = ListenAddress("127.0.0.1", 0)
    try:
        address = ListenAddress.parse(args.listen)
    except ValueError as e:
        problems.append(Problem("--listen", "", str(e)))
    quota = _quota(args, problems)
    max_hold = DEFAULT_MAX_HOLD
    try:
        max_hold = parse_duration(args.max_hold)
        if max_hold <= 0:
            problems.append(Problem("--max-hold", "", f"must be > 0, got {args.max_hold!r}"))
    except ValueError as e:
        problems.append(Problem("--max-hold", "", str(e)))
    if args.seed < 0:
        problems.append(Problem("--seed", "", f"must be >= 0, got {args.seed}"))
    params = ModelParams()
    if args.profile is not None:
        try:
            params = load_profile(args.profile).model
        except ConfigError as e:
            problems += e.problems
    if problems:
        raise ConfigError(problems)
    return address, FakeGmailConfig(seed=args.seed, params=params, quota=quota, max_hold=max_hold)


def _quota(args: argparse.Namespace, problems: list[Problem]) -> QuotaParams | None:
    """The per-user quota asked for (None when off); problems with either option are appended."""
    found = len(problems)
    rate = 0.0
    off = args.quota_per_user.strip().lower() == "off"
    if not off:
        try:
            rate = _rate(args.quota_per_user)
            if not (math.isfinite(rate) and rate > 0):
                problems.append(Problem("--quota-per-user", "", f"must be > 0 (or 'off'), got {args.quota_per_user!r}"))
        except ValueError as e:
            problems.append(Problem("--quota-per-user", "", str(e)))
    if not (math.isfinite(args.quota_burst) and args.quota_burst >= 1):
        problems.append(Problem("--quota-burst", "", f"must be >= 1 (one send must fit), got {args.quota_burst:g}"))
    if off or len(problems) > found:
        return None
    return QuotaParams(rate=rate, burst=args.quota_burst)


def _rate(text: str) -> float:
    """A rate such as ``2.5/s``, or a bare number of sends per second."""
    try:
        return float(text)
    except ValueError:
        return parse_rate(text)


async def run_from_args(
    args: argparse.Namespace,
    *,
    stop: asyncio.Event | None = None,
    started: Callable[[FakeGmail], None] | None = None,
) -> int:
    """Serve until SIGINT, SIGTERM or SIGHUP (or ``stop`` is set), then stop cleanly; returns the exit code.

    ``started`` is called once the server is listening (tests read the port from it).
    """
    address, config = config_from_args(args)
    logs = configure(args.log_level, fmt=getattr(args, "log_format", "json"))
    log = get_logger(component="fakegmail")
    fake = FakeGmail(config, clock=WallClock(), log=log)
    try:
        await fake.start(address)
    except OSError as e:
        raise ConfigError.single("--listen", "", f"cannot listen on {args.listen}: {e.strerror or e}") from None
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for sig in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        if started is not None:
            started(fake)
        async with _viewed(fake, getattr(args, "progress", "off"), logs):
            await stop.wait()
        log.info("fakegmail.stopping")
    finally:
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await fake.stop()
    return EXIT_OK


REDRAW = 0.25
"""Seconds between redraws of the live view."""


@contextlib.asynccontextmanager
async def _viewed(fake: FakeGmail, mode: str, logs: LogOutput) -> AsyncIterator[None]:
    """The live view while serving (on a terminal, or when asked for), log lines above it."""
    import sys

    from loadsim.fakegmail.view import FakeGmailView, plain_fake, render_fake
    from loadsim.sinks.live_view import choose, screen_for, shown

    kind = choose(mode, sys.stderr)
    if kind not in ("live", "line"):
        yield
        return
    view = FakeGmailView(fake, screen_for(kind, sys.stderr, render_fake, plain_fake))

    async def redraw() -> None:
        while True:
            view.redraw()
            await fake.clock.sleep(REDRAW)

    with shown(view.screen, logs if logs.is_terminal else None):
        task = asyncio.create_task(redraw())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            view.redraw()


def command(args: argparse.Namespace) -> int:
    """The ``fake-gmail`` handler for ``loadsim.cli.main``: runs :func:`run_from_args` on uvloop."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run_from_args(args))
