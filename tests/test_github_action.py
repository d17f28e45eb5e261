"""``deploy/github``: the composite action and the example workflow, linted and run for real.

The workflow is linted by actionlint (with shellcheck on its scripts) where it
will live, in a repository laid out as a team's: the workflow under
``.github/workflows`` and loadsim checked out at ``.loadsim``, as the workflow's
own checkout step leaves it, so actionlint also checks every ``with:`` against
the action's inputs. Then the workflow's steps are run as the runner would run
them (``tests/github_actions.py``): their ``with:`` evaluated against the event's
inputs and the repository's variables, and the action's ``run:`` scripts executed
by bash on this machine, against promtool and a real Prometheus, Pushgateway and
Alertmanager. The JUnit files they write are validated against the Jenkins xUnit
plugin's ``junit-10.xsd`` (``tests/data``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import xmlschema
import yaml
from conftest import require_binary, require_stack
from github_actions import ActionRun, jobs_for, load_workflow, run_workflow_step, workflow_step

from loadsim import errors
from loadsim.cli import build_parser, main
from loadsim.overlays.scenarios import ALL_ALERTS, ERR_CRIT, LAT_CRIT, SCENARIOS
from loadsim.testing import Stack
from loadsim.thresholds import EXIT_THRESHOLDS
from loadsim.verify.matrix import default_cases

ROOT = Path(__file__).resolve().parents[1]
ACTION = ROOT / "deploy" / "github"
WORKFLOW = ACTION / "workflows" / "alert-synth.yml"
SYNC = ACTION / "sync-choices.sh"
RELAY_RULES = ROOT / "deploy" / "relay" / "prometheus"
SCHEMA = Path(__file__).parent / "data" / "junit-10.xsd"
BIN = Path(sys.executable).parent
"""Where ``python3`` and ``loadsim`` are: what actions/setup-python puts first on PATH on a runner."""


def tool(name: str) -> str:
    """A linter from the test extra (in this venv's bin), or the system's."""
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; pip install -e '.[test]' installs it")
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return found


@pytest.fixture(scope="module")
def junit_schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(SCHEMA)


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return load_workflow(WORKFLOW)


@pytest.fixture
def caller_repo(tmp_path: Path) -> Path:
    """A team's repository after the workflow's checkout steps: its rules, the workflow, loadsim at .loadsim."""
    repo = tmp_path / "relay"
    (repo / "config" / "prometheus").mkdir(parents=True)
    for rules in RELAY_RULES.glob("*.yml"):
        shutil.copy(rules, repo / "config" / "prometheus" / rules.name)
    (repo / ".github" / "workflows").mkdir(parents=True)
    shutil.copy(WORKFLOW, repo / ".github" / "workflows" / WORKFLOW.name)
    (repo / ".loadsim").symlink_to(ROOT)
    subprocess.run(["git", "init", "-q", str(repo)], check=True, timeout=30)
    return repo


def sh(argv: list[Any], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """A bounded command whose exit code the test reads."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, **kwargs)


def annotations(run: ActionRun) -> list[str]:
    """The error annotations the step printed, as the runner reads them (``%25`` is a percent sign)."""
    prefix = "::error title=loadsim "
    return [line.split("::", 2)[2].replace("%25", "%") for line in run.stdout.splitlines() if line.startswith(prefix)]


class TestWorkflowFiles:
    def test_actionlint_is_clean_where_the_workflow_will_live(self, caller_repo: Path) -> None:
        actionlint = tool("actionlint")
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # its shellcheck rule
        alone = sh([actionlint, str(WORKFLOW)], env=env)
        assert (alone.returncode, alone.stdout, alone.stderr) == (0, "", "")
        placed = sh([actionlint], cwd=caller_repo, env=env)
        assert (placed.returncode, placed.stdout, placed.stderr) == (0, "", "")
        # Clean means checked: placed like this, actionlint reads the action's inputs and refuses an unknown one.
        copy = caller_repo / ".github" / "workflows" / WORKFLOW.name
        copy.write_text(copy.read_text().replace("command: verify\n", "command: verify\n          bogus: 1\n"))
        broken = sh([actionlint], cwd=caller_repo, env=env)
        assert broken.returncode == 1
        assert 'input "bogus" is not defined in action "loadsim"' in broken.stdout

    def test_the_action_scripts_pass_shellcheck(self) -> None:
        """actionlint does not read a composite action's scripts: shellcheck reads each one."""
        shellcheck = tool("shellcheck")
        meta = yaml.safe_load((ACTION / "action.yml").read_text())
        scripts = {s["name"]: s["run"] for s in meta["runs"]["steps"]}
        assert set(scripts) == {"Install loadsim", "Install promtool", "Run loadsim"}
        for name, script in scripts.items():
            assert "${{" not in script, f"{name}: inputs reach scripts through env:, never spliced into the code"
            proc = sh([shellcheck, "-s", "bash", "-"], input=script)
            assert proc.returncode == 0, f"{name}:\n{proc.stdout}"
        proc = sh([shellcheck, str(SYNC)])
        assert proc.returncode == 0, proc.stdout

    def test_the_scenario_choices_are_loadsims_scenarios(self, workflow, tmp_path: Path, capsys) -> None:
        scenario = workflow["on"]["workflow_dispatch"]["inputs"]["scenario"]
        assert main(["scenarios", "--format", "github-choices"]) == 0
        assert scenario["options"] == yaml.safe_load(capsys.readouterr().out) == list(SCENARIOS)
        assert scenario["default"] in scenario["options"]
        env = {**os.environ, "LOADSIM": f"{sys.executable} -m loadsim"}
        # The committed workflow is what the command writes.
        check = sh([SYNC, "--check"], env=env)
        assert check.returncode == 0, check.stderr
        # A choice edited by hand is caught, and the command writes the list back.
        stale = tmp_path / "alert-synth.yml"
        stale.write_text(WORKFLOW.read_text().replace("          - latency-warn\n", ""))
        check = sh([SYNC, "--check", stale], env=env)
        assert check.returncode == 1
        assert "+          - latency-warn" in check.stderr
        subprocess.run([SYNC, stale], capture_output=True, env=env, check=True, timeout=60)
        assert stale.read_text() == WORKFLOW.read_text()

    def test_each_trigger_runs_its_jobs(self, workflow: dict[str, Any]) -> None:
        on = workflow["on"]
        assert set(on) == {"workflow_dispatch", "schedule", "pull_request"}
        assert on["workflow_dispatch"]["inputs"]["duration"]["default"] == "5m"
        assert "config/prometheus/**" in on["pull_request"]["paths"]
        assert jobs_for(workflow, "workflow_dispatch", {}) == ["scenario"]
        assert jobs_for(workflow, "pull_request", {"PROMETHEUS_URL": "http://prom:9090"}) == ["verify"]
        assert jobs_for(workflow, "schedule", {}) == ["verify"]
        assert jobs_for(workflow, "schedule", {"PROMETHEUS_URL": "http://prom:9090"}) == ["verify", "report"]


class TestExitCodes:
    """The README's table is the contract; these are the numbers it promises."""

    def test_the_readme_table_names_every_command_with_the_codes(self) -> None:
        readme = (ROOT / "README.md").read_text()
        table = readme.split("## Exit codes", 1)[1].split("\n\n", 2)[1]
        header, _, *rows = table.splitlines()
        assert header == "| command | success | bad input | failed expectation | no-go |"
        cells = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:6]] for r in rows}
        commands = {c.strip("`") for row in cells for c in row.split(", ")}
        subparsers = next(a for a in build_parser()._actions if a.dest == "command")
        assert commands == set(subparsers.choices)
        ok, usage, no = str(errors.EXIT_OK), str(errors.EXIT_USAGE), "–"
        failed, no_go, thresholds = str(errors.EXIT_FAILURE), str(errors.EXIT_NO_GO), str(EXIT_THRESHOLDS)
        codes = {
            name.strip("`"): tuple(cell.split(" ", 1)[0] for cell in row)
            for names, row in cells.items()
            for name in names.split(", ")
        }
        expected = dict.fromkeys(commands, (ok, usage, no, no))
        expected |= {"run": (ok, usage, thresholds, no), "scenario": (ok, usage, thresholds, no)}
        expected |= {
            "verify": (ok, usage, failed, no),
            "drill": (ok, usage, failed, no),
            "report": (ok, usage, no, no_go),
        }
        assert codes == expected
        assert (errors.EXIT_OK, errors.EXIT_FAILURE, errors.EXIT_USAGE, errors.EXIT_NO_GO, errors.EXIT_ERROR) == (
            0, 1, 2, 3, 4,
        )  # fmt: skip

    def test_a_bug_exits_4_with_its_traceback_not_1(self, monkeypatch, capsys) -> None:
        import loadsim.cli

        def broken(_args: object) -> int:
            raise ZeroDivisionError("a bug")

        monkeypatch.setattr(loadsim.cli, "_check", broken)
        assert main(["check"]) == errors.EXIT_ERROR
        err = capsys.readouterr().err
        assert "ZeroDivisionError: a bug" in err
        assert err.splitlines()[-1] == "loadsim: check: internal error (the traceback above); exit 4"


