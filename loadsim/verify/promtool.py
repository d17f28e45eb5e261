"""Letting promtool evaluate the relay's real rule files over a recorded run.

A recorded run becomes a ``promtool test rules`` input: every series with one
value per scrape (``stale`` where a scrape failed, as Prometheus marks it, then
``_`` for the scrapes after), and one expression test at the end of the run
asking, per alert, for the first time it was firing::

    min by (alertname) (min_over_time(timestamp(ALERTS{alertstate="firing"})[END:30s]))

expecting nothing. promtool reports the expectation it could not meet with what
it got (at full precision), which is exactly the alerts that fired and when.
Nothing here re-implements PromQL: the rules are evaluated by Prometheus's own
engine, over the whole run, at the rule groups' 30 s interval.

The generated files are valid YAML (JSON is a subset of it), so users can keep
them (``loadsim verify --export DIR``) and turn them into regression tests of
their own rules by replacing the expectations.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from loadsim.verify.recorder import ScrapeRecorder, SeriesKey

FIRST_FIRING = 'min by (alertname) (min_over_time(timestamp(ALERTS{{alertstate="firing"}})[{end}:{step}]))'
_BLOCK = re.compile(
    r'expr: "(?P<expr>(?:[^"\\]|\\.)*)", time: (?P<time>[0-9hms.]+),(?P<body>.*?)(?=\n\s*expr: |\Z)', re.DOTALL
)
_GOT = re.compile(r'\{alertname="([^"]+)"\} ([0-9.eE+-]+)')


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
        # promtool caps the samples one query may load: past ~1000 subquery steps, step coarser
        # (48 hours: every 3 minutes, which is all a background run needs).
        step = max(
            self.evaluation_interval, math.ceil(end / 1000 / self.evaluation_interval) * self.evaluation_interval
        )
        query = FIRST_FIRING.format(end=f"{end:g}s", step=f"{step:g}s")
        return {
            "rule_files": [str(p.resolve()) for p in self.rule_files],
            "evaluation_interval": f"{self.evaluation_interval:g}s",
            "group_eval_order": group_names(self.rule_files),
            "tests": [
                {
                    "name": self.name,
                    "interval": f"{interval:g}s",
                    "input_series": series,
                    "promql_expr_test": [{"expr": query, "eval_time": f"{end:g}s", "exp_samples": []}],
                }
            ],
        }


def rule_file_problems(rule_files: Sequence[Path], promtool: str) -> dict[Path, str]:
    """What ``promtool check rules`` finds wrong with each file, checked before a run (empty when all are fine).

    The file's own words from promtool (its YAML error, the empty group name, the PromQL
    that does not parse), on one line, so a bad file is refused up front instead of
    failing the matrix after its runs.
    """
    out: dict[Path, str] = {}
    for path in dict.fromkeys(rule_files):
        proc = subprocess.run(  # noqa: S603 - our own promtool on a file named by the user
            [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
        )
        if proc.returncode != 0:
            lines = [line.strip() for line in (proc.stderr + proc.stdout).splitlines()]
            found = [line.removeprefix(f"{path}: ") for line in lines if line and line != "FAILED:"]
            found = [line for line in dict.fromkeys(found) if not line.startswith("Checking ")]
            out[path] = "; ".join(found)[:400] or f"promtool check rules exited {proc.returncode}"
    return out


def group_names(rule_files: Sequence[Path]) -> list[str]:
    """Every rule group's name, in the order the files and their groups are given, each once.

    Without ``group_eval_order`` promtool evaluates the groups at each step in a random
    order (it sorts a Go map's groups with equal keys), so an alert that reads a recording
    rule of another group sees this step's value on some runs and the last step's on others,
    and the first firing moves by one evaluation interval from run to run (5 runs in 40 on
    a two-group file, measured with Debian's promtool 2.42). Given in file order, it is
    the same every run, and the same order :mod:`loadsim.sensitivity.evaluate` uses:
    list the recording rules before the alerts that read them.
    """
    names: list[str] = []
    for path in rule_files:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        names += [str(g["name"]) for g in doc.get("groups", []) if str(g["name"]) not in names]
    return names


def first_firing(case: PromtoolCase, workdir: Path, promtool: str | None = None) -> dict[str, float]:
    """Run promtool on ``case``; returns each alert that fired and the run time it first fired at."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{_slug(case.name)}.test.yml"
    path.write_text(json.dumps(case.document(), indent=1) + "\n", encoding="utf-8")
    proc = subprocess.run(  # noqa: S603 - our own promtool, our own file
        [promtool or find_promtool(), "test", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode == 0:
        return {}
    output = proc.stdout + proc.stderr
    if "FAILED:" not in output or "got:" not in output:
        msg = f"promtool failed on {path}: {proc.stderr.strip() or proc.stdout.strip()}"
        raise PromtoolError(msg)
    return parse_first_firing(output)


def parse_first_firing(output: str) -> dict[str, float]:
    """``{alertname: first firing time}`` from promtool's report of the unmet expectation."""
    got = output.split("got:", 1)[1]
    return {name: float(value) for name, value in _GOT.findall(got)}


def _slug(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9._-]+", "-", name).strip("-") or "case"
