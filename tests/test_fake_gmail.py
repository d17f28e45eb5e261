"""The fake Gmail: a real aiohttp server on 127.0.0.1:0 driven by a real aiohttp client.

Latencies are scaled down to milliseconds and timed-out calls are held for well
under a second, so the whole file runs in a few seconds; every outcome sequence is
fixed by its seed, and figures drawn from it are checked within binomial tolerance.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import math
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from conftest import sample_value

from loadsim.errors import ConfigError
from loadsim.fakegmail import (
    GMAIL_OUTCOMES,
    CallSampler,
    FakeGmail,
    QuotaParams,
    UserQuota,
    bearer_token,
    config_from_args,
    is_base64url,
    main_args,
    run_from_args,
    serve,
)
from loadsim.model.params import LatencyParams, ModelParams
from loadsim.net import ListenAddress

LOOPBACK = ListenAddress("127.0.0.1", 0)
FAST = LatencyParams(p50=0.001, p95=0.002, tail_fraction=0.0, network_error_p50=0.002)
QUIET = ModelParams(latency=FAST, errors=dict.fromkeys(GMAIL_OUTCOMES[1:], 0.0))
"""Millisecond calls and no Gmail-side errors: every admitted send is a 200."""
NOISY_ERRORS = {
    "gmail_429": 0.04,
    "gmail_4xx": 0.08,
    "gmail_5xx": 0.10,
    "gmail_timeout": 0.03,
    "gmail_network_error": 0.05,
}
NOISY = ModelParams(latency=FAST, errors=NOISY_ERRORS)
PADDED = base64.urlsafe_b64encode(b"To: bob@example.com\r\nSubject: hi\r\n\r\n<p>hello</p>!").decode()
RAW = PADDED.rstrip("=")
"""Gmail takes base64url with or without padding."""


@dataclass
class Result:
    """What a client saw for one send."""

    kind: str
    """The HTTP status as text, ``timeout`` or ``network``."""
    seconds: float
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def running(**kwargs: Any) -> AsyncIterator[tuple[FakeGmail, aiohttp.ClientSession]]:
    fake = await serve(LOOPBACK, **kwargs)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
            yield fake, session
    finally:
        await fake.stop()


async def send(
    session: aiohttp.ClientSession,
    fake: FakeGmail,
    *,
    token: str | None = "alice",
    user: str = "me",
    body: Any = None,
    data: bytes | None = None,
    timeout: float = 5.0,
) -> Result:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    kwargs: dict[str, Any] = {"data": data} if data is not None else {"json": {"raw": RAW} if body is None else body}
    url = f"{fake.url}/gmail/v1/users/{user}/messages/send"
    start = time.monotonic()
    try:
        async with session.post(
            url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout), **kwargs
        ) as response:
            payload = await response.json()
            return Result(str(response.status), time.monotonic() - start, payload, dict(response.headers))
    except TimeoutError:
        return Result("timeout", time.monotonic() - start)
    except aiohttp.ClientConnectionError:
        return Result("network", time.monotonic() - start)


async def many(n: int, concurrency: int, one: Callable[[int], Awaitable[Result]]) -> list[Result]:
    gate = asyncio.Semaphore(concurrency)

    async def bounded(i: int) -> Result:
        async with gate:
            return await one(i)

    return list(await asyncio.gather(*(bounded(i) for i in range(n))))


async def control(
    session: aiohttp.ClientSession, fake: FakeGmail, method: str, path: str, **kw: Any
) -> tuple[int, Any]:
    async with session.request(method, f"{fake.url}/control{path}", **kw) as response:
        return response.status, await response.json()


async def scrape(session: aiohttp.ClientSession, fake: FakeGmail) -> str:
    async with session.get(f"{fake.url}/metrics") as response:
        return await response.text()


def family(kind: str) -> str:
    if kind in ("timeout", "network", "200", "429"):
        return kind
    return f"{kind[0]}xx"


class TestStatusMix:
    def test_status_mix_over_2000_sends_matches_the_models_probabilities(self) -> None:
        n = 2000

        async def scenario() -> tuple[list[Result], str]:
            async with running(seed=11, params=NOISY, quota=None, max_hold=1.0) as (fake, session):
                # Timed-out calls are held 1 s, past this client's 0.5 s timeout.
                results = await many(n, 50, lambda i: send(session, fake, token=f"user{i}", timeout=0.5))
                return results, await scrape(session, fake)

        results, metrics = asyncio.run(scenario())
        seen = Counter(family(r.kind) for r in results)
        expected = {
            "200": 1 - sum(NOISY_ERRORS.values()),
            "429": NOISY_ERRORS["gmail_429"],
            "4xx": NOISY_ERRORS["gmail_4xx"],
            "5xx": NOISY_ERRORS["gmail_5xx"],
            "timeout": NOISY_ERRORS["gmail_timeout"],
            "network": NOISY_ERRORS["gmail_network_error"],
        }
        assert set(seen) <= set(expected), seen
        for kind, p in expected.items():
            tolerance = 5 * math.sqrt(n * p * (1 - p))
            assert abs(seen[kind] - n * p) <= tolerance, (kind, seen[kind], n * p)
        for r in results:
            if r.kind not in ("200", "timeout", "network"):
                error = r.body["error"]
                assert error["code"] == int(r.kind)
                assert error["status"].isupper()
                assert error["errors"][0]["domain"] in ("global", "usageLimits")
                assert error["errors"][0]["reason"]
        # The model's own 429s carry no Retry-After (only the quota's do).
        assert all("Retry-After" not in r.headers for r in results if r.kind == "429")
        assert sample_value(metrics, "fakegmail_outcomes_total", outcome="gmail_timeout") == seen["timeout"]
        assert sample_value(metrics, "fakegmail_requests_total", code="closed") == seen["network"]
        assert sample_value(metrics, "fakegmail_requests_total", code="200") == seen["200"]

    def test_same_seed_same_outcomes_and_latencies(self) -> None:
        def draw(seed: int) -> list[tuple[str, float]]:
            sampler = CallSampler(NOISY, np.random.Generator(np.random.PCG64(seed)), batch=16)
            return [(c.outcome, c.latency) for c in (sampler.next() for _ in range(200))]

        assert draw(5) == draw(5)
        assert draw(5) != draw(6)

    def test_samples_the_call_latency_without_the_mime_build(self) -> None:
        sampler = CallSampler(ModelParams(errors=dict.fromkeys(GMAIL_OUTCOMES[1:], 0.0)), np.random.default_rng(1))
        latencies = [sampler.next().latency for _ in range(4000)]
        # The healthy call latency is p50 140 ms; the MIME build would add ~8 ms more.
        assert 0.135 < statistics.median(latencies) < 0.145
        assert sampler.probabilities()["ok"] == 1.0


class TestRequests:
    def test_a_send_answers_gmail_shaped_ids_and_echoes_the_thread(self) -> None:
        async def scenario() -> tuple[Result, Result, str]:
            async with running(seed=1, params=QUIET) as (fake, session):
                fresh = await send(session, fake)
                reply = await send(session, fake, body={"raw": PADDED, "threadId": "18c0ffee00000001"})
                async with session.get(f"{fake.url}/healthz") as r:
                    health = await r.text()
                return fresh, reply, health

        fresh, reply, health = asyncio.run(scenario())
        assert fresh.kind == "200"
        assert fresh.body["labelIds"] == ["SENT"]
        assert len(fresh.body["id"]) == 16
        assert int(fresh.body["id"], 16) >= 0
        assert fresh.body["threadId"] == fresh.body["id"]
        assert reply.kind == "200"
        assert reply.body["threadId"] == "18c0ffee00000001"
        assert health == "ok\n"

    @pytest.mark.parametrize(
        ("data", "body", "reason"),
        [
            (b"{not json", None, "parseError"),
            (None, ["raw", RAW], "invalid"),
            (None, {}, "invalidArgument"),
            (None, {"raw": ""}, "invalidArgument"),
            (None, {"raw": 42}, "invalidArgument"),
            (None, {"raw": "abc+def/"}, "invalid"),
            (None, {"raw": "abcde"}, "invalid"),
            (None, {"raw": "ab=c"}, "invalid"),
            (None, {"raw": "hello world"}, "invalid"),
        ],
    )
    def test_a_body_gmail_cannot_read_is_a_400(self, data: bytes | None, body: Any, reason: str) -> None:
        async def scenario() -> Result:
            async with running(seed=1, params=QUIET) as (fake, session):
                return await send(session, fake, data=data, body=body)

        result = asyncio.run(scenario())
        assert result.kind == "400"
        assert result.body["error"]["status"] == "INVALID_ARGUMENT"
        assert result.body["error"]["errors"][0] == {
            "message": result.body["error"]["message"],
            "domain": "global",
            "reason": reason,
        }

    @pytest.mark.parametrize("header", [None, "", "Basic YWxpY2U6cHc=", "Bearer", "Bearer   ", "Bearer alice-expired"])
    def test_a_missing_or_expired_token_is_a_401(self, header: str | None) -> None:
        async def scenario() -> tuple[Result, str]:
            async with running(seed=1, params=QUIET) as (fake, session):
                headers = {} if header is None else {"Authorization": header}
                async with session.post(
                    f"{fake.url}/gmail/v1/users/me/messages/send", json={"raw": RAW}, headers=headers
                ) as r:
                    result = Result(str(r.status), 0.0, await r.json(), dict(r.headers))
                return result, await scrape(session, fake)

        result, metrics = asyncio.run(scenario())
        assert result.kind == "401"
        assert result.body["error"]["status"] == "UNAUTHENTICATED"
        assert result.body["error"]["errors"][0]["reason"] == "authError"
        assert result.body["error"]["errors"][0]["location"] == "Authorization"
        assert 'error="invalid_token"' in result.headers["WWW-Authenticate"]
        assert sample_value(metrics, "fakegmail_requests_total", code="401") == 1
        assert sample_value(metrics, "fakegmail_outcomes_total", outcome="ok") == 0

    def test_helpers_read_tokens_and_base64url(self) -> None:
        assert bearer_token("Bearer ya29.abc") == "ya29.abc"
        assert bearer_token("bearer  tok ") == "tok"
        assert bearer_token("Bearer") is None
        assert is_base64url("aGk") is True
        assert is_base64url("aGk=") is True
        assert is_base64url("aGk==") is False
        assert is_base64url("-_-_") is True
        assert is_base64url("+/+/") is False


class TestQuota:
    def test_token_bucket_worked_example(self) -> None:
        quota = UserQuota(QuotaParams(rate=2.5, burst=10))
        assert [quota.take("a", 0.0) for _ in range(10)] == [0.0] * 10
        assert quota.take("a", 0.0) == pytest.approx(0.4)
        assert quota.take("b", 0.0) == 0.0
        assert quota.take("a", 0.2) == pytest.approx(0.2)
        assert quota.take("a", 0.4) == 0.0
        assert quota.take("a", 0.4) == pytest.approx(0.4)
        # Idle long enough, the bucket is full again (and never above the burst).
        assert [quota.take("a", 100.0) for _ in range(11)][-2:] == [0.0, pytest.approx(0.4)]

    def test_full_buckets_are_forgotten(self) -> None:
        quota = UserQuota(QuotaParams(rate=1.0, burst=2))
        for i in range(5000):
            quota.take(f"u{i}", float(i))
        assert len(quota) < 4096

    @pytest.mark.parametrize(("kwargs", "message"), [({"rate": 0.0}, "rate must be > 0"), ({"burst": 0.5}, "burst")])
    def test_bad_quota_params_are_refused(self, kwargs: dict[str, float], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            QuotaParams(**kwargs)

    def test_one_fast_user_gets_429s_with_retry_after_while_many_users_at_the_same_rate_pass(self) -> None:
        sends, span = 40, 0.5  # 80 sends/s in all; the quota is 5/s per user with a burst of 5

        async def paced(session: aiohttp.ClientSession, fake: FakeGmail, token: Callable[[int], str]) -> list[Result]:
            tasks = []
            for i in range(sends):
                tasks.append(asyncio.create_task(send(session, fake, token=token(i))))
                await asyncio.sleep(span / sends)
            return list(await asyncio.gather(*tasks))

        async def scenario() -> tuple[list[Result], list[Result], list[Result], str]:
            async with running(seed=1, params=QUIET, quota=QuotaParams(rate=5.0, burst=5)) as (fake, session):
                alone = await paced(session, fake, lambda _: "solo")
                shared = await paced(session, fake, lambda i: f"user{i % 16}")
                # A userId other than `me` is the user, whatever the token.
                named = [await send(session, fake, user="bob@example.com", token=f"t{i}") for i in range(7)]
                return alone, shared, named, await scrape(session, fake)

        alone, shared, named, metrics = asyncio.run(scenario())
        passed = sum(r.kind == "200" for r in alone)
        assert 5 <= passed <= 10, passed  # the burst, plus ~2.5 refilled over 0.5 s
        refused = [r for r in alone if r.kind == "429"]
        assert len(refused) == sends - passed
        for r in refused:
            assert r.headers["Retry-After"] == "1"
            assert r.body["error"]["status"] == "RESOURCE_EXHAUSTED"
            assert r.body["error"]["errors"][0]["domain"] == "usageLimits"
            assert r.body["error"]["errors"][0]["reason"] == "rateLimitExceeded"
            assert r.body["error"]["message"].startswith("User-rate limit exceeded.  Retry after 20")
        assert [r.kind for r in shared] == ["200"] * sends
        assert [r.kind for r in named].count("429") >= 1
        assert sample_value(metrics, "fakegmail_quota_rejections_total") == len(refused) + [
            r.kind for r in named
        ].count("429")


class TestOverlays:
    def test_latency_and_error_overlays_change_the_figures_and_stopping_restores_them(self) -> None:
        async def scenario() -> dict[str, Any]:
            out: dict[str, Any] = {}
            async with running(seed=2, params=QUIET, max_hold=0.2) as (fake, session):

                async def measure(n: int) -> list[Result]:
                    return await many(n, 20, lambda i: send(session, fake, token=f"user{i}"))

                out["base"] = await measure(60)
                out["start_latency"] = await control(
                    session,
                    fake,
                    "POST",
                    "/overlays",
                    json={"scenario": "latency-crit", "options": {"p50": 0.25, "p95": 0.35}},
                )
                out["listed"] = await control(session, fake, "GET", "/overlays")
                out["slow"] = await measure(60)
                out["metrics_slow"] = await scrape(session, fake)
                out["stop_latency"] = await control(session, fake, "DELETE", "/overlays/latency-crit")
                out["restored"] = await measure(60)
                out["start_errors"] = await control(
                    session, fake, "POST", "/overlays", json={"scenario": "error-rate-crit", "options": {"ratio": 0.5}}
                )
                out["failing"] = await measure(300)
                await control(session, fake, "DELETE", "/overlays/error-rate-crit")
                out["healed"] = await measure(300)
                out["metrics_end"] = await scrape(session, fake)
            return out

        out = asyncio.run(scenario())
        median = {k: statistics.median(r.seconds for r in out[k]) for k in ("base", "slow", "restored")}
        # Millisecond calls, then a 250 ms median, then milliseconds again (wide margins for busy machines).
        assert median["base"] < 0.1, median
        assert median["slow"] > 0.2, median
        assert median["restored"] < 0.1, median
        assert all(r.kind == "200" for k in ("base", "slow", "restored", "healed") for r in out[k])

        status, started = out["start_latency"]
        assert status == 201
        assert started["overlay"]["scenario"] == "latency-crit"
        assert started["overlay"]["ends_in_seconds"] is None
        assert started["gmail"]["latency_seconds"]["p50"] == pytest.approx(0.25)
        _, listed = out["listed"]
        assert [o["scenario"] for o in listed["overlays"]] == ["latency-crit"]
        assert out["stop_latency"][0] == 200
        assert out["stop_latency"][1]["gmail"]["latency_seconds"]["p50"] == pytest.approx(0.001)

        assert out["start_errors"][0] == 201
        share = sum(r.kind != "200" for r in out["failing"]) / len(out["failing"])
        assert 0.35 < share < 0.65, share  # 50% with a Gmail-side mix of 5xx, 4xx, 429, timeouts, resets

        assert sample_value(out["metrics_slow"], "fakegmail_overlay_active", scenario="latency-crit") == 1
        assert sample_value(out["metrics_end"], "fakegmail_overlay_active", scenario="latency-crit") == 0
        assert sample_value(out["metrics_end"], "fakegmail_overlay_active", scenario="error-rate-crit") == 0

    def test_an_overlay_with_a_duration_stops_by_itself(self) -> None:
        async def scenario() -> dict[str, Any]:
            out: dict[str, Any] = {}
            async with running(seed=3, params=QUIET) as (fake, session):
                body = {"scenario": "rate-limit-storm", "duration": "300ms", "options": {"share": 0.9}}
                out["started"] = await control(session, fake, "POST", "/overlays", json=body)
                out["during"] = await many(100, 20, lambda i: send(session, fake, token=f"user{i}"))
                await asyncio.sleep(0.5)
                out["listed"] = await control(session, fake, "GET", "/overlays")
                out["after"] = await many(100, 20, lambda i: send(session, fake, token=f"user{i}"))
            return out

        out = asyncio.run(scenario())
        status, started = out["started"]
        assert status == 201
        assert 0 < started["overlay"]["ends_in_seconds"] <= 0.3
        assert sum(r.kind == "429" for r in out["during"]) > 70
        assert out["listed"][1]["overlays"] == []
        assert out["listed"][1]["gmail"]["probabilities"]["ok"] == 1.0
        assert all(r.kind == "200" for r in out["after"])

    def test_scenarios_list_says_which_change_what_gmail_answers(self) -> None:
        async def scenario() -> tuple[int, Any]:
            async with running(seed=1, params=QUIET) as (fake, session):
                return await control(session, fake, "GET", "/scenarios")

        status, body = asyncio.run(scenario())
        assert status == 200
        affects = {s["name"]: s["affects_gmail"] for s in body["scenarios"]}
        assert {n for n, yes in affects.items() if yes} == {
            "error-rate-warn",
            "error-rate-crit",
            "latency-crit",
            "latency-warn",
            "rate-limit-storm",
        }
        assert affects["validation-spike"] is False


class TestControlInput:
    @pytest.mark.parametrize(
        ("body", "keys"),
        [
            (b"{nope", ["body"]),
            ([], ["body"]),
            ({}, ["scenario"]),
            ({"scenario": "nope"}, ["scenario"]),
            ({"scenario": "validation-spike"}, ["scenario"]),
            ({"scenario": "latency-crit", "duration": "15x"}, ["duration"]),
            ({"scenario": "latency-crit", "duration": 0}, ["duration"]),
            ({"scenario": "latency-crit", "duration": True}, ["duration"]),
            ({"scenario": "latency-crit", "options": {"p99": 1}}, ["options.p99"]),
            ({"scenario": "latency-crit", "options": {"p50": "slow"}}, ["options.p50"]),
            ({"scenario": "latency-crit", "options": {"p50": -1}}, ["options.p50"]),
            ({"scenario": "latency-crit", "options": [1]}, ["options"]),
            ({"scenario": "latency-crit", "magnitude": 2}, ["magnitude"]),
            ({"scenario": "latency-crit", "bogus": 1}, ["bogus"]),
            ({"scenario": "rate-limit-storm", "options": {"share": 1.0}}, ["options"]),
            ({"scenario": "nope", "duration": "x", "magnitude": 0}, ["scenario", "duration", "magnitude"]),
        ],
    )
    def test_bad_input_is_a_400_naming_the_key(self, body: Any, keys: list[str]) -> None:
        async def scenario() -> tuple[int, Any, tuple[int, Any]]:
            async with running(seed=1, params=QUIET) as (fake, session):
                kw = {"data": body} if isinstance(body, bytes) else {"json": body}
                status, answer = await control(session, fake, "POST", "/overlays", **kw)
                return status, answer, await control(session, fake, "GET", "/overlays")

        status, answer, (_, listed) = asyncio.run(scenario())
        assert status == 400
        assert [p["key"] for p in answer["error"]["problems"]] == keys
        assert answer["error"]["message"].startswith(f"{keys[0]}: ")
        assert listed["overlays"] == []

    def test_bad_input_messages_say_what_was_expected(self) -> None:
        async def scenario() -> Any:
            async with running(seed=1, params=QUIET) as (fake, session):
                body = {"scenario": "validation-spike", "duration": "15x"}
                return (await control(session, fake, "POST", "/overlays", json=body))[1]

        problems = {p["key"]: p["message"] for p in asyncio.run(scenario())["error"]["problems"]}
        assert problems["scenario"].startswith("validation-spike changes nothing Gmail answers")
        assert "latency-crit" in problems["scenario"]
        assert problems["duration"] == "expected a duration such as 30s, 15m, 48h, 1h30m or 250ms, got '15x'"

    def test_a_running_scenario_cannot_start_twice_and_stopping_an_idle_one_is_a_404(self) -> None:
        async def scenario() -> list[tuple[int, Any]]:
            async with running(seed=1, params=QUIET) as (fake, session):
                body = {"scenario": "latency-warn"}
                return [
                    await control(session, fake, "POST", "/overlays", json=body),
                    await control(session, fake, "POST", "/overlays", json=body),
                    await control(session, fake, "DELETE", "/overlays/latency-warn"),
                    await control(session, fake, "DELETE", "/overlays/latency-warn"),
                ]

        (first, _), (second, dup), (stopped, _), (again, idle) = asyncio.run(scenario())
        assert (first, second, stopped, again) == (201, 409, 200, 404)
        assert dup["error"]["problems"][0]["key"] == "scenario"
        assert idle["error"]["message"] == "scenario: 'latency-warn' is not active; active: none"


class TestCommand:
    @staticmethod
    def parse(*argv: str) -> argparse.Namespace:
        parser = argparse.ArgumentParser(prog="loadsim fake-gmail")
        main_args(parser)
        return parser.parse_args(argv)

    def test_defaults(self) -> None:
        address, config = config_from_args(self.parse())
        assert address == ListenAddress("127.0.0.1", 9480)
        assert config.seed == 1
        assert config.quota == QuotaParams(rate=2.5, burst=10)
        assert config.max_hold == 60.0
        assert config_from_args(self.parse("--quota-per-user", "off"))[1].quota is None

    def test_bad_options_are_all_reported(self) -> None:
        args = self.parse("--listen", "nowhere", "--quota-per-user", "fast", "--max-hold", "0s", "--seed", "-1")
        with pytest.raises(ConfigError) as e:
            config_from_args(args)
        assert [str(p) for p in e.value.problems] == [
            "--listen: expected HOST:PORT such as 127.0.0.1:9477, got 'nowhere'",
            "--quota-per-user: expected a rate such as 1/s, 0.5/s, 60/m or 1req/s, got 'fast'",
            "--max-hold: must be > 0, got '0s'",
            "--seed: must be >= 0, got -1",
        ]
        with pytest.raises(ConfigError) as e:
            config_from_args(self.parse("--quota-per-user", "0", "--quota-burst", "0.5"))
        assert [str(p) for p in e.value.problems] == [
            "--quota-per-user: must be > 0 (or 'off'), got '0'",
            "--quota-burst: must be >= 1 (one send must fit), got 0.5",
        ]
        assert config_from_args(self.parse("--quota-per-user", "3"))[1].quota == QuotaParams(rate=3.0, burst=10)

    def test_a_profile_sets_the_baseline_and_its_problems_are_reported(self, tmp_path: Path) -> None:
        profile = tmp_path / "p.toml"
        profile.write_text('[model.latency]\np50 = "50ms"\np95 = "90ms"\n[model.errors]\ngmail_5xx = 0.01\n')
        _, config = config_from_args(self.parse("--profile", str(profile)))
        assert (config.params.latency.p50, config.params.errors["gmail_5xx"]) == (0.05, 0.01)
        with pytest.raises(ConfigError, match=r"missing\.toml: file not found"):
            config_from_args(self.parse("--profile", str(tmp_path / "missing.toml")))

    def test_run_from_args_serves_until_stopped(self) -> None:
        args = self.parse("--listen", "127.0.0.1:0", "--seed", "4", "--log-level", "error")

        async def scenario() -> tuple[int, str]:
            stop = asyncio.Event()
            ready: asyncio.Future[FakeGmail] = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(run_from_args(args, stop=stop, started=ready.set_result))
            fake = await asyncio.wait_for(ready, 5)
            async with aiohttp.ClientSession() as session, session.get(f"{fake.url}/healthz") as r:
                health = await r.text()
            stop.set()
            return await asyncio.wait_for(task, 5), health

        assert asyncio.run(scenario()) == (0, "ok\n")
