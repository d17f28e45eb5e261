"""Test helpers for code that uses loadsim, public like ``structlog.testing``.

* :class:`~loadsim.testing.stack.Stack`: a real Prometheus, Pushgateway and Alertmanager on
  loopback, running time-scaled copies of the relay's rules and its routing and inhibition;
* :class:`~loadsim.testing.webhook.WebhookReceiver`: records the notifications Alertmanager sends;
* :func:`~loadsim.testing.stack.wait_until`: the bounded polling loop both are used with.

Importing this package starts nothing; the daemons' binaries are looked up when a stack starts.
"""

from loadsim.testing.stack import (
    Alertmanager,
    Binaries,
    BinaryNotFoundError,
    HTTPStatusError,
    Prometheus,
    Pushgateway,
    Sample,
    Stack,
    StackError,
    derive_alertmanager_config,
    prometheus_config,
    wait_until,
)
from loadsim.testing.webhook import Notification, WebhookReceiver

__all__ = [
    "Alertmanager",
    "Binaries",
    "BinaryNotFoundError",
    "HTTPStatusError",
    "Notification",
    "Prometheus",
    "Pushgateway",
    "Sample",
    "Stack",
    "StackError",
    "WebhookReceiver",
    "derive_alertmanager_config",
    "prometheus_config",
    "wait_until",
]
