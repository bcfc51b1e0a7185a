"""deploy/ holds up without kubectl: the manifests load, name the kinds and API versions they
mean, follow the Pod Security "restricted" profile, and the CronJob's exact command fails the
Job when its plan fails (a revoked key), which /bin/sh without pipefail did not."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT, SandboxProcess, cli_env
from tests.redis_server import RedisServer

DEPLOY = ROOT / "deploy"


def documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and "apiVersion" in d]
    return docs


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for d in docs:
        if d["kind"] == "CronJob":
            yield "CronJob", d["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif d["kind"] == "Deployment":
            yield "Deployment", d["spec"]["template"]["spec"]


def test_kinds_api_versions_and_the_restricted_profile() -> None:
    docs = documents()
    kinds = {(d["kind"], d["apiVersion"]) for d in docs}
    assert {
        ("CronJob", "batch/v1"), ("PersistentVolumeClaim", "v1"), ("Deployment", "apps/v1"),
        ("PodDisruptionBudget", "policy/v1"),
    } <= kinds  # fmt: skip
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    specs = dict(pod_specs(docs))
    assert set(specs) == {"CronJob", "Deployment"}
    for kind, spec in specs.items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, kind
        assert pod["runAsUser"] == 10001, kind
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, kind
        assert spec["terminationGracePeriodSeconds"] > 30, kind  # > --grace 30
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, kind
            assert sc["readOnlyRootFilesystem"] is True, kind
            assert sc["capabilities"] == {"drop": ["ALL"]}, kind
            assert container["resources"]["limits"]["memory"], kind
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, kind  # the only writable paths are volumes
            env = {e["name"]: e for e in container["env"]}
            assert "secretKeyRef" in env["XQUIK_API_KEY"]["valueFrom"], kind  # never a literal
            assert env["XQUIK_RATE"]["value"] == "auto", kind
        for volume in spec["volumes"]:
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
    job = next(d for d in docs if d["kind"] == "CronJob")["spec"]["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] > 0
    assert specs["CronJob"]["securityContext"]["fsGroup"] == 10001
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pdb = next(d for d in docs if d["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]


def cronjob_command(data: Path) -> tuple[list[str], str]:
    spec = dict(pod_specs(documents()))["CronJob"]
    [container] = spec["containers"]
    script = container["args"][0]
    assert "redis://" not in script  # the URL and its password come from the Secret (env)
    env = {e["name"]: e for e in container["env"]}
    assert env["XQUIK_BUDGET"]["valueFrom"]["secretKeyRef"]["key"] == "redis-url"
    return container["command"], script.replace("/data", str(data))


def test_a_failed_plan_fails_the_job(
    sandbox_process: Callable[..., SandboxProcess], redis_server: RedisServer, tmp_path: Path
) -> None:
    """The CronJob's exact command with a revoked key: plan exits 3, so the Job fails; the
    same pipeline under plain /bin/sh (what the manifest used before) exits 0."""
    sb = sandbox_process()
    command, script = cronjob_command(tmp_path)
    env = cli_env(
        XQUIK_API_KEY="xq_" + "0" * 32, XQUIK_BASE_URL=sb.base_url, XQUIK_BUDGET=redis_server.url
    )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    failed = subprocess.run(
        [*command, script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert failed.returncode != 0, failed.stderr
    assert "unauthenticated" in failed.stderr
    assert '"exit_code": 3' in failed.stderr  # plan's own code, in its JSON error
    silent = subprocess.run(
        ["/bin/sh", "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert silent.returncode == 0  # why the manifest runs bash -o pipefail
    ok = subprocess.run(
        [*command, script],
        env={**env, "XQUIK_API_KEY": sb.api_key, "XQUIK_STATE_DIR": str(tmp_path / "s")},
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "cleanup.results.jsonl").exists()


def test_compose_consumers_restart_and_check_their_health() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    consumer = compose["services"]["consumer"]
    assert consumer["restart"] == "unless-stopped"
    assert "/healthz" in " ".join(consumer["healthcheck"]["test"])
    assert "--metrics-port" in consumer["command"]


def test_keda_scales_the_consumers_on_their_stream() -> None:
    docs = documents()
    scaled = next(d for d in docs if d["kind"] == "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert scaled["spec"]["minReplicaCount"] == 0
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis-streams"
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert not any("redis://" in a for a in container["args"])  # no password in the pod spec
    env = {e["name"]: e for e in container["env"]}
    assert env["XQUIK_REDIS_URL"]["valueFrom"]["secretKeyRef"]["key"] == "redis-url"
    assert trigger["metadata"]["address"] == "redis:6379"
    assert trigger["metadata"]["stream"] == "xquik:disconnect"  # the defaults the args keep
    assert trigger["metadata"]["consumerGroup"] == "xquik-disconnect"


def test_the_keys_secret_mounts_as_a_keys_directory(tmp_path: Path) -> None:
    """deploy/keys-secret.yaml: a Secret whose items, mounted as the comment says, make a
    directory `--keys` reads: tenants brand-a and brand-b of account acme, and client-x."""
    from worker.api.keys import read_keys

    [secret] = [d for d in yaml.safe_load_all((DEPLOY / "keys-secret.yaml").read_text()) if d]
    assert (secret["kind"], secret["apiVersion"]) == ("Secret", "v1")
    text = (DEPLOY / "keys-secret.yaml").read_text()
    for key, value in secret["stringData"].items():
        path = next(
            line.split("path:")[1].strip(" }")
            for line in text.splitlines()
            if f"key: {key}," in line
        )
        (tmp_path / path).write_text(value + "\n")
    keys = read_keys(tmp_path)
    assert {name: k.account for name, k in keys.items()} == {
        "brand-a": "acme",
        "brand-b": "acme",
        "client-x": None,
    }
