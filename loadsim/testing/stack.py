"""A real Prometheus, Pushgateway and Alertmanager on loopback, for tests that must see alerts fire.

loadsim's claim is that the relay's *own* rules and routing react to its
traffic. Unit tests evaluate the rules with promtool; only real daemons show
the rest: scraping, rule evaluation on a clock, Prometheus handing alerts to
Alertmanager, grouping, inhibition and notifications. :class:`Stack` starts the
three binaries (Debian's ``prometheus``, ``prometheus-pushgateway`` and
``prometheus-alertmanager`` packages; ``scripts/setup-stack.sh`` installs them)
as child processes, each in its own temporary directory on a free
``127.0.0.1`` port, and stops them again. The traps it avoids are written up in
``PROMETHEUS-STACK.md``; each is repeated where the code deals with it.

What the daemons run, derived from ``deploy/relay``:

* Prometheus evaluates **time-scaled copies** of the recording rules and of one
  alert file (:mod:`loadsim.verify.scaling`; the default factor 30 turns
  ``[5m]`` into ``[10s]`` and ``for: 10m`` into ``20s``), scrapes every second,
  and alerts to the Alertmanager. Scrape job ``relay`` reads the given loadsim
  ``/metrics`` URLs (``honor_labels`` off, as for any target); job
  ``pushgateway`` reads the Pushgateway with ``honor_labels: true``, so pushed
  groups keep their ``job`` and ``instance``.
* Alertmanager runs the relay's ``alertmanager.yml`` with its route tree and
  inhibit rules **as written** (timers divided by the same factor) and every
  receiver turned into a webhook to a :class:`~loadsim.testing.webhook.WebhookReceiver`
  (see :func:`derive_alertmanager_config`).

Example::

    with Stack(relay_targets=["http://127.0.0.1:9477/metrics"]) as stack:
        stack.wait_until(lambda: "GmailSendHighErrorRateCritical" in stack.firing(), timeout=90)
        critical = stack.webhook.wait_for(lambda n: n.receiver == "pagerduty-critical", timeout=30)

The API is synchronous (subprocess and urllib): a test polls, and polling a
few HTTP endpoints needs no event loop. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NamedTuple, Self, TypeVar

from loadsim.testing.webhook import WebhookReceiver
from loadsim.units import parse_duration
from loadsim.verify.scaling import go_duration, write_scaled

T = TypeVar("T")

DEFAULT_FACTOR = 30.0
"""Rule and routing time constants are divided by this: ``[5m]`` -> ``[10s]``, ``for: 10m`` -> ``20s``.

A 10 s window at a 1 s scrape holds about ten samples, which ``PROMETHEUS-STACK.md`` calls
robust; 60x would leave 5 s windows, where one late scrape moves a ratio visibly.
"""
DEFAULT_MIN_RANGE = 5.0
"""No scaled range selector below 5 s: ``rate()`` needs two samples in its range, and a few to spare."""
MIN_TIMER = 1.0
"""Floor of every scaled Alertmanager timer. ``group_wait: 0s`` races inhibition (the warning can
go out with the critical that should suppress it); 1 s did not in measurements."""
SCRAPE_INTERVAL = 1.0
EVALUATION_INTERVAL = 1.0

ALERT_FILES = {"v1": "prometheus-alerts.yml", "v2": "prometheus-alerts-v2.yml"}
"""The relay's two alert files; ``v1`` also holds the AI orchestrator's alerts (their metrics never exist here)."""
RECORDING_FILE = "prometheus-recording.yml"
ALERTMANAGER_FILE = "alertmanager.yml"

_BINARY_NAMES = {
    "prometheus": ("prometheus",),
    "pushgateway": ("prometheus-pushgateway", "pushgateway"),
    "alertmanager": ("prometheus-alertmanager", "alertmanager"),
}


class StackError(Exception):
    """A daemon could not be started, or answered in a way the stack does not understand."""


class BinaryNotFoundError(StackError):
    """One or more of the daemons' binaries is not installed."""

    def __init__(self, missing: Sequence[str]) -> None:
        self.missing = tuple(missing)
        super().__init__(
            f"not found on PATH: {', '.join(self.missing)}; install Debian's prometheus, prometheus-pushgateway "
            "and prometheus-alertmanager packages (scripts/setup-stack.sh does, without starting their services)"
        )


