"""Letting promtool evaluate the relay's real rule files over a recorded run.

A recorded run becomes a ``promtool test rules`` input: every series with one
value per scrape (``stale`` where a scrape failed, as Prometheus marks it, then
``_`` for the scrapes after), and one expression test per evaluation minute
asking for the alerts firing then, expecting none. promtool reports every
expectation it could not meet with what it got, which is exactly the set of
alerts firing at that minute. Nothing here re-implements PromQL: the rules are
evaluated by Prometheus's own engine.

The generated files are valid YAML (JSON is a subset of it), so users can keep
them (``loadsim verify --export DIR``) and turn them into regression tests of
their own rules by replacing the expectations.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadsim.units import parse_duration
from loadsim.verify.recorder import ScrapeRecorder, SeriesKey

FIRING = 'count by (alertname) (ALERTS{alertstate="firing"})'
_BLOCK = re.compile(
    r'expr: "(?P<expr>(?:[^"\\]|\\.)*)", time: (?P<time>[0-9hms.]+),(?P<body>.*?)(?=\n\s*expr: |\Z)', re.DOTALL
)
_ALERTNAME = re.compile(r'alertname="([^"]+)"')


class PromtoolError(Exception):
    """promtool is missing or failed in a way that is not a test failure."""


def find_promtool() -> str:
    """The promtool binary (Debian's ``prometheus`` package ships it)."""
    path = shutil.which("promtool")
    if path is None:
        msg = "promtool not found: install Debian's prometheus package (scripts/setup-stack.sh does)"
        raise PromtoolError(msg)
    return path


def series_selector(key: SeriesKey, extra: dict[str, str]) -> str:
    """``name{label="value",...}`` for the promtool input."""
    name, labels = key
    items = {**dict(labels), **extra}
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(items.items()))
    return f"{name}{{{inner}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def encode_values(values: Sequence[float | None]) -> str:
    """Promtool's series notation, runs compressed: ``5x3`` is four 5s, ``_x2`` two gaps.

    The first gap after a value is ``stale`` (Prometheus marks a target's series stale
    when a scrape fails), the rest ``_`` (no sample).
    """
    out: list[str] = []
    i, n = 0, len(values)
    while i < n:
        v = values[i]
        j = i
        if v is None:
            if i > 0 and values[i - 1] is not None:
                out.append("stale")
                i += 1
                continue
            while j + 1 < n and values[j + 1] is None:
                j += 1
            count = j - i + 1
            out.append("_" if count == 1 else f"_x{count}")
        else:
            while j + 1 < n and values[j + 1] == v:
                j += 1
            text = _number(v)
            out.append(text if j == i else f"{text}x{j - i}")
        i = j + 1
    return " ".join(out)


def _number(v: float) -> str:
    return str(int(v)) if v == int(v) and abs(v) < 1e15 else repr(v)


@dataclass(frozen=True, slots=True)
class PromtoolCase:
    """One promtool test: a recorded run against rule files, evaluated every ``step`` seconds."""

    name: str
    recorder: ScrapeRecorder
    rule_files: tuple[Path, ...]
    step: float = 60.0
    evaluation_interval: float = 30.0
    """The relay's rule groups run every 30 s."""
    labels: tuple[tuple[str, str], ...] = (("job", "relay"), ("instance", "loadsim"))

    def document(self) -> dict[str, Any]:
        """The promtool test file as data."""
        interval = self.recorder.interval
        end = (len(self.recorder.scrapes) - 1) * interval
        extra = dict(self.labels)
        series = [
            {"series": series_selector(key, extra), "values": encode_values(values)}
            for key, values in sorted(self.recorder.series().items())
        ]
        times = [k * self.step for k in range(int(end // self.step) + 1)]
        return {
            "rule_files": [str(p.resolve()) for p in self.rule_files],
            "evaluation_interval": f"{self.evaluation_interval:g}s",
            "tests": [
                {
                    "name": self.name,
                    "interval": f"{interval:g}s",
                    "input_series": series,
                    "promql_expr_test": [{"expr": FIRING, "eval_time": f"{t:g}s", "exp_samples": []} for t in times],
                }
            ],
        }


def firing_by_time(case: PromtoolCase, workdir: Path, promtool: str | None = None) -> dict[float, set[str]]:
    """Run promtool on ``case``; returns the alerts firing at each evaluation time (only non-empty ones)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{_slug(case.name)}.test.yml"
    path.write_text(json.dumps(case.document(), indent=1) + "\n", encoding="utf-8")
    proc = subprocess.run(  # noqa: S603 - our own promtool, our own file
        [promtool or find_promtool(), "test", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode == 0:
        return {}
    if "FAILED:" not in proc.stdout and "FAILED:" not in proc.stderr:
        msg = f"promtool failed on {path}: {proc.stderr.strip() or proc.stdout.strip()}"
        raise PromtoolError(msg)
    return parse_failures(proc.stdout + proc.stderr)


def parse_failures(output: str) -> dict[float, set[str]]:
    """Alert names per evaluation time, from promtool's report of unmet expectations."""
    firing: dict[float, set[str]] = {}
    for m in _BLOCK.finditer(output):
        got = m.group("body").split("got:", 1)[-1]
        names = set(_ALERTNAME.findall(got))
        if names:
            firing.setdefault(parse_duration(m.group("time")), set()).update(names)
    return firing


def _slug(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9._-]+", "-", name).strip("-") or "case"
