"""The relay's own rules and routing, live: loadsim traffic -> Prometheus -> Alertmanager -> webhook.

Each test runs loadsim as a real child process (``python -m loadsim run``) against
a :class:`loadsim.testing.Stack`: a real Prometheus evaluating 30x time-scaled
copies of the relay's rules (``[5m]`` -> ``[10s]``, ``for: 10m`` -> ``20s``) and a
real Alertmanager running the relay's routes and inhibit rules with webhook
receivers. Every wait is bounded; fixtures stop every process even when a test fails.

One module-scoped run serves two tests: its first ~40 s are healthy traffic (the
baseline) and an ``error-rate-crit`` overlay follows. Alert state lives in
Prometheus's memory, and the baseline is read back from Prometheus's history
(``ALERTS`` over the healthy window only), so the incident that follows cannot
leak into it, whichever test runs first. The push path gets a fresh stack.

Why these numbers (see also ``loadsim.verify.scaling``):

* **400 sends/s.** A scaled 10 s window at a 1 s scrape spans about 9 s of
  increase, about 3,600 sends. The error ratio's standard deviation is
  sqrt(p(1-p)/n): healthy (p = 0.3%) 0.09%, so the 1% warning threshold is 7.5 sd
  away; in the incident (p = 8%) 0.45%, so the 5% critical threshold is 6.6 sd
  away and ``for: 20s`` is not reset by noise.
* **ratio 8%, not the scenario's default 6%.** At 6% the critical threshold is only
  2.2 sd away, and a ``for: 20s`` needs 20 evaluations in a row above it: a first
  live run saw the critical go pending and reset three times.
* **client timeout 5 s, not the relay's 30 s.** A timed-out send is counted when it
  ends. With 30 s and 10 s windows, the overlay's timeouts (10% of its errors) would
  land three windows late: the ratio read 5.4% instead of 6% during the overlay, and
  the warning flapped for 30 s after it. 5 s keeps that lag inside one window and
  stays above the healthy latency tail (p95 4 s), so healthy sends do not time out.
* **per-second rules at a realistic volume.** 400/s is 80x the default profile's
  5/s: as many sends in a 10 s window as a 5/s relay has in 5 minutes. Two rules
  compare per-second counts, not ratios, with absolute thresholds:
  ``GmailValidationErrorSpike`` (structured errors > 0.1/s) and
  ``HighSanitizationActivity`` (changes > 50/s). At 400/s the healthy defaults read
  0.42/s and 650/s and both fire (a first live run showed it). The profiles divide
  the per-send probabilities and means they count by the same 80, so those rules
  see the per-second rates of a 5/s relay.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import require_stack

from loadsim.model.catalog import STRUCTURED_CODES
from loadsim.model.params import SanitizationParams, default_error_probabilities
from loadsim.overlays.scenarios import ALL_ALERTS, ERR_CRIT, ERR_WARN
from loadsim.testing import Stack, WebhookReceiver, wait_until

T = TypeVar("T")

RATE = 400.0
VOLUME = RATE / 5.0
"""How many times the default profile's traffic; per-second-counted outcomes are divided by it."""
INCIDENT_RATIO = 0.08
BASELINE_SECONDS = 42.0
"""Overlay start (run time): the stack is scraping by ~7 s, data by ~9 s, leaving 30 s of clean baseline."""
OVERLAY_SECONDS = 40.0
"""Critical fires about 27 s into the overlay (ratio above 5% after ~6 s, then ``for: 20s``)."""


def profile_toml(name: str, overlay_start: float, overlay_duration: float, duration: float) -> str:
    """A 400/s profile with the per-second-counted outcomes scaled to a 5/s relay (see the module docstring)."""
    defaults = default_error_probabilities()
    structured = "\n".join(f"{code} = {defaults[code] / VOLUME!r}" for code in STRUCTURED_CODES)
    san = SanitizationParams()
    sanitization = "\n".join(
        f"{field} = {getattr(san, field) / VOLUME!r}"
        for field in ("tag_removed", "attr_removed", "script_blocked", "style_sanitized")
    )
    return f"""
name = "{name}"
duration = "{duration:g}s"
seed = 11
[[schedule]]
kind = "constant"
rate = "{RATE:g}/s"
[engine]
grace = "1s"
[model.latency]
timeout = "5s"
[model.sanitization]
{sanitization}
[model.errors]
{structured}
[[overlay]]
scenario = "error-rate-crit"
start = "{overlay_start:g}s"
duration = "{overlay_duration:g}s"
options = {{ ratio = {INCIDENT_RATIO} }}
"""


