"""A composite action's steps, run on this machine as GitHub's runner runs them.

The tests of ``deploy/github`` do not trust a reading of the YAML: they run the
action's own ``run:`` scripts, for real, in bash, against the local Prometheus
stack. What the runner does for a composite action step is repeated here:

* the step's ``with:`` values (from a workflow step, its expressions evaluated
  against ``inputs``, ``vars``, ``secrets`` and ``github``) become the action's
  ``inputs``, defaults filled in;
* each step's ``if:`` is evaluated (``success()`` unless it says otherwise), its
  ``env:`` and ``run:`` have their ``${{ }}`` expressions substituted, and the
  script runs as ``bash --noprofile --norc -eo pipefail FILE`` in the workspace,
  with ``GITHUB_ACTION_PATH``, ``GITHUB_OUTPUT``, ``GITHUB_ENV``, ``GITHUB_PATH``,
  ``GITHUB_STEP_SUMMARY``, ``RUNNER_TEMP``, ``GITHUB_WORKSPACE`` and ``CI=true``;
* what a step writes to ``GITHUB_OUTPUT`` becomes ``steps.<id>.outputs``,
  ``GITHUB_PATH`` and ``GITHUB_ENV`` reach the later steps, and the action's
  ``outputs:`` are evaluated at the end;
* a cancelled run (``cancel`` set while a step runs) is stopped as the runner's
  ``ProcessInvoker`` stops it: SIGINT to the step's shell alone, SIGTERM 7.5 s later,
  a kill 2.5 s after that; the step records which one ended it, and no later step runs.

Expressions are a strict subset of GitHub's language (literals, context paths,
``==`` ``!=`` ``&&`` ``||`` ``!``, parentheses and the status functions), with
its semantics: ``||`` and ``&&`` return an operand, strings compare ignoring
case, a missing property is null. Anything outside the subset raises, so an
action that starts using more fails its tests instead of being misread.

What is not run: ``uses:`` steps of other actions (``actions/checkout``,
``actions/setup-python``); a test lays the workspace out as they would leave it.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Contexts = Mapping[str, Any]


class ExpressionError(Exception):
    """An expression outside the subset this runner understands."""


_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>\d+(?:\.\d+)?)|(?P<op>==|!=|&&|\|\||!|\(|\))"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z_][A-Za-z0-9_-]*)*))"
)
_EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)


def truthy(value: Any) -> bool:
    """GitHub's truthiness: false, 0, '', null and NaN are false."""
    if isinstance(value, float) and math.isnan(value):
        return False
    return value not in (None, False, 0, "")


def _number(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).strip() or 0)
    except ValueError:
        return math.nan


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.casefold() == b.casefold()
    if type(a) is type(b):
        return bool(a == b)
    return _number(a) == _number(b)


def render(value: Any) -> str:
    """A value as it is substituted into text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class _Parser:
    def __init__(self, text: str, contexts: Contexts, functions: Mapping[str, Callable[[], bool]]) -> None:
        self.text, self.contexts, self.functions = text, contexts, functions
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            if not text[pos:].strip():
                break
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                raise ExpressionError(f"cannot read {text[pos:]!r} in {text!r}")
            kind = m.lastgroup or ""
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, op: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (op is not None and token != ("op", op)):
            raise ExpressionError(f"expected {op or 'more'} in {self.text!r}")
        self.i += 1
        return token

    def parse(self) -> Any:
        value = self.or_()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.peek()} in {self.text!r}")
        return value

    def or_(self) -> Any:
        value = self.and_()
        while self.peek() == ("op", "||"):
            self.take()
            right = self.and_()
            value = value if truthy(value) else right
        return value

    def and_(self) -> Any:
        value = self.unary()
        while self.peek() == ("op", "&&"):
            self.take()
            right = self.unary()
            value = right if truthy(value) else value
        return value

    def unary(self) -> Any:
        if self.peek() == ("op", "!"):
            self.take()
            return not truthy(self.unary())
        return self.comparison()

    def comparison(self) -> Any:
        left = self.primary()
        token = self.peek()
        if token in (("op", "=="), ("op", "!=")):
            self.take()
            equal = _equal(left, self.primary())
            return equal if token == ("op", "==") else not equal
        return left

    def primary(self) -> Any:
        kind, text = self.take()
        if (kind, text) == ("op", "("):
            value = self.or_()
            self.take(")")
            return value
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if kind == "num":
            return float(text)
        if kind != "name":
            raise ExpressionError(f"unexpected {text!r} in {self.text!r}")
        return self.name(text)

    def name(self, text: str) -> Any:
        literals = {"true": True, "false": False, "null": None}
        if text in literals:
            return literals[text]
        if self.peek() == ("op", "("):
            self.take()
            self.take(")")
            if text not in self.functions:
                raise ExpressionError(f"function {text}() is not supported here")
            return self.functions[text]()
        head, *rest = text.split(".")
        if head not in self.contexts:
            raise ExpressionError(f"unknown context {head!r} in {self.text!r}")
        value: Any = self.contexts[head]
        for key in rest:
            value = value.get(key) if isinstance(value, Mapping) else None
        return value


def evaluate(expr: str, contexts: Contexts, *, failed: bool = False) -> Any:
    """One expression (with or without its ``${{ }}``)."""
    whole = _EXPR.fullmatch(expr.strip())
    text = whole.group(1) if whole else expr
    functions = {
        "success": lambda: not failed,
        "failure": lambda: failed,
        "always": lambda: True,
        "cancelled": lambda: False,
    }
    return _Parser(text, contexts, functions).parse()


def interpolate(text: str, contexts: Contexts) -> str:
    """``text`` with every ``${{ expr }}`` replaced by its value."""
    return _EXPR.sub(lambda m: render(evaluate(m.group(1), contexts)), text)


def load_workflow(path: Path) -> dict[str, Any]:
    """A workflow file; YAML 1.1 reads the ``on:`` key as True, put back as ``on``."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    if True in doc:
        doc["on"] = doc.pop(True)
    return dict(doc)


