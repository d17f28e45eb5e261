"""The container image and docker-compose.yml.

``test_container_script`` builds the image for real and runs it (``scripts/container-test.sh``:
a private dockerd, a debootstrap base, no registry): it needs root and takes about 40 s with
a warm cache, 90 s on a fresh machine. Off CI it is skipped where it cannot work (not root,
no apt); on CI (``CI`` set) it always runs and fails with the script's output.

The other tests are fast and need no Docker: docker-compose.yml's bind mounts exist, ports
are published on loopback only, the Prometheus and Alertmanager configs pass their own
checkers laid out as the containers see them, the dashboards one-shot produces what Grafana's
file provisioning reads, and the commands of the image and of compose parse with loadsim's
own argument parser. They read docker-compose.yml with a small reader for the plain block
style it is written in; the script validates the file with Compose itself.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import ModuleType

import pytest

from loadsim.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SCRIPT = ROOT / "scripts" / "container-test.sh"
SCRIPT_TIMEOUT = 900.0
"""15 minutes: a cold run (apt, debootstrap, both builds) took 90 s here; a slow mirror may take several times that."""


# --------------------------------------------------------------------------- compose reader


def service_lines(name: str) -> list[str]:
    """The lines of one service of docker-compose.yml (its block under ``services:``)."""
    lines = COMPOSE.read_text(encoding="utf-8").splitlines()
    start = lines.index(f"  {name}:")
    end = next(
        (i for i in range(start + 1, len(lines)) if re.match(r"^ {0,2}\S", lines[i])),
        len(lines),
    )
    return lines[start + 1 : end]


def list_items(lines: list[str], key: str) -> list[str]:
    """The ``- item`` entries directly under ``key:`` in a block, comments skipped."""
    items: list[str] = []
    inside = None
    for line in lines:
        if line.strip() == f"{key}:":
            inside = len(line) - len(line.lstrip())
            continue
        if inside is None or not line.strip() or line.lstrip().startswith("#"):
            continue
        if len(line) - len(line.lstrip()) <= inside:
            inside = None
        elif line.lstrip().startswith("- "):
            items.append(line.strip()[2:].strip().strip('"'))
    return items


def services() -> list[str]:
    text = COMPOSE.read_text(encoding="utf-8")
    block = text[text.index("\nservices:\n") : text.index("\nvolumes:\n")]
    return re.findall(r"^  ([a-z][\w-]*):$", block, flags=re.MULTILINE)


def bind_mounts(service: str) -> list[tuple[Path, str]]:
    """(host path, container path) of every ``./path:/target[:ro]`` mount of a service."""
    mounts = []
    for item in list_items(service_lines(service), "volumes"):
        if item.startswith("./"):
            source, target = item.split(":")[:2]
            mounts.append((ROOT / source, target))
    return mounts


def mirror(service: str, prefix: str, into: Path) -> None:
    """Lay out the service's bind mounts under ``prefix`` as the container sees them."""
    for source, target in bind_mounts(service):
        if not target.startswith(prefix + "/"):
            continue
        dest = into / target.removeprefix(prefix + "/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, dest)
        else:
            shutil.copy(source, dest)


def dockerfile_cmd() -> list[str]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", "")
    (cmd,) = re.findall(r"^CMD (\[.*\])$", text, flags=re.MULTILINE)
    return list(json.loads(cmd))


def load_unwrap() -> ModuleType:
    path = ROOT / "deploy" / "compose" / "grafana" / "unwrap-dashboards.py"
    spec = importlib.util.spec_from_file_location("unwrap_dashboards", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_options() -> str:
    """``loadsim run --help``, from the parser in this tree."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        build_parser().parse_args(["run", "--help"])
    return out.getvalue()


# --------------------------------------------------------------------------- fast tests


class TestCompose:
    def test_the_stack_has_its_five_services_and_the_dashboards_one_shot(self):
        assert sorted(services()) == sorted(
            ["loadsim", "prometheus", "pushgateway", "alertmanager", "grafana-dashboards", "grafana"]
        )

    @pytest.mark.parametrize("service", ["prometheus", "alertmanager", "grafana", "grafana-dashboards"])
    def test_every_bind_mount_exists(self, service):
        mounts = bind_mounts(service)
        assert mounts
        # Compose would create a missing source as an empty directory and start anyway.
        assert [str(s.relative_to(ROOT)) for s, _ in mounts if not s.exists()] == []

    def test_the_relay_files_are_mounted_from_deploy_relay(self):
        sources = {str(s.relative_to(ROOT)) for svc in services() for s, _ in bind_mounts(svc)}
        assert {
            "deploy/relay/prometheus",
            "deploy/relay/alertmanager/alertmanager.yml",
            "deploy/relay/grafana",
        } <= sources

    def test_ports_are_published_on_loopback_only(self):
        ports = {svc: list_items(service_lines(svc), "ports") for svc in services()}
        assert {svc: p for svc, p in ports.items() if any(not x.startswith("127.0.0.1:") for x in p)} == {}
        assert all(ports[svc] for svc in ("loadsim", "prometheus", "pushgateway", "alertmanager", "grafana"))

    def test_prometheus_config_passes_promtool_as_mounted(self, tmp_path):
        promtool = shutil.which("promtool")
        if promtool is None:
            pytest.skip("promtool not installed (scripts/setup-stack.sh installs it)")
        mirror("prometheus", "/etc/prometheus", tmp_path)
        out = subprocess.run(
            [promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True, check=False
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert "SUCCESS: 2 rule files found" in out.stdout + out.stderr

    def test_alertmanager_config_passes_amtool_as_mounted(self, tmp_path):
        amtool = shutil.which("amtool")
        if amtool is None:
            pytest.skip("amtool not installed (scripts/setup-stack.sh installs it)")
        mirror("alertmanager", "/etc/alertmanager", tmp_path)
        out = subprocess.run(
            [amtool, "check-config", str(tmp_path / "alertmanager.yml")], capture_output=True, text=True, check=False
        )
        assert out.returncode == 0, out.stdout + out.stderr

    def test_grafana_reads_dashboards_where_the_one_shot_writes_them(self):
        provider = (ROOT / "deploy/compose/grafana/provisioning/dashboards/relay.yml").read_text(encoding="utf-8")
        (path,) = re.findall(r"^\s+path: (\S+)$", provider, flags=re.MULTILINE)
        assert f"grafana-dashboards:{path}:ro" in list_items(service_lines("grafana"), "volumes")
        assert "grafana-dashboards:/state" in list_items(service_lines("grafana-dashboards"), "volumes")

    def test_loadsim_listens_beyond_loopback_only_inside_the_network(self):
        command = list_items(service_lines("loadsim"), "command")
        assert command[command.index("--listen") + 1] == "0.0.0.0:9477"
        assert list_items(service_lines("loadsim"), "ports") == ["127.0.0.1:${LOADSIM_PORT:-9477}:9477"]

    def test_loadsim_command_parses(self):
        command = list_items(service_lines("loadsim"), "command")
        if "--state" not in run_options():
            pytest.skip("`loadsim run` has no --state option yet; the compose command uses it")
        args = build_parser().parse_args(command)
        assert args.state == Path("/state/run.state")
        assert args.fresh_if_missing


class TestDashboards:
    def test_unwrapped_dashboards_carry_title_and_the_uids_the_alerts_link_to(self, tmp_path):
        unwrap = load_unwrap()
        assert unwrap.main(["unwrap", str(ROOT / "deploy/relay/grafana"), str(tmp_path)]) == 0
        written = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in tmp_path.glob("*.json")}
        assert sorted(written) == sorted(unwrap.UIDS)
        assert all("dashboard" not in d and d["title"] and d["id"] is None for d in written.values())
        alerts = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "deploy/relay/prometheus").glob("*.yml"))
        linked = set(re.findall(r"https://grafana/d/([\w-]+)/", alerts))
        assert {d["uid"] for d in written.values()} == linked - {"ai-orchestrator"}

    def test_a_file_without_a_dashboard_is_refused_with_its_name(self, tmp_path, capsys):
        (tmp_path / "src").mkdir()
        (tmp_path / "src" / "x.json").write_text("{}", encoding="utf-8")
        assert load_unwrap().main(["unwrap", str(tmp_path / "src"), str(tmp_path / "out")]) == 2
        assert "x.json: no dashboard title" in capsys.readouterr().err


class TestDockerfile:
    def test_default_command_serves_on_loopback_and_parses(self):
        cmd = dockerfile_cmd()
        assert cmd[:2] == ["run", "/app/profiles/realistic.toml"]
        assert cmd[cmd.index("--listen") + 1] == "127.0.0.1:9477"
        assert (ROOT / "profiles" / "realistic.toml").is_file()
        if "--state" not in run_options():
            pytest.skip("`loadsim run` has no --state option yet; the image's CMD uses it")
        args = build_parser().parse_args(cmd)
        assert args.state == Path("/state/run.state")
        assert args.summary_json == Path("/state/summary.json")

    def test_entrypoint_is_exec_form_and_the_user_is_not_root(self):
        text = DOCKERFILE.read_text(encoding="utf-8")
        assert re.findall(r"^ENTRYPOINT (.*)$", text, flags=re.MULTILINE) == ['["loadsim"]']
        (user,) = re.findall(r"^USER (\S+)$", text, flags=re.MULTILINE)
        assert user.split(":")[0] not in ("0", "root")
        (health,) = re.findall(r"^HEALTHCHECK .* CMD (\[.*\])$", text.replace("\\\n", ""), flags=re.MULTILINE)
        assert json.loads(health)[:2] == ["python3", "-c"]
        assert "curl" not in "\n".join(line for line in text.splitlines() if not line.startswith("#"))
        assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, flags=re.MULTILINE)


# --------------------------------------------------------------------------- the real thing


def _why_not_here() -> str | None:
    """Why the container test cannot run on this machine, or None."""
    if os.geteuid() != 0:
        return "needs root (apt, dockerd, debootstrap)"
    if shutil.which("apt-get") is None and shutil.which("dockerd") is None:
        return "no apt-get to install docker.io and debootstrap, and no dockerd"
    return None


@pytest.mark.slow
def test_container_script():
    """Build the image without a registry, lint it, run it: healthy, /metrics, stop, resume."""
    reason = _why_not_here()
    if reason is not None and not os.environ.get("CI"):
        pytest.skip(reason)
    # Its own session: a timeout stops the script (its trap stops dockerd and restores
    # ip_forward) and then everything it started, without touching anything else.
    started = time.monotonic()
    proc = subprocess.Popen(
        ["bash", str(SCRIPT)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=SCRIPT_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
        pytest.fail(f"container-test.sh did not finish in {SCRIPT_TIMEOUT:.0f}s:\n{output[-6000:]}")
    print(output[-3000:])  # the wall time of each step, shown with -rP or -s
    assert proc.returncode == 0, (
        f"container-test.sh failed (exit {proc.returncode}) after {time.monotonic() - started:.0f}s:\n{output[-8000:]}"
    )
