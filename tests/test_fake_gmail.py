"""The fake Gmail: a real aiohttp server on 127.0.0.1:0 driven by a real aiohttp client, on a manual clock.

The network is real; time is not. Every server runs on a :class:`WatchedClock` (a
:class:`~loadsim.clock.ManualClock` that counts the tasks asleep on it), and a test
moves time itself: a request is sent, the test waits until the server is asleep on
the clock (real network events, no timeout), then advances the clock, then reads the
answer. Nothing here sleeps on the wall clock, and every time a test asserts is
clock time, so a 30 s hold or an overlay's end are checked exactly. Outcome
sequences are fixed by their seeds; figures drawn from them are checked within
binomial tolerance.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import math
import statistics
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import numpy as np
import pytest
from conftest import sample_value

from loadsim.clock import ManualClock
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

T = TypeVar("T")

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
HELD = ModelParams(latency=FAST, errors={**dict.fromkeys(ModelParams().errors, 0.0), "gmail_timeout": 1.0})
"""Every call times out: held for the model's 30 s (and a few ms), or ``max_hold`` if shorter."""
PADDED = base64.urlsafe_b64encode(b"To: bob@example.com\r\nSubject: hi\r\n\r\n<p>hello</p>!").decode()
RAW = PADDED.rstrip("=")
"""Gmail takes base64url with or without padding."""
EPOCH_ISO = "2023-11-14T22:13:20"
"""``ManualClock``'s default epoch (Unix 1,700,000,000) in UTC: run time 0 on the clock's wall."""
HANG_GUARD = 60.0
"""Wall seconds after which a scenario fails instead of hanging. Time is never the subject of this
guard: it is not reached when the code works, and no assertion reads the wall clock."""


def run(scenario: Coroutine[Any, Any, T]) -> T:
    """Run ``scenario`` on a fresh event loop, failing (not hanging) if it never ends."""

    async def guarded() -> T:
        async with asyncio.timeout(HANG_GUARD):
            return await scenario

    return asyncio.run(guarded())


class WatchedClock(ManualClock):
    """A :class:`ManualClock` that counts the tasks asleep on it and flags every change.

    The fake's only waits are ``clock.sleep`` calls (a call's latency, a held call), so
    when every request in flight is asleep on the clock the server has done all it
    can at this instant, and moving time is the only thing that can happen next.
    """

    def __init__(self) -> None:
        super().__init__()
        self.asleep = 0
        self.changed = asyncio.Event()
        """Set whenever ``asleep`` changes (and by the bench when a request starts or ends)."""

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self.now() + max(seconds, 0.0))

    async def sleep_until(self, t: float) -> float:
        self.asleep += 1
        self.changed.set()
        try:
            return await super().sleep_until(t)
        finally:
            self.asleep -= 1
            self.changed.set()