@dataclass(frozen=True, slots=True)
class Binaries:
    """Paths of the three daemons."""

    prometheus: str
    pushgateway: str
    alertmanager: str

    @classmethod
    def find(cls) -> Binaries:
        """Look each binary up on ``PATH``; raises :class:`BinaryNotFoundError` naming every one missing."""
        found: dict[str, str] = {}
        missing: list[str] = []
        for role in _BINARY_NAMES:
            try:
                found[role] = find_binary(role)
            except BinaryNotFoundError as e:
                missing.extend(e.missing)
        if missing:
            raise BinaryNotFoundError(missing)
        return cls(**found)


def find_binary(role: str) -> str:
    """The binary for ``role`` (``prometheus``, ``pushgateway``, ``alertmanager``) under its Debian or upstream name."""
    names = _BINARY_NAMES[role]
    path = next((p for p in map(shutil.which, names) if p is not None), None)
    if path is None:
        raise BinaryNotFoundError([" or ".join(names)])
    return path


class Sample(NamedTuple):
    """One element of an instant-query result."""

    labels: dict[str, str]
    value: float


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.25,
    *,
    what: str = "",
    ignore: tuple[type[Exception], ...] = (),
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something truthy; return that.

    Raises :class:`TimeoutError` after ``timeout`` seconds, naming ``what`` and the last value
    (or the last ignored exception). Exceptions of the types in ``ignore`` count as "not yet",
    for daemons that refuse connections while they start.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except ignore as e:
            last = e
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            name = what or getattr(predicate, "__name__", "condition")
            msg = f"{name} not met within {timeout:g}s; last: {last!r}"
            raise TimeoutError(msg)
        time.sleep(min(interval, max(deadline - time.monotonic(), 0.0)))


class HTTPStatusError(StackError):
    """A daemon answered with an error status (a 503 while starting, a 400 for a bad query)."""

    def __init__(self, url: str, code: int, detail: str) -> None:
        self.url = url
        self.code = code
        super().__init__(f"{url}: HTTP {code}: {detail}")


def _http(url: str, *, method: str = "GET", timeout: float = 5.0) -> bytes:
    # Only URLs this module builds (http on 127.0.0.1) reach here.
    request = urllib.request.Request(url, method=method)  # noqa: S310 - loopback http built here
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - same
            body: bytes = response.read()
    except urllib.error.HTTPError as e:
        with e:  # an HTTPError holds the response open; close it rather than leave it to the collector
            detail = e.read().decode("utf-8", errors="replace").strip()[:500]
        raise HTTPStatusError(url, e.code, detail) from None
    return body


def _get_json(url: str) -> Any:
    return json.loads(_http(url))


def _free_port() -> int:
    """A port free on 127.0.0.1 now. The daemon binds it a moment later; a lost race is retried by the caller."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# ---------------------------------------------------------------------------------------------
# Configuration, as pure functions of their inputs


def default_relay_dir() -> Path:
    """The project's relay config (``deploy/relay``, or ``$LOADSIM_RELAY_CONFIG``)."""
    from loadsim.relayconfig import RELAY_CONFIG

    return RELAY_CONFIG


def scaled_timer(value: str, factor: float, floor: float = MIN_TIMER) -> str:
    """An Alertmanager duration divided by ``factor``, in whole seconds, never below ``floor``."""
    seconds = max(math.ceil(parse_duration(value) / factor), floor)
    return go_duration(seconds)


_TOP_KEY = re.compile(r"^([A-Za-z_]\w*):")
_TIMER = re.compile(
    r"^(?P<lead>[ \t]*(?:-[ \t]+)?)(?P<key>group_wait|group_interval|repeat_interval):[ \t]*"
    r"(?P<q>['\"]?)(?P<value>[0-9a-z.]+)(?P=q)[ \t]*(?:#.*)?$",
    re.MULTILINE,
)
_RECEIVER_NAME = re.compile(r"^(?P<indent>\s*)-\s+name:\s*(?P<q>['\"]?)(?P<name>[^'\"#\s]+)(?P=q)\s*(?:#.*)?$")