class TestBadInputThroughTheAction:
    """The workflow's scenario step with bad input fails with loadsim's own line, and nothing runs."""

    @pytest.mark.parametrize(
        "case",
        [
            pytest.param(
                (
                    {"scenario": "error-rate-critical", "duration": "60s"},
                    {"PUSHGATEWAY_URL": "http://127.0.0.1:9"},
                    ["scenario", "error-rate-critical", "--duration", "60s"],
                ),
                id="unknown-scenario",
            ),
            pytest.param(
                (
                    {"scenario": "error-rate-crit", "duration": "60 seconds"},
                    {"PUSHGATEWAY_URL": "http://127.0.0.1:9"},
                    ["scenario", "error-rate-crit", "--duration", "60 seconds"],
                ),
                id="malformed-duration",
            ),
            pytest.param(
                (
                    {"scenario": "error-rate-crit", "duration": "60s"},
                    {},
                    ["scenario", "error-rate-crit", "--duration", "60s", "--pushgateway", ""],
                ),
                id="no-pushgateway-variable",
            ),
        ],
    )
    def test_the_step_fails_with_loadsims_one_line_message(
        self, workflow, caller_repo: Path, tmp_path: Path, capsys, case
    ) -> None:
        inputs, variables, argv = case
        run = run_workflow_step(
            workflow_step(workflow, "scenario", "Drive scenario"),
            workspace=caller_repo, runner_temp=tmp_path / "runner", event_name="workflow_dispatch",
            inputs=inputs, variables=variables, path=[BIN], timeout=60,
        )  # fmt: skip
        assert run.code == errors.EXIT_USAGE
        assert run.outputs == {"exit-code": "2", "outcome": "bad-input", "junit": ""}
        assert run.step("Run loadsim").stderr == ""  # no traceback, nothing else
        # The annotation is loadsim's own line, word for word: what `loadsim` itself prints.
        assert main(argv) == errors.EXIT_USAGE
        [own] = capsys.readouterr().err.splitlines()
        assert annotations(run) == [own]
        assert own.startswith("loadsim: ")
        assert "### loadsim scenario: bad-input (exit 2)" in run.summary


