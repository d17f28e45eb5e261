"""Issue 15, the safety classes: loopback, state files, non-regular files, secrets, unbounded memory.

One class per class of defect, named for it. Each asserts the behaviour a user relies on
(an exit code and one line, a file left alone, a secret absent from every output, a
bound on memory), on real files, real sockets and real processes; only DNS is faked
(``fake_dns``), since no test may depend on what a name resolves to on the machine.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import os
import pty
import re
import select
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from conftest import scrape
from prometheus_client import CollectorRegistry
from test_http_driver import LoopThread, Server
from test_wire_parsing import Rig

from loadsim import net
from loadsim.cli import main
from loadsim.clock import ManualClock
from loadsim.drill import Drill, card_json
from loadsim.drivers import wire
from loadsim.engine.keeper import StateLock, StateOptions, open_state
from loadsim.fakegmail import FakeGmail
from loadsim.logs import configure
from loadsim.net import LOOPBACK_ONLY, BeyondLoopbackError, ListenAddress, Reach, is_loopback
from loadsim.plan import build_plan
from loadsim.profile import parse_profile
from loadsim.redaction import redact, redact_data, remember
from loadsim.runtime.execute import RunOptions, execute, identity
from loadsim.runtime.factory import build

pytestmark = pytest.mark.bad_input  # any traceback in a test's captured output fails it (conftest)

TEST_NET = "192.0.2.1"
"""RFC 5737 TEST-NET-1: not loopback, and never answers, so a connection that got there would hang."""


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Names resolved from this table (in order, first answer first); everything else as the system says.

    A name whose list holds several answers changes its answer at each lookup (``rebind``).
    """
    table: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name in table:
            answers = table[name]
            address = answers.pop(0) if len(answers) > 1 else answers[0]
            return real(address, port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


def usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run ``argv``; it must exit 2 with one ``loadsim:`` line per problem and no traceback. Returns stderr."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip(), "a usage error says why"
    assert all(line.startswith("loadsim: ") for line in err.strip().splitlines()), err
    return err


class TestLoopbackDecidedOnResolvedAddresses:
    """Loopback is what every resolved address is, before the run and again at every connection."""

    @pytest.mark.parametrize(
        ("host", "answers", "expected"),
        [
            ("127.0.0.1", None, True),
            ("::1", None, True),
            ("::ffff:127.0.0.1", None, True),  # IPv4-mapped IPv6 of a loopback address
            ("[::1]", None, True),
            ("2130706433", None, True),  # 127.0.0.1 written as one number resolves to loopback: it is
            ("::ffff:10.0.0.1", None, False),
            ("0.0.0.0", None, False),
            ("127.evil.example", [TEST_NET], False),  # spelled like loopback, resolves elsewhere
            ("localhost.evil.example", ["127.0.0.1", TEST_NET], True),  # first answer only: see below
            ("no-such-host.invalid", None, False),
        ],
    )
    def test_every_resolved_address_decides(
        self, fake_dns: dict[str, list[str]], host: str, answers: list[str] | None, expected: bool
    ) -> None:
        if answers is not None:
            fake_dns[host] = list(answers)
        assert is_loopback(host) is expected

    def test_a_name_resolving_to_loopback_and_beyond_is_not_loopback(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = socket.getaddrinfo

        def both(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if host == "split.example":
                return real("127.0.0.1", port, *args, **kwargs) + real(TEST_NET, port, *args, **kwargs)
            return real(host, port, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", both)
        assert not is_loopback("split.example")

    @pytest.mark.parametrize(
        ("argv", "option"),
        [
            (["run", "--driver", "http", "--target", "http://127.evil.example:9480"], "--target"),
            (["run", "--pushgateway", "http://127.evil.example:9091"], "--pushgateway"),
            (
                [
                    "run",
                    "--driver",
                    "http",
                    "--target",
                    "http://127.0.0.1:9",
                    "--fault-control",
                    "http://127.evil.example:1",
                ],
                "--fault-control",
            ),
            (
                ["drill", "--prometheus", "http://127.evil.example:9090", "--alertmanager", "http://127.0.0.1:9"],
                "--prometheus",
            ),
            (
                [
                    "report",
                    "--prometheus",
                    "http://127.evil.example:9090",
                    "--from",
                    "2026-01-01T00:00:00Z",
                    "--out",
                    "x",
                ],
                "--prometheus",
            ),
        ],
    )
    def test_a_name_spelled_like_loopback_is_refused_before_the_run(
        self, fake_dns: dict[str, list[str]], capsys: pytest.CaptureFixture[str], argv: list[str], option: str
    ) -> None:
        fake_dns["127.evil.example"] = [TEST_NET]
        err = usage_error(capsys, [*argv, "--duration", "1s", "--no-listen"] if argv[0] == "run" else argv)
        assert re.match(rf"loadsim: {option}: (http://)?127\.evil\.example(:\d+)? is not on loopback", err), err

    def test_the_http_driver_rechecks_at_every_connection(self, fake_dns: dict[str, list[str]]) -> None:
        """DNS rebinding: loopback when checked, TEST-NET at the connection. The pool refuses, at once."""
        fake_dns["rebind.example"] = ["127.0.0.1", TEST_NET]
        assert is_loopback("rebind.example")  # the check before the run sees loopback

        async def scenario() -> tuple[list[int], int, float]:
            statuses: list[int] = []
            pool = wire.Pool(
                "rebind.example",
                9,
                lambda _ex, status: statuses.append(status),
                clock=ManualClock(),
                limit=1,
                timeout=30.0,
            )
            pool.start()
            started = time.monotonic()
            pool.submit(wire.Exchange(b"GET / HTTP/1.1\r\n\r\n", 0.0))
            for _ in range(200):
                if statuses:
                    break
                await asyncio.sleep(0.01)
            elapsed = time.monotonic() - started
            await pool.aclose()
            return statuses, pool.refused, elapsed

        statuses, refused, elapsed = asyncio.run(scenario())
        assert statuses == [wire.CONNECTION_ERROR]
        assert refused == 1
        assert elapsed < 1.0  # refused before a SYN: TEST-NET would have hung until the 30 s timeout

    def test_an_allowed_host_is_reached_wherever_it_resolves(self) -> None:
        assert Reach.of("relay.example", {"relay.example"}).beyond_loopback
        assert not Reach.of("relay.example", {"other.example"}).beyond_loopback
        Reach(beyond_loopback=True).check(TEST_NET)
        with pytest.raises(BeyondLoopbackError):
            LOOPBACK_ONLY.check(TEST_NET)
        with pytest.raises(BeyondLoopbackError):
            LOOPBACK_ONLY.check("::ffff:192.0.2.1")

    def test_redirects_beyond_loopback_are_refused_by_aiohttp_and_urllib_clients(self) -> None:
        """A loopback service answering 302 to TEST-NET: both client kinds refuse to follow it, at once."""

        class Redirector(LoopThread):
            async def start(self) -> str:
                async def away(_request: web.Request) -> web.Response:
                    raise web.HTTPFound(f"http://{TEST_NET}:9/x")

                app = web.Application()
                app.router.add_get("/r", away)
                self.runner = web.AppRunner(app, access_log=None)
                await self.runner.setup()
                site = web.TCPSite(self.runner, "127.0.0.1", 0)
                await site.start()
                return f"http://127.0.0.1:{self.runner.addresses[0][1]}"

            async def stop(self) -> None:
                await self.runner.cleanup()

        async def with_aiohttp(url: str) -> BaseException:
            async with net.session() as http:
                try:
                    async with http.get(f"{url}/r"):
                        pass
                except aiohttp.ClientError as e:
                    return e
            raise AssertionError("followed")

        with Redirector() as r:
            started = time.monotonic()
            error = asyncio.run(with_aiohttp(r.url))
            assert isinstance(error.__cause__, BeyondLoopbackError)
            with pytest.raises(OSError, match="not a loopback address"):
                net.opener().open(f"{r.url}/r", timeout=20)
            assert time.monotonic() - started < 5.0


# -- state files ----------------------------------------------------------------------------------


def _run_args(state: Path, *extra: str) -> list[str]:
    return ["run", "--virtual", "--no-listen", "--progress", "off", "--duration", "2m", "--state", str(state), *extra]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rewrite(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite a real state file's JSON document with ``change``, arrays untouched."""
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["__meta__"]))
        arrays = {k: npz[k] for k in npz.files if k != "__meta__"}
    change(meta)
    with path.open("wb") as f:
        np.savez(f, __meta__=np.array(json.dumps(meta)), **arrays)  # type: ignore[arg-type]


class TestStateFiles:
    """A state file that cannot be used is refused before the run, and nothing is lost when a start fails."""

    @pytest.fixture
    def real_state(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
        path = tmp_path / "run.state"
        assert main(_run_args(path, "--fresh")) == 0
        capsys.readouterr()
        return path

    @pytest.mark.parametrize(
        ("name", "damage"),
        [
            ("empty", lambda p: p.write_bytes(b"")),
            ("text", lambda p: p.write_text("not a state file\n")),
            ("truncated", lambda p: p.write_bytes(p.read_bytes()[:100])),
            ("no engine part", lambda p: _rewrite(p, lambda m: m["parts"].pop("engine"))),
            ("parts not a dict", lambda p: _rewrite(p, lambda m: m.update(parts=[1, 2]))),
            ("epoch NaN", lambda p: _rewrite(p, lambda m: m.update(epoch=float("nan")))),
            ("t negative", lambda p: _rewrite(p, lambda m: m["parts"]["engine"].update(t=-5))),
            ("t a string", lambda p: _rewrite(p, lambda m: m["parts"]["engine"].update(t="x"))),
            ("random state garbage", lambda p: _rewrite(p, lambda m: m["parts"]["engine"].update(random={"a": 1}))),
            ("counts a list", lambda p: _rewrite(p, lambda m: m["parts"]["engine"].update(counts=[1]))),
            ("driver part a number", lambda p: _rewrite(p, lambda m: m["parts"].update(driver=3))),
            (
                "histogram wrong size",
                lambda p: _rewrite(
                    p, lambda m: m["parts"]["engine"].update(health={"lateness": {"counts": [1], "sum": 0}})
                ),
            ),
        ],
    )
    def test_a_damaged_or_crafted_file_is_refused_with_one_line(
        self, real_state: Path, capsys: pytest.CaptureFixture[str], name: str, damage: Callable[[Path], None]
    ) -> None:
        damage(real_state)
        err = usage_error(capsys, _run_args(real_state))
        assert err.startswith(f"loadsim: {real_state}: "), name
        assert "--fresh" in err  # says what to do

    def test_an_archive_that_would_inflate_past_the_limit_is_refused_unread(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "bomb.state"
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr("__meta__.npy", b"\0" * 1024)
        # Crafted: the central directory declares 300 MiB for those 1,024 bytes (offset 24 of its entry).
        data = bytearray(path.read_bytes())
        entry = data.rindex(b"PK\x01\x02")
        data[entry + 24 : entry + 28] = (300 << 20).to_bytes(4, "little")
        path.write_bytes(bytes(data))
        assert zipfile.ZipFile(path).infolist()[0].file_size == 300 << 20
        err = usage_error(capsys, _run_args(path))
        assert "inflate past 256 MiB" in err

    def test_fresh_on_a_directory_is_refused_and_leaves_it(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        folder = tmp_path / "state"
        folder.mkdir()
        err = usage_error(capsys, _run_args(folder, "--fresh"))
        assert err.strip() == f"loadsim: --state: {folder} is a directory; expected a state file path"
        assert folder.is_dir()
        assert not (tmp_path / "state.bak").exists()

    def test_a_start_that_fails_leaves_the_old_state_where_it_was(
        self, real_state: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        before = _digest(real_state)
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            argv = _run_args(real_state, "--fresh")
            argv[argv.index("--no-listen")] = f"--listen=127.0.0.1:{port}"
            err = usage_error(capsys, argv)
        assert "loadsim: --listen: cannot listen on" in err
        assert _digest(real_state) == before
        assert not real_state.with_name("run.state.bak").exists()
        # And --fresh does keep the old file once a run really starts.
        assert main(_run_args(real_state, "--fresh")) == 0
        assert _digest(real_state.with_name("run.state.bak")) == before

    def test_resuming_after_the_end_misses_only_what_the_run_had_left(self) -> None:
        profile = parse_profile({"duration": "10m", "schedule": [{"kind": "constant", "rate": "2/s"}]}, "test")
        plan = build_plan(profile, virtual=False, wall_epoch=0.0)
        engine = build(plan).engine
        engine.t = 540.0  # the last checkpoint, a minute before the end
        missed = engine.skip_to(3 * 3600.0)  # restarted hours after the run's end
        assert missed == 120  # the minute it had left at 2/s, not three hours of them
        assert engine.counts.missed == 120

    def test_loadsim_s_own_series_never_go_backwards_after_a_resume(self, tmp_path: Path) -> None:
        """Every sample of loadsim's registry after a resume is at least what it was at the checkpoint."""
        configure("error", io.StringIO())  # this test calls execute() itself: its log goes nowhere
        profile = parse_profile(
            {"name": "resume", "duration": "10m", "schedule": [{"kind": "constant", "rate": "5/s"}]}, "t"
        )
        plan = build_plan(profile, virtual=True)
        state = StateOptions(path=tmp_path / "r.state", mode="fresh")
        options = RunOptions(listen=None, progress="off", state=state)
        first = CollectorRegistry(auto_describe=False)
        asyncio.run(execute(plan, options, registry=first))
        again = RunOptions(listen=None, progress="off", state=StateOptions(path=state.path))
        resume = open_state(again.state, identity(plan, again))  # type: ignore[arg-type]
        assert resume is not None
        second = CollectorRegistry(auto_describe=False)
        asyncio.run(execute(plan, again, resume=resume, registry=second))
        before, after = scrape(first), scrape(second)
        lateness = ("loadsim_tick_lateness_seconds_count", frozenset())
        assert before[lateness] == 120  # a window every 5 s for 10 minutes
        backwards = {k: (v, after.get(k)) for k, v in before.items() if _cumulative(k[0]) and after.get(k, -1) < v}
        assert backwards == {}

    def test_two_runs_cannot_share_one_state_file(self, real_state: Path, capsys: pytest.CaptureFixture[str]) -> None:
        with StateLock(real_state):  # another run holding it
            err = usage_error(capsys, _run_args(real_state))
        assert err.strip() == (
            f"loadsim: {real_state}: another loadsim run (pid {os.getpid()}) is using this state file; "
            "stop it or use another --state"
        )
        assert main(_run_args(real_state)) == 0  # released: the run resumes

    @pytest.mark.parametrize("where", ["/proc/loadsim-test/run.state", "/dev/null/run.state"])
    def test_an_unwritable_state_path_is_refused_before_the_run(
        self, capsys: pytest.CaptureFixture[str], where: str
    ) -> None:
        err = usage_error(capsys, _run_args(Path(where), "--fresh", "--summary-json", os.devnull))
        assert where.rsplit("/", 1)[0] in err


def _cumulative(sample: str) -> bool:
    """Counters and histogram parts: what must never go backwards."""
    return sample.endswith(("_total", "_bucket", "_count", "_sum"))


# -- non-regular files ------------------------------------------------------------------------------


def bounded_main(argv: list[str], fifo: Path | None = None, seconds: float = 10.0) -> int:
    """``main(argv)`` in a thread, failing (not hanging) if it blocks; a FIFO is opened for writing to free it."""
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(main(argv)), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive() and fifo is not None:
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert not thread.is_alive(), f"blocked on {argv}"
    return result[0]


class TestNonRegularFilesAreRefused:
    """A FIFO or a device named as input is refused at once; a regular file is read up to a bound."""

    @pytest.fixture
    def fifo(self, tmp_path: Path) -> Path:
        path = tmp_path / "pipe"
        os.mkfifo(path)
        return path

    @pytest.mark.parametrize(
        "argv",
        [
            ["check", "{f}"],
            ["run", "{f}", "--virtual", "--no-listen"],
            ["fake-gmail", "--profile", "{f}", "--listen", "127.0.0.1:0"],
            ["run", "--virtual", "--no-listen", "--state", "{f}"],
            ["run", "--driver", "http", "--target", "http://127.0.0.1:9", "--token-file", "{f}", "--no-listen"],
            ["run", "--driver", "http", "--target", "https://127.0.0.1:9", "--ca-file", "{f}", "--no-listen"],
            ["scale-rules", "10", "{out}", "{f}"],
            ["report", "--run", "--drill", "{f}", "--out", "{out}"],
        ],
    )
    def test_a_fifo_is_refused_not_waited_on(
        self, fifo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
    ) -> None:
        filled = [a.format(f=fifo, out=tmp_path / "out") for a in argv]
        assert bounded_main(filled, fifo) == 2
        err = capsys.readouterr().err
        assert "FIFO" in err
        assert "Traceback" not in err

    @pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
    def test_a_device_is_refused(self, capsys: pytest.CaptureFixture[str], device: str) -> None:
        assert bounded_main(["check", device]) == 2
        assert capsys.readouterr().err.strip() == f"loadsim: {device}: a character device; expected a regular file"

    def test_a_huge_regular_file_is_refused_by_its_size_unread(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        huge = tmp_path / "huge.toml"
        with huge.open("wb") as f:
            f.truncate(10 << 30)  # 10 GiB, sparse: refused by fstat, never read
        assert bounded_main(["check", str(huge)]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"loadsim: {huge}: 10,737,418,240 bytes, more than the 4 MiB such a file may have"


# -- secrets -----------------------------------------------------------------------------------------


PASSWORD = "Zq7-p@ss/w0rd-SECRET"
ENCODED = PASSWORD.replace("@", "%40").replace("/", "%2F")
TOKEN = "tok-ABCDEF-0123456789-SECRET"


def _pieces(*secrets: str) -> list[str]:
    """What would give a secret away: itself and the longest halves of it."""
    out = []
    for s in secrets:
        out += [s, s[: len(s) // 2 + 2], s[len(s) // 2 - 2 :]]
    return out


class TestNoSecretInAnyOutput:
    """Credentials planted in every input a run has: none of them in anything the run writes."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("http://user:p@ss@host:9/x", "http://user:***@host:9/x"),
            ("see https://u:a%40b@h/ and http://x:y@z", "see https://u:***@h/ and http://x:***@z"),
            ("https://TOKENASUSER@github.example/r", "https://***@github.example/r"),
            ("Authorization: Bearer abcdefgh", "Authorization: ***"),
            ("b'Authorization: Bearer SEKRET1\\x01x'", "b'Authorization: ***'"),
            ("{'Authorization': 'Basic dXNlcjpwYXNz'}", "{'Authorization': '***'}"),
            ("GET /api?query=up&access_token=abc123 HTTP/1.1", "GET /api?query=up&access_token=*** HTTP/1.1"),
            ("token bearer abcdef123 here", "token bearer *** here"),
            (
                "mailto someone@example.com at http://host/p?email=a@b",
                "mailto someone@example.com at http://host/p?email=a@b",
            ),
        ],
    )
    def test_one_redaction_masks_every_form(self, text: str, expected: str) -> None:
        assert redact(text) == expected

    def test_remembered_secrets_are_masked_anywhere_and_structures_deeply(self) -> None:
        remember("remembered-secret-value")
        assert redact("error: remembered-secret-value rejected") == "error: *** rejected"
        data = {"driver": {"target": "http://a:b-secret@h"}, "token": "x", "by_reason": {"oauth_token_missing": 3}}
        assert redact_data(data) == {
            "driver": {"target": "http://a:***@h"},
            "token": "***",
            "by_reason": {"oauth_token_missing": 3},
        }

    def test_a_run_writes_no_credential_anywhere(self, tmp_path: Path) -> None:
        """An HTTP run with a password (with @) in --target, a token-shaped Pushgateway user, a state file.

        Run in a pseudo-terminal, so the terminal summary is printed too; every output is
        searched for the planted secrets: the terminal, standard error, the JSON log
        lines, --summary-json and the state file.
        """
        summary, state = tmp_path / "summary.json", tmp_path / "run.state"
        with Server() as target, Gateway() as gateway, Gmail() as gmail:
            url = target.url.replace("http://", f"http://alice:{ENCODED}@")
            argv = [
                "run", "--driver", "http", "--target", url, "--rate", "20/s", "--duration", "2s",
                "--no-listen", "--progress", "line", "--grace", "1s", "--log-level", "debug",
                "--pushgateway", gateway.url.replace("http://", f"http://{TOKEN}@"), "--push-interval", "1s",
                "--fault-control", gmail.url.replace("http://", f"http://carol:{ENCODED}@"),
                "--summary-json", str(summary), "--state", str(state), "--fresh",
            ]  # fmt: skip
            terminal, stderr, code = _in_pty(argv, seconds=60)
        assert code == 0, stderr
        basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
        assert set(target.auth) == {f"Basic {basic}"}  # the credentials were used, as Basic auth
        pushed = base64.b64encode(f"{TOKEN}:".encode()).decode()
        assert gateway.auth
        assert set(gateway.auth) == {f"Basic {pushed}"}
        outputs = {
            "terminal": terminal,
            "stderr": stderr,
            "summary": summary.read_text(),
            "state": state.read_bytes().decode("latin-1"),
        }
        assert "requests" in outputs["terminal"]  # the terminal summary was printed
        written = json.loads(outputs["summary"])
        assert written["target"] == target.url
        assert written["fault_control"]["url"] == gmail.url.replace("http://", "http://carol:***@")
        for where, text in outputs.items():
            for piece in [*_pieces(PASSWORD, ENCODED, TOKEN), basic, pushed]:
                assert piece not in text, f"{piece!r} in {where}"

    def test_the_drill_score_card_masks_credentials(self) -> None:
        """A Prometheus whose error text quotes a URL with credentials: the card shows none of them."""
        secret_url = f"http://bob:{ENCODED}@store.example/x"

        class LeakyPrometheus(LoopThread):
            async def start(self) -> str:
                async def query(_request: web.Request) -> web.Response:
                    return web.json_response({"status": "error", "error": f"remote read {secret_url} failed"})

                app = web.Application()
                app.router.add_get("/api/v1/query", query)
                self.runner = web.AppRunner(app, access_log=None)
                await self.runner.setup()
                await web.TCPSite(self.runner, "127.0.0.1", 0).start()
                return f"http://127.0.0.1:{self.runner.addresses[0][1]}"

            async def stop(self) -> None:
                await self.runner.cleanup()

        plan = build_plan(parse_profile({"duration": "1h"}, "t"), virtual=True)
        engine = build(plan).engine

        async def one_phase(url: str) -> Any:
            drill = Drill(engine, url, url, poll=0.01)
            async with drill.connected():
                await drill._phase(1, "inject error-rate-warn", drill._inject_warn, 0.0)
            return drill.card

        with LeakyPrometheus() as prom:
            card = asyncio.run(one_phase(prom.url))
        text = "\n".join(card.lines()) + card_json(card)
        assert "remote read http://bob:***@store.example/x failed" in text
        assert all(piece not in text for piece in _pieces(ENCODED))

    def test_fake_gmail_never_writes_a_request_s_authorization_header(self) -> None:
        """Malformed requests carrying a bearer token: aiohttp's tracebacks and our logs keep it masked."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "loadsim", "fake-gmail", "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            port = int(json.loads(line)["url"].rsplit(":", 1)[1])
            send = "/gmail/v1/users/me/messages/send"
            bearer = f"Authorization: Bearer {TOKEN}"
            for raw in (
                f"POST {send} HTTP/1.1\r\nHost: x\r\n{bearer}\x01\r\nContent-Length: 2\r\n\r\n{{}}",
                f"POST {send} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 9\r\n\r\n{{}}",
                f"POST {send}?access_token={TOKEN} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n[]",
            ):
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(raw.encode("latin-1"))
                    s.shutdown(socket.SHUT_WR)  # the short body ends here: the server sees the loss at once
                    with contextlib.suppress(OSError):
                        s.recv(4096)
            time.sleep(0.3)
        finally:
            proc.terminate()
            out, err = proc.communicate(timeout=20)
        # aiohttp's complaint is one loadsim event (no traceback: see test_hardening_runtime), with the peer and why.
        assert "http.bad_request" in out
        assert "Traceback" not in err
        for piece in _pieces(TOKEN):
            assert piece not in out + err


class Gmail(LoopThread):
    """A real fake-gmail (its control API is what --fault-control checks)."""

    async def start(self) -> str:
        self.fake = FakeGmail()
        await self.fake.start(ListenAddress("127.0.0.1", 0))
        return self.fake.url

    async def stop(self) -> None:
        await self.fake.stop()


class Gateway(LoopThread):
    """A Pushgateway stand-in: accepts every PUT and DELETE, recording the Authorization header."""

    def __init__(self) -> None:
        super().__init__()
        self.auth: list[str] = []

    async def start(self) -> str:
        async def accept(request: web.Request) -> web.Response:
            await request.read()
            self.auth.append(request.headers.get("Authorization", ""))
            return web.Response(status=200)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", accept)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        await self.runner.cleanup()


def _in_pty(argv: list[str], seconds: float) -> tuple[str, str, int]:
    """Run ``loadsim ARGV`` with a pseudo-terminal as standard output; returns (terminal, stderr, exit code)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadsim", *argv], stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    assert proc.stderr is not None
    with proc.stderr:
        stderr = proc.stderr.read().decode("utf-8", "replace")
    code = proc.wait(timeout=max(deadline - time.monotonic(), 1))
    return b"".join(chunks).decode("utf-8", "replace"), stderr, code


# -- unbounded memory -----------------------------------------------------------------------------


class TestUnboundedMemoryIsBounded:
    """What an answer can make loadsim keep is bounded, whatever the target sends."""

    def test_a_1_gib_answer_to_a_kept_body_keeps_64_kib_at_most(self) -> None:
        """1 GiB fed through a connection whose exchange keeps its body: read whole, at most MAX_KEPT held."""
        rig = Rig(max_body=2 << 30)
        ex = rig.submit(keep_body=True)
        conn = rig.conns[0]
        chunk = b"x" * (1 << 20)
        tracemalloc.start()
        try:
            conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (1 << 30))
            for _ in range(1 << 10):
                conn.data_received(chunk)
                assert ex.body is None or len(ex.body) <= wire.MAX_KEPT
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert rig.done == [(ex, 200)]
        assert ex.body is None  # longer than kept: the driver calls it preview_too_large
        assert peak < 4 << 20  # far below the 1 GiB read (the chunk itself is allocated before tracing)

    def test_the_relay_flow_classifies_a_preview_too_large_to_keep(self, tmp_path: Path) -> None:
        class BigPreview(Server):
            async def _send(self, request: web.Request) -> web.Response:
                await request.read()
                body = json.dumps({"preview_id": "p1", "rendered": "x" * (200 << 10)})
                return web.Response(text=body, content_type="application/json")

        summary = tmp_path / "s.json"
        with BigPreview() as big:
            argv = [
                "run", "--driver", "http", "--template", "relay", "--target", big.url, "--rate", "20/s",
                "--duration", "1s", "--no-listen", "--progress", "off", "--grace", "2s", "--summary-json", str(summary),
            ]  # fmt: skip
            assert main(argv) == 0
        by_result = json.loads(summary.read_text())["by_result"]
        assert set(by_result) == {"preview_too_large"}


def test_redaction_keys_are_not_overbroad() -> None:
    """A reason label named like a credential keeps its count."""
    assert re.fullmatch(r"\*+", redact_data({"token": "x"})["token"])
    assert redact_data({"oauth_token_missing": "3"}) == {"oauth_token_missing": "3"}
