"""The relay's rules evaluated in-process, the way ``promtool test rules`` evaluates them.

promtool takes about a second per run; a sweep makes thousands of runs, so the
rules are evaluated here instead, and ``tests/test_sensitivity_evaluate.py`` holds this
evaluator to promtool: the same recorded series, the same rule files, the same
alert firing times. What it mirrors of Prometheus 2.42 (the ``promtool`` Debian ships):

- **Time.** Every group is evaluated at every step of the evaluation interval from
  run time 0, groups in file order, rules in group order; a rule reads what the rules
  before it wrote at the same timestamp (promtool evaluates all groups at each step;
  pass ``group_eval_order`` to it to fix the order, or it takes a random one).
- **Reads.** Instant selectors take the latest sample no older than 5 minutes unless
  it is a stale marker; ranges are ``[t - range, t]``; ``rate``/``increase`` extrapolate
  exactly as ``extrapolatedRate`` does (counter resets, the zero point, the 1.1x
  sample-gap threshold), in the same floating-point order.
- **Aggregation and matching.** ``sum``/``min``/``max``/``count`` by or without labels,
  adding series in label order; one-to-one vector matching (``on``/``ignoring``);
  ``and``/``or``/``unless``; comparisons as filters or with ``bool``; ``histogram_quantile``
  as ``bucketQuantile`` (sorted, coalesced, forced monotonic, linear in a bucket, the
  highest finite bound when the rank falls in ``+Inf``); ``clamp_min``/``clamp_max``.
- **Alerts.** A label set is pending from the first evaluation that returns it and fires
  at the first evaluation at least ``for:`` later while it is still returned; one
  evaluation without it resolves it, and it starts pending again when it comes back.

Anything else (offsets, ``@``, subqueries, other functions, group_left) raises
:class:`UnsupportedError` naming the construct, so an alert whose rules use it is refused
before a sweep starts rather than evaluated wrongly. Every evaluation is vectorised
over all evaluation times at once: a series is a column of values and a mask of where
it is present.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import promql_parser as pp

from loadsim.sensitivity.rules import RuleError, RuleSet
from loadsim.sensitivity.series import BoolArray, FloatArray, IntArray, Labels, Samples, Store, Window, dense

NAME = "__name__"


class UnsupportedError(RuleError):
    """A PromQL construct the in-process evaluator does not implement."""


@dataclass(frozen=True, slots=True)
class Column:
    """One series of an instant vector over every evaluation time."""

    v: FloatArray
    present: BoolArray


Vector = dict[Labels, Column]
"""An instant vector at every evaluation time, in the order Prometheus would iterate it."""


@dataclass(frozen=True, slots=True)
class Scalar:
    """A number literal (the relay's rules use no other scalars)."""

    value: float


@dataclass(frozen=True, slots=True)
class Episode:
    """One stretch of an alert firing: from the evaluation it fired at to the one that resolved it."""

    fired: float
    """Run time (s) of the first evaluation at which it was firing."""
    pending: float
    """Run time (s) it became pending (``fired - pending >= for:``)."""
    resolved: float | None
    """Run time (s) of the first evaluation without it (None: still firing at the end)."""


def evaluation_times(end: float, interval: float) -> IntArray:
    """Evaluation timestamps (ms) from 0 to ``end`` inclusive, every ``interval`` seconds."""
    steps = int(np.floor(end / interval + 1e-9))
    return np.arange(steps + 1, dtype=np.int64) * round(interval * 1000)


def evaluate(rules: RuleSet, store: Store, end: float) -> dict[str, list[Episode]]:
    """Every alert of ``rules`` over ``store`` from 0 to ``end`` seconds: its firing episodes, in time order.

    Recording rules' output is added to ``store`` (so a caller can read it back).
    """
    times = evaluation_times(end, rules.interval)
    ev = Evaluator(store, times)
    later = {r.name for r in rules.rules() if not r.alert}
    out: dict[str, list[Episode]] = {}
    for rule in rules.rules():
        early = rule.reads & later
        if early:
            msg = f"{rule.name} reads {', '.join(sorted(early))} before the rule that records it"
            raise UnsupportedError(msg)
        vector = ev.vector(rule.expr, rule.text)
        if rule.alert:
            episodes = out.setdefault(rule.name, [])
            for column in vector.values():
                episodes += alert_episodes(times, column.present, rule.hold)
            episodes.sort(key=lambda e: e.fired)
        else:
            later.discard(rule.name)
            for labels, column in vector.items():
                key = _with(labels, {NAME: rule.name, **dict(rule.labels)})
                store.add(key, dense(times, column.v, column.present))
    return out


def alert_episodes(times: IntArray, active: BoolArray, hold: float) -> list[Episode]:
    """Firing episodes of one label set, given at which evaluations the expression returned it."""
    if not active.any():
        return []
    edges = np.diff(np.concatenate(([0], active.astype(np.int8), [0])))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    hold_ms = round(hold * 1000)
    fire = np.searchsorted(times, times[starts] + hold_ms, side="left")
    out = []
    for a, e, j in zip(starts.tolist(), stops.tolist(), fire.tolist(), strict=True):
        if j <= e:
            resolved = float(times[e + 1]) / 1000 if e + 1 < len(times) else None
            out.append(Episode(float(times[j]) / 1000, float(times[a]) / 1000, resolved))
    return out


def _with(labels: Labels, changes: dict[str, str | None]) -> Labels:
    d = dict(labels)
    for k, v in changes.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    return tuple(sorted(d.items()))


def _drop_name(labels: Labels) -> Labels:
    return tuple(kv for kv in labels if kv[0] != NAME)


class Evaluator:
    """Evaluates PromQL syntax trees over a store at fixed evaluation times."""

    def __init__(self, store: Store, times: IntArray) -> None:
        self.store = store
        self.times = times
        self.n = len(times)

    def vector(self, expr: Any, text: str = "") -> Vector:
        """An expression that must yield an instant vector (a rule's)."""
        value = self.eval(expr)
        if isinstance(value, Scalar):
            msg = f"a rule that returns a scalar: {text or expr}"
            raise UnsupportedError(msg)
        return value

    def eval(self, expr: Any) -> Vector | Scalar:  # noqa: PLR0911 - one branch per node type
        """Evaluate any supported node."""
        if isinstance(expr, pp.ParenExpr):
            return self.eval(expr.expr)
        if isinstance(expr, pp.NumberLiteral):
            return Scalar(float(expr.val))
        if isinstance(expr, pp.UnaryExpr):
            inner = self.eval(expr.expr)
            if isinstance(inner, Scalar):
                return Scalar(-inner.value)
            return {_drop_name(k): Column(-c.v, c.present) for k, c in inner.items()}
        if isinstance(expr, pp.VectorSelector):
            return self.select(expr)
        if isinstance(expr, pp.Call):
            return self.call(expr)
        if isinstance(expr, pp.AggregateExpr):
            return self.aggregate(expr)
        if isinstance(expr, pp.BinaryExpr):
            return self.binary(expr)
        msg = f"{type(expr).__name__} ({expr})"
        raise UnsupportedError(msg)

    # -- selectors -------------------------------------------------------------------------

    def _matching(self, vs: Any) -> Iterable[tuple[Labels, Samples]]:
        if vs.offset is not None or vs.at is not None:
            msg = f"offset or @ in {vs}"
            raise UnsupportedError(msg)
        if vs.matchers.or_matchers:
            msg = f"'or' label matchers in {vs}"
            raise UnsupportedError(msg)
        tests = [_matcher(m) for m in vs.matchers.matchers]
        for labels, samples in self.store.named(vs.name):
            d = dict(labels)
            if all(test(d.get(name, "")) for name, test in tests):
                yield labels, samples

    def select(self, vs: Any) -> Vector:
        """An instant selector at every evaluation time."""
        out: Vector = {}
        for labels, samples in self._matching(vs):
            v, present = samples.instant(self.times)
            if present.any():
                out[labels] = Column(v, present)
        return out

    # -- functions ---------------------------------------------------------------------------

    def call(self, expr: Any) -> Vector:
        """``rate``, ``increase``, ``histogram_quantile``, ``clamp_min``, ``clamp_max``."""
        name = str(expr.func.name)
        args = list(expr.args)
        if name in ("rate", "increase") and isinstance(args[0], pp.MatrixSelector):
            return self.extrapolated(args[0], is_rate=name == "rate")
        if name == "histogram_quantile":
            q = self.eval(args[0])
            if not isinstance(q, Scalar):
                msg = "histogram_quantile with a non-literal quantile"
                raise UnsupportedError(msg)
            return self.histogram_quantile(q.value, self.vector(args[1]))
        if name in ("clamp_min", "clamp_max"):
            bound = self.eval(args[1])
            if not isinstance(bound, Scalar):
                msg = f"{name} with a non-literal bound"
                raise UnsupportedError(msg)
            op = np.maximum if name == "clamp_min" else np.minimum
            return {_drop_name(k): Column(op(c.v, bound.value), c.present) for k, c in self.vector(args[0]).items()}
        msg = f"function {name}()"
        raise UnsupportedError(msg)

    def extrapolated(self, ms: Any, *, is_rate: bool) -> Vector:
        """``rate``/``increase`` of every matching series (Prometheus's ``extrapolatedRate``, counters)."""
        range_ms = round(ms.range.total_seconds() * 1000)
        range_s = ms.range.total_seconds()
        out: Vector = {}
        for labels, samples in self._matching(ms.vector_selector):
            w = samples.window(self.times, range_ms)
            ok = w.count >= 2
            if not ok.any():
                continue
            out[_drop_name(labels)] = Column(
                _extrapolated_rate(w, self.times, range_ms, range_s, is_rate=is_rate, ok=ok), ok
            )
        return out

    def histogram_quantile(self, q: float, vector: Vector) -> Vector:
        """Prometheus's ``bucketQuantile`` per label set (``le`` removed), at every evaluation time."""
        groups: dict[Labels, list[tuple[float, Column]]] = {}
        for labels, column in vector.items():
            d = dict(labels)
            try:
                le = float(d.pop("le"))
            except (KeyError, ValueError):
                continue
            d.pop(NAME, None)
            groups.setdefault(tuple(sorted(d.items())), []).append((le, column))
        out: Vector = {}
        for key, buckets in groups.items():
            buckets.sort(key=lambda b: b[0])
            bounds = np.array([b[0] for b in buckets])
            counts = np.stack([b[1].v for b in buckets])
            present = np.stack([b[1].present for b in buckets])
            any_present: BoolArray = np.asarray(present.any(axis=0))
            whole = present.all(axis=0) | ~any_present
            v = _bucket_quantile(q, bounds, counts)
            for t in np.flatnonzero(~whole):  # some buckets missing at t: the rest is the histogram
                rows = present[:, t]
                v[t] = _bucket_quantile(q, bounds[rows], counts[rows, t : t + 1])[0]
            out[key] = Column(v, any_present)
        return out

    # -- aggregation -------------------------------------------------------------------------

    def aggregate(self, expr: Any) -> Vector:
        """``sum``, ``min``, ``max``, ``count`` by or without labels."""
        op = str(expr.op)
        if op not in _AGGREGATIONS or expr.param is not None:
            msg = f"aggregation {op}"
            raise UnsupportedError(msg)
        key_of = _grouping(expr.modifier)
        groups: dict[Labels, list[Column]] = {}
        for labels, column in self.vector(expr.expr).items():
            groups.setdefault(key_of(labels), []).append(column)
        return {key: _AGGREGATIONS[op](columns, self.n) for key, columns in groups.items()}

    # -- binary operators --------------------------------------------------------------------

    def binary(self, expr: Any) -> Vector | Scalar:
        """Arithmetic, comparisons and set operators between vectors and literals."""
        op = str(expr.op)
        modifier = expr.modifier
        return_bool = bool(modifier is not None and modifier.return_bool)
        lhs, rhs = self.eval(expr.lhs), self.eval(expr.rhs)
        if op in ("and", "or", "unless"):
            if isinstance(lhs, Scalar) or isinstance(rhs, Scalar):
                msg = f"{op} with a scalar"
                raise UnsupportedError(msg)
            return _set_operation(op, lhs, rhs, _signature(modifier))
        if op not in _ARITHMETIC and op not in _COMPARISON:
            msg = f"operator {op}"
            raise UnsupportedError(msg)
        if isinstance(lhs, Scalar) and isinstance(rhs, Scalar):
            if op in _COMPARISON and not return_bool:
                msg = "a comparison between two scalars without bool"
                raise UnsupportedError(msg)
            with np.errstate(all="ignore"):
                value = _apply(op, np.array([lhs.value]), np.array([rhs.value]))[0]
            return Scalar(float(value))
        if isinstance(lhs, Scalar) or isinstance(rhs, Scalar):
            return _vector_scalar(op, lhs, rhs, return_bool)
        return _vector_vector(op, lhs, rhs, modifier, return_bool)


# -- helpers (module-level so each is small and testable) ---------------------------------------


def _matcher(m: Any) -> tuple[str, Callable[[str], bool]]:
    value = str(m.value)
    name = str(m.name)
    if m.op == pp.MatchOp.Equal:
        return name, lambda s: s == value
    if m.op == pp.MatchOp.NotEqual:
        return name, lambda s: s != value
    pattern = re.compile(value)
    if m.op == pp.MatchOp.Re:
        return name, lambda s: pattern.fullmatch(s) is not None
    return name, lambda s: pattern.fullmatch(s) is None


def _extrapolated_rate(
    w: Window, at: IntArray, range_ms: int, range_s: float, *, is_rate: bool, ok: BoolArray
) -> FloatArray:
    """``extrapolatedRate`` (counter case) of Prometheus 2.42's promql/functions.go, vectorised."""
    f, last = np.where(ok, w.first, 0), np.where(ok, w.last, 0)
    n = np.where(ok, w.count, 2).astype(np.float64)
    first_v, last_v = w.v[f], w.v[last]
    result = last_v - first_v
    drops = np.flatnonzero(w.v[1:] < w.v[:-1]) + 1 if len(w.v) > 1 else np.empty(0, dtype=np.int64)
    if len(drops):  # counter resets: add each drop's previous value, in sample order, as Go does
        for k in np.flatnonzero(ok):
            inside = drops[(drops > f[k]) & (drops <= last[k])]
            for i in inside.tolist():
                result[k] += w.v[i - 1]
    range_start = at - range_ms
    duration_to_start = (w.t[f] - range_start).astype(np.float64) / 1000
    duration_to_end = (at - w.t[last]).astype(np.float64) / 1000
    sampled = (w.t[last] - w.t[f]).astype(np.float64) / 1000
    with np.errstate(all="ignore"):
        average = sampled / (n - 1)
        to_zero = sampled * (first_v / result)
    zero_first = (result > 0) & (first_v >= 0) & (to_zero < duration_to_start)
    duration_to_start = np.where(zero_first, to_zero, duration_to_start)
    threshold = average * 1.1
    interval = sampled + np.where(duration_to_start < threshold, duration_to_start, average / 2)
    interval = interval + np.where(duration_to_end < threshold, duration_to_end, average / 2)
    with np.errstate(all="ignore"):
        factor = interval / sampled
        if is_rate:
            factor = factor / range_s
        return np.where(ok, result * factor, np.nan)


def _bucket_quantile(q: float, bounds: FloatArray, counts: FloatArray) -> FloatArray:
    """``bucketQuantile`` for each column of ``counts`` (buckets x times), ``bounds`` sorted."""
    n = counts.shape[1]
    if np.isnan(q):
        return np.full(n, np.nan)
    if q < 0 or q > 1:
        return np.full(n, -np.inf if q < 0 else np.inf)
    if len(bounds) == 0 or not np.isposinf(bounds[-1]):
        return np.full(n, np.nan)
    unique, index = np.unique(bounds, return_inverse=True)
    if len(unique) < len(bounds):  # coalesce equal bounds, adding in order
        merged = np.zeros((len(unique), n))
        for row, target in enumerate(index.tolist()):
            merged[target] += counts[row]
        bounds, counts = unique, merged
    if len(bounds) < 2:
        return np.full(n, np.nan)
    counts = np.maximum.accumulate(counts, axis=0)
    observations = counts[-1]
    rank = q * observations
    below_inf = counts[:-1] >= rank
    b = np.where(below_inf.any(axis=0), below_inf.argmax(axis=0), len(bounds) - 1)
    cols = np.arange(n)
    prev = np.where(b > 0, counts[np.maximum(b - 1, 0), cols], 0.0)
    start = np.where(b > 0, bounds[np.maximum(b - 1, 0)], 0.0)
    end = bounds[np.minimum(b, len(bounds) - 2)]
    with np.errstate(all="ignore"):
        inside = start + (end - start) * ((rank - prev) / (counts[np.minimum(b, len(bounds) - 2), cols] - prev))
    out = np.where(b == len(bounds) - 1, bounds[-2], inside)
    out = np.where((b == 0) & (bounds[0] <= 0), bounds[0], out)
    return np.where(observations == 0, np.nan, out)


def _grouping(modifier: Any) -> Callable[[Labels], Labels]:
    if modifier is None:
        return lambda _labels: ()
    names = set(modifier.labels)
    if modifier.type == pp.AggModifierType.By:
        return lambda labels: tuple(kv for kv in labels if kv[0] in names and kv[0] != NAME)
    return lambda labels: tuple(kv for kv in labels if kv[0] not in names and kv[0] != NAME)


def _sum(columns: Sequence[Column], n: int) -> Column:
    total, present = np.zeros(n), np.zeros(n, dtype=bool)
    for c in columns:  # 0 + x == x exactly: the same additions, in the same order, as Go's
        total = total + np.where(c.present, c.v, 0.0)
        present |= c.present
    return Column(total, present)


def _extreme(keep_new: Callable[[FloatArray, FloatArray], BoolArray]) -> Callable[[Sequence[Column], int], Column]:
    def aggregate(columns: Sequence[Column], n: int) -> Column:
        value, seen = np.full(n, np.nan), np.zeros(n, dtype=bool)
        for c in columns:
            take = c.present & (~seen | keep_new(value, c.v) | np.isnan(value))
            value = np.where(take, c.v, value)
            seen |= c.present
        return Column(value, seen)

    return aggregate


def _count(columns: Sequence[Column], n: int) -> Column:
    total = np.zeros(n)
    for c in columns:
        total = total + c.present
    return Column(total, total > 0)


_AGGREGATIONS: dict[str, Callable[[Sequence[Column], int], Column]] = {
    "sum": _sum,
    "min": _extreme(lambda old, new: old > new),
    "max": _extreme(lambda old, new: old < new),
    "count": _count,
}
_ARITHMETIC = {"+", "-", "*", "/"}
_COMPARISON = {">", "<", ">=", "<=", "==", "!="}


def _apply(op: str, a: FloatArray, b: FloatArray) -> Any:
    ops: dict[str, Callable[[FloatArray, FloatArray], Any]] = {
        "+": np.add,
        "-": np.subtract,
        "*": np.multiply,
        "/": np.divide,
        ">": np.greater,
        "<": np.less,
        ">=": np.greater_equal,
        "<=": np.less_equal,
        "==": np.equal,
        "!=": np.not_equal,
    }
    return ops[op](a, b)


def _vector_scalar(op: str, lhs: Vector | Scalar, rhs: Vector | Scalar, return_bool: bool) -> Vector:
    swap = isinstance(lhs, Scalar)
    vector = rhs if swap else lhs
    scalar = lhs if swap else rhs
    assert isinstance(vector, dict)
    assert isinstance(scalar, Scalar)
    out: Vector = {}
    for labels, c in vector.items():
        s = np.full_like(c.v, scalar.value)
        a, b = (s, c.v) if swap else (c.v, s)
        with np.errstate(all="ignore"):
            result = _apply(op, a, b)
        if op in _COMPARISON:
            if return_bool:
                out[_drop_name(labels)] = Column(result.astype(np.float64), c.present)
            else:
                keep = c.present & result
                if keep.any():
                    out[labels] = Column(c.v, keep)
        else:
            out[_drop_name(labels)] = Column(result, c.present)
    return out


def _signature(modifier: Any) -> Callable[[Labels], Labels]:
    matching = None if modifier is None else modifier.matching
    if matching is None:
        return _drop_name
    names = set(matching.labels)
    if matching.type == pp.LabelModifierType.Include:  # on(...)
        return lambda labels: tuple(kv for kv in labels if kv[0] in names)
    return lambda labels: tuple(kv for kv in labels if kv[0] not in names and kv[0] != NAME)


def _partner(partners: Sequence[Column], like: Column) -> Column:
    """The right-hand side series a left-hand series is matched with, at each time (at most one present)."""
    if len(partners) > 1 and (np.sum([p.present for p in partners], axis=0) > 1).any():
        msg = "many-to-many matching (duplicate series on the right-hand side)"
        raise UnsupportedError(msg)
    v, present = np.zeros_like(like.v), np.zeros_like(like.present)
    for p in partners:
        v = np.where(p.present, p.v, v)
        present |= p.present
    return Column(v, present)


def _vector_vector(op: str, lhs: Vector, rhs: Vector, modifier: Any, return_bool: bool) -> Vector:
    if modifier is not None and modifier.card != pp.VectorMatchCardinality.OneToOne:
        msg = f"{modifier.card} vector matching"
        raise UnsupportedError(msg)
    sig = _signature(modifier)
    by_sig: dict[Labels, list[Column]] = {}
    for labels, c in rhs.items():
        by_sig.setdefault(sig(labels), []).append(c)
    matching = None if modifier is None else modifier.matching
    out: Vector = {}
    for labels, c in lhs.items():
        partners = by_sig.get(sig(labels), [])
        if not partners:
            continue
        other = _partner(partners, c)
        present = c.present & other.present
        with np.errstate(all="ignore"):
            result = _apply(op, c.v, other.v)
        key = _drop_name(labels) if op in _ARITHMETIC or return_bool else labels
        if matching is not None:  # one-to-one with on/ignoring: the result keeps the matching labels only
            key = sig(key) if matching.type == pp.LabelModifierType.Include else _drop_name(sig(key))
        if op in _COMPARISON and not return_bool:
            present &= result
            value = c.v
        else:
            value = result.astype(np.float64)
        if present.any():
            out[key] = Column(value, present)
    return out


def _set_operation(op: str, lhs: Vector, rhs: Vector, sig: Callable[[Labels], Labels]) -> Vector:
    n = len(next(iter(lhs.values())).v) if lhs else (len(next(iter(rhs.values())).v) if rhs else 0)
    rhs_present: dict[Labels, BoolArray] = {}
    for labels, c in rhs.items():
        key = sig(labels)
        rhs_present[key] = rhs_present.get(key, np.zeros(n, dtype=bool)) | c.present
    out: Vector = {}
    if op in ("and", "unless"):
        for labels, c in lhs.items():
            other = rhs_present.get(sig(labels), np.zeros(n, dtype=bool))
            present = c.present & (other if op == "and" else ~other)
            if present.any():
                out[labels] = Column(c.v, present)
        return out
    lhs_present: dict[Labels, BoolArray] = {}
    for labels, c in lhs.items():
        out[labels] = c
        key = sig(labels)
        lhs_present[key] = lhs_present.get(key, np.zeros(n, dtype=bool)) | c.present
    for labels, c in rhs.items():
        present = c.present & ~lhs_present.get(sig(labels), np.zeros(n, dtype=bool))
        if present.any():
            out[labels] = Column(c.v, present)
    return out
