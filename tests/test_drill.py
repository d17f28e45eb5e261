"""loadsim drill against a real Prometheus, Pushgateway and Alertmanager on loopback.

The stack runs the relay's rules time-scaled 30x (loadsim.testing.stack), so each
phase takes seconds instead of 15 minutes; the drill is told the same scale.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadsim.relayconfig import RELAY_CONFIG
from loadsim.testing.stack import Binaries, BinaryNotFoundError, Stack

pytestmark = pytest.mark.stack

SHARED_RELAY_CONFIG = Path(__file__).resolve().parents[2] / "shared" / "relay-config"


def binaries() -> Binaries:
    try:
        return Binaries.find()
    except BinaryNotFoundError as e:
        if os.environ.get("CI"):
            pytest.fail(str(e))
        pytest.skip(str(e))


def drill(stack: Stack, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
    card = tmp_path / "card.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadsim",
            "drill",
            "--prometheus",
            stack.prometheus.url,
            "--alertmanager",
            stack.alertmanager.url,
            "--time-scale",
            "30",
            "--no-listen",
            "--pushgateway",
            stack.pushgateway.url,
            "--push-interval",
            "1s",
            "--progress",
            "off",
            "--json",
            str(card),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return proc, json.loads(card.read_text()) if card.exists() else {}


@pytest.fixture
def stack() -> Iterator[Stack]:
    with Stack(alerts="v1", binaries=binaries()) as s:
        yield s


def test_drill_scores_six_of_six_with_the_project_rules(stack: Stack, tmp_path: Path) -> None:
    proc, card = drill(stack, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert card["score"] == 6
    phases = card["phases"]
    assert isinstance(phases, list)
    assert [p["passed"] for p in phases] == [True] * 6
    assert "warning: suppressed" in phases[4]["detail"]
    assert "score 6/6: A+" in proc.stdout


def test_original_v1_labels_fail_the_inhibition_phase(tmp_path: Path) -> None:
    """With the relay's original prometheus-alerts.yml the critical cannot inhibit the warning (5/6)."""
    if not SHARED_RELAY_CONFIG.is_dir():
        pytest.skip("../shared/relay-config is not here")
    relay = tmp_path / "relay"
    shutil.copytree(RELAY_CONFIG, relay)
    original = SHARED_RELAY_CONFIG / "prometheus" / "prometheus-alerts.yml"
    shutil.copy(original, relay / "prometheus" / "prometheus-alerts.yml")
    with Stack(alerts="v1", relay_dir=relay, binaries=binaries()) as s:
        proc, card = drill(s, tmp_path)
    assert proc.returncode == 1
    assert card["score"] == 5
    phases = card["phases"]
    assert isinstance(phases, list)
    assert [p["number"] for p in phases if not p["passed"]] == [5]
    assert "warning: active" in phases[4]["detail"]