def split_top_level(text: str) -> dict[str, str]:
    """A YAML mapping document's top-level entries as text, keyed by their key.

    Each block runs from its key line to the next top-level key; comment and blank
    lines at column 0 just before a key belong to that key. Text before the first key
    is under ``""``. This is enough for Alertmanager's config (a flat mapping of
    sections) and keeps every section byte for byte, comments included.
    """
    blocks: dict[str, list[str]] = {"": []}
    current = ""
    for line in text.splitlines(keepends=True):
        m = _TOP_KEY.match(line)
        if m is None:
            blocks[current].append(line)
            continue
        key = m.group(1)
        if key in blocks:
            msg = f"top-level key {key!r} appears twice"
            raise StackError(msg)
        leading: list[str] = []
        previous = blocks[current]
        while previous and (not previous[-1].strip() or previous[-1].startswith("#")):
            leading.insert(0, previous.pop())
        blocks[key] = [*leading, line]
        current = key
    return {key: "".join(lines) for key, lines in blocks.items()}


def receiver_names(receivers_block: str) -> list[str]:
    """The ``name`` of every item of a ``receivers:`` block, in order."""
    names: list[str] = []
    indent: str | None = None
    for line in receivers_block.splitlines():
        m = _RECEIVER_NAME.match(line)
        if m is None:
            continue
        if indent is None:
            indent = m.group("indent")
        if m.group("indent") == indent:
            names.append(m.group("name"))
    return names


def scale_route_timers(route_block: str, factor: float) -> str:
    """The ``route:`` block with ``group_wait``, ``group_interval`` and ``repeat_interval`` divided by ``factor``."""

    def scaled(m: re.Match[str]) -> str:
        old = m.group("value")
        return f"{m.group('lead')}{m.group('key')}: {scaled_timer(old, factor)}  # loadsim: {old} / {factor:g}"

    return _TIMER.sub(scaled, route_block)


def derive_alertmanager_config(text: str, webhook_url: str, factor: float = DEFAULT_FACTOR) -> str:
    """The relay's Alertmanager config for a test: same routing and inhibition, webhooks instead of Slack/PagerDuty.

    * ``route:`` is kept line for line, except that its timers (root and child routes)
      are divided by ``factor``, with :data:`MIN_TIMER` as the floor;
    * ``inhibit_rules:``, ``global:`` and any other section are kept byte for byte;
    * ``receivers:`` keeps every receiver's name, in order, and replaces its
      integrations with one webhook to ``{webhook_url}/{name}`` with ``send_resolved: true``
      (the original's ``slack-info`` does not send resolved notifications; a test wants to
      see every transition);
    * ``templates:`` is dropped: templates only format the Slack and PagerDuty messages.

    Text surgery rather than a YAML round trip, because the point is that the sections
    that decide *whether* something is sent are the file's own text, comments and all
    (and PyYAML is not a dependency). The new receivers are written as JSON, which is
    YAML. ``tests/test_relay_config.py`` checks with Alertmanager itself that the routes
    and inhibit rules it loads from the result equal those it loads from the file.
    """
    blocks = split_top_level(text)
    for required in ("route", "receivers", "inhibit_rules"):
        if required not in blocks:
            msg = f"expected a top-level {required!r} section in the Alertmanager config"
            raise StackError(msg)
    names = receiver_names(blocks["receivers"])
    if not names:
        msg = "found no receiver names in the Alertmanager config's receivers section"
        raise StackError(msg)
    receivers = [
        {
            "name": name,
            "webhook_configs": [{"url": f"{webhook_url}/{urllib.parse.quote(name)}", "send_resolved": True}],
        }
        for name in names
    ]
    out = [
        (
            f"# Derived by loadsim.testing.stack: receivers are loopback webhooks, route timers / {factor:g}.\n"
            "# Route tree and inhibit rules are the original's text. Do not edit.\n"
        )
    ]
    for key, block in blocks.items():
        if key == "route":
            out.append(scale_route_timers(block, factor))
        elif key == "receivers":
            out.append(f"receivers: {json.dumps(receivers)}\n\n")
        elif key != "templates":
            out.append(block)
    return "".join(out)


