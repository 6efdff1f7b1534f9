"""Hostile entries on every queue of a real ``celery -A worker.app worker`` (Redis, PostgreSQL)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tasks.client import BillingClient
from tasks.operations import ALL_QUEUES
from tests.hostile.probe import probe
from tests.hostile.shapes import SHAPES
from worker.devtools.soak import WorkerProcess

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture(scope="module")
def worker_process(
    postgres_database: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    redis.Redis.from_url(redis_url).flushdb()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BILLING_")},
        "BILLING_DATABASE_URL": postgres_database,
        "BILLING_BROKER_URL": redis_url,
        "BILLING_BROKER_POLL_INTERVAL_S": "0.1",
    }
    process = WorkerProcess("hostile", env, Path(tmp_path_factory.mktemp("hostile")), concurrency=2).start()
    try:
        yield process
    finally:
        process.stop()
        log = process.log_path.read_text(errors="replace")
        assert "Unrecoverable error" not in log, log[-5000:]


@pytest.mark.parametrize("queue", ALL_QUEUES)
@pytest.mark.parametrize("shape", SHAPES)
def test_a_hostile_entry_is_recorded_and_the_queue_keeps_flowing(
    worker_process: WorkerProcess, postgres: str, redis_url: str, queue: str, shape: str
) -> None:
    probe(
        redis.Redis.from_url(redis_url), BillingClient(broker_url=redis_url).app, queue, shape,
        lambda: worker_process.alive,
    )  # fmt: skip
