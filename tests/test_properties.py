"""Property-based tests (Hypothesis): whatever a user or a target sends, loadsim answers in its own words.

* any TOML document, as a profile: it validates (and then every state its timeline can
  produce samples without an error or a numpy warning), or ``loadsim check`` exits 2 with
  one ``loadsim: file: key: message`` line per problem and no traceback;
* any argument vector: the command validates (reaches the point where its work would start),
  or exits 2 the same way;
* any HTTP response, split at any boundaries: the wire client ends each exchange exactly
  once, with the same result whatever the split, and keeps no more body than its limit.

Every example is bounded in time. The settings profile (``tests/conftest.py``) is
derandomized by default, so a run is reproducible; ``HYPOTHESIS_PROFILE=dev`` explores.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import itertools
import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_wire_parsing import Rig

from loadsim.cli import build_parser, main
from loadsim.drivers import wire
from loadsim.model.sampler import OutcomeModel
from loadsim.overlays.combinations import breaks
from loadsim.overlays.scenarios import SCENARIOS
from loadsim.overlays.state import RunState
from loadsim.plan import build_plan
from loadsim.profile import load_profile

pytestmark = pytest.mark.bad_input

SCALE = float(os.environ.get("LOADSIM_PROPERTY_SCALE", "1"))
"""Multiplies every property's example count: ``LOADSIM_PROPERTY_SCALE=20 HYPOTHESIS_PROFILE=dev`` hunts."""


def examples(n: int) -> int:
    """``n`` examples, scaled by :data:`SCALE`."""
    return max(1, round(n * SCALE))


EXAMPLE_SECONDS = 10.0
"""Longest one example may take (a profile check or a refused command takes well under a second)."""
TRACEBACK = "Traceback (most recent call last)"


# -- values users write ---------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(),  # nan, inf, -0.0, subnormals, 1e308
    st.sampled_from([0, 1, -1, 0.5, 1e-300, 1e308, 2**63, 10**6, 1e9, 3e7]),
)
durations = st.sampled_from(["30s", "15m", "48h", "1h30m", "250ms", "0s", "-5m", "15x", "", "1e308s", "366d", "367d"])
rates = st.sampled_from(["1/s", "0.5/s", "60/m", "1req/s", "3e7/s", "1e9/s", "0/s", "-1/s", "1e-300/s", "x/s"])
dates = st.one_of(
    st.dates(),
    st.times(),
    st.datetimes(),
    st.datetimes(timezones=st.just(dt.UTC), min_value=dt.datetime(1, 1, 2)),  # noqa: DTZ001 - hypothesis takes naive bounds
)
texts = st.one_of(durations, rates, st.text(max_size=12), st.sampled_from(list(SCENARIOS)))
scalars = st.one_of(numbers, texts, st.booleans(), dates)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)


def _toml_value(v: Any) -> str:  # noqa: PLR0911 - one rendering per TOML type
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a JSON string is a TOML basic string, bar rare escapes
    if isinstance(v, dt.datetime | dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    assert isinstance(v, dict)
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"


SCHEMA: dict[str, list[str]] = {
    "": ["name", "description", "duration", "seed", "arrivals"],
    "engine": ["tick", "virtual_tick", "grace", "max_in_flight", "virtual_start"],
    "controller": ["mode", "interval", "percent", "failure_probability", "dwell", "cooldown", "time_scale"],
    "population": ["workspaces", "actors", "skew"],
    "metrics": ["status_label", "workspace_ids", "workspace_weights"],
    "model.latency": ["p50", "p95", "tail_fraction", "tail_p50", "tail_p95", "timeout"],
    "model.errors": ["gmail_5xx", "gmail_429", "validation_error", "rollout_gated", "ok"],
    "model.attachments": ["probability", "extra_mean", "size_p50_bytes", "size_p95_bytes"],
    "model.mime": ["base_p50", "base_p95", "per_attachment", "per_megabyte"],
    "model.sanitization": ["tag_removed", "attr_removed"],
    "model.inline": ["matched", "orphan_cid"],
}
SEGMENT_KEYS = {
    "constant": ["rate", "duration"],
    "ramp": ["from", "to", "duration"],
    "steps": ["rates", "step", "duration"],
    "diurnal": ["trough", "peak", "peak_hour", "sharpness", "weekend_factor", "duration"],
}
OVERLAY_KEYS = ["start", "duration", "ramp", "ramp_in", "ramp_out", "magnitude", "options"]


@st.composite
def profile_documents(draw: st.DrawFn) -> str:
    """A TOML document shaped like a profile: real keys (and a few unknown ones) with any values."""
    lines: list[str] = []
    for section, keys in SCHEMA.items():
        chosen = draw(st.lists(st.sampled_from([*keys, "bogus"]), max_size=3, unique=True))
        if not chosen:
            continue
        if section:
            lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(draw(values))}" for key in chosen]
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from([*SEGMENT_KEYS, "wobble"]))
        lines += ["[[schedule]]", f'kind = "{kind}"']
        for key in draw(st.lists(st.sampled_from(SEGMENT_KEYS.get(kind, ["rate"])), max_size=4, unique=True)):
            value = draw(st.one_of(values, rates, durations, st.lists(rates, max_size=3)))
            lines.append(f"{key} = {_toml_value(value)}")
    for _ in range(draw(st.integers(0, 3))):
        lines += ["[[overlay]]", f"scenario = {_toml_value(draw(st.sampled_from([*SCENARIOS, 'nope'])))}"]
        for key in draw(st.lists(st.sampled_from(OVERLAY_KEYS), max_size=5, unique=True)):
            if key == "options":
                name = draw(st.sampled_from(sorted({k for s in SCENARIOS.values() for k in s.options} | {"x"})))
                value: Any = {name: draw(st.one_of(numbers, texts))}
            else:
                value = draw(st.one_of(durations, values, st.floats(0, 10)))
            lines.append(f"{key} = {_toml_value(value)}")
    text = "\n".join(lines) + "\n"
    if draw(st.integers(0, 9)) == 0:  # now and then, a document cut short or with a stray byte
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.sampled_from(["", "\x00", "[", '"', "=", "\n[[x"]))
    return text