def jobs_for(workflow: Mapping[str, Any], event_name: str, variables: Mapping[str, str]) -> list[str]:
    """The jobs whose ``if:`` holds for an event."""
    contexts = {"github": {"event_name": event_name}, "vars": variables}
    return [name for name, job in workflow["jobs"].items() if truthy(evaluate(str(job.get("if", "true")), contexts))]


@dataclass
class StepRun:
    """What one of the action's steps did."""

    name: str
    ran: bool
    code: int | None = None
    stdout: str = ""
    stderr: str = ""
    ended_by: str | None = None
    """On a cancelled run: the runner's signal the shell ended after (SIGINT, SIGTERM or kill)."""
    cancel_seconds: float | None = None
    """On a cancelled run: from the SIGINT to the shell's exit."""


@dataclass
class ActionRun:
    """What the whole action did: the runner's view of it."""

    steps: list[StepRun]
    outputs: dict[str, str]
    summary: str
    inputs: dict[str, str] = field(default_factory=dict)

    @property
    def code(self) -> int:
        """The failing step's exit code (the step's result), 0 when every step passed."""
        return next((s.code for s in self.steps if s.code), 0) or 0

    @property
    def stdout(self) -> str:
        """Every step's output, in order."""
        return "".join(s.stdout for s in self.steps)

    @property
    def stderr(self) -> str:
        """Every step's error output, in order."""
        return "".join(s.stderr for s in self.steps)

    def step(self, name: str) -> StepRun:
        """A step by name."""
        return next(s for s in self.steps if s.name == name)


def _read_outputs(path: Path) -> dict[str, str]:
    """``name=value`` lines and ``name<<DELIMITER`` blocks, as the runner reads ``GITHUB_OUTPUT``."""
    out: dict[str, str] = {}
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            end = lines.index(delimiter, i + 1)
            out[name] = "\n".join(lines[i + 1 : end])
            i = end + 1
            continue
        if line:
            name, value = line.split("=", 1)
            out[name] = value
        i += 1
    return out


