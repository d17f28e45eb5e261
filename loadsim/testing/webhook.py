"""A webhook receiver on loopback that records what Alertmanager sends.

Alertmanager's real receivers (Slack, PagerDuty) need the internet and
credentials; a test needs to know *that* a notification went out, to *which*
receiver, and with what status. :class:`WebhookReceiver` listens on
``127.0.0.1`` (a free port), accepts ``POST /<receiver-name>`` with a JSON body
(Alertmanager's webhook payload) and keeps every notification in order.

It is a :mod:`http.server` in a background thread rather than an aiohttp app:
the caller is usually a synchronous test that polls, Alertmanager sends a
handful of requests, and a thread needs no event loop of its own.

Example::

    with WebhookReceiver() as hooks:
        ...  # point Alertmanager at hooks.url_for("pagerduty-critical")
        n = hooks.wait_for(lambda n: n.receiver == "pagerduty-critical" and n.status == "firing", timeout=30)
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

_MAX_BODY = 10 * 1024 * 1024
"""Alertmanager's payloads are kilobytes; anything larger is refused rather than held in memory."""


@dataclass(frozen=True, slots=True)
class Notification:
    """One request Alertmanager made: the receiver it was for and its JSON body."""

    receiver: str
    """The request path without its leading slash: the receiver's name, as the stack configures it."""
    body: dict[str, Any]
    """Alertmanager's webhook payload (``status``, ``alerts``, ``groupLabels``, ...)."""
    received_at: float = field(default_factory=time.monotonic)
    """``time.monotonic()`` when it arrived, to order it against the caller's own clock."""

    @property
    def status(self) -> str:
        """``firing`` or ``resolved`` (the group's status)."""
        return str(self.body.get("status", ""))

    @property
    def alerts(self) -> list[dict[str, Any]]:
        """The alerts in the notification, each with ``status``, ``labels`` and ``annotations``."""
        alerts = self.body.get("alerts", [])
        return [a for a in alerts if isinstance(a, dict)] if isinstance(alerts, list) else []

    def alertnames(self, status: str | None = None) -> set[str]:
        """Names of the alerts it carries, optionally only those with ``status``."""
        return {
            str(a.get("labels", {}).get("alertname", ""))
            for a in self.alerts
            if status is None or a.get("status") == status
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, receiver: WebhookReceiver) -> None:
        self.receiver = receiver
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= _MAX_BODY:
            self.send_error(400, "expected a JSON body")
            return
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError:
            self.send_error(400, "body is not JSON")
            return
        if not isinstance(body, dict):
            self.send_error(400, "expected a JSON object")
            return
        self.server.receiver.record(Notification(self.path.strip("/"), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it so
        """Silent: a test's output is no place for an access log."""


class WebhookReceiver:
    """Records Alertmanager webhook notifications on ``127.0.0.1``; a context manager."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._notifications: list[Notification] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Bind a free loopback port and serve in a daemon thread."""
        if self._server is None:
            self._server = _Server(self)
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="webhook-receiver", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, ``http://127.0.0.1:PORT``."""
        if self._server is None:
            msg = "the webhook receiver is not started"
            raise RuntimeError(msg)
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def url_for(self, receiver: str) -> str:
        """The URL Alertmanager's receiver ``receiver`` should post to."""
        return f"{self.url}/{receiver}"

    def record(self, notification: Notification) -> None:
        """Keep ``notification`` and wake anyone waiting (called by the server thread)."""
        with self._cond:
            self._notifications.append(notification)
            self._cond.notify_all()

    @property
    def notifications(self) -> list[Notification]:
        """Every notification so far, oldest first (a copy)."""
        with self._cond:
            return list(self._notifications)

    def wait_for(self, predicate: Callable[[Notification], bool], timeout: float) -> Notification:
        """The first notification (already received or still to come) matching ``predicate``.

        Raises :class:`TimeoutError` after ``timeout`` seconds, listing what did arrive.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for n in self._notifications:
                    if predicate(n):
                        return n
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(n.receiver, n.status, sorted(n.alertnames())) for n in self._notifications]
                    msg = f"no matching notification within {timeout:g}s; received {seen}"
                    raise TimeoutError(msg)
                self._cond.wait(remaining)
