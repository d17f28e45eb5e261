"""Pushing the relay's metrics to a Pushgateway, done the way its rules need.

The relay's own synthetic driver could not fire an alert: it pushed constants
under a new ``instance`` every 10 s and posted histogram buckets one by one.
This pusher PUTs the whole registry (every family, each histogram whole with
its TYPE line, counters cumulative) under one stable grouping key (job
``relay_synth`` and a fixed ``instance``), so Prometheus sees one set of series
whose counters only grow.

prometheus-client's push is blocking urllib; it runs in a worker thread, one
push at a time, so the engine's loop never waits on the network. Failures back
off exponentially with jitter up to a cap, are counted in
``loadsim_push_failures_total``, and are logged once per outage (and once when
it ends), not once per attempt.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import delete_from_gateway, push_to_gateway

from loadsim.clock import Clock
from loadsim.net import LOOPBACK_ONLY, Reach, opener
from loadsim.redaction import redact

DEFAULT_JOB = "relay_synth"
DEFAULT_INSTANCE = "loadsim"


@dataclass(frozen=True, slots=True)
class PushTarget:
    """Where and how to push; the URL never carries credentials past this point."""

    url: str
    """Base URL without user info, e.g. ``http://127.0.0.1:9091``."""
    job: str = DEFAULT_JOB
    instance: str = DEFAULT_INSTANCE
    interval: float = 10.0
    timeout: float = 5.0
    keep_group: bool = False
    """Leave the group on the Pushgateway at a clean exit (default: delete it)."""
    shard: str | None = None
    """A fleet's shard index: a grouping key of its own per shard, so shards never replace each other's group."""
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    reach: Reach = LOOPBACK_ONLY
    """Where pushes may connect: loopback, unless the host was allowed by name (checked at every connection)."""

    @classmethod
    def parse(cls, url: str, **kwargs: Any) -> PushTarget:
        """Split ``http://user:pass@host:port`` into a clean URL and credentials."""
        if "://" not in url:
            url = f"http://{url}"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            msg = f"expected a Pushgateway URL such as http://127.0.0.1:9091, got {redact_url(url)!r}"
            raise ValueError(msg)
        netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        if ":" in (parts.hostname or "") and parts.port is not None:
            netloc = f"[{parts.hostname}]:{parts.port}"
        clean = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        return cls(url=clean, username=parts.username, password=parts.password, **kwargs)

    @property
    def host(self) -> str:
        """The Pushgateway's host name."""
        return urlsplit(self.url).hostname or ""

    @property
    def grouping_key(self) -> dict[str, str]:
        """The stable grouping key (besides the job); a fleet's shards add their index."""
        return {"instance": self.instance} if self.shard is None else {"instance": self.instance, "shard": self.shard}


def redact_url(url: str) -> str:
    """The URL with its credentials masked (:func:`loadsim.redaction.redact`)."""
    return redact(url)


