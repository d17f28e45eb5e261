"""Reading a window back from Prometheus and Alertmanager over their HTTP APIs.

The report is a one-shot command, not a run: it asks, waits for each answer (each
call bounded by ``timeout``), and turns any failure into :class:`SourceError`, one
line that says which URL and why, so the CLI can refuse with exit 2.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
from dataclasses import dataclass
from typing import Any

from loadsim.net import LOOPBACK_ONLY, Reach, opener

Labels = dict[str, str]


class SourceError(Exception):
    """A source that cannot be read: the message names it and says why."""


@dataclass(frozen=True, slots=True)
class Series:
    """One range-query result: labels and ``(t, value)`` points."""

    labels: Labels
    points: list[tuple[float, float]]


def _get(url: str, timeout: float, reach: Reach) -> Any:
    try:
        with opener(reach).open(url, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        body = e.read().decode("utf-8", "replace")[:300]
        raise SourceError(f"{url.split('?', 1)[0]} answered {e.code}: {body}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise SourceError(f"{url.split('?', 1)[0]} cannot be read: {reason}") from None


class Prometheus:
    """Instant and range queries against one Prometheus."""

    def __init__(self, url: str, timeout: float = 30.0, reach: Reach = LOOPBACK_ONLY) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.reach = reach
        """Where its connections may go (checked at each one, redirects included)."""

    def _api(self, path: str, **params: str) -> Any:
        body = _get(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}", self.timeout, self.reach)
        if body.get("status") != "success":
            raise SourceError(f"{self.url}: {path} failed: {body.get('error')}")
        return body["data"]

    def check(self) -> None:
        """It answers as a Prometheus (SourceError otherwise)."""
        self._api("status/buildinfo")

    def query(self, expr: str, at: float) -> list[tuple[Labels, float]]:
        """An instant query at Unix time ``at``."""
        data = self._api("query", query=expr, time=f"{at:.3f}")
        if data["resultType"] == "scalar":
            return [({}, _float(data["result"][1]))]
        return [(dict(r["metric"]), _float(r["value"][1])) for r in data["result"]]

    def value(self, expr: str, at: float) -> float | None:
        """The single value of an instant query (None when empty)."""
        result = self.query(expr, at)
        return result[0][1] if result else None

    def range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        """A range query over ``[start, end]`` every ``step`` seconds."""
        data = self._api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}")
        return [Series(dict(r["metric"]), [(float(t), _float(v)) for t, v in r["values"]]) for r in data["result"]]


class Alertmanager:
    """The alerts, receivers and inhibitions an Alertmanager holds now."""

    def __init__(self, url: str, timeout: float = 10.0, reach: Reach = LOOPBACK_ONLY) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.reach = reach
        """Where its connections may go (checked at each one, redirects included)."""

    def alerts(self) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts``: every alert with its state, receivers and inhibitors."""
        result: list[dict[str, Any]] = _get(f"{self.url}/api/v2/alerts", self.timeout, self.reach)
        return result

    def status(self) -> dict[str, Any]:
        """``GET /api/v2/status``: the loaded configuration among others."""
        result: dict[str, Any] = _get(f"{self.url}/api/v2/status", self.timeout, self.reach)
        return result

    def receivers(self) -> list[str]:
        """The receivers the loaded configuration defines."""
        return [r["name"] for r in _get(f"{self.url}/api/v2/receivers", self.timeout, self.reach)]


def _float(text: str) -> float:
    return math.nan if text == "NaN" else float(text)