@dataclass
class Result:
    """What a client saw for one send."""

    kind: str
    """The HTTP status as text, or ``network`` (the connection was dropped)."""
    seconds: float
    """Clock time from sending to the answer."""
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Bench:
    """A fake Gmail on a watched clock, a client session, and the requests in flight between them."""

    fake: FakeGmail
    session: aiohttp.ClientSession
    clock: WatchedClock
    in_flight: int = 0
    """Requests sent and not yet answered."""

    async def send(self, **kwargs: Any) -> Result:
        """One ``messages.send``, counted in flight (see :meth:`post` for the arguments)."""
        self._enter()
        try:
            return await self.post(**kwargs)
        finally:
            self._leave()

    def start(self, **kwargs: Any) -> asyncio.Task[Result]:
        """:meth:`send` as a task, counted in flight from now (so :meth:`quiet` waits for it)."""
        self._enter()
        task = asyncio.create_task(self.post(**kwargs))
        task.add_done_callback(lambda _: self._leave())
        return task

    async def post(
        self,
        *,
        token: str | None = "alice",
        user: str = "me",
        body: Any = None,
        data: bytes | None = None,
        authorization: str | None = None,
    ) -> Result:
        """Send without counting it in flight; ``authorization`` replaces the header ``token`` makes."""
        if authorization is None and token is not None:
            authorization = f"Bearer {token}"
        headers = {} if authorization is None else {"Authorization": authorization}
        kwargs: dict[str, Any] = (
            {"data": data} if data is not None else {"json": {"raw": RAW} if body is None else body}
        )
        start = self.clock.now()
        try:
            async with self.session.post(
                f"{self.fake.url}/gmail/v1/users/{user}/messages/send", headers=headers, **kwargs
            ) as response:
                payload = await response.json()
                return Result(str(response.status), self.clock.now() - start, payload, dict(response.headers))
        except aiohttp.ClientConnectionError:
            return Result("network", self.clock.now() - start)

    async def quiet(self) -> None:
        """Return once every request in flight is asleep on the clock (or answered)."""
        await self._until(lambda: self.in_flight == self.clock.asleep)

    async def finish(self, work: Awaitable[T], step: float | None = None) -> T:
        """Await ``work`` (sends through this bench), moving the clock whenever every send in flight is asleep.

        Without ``step`` the clock jumps to the next deadline, so each answer comes exactly its
        sampled latency (in clock time) after its request; with ``step`` it moves that much at a
        time, for many requests where latency is not the subject.
        """
        task = asyncio.ensure_future(work)
        task.add_done_callback(lambda _: self.clock.changed.set())
        while True:
            await self._until(lambda: task.done() or 0 < self.in_flight == self.clock.asleep)
            if task.done():
                return task.result()
            gap = self.clock.next_deadline() - self.clock.now() if step is None else step
            assert math.isfinite(gap), "requests asleep on the clock but no deadline pending"
            await self.clock.advance(gap)

    async def answer(self, **kwargs: Any) -> Result:
        """One send, the clock moved until it is answered."""
        return await self.finish(self.send(**kwargs))

    async def many(
        self, n: int, concurrency: int, one: Callable[[int], Awaitable[Result]], step: float | None = None
    ) -> list[Result]:
        """``n`` sends, ``concurrency`` at a time, the clock moved until all are answered."""
        gate = asyncio.Semaphore(concurrency)

        async def bounded(i: int) -> Result:
            async with gate:
                return await one(i)

        return await self.finish(asyncio.gather(*(bounded(i) for i in range(n))), step)

    async def control(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.session.request(method, f"{self.fake.url}/control{path}", **kw) as response:
            return response.status, await response.json()

    async def scrape(self) -> str:
        async with self.session.get(f"{self.fake.url}/metrics") as response:
            return await response.text()

    async def _until(self, ready: Callable[[], bool]) -> None:
        while True:
            self.clock.changed.clear()
            if ready():
                return
            await self.clock.changed.wait()

    def _enter(self) -> None:
        self.in_flight += 1
        self.clock.changed.set()

    def _leave(self) -> None:
        self.in_flight -= 1
        self.clock.changed.set()


@contextlib.asynccontextmanager
async def running(**kwargs: Any) -> AsyncIterator[Bench]:
    clock = WatchedClock()
    fake = await serve(LOOPBACK, clock=clock, **kwargs)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
            yield Bench(fake, session, clock)
    finally:
        await fake.stop()


def family(kind: str) -> str:
    if kind in ("network", "200", "429"):
        return kind
    if kind == "504":
        return "timeout"  # a held call, answered DEADLINE_EXCEEDED at max_hold
    return f"{kind[0]}xx"


class TestStatusMix:
    def test_status_mix_over_2000_sends_matches_the_models_probabilities(self) -> None:
        """Each outcome's share is the model's; held calls answer 504 after exactly ``max_hold``."""
        n = 2000

        async def scenario() -> tuple[list[Result], str]:
            async with running(seed=11, params=NOISY, quota=None, max_hold=1.0) as bench:
                results = await bench.many(n, 50, lambda i: bench.send(token=f"user{i}"))
                return results, await bench.scrape()

        results, metrics = run(scenario())
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
            if r.kind not in ("200", "network"):
                error = r.body["error"]
                assert error["code"] == int(r.kind)
                assert error["status"].isupper()
                assert error["errors"][0]["domain"] in ("global", "usageLimits")
                assert error["errors"][0]["reason"]
        # The model holds a timed-out call ~30 s; max_hold cuts that to 1 s of clock time.
        held = [r for r in results if r.kind == "504"]
        assert {r.body["error"]["status"] for r in held} == {"DEADLINE_EXCEEDED"}
        assert [r.seconds for r in held] == pytest.approx([1.0] * len(held))
        assert max(r.seconds for r in results if r.kind != "504") < 0.05
        # The model's own 429s carry no Retry-After (only the quota's do).
        assert all("Retry-After" not in r.headers for r in results if r.kind == "429")
        assert sample_value(metrics, "fakegmail_outcomes_total", outcome="gmail_timeout") == seen["timeout"]
        assert sample_value(metrics, "fakegmail_requests_total", code="504") == seen["timeout"]
        assert sample_value(metrics, "fakegmail_requests_total", code="closed") == seen["network"]
        assert sample_value(metrics, "fakegmail_requests_total", code="200") == seen["200"]
        assert sample_value(metrics, "fakegmail_requests_in_flight") == 0

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
            async with running(seed=1, params=QUIET) as bench:
                fresh = await bench.answer()
                reply = await bench.answer(body={"raw": PADDED, "threadId": "18c0ffee00000001"})
                async with bench.session.get(f"{bench.fake.url}/healthz") as r:
                    health = await r.text()
                return fresh, reply, health

        fresh, reply, health = run(scenario())
        assert fresh.kind == "200"
        assert fresh.body["labelIds"] == ["SENT"]
        assert len(fresh.body["id"]) == 16
        assert int(fresh.body["id"], 16) >= 0
        assert fresh.body["threadId"] == fresh.body["id"]
        assert reply.kind == "200"
        assert reply.body["threadId"] == "18c0ffee00000001"
        assert health == "ok\n"

    def test_the_answer_comes_exactly_the_sampled_latency_later_and_not_before(self) -> None:
        """The server waits the model's draw on its clock: nothing is answered a moment earlier."""
        slow = ModelParams(latency=LatencyParams(p50=0.2, p95=0.3, tail_fraction=0.0), errors=QUIET.errors)

        async def scenario() -> tuple[float, bool, float | None, Result]:
            async with running(seed=7, params=slow) as bench:
                task = bench.start()
                await bench.quiet()
                latency = bench.clock.next_deadline() - bench.clock.now()
                await bench.clock.advance(latency - 1e-6)
                await bench.quiet()
                answered_early = task.done()
                in_flight = sample_value(await bench.scrape(), "fakegmail_requests_in_flight")
                return latency, answered_early, in_flight, await bench.finish(task)

        latency, answered_early, in_flight, result = run(scenario())
        outcomes = np.random.SeedSequence(7).spawn(2)[0]  # the stream FakeGmail draws outcomes from
        drawn = CallSampler(slow, np.random.Generator(np.random.PCG64(outcomes))).next()
        assert drawn.outcome == "ok"
        assert latency == pytest.approx(drawn.latency)
        assert not answered_early
        assert in_flight == 1
        assert result.kind == "200"
        assert result.seconds == pytest.approx(drawn.latency)

    @pytest.mark.parametrize(
        ("max_hold", "held"),
        [(5.0, (5.0, 5.0)), (60.0, (30.0, 30.1))],
        ids=["capped-by-max-hold", "the-models-30s"],
    )
    def test_a_timed_out_call_is_held_then_answered_504(self, max_hold: float, held: tuple[float, float]) -> None:
        """A ``gmail_timeout`` call holds the request (past a 30 s client timeout), then answers 504."""

        async def scenario() -> tuple[bool, str, Result, str]:
            async with running(seed=1, params=HELD, max_hold=max_hold) as bench:
                task = bench.start()
                await bench.quiet()
                await bench.clock.advance(held[0] - 0.01)
                await bench.quiet()
                answered_early = task.done()
                during = await bench.scrape()
                result = await bench.finish(task)
                return answered_early, during, result, await bench.scrape()

        answered_early, during, result, after = run(scenario())
        assert not answered_early
        assert sample_value(during, "fakegmail_requests_in_flight") == 1
        assert sample_value(during, "fakegmail_requests_total", code="504") == 0
        assert result.kind == "504"
        assert held[0] <= result.seconds <= held[1]
        assert result.body["error"]["status"] == "DEADLINE_EXCEEDED"
        assert result.body["error"]["errors"][0]["reason"] == "backendError"
        assert sample_value(after, "fakegmail_outcomes_total", outcome="gmail_timeout") == 1
        assert sample_value(after, "fakegmail_requests_total", code="504") == 1
        assert sample_value(after, "fakegmail_requests_in_flight") == 0

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
            async with running(seed=1, params=QUIET) as bench:
                return await bench.send(data=data, body=body)  # refused before any wait: no clock needed

        result = run(scenario())
        assert result.kind == "400"
        assert result.seconds == 0.0
        assert result.body["error"]["status"] == "INVALID_ARGUMENT"
        assert result.body["error"]["errors"][0] == {
            "message": result.body["error"]["message"],
            "domain": "global",
            "reason": reason,
        }

    @pytest.mark.parametrize("header", [None, "", "Basic YWxpY2U6cHc=", "Bearer", "Bearer   ", "Bearer alice-expired"])
    def test_a_missing_or_expired_token_is_a_401(self, header: str | None) -> None:
        async def scenario() -> tuple[Result, str]:
            async with running(seed=1, params=QUIET) as bench:
                result = await bench.send(token=None, authorization=header)
                return result, await bench.scrape()

        result, metrics = run(scenario())
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
        """80 sends/s of clock time for 0.5 s: one user gets its burst and refill, sixteen users all pass."""
        sends, span = 40, 0.5  # the quota is 5/s per user with a burst of 5

        async def paced(bench: Bench, token: Callable[[int], str]) -> list[Result]:
            tasks = []
            for i in range(sends):
                tasks.append(bench.start(token=token(i)))
                await bench.quiet()  # charged (asleep on its latency) or refused, at this instant
                await bench.clock.advance(span / sends)
            return list(await bench.finish(asyncio.gather(*tasks)))

        async def scenario() -> tuple[list[Result], list[Result], list[Result], str]:
            async with running(seed=1, params=QUIET, quota=QuotaParams(rate=5.0, burst=5)) as bench:
                alone = await paced(bench, lambda _: "solo")
                shared = await paced(bench, lambda i: f"user{i % 16}")
                # A userId other than `me` is the user, whatever the token.
                named = [await bench.answer(user="bob@example.com", token=f"t{i}") for i in range(7)]
                return alone, shared, named, await bench.scrape()

        alone, shared, named, metrics = run(scenario())
        # The burst of 5 at once, then one more per 0.2 s: 39 steps of 1/80 s refill 2.4 tokens.
        assert [r.kind for r in alone[:6]] == ["200"] * 5 + ["429"]
        assert sum(r.kind == "200" for r in alone) == 7
        refused = [r for r in alone if r.kind == "429"]
        assert len(refused) == sends - 7
        for r in refused:
            assert r.headers["Retry-After"] == "1"
            assert r.body["error"]["status"] == "RESOURCE_EXHAUSTED"
            assert r.body["error"]["errors"][0]["domain"] == "usageLimits"
            assert r.body["error"]["errors"][0]["reason"] == "rateLimitExceeded"
            assert r.body["error"]["message"].startswith("User-rate limit exceeded.  Retry after 20")
        # The 6th send, at 0.0625 s, finds 0.3125 tokens: one is back 0.1375 s later, at 0.2 s.
        assert alone[5].body["error"]["message"] == f"User-rate limit exceeded.  Retry after {EPOCH_ISO}.200Z"
        assert [r.kind for r in shared] == ["200"] * sends
        assert [r.kind for r in named] == ["200"] * 5 + ["429"] * 2
        assert sample_value(metrics, "fakegmail_quota_rejections_total") == len(refused) + 2

    def test_a_refused_user_is_let_through_once_its_bucket_has_refilled(self) -> None:
        """Burst 2 at 0.5/s: the 3rd send waits 2 s; half-way it still waits 1 s; at 2 s it passes."""

        async def scenario() -> list[Result]:
            async with running(seed=1, params=QUIET, quota=QuotaParams(rate=0.5, burst=2)) as bench:
                first = [bench.start(), bench.start()]  # both charged at t = 0
                await bench.quiet()
                seen = [await bench.send()]  # refused at t = 0, before any wait
                await bench.clock.advance(1.5)
                seen.append(await bench.send())  # 0.75 tokens at t = 1.5
                await bench.clock.advance(0.5)
                seen.append(await bench.answer())  # exactly 1 token at t = 2
                seen.append(await bench.send())
                return [*await bench.finish(asyncio.gather(*first)), *seen]

        ok1, ok2, at_0, at_1_5, at_2, again = run(scenario())
        assert [r.kind for r in (ok1, ok2, at_0, at_1_5, at_2, again)] == ["200", "200", "429", "429", "200", "429"]
        assert [r.headers["Retry-After"] for r in (at_0, at_1_5, again)] == ["2", "1", "2"]
        assert at_0.body["error"]["message"] == f"User-rate limit exceeded.  Retry after {EPOCH_ISO[:-2]}22.000Z"
        assert at_1_5.body["error"]["message"] == at_0.body["error"]["message"]


class TestOverlays:
    def test_latency_and_error_overlays_change_the_figures_and_stopping_restores_them(self) -> None:
        async def scenario() -> dict[str, Any]:
            out: dict[str, Any] = {}
            async with running(seed=2, params=QUIET, max_hold=0.2) as bench:

                async def measure(n: int) -> list[Result]:
                    return await bench.many(n, 20, lambda i: bench.send(token=f"user{i}"))

                out["base"] = await measure(60)
                out["start_latency"] = await bench.control(
                    "POST", "/overlays", json={"scenario": "latency-crit", "options": {"p50": 0.25, "p95": 0.35}}
                )
                out["listed"] = await bench.control("GET", "/overlays")
                out["slow"] = await measure(60)
                out["metrics_slow"] = await bench.scrape()
                out["stop_latency"] = await bench.control("DELETE", "/overlays/latency-crit")
                out["restored"] = await measure(60)
                out["start_errors"] = await bench.control(
                    "POST", "/overlays", json={"scenario": "error-rate-crit", "options": {"ratio": 0.5}}
                )
                out["failing"] = await measure(300)
                await bench.control("DELETE", "/overlays/error-rate-crit")
                out["healed"] = await measure(300)
                out["metrics_end"] = await bench.scrape()
            return out

        out = run(scenario())
        median = {k: statistics.median(r.seconds for r in out[k]) for k in ("base", "slow", "restored")}
        # Clock time is exact: a 1 ms median, then 250 ms (sd of a median of 60 draws ~3%), then 1 ms again.
        assert median["base"] == pytest.approx(0.001, rel=0.2), median
        assert median["slow"] == pytest.approx(0.25, rel=0.15), median
        assert median["restored"] == pytest.approx(0.001, rel=0.2), median
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

    @pytest.mark.parametrize("duration", ["300ms", 0.3], ids=["text", "seconds"])
    def test_an_overlay_with_a_duration_stops_by_itself(self, duration: str | float) -> None:
        """Active until its duration has passed on the clock, gone a moment after; a late DELETE is a 404."""

        async def scenario() -> dict[str, Any]:
            out: dict[str, Any] = {}
            async with running(seed=3, params=QUIET) as bench:
                body = {"scenario": "rate-limit-storm", "duration": duration, "options": {"share": 0.9}}
                t0 = bench.clock.now()
                out["started"] = await bench.control("POST", "/overlays", json=body)
                out["during"] = await bench.many(100, 20, lambda i: bench.send(token=f"user{i}"))
                await bench.clock.advance(t0 + 0.299 - bench.clock.now())
                out["last_moment"] = await bench.control("GET", "/overlays")
                out["metrics_during"] = await bench.scrape()
                await bench.clock.advance(0.002)
                out["listed"] = await bench.control("GET", "/overlays")
                out["late_delete"] = await bench.control("DELETE", "/overlays/rate-limit-storm")
                out["after"] = await bench.many(100, 20, lambda i: bench.send(token=f"user{i}"))
                out["metrics_end"] = await bench.scrape()
            return out

        out = run(scenario())
        status, started = out["started"]
        assert status == 201
        assert started["overlay"]["ends_in_seconds"] == 0.3
        assert started["overlay"]["running_seconds"] == 0.0
        assert sum(r.kind == "429" for r in out["during"]) > 70
        [last] = out["last_moment"][1]["overlays"]
        assert (last["scenario"], last["ends_in_seconds"], last["running_seconds"]) == (
            "rate-limit-storm",
            0.001,
            0.299,
        )
        assert sample_value(out["metrics_during"], "fakegmail_overlay_active", scenario="rate-limit-storm") == 1
        assert out["listed"][1]["overlays"] == []
        assert out["listed"][1]["gmail"]["probabilities"]["ok"] == 1.0
        assert all(r.kind == "200" for r in out["after"])
        assert sample_value(out["metrics_end"], "fakegmail_overlay_active", scenario="rate-limit-storm") == 0
        status, late = out["late_delete"]
        assert status == 404
        assert late["error"]["message"] == (
            "scenario: 'rate-limit-storm' is not active (it expired 0.001 s ago, at the end of its 0.3 s duration);"
            " active: none"
        )
        assert late["error"]["problems"] == [{"key": "scenario", "message": late["error"]["message"][10:]}]

    def test_deleting_a_timed_overlay_cancels_its_timer(self) -> None:
        """A DELETE before the end cancels the timer: a later start of the same scenario is not cut short."""

        async def scenario() -> tuple[list[int], list[Any], float]:
            async with running(seed=1, params=QUIET) as bench:
                codes = [
                    (await bench.control("POST", "/overlays", json={"scenario": "latency-warn", "duration": 10}))[0],
                    (await bench.control("DELETE", "/overlays/latency-warn"))[0],
                    (await bench.control("POST", "/overlays", json={"scenario": "latency-warn", "duration": 30}))[0],
                ]
                await bench.clock.advance(20.0)
                listed = (await bench.control("GET", "/overlays"))[1]["overlays"]
                await bench.fake.stop()  # stopping cancels the timer still set
                return codes, listed, bench.clock.next_deadline()

        codes, listed, pending = run(scenario())
        assert codes == [201, 200, 201]
        assert [(o["scenario"], o["running_seconds"], o["ends_in_seconds"]) for o in listed] == [
            ("latency-warn", 20.0, 10.0)
        ]
        assert pending == math.inf

    def test_scenarios_list_says_which_change_what_gmail_answers(self) -> None:
        async def scenario() -> tuple[int, Any]:
            async with running(seed=1, params=QUIET) as bench:
                return await bench.control("GET", "/scenarios")

        status, body = run(scenario())
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
            ({"scenario": "latency-crit", "duration": -1.5}, ["duration"]),
            ({"scenario": "latency-crit", "duration": True}, ["duration"]),
            ({"scenario": "latency-crit", "duration": [30]}, ["duration"]),
            (b'{"scenario": "latency-crit", "duration": NaN}', ["duration"]),
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
            async with running(seed=1, params=QUIET) as bench:
                kw = {"data": body} if isinstance(body, bytes) else {"json": body}
                status, answer = await bench.control("POST", "/overlays", **kw)
                return status, answer, await bench.control("GET", "/overlays")

        status, answer, (_, listed) = run(scenario())
        assert status == 400
        assert [p["key"] for p in answer["error"]["problems"]] == keys
        assert answer["error"]["message"].startswith(f"{keys[0]}: ")
        assert listed["overlays"] == []

    def test_bad_input_messages_say_what_was_expected(self) -> None:
        async def scenario() -> list[Any]:
            async with running(seed=1, params=QUIET) as bench:
                bodies = [
                    {"scenario": "validation-spike", "duration": "15x"},
                    {"scenario": "latency-crit", "duration": -1.5},
                    {"scenario": "latency-crit", "duration": [30]},
                ]
                return [(await bench.control("POST", "/overlays", json=body))[1] for body in bodies]

        named, negative, listed = ({p["key"]: p["message"] for p in a["error"]["problems"]} for a in run(scenario()))
        assert named["scenario"].startswith("validation-spike changes nothing Gmail answers")
        assert "latency-crit" in named["scenario"]
        assert named["duration"] == "expected a duration such as 30s, 15m, 48h, 1h30m or 250ms, got '15x'"
        assert negative["duration"] == "must be >= 0, got -1.5"
        assert listed["duration"] == "expected a duration such as 15m or a number of seconds, got [30]"

    @pytest.mark.parametrize(
        ("duration", "ends_in"), [(12.5, 12.5), (900, 900.0), ("15m", 900.0), (None, None)], ids=str
    )
    def test_the_http_drivers_request_is_accepted(self, duration: float | str | None, ends_in: float | None) -> None:
        """The HTTP driver POSTs scenario, duration (seconds or null), options and magnitude, then DELETEs."""

        async def scenario() -> list[tuple[int, Any]]:
            async with running(seed=1, params=QUIET) as bench:
                body: dict[str, Any] = {
                    "scenario": "error-rate-warn",
                    "duration": duration,
                    "options": {},
                    "magnitude": 0.5,
                }
                return [
                    await bench.control("POST", "/overlays", json=body),
                    await bench.control("DELETE", "/overlays/error-rate-warn"),
                ]

        (status, started), (stopped, _) = run(scenario())
        assert (status, stopped) == (201, 200)
        overlay = started["overlay"]
        assert (overlay["scenario"], overlay["magnitude"], overlay["ends_in_seconds"]) == (
            "error-rate-warn",
            0.5,
            ends_in,
        )
        assert overlay["started_at"] == f"{EPOCH_ISO}.000Z"

    def test_a_running_scenario_cannot_start_twice_and_stopping_an_idle_one_is_a_404(self) -> None:
        async def scenario() -> list[tuple[int, Any]]:
            async with running(seed=1, params=QUIET) as bench:
                body = {"scenario": "latency-warn"}
                return [
                    await bench.control("POST", "/overlays", json=body),
                    await bench.control("POST", "/overlays", json=body),
                    await bench.control("DELETE", "/overlays/latency-warn"),
                    await bench.control("DELETE", "/overlays/latency-warn"),
                ]

        (first, _), (second, dup), (stopped, _), (again, idle) = run(scenario())
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
        """The command serves on the wall clock (nothing here waits on time) until ``stop`` is set."""
        args = self.parse("--listen", "127.0.0.1:0", "--seed", "4", "--log-level", "error")

        async def scenario() -> tuple[int, str, bool]:
            stop = asyncio.Event()
            ready: asyncio.Future[FakeGmail] = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(run_from_args(args, stop=stop, started=ready.set_result))
            fake = await ready
            async with aiohttp.ClientSession() as session, session.get(f"{fake.url}/healthz") as r:
                health = await r.text()
            stop.set()
            return await task, health, fake.clock.virtual

        assert run(scenario()) == (0, "ok\n", False)
