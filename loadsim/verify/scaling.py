"""Time-scaled copies of rule files, for drills and live tests that must finish in minutes.

Production rules need 15 minutes or more to fire (``for: 10m`` over 5-minute
windows). A scaled copy divides every time constant by ``factor``: range
selectors (``[5m]`` -> ``[5s]`` at 60x, never below ``min_range``), ``for:``
durations (``10m`` -> ``10s``) and group ``interval:`` (``30s`` -> the
evaluation interval given). Thresholds, expressions, labels, recording-rule
names and annotations are untouched, so a scaled rule fires on the same
condition, sooner.

What it changes: a scaled 5-minute window holds far fewer samples (5 at a 1 s
scrape instead of 20 at 15 s) and far fewer sends, so ratios are noisier; drive
scaled rules at a higher rate (hundreds of sends/s) for the same confidence.
And ``rate()`` needs two samples in its range, hence ``min_range``.
"""

from __future__ import annotations

import re
from pathlib import Path

from loadsim.files import MIB, read_text

RULES_LIMIT = 16 * MIB
"""Largest rule file read (the relay's are a few KiB)."""

_RANGE = re.compile(r"\[((?:\d+(?:ms|[smhdwy]))+)\]")
_PROM_PART = re.compile(r"(\d+)(ms|[smhdwy])")
_PROM_WHOLE = re.compile(r"(?:\d+(?:ms|[smhdwy]))+")
_PROM_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31_536_000.0}


def prom_seconds(text: str) -> float:
    """Seconds in a Prometheus duration (``5m``, ``1h30m``, ``2w``, ``1y``); ValueError otherwise."""
    if text == "0":
        return 0.0
    if not _PROM_WHOLE.fullmatch(text):
        msg = f"expected a Prometheus duration such as 5m, 1h30m or 2w, got {text!r}"
        raise ValueError(msg)
    return sum(int(n) * _PROM_UNIT[u] for n, u in _PROM_PART.findall(text))


_FOR = re.compile(r"^(\s*for:\s*)(\S+)\s*$", re.MULTILINE)
_INTERVAL = re.compile(r"^(\s*interval:\s*)(\S+)\s*$", re.MULTILINE)


def go_duration(seconds: float) -> str:
    """A Prometheus duration: whole seconds, or milliseconds below 10 s when needed."""
    if seconds >= 10 or seconds == int(seconds):
        return f"{round(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def scale_rules(text: str, factor: float, *, min_range: float = 5.0, evaluation_interval: float = 1.0) -> str:
    """The rule file ``text`` with every time constant divided by ``factor``."""
    if factor <= 0:
        msg = f"factor must be > 0, got {factor}"
        raise ValueError(msg)

    def scaled_range(m: re.Match[str]) -> str:
        return f"[{go_duration(max(prom_seconds(m.group(1)) / factor, min_range))}]"

    def scaled_for(m: re.Match[str]) -> str:
        return f"{m.group(1)}{go_duration(prom_seconds(m.group(2).strip(chr(34) + chr(39))) / factor)}"

    def scaled_interval(m: re.Match[str]) -> str:
        return f"{m.group(1)}{go_duration(evaluation_interval)}"

    text = _RANGE.sub(scaled_range, text)
    text = _FOR.sub(scaled_for, text)
    return _INTERVAL.sub(scaled_interval, text)


def write_scaled(sources: list[Path], out_dir: Path, factor: float, **kwargs: float) -> list[Path]:
    """Write scaled copies of ``sources`` into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for src in sources:
        dest = out_dir / src.name
        header = f"# Time-scaled copy ({factor:g}x faster) of {src.name}, written by loadsim; do not edit.\n"
        dest.write_text(header + scale_rules(read_text(src, RULES_LIMIT), factor, **kwargs), encoding="utf-8")
        written.append(dest)
    return written