def _scrape_group(target: str) -> dict[str, Any]:
    """A static_configs entry for ``target``: a URL such as ``http://127.0.0.1:9477/metrics`` or ``host:port``."""
    parts = urllib.parse.urlsplit(target if "://" in target else f"http://{target}")
    if not parts.netloc:
        msg = f"expected a scrape target such as http://127.0.0.1:9477/metrics, got {target!r}"
        raise StackError(msg)
    return {
        "targets": [parts.netloc],
        "labels": {"__metrics_path__": parts.path or "/metrics", "__scheme__": parts.scheme},
    }


def prometheus_config(
    *,
    rule_files: Sequence[Path],
    alertmanager: str | None,
    relay_targets: Sequence[str] = (),
    pushgateway: str | None = None,
) -> dict[str, Any]:
    """Prometheus's configuration as a dict (written as JSON, which Prometheus reads as YAML).

    ``alertmanager`` and ``pushgateway`` are ``host:port``. Scrape and evaluation run every
    second; ``scrape_timeout`` may not exceed the interval, so it is set to it.
    """
    interval = go_duration(SCRAPE_INTERVAL)
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": go_duration(EVALUATION_INTERVAL),
        },
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {"job_name": "relay", "honor_labels": False, "static_configs": [_scrape_group(t) for t in relay_targets]}
        ],
    }
    if pushgateway is not None:
        config["scrape_configs"].append(
            {"job_name": "pushgateway", "honor_labels": True, "static_configs": [{"targets": [pushgateway]}]}
        )
    if alertmanager is not None:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return config


# ---------------------------------------------------------------------------------------------
# One daemon


class _Daemon:
    """A child process serving HTTP on 127.0.0.1, with its own directory and log file."""

    name = "daemon"

    def __init__(self, binary: str, directory: Path | None) -> None:
        self.binary = binary
        self._owns_dir = directory is None
        self.directory = Path(tempfile.mkdtemp(prefix=f"loadsim-{self.name}-")) if directory is None else directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.address}"

    @property
    def log_path(self) -> Path:
        """Where the daemon's stdout and stderr go."""
        return self.directory / f"{self.name}.log"

    def argv(self) -> list[str]:
        """The command line (the port is chosen by then)."""
        raise NotImplementedError

    def launch(self) -> None:
        """Pick a free port and start the process; does not wait for it."""
        self.port = _free_port()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - a resolved binary with arguments built here
                self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.directory
            )

    def wait_ready(self, timeout: float) -> None:
        """Wait for ``GET /-/ready``; raises :class:`StackError` (with the log's tail) if the process dies or stalls."""
        proc = self.proc
        assert proc is not None, "launch() first"

        def ready() -> bool:
            if proc.poll() is not None:
                msg = f"{self.name} exited with {proc.returncode} while starting:\n{self.log_tail()}"
                raise StackError(msg)
            return _http(f"{self.url}/-/ready", timeout=2.0) is not None

        try:
            wait_until(ready, timeout, 0.1, what=f"{self.name} ready", ignore=(OSError, HTTPStatusError))
        except TimeoutError as e:
            msg = f"{e}\n{self.log_tail()}"
            raise StackError(msg) from None

    def start(self, timeout: float = 30.0, attempts: int = 3) -> Self:
        """Launch and wait until ready, retrying on a new port if the process dies (a lost port race)."""
        for attempt in range(attempts):
            self.launch()
            try:
                self.wait_ready(timeout)
            except StackError:
                self.terminate()
                if attempt == attempts - 1:
                    raise
            else:
                return self
        raise AssertionError  # unreachable: the loop returns or raises

    def terminate(self, timeout: float = 5.0) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def stop(self) -> None:
        """Terminate and remove the directory if this daemon created it."""
        self.terminate()
        if self._owns_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the daemon's log."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return f"({self.log_path} unreadable)"
        return "\n".join(text.splitlines()[-lines:])


