"""``loadsim report``: the observation report for a window, from a Prometheus (and Alertmanager), checked for real.

The technical points come from the window's figures (:mod:`loadsim.report.figures`);
the operational points are checked against the real things where that can be done:
the drill's score card, Alertmanager's loaded routing (each relay alert's labels run
through ``amtool config routes test``, which routes without notifying anyone), the
runbooks each alert names, and every panel query of the relay's dashboards run over
the window.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from loadsim.files import MIB, InputFileError, read_text
from loadsim.net import Reach
from loadsim.relayconfig import ALERTS, RECORDING_RULES, RELAY_CONFIG
from loadsim.report import document, figures, readiness, render
from loadsim.report.plots import draw
from loadsim.report.prom import Alertmanager, Prometheus, SourceError


@dataclass(frozen=True, slots=True)
class Inputs:
    """What ``loadsim report`` reads."""

    prometheus: str
    start: float
    end: float
    out: Path
    alertmanager: str | None = None
    drill: Path | None = None
    runbooks: Path | None = None
    dashboards: Path | None = RELAY_CONFIG / "grafana"
    rules: Sequence[Path] = field(default_factory=lambda: (RECORDING_RULES, ALERTS))
    step: float = 60.0
    title: str = "Gmail rich email: observation report"
    source: str = ""
    """What the window is, for the report (default: the Prometheus URL)."""
    allowed: frozenset[str] = frozenset()
    """Hosts (``--allow-host``) the report may reach beyond loopback."""

    def reach(self, url: str) -> Reach:
        """The reach of a client of ``url``: beyond loopback only for an allowed host."""
        return Reach.of(urlsplit(url).hostname or "", self.allowed)

    @staticmethod
    def rules_default() -> tuple[Path, ...]:
        """The relay's recording rules and its v1 alert file."""
        return (RECORDING_RULES, ALERTS)


INPUT_LIMIT = 16 * MIB
"""Largest rule file, dashboard or score card read (the relay's largest dashboard is about 60 KiB)."""


def _read(path: Path) -> str:
    """A named input's text, read by :mod:`loadsim.files` (regular files only, bounded); SourceError if not."""
    try:
        return read_text(path, INPUT_LIMIT)
    except InputFileError as e:
        raise SourceError(f"{path}: {e}") from None


def alert_rules(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Every alerting rule in ``paths`` (name, labels, annotations)."""
    out = []
    for path in paths:
        doc = yaml.safe_load(_read(path)) or {}
        for group in doc.get("groups", []):
            out += [r for r in group.get("rules", []) if "alert" in r]
    return out


def recording_rules(paths: Sequence[Path]) -> dict[str, str]:
    """Recorded name -> expression, for every recording rule in ``paths``."""
    out: dict[str, str] = {}
    for path in paths:
        doc = yaml.safe_load(_read(path)) or {}
        for group in doc.get("groups", []):
            out |= {r["record"]: str(r["expr"]).strip() for r in group.get("rules", []) if "record" in r}
    return out


def expand(expr: str, recorded: dict[str, str], depth: int = 4) -> str:
    """``expr`` with each bare recorded name replaced by its expression (a backfilled window has no recorded series)."""
    for _ in range(depth):
        changed = expr
        for name, body in sorted(recorded.items(), key=lambda kv: -len(kv[0])):
            changed = re.sub(rf"(?<![\w:]){re.escape(name)}(?![\w:{{])", f"({body})", changed)
        if changed == expr:
            break
        expr = changed
    return expr


def panel_queries(directory: Path) -> dict[str, str]:
    """``dashboard / panel`` -> its first query, for every dashboard JSON under ``directory``."""
    out: dict[str, str] = {}
    for path in sorted(p for p in directory.glob("*.json") if p.is_file()):  # a FIFO among them is no dashboard
        doc = json.loads(_read(path))
        board = doc.get("dashboard", doc)
        for panel in board.get("panels", []):
            exprs = [t.get("expr") for t in panel.get("targets", []) if t.get("expr")]
            if exprs:
                out[f"{board.get('title', path.stem)} / {panel.get('title', '?')}"] = exprs[0]
    return out


_GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "${__rate_interval}": "5m", "$__range": "1h"}


def dashboards_check(
    prom: Prometheus, directory: Path, recorded: dict[str, str], start: float, end: float
) -> dict[str, bool]:
    """Panel -> whether its query returns data in the window."""
    result = {}
    for panel, query in panel_queries(directory).items():
        expr = query
        for var, value in _GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        try:
            series = prom.range(expand(expr, recorded), start, end, max((end - start) / 60, 60.0))
        except SourceError:
            series = []
        result[panel] = any(not math.isnan(v) for s in series for _, v in s.points)
    return result


def routing_check(am: Alertmanager, rules: list[dict[str, Any]]) -> tuple[dict[str, str] | None, str]:
    """Alert -> the receiver Alertmanager's loaded config routes it to (by ``amtool config routes test``)."""
    amtool = shutil.which("amtool")
    if amtool is None:
        return None, "amtool is not installed"
    config = am.status().get("config", {}).get("original")
    if not config:
        return None, "Alertmanager did not return its configuration"
    default = _default_receiver(config)
    routes = {}
    with tempfile.TemporaryDirectory(prefix="loadsim-report-") as tmp:
        path = Path(tmp) / "alertmanager.yml"
        path.write_text(config, encoding="utf-8")
        for rule in rules:
            labels = {"alertname": rule["alert"], **{k: str(v) for k, v in (rule.get("labels") or {}).items()}}
            args = [
                amtool,
                "config",
                "routes",
                "test",
                f"--config.file={path}",
                *(f"{k}={v}" for k, v in labels.items()),
            ]
            proc = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)  # noqa: S603
            receiver = proc.stdout.strip() if proc.returncode == 0 else ""
            routes[rule["alert"]] = "" if receiver in ("", default) else receiver
    return routes, ""


