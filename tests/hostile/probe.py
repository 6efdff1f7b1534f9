"""One hostile entry pushed raw onto a queue of a running worker, then a canary behind it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from tasks.broker import REFUSED_KEY
from tests.hostile.shapes import SHAPES, customer_kwargs
from tests.support import count, row_counts
from worker.db import read_session
from worker.devtools.soak import wait_for
from worker.tables import Customer, TaskFailure

CANARY_WRITES = {"customers", "idempotency_keys", "events"}
"""What the canary (a customer create) writes; the hostile entry writes one task_failures row
(and its request.failed event)."""


def failure_ids() -> set[str]:
    with read_session() as session:
        return set(session.scalars(select(TaskFailure.task_id)))


def probe(redis: Any, producer: Any, queue: str, shape: str, alive: Callable[[], bool]) -> TaskFailure:
    """Push ``shape`` raw onto ``queue``, then a canary; the worker must record the entry once,
    process the canary within seconds, and change nothing else. Returns the record."""
    entry, task_id = SHAPES[shape](queue)
    before, known = row_counts(), failure_ids()
    redis.lpush(queue, entry)
    canary = customer_kwargs()
    producer.send_task("billing.customers.create", kwargs=canary, queue=queue)

    wait_for(lambda: count(Customer, Customer.id == canary["id"]) == 1, 20, f"the canary behind {shape}")
    wait_for(lambda: len(failure_ids() - known) >= 1, 10, f"the record of {shape}")
    wait_for(lambda: _broker_idle(redis, queue), 10, f"{shape} to leave Redis")
    time.sleep(0.3)  # a second record, or a redelivery, would show by now
    assert alive(), f"the worker died on {shape}"
    (new,) = failure_ids() - known
    if task_id is not None:
        assert new == task_id
    after = row_counts()
    changed = {table for table in after if after[table] != before[table]}
    assert changed <= CANARY_WRITES | {"task_failures"}, f"{shape} changed {changed - CANARY_WRITES}"
    assert after["task_failures"] == before["task_failures"] + 1
    with read_session() as session:
        return session.execute(select(TaskFailure).where(TaskFailure.task_id == new)).scalar_one()


def _broker_idle(redis: Any, queue: str) -> bool:
    return (redis.llen(queue), redis.llen(REFUSED_KEY), redis.hlen("unacked")) == (0, 0, 0)