class Loadsim:
    """``loadsim run`` as a child process; its JSON log lines go to a file we poll (a pipe could fill and block it)."""

    def __init__(self, tmp: Path, profile: str, *args: str) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "profile.toml").write_text(profile)
        self.out = tmp / "stdout.jsonl"
        self.err = tmp / "stderr.txt"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "loadsim", "run", str(tmp / "profile.toml"), "--progress", "json", *args],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )

    def events(self) -> list[dict[str, Any]]:
        records = []
        for line in self.out.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def event(self, name: str, timeout: float = 20.0) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"loadsim exited with {self.proc.returncode}: {self.err.read_text()[-2000:]}")
            return next((e for e in self.events() if e.get("event") == name), None)

        return wait(found, timeout, f"loadsim event {name}")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (loadsim drains and, when pushing, deletes its group), SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode


def unix(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def wait(predicate: Callable[[], T], timeout: float, what: str, stack: Stack | None = None) -> T:
    """Stack.wait_until, failing as an assertion with what Prometheus and Alertmanager had at the end."""
    try:
        return Stack.wait_until(predicate, timeout=timeout, interval=0.5, what=what)
    except TimeoutError as e:
        if stack is None:
            raise AssertionError(str(e)) from None
        am = [(a["labels"].get("alertname"), a["status"]["state"]) for a in stack.am_alerts()]
        hooks = [(n.receiver, n.status, sorted(n.alertnames())) for n in stack.webhook.notifications]
        detail = f"prometheus: {stack.alert_states()}\nalertmanager: {am}\nwebhook: {hooks}\n{stack.logs(15)}"
        raise AssertionError(f"{e}\n{detail}") from None


@dataclass
class ScrapeRun:
    stack: Stack
    loadsim: Loadsim
    overlay_start: float
    """Unix time the overlay began (loadsim's overlay.start event)."""
    data_since: float
    """Unix time the relay's recording rules first had a value."""


@pytest.fixture(scope="module")
def scrape_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapeRun]:
    require_stack()
    profile = profile_toml("live-scrape", BASELINE_SECONDS, OVERLAY_SECONDS, BASELINE_SECONDS + OVERLAY_SECONDS + 40)
    child = Loadsim(tmp_path_factory.mktemp("scrape"), profile, "--listen", "127.0.0.1:0")
    try:
        url = str(child.event("metrics.listening")["url"])
        with Stack([url], alerts="v1") as stack:
            wait(lambda: stack.query("job:gmail_send_exec_rate:5m > 100"), 15, "relay recording rules", stack)
            data_since = time.time()
            start = child.event("overlay.start", timeout=BASELINE_SECONDS + 10)
            yield ScrapeRun(stack, child, unix(start), data_since)
    finally:
        child.stop()


@pytest.mark.stack
def test_healthy_traffic_fires_no_relay_alert(scrape_run: ScrapeRun):
    """The baseline: ~30 s of healthy 400/s traffic, not one of loadsim's contract alerts even pending."""
    stack = scrape_run.stack
    # After the first evaluations with data (GmailMetricsMissing and RolloutControllerStalled are
    # pending before any data), up to a second before the overlay's first sends.
    start, end = scrape_run.data_since + 3, scrape_run.overlay_start - 1
    assert end - start >= 20, (start, end)
    window = int(end - start)
    seen = stack.query(f"count by (alertname, alertstate) (count_over_time(ALERTS[{window}s]))", at=end)
    relay = {(s.labels["alertname"], s.labels["alertstate"]) for s in seen if s.labels["alertname"] in ALL_ALERTS}
    assert relay == set()
    # The v1 file's AI orchestrator alerts are outside loadsim's contract: no metrics of theirs exist.
    assert {s.labels["alertname"] for s in seen} <= {"AIOrchestratorMetricsMissing"}
    # The healthy ratio was measured, not absent: about 0.3% (sd 0.09%), far under 1%.
    ratio = stack.query("job:gmail_send_errors_rate:5m", at=end)
    assert len(ratio) == 1
    assert 0 < ratio[0].value < 0.007, ratio


