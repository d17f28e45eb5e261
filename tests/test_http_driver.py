"""The HTTP driver against real aiohttp servers on loopback: rate, classification, safety."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pytest
from aiohttp import web

from loadsim.cli import main

EVEN = 'name = "http-test"\narrivals = "even"\n'


class LoopThread:
    """A server on 127.0.0.1 with its own event loop in a thread of its own (so the driver's loop stays clean)."""

    def __init__(self) -> None:
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def start(self) -> str:
        """Start serving on the thread's loop; returns the URL."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Stop serving, on the thread's loop."""

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self.url = self._loop.run_until_complete(self.start())
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> Self:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


class Server(LoopThread):
    """An aiohttp app recording what it received."""

    def __init__(self, status: int = 200, delay: float = 0.0, tls: ssl.SSLContext | None = None) -> None:
        super().__init__()
        self.tls = tls
        self.status = status
        self.delay = delay
        self.auth: list[str] = []
        self.paths: list[str] = []

    async def _send(self, request: web.Request) -> web.Response:
        await request.read()
        self.auth.append(request.headers.get("Authorization", ""))
        self.paths.append(request.path)
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.json_response({"id": "m1", "preview_id": "p1"}, status=self.status)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._send)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.tls)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"

    async def stop(self) -> None:
        await self.runner.cleanup()


@pytest.fixture
def server() -> Iterator[Server]:
    with Server() as s:
        yield s


def run(tmp_path: Path, *args: str) -> dict[str, object]:
    profile = tmp_path / "p.toml"
    profile.write_text(EVEN)
    out = tmp_path / "s.json"
    code = main(
        ["run", str(profile), "--driver", "http", "--no-listen", "--progress", "off", "--summary-json", str(out), *args]
    )
    assert code == 0
    return json.loads(out.read_text())


def test_holds_the_target_rate(server: Server, tmp_path: Path) -> None:
    s = run(tmp_path, "--target", server.url, "--rate", "400/s", "--duration", "5s")
    requests = s["requests"]
    assert isinstance(requests, dict)
    # Even arrivals: exactly 2000 due; achieved within 1% of the target, all answered 2xx.
    assert abs(requests["started"] - 2000) <= 20
    assert requests["dropped"] == 0
    assert s["by_result"] == {"2xx": requests["finished"]}
    assert abs(float(s["achieved_rate_per_s"]) - 400) / 400 < 0.01  # type: ignore[arg-type]
    assert all(p.startswith("/gmail/v1/users/user") and p.endswith("/messages/send") for p in server.paths)


