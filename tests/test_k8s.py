"""deploy/k8s: the manifests validate against Kubernetes' schemas offline, and what they pass to loadsim parses.

``kubernetes-validate`` (a test dependency) carries the API schemas of each Kubernetes
version, so no cluster is needed. Then each pod template's ``args`` are expanded the way
the kubelet expands ``$(VAR)`` from the container's ``env`` (with the values a pod would
get: its IP, its index, the start time set at creation) and run through loadsim's own
command line with ``--dry-run``: the profile from the ConfigMap, every option and the
fleet options are checked exactly as a pod's run would check them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from loadsim.cli import main

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
FILES = sorted(K8S.glob("*.yaml"))


def documents() -> list[dict[str, Any]]:
    return [d for f in FILES for d in yaml.safe_load_all(f.read_text()) if d]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in documents() if d["kind"] == kind]


def validator() -> list[str]:
    exe = shutil.which("kubernetes-validate") or str(Path(sys.executable).with_name("kubernetes-validate"))
    if not Path(exe).exists():
        pytest.fail("kubernetes-validate is not installed: pip install -e '.[test]'")
    return [exe, "--strict"]


def test_every_manifest_validates_against_the_kubernetes_schemas(tmp_path):
    assert {f.name for f in FILES} >= {"job.yaml", "service.yaml", "profile-configmap.yaml", "soak-statefulset.yaml"}
    done = subprocess.run([*validator(), *map(str, FILES)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(" passed for resource ") == 5, done.stdout
    # Not a validator that passes anything: a misspelt field of the Job fails it.
    broken = tmp_path / "job.yaml"
    broken.write_text((K8S / "job.yaml").read_text().replace("parallelism: 4", "paralelism: 4"))
    done = subprocess.run([*validator(), str(broken)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "paralelism" in done.stdout + done.stderr


def test_the_indexed_job_is_n_shards_of_one_run():
    (job,) = by_kind("Job")
    spec = job["spec"]
    args = spec["template"]["spec"]["containers"][0]["args"]
    n = int(args[args.index("--shards") + 1])
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] == spec["completions"] == n
    # The headless Service selects exactly the Job's pods, which scrape annotations expose on the metrics port.
    (service,) = [s for s in by_kind("Service") if s["metadata"]["name"] == spec["template"]["spec"]["subdomain"]]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    container = spec["template"]["spec"]["containers"][0]
    port = container["ports"][0]["containerPort"]
    assert spec["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    assert args[args.index("--listen") + 1].endswith(f":{port}")
    (soak,) = by_kind("StatefulSet")
    assert soak["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "state"
    soak_args = soak["spec"]["template"]["spec"]["containers"][0]["args"]
    assert soak_args[soak_args.index("--shards") + 1] == str(soak["spec"]["replicas"])


def expand(arg: str, env: dict[str, str]) -> str:
    """The kubelet's ``$(VAR)`` expansion."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), arg)


@pytest.mark.parametrize("kind", ["Job", "StatefulSet"])
def test_the_args_each_pod_passes_parse_with_loadsims_own_cli(kind, tmp_path, monkeypatch, capsys):
    (workload,) = by_kind(kind)
    pod = workload["spec"]["template"]["spec"]
    container = pod["containers"][0]
    start = datetime.fromtimestamp(time.time() + 120, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # What a pod's environment holds: the Job controller adds JOB_COMPLETION_INDEX, the downward API the rest.
    pod_values = {"status.podIP": "127.0.0.1", "metadata.labels['apps.kubernetes.io/pod-index']": "1"}
    env = {"JOB_COMPLETION_INDEX": "1"} if kind == "Job" else {}
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"].replace("__START_AT__", start)
        else:
            env[var["name"]] = pod_values[var["valueFrom"]["fieldRef"]["fieldPath"]]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # The ConfigMap's files where the pod mounts them, and the state volume, under tmp_path.
    (configmap,) = by_kind("ConfigMap")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    for key, text in configmap["data"].items():
        (tmp_path / key).write_text(text)
    args = [expand(a, env) for a in container["args"]]
    args = [a.replace(mounts["profile"], str(tmp_path)).replace(mounts["state"], str(tmp_path)) for a in args]
    code = main([*args, "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 0, err
    shards = args[args.index("--shards") + 1]
    assert f"fleet: shard 1/{shards} keeps arrival i when i % {shards} == 1; run time 0 at " in out
    assert start.replace("Z", "+00:00") in out