@pytest.mark.stack
def test_scraped_error_incident_fires_inhibits_notifies_and_resolves(scrape_run: ScrapeRun):
    """error-rate-crit: both fire, Alertmanager suppresses the warning, PagerDuty's webhook pages, all resolve."""
    stack = scrape_run.stack
    wait(lambda: {ERR_WARN, ERR_CRIT} <= stack.firing(), 60, "warning and critical firing", stack)
    labels = {a["labels"]["alertname"]: a["labels"] for a in stack.prometheus_alerts()}
    # Inhibit rules 1 and 3 need these four labels equal on both alerts (the copy's fix, see deploy/relay/README.md).
    for key in ("service", "component", "provider", "action"):
        assert labels[ERR_WARN][key] == labels[ERR_CRIT][key], key

    def inhibited() -> tuple[dict[str, Any], dict[str, Any]] | None:
        critical, warning = stack.am_alert(ERR_CRIT), stack.am_alert(ERR_WARN)
        if critical is None or warning is None or warning["status"]["state"] != "suppressed":
            return None
        return critical, warning

    critical, warning = wait(inhibited, 15, "warning suppressed in Alertmanager", stack)
    assert critical["status"]["state"] == "active"
    assert warning["status"]["inhibitedBy"] == [critical["fingerprint"]]
    assert critical["receivers"][0]["name"] == "pagerduty-critical"

    page = stack.webhook.wait_for(lambda n: n.receiver == "pagerduty-critical" and ERR_CRIT in n.alertnames(), 15)
    assert page.status == "firing"
    assert page.body["receiver"] == "pagerduty-critical"
    assert page.body["groupLabels"] == {"alertname": ERR_CRIT, "component": "gmail", "service": "relay"}

    # The overlay ends OVERLAY_SECONDS after it began; both alerts resolve soon after (10 s windows).
    end = scrape_run.loadsim.event("overlay.end", timeout=OVERLAY_SECONDS + 10)
    wait(lambda: not ({ERR_WARN, ERR_CRIT} & set(stack.alert_states())), 40, "both alerts resolved", stack)
    resolved = stack.webhook.wait_for(
        lambda n: n.receiver == "pagerduty-critical" and ERR_CRIT in n.alertnames("resolved"), 30
    )
    assert resolved.status == "resolved"
    assert time.time() - unix(end) < 60


@pytest.fixture
def push_stack() -> Iterator[Stack]:
    require_stack()
    with Stack(alerts="v2") as stack:
        yield stack


@pytest.mark.stack
def test_pushed_error_incident_fires_and_the_group_is_deleted_at_exit(push_stack: Stack, tmp_path: Path):
    """The push path: loadsim pushes every second, Prometheus scrapes only the Pushgateway, the alert fires."""
    stack = push_stack
    profile = profile_toml("live-push", 8.0, 60.0, 90.0)
    child = Loadsim(tmp_path, profile, "--no-listen", "--pushgateway", stack.pushgateway.url, "--push-interval", "1s")
    try:
        child.event("push.start")

        def pushed() -> list[dict[str, Any]]:
            return [g for g in stack.pushgateway_groups() if g["labels"].get("job") == "relay_synth"]

        groups = wait(pushed, 15, "the pushed group", stack)
        assert [g["labels"] for g in groups] == [{"job": "relay_synth", "instance": "loadsim"}]
        # honor_labels: the pushed job and instance survive the scrape (not exported_job / exported_instance).
        series = wait(lambda: stack.query("action_exec_total"), 15, "pushed series in Prometheus", stack)
        assert {(s.labels["job"], s.labels["instance"]) for s in series} == {("relay_synth", "loadsim")}
        assert not stack.query('up{job="relay"}')  # nothing is scraped directly

        wait(lambda: ERR_CRIT in stack.firing(), 60, "critical firing from pushed metrics", stack)
        page = stack.webhook.wait_for(lambda n: n.receiver == "pagerduty-critical" and ERR_CRIT in n.alertnames(), 15)
        assert page.status == "firing"
    finally:
        code = child.stop()
    assert code == 0, child.err.read_text()[-2000:]
    # A clean exit makes a final push, then deletes the group.
    assert not [g for g in stack.pushgateway_groups() if g["labels"].get("job") == "relay_synth"]


class TestHelpers:
    """The two helpers the live tests lean on, without any daemon."""

    def test_webhook_receiver_records_each_post_under_its_path(self):
        with WebhookReceiver() as hooks:
            body = json.dumps({"status": "firing", "alerts": [{"status": "firing", "labels": {"alertname": "A"}}]})
            request = urllib.request.Request(hooks.url_for("slack-ops"), data=body.encode(), method="POST")
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.status == 200
            n = hooks.wait_for(lambda n: n.receiver == "slack-ops", timeout=5)
            assert (n.status, n.alertnames("firing"), n.alertnames("resolved")) == ("firing", {"A"}, set())
            with pytest.raises(TimeoutError, match=r"no matching notification within 0\.1s; received \[\('slack-ops'"):
                hooks.wait_for(lambda n: n.receiver == "pagerduty-critical", timeout=0.1)

    def test_wait_until_returns_the_first_truthy_value_and_is_bounded(self):
        calls = iter([0, None, ConnectionRefusedError(), 7])

        def step() -> int | None:
            value = next(calls)
            if isinstance(value, Exception):
                raise value
            return value

        assert wait_until(step, timeout=5, interval=0, ignore=(OSError,)) == 7
        start = time.monotonic()
        with pytest.raises(TimeoutError, match=r"never not met within 0\.2s; last: False"):
            wait_until(lambda: False, timeout=0.2, interval=0.05, what="never")
        assert time.monotonic() - start < 1
