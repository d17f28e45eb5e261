"""The relay's metric contract: names, help, labels and buckets, as the relay emits them.

Taken from the relay's own code (see ``deploy/relay/README.md``). Changing any
of these breaks the relay's recording rules, alerts and dashboards, so tests
pin them. :class:`MetricOptions` are the label variants a profile can ask for;
config, model and sinks all read this module, and it reads nothing of loadsim.
"""

from __future__ import annotations

from dataclasses import dataclass

PROVIDER = "google"
ACTION = "gmail.send"

LATENCY_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""``action_latency_seconds`` bucket bounds (``+Inf`` is added on export)."""
MIME_BUCKETS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""``gmail_mime_build_seconds`` bucket bounds (``+Inf`` is added on export)."""

EXEC_STATUSES = ("ok", "error")
CONTROLLER_RUN_STATUSES = ("ok", "prom_unreachable", "redis_error")
CONTROLLER_RESULTS = ("promote", "rollback", "hold")

ACTION_EXEC = "action_exec_total"
ACTION_ERROR = "action_error_total"
ACTION_LATENCY = "action_latency_seconds"
STRUCTURED_ERROR = "structured_error_total"
OAUTH_EVENTS = "oauth_events_total"
MIME_BUILD = "gmail_mime_build_seconds"
ATTACHMENT_BYTES = "gmail_attachment_bytes_total"
INLINE_REFS = "gmail_inline_refs_total"
SANITIZATION = "gmail_html_sanitization_changes_total"
CONTROLLER_RUNS = "rollout_controller_runs_total"
CONTROLLER_CHANGES = "rollout_controller_changes_total"
CONTROLLER_PERCENT = "rollout_controller_percent"

HELP = {
    ACTION_EXEC: "Total action executions",
    ACTION_ERROR: "Total action errors",
    ACTION_LATENCY: "Action execution latency in seconds",
    STRUCTURED_ERROR: "Structured errors by code and source",
    OAUTH_EVENTS: "OAuth token events",
    MIME_BUILD: "Time to build a MIME message",
    ATTACHMENT_BYTES: "Attachment bytes processed",
    INLINE_REFS: "Inline image references",
    SANITIZATION: "HTML sanitization changes",
    CONTROLLER_RUNS: "Rollout controller runs",
    CONTROLLER_CHANGES: "Rollout controller percentage changes",
    CONTROLLER_PERCENT: "Rollout controller current percentage",
}


@dataclass(frozen=True, slots=True)
class MetricOptions:
    """Optional labels newer relay versions (or richer rules) expect; all off by default."""

    status_label: bool = False
    """Add ``status`` to ``action_latency_seconds`` so the ``*_by_result`` rules fill."""
    workspace_ids: tuple[str, ...] = ()
    """Add ``workspace_id`` to ``action_exec_total``, splitting executions over these ids."""
    workspace_weights: tuple[float, ...] = ()
    controller_feature: str = PROVIDER
