"""``loadsim merge``: the fleet's summary from its shards' summaries, quantiles from merged histograms.

A quantile of a fleet is not the average (nor any function) of the shards'
quantiles: k6-operator and Locust's workers lose exactly this. Each shard's
``--summary-json`` file carries its latency histograms whole
(:func:`loadsim.runtime.fleet.histograms`): the simulated driver's fixed log bins,
which add up bin by bin into the histogram one process would have built, and the
HTTP driver's HdrHistograms in the library's own encoding, merged with
``decode_and_add`` (3 significant digits). Counts are summed, rates recomputed
from the sums, and every quantile read from the merged histograms.

The files must be shards of one run (same profile, seed and shard count, each
index once); a missing shard is refused unless ``allow_missing``, and named in
the result either way.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadsim.errors import ConfigError, Problem
from loadsim.files import MIB, InputFileError, read_text
from loadsim.model import catalog
from loadsim.sinks.summary import LatencyQuantiles, RunSummary

COUNTS = ("target", "scheduled", "started", "dropped", "finished", "abandoned", "missed_while_down", "dropped_behind")
HDR = ("intended", "actual", "lateness")
INPUT_LIMIT = 256 * MIB
"""Largest summary or log file read (a 48-hour shard's log is a few MiB: progress once a minute)."""


@dataclass(frozen=True, slots=True)
class ShardFile:
    """One shard's summary, read and checked."""

    path: Path
    data: dict[str, Any]

    @property
    def index(self) -> int:
        return int(self.data["shard"]["index"])

    @property
    def noun(self) -> str:
        return "requests" if "requests" in self.data else "sends"


def read(paths: list[Path]) -> list[ShardFile]:
    """Every shard summary in ``paths``; ConfigError with one problem per file that holds none.

    A file is a ``--summary-json`` file, or a log in JSON lines (``kubectl logs`` of the
    Job's pods) whose ``run.summary`` events are shards' summaries: one file may hold many.
    """
    problems: list[Problem] = []
    files: list[ShardFile] = []
    for path in paths:
        try:
            text = read_text(path, INPUT_LIMIT)
        except InputFileError as e:
            problems.append(Problem(str(path), "", str(e)))
            continue
        found = list(_summaries(path, text))
        if not found:
            why = "no shard summary: expected the --summary-json file or the JSON log of a run with --shard/--shards"
            problems.append(Problem(str(path), "", why))
        files += found
    if problems:
        raise ConfigError(problems)
    return files


def _summaries(path: Path, text: str) -> list[ShardFile]:
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None
    if isinstance(whole, dict):
        return [ShardFile(path, whole)] if _is_shard(whole) else []
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == "run.summary" and _is_shard(record):
            found.append(ShardFile(Path(f"{path}:{n}"), record))
    return found


def _is_shard(data: dict[str, Any]) -> bool:
    return all(k in data for k in ("shard", "histograms", "profile", "seed"))


def merge(files: list[ShardFile], *, allow_missing: bool = False) -> dict[str, Any]:
    """The fleet's summary; ConfigError when the files are not the shards of one run."""
    _check(files, allow_missing)
    first = files[0].data
    noun = files[0].noun
    count = int(first["shard"]["count"])
    merged = sorted(f.index for f in files)
    run_seconds = max(float(f.data["run_seconds"]) for f in files)
    counts = {k: sum(f.data[noun].get(k, 0) for f in files) for k in COUNTS}
    counts["target"] = round(counts["target"], 1)
    lateness = {str(f.index): f.data["shard"].get("first_window_lateness_seconds") for f in files}
    known = [v for v in lateness.values() if v is not None]
    out: dict[str, Any] = {
        "profile": first["profile"],
        "seed": first["seed"],
        "virtual": first.get("virtual"),
        "shards": {
            "count": count,
            "merged": merged,
            "missing": sorted(set(range(count)) - set(merged)),
            "start_at": first["shard"].get("start_at"),
            "first_window_lateness_seconds": {"max": max(known) if known else None, "by_shard": lateness},
        },
        "run_seconds": run_seconds,
        "wall_seconds": max(float(f.data.get("wall_seconds", 0.0)) for f in files),
        noun: counts,
        "achieved_rate_per_s": counts["started"] / run_seconds if run_seconds > 0 else 0.0,
        "target_rate_per_s": sum(float(f.data.get("target_rate_per_s", 0.0)) for f in files),
    }
    if noun == "sends":
        out |= _sends(files)
    else:
        out |= _requests(files)
    controllers = [f.data["controller"] for f in files if "controller" in f.data]
    if controllers:
        out["controller"] = controllers[0]
    return out


def _check(files: list[ShardFile], allow_missing: bool) -> None:
    problems: list[Problem] = []
    first = files[0]
    ref = (first.data["profile"], first.data["seed"], first.data["shard"]["count"], first.noun)
    for f in files[1:]:
        theirs = (f.data["profile"], f.data["seed"], f.data["shard"]["count"], f.noun)
        if theirs != ref:
            why = (
                f"profile {theirs[0]!r}, seed {theirs[1]}, {theirs[2]} shards of {theirs[3]}; {first.path} has "
                f"profile {ref[0]!r}, seed {ref[1]}, {ref[2]} shards of {ref[3]}: not shards of one run"
            )
            problems.append(Problem(str(f.path), "", why))
    seen: dict[int, Path] = {}
    for f in files:
        if f.index in seen:
            problems.append(Problem(str(f.path), "shard.index", f"shard {f.index} again (also in {seen[f.index]})"))
        seen[f.index] = f.path
    missing = sorted(set(range(int(ref[2]))) - set(seen))
    if missing and not allow_missing and not problems:
        why = f"shards {', '.join(map(str, missing))} of {ref[2]} are missing; pass --allow-missing to merge the rest"
        problems.append(Problem("merge", "", why))
    if problems:
        raise ConfigError(problems)


def _sends(files: list[ShardFile]) -> dict[str, Any]:
    """Simulated sends: class counts summed, the fixed-bin latency histograms added bin by bin."""
    summary = RunSummary()
    try:
        for f in files:
            for name, n in f.data.get("by_outcome", {}).items():
                summary.class_counts[catalog.CLASS_INDEX[name]] += int(n)
            latency = LatencyQuantiles.from_json(f.data["histograms"]["latency_seconds"])
            summary.latency.counts += latency.counts
    except (KeyError, ValueError, TypeError) as e:
        raise ConfigError.single(str(f.path), "histograms", f"cannot merge ({type(e).__name__}: {e})") from None
    out = summary.to_dict()
    out["histograms"] = {"latency_seconds": summary.latency.to_json()}
    return out


def _requests(files: list[ShardFile]) -> dict[str, Any]:
    """HTTP requests: results summed, HdrHistograms merged in their own encoding."""
    from loadsim.drivers.http import HttpResults

    results = HttpResults()
    tally: Counter[str] = Counter()
    try:
        for f in files:
            tally.update({str(k): int(v) for k, v in f.data.get("by_result", {}).items()})
            for name in HDR:
                getattr(results, name).decode_and_add(f.data["histograms"][f"hdr_{name}"])
    except (KeyError, ValueError, TypeError) as e:
        raise ConfigError.single(str(f.path), "histograms", f"cannot merge ({type(e).__name__}: {e})") from None
    results.results = tally
    out = results.to_dict()
    out["histograms"] = {f"hdr_{k}": v for k, v in results.state()["hdr"].items()}
    return out


__all__ = ["ShardFile", "merge", "read"]
