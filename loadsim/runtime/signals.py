"""Stop signals, from the moment a command that makes traffic starts to the end of its run.

SIGINT, SIGTERM and SIGHUP (a closed terminal, or ``kill -HUP``) all mean the same:
stop arrivals, let what is in flight finish for the grace, write the summary. A second
one exits at once (``128 + signal``).

Checking the options, loading the profile and opening the driver happen before the run's
event loop exists, and a signal then used to kill the process without a word. So
:meth:`StopSignals.catch_early` takes them over as soon as the command starts: a stop
asked for before the run is remembered, and the run, once it starts, logs it and stops at
once, with its summary. Inside the run the event loop's own handlers take over
(:meth:`StopSignals.on_loop`), and the early handlers come back when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
TRAFFIC_COMMANDS = ("run", "scenario", "drill")
"""Commands that run traffic: their stop signals are caught from the moment they start."""


class StopSignals:
    """Where a command's stop signals go: remembered before its run, the engine's stop during it."""

    def __init__(self) -> None:
        self.early: signal.Signals | None = None
        """The first stop signal received before the run's loop took over (None: none)."""
        self._previous: dict[signal.Signals, Any] = {}

    def catch_early(self) -> None:
        """Take the stop signals over now (main thread only), before any event loop runs."""
        for sig in STOP_SIGNALS:
            with contextlib.suppress(ValueError, OSError):  # not the main thread: leave them be
                self._previous[sig] = signal.signal(sig, self._remember)

    def restore(self) -> None:
        """Give the signals back to what handled them before :meth:`catch_early`."""
        for sig, handler in self._previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, handler)
        self._previous.clear()

    def _remember(self, signum: int, _frame: FrameType | None) -> None:
        if self.early is not None:
            os._exit(128 + signum)  # a second signal: at once, as during the run
        self.early = signal.Signals(signum)

    @contextlib.contextmanager
    def on_loop(self, stop: Callable[[signal.Signals], None]) -> Iterator[None]:
        """During the run: each stop signal calls ``stop`` on the running loop (a stop asked before, at once)."""
        loop = asyncio.get_running_loop()
        installed = []
        for sig in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop, sig)
                installed.append(sig)
        if self.early is not None:
            stop(self.early)
        try:
            yield
        finally:
            for sig in installed:
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(sig)
            # remove_signal_handler put the defaults back: the early handlers hold until the process ends.
            if self._previous:
                for sig in installed:
                    with contextlib.suppress(ValueError, OSError):
                        signal.signal(sig, self._remember)
