"""The ``/metrics`` endpoint (and ``/healthz``, ``/readyz``) on aiohttp, loopback by default.

The handler renders the registry on the event loop: a render is a few hundred
lines built from one locked snapshot, much cheaper than a window of sends, and
aiohttp writes the response asynchronously, so a slow scraper never holds the
engine.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from loadsim.logs import http_server_logger
from loadsim.net import ListenAddress


class MetricsServer:
    """Serves one registry; ``ready`` decides what ``/readyz`` answers."""

    def __init__(
        self, registry: CollectorRegistry, ready: Callable[[], bool], serving: Callable[[], bool] = lambda: True
    ) -> None:
        self.registry = registry
        self.ready = ready
        self.serving = serving
        """False answers scrapes with 503: Prometheus sees ``up == 0`` and the series go stale."""
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, address: ListenAddress) -> None:
        """Bind and serve; raises OSError when the address cannot be bound."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, logger=http_server_logger("metrics_server")
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, address.host, address.port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        server = site._server  # noqa: SLF001 - aiohttp exposes the bound port only here
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else address.port

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, _request: web.Request) -> web.Response:
        if not self.serving():
            why = "metrics unavailable (metrics-missing overlay, or no checkpoint yet)\n"
            return web.Response(status=503, text=why)
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        if self.ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not running its schedule\n")
