"""Where the project's copy of the relay's observability config lives.

``deploy/relay`` of the checkout (recording rules, both alert files, Alertmanager
config, dashboards), or ``$LOADSIM_RELAY_CONFIG`` (the container image sets
``/app/deploy/relay``). verify, scale-rules, the drill's tests and the test stack
all read it from here.
"""

from __future__ import annotations

import os
from pathlib import Path

RELAY_CONFIG = Path(os.environ.get("LOADSIM_RELAY_CONFIG") or Path(__file__).resolve().parents[1] / "deploy" / "relay")
"""The relay's config directory: ``prometheus/``, ``alertmanager/``, ``grafana/``."""
PROMETHEUS = RELAY_CONFIG / "prometheus"
RECORDING_RULES = PROMETHEUS / "prometheus-recording.yml"
ALERTS = PROMETHEUS / "prometheus-alerts.yml"
ALERTS_V2 = PROMETHEUS / "prometheus-alerts-v2.yml"
