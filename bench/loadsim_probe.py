"""``loadsim run`` with a per-window recorder, and (for the hold criterion's self-test only) injected faults.

bench/http_throughput.py runs loadsim's HTTP driver through this wrapper instead of
``python -m loadsim``: the command line after ``--`` goes to ``loadsim.cli.main``
unchanged, so the run is the CLI's own (same parsing, same ``execute``, same uvloop).
The wrapper adds one ``after_window`` callback to the engine the runtime builds
(``loadsim.runtime.execute.build`` is wrapped), which appends one row per engine
window (every 100 ms of run time) to a list, written as JSON when the run ends
(``--series FILE``). A row costs a few microseconds, about 0.01% of the core at
100 ms windows. Each row:

``mono``       ``time.monotonic()`` when the window was handed over
``cpu``        this process's CPU seconds (``time.process_time()``: user + system, all threads)
``core``       busy seconds of the CPU it is pinned to, whoever used them (``/proc/stat``, incl. steal)
``t``          run time on the engine's clock
``expected``   arrivals the schedule expects by ``t`` (``Schedule.expected``)
``scheduled``, ``started``, ``dropped``, ``finished``: the engine's running totals
``in_flight``  requests started and not finished (on the wire or waiting for a connection)
``waiting``    arrivals handed over and not yet started (due later, or overdue)

so ``expected - started - dropped`` is how many arrivals are **overdue** (the driver is
behind schedule by that many), and deltas of ``cpu`` over deltas of ``finished`` are what
each request cost the driver while it ran.

**Faults, off unless asked for** (a self-test of the hold criterion, never a figure):

* ``--collapse-cost-us US`` (with ``--collapse-late-ms MS``, default 5, and
  ``--collapse-backlog N``, default 1000): every request the dispatcher starts while
  behind (more than MS late, or with more than N requests already in flight, waiting for
  a connection or an answer) costs US microseconds more CPU (a spin on
  ``time.thread_time()``, so it is CPU, not wall time, whatever the machine's speed). That
  is the shape of the collapse 836f3e6 mended: a driver that gets *less efficient when it is
  behind* (then, a deep backlog of bodies built early and cold in the cache made each
  request about 10% dearer), so a slow minute of the machine turns into a backlog that grows.
* ``--stall SECONDS@AT``: at run time AT the event loop blocks for SECONDS (a driver that stops).

With ``--series``, the file also says how many requests the collapse fault charged
(``collapse_charged``, of ``collapse_seen`` started): the hold criterion's capacity
runs (bench/http_throughput.py) show with it that a short run with a small in-flight
cap is not "behind", so a driver that is dearer only when behind is not dearer there.

Usage::

    python -m bench.loadsim_probe --series s.json -- run PROFILE --driver http --target URL ...
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in {None, ""}:  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _core_reader() -> Any:
    """A function giving the busy seconds of the one CPU this process is pinned to (None if not pinned)."""
    try:
        cpus = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return lambda: None
    if len(cpus) != 1:
        return lambda: None
    prefix = f"cpu{next(iter(cpus))} ".encode()
    hz = os.sysconf("SC_CLK_TCK")

    def busy() -> float | None:
        with contextlib.suppress(OSError, ValueError), Path("/proc/stat").open("rb") as f:
            for line in f:
                if line.startswith(prefix):
                    v = [int(x) for x in line.split()[1:9]]
                    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / hz
        return None

    return busy


_SCRATCH = bytearray(1 << 18)
_KEYS = [f"user{i}@example.com" for i in range(64)]


def reference_work() -> int:
    """A fixed piece of work of the kind the driver does (dicts, small strings, bytes, a copy through the cache).

    Its CPU time, timed every window, says how fast the machine runs the driver's kind of code at that
    moment: when the host gets slower per instruction, this gets dearer with the driver's requests.
    """
    d: dict[str, bytes] = {}
    for k in _KEYS:
        d[k] = k.encode() + b": " + str(len(k)).encode()
    joined = b"\r\n".join(d.values())
    n = len(joined)
    for i in range(0, len(_SCRATCH) - n, 4096):  # touches 256 kB: the cache as well as the core
        _SCRATCH[i : i + n] = joined
    return n + len(bytes(_SCRATCH[:65536]))


class Recorder:
    """One row per engine window (see the module docstring)."""

    def __init__(self, stall: tuple[float, float] | None) -> None:
        self.rows: list[dict[str, Any]] = []
        self.engine: Any = None
        self.stall = stall
        self._core = _core_reader()

    def attach(self, engine: Any) -> None:
        self.engine = engine
        engine.after_window.append(self.on_window)

    def on_window(self, t: float, _state: object) -> None:
        t0 = time.thread_time_ns()
        reference_work()
        ref = time.thread_time_ns() - t0
        engine = self.engine
        c = engine.counts
        now = engine.clock.now()
        driver = engine.driver
        self.rows.append({
            "mono": time.monotonic(),
            "ref_ns": ref,
            "cpu": time.process_time(),
            "core": self._core(),
            "t": now,
            "window_t": t,
            "expected": engine.plan.schedule.expected(0.0, max(0.0, min(now, engine.plan.duration))),
            "scheduled": c.scheduled,
            "started": c.started,
            "dropped": c.dropped,
            "finished": c.completed,
            "in_flight": int(getattr(driver, "_in_flight", 0)),
            "waiting": int(getattr(driver, "_waiting", 0)),
        })  # fmt: skip
        if self.stall is not None and t >= self.stall[1]:
            seconds, self.stall = self.stall[0], None
            time.sleep(seconds)  # the driver stops: nothing runs on its loop meanwhile


CHARGED = {"seen": 0, "charged": 0}
"""Requests started, and those of them the collapse fault made dearer (written to ``--series``)."""


def install_collapse(cost_us: float, late_ms: float, backlog: int) -> None:
    """Make every request the HTTP driver starts while behind cost ``cost_us`` more CPU.

    Behind: the request starts more than ``late_ms`` after its intended time, or more than
    ``backlog`` requests are already in flight (started and waiting for a connection or an answer).
    """
    from loadsim.drivers import http

    original = http.HttpDriver._start  # noqa: SLF001 - the self-test's injected fault, never a figure
    cost, late = cost_us * 1e-6, late_ms * 1e-3

    def _start(self: Any, due: Any, first: int, end: int, now: float) -> None:
        behind = now - float(due.times[first]) > late or self._in_flight > backlog
        before = self._started
        original(self, due, first, end, now)
        n = self._started - before
        CHARGED["seen"] += n
        if behind and n > 0:
            CHARGED["charged"] += n
            stop = time.thread_time() + n * cost
            while time.thread_time() < stop:
                pass

    http.HttpDriver._start = _start  # type: ignore[method-assign]  # noqa: SLF001


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    cut = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(
        prog="python -m bench.loadsim_probe",
        usage="%(prog)s [--series FILE] [faults] -- LOADSIM-ARGS...",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--series", type=Path, help="write the per-window rows here (JSON) when the run ends")
    p.add_argument("--collapse-cost-us", type=float, default=0.0, help="self-test: extra CPU per late request")
    p.add_argument("--collapse-late-ms", type=float, default=5.0, help="self-test: how late counts as behind")
    p.add_argument("--collapse-backlog", type=int, default=1000, help="self-test: how many in flight count as behind")
    p.add_argument("--stall", default=None, help="self-test: SECONDS@AT, block the loop SECONDS at run time AT")
    args = p.parse_args(argv[:cut])
    if cut == len(argv):
        p.error("the loadsim command line goes after --")
    return args, argv[cut + 1 :]


def main(argv: list[str] | None = None) -> int:
    args, rest = parse_args(sys.argv[1:] if argv is None else argv)
    stall = None
    if args.stall:
        seconds, _, at = args.stall.partition("@")
        stall = (float(seconds), float(at or 0.0))
    recorder = Recorder(stall)
    from loadsim.runtime import execute as runtime
    from loadsim.runtime.factory import build

    def recorded_build(*a: Any, **kw: Any) -> Any:
        run = build(*a, **kw)
        recorder.attach(run.engine)
        return run

    setattr(runtime, "build", recorded_build)  # noqa: B010 (execute's own name for it, replaced on purpose)
    if args.collapse_cost_us > 0:
        install_collapse(args.collapse_cost_us, args.collapse_late_ms, args.collapse_backlog)
    from loadsim.cli import main as loadsim_main

    try:
        return loadsim_main(rest)
    finally:
        if args.series is not None:
            faults = {
                "collapse_cost_us": args.collapse_cost_us,
                "collapse_late_ms": args.collapse_late_ms,
                "collapse_backlog": args.collapse_backlog,
            }
            faults["stall"] = args.stall
            charged = {"collapse_seen": CHARGED["seen"], "collapse_charged": CHARGED["charged"]}
            args.series.write_text(json.dumps({"faults": faults, **charged, "rows": recorder.rows}))


if __name__ == "__main__":
    sys.exit(main())
