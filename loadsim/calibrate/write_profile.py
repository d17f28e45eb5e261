"""The calibrated profile as TOML, each value with its standard error (or why it is held) beside it.

Written by hand rather than with a TOML library: the schema is fixed and small, and the
comments after each value (``± 0.0004 s``) are the point, which dumpers drop. The text
is read back and validated as any profile is (:func:`loadsim.profile.parse_profile`)
before it is written, so a calibration never leaves a file ``loadsim run`` refuses.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from loadsim.calibrate.estimate import Estimate
from loadsim.calibrate.read import iso
from loadsim.calibrate.result import Calibration
from loadsim.profile import DiurnalSpec, Profile, StepsSpec, parse_profile
from loadsim.redaction import redact


def _number(value: float) -> str:
    """A TOML float with 6 significant digits (``1e-06`` and ``0.25`` alike)."""
    text = f"{value:.6g}"
    return text if any(ch in text for ch in ".en") else f"{text}.0"


def _comment(e: Estimate | None) -> str:
    if e is None:
        return ""
    if e.se is None:
        return f"  # {e.how}"
    unit = f" {e.unit}" if e.unit and e.unit not in ("", "%") else ""
    return f"  # ± {e.se:.2g}{unit} ({e.how})"


def render(cal: Calibration, fit_report: str) -> str:
    """The profile's TOML text."""
    p = cal.profile
    w = cal.window
    by_key = {e.key: e for e in cal.estimates}
    lines = [
        f"# Calibrated by `loadsim calibrate` from {w.prometheus},",
        f"# {iso(w.start)} to {iso(w.end)}: {w.hours} hours, {w.sends:,.0f} sends.",
        "# Each fitted value carries its standard error in a comment; held values say why.",
        f"# Goodness of fit and the observed-against-fitted tables: {fit_report}",
        f'name = "{p.name}"',
        f'description = "{p.description}"',
        f"duration = {_number(p.duration)}  # seconds ({w.hours}h, the window)",
        f"seed = {p.seed}",
        f'arrivals = "{p.arrivals.value}"',
        "",
        "[[schedule]]",
    ]
    segment = p.schedule[0]
    if isinstance(segment, DiurnalSpec):
        lines.append('kind = "diurnal"  # ' + cal.rate.why)
        for name in ("trough", "peak", "peak_hour", "sharpness", "weekend_factor"):
            value = getattr(segment, name)
            lines.append(f"{name} = {_number(value)}{_comment(by_key.get(f'schedule.diurnal.{name}'))}")
    else:
        assert isinstance(segment, StepsSpec), segment
        lines.append(f'kind = "steps"  # {cal.rate.why}')
        lines.append(f"step = {_number(segment.step)}  # one rate (sends/s) per hour of the window")
        rates = ", ".join(_number(r) for r in segment.rates)
        lines.append(f"rates = [{rates}]")
    lines += ["", "[engine]", f"virtual_start = {iso(w.start)}  # virtual runs replay the window's calendar"]
    model = p.model
    for section, params in (
        ("latency", model.latency),
        ("mime", model.mime),
        ("attachments", model.attachments),
        ("inline", model.inline),
        ("sanitization", model.sanitization),
        ("oauth", model.oauth),
    ):
        lines += ["", f"[model.{section}]"]
        lines += [
            f"{f.name} = {_number(getattr(params, f.name))}{_comment(by_key.get(f'model.{section}.{f.name}'))}"
            for f in dataclasses.fields(params)
        ]
    lines += ["", "[model.errors]  # probability per send of each way a send fails; ok takes the rest"]
    lines += [f"{k} = {_number(v)}{_comment(by_key.get(f'model.errors.{k}'))}" for k, v in model.errors.items()]
    ctl = p.controller
    lines += [
        "",
        "[controller]",
        'mode = "heartbeat"',
        f"interval = {_number(ctl.interval)}{_comment(by_key.get('controller.interval'))}",
        f'result = "{ctl.result}"',
        f"percent = {ctl.percent}{_comment(by_key.get('controller.percent'))}",
        (
            f"failure_probability = {_number(ctl.failure_probability)}"
            f"{_comment(by_key.get('controller.failure_probability'))}"
        ),
    ]
    return "\n".join(lines) + "\n"


def validated(text: str, source: str) -> Profile:
    """The text read back as a profile (ConfigError if it is not one: a bug, never silently written)."""
    data: dict[str, Any] = tomllib.loads(text)
    return parse_profile(data, source)


def write(cal: Calibration, out: Path, fit_report: Path) -> Path:
    """Render, validate and write the profile to ``out`` (whole, then renamed into place)."""
    text = redact(render(cal, fit_report.name))  # its comments name the source
    validated(text, str(out))
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out
