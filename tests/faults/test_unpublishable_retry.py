"""A retry the broker will not take is never a loss (README: Reliability).

A customer's row is held locked, so a balance adjustment and a list of items time out on
the lock and must be retried; meanwhile a private Redis refuses the retry's message, by an
ACL that denies ``LPUSH`` or by ``maxmemory``. Celery alone rejects the original without
requeue there (both requests were lost, with nothing recorded). The worker must stay up,
keep the messages, and apply both once the row is free, with the books clean.
Private redis-server instances only: the shared one is never reconfigured.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis as redis_lib
from sqlalchemy import create_engine, text

from tasks.client import BillingClient
from tests.faults.harness import Cluster, RedisServer, wait_for
from tests.support import count, get
from worker.audit import audit_database
from worker.tables import Customer, InvoiceItem, TaskFailure

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

HOLD_S = 12.0
"""How long the row stays locked and the broker refuses writes (lock timeout: 0.3 s)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path, free_port()).start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def cluster(postgres: str, broker: RedisServer, tmp_path: Path) -> Iterator[Cluster]:
    # A budget the hold cannot exhaust, and waits of at most visibility / 2 = 20 s: the test is
    # about the broker refusing the retry, not about running out of retries.
    workers = Cluster(
        postgres, broker.url, tmp_path, lock_timeout_ms=300, broker_poll_interval_s=0.2, max_retries=40,
        visibility_timeout_s=40,
    )  # fmt: skip
    try:
        yield workers
    finally:
        workers.shutdown()
        print(workers.logs())


def deny_lpush(server: redis_lib.Redis) -> Callable[[], None]:
    server.execute_command("ACL", "SETUSER", "default", "-lpush")
    return lambda: server.execute_command("ACL", "SETUSER", "default", "+lpush")


def fill_memory(server: redis_lib.Redis) -> Callable[[], None]:
    server.config_set("maxmemory", "1")  # every write that may grow memory is refused now
    return lambda: server.config_set("maxmemory", "0")


@pytest.mark.parametrize(
    "refuse",
    [
        deny_lpush,
        # Was intermittent: a message taken just before memory ran out had its unacked record
        # written again by kombu's QoS.append, in a MULTI that maxmemory refused, which stopped
        # the main process (the pool finished its task, so the process looked alive).
        fill_memory,
    ],
    ids=["acl-denies-lpush", "maxmemory"],
)
def test_a_retry_the_broker_refuses_is_kept_and_applied_later(
    cluster: Cluster,
    broker: RedisServer,
    postgres: str,
    refuse: Callable[[redis_lib.Redis], Callable[[], None]],
) -> None:
    worker = cluster.spawn(concurrency=2)
    client = BillingClient(broker_url=broker.url)
    cus = client.create_customer(email="locked@example.com", currency="usd")
    wait_for(lambda: count(Customer) == 1, 20, "the customer")

    locker = create_engine(postgres).connect()
    transaction = locker.begin()
    locker.execute(text("SELECT id FROM customers WHERE id = :id FOR UPDATE"), {"id": cus})
    client.create_balance_transaction(customer=cus, amount=-1000)
    client.create_invoice_items([{"customer": cus, "amount": 100 + n} for n in range(3)])
    allow = refuse(redis_lib.Redis(port=broker.port))
    try:
        time.sleep(HOLD_S)  # the retries are refused again and again meanwhile
        assert worker.alive, cluster.logs()
        assert "the broker refused the retry" in worker.log_path.read_text(errors="replace")
    finally:
        transaction.rollback()
        locker.close()
        time.sleep(2)  # a retry may now succeed while the broker still refuses writes
        allow()

    wait_for(lambda: get(cus)["balance"] == -1000 and count(InvoiceItem) == 3, 90, "both requests applied")
    assert worker.alive
    assert "Unrecoverable error" not in worker.log_path.read_text(errors="replace")
    assert count(TaskFailure) == 0
    assert audit_database() == []
    r = redis_lib.Redis(port=broker.port)
    wait_for(lambda: r.hlen("unacked") == 0, 20, "every message acknowledged")
