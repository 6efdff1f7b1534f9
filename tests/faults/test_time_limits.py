"""A task killed at its hard time limit is recorded with its payload, and the worker goes on.

The soft limit interrupts a task, which records its failure itself; a task that sleeps
through it (failpoint ``hang``: code stuck in C) is killed at the hard limit, and the
worker's main process records it before acknowledging the message (``BillingRequest``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib
from celery import Celery
from sqlalchemy import select

from tasks.client import BillingClient
from tests.faults.harness import Cluster, wait_for
from tests.support import count
from worker.db import read_session
from worker.tables import Customer, TaskFailure

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def cluster(postgres: str, redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    redis_lib.Redis.from_url(redis_url).flushdb()  # the tests' own database (BILLING_TEST_REDIS_URL)
    workers = Cluster(
        postgres,
        redis_url,
        tmp_path,
        task_soft_time_limit_s=1,
        task_time_limit_s=2,
        statement_timeout_ms=500,
    )
    try:
        yield workers
    finally:
        workers.shutdown()
    print(workers.logs())


@pytest.fixture
def client(redis_url: str) -> BillingClient:
    app = Celery("time-limit-client", set_as_current=False)
    app.conf.update(broker_url=redis_url, task_serializer="json", accept_content=["json"])
    return BillingClient(app=app)


def failures_of(task_name: str) -> list[TaskFailure]:
    with read_session() as session:
        return list(session.execute(select(TaskFailure).where(TaskFailure.task_name == task_name)).scalars())


def test_a_task_killed_at_the_hard_limit_is_recorded_and_the_worker_goes_on(
    cluster: Cluster, client: BillingClient
) -> None:
    worker = cluster.spawn(
        concurrency=1, BILLING_FAILPOINTS="billing.customers.create@task_start=hang30:once"
    )
    stuck = client.create_customer(email="stuck@example.com", name="Stuck", currency="usd")
    wait_for(lambda: failures_of("billing.customers.create"), timeout=60, what="the hard time limit's record")

    (failure,) = failures_of("billing.customers.create")
    assert (failure.error_type, failure.retryable) == ("TimeLimitExceeded", True)
    assert failure.payload is not None and failure.payload["id"] == stuck
    assert "hard time limit (2" in failure.error_message

    canary = client.create_customer(email="canary@example.com", name="Canary", currency="usd")
    wait_for(lambda: count(Customer) == 1, timeout=60, what="the canary after the killed task")
    with read_session() as session:
        assert session.get(Customer, canary) is not None and session.get(Customer, stuck) is None
    assert worker.alive