def _default_receiver(config: str) -> str:
    doc = yaml.safe_load(config) or {}
    return str((doc.get("route") or {}).get("receiver", ""))


def runbooks_check(rules: list[dict[str, Any]], root: Path) -> tuple[dict[str, str], set[str]]:
    """Alert -> runbook_url, and which of those files exist under ``root``."""
    urls = {r["alert"]: str((r.get("annotations") or {}).get("runbook_url", "")) for r in rules}
    present = {u.split("#", 1)[0] for u in urls.values() if u and (root / u.split("#", 1)[0]).is_file()}
    return urls, present


def observe(inputs: Inputs) -> tuple[document.Report, dict[str, Path]]:
    """Read the window, score it, write the four files; returns the report and the files."""
    prom = Prometheus(inputs.prometheus, reach=inputs.reach(inputs.prometheus))
    prom.check()
    f = figures.read(prom, inputs.start, inputs.end, inputs.step)
    if f.missing:
        raise SourceError(
            f"{inputs.prometheus}: {'; '.join(f.missing)} "
            f"from {document.iso(inputs.start)} to {document.iso(inputs.end)}"
        )
    v = f.values
    runs = v.get("controller_runs", {})
    window = readiness.Window(
        controller_runs=sum(runs.values()) or None,
        controller_ok=runs.get("ok"),
        error_ratio_p95=v["error_ratio"]["p95"],
        latency_p95_p95=v["latency_p95"]["p95"],
        violations=[(x["start"], x["end"], x["what"]) for x in v["violations"]],
        mime_p95_max=v["mime_p95"]["p95"],
        unexpected_codes=v["unexpected_codes"],
    )
    rules = alert_rules(inputs.rules)
    recorded = recording_rules(inputs.rules)
    card = json.loads(_read(inputs.drill)) if inputs.drill is not None else None
    am_alerts = None
    if inputs.alertmanager is not None:
        am = Alertmanager(inputs.alertmanager, reach=inputs.reach(inputs.alertmanager))
        am_alerts = am.alerts()
        routes, why = routing_check(am, rules)
    else:
        routes, why = None, "no Alertmanager given (--alertmanager URL)"
    urls, present = runbooks_check(rules, inputs.runbooks) if inputs.runbooks is not None else ({}, set())
    panels = (
        dashboards_check(prom, inputs.dashboards, recorded, inputs.start, inputs.end)
        if inputs.dashboards is not None
        else None
    )
    items = [
        *readiness.technical(window),
        readiness.drill_item(card, str(inputs.drill) if inputs.drill else None),
        readiness.routing_item(routes, why),
        readiness.runbook_item(urls, str(inputs.runbooks) if inputs.runbooks else None, present),
        readiness.dashboards_item(panels, "no dashboards given (--dashboards DIR)"),
    ]
    report = document.build(
        document.Report(
            inputs.title, inputs.source or inputs.prometheus, f, readiness.Readiness(tuple(items)), card, am_alerts
        )
    )
    return report, render.write(report, draw(f), inputs.out)