@pytest.mark.usefixtures("promtool_installed")
def test_the_verify_step_reports_every_row_and_a_broken_alert_turns_exactly_its_case_red(
    workflow, caller_repo: Path, tmp_path: Path, junit_schema: xmlschema.XMLSchema
) -> None:
    """The nightly/pull-request verify step on the team's rules, one alert threshold raised out of reach.

    ``background-hours: 2`` instead of 48: the 48-hour background row alone costs promtool
    about 28 s per rule set; 2 hours keeps the row (healthy traffic fires nothing) in 2 s.
    ``--export`` keeps the promtool files, to see that two rule sets keep theirs apart.
    """
    v2 = caller_repo / "config" / "prometheus" / "prometheus-alerts-v2.yml"
    text = v2.read_text()
    assert text.count("expr: job:gmail_send_latency_p95:5m > 2.0\n") == 1
    v2.write_text(
        text.replace("expr: job:gmail_send_latency_p95:5m > 2.0\n", "expr: job:gmail_send_latency_p95:5m > 20\n")
    )

    run = run_workflow_step(
        workflow_step(workflow, "verify", "Verify alert rules"),
        workspace=caller_repo, runner_temp=tmp_path / "runner", event_name="pull_request",
        overrides={"background-hours": "2", "args": "--export promtool-tests"}, path=[BIN], timeout=240,
    )  # fmt: skip

    assert run.code == errors.EXIT_FAILURE, run.stderr[-3000:]
    assert run.outputs == {"exit-code": "1", "outcome": "failed", "junit": "loadsim-verify.xml"}
    junit = caller_repo / "loadsim-verify.xml"
    junit_schema.validate(junit)
    doc = junit_schema.to_dict(junit)
    suites = {s["@name"]: s for s in doc["testsuite"]}
    v1_name = "loadsim verify: prometheus-recording.yml + prometheus-alerts.yml"
    v2_name = "loadsim verify: prometheus-recording.yml + prometheus-alerts-v2.yml"
    assert set(suites) == {v1_name, v2_name}
    rows = [c.label for c in default_cases(2)]
    for suite in suites.values():
        # Every row of the matrix x every alert of the contract.
        assert [(c["@classname"], c["@name"].split(" ", 1)[0]) for c in suite["testcase"]] == [
            (r, a) for r in rows for a in ALL_ALERTS
        ]
        assert suite["@tests"] == str(len(rows) * len(ALL_ALERTS))
    red = [(name, c) for name, s in suites.items() for c in s["testcase"] if "failure" in c]
    assert [(name, c["@classname"], c["@name"]) for name, c in red] == [(v2_name, "latency-crit", f"{LAT_CRIT} fires")]
    message = red[0][1]["failure"][0]["@message"]
    assert message.startswith(f"{LAT_CRIT} did not fire: latency-crit should fire it within its 30 minutes")
    assert "fired: GmailSendHighLatencyWarning at +" in message
    # The same case against the untouched alert file: green, with when it fired.
    same = next(
        c for c in suites[v1_name]["testcase"] if (c["@classname"], c["@name"]) == ("latency-crit", f"{LAT_CRIT} fires")
    )
    assert "failure" not in same
    assert same["system-out"][0].startswith("fired at +")
    # Two rule sets name the same cases: each keeps its promtool files apart.
    kept = {p.relative_to(caller_repo / "promtool-tests").as_posix() for p in caller_repo.glob("promtool-tests/*/*")}
    assert {"rules-1/latency-crit.test.yml", "rules-2/latency-crit.test.yml"} <= kept
    assert "### loadsim verify: failed (exit 1)" in run.summary
    assert "FAIL latency-crit" in run.summary