# -- running the command line ---------------------------------------------------------------------


WOULD_RUN = "would run"


class WouldRun(SystemExit):
    """The command validated everything and got to where its work would start.

    A SystemExit (with its own code): the CLI lets it through as it lets an exit through,
    where it catches any Exception (a bug) and prints it.
    """

    def __init__(self) -> None:
        super().__init__(WOULD_RUN)


@contextlib.contextmanager
def stopped_before_work(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every command's real work (a run, a matrix, a report) replaced by raising :class:`WouldRun`."""

    def run_loop(coro: Any) -> Any:
        coro.close()
        raise WouldRun

    def would_run(*_args: Any, **_kwargs: Any) -> Any:
        raise WouldRun

    monkeypatch.setattr("loadsim.cli._run_loop", run_loop)
    for target in (
        "loadsim.report.backfill.backfill",
        "loadsim.verify.matrix.run_matrix",
        "loadsim.verify.rollout.run_all",
        "loadsim.report.observe.observe",
        "loadsim.report.own.served",
        "loadsim.cli._check_drill_stack",
        "loadsim.calibrate.run.run",
        "loadsim.sensitivity.command.run",
    ):
        monkeypatch.setattr(target, would_run)
    yield


def cli(argv: list[str]) -> tuple[int | str, str, str]:
    """``main(argv)`` in this process: (exit code, or ``"ran"``; stdout; stderr), timed."""
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    code: int | str
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse (a usage line and an error line, exit 2), or WouldRun
            code = "ran" if e.code == WOULD_RUN else e.code if isinstance(e.code, int) else 2
    assert time.monotonic() - started < EXAMPLE_SECONDS, argv
    return code, out.getvalue(), err.getvalue()


def assert_refused_in_one_line_each(err: str, argparse_usage: bool = False) -> None:
    lines = [line for line in err.splitlines() if line]
    assert lines
    if argparse_usage:
        assert lines[0].startswith("usage: loadsim")
        assert any(": error: " in line for line in lines)
    else:
        assert all(line.startswith("loadsim: ") for line in lines), lines
        assert all(len(line.split(": ")) >= 3 for line in lines), lines  # "loadsim: source: [key: ]message"


def states_sample_cleanly(path: Path) -> None:
    """A profile that validated: each state its timeline produces samples without error or warning.

    ``filterwarnings = error`` (pyproject) turns any numpy overflow or invalid-value warning
    into a failure here.
    """
    plan = build_plan(load_profile(path), virtual=True)
    rng = np.random.default_rng(1)
    for t in breaks(plan.timeline.overlays, plan.duration)[:50]:
        state, _ = plan.timeline.state_at(RunState(plan.model, plan.controller, rate=plan.schedule.at(t)), t)
        OutcomeModel(state.model).sample(rng, np.zeros(500))
        expected = plan.schedule.expected(t, min(t + plan.tick, plan.duration)) * state.arrival_scale
        assert math.isfinite(expected)
        if expected > 0:
            rng.poisson(min(expected, 1e6))


class TestProfilesValidateOrAreRefused:
    @settings(max_examples=examples(60), suppress_health_check=[HealthCheck.too_slow])
    @given(document=profile_documents())
    def test_any_toml_document(self, tmp_path_factory: pytest.TempPathFactory, document: str) -> None:
        path = tmp_path_factory.mktemp("p") / "p.toml"
        path.write_text(document, encoding="utf-8", errors="surrogatepass")
        code, out, err = cli(["check", str(path)])
        event(f"check exits {code}")
        assert TRACEBACK not in out + err
        assert code in (0, 2), (code, err)
        if code == 2:
            assert_refused_in_one_line_each(err)
            assert all(line.startswith(f"loadsim: {path}") for line in err.splitlines() if line)
        else:
            states_sample_cleanly(path)


# -- argument vectors -----------------------------------------------------------------------------

COMMANDS = (
    "run",
    "check",
    "scenario",
    "backfill",
    "rollout",
    "scale-rules",
    "drill",
    "verify",
    "report",
    "calibrate",
    "sensitivity",
    "merge",
)
UNSAFE = {"-h", "--help", "--allow-host", "--allow-target", "--version"}
"""Options never generated: help exits 0 by design; allowed hosts would send the test to the network."""
URLS = ["http://127.0.0.1:1", "http://[::1]:1", "https://127.0.0.1:1/x", "ftp://127.0.0.1", "", "http://", "10.0.0.1"]


def _subparser(command: str) -> Any:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # argparse keeps them here
    return sub.choices[command]


@st.composite
def argument_vectors(draw: st.DrawFn, paths: dict[str, Path]) -> list[str]:  # noqa: C901 - one branch per kind of argparse action
    """A subcommand, some of its real options with any values, maybe a stray one."""
    command = draw(st.sampled_from(COMMANDS))
    parser = _subparser(command)
    argv = [command]
    path_values = st.sampled_from([str(p) for p in paths.values()])
    word = st.one_of(durations, rates, texts, st.sampled_from(URLS), path_values, numbers.map(str))
    for action in parser._actions:
        if not action.option_strings:
            if action.dest == "profile" and draw(st.booleans()):
                argv.append(draw(path_values))
            elif action.dest in ("name", "factor", "out") and action.nargs is None:
                argv.append(draw(st.one_of(st.sampled_from(list(SCENARIOS)), word)))
            elif action.dest == "files":
                argv += draw(st.lists(path_values, max_size=2))
            continue
        option = action.option_strings[-1]
        if option in UNSAFE or draw(st.integers(0, 3)) != 0:  # about one option in four
            continue
        if action.nargs == 0:
            argv.append(option)
        elif action.choices:
            argv += [option, draw(st.one_of(st.sampled_from([str(c) for c in action.choices]), word))]
        elif "url" in (action.metavar or "").lower() or option in ("--pushgateway", "--target"):
            argv += [option, draw(st.sampled_from(URLS))]
        else:
            argv += [option, draw(word)]
    if draw(st.integers(0, 7)) == 0:
        argv.append(draw(st.sampled_from(["--bogus", "extra", "-x"])))
    return argv


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Files an argument may name: a good profile, bad ones, a directory, places that cannot be written."""
    root = tmp_path_factory.mktemp("argv")
    good = root / "good.toml"
    good.write_text('duration = "1m"\n', encoding="utf-8")
    bad = root / "bad.toml"
    bad.write_text("duration = 2026-01-01\n[[overlay]]\n", encoding="utf-8")
    binary = root / "binary"
    binary.write_bytes(b"\xff\xfe\x00")
    return {
        "good": good,
        "bad": bad,
        "binary": binary,
        "dir": root,
        "missing": root / "missing.toml",
        "out": root / "out.json",
        "proc": Path("/proc/x"),
        "null": Path("/dev/null"),
    }


class TestArgumentVectorsValidateOrAreRefused:
    @settings(
        max_examples=examples(250), suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
    )
    @given(data=st.data())
    def test_any_argument_vector(self, paths: dict[str, Path], monkeypatch: pytest.MonkeyPatch, data: Any) -> None:
        argv = data.draw(argument_vectors(paths))
        monkeypatch.chdir(paths["dir"])  # relative outputs ("30s") land in the test's directory
        with stopped_before_work(monkeypatch):
            code, out, err = cli(argv)
        event(f"{argv[0]}: {code}")
        assert TRACEBACK not in out + err, argv
        assert code in ("ran", 0, 1, 2), (argv, code, err)
        if code == 2:
            assert_refused_in_one_line_each(err, argparse_usage=err.startswith("usage:"))


# -- the wire parser ------------------------------------------------------------------------------

statuses = st.one_of(st.integers(100, 599), st.sampled_from([0, 99, 600, 999, 1000, 200, 204, 304, 101]))


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    """One HTTP response: any status and version, framed by length, chunks or the close, or mangled."""
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1", b"HTTQ/1.1"]))
    status = str(draw(statuses)).encode()
    head = [version + b" " + status + b" " + draw(st.sampled_from([b"OK", b"", b"Weird Reason"]))]
    body = draw(st.binary(max_size=300))
    framing = draw(st.sampled_from(["length", "short", "long", "chunked", "close", "bad-length", "none"]))
    if framing in ("length", "short", "long"):
        declared = len(body) + {"length": 0, "short": -min(len(body), 3), "long": 7}[framing]
        head.append(b"Content-Length: " + str(declared).encode())
    elif framing == "bad-length":
        head.append(b"Content-Length: " + draw(st.sampled_from([b"abc", b"-1", b"1, 2", b"99999999999999999999"])))
    elif framing == "chunked":
        head.append(b"Transfer-Encoding: chunked")
        pieces = draw(st.lists(st.binary(min_size=1, max_size=60), max_size=4))
        body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
        if draw(st.booleans()):
            body += b"0\r\n\r\n"
    elif framing == "close":
        head.append(b"Connection: close")
    head += draw(
        st.lists(st.sampled_from([b"X-A: b", b"Server: t", b"Bad Header", b"Keep-Alive: timeout=1"]), max_size=3)
    )
    data = b"\r\n".join(head) + b"\r\n\r\n" + body
    if draw(st.integers(0, 5)) == 0:
        data = draw(st.binary(max_size=200))  # not HTTP at all
    return data


def feed(data: bytes, cuts: list[int], max_body: int) -> list[tuple[int, int, bytes | None]]:
    """One exchange on one connection; the target's bytes in pieces cut at ``cuts``, then it closes."""
    rig = Rig(limit=1, max_body=max_body)
    (conn,) = rig.conns
    rig.submit(keep_body=True)
    edges = [0, *sorted(set(cuts)), len(data)]
    for a, b in itertools.pairwise(edges):
        if b > a and not conn.closed:
            conn.data_received(data[a:b])
    rig.hang_up(conn)  # the target closes: whatever is still out ends now
    rig.shut()
    return [(ex.index, status, bytes(ex.body) if ex.body is not None else None) for ex, status in rig.done]


class TestWireParserAnyResponseAnySplit:
    @settings(max_examples=examples(250), suppress_health_check=[HealthCheck.too_slow])
    @given(
        answers=st.lists(responses(), min_size=1, max_size=3),
        cuts=st.lists(st.integers(0, 2000), max_size=8),
        max_body=st.sampled_from([1 << 20, 64, 1]),
    )
    def test_the_exchange_ends_once_with_the_same_result_whatever_the_split(
        self, answers: list[bytes], cuts: list[int], max_body: int
    ) -> None:
        """The first answer is the exchange's; what follows it (more answers, junk) is out of step."""
        data = b"".join(answers)
        cuts = [c for c in cuts if 0 < c < len(data)]
        started = time.monotonic()
        whole = feed(data, [], max_body)
        split = feed(data, cuts, max_body)
        single = feed(data, list(range(1, len(data))), max_body)
        assert time.monotonic() - started < EXAMPLE_SECONDS
        for result in (whole, split, single):
            assert len(result) == 1, result  # ended exactly once
            ((_, status, body),) = result
            assert 100 <= status <= 999 or status in ENDINGS, status
            assert body is None or len(body) <= max_body
        assert settled(split) == settled(whole), (cuts, data)
        assert settled(single) == settled(whole), data


ENDINGS = {wire.TIMEOUT, wire.CONNECTION_ERROR, wire.STALE_CONNECTION, wire.TRUNCATED, wire.OVERSIZE}


def settled(result: list[tuple[int, int, bytes | None]]) -> list[tuple[int, int, bytes | None]]:
    """What a split must not change: the status, and the body unless it was oversize.

    An oversize body is dropped as it arrives: the bytes kept before the limit was crossed
    depend on where the reads fell, and nothing reads the body of an exchange that failed.
    """
    return [(i, status, None if status == wire.OVERSIZE else body) for i, status, body in result]