class Pushgateway(_Daemon):
    """A Pushgateway without persistence: a second instance never reloads another run's groups."""

    name = "pushgateway"

    def __init__(self, binary: str | None = None, directory: Path | None = None) -> None:
        super().__init__(binary or find_binary("pushgateway"), directory)

    def argv(self) -> list[str]:
        return [self.binary, f"--web.listen-address={self.address}", "--persistence.file="]

    def groups(self) -> list[dict[str, Any]]:
        """``/api/v1/metrics``: every pushed group, with its ``labels`` (the grouping key)."""
        data: list[dict[str, Any]] = _get_json(f"{self.url}/api/v1/metrics")["data"]
        return data


class Alertmanager(_Daemon):
    """An Alertmanager with gossip off and its own storage.

    An empty ``--cluster.listen-address`` turns clustering off: otherwise it binds
    0.0.0.0:9094 and holds notifications about 10 s until "gossip settled".
    """

    name = "alertmanager"

    def __init__(self, config: str, binary: str | None = None, directory: Path | None = None) -> None:
        super().__init__(binary or find_binary("alertmanager"), directory)
        self.config_path = self.directory / "alertmanager.yml"
        self.config_path.write_text(config, encoding="utf-8")

    def argv(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.path={self.directory / 'data'}",
            f"--web.listen-address={self.address}",
            "--cluster.listen-address=",
        ]

    def alerts(self) -> list[dict[str, Any]]:
        """``/api/v2/alerts``: active, silenced and inhibited alerts, each with ``status.state`` and ``inhibitedBy``."""
        data: list[dict[str, Any]] = _get_json(f"{self.url}/api/v2/alerts")
        return data

    def loaded_config(self) -> str:
        """The configuration as Alertmanager parsed it, re-marshalled (``/api/v2/status`` ``config.original``)."""
        text: str = _get_json(f"{self.url}/api/v2/status")["config"]["original"]
        return text


