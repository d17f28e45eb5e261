"""The relay's rollout controller and its gate, simulated: policy, population, and the series it reads.

* :mod:`~loadsim.rollout.policy`: one controller run as a pure function (:func:`decide`).
* :mod:`~loadsim.rollout.population`: the (workspace, actor) pairs, their gate buckets and
  send weights, and the :class:`Gate` the engine applies to sends in bulk.
* :mod:`~loadsim.rollout.series`: the controller's three PromQL queries, evaluated in
  process over the scrapes Prometheus would hold, with Prometheus's semantics.

This package sits at the model's level: it imports numpy, the standard library,
``loadsim.promql``, ``loadsim.contract`` and ``loadsim.model.catalog``, nothing else.
"""

from loadsim.rollout.policy import Decision, Fidelity, PolicyParams, PolicyState, Reading, decide
from loadsim.rollout.population import Gate, Population
from loadsim.rollout.series import (
    Sample,
    SampleWindow,
    error_rate,
    extrapolated_rate,
    latency_p95,
    oauth_failures,
    read,
)

__all__ = [
    "Decision",
    "Fidelity",
    "Gate",
    "PolicyParams",
    "PolicyState",
    "Population",
    "Reading",
    "Sample",
    "SampleWindow",
    "decide",
    "error_rate",
    "extrapolated_rate",
    "latency_p95",
    "oauth_failures",
    "read",
]