@dataclass
class Background:
    """A workflow step running in a thread (the runner's view arrives when it ends)."""

    thread: threading.Thread
    result: dict[str, ActionRun]

    def join(self, timeout: float) -> ActionRun:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the step did not end"
        return self.result["run"]


def in_background(**kwargs: Any) -> Background:
    result: dict[str, ActionRun] = {}
    thread = threading.Thread(target=lambda: result.update(run=run_workflow_step(**kwargs)), daemon=True)
    thread.start()
    return Background(thread, result)


def scenario_step(
    workflow: dict[str, Any],
    repo: Path,
    tmp_path: Path,
    stack: Stack,
    *,
    duration: str,
    overrides: dict[str, str],
    timeout: float = 60,
    cancel: threading.Event | None = None,
) -> Background:
    """The workflow's scenario job, dispatched for error-rate-crit against the stack's Pushgateway."""
    return in_background(
        step=workflow_step(workflow, "scenario", "Drive scenario"),
        workspace=repo, runner_temp=tmp_path / "runner", event_name="workflow_dispatch",
        inputs={"scenario": "error-rate-crit", "duration": duration},
        variables={"PUSHGATEWAY_URL": stack.pushgateway.url},
        overrides=overrides, path=[BIN], timeout=timeout, cancel=cancel,
    )  # fmt: skip


