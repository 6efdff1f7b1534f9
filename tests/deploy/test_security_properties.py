"""What a security review asks of the deploy files, asserted on the files themselves
(README: Running it for real)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.files import (
    DEPLOY,
    compose,
    containers,
    env_file,
    k8s,
    k8s_documents,
    pod_specs,
    seconds,
    unit,
)
from worker.settings import Settings

PODS = pod_specs()
ALLOWED_VOLUMES = {"configMap", "emptyDir", "secret", "persistentVolumeClaim", "projected", "downwardAPI"}


@pytest.mark.parametrize("name", sorted(PODS))
def test_every_pod_meets_the_restricted_pod_security_standard(name: str) -> None:
    pod = PODS[name]
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context.get("runAsUser", 1) != 0
    assert context["seccompProfile"]["type"] == "RuntimeDefault"
    assert not any(pod.get(key) for key in ("hostNetwork", "hostPID", "hostIPC"))
    assert pod["automountServiceAccountToken"] is False
    for volume in pod.get("volumes", []):
        assert set(volume) - {"name"} <= ALLOWED_VOLUMES, volume
    for container in containers(pod):
        own = container["securityContext"]
        assert own["allowPrivilegeEscalation"] is False, container["name"]
        assert own["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert own["readOnlyRootFilesystem"] is True, container["name"]
        assert not own.get("privileged"), container["name"]
        assert all("hostPort" not in port for port in container.get("ports", []))


def test_the_namespace_enforces_the_restricted_level() -> None:
    labels = k8s("Namespace", "billing")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("name", sorted(PODS))
def test_every_container_has_requests_and_limits(name: str) -> None:
    for container in containers(PODS[name]):
        resources = container["resources"]
        for bound in ("requests", "limits"):
            assert set(resources[bound]) >= {"cpu", "memory"}, (container["name"], bound)


@pytest.mark.parametrize("name", sorted(PODS))
def test_read_only_pods_get_a_writable_tmp(name: str) -> None:
    pod = PODS[name]
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    for container in containers(pod):
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts.get("/tmp") in empty_dirs, container["name"]


def test_workers_have_a_disruption_budget() -> None:
    budget = k8s("PodDisruptionBudget", "billing-worker")["spec"]
    worker = k8s("Deployment", "billing-worker")
    assert budget["selector"]["matchLabels"] == worker["spec"]["selector"]["matchLabels"]
    assert 0 < budget["minAvailable"] < worker["spec"]["replicas"]


def test_workers_start_only_on_the_migrated_schema() -> None:
    (gate,) = PODS["billing-worker"]["initContainers"]
    assert "billing health --schema" in " ".join(gate["command"])


def probe_command(probe: dict[str, Any]) -> list[str]:
    command: list[str] = probe["exec"]["command"]
    return command


@pytest.mark.parametrize("name", ["billing-worker", "billing-beat"])
def test_liveness_reads_the_heartbeat_file_not_the_broker(name: str) -> None:
    (container,) = PODS[name]["containers"]
    command = probe_command(container["livenessProbe"])
    assert command[:3] == ["billing", "health", "--heartbeat"]
    assert "inspect" not in command
    config = k8s("ConfigMap", "billing-config")["data"]
    assert command[3] == config["BILLING_HEARTBEAT_FILE"]


def env_sources(container: dict[str, Any]) -> tuple[set[str], set[str]]:
    """The Secrets and ConfigMaps a container reads, and the names it sets itself."""
    refs = {next(iter(s.values()))["name"] for s in container.get("envFrom", [])}
    names = {e["name"] for e in container.get("env", [])}
    return refs, names


def secret_keys(name: str) -> set[str]:
    return set(k8s("Secret", name)["stringData"]) if name.startswith("billing-") else set()


def keys_of(container: dict[str, Any]) -> set[str]:
    refs, names = env_sources(container)
    keys = set(names)
    for ref in refs:
        found = [d for d in k8s_documents() if d["metadata"]["name"] == ref]
        for doc in found:
            keys |= set(doc.get("stringData") or doc.get("data") or {})
    return keys


def test_flower_has_basic_auth_and_no_database_url() -> None:
    (flower,) = PODS["billing-flower"]["containers"]
    keys = keys_of(flower)
    assert "FLOWER_BASIC_AUTH" in keys
    assert "BILLING_DATABASE_URL" not in keys
    service = compose()["services"]["flower"]
    assert "FLOWER_BASIC_AUTH" in service["environment"]
    assert "BILLING_DATABASE_URL" not in service["environment"]
    assert unit("billing-flower.service")["EnvironmentFile"] == [
        "/etc/billing/broker.env",
        "/etc/billing/flower.env",
    ]
    assert "FLOWER_BASIC_AUTH" in env_file("flower.env.example")
    assert "BILLING_DATABASE_URL" not in env_file("broker.env.example")


def test_beat_publishes_without_the_database_url() -> None:
    (beat,) = PODS["billing-beat"]["containers"]
    assert "BILLING_DATABASE_URL" not in keys_of(beat)
    assert "BILLING_DATABASE_URL" not in compose()["services"]["beat"]["environment"]
    assert unit("billing-beat.service")["EnvironmentFile"] == ["/etc/billing/broker.env"]


def database_user(url: str) -> str:
    match = re.match(r"postgresql\+psycopg://([^:@]+)", url)
    assert match, url
    return match.group(1)


def test_only_the_migration_runs_as_the_schema_owner() -> None:
    """Workers connect as billing_app (rows only), the migration as billing_migrator; nothing as
    the administrator the postgres image creates."""
    migrator = k8s("Secret", "billing-database-migrator")["stringData"]["BILLING_DATABASE_URL"]
    app = k8s("Secret", "billing-database-app")["stringData"]["BILLING_DATABASE_URL"]
    assert (database_user(migrator), database_user(app)) == ("billing_migrator", "billing_app")
    assert keys_of(PODS["billing-migrate"]["containers"][0]) >= {"BILLING_DATABASE_URL"}
    assert env_sources(PODS["billing-migrate"]["containers"][0])[0] == {"billing-database-migrator"}
    for name in ("billing-worker",):
        for container in containers(PODS[name]):
            assert "billing-database-migrator" not in env_sources(container)[0]
    services = compose()["services"]
    assert database_user(services["migrate"]["environment"]["BILLING_DATABASE_URL"]) == "billing_migrator"
    assert database_user(services["worker"]["environment"]["BILLING_DATABASE_URL"]) == "billing_app"
    assert services["postgres"]["environment"]["POSTGRES_USER"] == "postgres"
    assert database_user(env_file("migrator.env.example")["BILLING_DATABASE_URL"]) == "billing_migrator"
    assert database_user(env_file("database.env.example")["BILLING_DATABASE_URL"]) == "billing_app"


def test_redis_needs_a_password_everywhere() -> None:
    urls = [
        k8s("Secret", "billing-broker")["stringData"]["BILLING_BROKER_URL"],
        compose()["services"]["worker"]["environment"]["BILLING_BROKER_URL"],
        env_file("broker.env.example")["BILLING_BROKER_URL"],
    ]
    for url in urls:
        assert re.match(r"rediss?://billing:[^@]+@", url), url
    for command in (
        " ".join(PODS["redis"]["containers"][0]["args"]),
        " ".join(compose()["services"]["redis"]["command"]),
    ):
        assert "user default off" in command
        assert "--aclfile" in command


def test_compose_passwords_come_from_the_environment_only() -> None:
    required = r"\$\{[A-Z_]+:\?[^}]*\}"
    checked = 0
    for service in compose()["services"].values():
        for name, value in service.get("environment", {}).items():
            if "://" in value:
                password = value.split("://", 1)[1].rsplit("@", 1)[0].split(":", 1)[1]
                assert re.fullmatch(required, password), value
                checked += 1
            elif "PASSWORD" in name or "AUTH" in name:
                assert re.fullmatch(required, value), name
                checked += 1
    assert checked >= 8


@pytest.mark.parametrize("name", sorted(set(compose()["services"])))
def test_every_compose_service_is_bounded_and_unprivileged(name: str) -> None:
    service = compose()["services"][name]
    assert service["mem_limit"] and service["cpus"]
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    if name != "postgres":  # its entrypoint steps down from root to the postgres user
        assert "cap_add" not in service
        assert service["read_only"] is True


def test_the_postgres_init_copies_in_kubernetes_match_deploy_postgres() -> None:
    data = k8s("ConfigMap", "postgres-init")["data"]
    assert data["roles.sql"] == (DEPLOY / "postgres" / "roles.sql").read_text()
    assert data["init-roles.sh"] == (DEPLOY / "postgres" / "init-roles.sh").read_text()


def test_the_stop_grace_covers_the_hard_time_limit_everywhere() -> None:
    """statement timeout < soft time limit < hard time limit < stop grace, in every deploy file
    and in the defaults: a warm shutdown never cuts a task short."""
    config = k8s("ConfigMap", "billing-config")["data"]
    worker_env = compose()["services"]["worker"]["environment"]
    systemd_env = env_file("database.env.example")
    limits_and_grace = [
        (config, PODS["billing-worker"]["terminationGracePeriodSeconds"]),
        (worker_env, seconds(compose()["services"]["worker"]["stop_grace_period"])),
        (systemd_env, int(unit("billing-worker@.service")["TimeoutStopSec"][0])),
    ]
    for env, grace in limits_and_grace:
        settings = Settings(
            statement_timeout_ms=int(env["BILLING_STATEMENT_TIMEOUT_MS"]),
            task_soft_time_limit_s=int(env["BILLING_TASK_SOFT_TIME_LIMIT_S"]),
            task_time_limit_s=int(env["BILLING_TASK_TIME_LIMIT_S"]),
        )
        assert 0 < settings.statement_timeout_ms < settings.task_soft_time_limit_s * 1000
        assert settings.task_time_limit_s < grace
    assert Settings().task_time_limit_s < min(grace for _, grace in limits_and_grace)


def test_migrations_run_without_a_statement_timeout() -> None:
    """A long ALTER must not be cancelled halfway."""
    (job,) = PODS["billing-migrate"]["containers"]
    assert {"name": "BILLING_STATEMENT_TIMEOUT_MS", "value": "0"} in job["env"]
    assert compose()["services"]["migrate"]["environment"]["BILLING_STATEMENT_TIMEOUT_MS"] == "0"
    assert env_file("migrator.env.example")["BILLING_STATEMENT_TIMEOUT_MS"] == "0"


def locked_versions() -> dict[str, str]:
    text = (DEPLOY / "requirements.lock").read_text()
    return {canonicalize_name(n): v for n, v in re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", text, re.M)}


def test_the_lock_pins_every_dependency_of_the_image() -> None:
    """Every requirement of pyproject.toml the image installs (the core, worker and monitor
    extras, the build backend) is in deploy/requirements.lock at a version it allows, with hashes."""
    project = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())
    wanted = [
        *project["project"]["dependencies"],
        *project["project"]["optional-dependencies"]["worker"],
        *project["project"]["optional-dependencies"]["monitor"],
        *project["build-system"]["requires"],
    ]
    locked = locked_versions()
    for line in wanted:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name == canonicalize_name(project["project"]["name"]):
            continue  # the project itself: installed with --no-deps
        assert name in locked, f"{name} is not in deploy/requirements.lock: run deploy/lock.sh"
        assert requirement.specifier.contains(locked[name], prereleases=True), (name, locked[name])
    text = (DEPLOY / "requirements.lock").read_text()
    hashed = re.findall(r"^\S+==\S+ \\\n\s+--hash=sha256:[0-9a-f]{64}", text, re.M)
    assert len(hashed) == len(locked)
    assert not re.search(r"file:|--find-links|--index-url|/(opt|home|work|tmp)/", text)


def test_the_image_installs_the_lock_only() -> None:
    lines = [
        line.strip() for line in (DEPLOY / "Containerfile").read_text().splitlines() if "pip install" in line
    ]
    assert lines == [
        "RUN pip install --no-cache-dir --require-hashes -r deploy/requirements.lock",
        "RUN pip install --no-cache-dir --no-deps --no-build-isolation .",
    ]


def test_no_deploy_file_names_a_machine_path() -> None:
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            assert not re.search(r"/work/|/home/(?!billing)", path.read_text()), Path(path).name
