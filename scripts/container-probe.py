# ruff: noqa: INP001 - a helper script of scripts/container-test.sh, not a module of a package
"""Small checks for scripts/container-test.sh, on the host's python3 (standard library only).

Subcommands (each prints its result on stdout, exits 1 with one line on stderr on failure):

``free-port``
    A free TCP port on 127.0.0.1.
``command CMD_JSON PORT HELP_FILE``
    The image's default command (``docker inspect -f '{{json .Config.Cmd}}'``) with
    ``--listen`` moved to 127.0.0.1:PORT, one argument per line. Options the image's
    loadsim does not list in HELP_FILE (``loadsim run --help``) are dropped, with their
    values, so the same image tests whichever of them exist.
``wait-metrics URL TIMEOUT [ABOVE]``
    Waits until ``action_exec_total{status="ok"}`` summed is above ABOVE (default 0);
    prints every ``action_exec_total`` sample as JSON.
``scrape URL``
    Every ``action_exec_total`` sample as JSON (``{"labels": value}``).
``ok-total SAMPLES_JSON``
    ``action_exec_total{status="ok"}`` summed, from the JSON the others print.
``not-backwards BEFORE_JSON AFTER_JSON``
    Fails if any sample of BEFORE is missing from AFTER or lower there.
``wait-newer FILE SECONDS_SINCE_EPOCH TIMEOUT``
    Waits until FILE was modified after the given time (a checkpoint after a scrape).
``summary FILE [MIN_RUN_SECONDS]``
    Checks a ``--summary-json`` file and prints its key figures.
``dashboards DIR``
    Checks the unwrapped Grafana dashboards (title and uid at the top level).
"""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

METRIC = "action_exec_total"
# Options of the image's default command that another engineer's work adds; each with the
# number of values it takes.
OPTIONAL = {"--state": 1, "--fresh-if-missing": 0, "--checkpoint-interval": 1, "--grace": 1}


class ProbeError(Exception):
    """A failed check; the message is the one line the script prints."""


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (closed again: the container binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command(cmd_json: str, port: str, help_file: str) -> list[str]:
    """The image's CMD on 127.0.0.1:PORT, without the options its loadsim does not have."""
    cmd = json.loads(cmd_json)
    if not isinstance(cmd, list) or "--listen" not in cmd:
        raise ProbeError(f"image CMD has no --listen: {cmd_json}")
    listed = Path(help_file).read_text(encoding="utf-8")
    out: list[str] = []
    skip = 0
    for i, arg in enumerate(cmd):
        if skip:
            skip -= 1
        elif arg in OPTIONAL and arg not in listed:
            skip = OPTIONAL[arg]
        elif i > 0 and cmd[i - 1] == "--listen":
            out.append(f"127.0.0.1:{port}")
        else:
            out.append(arg)
    return out


def scrape(url: str) -> dict[str, float]:
    """``{'{labels}': value}`` for every sample of the metric, parsed from the text format."""
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - a loopback URL from the script
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith((METRIC + "{", METRIC + " ")):
            name_labels, _, value = line.rpartition(" ")
            samples[name_labels[len(METRIC) :] or "{}"] = float(value)
    if not samples:
        raise ProbeError(f"{url}: no {METRIC} samples")
    return samples


def ok_total(samples: dict[str, float]) -> float:
    """``action_exec_total{status="ok"}`` summed over the other labels."""
    return sum(v for k, v in samples.items() if 'status="ok"' in k)


def wait_metrics(url: str, timeout: float, above: float = 0.0) -> dict[str, float]:
    """The first scrape whose successful sends are more than ``above``."""
    deadline = time.monotonic() + timeout
    last = "nothing"
    while time.monotonic() < deadline:
        try:
            samples = scrape(url)
            if ok_total(samples) > above:
                return samples
            last = f'{METRIC}{{status="ok"}} still {ok_total(samples):g}'
        except (OSError, ProbeError) as e:
            last = str(e)
        time.sleep(0.5)
    raise ProbeError(f'{url}: no {METRIC}{{status="ok"}} > {above:g} within {timeout:g}s (last: {last})')


def not_backwards(before: dict[str, float], after: dict[str, float]) -> str:
    """Every sample of ``before`` is in ``after``, and not lower."""
    lower = {k: (v, after.get(k)) for k, v in before.items() if after.get(k, -1.0) < v}
    if lower:
        raise ProbeError(f"{METRIC} went backwards (label set: (before, after)): {lower}")
    return f'{METRIC}{{status="ok"}} {ok_total(before):g} -> {ok_total(after):g}, no sample went backwards'


def wait_newer(path: Path, since: float, timeout: float) -> str:
    """Wait until ``path`` is modified after ``since`` (Unix time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_mtime > since:
            return f"{path.name} written {path.stat().st_mtime - since:.1f}s after the scrape"
        time.sleep(0.2)
    raise ProbeError(f"{path}: not written within {timeout:g}s after the scrape")


def summary(path: Path, min_run_seconds: float) -> str:
    """The summary exists, counts sends, and covers at least ``min_run_seconds`` of run time."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ProbeError(f"{path}: no summary ({e})") from None
    sends, run_seconds = data.get("sends", {}), float(data.get("run_seconds", -1))
    if not sends.get("started"):
        raise ProbeError(f"{path}: no sends started: {data}")
    if run_seconds < min_run_seconds:
        raise ProbeError(f"{path}: run_seconds {run_seconds:g} < {min_run_seconds:g} (the run did not resume)")
    return (
        f"summary: {sends['started']} sends started, {sends.get('finished')} finished, "
        f"run_seconds {run_seconds:g}, stopped_early {data.get('stopped_early')}"
    )


def dashboards(folder: Path) -> str:
    """Three dashboards with title and uid at the top level (file provisioning's form)."""
    found = {}
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if "dashboard" in data or not data.get("title") or not data.get("uid"):
            raise ProbeError(f"{path.name}: not a provisionable dashboard (keys {sorted(data)[:6]})")
        found[data["uid"]] = data["title"]
    if len(found) != 3:
        raise ProbeError(f"{folder}: expected 3 dashboards, got {found}")
    return f"dashboards: {found}"


COMMANDS: dict[str, Callable[[list[str]], object]] = {
    "free-port": lambda _a: free_port(),
    "command": lambda a: "\n".join(command(*a)),
    "wait-metrics": lambda a: json.dumps(wait_metrics(a[0], float(a[1]), float(a[2]) if len(a) > 2 else 0.0)),
    "scrape": lambda a: json.dumps(scrape(a[0])),
    "ok-total": lambda a: f"{ok_total(json.loads(a[0])):g}",
    "not-backwards": lambda a: not_backwards(json.loads(a[0]), json.loads(a[1])),
    "wait-newer": lambda a: wait_newer(Path(a[0]), float(a[1]), float(a[2])),
    "summary": lambda a: summary(Path(a[0]), float(a[1]) if len(a) > 1 else 0.0),
    "dashboards": lambda a: dashboards(Path(a[0])),
}


def main(argv: list[str]) -> int:
    """Run one subcommand; exit 0 on success, 1 on a failed check, 2 on bad usage."""
    if len(argv) < 2 or argv[1] not in COMMANDS:
        print(f"container-probe: expected one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        print(COMMANDS[argv[1]](argv[2:]))
    except ProbeError as e:
        print(f"container-probe: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