def relay_synth_groups(stack: Stack) -> list[dict[str, Any]]:
    """The groups the scenario step pushed."""
    return [g for g in stack.pushgateway_groups() if g["labels"].get("job") == "relay_synth"]


@pytest.fixture
def stack() -> Iterator[Stack]:
    require_stack()
    with Stack(alerts="v2") as s:
        yield s


@pytest.mark.stack
def test_the_scenario_step_pushes_and_the_time_scaled_critical_fires(
    workflow, caller_repo: Path, tmp_path: Path, stack: Stack, junit_schema: xmlschema.XMLSchema
) -> None:
    """``scenario error-rate-crit --duration 60s`` through the workflow's step, into a real Pushgateway.

    The stack's Prometheus runs the relay's v2 rules 30x time-scaled (``[5m]`` -> ``[10s]``,
    ``for: 10m`` -> ``20s``; see ``loadsim.testing.stack``), so the step's ``with:`` gets
    three more options, each for the scaling:

    * ``rate: 3000/s``: a 10 s window at a 1 s scrape spans about 9 s of sends, 27,000 at
      3000/s. The overlay's 6% reads about 5.5% for its first 30 s (its timeouts, a tenth of
      its errors, are counted when they end, 30 s later), with a standard deviation of
      sqrt(0.055 x 0.945 / 27000) = 0.14%: 3.4 sd above the 5% threshold, so the 20
      evaluations ``for: 20s`` needs in a row all read above it (a reset is about 1 in 150).
      At the default 5/s a window would hold 45 sends and the ratio would be noise.
    * ``--push-interval 1s``: a 10 s window needs a new value every scrape, not every 10 s.
    * ``--grace 1s``: sends still out when the minute ends (timeouts take 30 s) are counted
      as abandoned instead of holding the step for another 30 s.

    While the step runs, the workflow's nightly report step reads the window so far: no-go,
    with one JUnit case per readiness item.
    """
    started = time.time()
    overrides = {"rate": "3000/s", "args": "--push-interval 1s --grace 1s"}
    scenario = scenario_step(workflow, caller_repo, tmp_path, stack, duration="60s", overrides=overrides, timeout=120)

    def pushed() -> list[dict[str, Any]]:
        return relay_synth_groups(stack)

    groups = stack.wait_until(pushed, timeout=20, interval=0.5, what="the pushed group")
    assert [g["labels"] for g in groups] == [{"job": "relay_synth", "instance": "loadsim"}]
    stack.wait_until(lambda: ERR_CRIT in stack.firing(), timeout=55, interval=0.5, what="the critical firing")
    fired_after = time.time() - started

    report = run_workflow_step(
        workflow_step(workflow, "report", "Readiness report, last 24 hours"),
        workspace=caller_repo, runner_temp=tmp_path / "report-runner", event_name="schedule",
        variables={"PROMETHEUS_URL": stack.prometheus.url},
        overrides={"from": datetime.fromtimestamp(started, UTC).isoformat(), "args": "--step 5s"},
        path=[BIN], timeout=60,
    )  # fmt: skip

    run = scenario.join(timeout=90)
    took = time.time() - started
    assert run.code == 0, run.stderr[-3000:]
    assert run.outputs == {"exit-code": "0", "outcome": "passed", "junit": ""}
    assert [(s.name, s.ran, s.code) for s in run.steps] == [
        ("Install loadsim", True, 0), ("Install promtool", False, None), ("Run loadsim", True, 0),
    ]  # fmt: skip
    assert 60 <= took < 90, took
    assert fired_after < 55, fired_after  # for: 20s after the ratio crossed 5%, inside the minute
    assert annotations(run) == []
    # A clean exit pushes once more and deletes its group.
    assert pushed() == []

    assert report.code == errors.EXIT_NO_GO, report.stderr[-3000:]
    assert report.outputs == {"exit-code": "3", "outcome": "no-go", "junit": "loadsim-report.xml"}
    junit = caller_repo / "loadsim-report.xml"
    junit_schema.validate(junit)
    [suite] = junit_schema.to_dict(junit)["testsuite"]
    cases = {c["@name"]: c for c in suite["testcase"]}
    assert len(cases) == 10
    error_rate = cases["Error rate P95 < 1%"]["failure"][0]["@message"]
    assert error_rate.endswith("(limit 1.000%)"), error_rate
    assert float(error_rate.split("%")[0]) > 3.0  # the overlay's 6%, read over the window so far
    assert cases["Tabletop drill passed (>= 5/6)"]["skipped"][0]["@message"].startswith("not checked:")
    properties = {p["@name"]: p["@value"] for p in suite["properties"][0]["property"]}
    assert properties["decision"] == "NO-GO"
    print(f"\nscenario step {took:.1f}s, critical firing {fired_after:.1f}s after the step started")