def test_dead_target_gives_classified_errors_at_the_held_rate(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = run(
        tmp_path, "--target", f"http://127.0.0.1:{port}", "--rate", "300/s", "--duration", "3s", "--max-in-flight", "50"
    )
    requests = s["requests"]
    assert isinstance(requests, dict)
    assert s["by_result"] == {"connection_error": requests["finished"]}
    assert abs(requests["started"] + requests["dropped"] - 900) <= 9


def test_slow_target_is_measured_from_the_intended_start(tmp_path: Path) -> None:
    # 50 ms per answer and at most 5 in flight at 200/s: most arrivals are dropped and counted,
    # never queued, so the latency of those that ran stays near 50 ms.
    with Server(delay=0.05) as slow:
        s = run(tmp_path, "--target", slow.url, "--rate", "200/s", "--duration", "3s", "--max-in-flight", "5")
    requests = s["requests"]
    assert isinstance(requests, dict)
    assert requests["dropped"] > 300
    latency = s["latency_from_intended_seconds"]
    assert isinstance(latency, dict)
    assert 0.045 < latency["p50"] < 0.2


def test_relay_flow_previews_then_executes_with_the_token(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RELAY_TOKEN", "tok-s3cret-value")
    s = run(
        tmp_path,
        "--target",
        server.url,
        "--template",
        "relay",
        "--rate",
        "20/s",
        "--duration",
        "2s",
        "--token-env",
        "RELAY_TOKEN",
        "--log-level",
        "debug",
    )
    assert s["by_result"] == {"2xx": 40}
    assert server.paths.count("/actions/preview") == 40
    assert server.paths.count("/actions/execute") == 40
    assert set(server.auth) == {"Bearer tok-s3cret-value"}
    out, err = capsys.readouterr()
    assert "tok-s3cret" not in out + err + (tmp_path / "s.json").read_text()


class TestSafety:
    def test_non_loopback_target_is_refused(self, capsys: pytest.CaptureFixture[str]) -> None:
        code = main(["run", "--driver", "http", "--target", "http://example.com", "--rate", "50/s", "--duration", "3s"])
        assert code == 2
        assert capsys.readouterr().err.splitlines() == [
            "loadsim: --target: example.com is not on loopback; name it with --allow-target example.com to send to it",
            (
                "loadsim: --rate: peak 50/s to example.com is above the 10/s limit for non-loopback targets; "
                "raise it with --max-rate"
            ),
        ]

    def test_allowed_host_still_rate_capped(self, capsys: pytest.CaptureFixture[str]) -> None:
        code = main(
            [
                "run",
                "--driver",
                "http",
                "--target",
                "http://relay.internal",
                "--allow-target",
                "relay.internal",
                "--rate",
                "50/s",
                "--duration",
                "3s",
            ]
        )
        assert code == 2
        assert "above the 10/s limit for non-loopback targets" in capsys.readouterr().err

    def test_virtual_and_missing_token_env(self, capsys: pytest.CaptureFixture[str]) -> None:
        code = main(
            [
                "run",
                "--driver",
                "http",
                "--target",
                "http://127.0.0.1:9",
                "--virtual",
                "--token-env",
                "NO_SUCH_VAR_FOR_LOADSIM",
            ]
        )
        assert code == 2
        assert capsys.readouterr().err.splitlines() == [
            "loadsim: --virtual: the HTTP driver runs on the wall clock only",
            "loadsim: --token-env: environment variable NO_SUCH_VAR_FOR_LOADSIM is empty or unset",
        ]


class FakeGmailThread(LoopThread):
    """loadsim fake-gmail, with fast, error-prone outcomes."""

    def __init__(self, params: object) -> None:
        super().__init__()
        self.params = params

    async def start(self) -> str:
        from loadsim.fakegmail import serve
        from loadsim.net import ListenAddress

        self.fake = await serve(ListenAddress("127.0.0.1", 0), seed=3, params=self.params, quota=None, max_hold=0.5)  # type: ignore[arg-type]
        return str(self.fake.url)

    async def stop(self) -> None:
        await self.fake.stop()

    def control(self, method: str, path: str, body: dict[str, object] | None = None) -> int:
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.status)


def test_against_fake_gmail_the_mix_matches_the_model_and_an_overlay_shows(tmp_path: Path) -> None:
    from loadsim.model.params import LatencyParams, ModelParams

    errors = {"gmail_5xx": 0.05, "gmail_4xx": 0.05, "gmail_429": 0.0, "gmail_timeout": 0.0, "gmail_network_error": 0.0}
    params = ModelParams(latency=LatencyParams(p50=0.002, p95=0.004, tail_fraction=0.0), errors=errors)
    with FakeGmailThread(params) as fake:
        base = run(tmp_path, "--target", fake.url, "--rate", "300/s", "--duration", "4s", "--token-env", "HOME")
        assert (
            fake.control(
                "POST", "/control/overlays", {"scenario": "latency-crit", "options": {"p50": 0.05, "p95": 0.08}}
            )
            == 201
        )
        slow = run(tmp_path, "--target", fake.url, "--rate", "300/s", "--duration", "4s", "--token-env", "HOME")
        assert fake.control("DELETE", "/control/overlays/latency-crit") == 200
    by = base["by_result"]
    assert isinstance(by, dict)
    n = sum(by.values())
    # The model's own errors (the healthy extras are tiny next to 5% + 5%): binomial sd ~ 0.6%.
    share_5xx = by.get("5xx", 0) / n
    share_4xx = sum(v for k, v in by.items() if k.startswith("4xx")) / n
    assert abs(share_5xx - 0.05) < 0.025
    assert abs(share_4xx - 0.05) < 0.025
    base_p50 = base["latency_from_actual_seconds"]["p50"]  # type: ignore[index]
    slow_p50 = slow["latency_from_actual_seconds"]["p50"]  # type: ignore[index]
    assert base_p50 < 0.02
    assert 0.04 < slow_p50 < 0.1


def test_client_metrics_agree_with_the_summary(server: Server) -> None:
    # The bulk-fed families must say what one observe() per request would have said.
    from conftest import buckets, make_plan, scrape, total
    from prometheus_client import CollectorRegistry

    from loadsim.drivers.http import HttpOptions
    from loadsim.runtime.execute import RunOptions, execute

    plan = make_plan(
        name="m",
        arrivals="poisson",
        seed=3,
        duration="3s",
        schedule=[{"kind": "constant", "rate": 300}],
        engine={"max_in_flight": 40},
    )
    plan = dataclasses.replace(plan, virtual=False)
    registry = CollectorRegistry(auto_describe=False)
    options = RunOptions(listen=None, progress="off", http=HttpOptions(target=server.url, max_in_flight=40))
    s = asyncio.run(execute(plan, options, registry=registry))
    samples = scrape(registry)
    requests = s["requests"]
    assert requests["started"] > 500
    assert total(samples, "loadsim_http_requests_total", result="2xx") == requests["finished"] == requests["started"]
    assert total(samples, "loadsim_http_dropped_total") == requests["dropped"]
    for basis in ("intended", "actual"):
        assert total(samples, "loadsim_http_latency_seconds_count", basis=basis) == requests["finished"]
        cumulative = buckets(samples, "loadsim_http_latency_seconds", basis=basis)
        assert cumulative[-1][1] == requests["finished"]
        assert all(a[1] <= b[1] for a, b in itertools.pairwise(cumulative))
    # Every arrival that came due has its lateness recorded, dropped ones included.
    assert total(samples, "loadsim_http_start_lateness_seconds_count") == requests["started"] + requests["dropped"]
    assert total(samples, "loadsim_http_in_flight") == 0


def test_bulk_hdr_recording_matches_one_call_per_value() -> None:
    import numpy as np
    from hdrh.histogram import HdrHistogram

    from loadsim.drivers.http import HDR_MAX_US, _counts_view, record_bulk

    rng = np.random.default_rng(7)
    seconds = np.concatenate([rng.lognormal(np.log(0.003), 1.5, 20_000), [1e-7, 0.5, 599.0, 700.0]])
    bulk, one = HdrHistogram(1, HDR_MAX_US, 3), HdrHistogram(1, HDR_MAX_US, 3)
    record_bulk(bulk, seconds)
    for v in seconds.tolist():
        one.record_value(max(1, min(int(v * 1e6), HDR_MAX_US)))
    assert bulk.get_total_count() == one.get_total_count() == len(seconds)
    # The numpy path is taken (not the per-value fallback) and fills exactly the same counts.
    assert _counts_view(bulk) is not None
    assert list(bulk.counts) == list(one.counts)
    assert (bulk.get_min_value(), bulk.get_max_value()) == (one.get_min_value(), one.get_max_value())
    for q in (1, 10, 50, 90, 99, 99.9, 99.99, 100):
        assert bulk.get_value_at_percentile(q) == one.get_value_at_percentile(q), q


def test_gmail_payloads_are_well_formed_requests_with_the_models_shapes() -> None:
    import base64

    import numpy as np

    from loadsim.drivers.templates import GmailPayloads, Wire

    wire = Wire("http://127.0.0.1:9480/base/", "tok")
    payloads = GmailPayloads(wire, 50, np.random.default_rng(5), np.random.default_rng(6))
    batch = payloads.draw(4000)
    recipients, html = [], []
    for i in range(4000):
        head, body = payloads.build(batch, i).split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        assert lines[0].startswith("POST /base/gmail/v1/users/user")
        assert lines[0].endswith("@example.com/messages/send HTTP/1.1")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        assert headers["Host"] == "127.0.0.1:9480"
        assert headers["Authorization"] == "Bearer tok"
        assert int(headers["Content-Length"]) == len(body)
        raw = json.loads(body)["raw"]
        mime = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        to = mime.split("\r\n", 1)[0].removeprefix("To: ").split(", ")
        recipients.append(len(to))
        html.append(len(mime.split("\r\n\r\n", 1)[1]))
    # 1 + Poisson(0.6) recipients: mean 1.6 (sd of the mean 0.012); HTML log-normal median 1,500 bytes.
    assert abs(np.mean(recipients) - 1.6) < 0.05
    assert 1400 < np.median(html) < 1600
    assert min(html) >= 50


def test_a_token_that_would_inject_headers_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RELAY_TOKEN", "abc\r\nX-Evil: 1")
    code = main(
        ["run", "--driver", "http", "--target", "http://127.0.0.1:9", "--rate", "1/s", "--token-env", "RELAY_TOKEN"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "loadsim: --token-env: the token has control or non-ASCII characters; expected a bearer token"
    ]
    assert "abc" not in err


def test_gmail_bodies_pieced_together_equal_encoding_the_message_whole() -> None:
    import base64

    import numpy as np

    from loadsim.drivers.templates import GmailPayloads, Wire

    rngs = np.random.default_rng(8), np.random.default_rng(9)
    payloads = GmailPayloads(Wire("http://127.0.0.1:9480", None), 50, *rngs)
    batch = payloads.draw(3000)
    for i in range(60):  # below the model's 50-byte floor too: no filler to align with
        batch.html[i] = i
    for i in range(3000):
        body = json.loads(payloads.build(batch, i).split(b"\r\n\r\n", 1)[1])["raw"]
        mime = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        assert base64.urlsafe_b64encode(mime).decode().rstrip("=") == body
        assert mime.endswith(b"<p>" + b"x" * max(batch.html[i] - 7, 0) + b"</p>"), i


def test_https_target_verified_against_the_given_ca(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    assert openssl, "openssl is part of every Debian system"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    with Server(tls=tls) as secure:
        trusted = run(tmp_path, "--target", secure.url, "--rate", "100/s", "--duration", "2s", "--ca-file", str(cert))
        untrusted = run(tmp_path, "--target", secure.url, "--rate", "20/s", "--duration", "1s")
    assert trusted["by_result"] == {"2xx": 200}
    assert len(secure.paths) == 200
    # Without the CA the certificate is not trusted: every request fails, none reaches the server.
    assert set(untrusted["by_result"]) == {"connection_error"}


@pytest.mark.parametrize(("content", "why"), [(None, "file not found"), ("not a cert\n", "not a PEM certificate")])
def test_an_unusable_ca_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, why: str
) -> None:
    ca = tmp_path / "ca.pem"
    if content is not None:
        ca.write_text(content)
    code = main(["run", "--driver", "http", "--target", "https://127.0.0.1:9", "--rate", "1/s", "--ca-file", str(ca)])
    assert code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"loadsim: --ca-file: cannot use {ca} (")
    assert why in line
    assert line.endswith("); expected a PEM CA certificate")


class TestDispatcherOnAManualClock:
    """The HTTP driver's own timing, with time moved by the test: real requests, no sleeping."""

    def test_each_request_starts_when_its_time_comes_and_not_before(self) -> None:
        from conftest import make_plan, scrape, total

        from loadsim.clock import ManualClock
        from loadsim.drivers.http import HttpOptions
        from loadsim.runtime.factory import build

        plan = dataclasses.replace(
            make_plan(name="d", arrivals="even", seed=1, duration="1s", schedule=[{"kind": "constant", "rate": 100}]),
            virtual=False,
        )

        async def main(url: str) -> None:
            clock = ManualClock()
            run = build(plan, http=HttpOptions(target=url, connections=4), clock=clock)
            await run.driver.open()
            task = asyncio.create_task(run.engine.run())
            try:
                seen = []
                for t in (0.0995, 0.2995, 0.6995):
                    await clock.advance(t - clock.now())
                    run.engine.snapshot()  # settles the driver's counts into the engine's
                    seen.append(run.engine.counts.started)
                # Even arrivals at 100/s are due at 0.00, 0.01, ...: 10, 30 and 70 of them by these times.
                assert seen == [10, 30, 70]
                await clock.run_until(task.done, step=0.05, limit=40.0)
                await task
            finally:
                await run.driver.close()
            s = scrape(run.registry)
            assert total(s, "loadsim_http_requests_total", result="2xx") == 100
            # Started within the dispatcher's 1 ms slice of their time, on the clock's own time.
            assert total(s, "loadsim_http_start_lateness_seconds_bucket", le="0.001") == 100

        with Server() as server:
            asyncio.run(main(server.url))

    def test_arrivals_handed_over_but_not_started_at_a_kill_count_as_missed_after_the_restart(self) -> None:
        """A checkpoint between a hand-over and its dispatch: every arrival is started, dropped or missed, once."""
        from conftest import make_plan

        from loadsim.clock import ManualClock
        from loadsim.drivers.http import HttpOptions
        from loadsim.engine import checkpoint
        from loadsim.runtime.factory import build

        plan = dataclasses.replace(
            make_plan(name="k", arrivals="even", seed=1, duration="1s", schedule=[{"kind": "constant", "rate": 100}]),
            virtual=False,
        )
        identity = checkpoint.Identity(plan.name, plan.seed, plan.fingerprint, virtual=False, epoch=0.0, driver="http")

        async def main(url: str) -> tuple[int, int, int]:
            clock = ManualClock()
            first = build(plan, http=HttpOptions(target=url, connections=4), clock=clock)
            await first.driver.open()
            task = asyncio.create_task(first.engine.run())
            await clock.advance(0.2995)
            # As the state keeper takes it: the engine (which settles the driver), then the driver.
            ck = checkpoint.capture(identity, {"engine": first.engine, "driver": first.driver})
            waiting = int(ck.parts["driver"][0]["waiting"])
            task.cancel()  # killed: no drain, no later checkpoint
            await first.driver.close()
            second_clock = ManualClock(start=0.5)
            second = build(plan, http=HttpOptions(target=url, connections=4), clock=second_clock)
            await second.driver.open()
            meta, arrays = ck.parts["driver"]
            crafted = checkpoint.Checkpoint(ck.meta, {**ck.parts, "driver": ({**meta, "waiting": -3}, arrays)})
            with pytest.raises(checkpoint.StateError, match=r"driver part does not fit .*waiting \(-3\)"):
                checkpoint.restore(crafted, {"driver": build(plan, http=HttpOptions(target=url)).driver})
            checkpoint.restore(ck, {"engine": second.engine, "driver": second.driver})
            second.engine.skip_to(second_clock.now())  # as a resumed run does: the downtime is missed
            task = asyncio.create_task(second.engine.run())
            try:
                await second_clock.run_until(task.done, step=0.05, limit=40.0)
                await task
            finally:
                await second.driver.close()
            c = second.engine.counts
            return waiting, c.scheduled + c.missed, c.missed

        with Server() as server:
            waiting, accounted, missed = asyncio.run(main(server.url))
        # The engine had handed over to the end of its window at 0.2995 (ahead by a lead): a few arrivals
        # were waiting for their time, never to be started by either run.
        assert waiting > 0
        assert accounted == 100, (waiting, missed)
