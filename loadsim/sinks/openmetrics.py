"""A run's series as timestamped OpenMetrics, streamed to disk, for ``promtool tsdb create-blocks-from openmetrics``.

Called after every engine window (like the verify recorder), it takes one scrape
of the given collectors every ``interval`` of run time (15 s, the relay's scrape
interval) and writes each sample with the scrape's Unix timestamp. OpenMetrics
forbids interleaving metric families, and a 48-hour run at 15 s is about two
million samples, so nothing is held in memory: each family's lines go to a
temporary file of their own as the run goes, and :meth:`OpenMetricsWriter.finish`
joins them, each family after its ``# TYPE`` and ``# HELP`` lines, then ``# EOF``.
Timestamps only grow within a series (a backfilled block must not hold
out-of-order samples), and a family missing from a scrape (the metrics-missing
overlay, a controller whose series vanished) simply has no sample at that time.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString

from loadsim.outputs import open_output

Collect = Callable[[], Iterable[Metric]]
"""What one scrape reads: metric families, as a prometheus-client collector yields them."""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class OpenMetricsWriter:
    """Writes a scrape every ``interval`` of run time to ``path`` (finished by :meth:`finish`)."""

    def __init__(self, path: Path, collect: Collect, *, epoch: float, interval: float = 15.0) -> None:
        self.path = path
        self.collect = collect
        self.epoch = epoch
        """Unix time of run time 0: a sample at run time t is stamped epoch + t."""
        self.interval = interval
        self.scrapes = 0
        self.samples = 0
        self._next = 0.0
        self._dir = Path(tempfile.mkdtemp(prefix="loadsim-openmetrics-"))
        self._files: dict[str, IO[str]] = {}
        self._headers: dict[str, str] = {}
        """Family name -> its ``# TYPE`` and ``# HELP`` lines, in first-seen order."""

    def begin(self) -> None:
        """The scrape at run time 0, before the first window (every series at its starting value)."""
        self.scrape(0.0)
        self._next = self.interval

    def __call__(self, t: float, _state: Any = None) -> None:
        """After a window ending at run time ``t``: every scrape due by then."""
        while self._next <= t + 1e-9:
            self.scrape(self._next)
            self._next += self.interval

    def scrape(self, t: float) -> None:
        """One scrape at run time ``t``."""
        stamp = f" {self.epoch + t:.3f}\n"
        for family in self.collect():
            out = self._file(family)
            lines = []
            for s in family.samples:
                labels = ",".join(f'{k}="{_escape(v)}"' for k, v in s.labels.items())
                name = f"{s.name}{{{labels}}}" if labels else s.name
                lines.append(f"{name} {floatToGoString(s.value)}{stamp}")  # type: ignore[no-untyped-call]
            out.writelines(lines)
            self.samples += len(lines)
        self.scrapes += 1

    def _file(self, family: Metric) -> IO[str]:
        out = self._files.get(family.name)
        if out is None:
            kind = "unknown" if family.type == "untyped" else family.type
            help_text = _escape(family.documentation)
            self._headers[family.name] = f"# TYPE {family.name} {kind}\n# HELP {family.name} {help_text}\n"
            out = self._files[family.name] = (self._dir / f"{len(self._files)}.om").open("w", encoding="utf-8")
        return out

    def finish(self) -> Path:
        """Join the families into ``path`` (written whole, then renamed into place) and clean up."""
        try:
            with open_output(self.path) as out:
                for name, part in self._files.items():
                    part.close()
                    out.write(self._headers[name])
                    with (self._dir / Path(part.name).name).open(encoding="utf-8") as src:
                        shutil.copyfileobj(src, out, 1 << 20)
                out.write("# EOF\n")
        finally:
            self.discard()
        return self.path

    def discard(self) -> None:
        """Close and remove the temporary files (an interrupted run leaves no output)."""
        for part in self._files.values():
            part.close()
        self._files.clear()
        shutil.rmtree(self._dir, ignore_errors=True)