class Pusher:
    """Pushes a registry on an interval of its clock's time, off the event loop."""

    def __init__(
        self,
        target: PushTarget,
        registry: CollectorRegistry,
        health_registry: CollectorRegistry | None,
        log: Any,
        *,
        clock: Clock,
        serving: Any = None,
        rng: random.Random | None = None,
    ) -> None:
        self.target = target
        self.registry = registry
        self.log = log
        self.clock = clock
        self.serving = serving if serving is not None else (lambda: True)
        """When this returns False (metrics-missing), the group is deleted and pushes pause."""
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        reg = health_registry
        self.failures = Counter("loadsim_push_failures", "Pushes that failed", registry=reg)
        self.pushes = Counter("loadsim_pushes", "Pushes that succeeded", registry=reg)
        self.last_success = Gauge("loadsim_push_last_success_unixtime", "Time of the last good push", registry=reg)
        self._pushed = self._failed = 0
        self._last_success = 0.0
        self._task: asyncio.Task[None] | None = None
        self._outage_since: float | None = None
        self._last_ok: float | None = None
        self._failed_attempts = 0
        self._deleted = False
        self.backoff_cap = 30.0
        """Longest wait between retries during an outage: recovery is seen within this long."""

    def _handler(
        self, url: str, method: str, timeout: float | None, headers: list[tuple[str, str]], data: bytes
    ) -> Callable[[], None]:
        """prometheus-client's handler contract, on an opener that checks each connection against the reach."""
        target = self.target

        def handle() -> None:
            request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - http(s) checked by parse
            for name, value in headers:
                request.add_header(name, value)
            if target.username is not None:
                pair = f"{target.username}:{target.password or ''}".encode()
                request.add_header("Authorization", "Basic " + base64.b64encode(pair).decode("ascii"))
            with opener(target.reach).open(request, timeout=timeout) as response:
                if response.status >= 400:
                    raise OSError(f"error talking to pushgateway: {response.status} {response.reason}")

        return handle

    def snapshot(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """For a checkpoint: the push counters, so a restarted run's continue (never backwards)."""
        return {"pushes": self._pushed, "failures": self._failed, "last_success": self._last_success}, {}

    def restore(self, part: tuple[dict[str, Any], dict[str, Any]]) -> None:
        """Put :meth:`snapshot` back (before the first push)."""
        meta = part[0]
        pushed, failed, last = int(meta["pushes"]), int(meta["failures"]), float(meta["last_success"])
        if min(pushed, failed) < 0:
            raise ValueError(f"push counters must be >= 0, got {pushed} and {failed}")
        self._count(pushed, failed)
        if last > 0:
            self._last_success = last
            self.last_success.set(last)

    def _count(self, pushed: int = 0, failed: int = 0) -> None:
        self._pushed += pushed
        self._failed += failed
        if pushed:
            self.pushes.inc(pushed)
        if failed:
            self.failures.inc(failed)

    def push_now(self) -> None:
        """One blocking PUT of the whole registry (call it off the loop)."""
        push_to_gateway(
            self.target.url,
            job=self.target.job,
            registry=self.registry,
            grouping_key=self.target.grouping_key,
            timeout=self.target.timeout,
            handler=self._handler,
        )

    def delete_now(self) -> None:
        """One blocking DELETE of the group (call it off the loop)."""
        delete_from_gateway(
            self.target.url,
            job=self.target.job,
            grouping_key=self.target.grouping_key,
            timeout=self.target.timeout,
            handler=self._handler,
        )

    async def attempt(self) -> bool:
        """Push (or delete, while metrics are to be missing) once; returns success."""
        try:
            if self.serving():
                await asyncio.to_thread(self.push_now)
                self._deleted = False
            elif not self._deleted:
                await asyncio.to_thread(self.delete_now)
                self._deleted = True
        except Exception as e:  # noqa: BLE001 - any failure of the push is an outage, never a crash
            self._count(failed=1)
            self._failed_attempts += 1
            if self._outage_since is None:
                self._outage_since = self.clock.now()
                self.log.warning("push.outage", url=self.target.url, error=_describe(e))
            return False
        self._count(pushed=1)
        self._last_ok = self.clock.now()
        self._last_success = self.clock.wall()
        self.last_success.set(self._last_success)
        if self._outage_since is not None:
            self.log.info(
                "push.recovered",
                url=self.target.url,
                outage_seconds=round(self.clock.now() - self._outage_since, 1),
                failed_attempts=self._failed_attempts,
            )
            self._outage_since = None
            self._failed_attempts = 0
        return True

    def status(self) -> tuple[bool, str]:
        """For people (the live view): healthy or not, and since when."""
        now = self.clock.now()
        if self._outage_since is not None:
            return False, f"failing for {now - self._outage_since:.0f}s ({self._failed_attempts} attempts)"
        if self._last_ok is None:
            return True, "starting"
        return True, f"ok, last {now - self._last_ok:.0f}s ago"

    def next_delay(self) -> float:
        """The interval when healthy; capped exponential backoff with full jitter during an outage."""
        if self._failed_attempts == 0:
            return self.target.interval
        ceiling: float = min(self.backoff_cap, 0.5 * 2.0 ** min(self._failed_attempts, 16))
        jitter: float = self._rng.uniform(0.5, 1.0)
        return jitter * ceiling

    def start(self) -> None:
        """Start pushing in the background."""
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await self.attempt()
            await self.clock.sleep(self.next_delay())

    async def stop(self, *, final: bool = True, deadline: float = 5.0) -> bool:
        """Stop the loop and make a final push (retrying until ``deadline`` seconds).

        Then delete the group unless asked to keep it. Returns whether the final push landed.
        """
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if not final:
            return True
        end = self.clock.now() + deadline
        ok = await self.attempt()
        while not ok and self.clock.now() < end:
            await self.clock.sleep(min(self.next_delay(), max(end - self.clock.now(), 0)))
            ok = await self.attempt()
        if ok and not self.target.keep_group:
            try:
                await asyncio.to_thread(self.delete_now)
            except Exception as e:  # noqa: BLE001 - the run's result does not depend on the cleanup
                self.log.warning("push.delete_failed", url=self.target.url, error=_describe(e))
        if not ok:
            self.log.error("push.final_failed", url=self.target.url, failed_attempts=self._failed_attempts)
        return ok


def _describe(e: Exception) -> str:
    return f"{type(e).__name__}: {e}"[:300]