def processes_naming(text: str) -> list[int]:
    """Pids of the processes whose command line contains ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue  # gone meanwhile
            if text in cmdline:
                found.append(int(proc.name))
    return found


@pytest.mark.stack
def test_a_cancelled_scenario_step_stops_loadsim_and_deletes_its_group(
    workflow: dict[str, Any], caller_repo: Path, tmp_path: Path, stack: Stack
) -> None:
    """Cancelling the job: the runner signals the step's shell alone (SIGINT, SIGTERM 7.5 s later, then a kill).

    Before the action passed the signal on, bash held the SIGINT until loadsim ended (never, for
    15 minutes), died of the SIGTERM, and left loadsim orphaned and still pushing: the group
    stayed on the Pushgateway with the fault's figures, for the team's alerts to read.
    """
    cancel = threading.Event()
    overrides = {"args": "--push-interval 1s"}
    scenario = scenario_step(workflow, caller_repo, tmp_path, stack, duration="15m", overrides=overrides, cancel=cancel)

    def pushed() -> list[dict[str, Any]]:
        return relay_synth_groups(stack)

    try:
        stack.wait_until(pushed, timeout=20, interval=0.5, what="the pushed group")
        cancel.set()
        run = scenario.join(timeout=30)
        orphans = processes_naming(f"--pushgateway {stack.pushgateway.url}")
    finally:
        cancel.set()
        for pid in processes_naming(f"--pushgateway {stack.pushgateway.url}"):  # an orphan: never past the test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    step = run.steps[-1]
    assert step.name == "Run loadsim"
    assert step.ended_by == "SIGINT", (step.ended_by, step.stderr[-2000:])
    assert step.cancel_seconds is not None
    assert step.cancel_seconds < 5
    assert pushed() == []  # its last push, then its group deleted
    assert orphans == []  # nothing left to push again
    assert run.outputs["exit-code"] == str(step.code)  # the shell's bookkeeping ran, with loadsim's code
    print(f"\ncancelled: the step ended {step.cancel_seconds:.2f}s after the SIGINT, exit {step.code}")


@pytest.fixture(scope="module")
def promtool_installed() -> str:
    return require_binary("promtool")
