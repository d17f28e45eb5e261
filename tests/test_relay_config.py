"""The relay's config files as loadsim ships them: valid for the real tools, and changed only where documented.

``deploy/relay`` holds copies of the relay's Prometheus rules, Alertmanager config
and Grafana dashboards (see ``deploy/relay/README.md``). These tests check each
file with the tool that will load it (``promtool``, ``amtool``, a JSON parser),
check the time-scaled rule copies and the derived test Alertmanager config the
same way, prove with Alertmanager itself that the derived config routes and
inhibits exactly as the file does, and, when the originals are at hand
(``../shared/relay-config``), that the copies differ from them only where the
README says.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_binary

from loadsim.testing.stack import (
    DEFAULT_FACTOR,
    DEFAULT_MIN_RANGE,
    Alertmanager,
    BinaryNotFoundError,
    derive_alertmanager_config,
    find_binary,
    receiver_names,
    scaled_timer,
    split_top_level,
)
from loadsim.units import parse_duration
from loadsim.verify.scaling import write_scaled

ROOT = Path(__file__).resolve().parents[1]
RELAY = ROOT / "deploy" / "relay"
ORIGINALS = ROOT.parent / "shared" / "relay-config"
RULE_FILES = sorted((RELAY / "prometheus").glob("*.yml"))
DASHBOARDS = sorted((RELAY / "grafana").glob("*.json"))
AM_FILE = RELAY / "alertmanager" / "alertmanager.yml"
WEBHOOK = "http://127.0.0.1:9"
"""A receiver URL nothing listens on: these tests never send a notification."""
_TIMER_LINE = re.compile(r"^[ \t]*(group_wait|group_interval|repeat_interval):[ \t]*(\S+).*\n?", re.MULTILINE)


def tool(name: str) -> str:
    return require_binary(name)


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def derived() -> str:
    return derive_alertmanager_config(AM_FILE.read_text(), WEBHOOK, DEFAULT_FACTOR)


def without_timers(text: str) -> str:
    return _TIMER_LINE.sub("", text)


def uncommented(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def timers(text: str) -> list[tuple[str, float]]:
    return [(key, parse_duration(value.strip("'\""))) for key, value in _TIMER_LINE.findall(text)]


def test_the_files_are_there():
    assert [p.name for p in RULE_FILES] == [
        "prometheus-alerts-v2.yml",
        "prometheus-alerts.yml",
        "prometheus-recording.yml",
    ]
    assert len(DASHBOARDS) == 3
    assert AM_FILE.is_file()


class TestPrometheusRules:
    @pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
    def test_promtool_accepts_the_file(self, path: Path):
        proc = run(tool("promtool"), "check", "rules", str(path))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "SUCCESS" in proc.stdout

    def test_promtool_accepts_the_time_scaled_copies(self, tmp_path: Path):
        """The copies Stack evaluates: 30x faster, ranges never under 5 s, groups every second."""
        copies = write_scaled(RULE_FILES, tmp_path, DEFAULT_FACTOR, min_range=DEFAULT_MIN_RANGE, evaluation_interval=1)
        proc = run(tool("promtool"), "check", "rules", *map(str, copies))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.count("SUCCESS") == len(copies)
        alerts = (tmp_path / "prometheus-alerts.yml").read_text()
        assert "[5m]" not in alerts
        assert "[10s]" in alerts
        assert "for: 20s" in alerts
        assert "interval: 1s" in (tmp_path / "prometheus-recording.yml").read_text()


class TestAlertmanagerConfig:
    def test_amtool_accepts_the_file(self):
        proc = run(tool("amtool"), "check-config", str(AM_FILE))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert " - 5 inhibit rules\n" in proc.stdout
        assert " - 4 receivers\n" in proc.stdout

    def test_amtool_accepts_the_derived_config(self, tmp_path: Path):
        path = tmp_path / "alertmanager.yml"
        path.write_text(derived())
        proc = run(tool("amtool"), "check-config", str(path))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert " - 5 inhibit rules\n" in proc.stdout
        assert " - 4 receivers\n" in proc.stdout

    def test_derived_config_keeps_the_inhibit_rules_and_route_text(self):
        original, copy = split_top_level(AM_FILE.read_text()), split_top_level(derived())
        assert copy["inhibit_rules"] == original["inhibit_rules"]
        assert uncommented(copy["global"]) == uncommented(original["global"])
        assert without_timers(copy["route"]) == without_timers(original["route"])
        assert "templates" not in copy

    def test_derived_timers_are_scaled_with_a_one_second_floor(self):
        original = timers(split_top_level(AM_FILE.read_text())["route"])
        copy = timers(split_top_level(derived())["route"])
        assert [k for k, _ in copy] == [k for k, _ in original]
        assert [v for _, v in copy] == [parse_duration(scaled_timer(f"{v}s", DEFAULT_FACTOR)) for _, v in original]
        # 10s and 30s group_wait would be 0.33 s and 1 s: group_wait 0s races inhibition, so 1 s is the floor.
        assert [v for k, v in copy if k == "group_wait"] == [1, 1, 10, 30]

    def test_derived_receivers_are_webhooks_with_the_same_names(self):
        names = receiver_names(split_top_level(AM_FILE.read_text())["receivers"])
        assert names == ["slack-default", "pagerduty-critical", "slack-ops", "slack-info"]
        line = split_top_level(derived())["receivers"]
        receivers = json.loads(line.removeprefix("receivers:"))
        assert receivers == [
            {"name": n, "webhook_configs": [{"url": f"{WEBHOOK}/{n}", "send_resolved": True}]} for n in names
        ]

    def test_amtool_shows_the_same_routing_tree(self, tmp_path: Path):
        path = tmp_path / "alertmanager.yml"
        path.write_text(derived())
        amtool = tool("amtool")
        original = run(amtool, "config", "routes", "show", f"--config.file={AM_FILE}")
        copy = run(amtool, "config", "routes", "show", f"--config.file={path}")
        assert original.returncode == copy.returncode == 0, original.stderr + copy.stderr
        assert copy.stdout == original.stdout
        assert 'severity="critical"}  receiver: pagerduty-critical' in copy.stdout


@pytest.fixture
def loaded() -> Iterator[tuple[str, str]]:
    """The file and the derived config as Alertmanager loads them, re-marshalled: formatting cannot hide a change."""
    try:
        binary = find_binary("alertmanager")
    except BinaryNotFoundError as e:
        if os.environ.get("CI"):
            pytest.fail(f"{e} (CI must run scripts/setup-stack.sh)")
        pytest.skip(str(e))
    with Alertmanager(AM_FILE.read_text(), binary) as original, Alertmanager(derived(), binary) as copy:
        yield original.loaded_config(), copy.loaded_config()


@pytest.mark.stack
def test_alertmanager_loads_the_same_inhibit_rules_and_routes_from_the_derived_config(loaded: tuple[str, str]):
    original, copy = (split_top_level(text) for text in loaded)
    assert copy["inhibit_rules"] == original["inhibit_rules"]
    assert copy["inhibit_rules"].count("source_match") == 5
    assert copy["global"] == original["global"]
    assert without_timers(copy["route"]) == without_timers(original["route"])
    assert [k for k, _ in timers(copy["route"])] == [k for k, _ in timers(original["route"])]
    assert "webhook_configs" in copy["receivers"]
    assert "slack_configs" not in copy["receivers"]
    assert "pagerduty_configs" not in copy["receivers"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_grafana_dashboard_parses(path: Path):
    dashboard = json.loads(path.read_text())
    assert isinstance(dashboard, dict)
    assert dashboard


needs_originals = pytest.mark.skipif(not ORIGINALS.is_dir(), reason=f"{ORIGINALS} is not here")


@needs_originals
class TestAgainstTheOriginals:
    """The copies differ from ``../shared/relay-config`` only as ``deploy/relay/README.md`` lists."""

    def test_amtool_rejects_the_original_alertmanager_config(self):
        """Why the copy changed: Alertmanager 0.25 has no route timers under ``global:``."""
        proc = run(tool("amtool"), "check-config", str(ORIGINALS / "alertmanager" / "alertmanager.yml"))
        assert proc.returncode != 0
        for field in ("group_wait", "group_interval", "repeat_interval"):
            assert f"field {field} not found in type config.plain" in proc.stdout + proc.stderr

    def test_alertmanager_copy_changes_only_global(self):
        original = split_top_level((ORIGINALS / "alertmanager" / "alertmanager.yml").read_text())
        copy = split_top_level(AM_FILE.read_text())
        assert copy.keys() == original.keys()
        for key in original.keys() - {"", "global"}:
            assert copy[key] == original[key], key
        # global: the three route timers (which the root route already sets) are gone, the rest stays.
        assert timers(original["global"]) == [("group_wait", 10), ("group_interval", 300), ("repeat_interval", 14400)]
        assert timers(copy["global"]) == []
        assert timers(original["route"])[:3] == timers(original["global"])
        assert "resolve_timeout: 5m" in copy["global"]

    def test_alerts_copy_changes_only_the_critical_error_rate_labels(self):
        """Why: inhibit rules 1 and 3 need service/component/provider/action equal on critical and warning."""
        original = (ORIGINALS / "prometheus" / "prometheus-alerts.yml").read_text().splitlines()
        copy = (RELAY / "prometheus" / "prometheus-alerts.yml").read_text().splitlines()
        start = original.index("  - alert: GmailSendHighErrorRateCritical")
        labels = original.index("    labels:", start)
        annotations = original.index("    annotations:", labels)
        removed: list[str] = []
        added: list[str] = []
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=original, b=copy, autojunk=False).get_opcodes():
            if tag == "equal":
                continue
            assert labels < i1, (tag, original[i1:i2], copy[j1:j2])
            assert i2 <= annotations, (tag, original[i1:i2], copy[j1:j2])
            removed += original[i1:i2]
            added += [line.strip() for line in copy[j1:j2] if not line.strip().startswith("#")]
        assert removed == ["      component: gmail_adapter"]
        assert added == ["service: relay", "component: gmail", "provider: google", "action: gmail.send"]

    @pytest.mark.parametrize(
        "name",
        [
            "LICENSE",
            "prometheus/prometheus-recording.yml",
            "prometheus/prometheus-alerts-v2.yml",
            *(f"grafana/{p.name}" for p in DASHBOARDS),
        ],
    )
    def test_other_files_are_identical(self, name: str):
        assert (RELAY / name).read_bytes() == (ORIGINALS / name).read_bytes()

    def test_no_file_is_missing_or_extra(self):
        def listing(root: Path) -> set[str]:
            return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} - {"README.md"}

        assert listing(RELAY) == listing(ORIGINALS)