def run_action(
    action_dir: Path,
    with_: Mapping[str, str],
    *,
    workspace: Path,
    runner_temp: Path,
    path: Sequence[Path] = (),
    timeout: float = 300.0,
    cancel: threading.Event | None = None,
) -> ActionRun:
    """Run a composite action's steps in ``workspace``; ``path`` comes first on PATH (what setup-python adds)."""
    meta = yaml.safe_load((action_dir / "action.yml").read_text(encoding="utf-8"))
    if meta["runs"]["using"] != "composite":
        raise ExpressionError(f"{action_dir}: not a composite action")
    declared = meta.get("inputs") or {}
    unknown = sorted(set(with_) - set(declared))
    if unknown:
        raise ExpressionError(f"{action_dir}: no such inputs: {unknown}")
    inputs = {name: str(with_.get(name, spec.get("default", ""))) for name, spec in declared.items()}
    missing = [name for name, spec in declared.items() if spec.get("required") and not inputs[name]]
    if missing:
        raise ExpressionError(f"{action_dir}: required inputs missing: {missing}")
    runner_temp.mkdir(parents=True, exist_ok=True)
    search_path = [str(p) for p in path]
    exported: dict[str, str] = {}
    steps: dict[str, Any] = {}
    contexts: dict[str, Any] = {
        "inputs": inputs,
        "github": {"action_path": str(action_dir), "workspace": str(workspace)},
        "runner": {"temp": str(runner_temp), "os": "Linux"},
        "steps": steps,
        "env": exported,
    }
    runs: list[StepRun] = []
    summary: list[str] = []
    failed = False
    for index, step in enumerate(meta["runs"]["steps"]):
        name = str(step.get("name") or step.get("id") or f"step {index}")
        if not truthy(evaluate(str(step.get("if", "success()")), contexts, failed=failed)):
            runs.append(StepRun(name, ran=False))
            continue
        if step.get("shell") != "bash" or "run" not in step:
            raise ExpressionError(f"{name}: only `run:` steps with `shell: bash` are run here")
        files = {
            key: runner_temp / f"{key.lower()}-{index}"
            for key in ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH", "GITHUB_STEP_SUMMARY")
        }
        for file in files.values():
            file.write_text("", encoding="utf-8")
        script = runner_temp / f"step-{index}.sh"
        script.write_text(interpolate(str(step["run"]), contexts), encoding="utf-8")
        env = {
            **os.environ,  # a runner's steps see the machine's environment, as here
            "PATH": os.pathsep.join([*search_path, os.environ.get("PATH", "/usr/bin:/bin")]),
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKSPACE": str(workspace),
            "GITHUB_ACTION_PATH": str(action_dir),
            "RUNNER_TEMP": str(runner_temp),
            "RUNNER_OS": "Linux",
            **exported,
            **{k: str(v) for k, v in files.items()},
            **{k: interpolate(str(v), contexts) for k, v in (step.get("env") or {}).items()},
        }
        if cancel is not None and cancel.is_set():
            runs.append(StepRun(name, ran=False))
            continue
        runs.append(_run_step(name, script, workspace, env, timeout=timeout, cancel=cancel))
        proc = runs[-1]
        if "id" in step:
            outcome = "success" if proc.code == 0 else "failure"
            steps[step["id"]] = {"outputs": _read_outputs(files["GITHUB_OUTPUT"]), "outcome": outcome}
        search_path = [*files["GITHUB_PATH"].read_text(encoding="utf-8").split(), *search_path]
        exported.update(_read_outputs(files["GITHUB_ENV"]))
        summary.append(files["GITHUB_STEP_SUMMARY"].read_text(encoding="utf-8"))
        failed = failed or proc.code != 0
    outputs = {name: interpolate(str(spec["value"]), contexts) for name, spec in (meta.get("outputs") or {}).items()}
    return ActionRun(runs, outputs, "".join(summary), inputs)


CANCEL_SEQUENCE = ((signal.SIGINT, 7.5), (signal.SIGTERM, 2.5))
"""What the runner sends a cancelled step's shell, and how long it waits after each (ProcessInvoker.cs)."""


def _run_step(
    name: str, script: Path, workspace: Path, env: dict[str, str], *, timeout: float, cancel: threading.Event | None
) -> StepRun:
    """One ``run:`` script in bash; stopped as the runner stops it when ``cancel`` is set."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=workspace,
            env=env,
            stdout=out,
            stderr=err,
            text=True,
        )
        deadline = time.monotonic() + timeout
        ended_by, cancel_seconds = None, None
        try:
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(proc.args, timeout)
                if cancel is not None and cancel.is_set():
                    ended_by, cancel_seconds = _cancel(proc)
                    break
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(0.05)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out.seek(0)
        err.seek(0)
        return StepRun(
            name,
            ran=True,
            code=proc.returncode,
            stdout=out.read(),
            stderr=err.read(),
            ended_by=ended_by,
            cancel_seconds=cancel_seconds,
        )


def _cancel(proc: subprocess.Popen[str]) -> tuple[str, float]:
    """The runner's cancellation of one process (not its group): each signal, a wait, then a kill."""
    started = time.monotonic()
    for sig, wait in CANCEL_SEQUENCE:
        proc.send_signal(sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        return sig.name, time.monotonic() - started
    proc.kill()
    proc.wait()
    return "kill", time.monotonic() - started


def run_workflow_step(
    step: Mapping[str, Any],
    *,
    workspace: Path,
    runner_temp: Path,
    event_name: str,
    inputs: Mapping[str, str] | None = None,
    variables: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
    path: Sequence[Path] = (),
    timeout: float = 300.0,
    cancel: threading.Event | None = None,
) -> ActionRun:
    """A workflow's ``uses: ./...`` step: its ``with:`` evaluated in the workflow's contexts, then the action run.

    ``overrides`` replace ``with:`` values (a test says which, and why).
    """
    uses = str(step["uses"])
    if not uses.startswith("./"):
        raise ExpressionError(f"{uses}: only local actions are run here")
    contexts = {
        "github": {"event_name": event_name, "workspace": str(workspace)},
        "inputs": dict(inputs or {}),
        "vars": dict(variables or {}),
        "secrets": dict(secrets or {}),
        "steps": {},
        "env": {},
    }
    with_ = {k: interpolate(str(v), contexts) for k, v in (step.get("with") or {}).items()}
    with_.update(overrides or {})
    return run_action(
        workspace / uses, with_, workspace=workspace, runner_temp=runner_temp, path=path, timeout=timeout, cancel=cancel
    )


def workflow_step(workflow: Mapping[str, Any], job: str, name: str) -> dict[str, Any]:
    """A step of a job, by its name."""
    return next(dict(s) for s in workflow["jobs"][job]["steps"] if s.get("name") == name)
