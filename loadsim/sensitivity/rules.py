"""The relay's rule files, parsed once: groups of recording and alerting rules as PromQL syntax trees.

The sweep evaluates the rules the relay really ships (``deploy/relay/prometheus``), so
they are read from the files, never restated: a threshold edited in the YAML is the
threshold the sweep measures. PromQL is parsed by ``promql-parser`` (the Rust parser
of GreptimeDB's PromQL engine, with Python bindings), so nothing here tokenises PromQL.

Only the rules an alert depends on are kept (:meth:`RuleSet.closure`): an alert reads
recording rules, which read other recording rules or scraped series; the AI
orchestrator's groups in the same files are never evaluated.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promql_parser
import yaml

from loadsim.units import parse_duration

DEFAULT_INTERVAL = 30.0
"""A group without ``interval:`` runs at Prometheus's evaluation interval: the relay's is 30 s."""


class RuleError(Exception):
    """A rule file that cannot be read, or a rule the in-process evaluator does not implement."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One recording or alerting rule, its expression parsed."""

    name: str
    """The recorded series' name, or the alert's name."""
    text: str
    expr: Any
    """The ``promql_parser`` syntax tree."""
    alert: bool
    hold: float = 0.0
    """``for:`` in seconds (alerts only)."""
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def reads(self) -> set[str]:
        """Metric names the expression selects (scraped series or other rules' output)."""
        return set(_names(self.expr))


@dataclass(frozen=True, slots=True)
class Group:
    """A rule group: rules evaluated in order, at the group's interval."""

    name: str
    interval: float
    rules: tuple[Rule, ...]
    source: Path


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Groups in the order their files and the files' groups were given (the order they are evaluated in)."""

    groups: tuple[Group, ...]
    files: tuple[Path, ...] = field(default=())

    def alerts(self) -> dict[str, Rule]:
        """Every alerting rule by name (the first one, if two files define the same alert)."""
        out: dict[str, Rule] = {}
        for rule in self.rules():
            if rule.alert:
                out.setdefault(rule.name, rule)
        return out

    def rules(self) -> Iterator[Rule]:
        """Every rule, in evaluation order."""
        for group in self.groups:
            yield from group.rules

    def closure(self, alerts: Iterable[str]) -> RuleSet:
        """Only ``alerts`` and the recording rules they read, transitively; groups and order kept."""
        recorded = {r.name: r for r in self.rules() if not r.alert}
        wanted = set(alerts)
        missing = wanted - set(self.alerts())
        if missing:
            msg = f"no alerting rule named {', '.join(sorted(missing))} in {', '.join(map(str, self.files))}"
            raise RuleError(msg)
        needed: set[str] = set()
        todo = [r for r in self.rules() if r.alert and r.name in wanted]
        while todo:
            rule = todo.pop()
            for name in rule.reads:
                if name in recorded and name not in needed:
                    needed.add(name)
                    todo.append(recorded[name])
        kept, seen = [], set()
        for group in self.groups:
            rules = []
            for r in group.rules:
                keep = (r.alert and r.name in wanted and r.name not in seen) or (not r.alert and r.name in needed)
                if keep:
                    seen.add(r.name)
                    rules.append(r)
            if rules:
                kept.append(Group(group.name, group.interval, tuple(rules), group.source))
        return RuleSet(tuple(kept), self.files)

    @property
    def interval(self) -> float:
        """The one evaluation interval of every group (the evaluator steps all groups together)."""
        intervals = {g.interval for g in self.groups}
        if len(intervals) != 1:
            msg = f"groups run at different intervals ({', '.join(f'{i:g}s' for i in sorted(intervals))})"
            raise RuleError(msg)
        return intervals.pop()

    def longest_range(self) -> float:
        """The longest range selector (``[6h]``) of any rule, in seconds (0 when none)."""
        return max((r for rule in self.rules() for r in _ranges(rule.expr)), default=0.0)


def load(files: Sequence[Path], default_interval: float = DEFAULT_INTERVAL) -> RuleSet:
    """Parse rule files (Prometheus's format) into groups in file order."""
    groups = []
    for path in files:
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            msg = f"{path}: cannot read rules ({e})"
            raise RuleError(msg) from None
        for g in doc.get("groups", []):
            interval = parse_duration(g["interval"]) if "interval" in g else default_interval
            rules = tuple(_rule(path, g["name"], r) for r in g.get("rules", []))
            groups.append(Group(g["name"], interval, rules, path))
    return RuleSet(tuple(groups), tuple(files))


def _rule(path: Path, group: str, data: dict[str, Any]) -> Rule:
    text = str(data["expr"])
    if "keep_firing_for" in data:
        msg = f"{path}: group {group}: keep_firing_for is not implemented by the in-process evaluator"
        raise RuleError(msg)
    try:
        expr = promql_parser.parse(text)
    except ValueError as e:
        msg = f"{path}: group {group}: cannot parse {text!r}: {e}"
        raise RuleError(msg) from None
    labels = tuple(sorted((str(k), str(v)) for k, v in (data.get("labels") or {}).items()))
    if "alert" in data:
        hold = parse_duration(str(data["for"])) if "for" in data else 0.0
        return Rule(str(data["alert"]), text, expr, alert=True, hold=hold, labels=labels)
    return Rule(str(data["record"]), text, expr, alert=False, labels=labels)


def _children(expr: Any) -> list[Any]:
    """The sub-expressions of a node (the parser's node types have no common child accessor)."""
    if isinstance(expr, promql_parser.BinaryExpr):
        return [expr.lhs, expr.rhs]
    if isinstance(expr, promql_parser.AggregateExpr):
        return [expr.expr] + ([expr.param] if expr.param is not None else [])
    if isinstance(expr, promql_parser.Call):
        return list(expr.args)
    if isinstance(expr, promql_parser.ParenExpr | promql_parser.UnaryExpr | promql_parser.SubqueryExpr):
        return [expr.expr]
    if isinstance(expr, promql_parser.MatrixSelector):
        return [expr.vector_selector]
    return []


def _walk(expr: Any) -> Iterator[Any]:
    yield expr
    for child in _children(expr):
        yield from _walk(child)


def _names(expr: Any) -> Iterator[str]:
    for node in _walk(expr):
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            yield str(node.name)


def _ranges(expr: Any) -> Iterator[float]:
    for node in _walk(expr):
        if isinstance(node, promql_parser.MatrixSelector):
            yield float(node.range.total_seconds())