class Prometheus(_Daemon):
    """A Prometheus with its own TSDB directory (a second instance would collide on the default's lock)."""

    name = "prometheus"

    def __init__(self, config: Mapping[str, Any], binary: str | None = None, directory: Path | None = None) -> None:
        super().__init__(binary or find_binary("prometheus"), directory)
        self.config_path = self.directory / "prometheus.yml"
        self.config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    def argv(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.directory / 'tsdb'}",
            f"--web.listen-address={self.address}",
            "--web.enable-lifecycle",
            "--web.enable-admin-api",
        ]

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/{path}`` and return ``data``; raises :class:`HTTPStatusError` on an error status."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return _get_json(f"{self.url}/api/v1/{path}{query}")["data"]

    def query(self, expr: str, at: float | None = None) -> list[Sample]:
        """An instant query (at Unix time ``at``, default now) as ``[(labels, value)]``."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        data = self.api("query", **params)
        if data["resultType"] == "scalar":
            return [Sample({}, float(data["result"][1]))]
        if data["resultType"] != "vector":
            msg = f"expected an instant vector from {expr!r}, got a {data['resultType']}"
            raise StackError(msg)
        return [Sample(dict(r["metric"]), float(r["value"][1])) for r in data["result"]]


# ---------------------------------------------------------------------------------------------
# The three together


class Stack:
    """Prometheus, Pushgateway and Alertmanager (plus a webhook receiver), running the relay's config.

    ``relay_targets`` are loadsim ``/metrics`` URLs for the ``relay`` job (none when
    loadsim only pushes). ``alerts`` picks the alert file (``v1``: prometheus-alerts.yml,
    ``v2``: prometheus-alerts-v2.yml). ``factor`` divides every time constant of the
    rules and of Alertmanager's routing. ``webhook`` is a started receiver to use;
    by default the stack starts and stops its own (:attr:`webhook`).

    :meth:`start` returns when the daemons answer ``/-/ready`` *and* Prometheus scrapes
    every target (``up == 1``) and lists the Alertmanager: ``/-/ready`` alone is not
    enough, because Prometheus hands new targets and Alertmanagers to its managers only
    every 5 seconds.
    """

    def __init__(
        self,
        relay_targets: Sequence[str] = (),
        *,
        alerts: Literal["v1", "v2"] = "v1",
        factor: float = DEFAULT_FACTOR,
        min_range: float = DEFAULT_MIN_RANGE,
        relay_dir: Path | None = None,
        webhook: WebhookReceiver | None = None,
        binaries: Binaries | None = None,
        ready_timeout: float = 30.0,
    ) -> None:
        if alerts not in ALERT_FILES:
            msg = f"alerts must be one of {', '.join(ALERT_FILES)}, got {alerts!r}"
            raise ValueError(msg)
        if factor <= 0:
            msg = f"factor must be > 0, got {factor}"
            raise ValueError(msg)
        self.relay_targets = tuple(relay_targets)
        self.alerts = alerts
        self.factor = factor
        self.min_range = min_range
        self.relay_dir = relay_dir or default_relay_dir()
        self.ready_timeout = ready_timeout
        self._binaries = binaries
        self._own_webhook = webhook is None
        self.webhook = webhook or WebhookReceiver()
        self.root: Path | None = None
        self._pushgateway: Pushgateway | None = None
        self._alertmanager: Alertmanager | None = None
        self._prometheus: Prometheus | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Start everything and wait until Prometheus scrapes and alerts; stops what started on failure."""
        binaries = self._binaries or Binaries.find()
        sources = [
            self.relay_dir / "prometheus" / RECORDING_FILE,
            self.relay_dir / "prometheus" / ALERT_FILES[self.alerts],
        ]
        am_source = self.relay_dir / "alertmanager" / ALERTMANAGER_FILE
        for path in (*sources, am_source):
            if not path.is_file():
                msg = f"{path} not found; pass relay_dir= pointing at a copy of deploy/relay"
                raise StackError(msg)
        try:
            self._start(binaries, sources, am_source)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, binaries: Binaries, sources: list[Path], am_source: Path) -> None:
        if self._own_webhook:
            self.webhook.start()
        self.root = Path(tempfile.mkdtemp(prefix="loadsim-stack-"))
        rules = write_scaled(
            sources, self.root / "rules", self.factor, min_range=self.min_range, evaluation_interval=EVALUATION_INTERVAL
        )
        am_config = derive_alertmanager_config(am_source.read_text(encoding="utf-8"), self.webhook.url, self.factor)
        deadline = time.monotonic() + self.ready_timeout

        self._pushgateway = Pushgateway(binaries.pushgateway, self.root / "pushgateway")
        self._alertmanager = Alertmanager(am_config, binaries.alertmanager, self.root / "alertmanager")
        # Both start while the other boots; Prometheus needs only their ports.
        for daemon in (self._pushgateway, self._alertmanager):
            daemon.launch()
        for daemon in (self._pushgateway, self._alertmanager):
            try:
                daemon.wait_ready(self._left(deadline))
            except StackError:  # most likely a lost race for the port: start() retries on new ones
                daemon.terminate()
                daemon.start(timeout=self._left(deadline))
        config = prometheus_config(
            rule_files=rules,
            alertmanager=self._alertmanager.address,
            relay_targets=self.relay_targets,
            pushgateway=self._pushgateway.address,
        )
        self._prometheus = Prometheus(config, binaries.prometheus, self.root / "prometheus")
        self._prometheus.start(timeout=self._left(deadline))
        self._wait_connected(deadline)

    @staticmethod
    def _left(deadline: float) -> float:
        return max(deadline - time.monotonic(), 0.1)

    def _wait_connected(self, deadline: float) -> None:
        am_url = f"{self.alertmanager.url}/api/v2/alerts"

        def alertmanager_listed() -> bool:
            active = self.prometheus.api("alertmanagers")["activeAlertmanagers"]
            return any(a.get("url") == am_url for a in active)

        wait_until(alertmanager_listed, timeout=self._left(deadline), what="Prometheus lists the Alertmanager")
        self.wait_scraped("pushgateway", 1, timeout=self._left(deadline))
        if self.relay_targets:
            self.wait_scraped("relay", len(self.relay_targets), timeout=self._left(deadline))

    def wait_scraped(self, job: str, targets: int, timeout: float = 15.0) -> None:
        """Wait until ``targets`` targets of ``job`` report ``up == 1``."""
        wait_until(
            lambda: len(self.query(f'up{{job="{job}"}} == 1')) >= targets,
            timeout=timeout,
            what=f'{targets} target(s) of job "{job}" up',
        )

    def stop(self) -> None:
        """SIGTERM every daemon (SIGKILL after 5 s), stop the webhook receiver if ours, remove the files."""
        for daemon in (self._prometheus, self._alertmanager, self._pushgateway):
            if daemon is not None:
                with contextlib.suppress(OSError):
                    daemon.terminate()
        if self._own_webhook:
            self.webhook.stop()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- the daemons -------------------------------------------------------------------------

    @property
    def prometheus(self) -> Prometheus:
        """The running Prometheus."""
        return self._running(self._prometheus)

    @property
    def alertmanager(self) -> Alertmanager:
        """The running Alertmanager."""
        return self._running(self._alertmanager)

    @property
    def pushgateway(self) -> Pushgateway:
        """The running Pushgateway."""
        return self._running(self._pushgateway)

    @staticmethod
    def _running(daemon: T | None) -> T:
        if daemon is None:
            msg = "the stack is not started"
            raise StackError(msg)
        return daemon

    def logs(self, lines: int = 30) -> str:
        """The tail of every daemon's log, for a failing test's report."""
        daemons = [d for d in (self._prometheus, self._alertmanager, self._pushgateway) if d is not None]
        return "\n".join(f"--- {d.name} ({d.url}) ---\n{d.log_tail(lines)}" for d in daemons)

    # -- questions ---------------------------------------------------------------------------

    def query(self, expr: str, at: float | None = None) -> list[Sample]:
        """A PromQL instant query as ``[(labels, value)]``."""
        return self.prometheus.query(expr, at)

    def prometheus_alerts(self) -> list[dict[str, Any]]:
        """Prometheus's ``/api/v1/alerts``: pending and firing alerts, each with ``labels`` and ``state``."""
        alerts: list[dict[str, Any]] = self.prometheus.api("alerts")["alerts"]
        return alerts

    def alert_states(self) -> dict[str, str]:
        """``{alertname: state}`` of Prometheus's pending and firing alerts (firing wins over pending)."""
        states: dict[str, str] = {}
        for a in self.prometheus_alerts():
            name = a["labels"].get("alertname", "")
            if states.get(name) != "firing":
                states[name] = a["state"]
        return states

    def firing(self) -> set[str]:
        """Names of the alerts Prometheus has firing."""
        return {name for name, state in self.alert_states().items() if state == "firing"}

    def am_alerts(self) -> list[dict[str, Any]]:
        """Alertmanager's ``/api/v2/alerts`` (``status.state``: active, suppressed; ``status.inhibitedBy``)."""
        return self.alertmanager.alerts()

    def am_alert(self, alertname: str) -> dict[str, Any] | None:
        """Alertmanager's view of ``alertname`` (the first such alert), or None."""
        return next((a for a in self.am_alerts() if a["labels"].get("alertname") == alertname), None)

    def pushgateway_groups(self) -> list[dict[str, Any]]:
        """The Pushgateway's groups (``/api/v1/metrics``)."""
        return self.pushgateway.groups()

    @staticmethod
    def wait_until(
        predicate: Callable[[], T],
        timeout: float,
        interval: float = 0.25,
        *,
        what: str = "",
        ignore: tuple[type[Exception], ...] = (),
    ) -> T:
        """:func:`wait_until`, here for convenience."""
        return wait_until(predicate, timeout=timeout, interval=interval, what=what, ignore=ignore)
