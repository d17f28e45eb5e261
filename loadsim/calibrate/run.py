"""One calibration, end to end: read the window, fit, and write the profile with its report and plot.

The profile goes where ``--out`` says; the fit report (Markdown and JSON) and the plot
go beside it, named after it: ``profile.toml`` gives ``profile.fit.md``,
``profile.fit.json`` and ``profile.fit.png``.
"""

from __future__ import annotations

from pathlib import Path

from loadsim.calibrate import plot, write_profile, write_report
from loadsim.calibrate.fit_rate import Shape
from loadsim.calibrate.read import read
from loadsim.calibrate.result import Calibration, calibrate
from loadsim.net import LOOPBACK_ONLY, Reach
from loadsim.report.prom import Prometheus


def outputs(out: Path) -> dict[str, Path]:
    """The four files a calibration writes, by kind."""
    stem = out.name.removesuffix(".toml")
    return {
        "profile": out,
        "report": out.with_name(f"{stem}.fit.md"),
        "json": out.with_name(f"{stem}.fit.json"),
        "plot": out.with_name(f"{stem}.fit.png"),
    }


def run(  # noqa: PLR0917 - the command's inputs, each once
    url: str,
    window: tuple[float, float],
    out: Path,
    shape: Shape = "auto",
    name: str = "calibrated",
    reach: Reach = LOOPBACK_ONLY,
) -> tuple[Calibration, dict[str, Path]]:
    """Calibrate from the Prometheus at ``url`` over ``window`` (start, end); SourceError when it cannot be fitted.

    ``reach`` says where its connections may go: loopback, unless the host was allowed by name.
    """
    cal = calibrate(read(Prometheus(url, reach=reach), *window), shape, name)
    files = outputs(out)
    write_report.write(cal, files["report"], files["json"])
    plot.draw(cal, files["plot"])
    write_profile.write(cal, files["profile"], files["report"])
    return cal, files
