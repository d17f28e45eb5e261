"""Open a local HTML file in a real headless Chromium and report what it did: requests, element sizes, a screenshot.

Chromium (Debian's package) is started with remote debugging on a free loopback
port and driven over the Chrome DevTools Protocol with aiohttp's websocket client
(already a loadsim dependency, so no browser-automation package is needed). The
flags are the ones a closed-network machine needs (no background networking, no
component updates). Every request the page makes is recorded from the Network
domain, so a test can assert that a report opened from disk asks the network for
nothing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from loadsim.clock import WallClock, wait_for

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--hide-scrollbars",
)


class BrowserError(Exception):
    """Chromium could not be started or driven."""


@dataclass
class Page:
    """What opening the file showed."""

    requests: list[str] = field(default_factory=list)
    """Every URL the page requested (the file itself included)."""
    sizes: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Element id -> (width, height) in CSS pixels, for the selector asked about."""
    screenshot: bytes = b""


def find_chromium() -> str | None:
    """Debian's chromium, if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Cdp:
    """One DevTools session: calls answered by id, events folded into the :class:`Page`."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, clock: WallClock, seconds: float, page: Page) -> None:
        self.ws = ws
        self.clock = clock
        self.seconds = seconds
        self.page = page
        self.loaded = asyncio.Event()
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}

    async def read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self._pending:
                self._pending.pop(data["id"]).set_result(data)
            elif data.get("method") == "Network.requestWillBeSent":
                self.page.requests.append(data["params"]["request"]["url"])
            elif data.get("method") == "Page.loadEventFired":
                self.loaded.set()

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        n = next(self._ids)
        self._pending[n] = asyncio.get_running_loop().create_future()
        await self.ws.send_json({"id": n, "method": method, "params": params})
        answer = await wait_for(self.clock, self._pending[n], self.seconds)
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result


async def _page_socket(http: aiohttp.ClientSession, port: int, clock: WallClock) -> str:
    """The websocket URL of the page Chromium opened (it answers once it is up)."""
    for _ in range(100):
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(f"http://127.0.0.1:{port}/json") as r:
                pages = [t for t in await r.json() if t.get("type") == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
        await clock.sleep(0.1)
    raise BrowserError("chromium did not open its debugging port")


async def _drive(port: int, url: str, selector: str, seconds: float) -> Page:
    clock, page = WallClock(), Page()
    async with aiohttp.ClientSession() as http:
        socket_url = await _page_socket(http, port, clock)
        async with http.ws_connect(socket_url, max_msg_size=0) as ws:
            cdp = _Cdp(ws, clock, seconds, page)
            reader = asyncio.create_task(cdp.read())
            try:
                await cdp.call("Network.enable")
                await cdp.call("Page.enable")
                await cdp.call("Page.navigate", url=url)
                await wait_for(clock, cdp.loaded.wait(), seconds)
                script = (
                    f"JSON.stringify(Array.from(document.querySelectorAll({json.dumps(selector)}))"
                    ".map(e => [e.id, e.getBoundingClientRect().width, e.getBoundingClientRect().height]))"
                )
                found = await cdp.call("Runtime.evaluate", expression=script, returnByValue=True)
                page.sizes = {i: (w, h) for i, w, h in json.loads(found["result"]["value"])}
                shot = await cdp.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
                page.screenshot = base64.b64decode(shot["data"])
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
    return page


def open_file(path: Path, selector: str = "[id]", *, width: int = 1100, seconds: float = 30.0) -> Page:
    """Open ``path`` in headless Chromium; the requests it made, the sizes of ``selector``'s elements, a screenshot."""
    binary = find_chromium()
    if binary is None:
        raise BrowserError("chromium is not installed (apt-get install chromium)")
    port = _free_port()
    profile = tempfile.mkdtemp(prefix="loadsim-chromium-")
    argv = [binary, *FLAGS, f"--remote-debugging-port={port}", f"--user-data-dir={profile}"]
    proc = subprocess.Popen(  # noqa: S603 - a resolved binary with fixed flags
        [*argv, f"--window-size={width},1000", "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        return asyncio.run(_drive(port, path.resolve().as_uri(), selector, seconds))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(profile, ignore_errors=True)
