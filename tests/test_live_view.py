"""The live view as a person sees it: ``loadsim run`` in a real pseudo-terminal, read back through pyte.

pyte is a terminal emulator: it applies the escape codes the process writes (cursor up,
erase line, colours) to a grid of cells, so the assertions are on the rendered screen,
not on the byte stream. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import fcntl
import io
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pyte

from loadsim.clock import WallClock
from loadsim.logs import LogOutput, configure, get_logger
from loadsim.plan import build_plan
from loadsim.profile import parse_profile
from loadsim.runtime import view as view_module
from loadsim.runtime.execute import RunOptions, execute
from loadsim.sinks.live_view import LineScreen, ViewState, choose, plain_line

LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d \[\w+\s*\] ")
VIEW_LABELS = ("rate ", "sends ", "errors ", "latency ", "overlays ")

SLOW_SENDS = """
name = "tty"
[model.errors]
gmail_timeout = 0.05        # 5% of sends take the relay's 30 s timeout: some are always in flight
"""


class Terminal:
    """``python -m loadsim ARGS`` on a pseudo-terminal of ``cols`` x ``rows``, rendered by pyte."""

    def __init__(self, args: list[str], *, cols: int = 110, rows: int = 60, env: dict[str, str] | None = None) -> None:
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        environ = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS", "LINES")}
        environ |= {"TERM": "xterm-256color", "PYTHONUNBUFFERED": "1"} | (env or {})
        pid, fd = pty.fork()
        if pid == 0:  # the child: size its terminal, then become loadsim
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            os.execve(sys.executable, [sys.executable, "-m", "loadsim", *args], environ)
        self.pid, self.fd = pid, fd
        self.code: int | None = None

    def pump(self, seconds: float) -> None:
        """Feed what the process writes for up to ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                return
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # the child closed the terminal
                return
            if not data:
                return
            self.stream.feed(data)

    def wait_for(self, what: Callable[[list[str]], bool], timeout: float = 20.0) -> list[str]:
        """Pump until ``what(lines)`` holds; returns the screen's lines then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.1)
            if what(self.lines()):
                return self.lines()
        raise AssertionError("screen never matched:\n" + "\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def finish(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.1)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.pump(0.2)
                self.code = os.waitstatus_to_exitcode(status)
                return self.code
        raise AssertionError("loadsim did not exit:\n" + "\n".join(self.lines()))

    def close(self) -> None:
        if self.code is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


def _view_intact(lines: list[str]) -> None:
    """The block is whole and at the bottom; above it only log lines (and their wrapped tails)."""
    head = next(i for i, line in enumerate(lines) if line.startswith("loadsim   tty · sim"))
    labels = [line.split()[0] for line in lines[head + 1 : head + 1 + len(VIEW_LABELS)]]
    assert labels == [label.strip() for label in VIEW_LABELS], lines
    below = [line for line in lines[head:] if line]
    assert not any(LOG_LINE.match(line) for line in below), lines  # no log line inside or under the view
    above = lines[:head]
    assert not any(line.startswith(VIEW_LABELS) or line.startswith("loadsim ") for line in above), lines
    assert any(LOG_LINE.match(line) for line in above), lines


def test_run_in_a_terminal_view_logs_drain_and_final_table(tmp_path: Path) -> None:
    profile = tmp_path / "tty.toml"
    profile.write_text(SLOW_SENDS)
    term = Terminal(
        [
            "run", str(profile), "--rate", "50/s", "--duration", "1m", "--no-listen", "--grace", "4s",
            "--overlay", "error-rate-crit@1s+40s", "--overlay", "latency-warn@3s+2s",
            "--threshold", "errors:rate<0.001", "--threshold", "latency:p(99)<60s",
        ]
    )  # fmt: skip
    try:
        # The overlay's name and time left while it is active.
        lines = term.wait_for(lambda ls: any(re.match(r"overlays\s+error-rate-crit \d+s left", x) for x in ls))
        _view_intact(lines)
        # More log lines arrive while the view is up (latency-warn starts at 3 s and ends at 5 s).
        lines = term.wait_for(lambda ls: any("overlay.end" in x and "latency-warn" in x for x in ls))
        _view_intact(lines)
        assert not any(x.lstrip().startswith("{") or '{"' in x for x in lines)  # no JSON on the terminal
        colours = {c.fg for row in term.screen.buffer.values() for c in row.values()}
        assert colours - {"default"}  # severities and figures in colour (NO_COLOR unset)
        term.type("\x03")  # Ctrl-C
        lines = term.wait_for(
            lambda ls: any(re.match(r"stopping\s+draining \d+ in flight\s+grace left \d+s", x) for x in ls), timeout=5
        )
        assert any("Ctrl-C again exits at once" in x for x in lines)
        _view_intact(lines)
        code = term.finish()
        lines = term.lines()
        assert code == 99, lines
        thresholds = lines.index("  THRESHOLDS")
        rows = [x.strip() for x in lines[thresholds + 1 :] if x.strip()]
        assert rows[0].startswith("✗ errors rate<0.001 ..")
        assert re.search(r"\.\s+rate=\d+(\.\d+)?%$", rows[0])
        assert rows[1].startswith("✓ latency p(99)<60s ..")
        assert re.search(r"\.\s+p\(99\)=\d+(ms|\.\d+s)$", rows[1])
        assert any("stopped early (signal)" in x for x in lines)
        assert any(re.match(r"\s+error-rate-crit \.+\s+1s → \d+s", x) for x in lines)
    finally:
        term.close()


def test_dumb_terminal_gets_a_plain_line_and_no_colour(tmp_path: Path) -> None:
    profile = tmp_path / "tty.toml"
    profile.write_text(SLOW_SENDS)
    args = ["run", str(profile), "--rate", "20/s", "--duration", "3s", "--no-listen", "--grace", "0s"]
    term = Terminal([*args, "--overlay", "error-rate-crit@1s+1s"], env={"TERM": "dumb"})
    try:
        assert term.finish() == 0
        lines = [x for x in term.lines() if x]
        starts = [i for i, x in enumerate(lines) if "overlay.start" in x]
        assert starts
        assert LOG_LINE.match(lines[starts[0]])  # a log line starts its own row, never glued on
        plain = [x for x in lines if re.match(r"^\d+(ms|s)/3s  rate ", x)]
        assert plain, lines  # the plain line, not the block
        assert not any(x.startswith("loadsim   tty") for x in lines)
        assert {c.fg for row in term.screen.buffer.values() for c in row.values()} == {"default"}
    finally:
        term.close()


def test_no_color_is_honoured() -> None:
    args = ["run", "--rate", "20/s", "--duration", "2s", "--no-listen", "--grace", "0s"]
    term = Terminal(args, env={"NO_COLOR": "1"})
    try:
        assert term.finish() == 0
        assert any(x.startswith("loadsim   default · sim") for x in term.lines())
        cells = [c for row in term.screen.buffer.values() for c in row.values()]
        assert {c.fg for c in cells} == {"default"}
        assert {c.bg for c in cells} == {"default"}
    finally:
        term.close()


class TestChoice:
    class _Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    def test_auto(self) -> None:
        assert choose("auto", io.StringIO(), {}) == "json"
        assert choose("auto", self._Tty(), {"TERM": "dumb"}) == "line"
        assert choose("auto", self._Tty(), {"TERM": "xterm", "COLUMNS": "60"}) == "line"
        assert choose("auto", self._Tty(), {"TERM": "xterm", "COLUMNS": "120"}) == "live"
        assert choose("json", self._Tty(), {}) == "json"

    def test_line_screen_clears_itself_before_a_log_line(self) -> None:
        out = io.StringIO()
        screen: LineScreen[ViewState] = LineScreen(out, plain_line, 60)
        screen.show(ViewState("t", 5.0, 10.0, started=42))
        screen.log("\x1b[2m12:00:00\x1b[0m [info] overlay.start")
        text = out.getvalue()
        status = text.split("\r")[1]
        assert len(status) == 59  # cut to the width
        assert "\r" + " " * 59 + "\r12:00:00 [info] overlay.start\n" + status in text


def test_the_view_costs_under_one_percent_of_a_core_at_1000_per_second(monkeypatch) -> None:
    """The per-window hook and the redraws (4 a second) of a wall-clock run at 1,000 sends/s, timed."""
    spent: list[float] = []
    original = view_module.RunView.after_window

    def timed(self, t: float, *rest: object) -> None:
        t0 = time.process_time()
        original(self, t, *rest)
        spent.append(time.process_time() - t0)

    monkeypatch.setattr(view_module.RunView, "after_window", timed)
    keys = {"duration": "4s", "schedule": [{"kind": "constant", "rate": "1000/s"}], "engine": {"grace": 0}}
    plan = build_plan(parse_profile(keys, "test"), virtual=False, wall_epoch=time.time())

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Tty()
    monkeypatch.setattr(view_module.sys, "stderr", screen)
    logs = configure(fmt="console", output=LogOutput(io.StringIO()))
    wall = WallClock()
    started = wall.now()
    summary = asyncio.run(execute(plan, RunOptions(listen=None, progress="live", logs=logs)))
    elapsed = wall.now() - started
    assert summary["sends"]["started"] > 3000
    assert len(spent) >= 35  # one call per 0.1 s window
    share = sum(spent) / elapsed
    print(f"view: {sum(spent) * 1000:.1f} ms CPU over {elapsed:.2f} s wall = {share:.3%} of a core")
    # process_time counts this process's CPU (the view runs on the loop's thread): under 1%.
    assert share < 0.01
    assert "loadsim" in screen.getvalue()
    get_logger().info("done")
