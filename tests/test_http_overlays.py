"""Fault overlays on real traffic: Gmail-side ones through fake-gmail's control API, input-side ones in the requests.

Real servers on loopback (fake-gmail, a counting relay stand-in), the real HTTP driver,
one ``execute`` as ``loadsim run --driver http`` uses; per-window figures are read from
the driver's own ``loadsim_http_`` families after every engine window, the way a
Prometheus scrape would read them.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import uvloop
from aiohttp import web
from conftest import buckets, histogram_quantile, scrape
from prometheus_client import CollectorRegistry
from test_http_driver import FakeGmailThread, LoopThread

from loadsim.cli import main
from loadsim.drivers.http import HttpOptions
from loadsim.drivers.templates import relay_defect
from loadsim.model.params import LatencyParams, ModelParams
from loadsim.overlays.scenarios import SCENARIOS
from loadsim.overlays.state import RunState
from loadsim.plan import RunPlan, build_plan
from loadsim.profile import EMBEDDED_DEFAULT, parse_profile
from loadsim.runtime.execute import RunOptions, execute


def plan_for(rate: str, duration: str, *overlays: dict[str, Any]) -> RunPlan:
    profile = {"name": "http-overlays", "arrivals": "even", "seed": 5, "duration": duration}
    profile |= {"schedule": [{"kind": "constant", "rate": rate}], "overlay": list(overlays)}
    return build_plan(parse_profile(profile, "test"), virtual=False)


class TestGmailSideThroughFaultControl:
    def test_latency_overlay_moves_p50_inside_its_window_and_back(self) -> None:
        """latency-crit from 3 s to 7 s with ``--fault-control``: per-second p50 rises inside, falls after."""
        fast = ModelParams(latency=LatencyParams(p50=0.002, p95=0.004, tail_fraction=0.0), errors={})
        # The overlay's own figures kept small so the test is quick: p50 200 ms, p95 400 ms.
        overlay = {"scenario": "latency-crit", "start": "3s", "duration": "4s", "options": {"p50": 0.2, "p95": 0.4}}
        plan = plan_for("100/s", "10s", overlay)
        registry = CollectorRegistry(auto_describe=False)
        per_window: list[tuple[float, list[tuple[float, float]]]] = []

        def record(t: float, _state: RunState) -> None:
            per_window.append((t, buckets(scrape(registry), "loadsim_http_latency_seconds", basis="actual")))

        with FakeGmailThread(fast) as fake:
            http = HttpOptions(target=fake.url, token="t", fault_control=fake.url, connections=64)
            options = RunOptions(listen=None, progress="off", http=http)
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                summary = runner.run(execute(plan, options, after_window=[record], registry=registry))
            overlays_seen = list(fake.fake.overlays.timeline.overlays)
        p50 = per_second_p50(per_window)
        assert max(p50[s] for s in range(3)) < 0.02, p50
        assert all(0.1 < p50[s] < 0.35 for s in range(4, 7)), p50
        assert max(p50[s] for s in range(8, 10)) < 0.02, p50
        # The fake saw exactly one latency-crit overlay, with the options, stopped after about 4 s.
        assert [o.name for o in overlays_seen] == ["latency-crit"]
        assert dict(overlays_seen[0].options) == {"p50": 0.2, "p95": 0.4}
        assert 3.5 < overlays_seen[0].duration < 4.5
        assert summary["fault_control"]["failed"] == 0
        assert summary["fault_control"]["calls"] >= 2  # POST at the start, DELETE at the end


def per_second_p50(per_window: list[tuple[float, list[tuple[float, float]]]]) -> dict[int, float]:
    """p50 of the requests that completed in each second of run time, from cumulative bucket counts."""
    out: dict[int, float] = {}
    last: dict[float, float] = {}
    second = 0
    for t, cumulative in per_window:
        if t >= second + 1 - 1e-9:
            delta = [(le, n - last.get(le, 0.0)) for le, n in cumulative]
            out[second] = histogram_quantile(0.5, delta) if delta and delta[-1][1] > 0 else math.nan
            last = dict(cumulative)
            second = int(t + 1e-9)
    return out


class Relay(LoopThread):
    """A relay stand-in that counts the previews it receives by the validation code their params would get.

    Bodies over 30 MB (the size defects: one attachment over 25 MiB, or three making more than
    50 MiB) are read and measured, not parsed: ``relay_defect`` itself is checked against every
    code in tests/test_templates.py, and parsing 70 MB of JSON per request would make this
    test about the server's JSON parser.
    """

    def __init__(self) -> None:
        super().__init__()
        self.defects: Counter[str | None] = Counter()

    async def _preview(self, request: web.Request) -> web.Response:
        if (request.content_length or 0) > BIG:
            size = 0
            async for chunk in request.content.iter_any():
                size += len(chunk)
            self.defects[_by_size(size)] += 1
        else:
            body = json.loads(await request.read())
            self.defects[relay_defect(body["params"])] += 1
        return web.json_response({"preview_id": "p"})

    async def _execute(self, request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"status": "sent"})

    async def start(self) -> str:
        app = web.Application(client_max_size=200 * 1024 * 1024)
        app.router.add_post("/actions/preview", self._preview)
        app.router.add_post("/actions/execute", self._execute)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

    async def stop(self) -> None:
        await self.runner.cleanup()


BIG = 30_000_000


def _by_size(body_bytes: int) -> str:
    # One 25 MiB + 1 attachment is about 35 MB of base64 JSON; three 17 MB ones about 70 MB.
    too_large, total = "validation_error_attachment_too_large", "validation_error_total_size_exceeded"
    return total if body_bytes > 60_000_000 else too_large


class TestInputSide:
    def test_validation_spike_sends_the_scenarios_share_of_invalid_payloads(self, tmp_path: Path) -> None:
        """What the relay receives while validation-spike runs is invalid at the scenario's share, with its codes."""
        out = tmp_path / "s.json"
        with Relay() as relay:
            code = main(
                [
                    "run", "--driver", "http", "--target", relay.url, "--template", "relay",
                    "--rate", "100/s", "--duration", "6s", "--overlay", "validation-spike@0s+6s",
                    "--no-listen", "--progress", "off", "--summary-json", str(out), "--seed", "3",
                ]
            )  # fmt: skip
        assert code == 0
        n = sum(relay.defects.values())
        assert n > 550
        spike = SCENARIOS["validation-spike"]
        base = RunState(model=ModelParams(), controller=EMBEDDED_DEFAULT.controller)
        spiked = spike.apply(base, 1.0, spike.options).model
        codes = [c for c in spiked.errors if c.startswith("validation_error_")]
        want = sum(spiked.errors[c] for c in codes)
        invalid = n - relay.defects[None]
        sd = math.sqrt(want * (1 - want) / n)
        assert abs(invalid / n - want) < 4 * sd, (invalid / n, want)
        # The mix follows the scenario too: the most common code is attachment-too-large (30% of the spike).
        top = relay.defects.most_common(2)[1][0]
        assert top == "validation_error_attachment_too_large"
        summary = json.loads(out.read_text())
        assert summary["requests"]["started"] == n

    def test_without_the_overlay_the_background_is_almost_all_valid(self) -> None:
        with Relay() as relay:
            code = main(
                [
                    "run", "--driver", "http", "--target", relay.url, "--template", "relay",
                    "--rate", "400/s", "--duration", "3s", "--no-listen", "--progress", "off", "--seed", "3",
                ]
            )  # fmt: skip
        assert code == 0
        n = sum(relay.defects.values())
        assert relay.defects[None] / n > 0.99
