"""Flower as the deploy files run it (``billing flower``): its Broker page lists the queues (the
broker URL is no longer rewritten to the transport's class path), every page and ``/metrics``
ask for authentication, it refuses to start without any, and it needs no database URL."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.operations import ALL_QUEUES
from tests.faults.harness import free_port
from worker.devtools.soak import wait_for

pytestmark = [pytest.mark.redis, pytest.mark.slow]

BILLING = [sys.executable, "-c", "from worker.cli import run; run()"]


def _env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLING_", "FLOWER_"))}
    return {**env, "BILLING_BROKER_URL": redis_url, "BILLING_ENV_FILE": "", **extra}


def get(url: str, auth: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


@pytest.fixture
def flower(redis_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "flower.log").open("w")
    process = subprocess.Popen(
        [*BILLING, "flower", f"--port={port}", "--address=127.0.0.1"],
        env=_env(redis_url, FLOWER_BASIC_AUTH="ops:correct-horse"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return get(f"{base}/healthcheck")[0] == 200
        except OSError:
            return False

    try:
        wait_for(up, 30, "Flower to listen")
        yield base
    finally:
        process.terminate()
        process.wait(20)
        log.close()


def test_flower_lists_the_queues_and_locks_every_page_and_metrics(flower: str) -> None:
    for page in ("/", "/broker", "/tasks", "/metrics", "/api/workers"):
        assert get(flower + page)[0] == 401, page
        assert get(flower + page, "ops:wrong")[0] == 401, page
    status, broker = get(flower + "/broker", "ops:correct-horse")
    assert status == 200
    for queue in ALL_QUEUES:
        assert f"<td>{queue}</td>" in broker, queue
    status, metrics = get(flower + "/metrics", "ops:correct-horse")
    assert status == 200 and "# TYPE" in metrics


def test_flower_refuses_to_start_without_authentication(redis_url: str) -> None:
    done = subprocess.run(
        [*BILLING, "flower", "--port=1"], env=_env(redis_url), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "no authentication" in done.stderr and "FLOWER_BASIC_AUTH" in done.stderr
