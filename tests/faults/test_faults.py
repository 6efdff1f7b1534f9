"""Fault injection against real worker processes, Redis and PostgreSQL.

Each test injects one fault at an exact moment (a named failpoint, see
``worker.failpoints``), lets the system recover the way it would in production (late
acknowledgement and redelivery, the outbox, the reconciler, a supervisor restarting
the worker) and ends with the ledger checker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib
from celery import Celery
from sqlalchemy import select, text

from tasks.client import BillingClient
from tasks.ids import derived_id
from tasks.operations import ALL_QUEUES
from tests.faults.harness import BeatProcess, Cluster, PostgresServer, RedisServer, wait_for
from tests.support import call, count, customer, get, items
from worker.audit import audit_database
from worker.db import get_engine, read_session
from worker.tables import (
    Event,
    IdempotencyKey,
    Invoice,
    InvoiceItem,
    MessageDelivery,
    OutboxMessage,
    TaskFailure,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

CREATE = "billing.invoices.create"


@pytest.fixture
def cluster(postgres: str, redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    yield from _cluster(postgres, redis_url, tmp_path)


@pytest.fixture
def private_cluster(private_postgres_url: str, redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    """Workers on a PostgreSQL cluster this session started, for the test that restarts it."""
    yield from _cluster(private_postgres_url, redis_url, tmp_path)


def _cluster(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    redis_lib.Redis.from_url(redis_url).flushdb()  # the tests' own database (BILLING_TEST_REDIS_URL)
    # a short visibility timeout makes redelivery after a crash come within seconds
    workers = Cluster(
        database_url,
        redis_url,
        tmp_path,
        visibility_timeout_s=2,
        unacked_restore_interval_s=1,
        outbox_grace_s=1,
    )
    try:
        yield workers
    finally:
        workers.shutdown()
    print(workers.logs())


@pytest.fixture
def client(redis_url: str) -> BillingClient:
    app = Celery("fault-client", set_as_current=False)
    app.conf.update(broker_url=redis_url, task_serializer="json", accept_content=["json"],
                    broker_transport_options={"visibility_timeout": 2})  # fmt: skip
    return BillingClient(app=app)


def broker_empty(redis_url: str) -> bool:
    r = redis_lib.Redis.from_url(redis_url)
    queued = sum(r.llen(q) for q in ALL_QUEUES)
    return queued == 0 and r.hlen("unacked") == 0


def redeliveries(task_name: str) -> int:
    with read_session() as session:
        rows = session.execute(
            select(MessageDelivery).where(MessageDelivery.task_name == task_name)
        ).scalars()
        return sum(row.redeliveries for row in rows)


def assert_books_clean() -> None:
    assert audit_database() == []
    with read_session() as session:
        per_item = session.execute(select(InvoiceItem.invoice_id)).scalars().all()
    assert per_item, "the scenario made items"


def events_of(object_id: str) -> list[str]:
    """The types of the events whose object is ``object_id``, oldest first."""
    with read_session() as session:
        rows = session.execute(select(Event).order_by(Event.created, Event.id)).scalars().all()
    return [row.type for row in rows if row.data["object"].get("id") == object_id]


def backlog(currency: str = "cad", n: int = 10) -> str:
    cus = customer(currency)
    items(cus, currency, [100 + i for i in range(n)])
    return cus


def test_sigkill_after_commit_before_ack_is_redelivered_and_replays(cluster: Cluster, client: BillingClient,
                                                                   redis_url: str) -> None:  # fmt: skip
    cus = backlog()
    worker = cluster.spawn(BILLING_FAILPOINTS=f"{CREATE}@after_commit=kill_worker:once")
    invoice_id = client.create_invoice(customer=cus, finalize=True, idempotency_key="after-commit")
    worker.wait_dead()
    assert count(Invoice) == 1  # committed before the crash; the message was never acknowledged
    assert events_of(invoice_id) == ["invoice.created", "invoice.finalized"]  # committed with it
    cluster.spawn()
    wait_for(lambda: redeliveries(CREATE) >= 1 and broker_empty(redis_url), what="the redelivered run")
    assert count(Invoice) == 1
    assert events_of(invoice_id) == ["invoice.created", "invoice.finalized"]  # the replay wrote none
    assert get(invoice_id)["lines"]["total_count"] == 10
    assert count(TaskFailure) == 0
    assert_books_clean()


def test_sigkill_before_commit_rolls_back_and_invoices_once(cluster: Cluster, client: BillingClient,
                                                           redis_url: str) -> None:  # fmt: skip
    cus = backlog()
    worker = cluster.spawn(BILLING_FAILPOINTS=f"{CREATE}@before_commit=kill_worker:once")
    invoice_id = client.create_invoice(customer=cus, finalize=True, idempotency_key="before-commit")
    worker.wait_dead()
    assert count(Invoice) == 0  # rolled back
    assert count(InvoiceItem, InvoiceItem.invoice_id.is_(None)) == 10  # type: ignore[union-attr]
    assert events_of(invoice_id) == []  # rolled back with it
    cluster.spawn()
    wait_for(lambda: count(Invoice) == 1 and broker_empty(redis_url), what="the invoice after redelivery")
    assert get(invoice_id)["status"] == "open"
    assert events_of(invoice_id) == ["invoice.created", "invoice.finalized"]
    assert get(cus)["next_invoice_sequence"] == 2  # numbered once: no gap from the crashed attempt
    assert_books_clean()


def test_crash_between_commit_and_publish_then_broker_flushed_reconciler_finishes_the_chain(
    cluster: Cluster, client: BillingClient, redis_url: str
) -> None:
    cus = backlog(n=260)
    worker = cluster.spawn(BILLING_FAILPOINTS=f"{CREATE}@before_publish=kill_worker:once")
    client.create_invoice(customer=cus, idempotency_key="unpublished")
    worker.wait_dead()
    with read_session() as session:
        (row,) = session.execute(select(OutboxMessage)).scalars()
    assert (row.key, row.published_at, row.done_at) == ("unpublished:part2", None, None)
    redis_lib.Redis.from_url(redis_url).flushdb()  # the redelivery is gone too: only the outbox knows
    cluster.spawn()
    client.app.send_task("billing.maintenance.reconcile", queue="billing.recurring")  # a beat tick
    wait_for(lambda: count(Invoice) == 2, what="the reconciler to finish the chain")
    assert get(derived_id("in", "unpublished:part2"))["lines"]["total_count"] == 10
    assert count(InvoiceItem, InvoiceItem.invoice_id.is_(None)) == 0  # type: ignore[union-attr]
    assert_books_clean()


def test_a_message_that_always_kills_its_pool_child_is_parked(cluster: Cluster, client: BillingClient,
                                                             redis_url: str) -> None:  # fmt: skip
    cus = backlog()
    worker = cluster.spawn(
        BILLING_FAILPOINTS=f"{CREATE}@before_commit=kill_child", BILLING_REDELIVERY_CAP="2"
    )
    client.create_invoice(customer=cus, idempotency_key="poison")
    wait_for(lambda: count(TaskFailure) == 1, timeout=50, what="the poison message to be parked")
    with read_session() as session:
        failure = session.execute(select(TaskFailure)).scalar_one()
    assert (failure.task_name, failure.error_type, failure.error_code) == (CREATE, "Parked", "message_parked")
    assert failure.payload["customer"] == cus
    assert failure.error_field == "customer" and failure.error_message.startswith(f"customer {cus}: {CREATE}")
    assert worker.alive  # only pool children died; the worker goes on
    wait_for(lambda: broker_empty(redis_url), what="the parked message to be acknowledged")
    assert count(Invoice) == 0
    assert count(InvoiceItem, InvoiceItem.invoice_id.is_(None)) == 10  # type: ignore[union-attr]


def test_the_same_message_delivered_twice_makes_one_invoice(cluster: Cluster, client: BillingClient,
                                                           redis_url: str) -> None:  # fmt: skip
    cus = backlog()
    payload = {"id": derived_id("in", "twice"), "customer": cus, "idempotency_key": "twice", "finalize": True}
    for _ in range(2):
        client.app.send_task(CREATE, kwargs=payload, queue="billing.invoices")
    cluster.spawn(concurrency=2)
    wait_for(lambda: broker_empty(redis_url) and count(Invoice) == 1, what="both deliveries")
    wait_for(lambda: broker_empty(redis_url), what="the broker to drain")
    assert count(Invoice) == 1 and count(TaskFailure) == 0
    assert_books_clean()


def test_a_task_outliving_the_visibility_timeout_runs_twice_and_bills_once(cluster: Cluster,
                                                                         client: BillingClient,
                                                                         redis_url: str) -> None:  # fmt: skip
    cus = backlog()
    cluster.spawn(concurrency=2, BILLING_FAILPOINTS=f"{CREATE}@before_commit=sleep14:once")
    client.create_invoice(customer=cus, finalize=True, idempotency_key="slow")
    wait_for(lambda: redeliveries(CREATE) >= 1, timeout=30, what="the overlapping redelivery")
    wait_for(lambda: count(Invoice) == 1 and broker_empty(redis_url), timeout=30, what="both runs")
    assert count(Invoice) == 1 and count(TaskFailure) == 0
    assert get(cus)["next_invoice_sequence"] == 2
    assert_books_clean()


def test_the_lock_holders_backend_terminated_is_retried(cluster: Cluster, client: BillingClient,
                                                       redis_url: str) -> None:  # fmt: skip
    cus = backlog()
    cluster.spawn(BILLING_FAILPOINTS=f"{CREATE}@before_commit=sleep4:once")
    client.create_invoice(customer=cus, finalize=True, idempotency_key="terminated")

    def lock_holder() -> list[int]:
        with get_engine().connect() as connection:
            return list(connection.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND state = 'idle in transaction' AND pid <> pg_backend_pid()"
            )).scalars())  # fmt: skip

    wait_for(lambda: bool(lock_holder()), timeout=20, what="the worker to hold the customer lock")
    with get_engine().connect() as connection:
        for pid in lock_holder():
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    wait_for(lambda: count(Invoice) == 1 and broker_empty(redis_url), timeout=40, what="the retried invoice")
    assert count(TaskFailure) == 0
    assert_books_clean()


def test_two_workers_racing_on_one_customer_and_currency(cluster: Cluster, client: BillingClient,
                                                        redis_url: str) -> None:  # fmt: skip
    cus = customer("usd")
    cluster.spawn(concurrency=2)
    cluster.spawn(concurrency=2)
    sent = 0
    for round_ in range(50):
        client.create_invoice_items([{"customer": cus, "amount": 100 + round_} for _ in range(7)])
        sent += 7
        for side in "ab":
            client.create_invoice(
                customer=cus, finalize=round_ % 2 == 0, idempotency_key=f"race-{round_}-{side}"
            )
    wait_for(lambda: broker_empty(redis_url) and count(InvoiceItem) == sent, timeout=50, what="50 rounds")
    call("billing.invoices.create_for_pending", customer=cus, idempotency_key="sweep")
    follow_ups = call("billing.invoices.create_for_pending", customer=cus, idempotency_key="sweep").follow_ups
    for follow_up in follow_ups:
        call(follow_up.task_name, **follow_up.payload)
    with read_session() as session:
        on_invoices = session.execute(select(InvoiceItem.invoice_id)).scalars().all()
    assert len(on_invoices) == sent and None not in on_invoices
    with read_session() as session:
        failures = {f.error_type for f in session.execute(select(TaskFailure)).scalars()}
    assert failures <= {"NothingToInvoice"}  # a racer may find the other took everything
    assert_books_clean()


def test_redis_killed_and_restarted_with_queued_and_in_flight_work(postgres: str, tmp_path: Path) -> None:
    server = RedisServer(tmp_path).start()  # a private server on a free port: this test kills it
    workers = Cluster(postgres, server.url, tmp_path, visibility_timeout_s=2, unacked_restore_interval_s=1)
    try:
        client = BillingClient(broker_url=server.url)
        backlogs = [backlog(n=5) for _ in range(6)]
        worker = workers.spawn(BILLING_FAILPOINTS=f"{CREATE}@before_commit=sleep3:once")
        invoices = [
            client.create_invoice(customer=c, finalize=True, idempotency_key=f"redis-{c}") for c in backlogs
        ]
        wait_for(lambda: redis_lib.Redis(port=server.port).hlen("unacked") > 0, what="a task in flight")
        server.kill()  # one task in flight, the others queued
        time.sleep(2)
        server.start()
        if not worker.alive:  # the supervisor's job (systemd Restart=always, compose restart)
            worker.wait_dead()
            workers.spawn()
        started = time.monotonic()
        wait_for(lambda: count(Invoice) == len(backlogs), timeout=60, what="all invoices after the restart")
        print(f"recovered {time.monotonic() - started:.1f}s after Redis came back")
        assert sorted(get(i)["status"] for i in invoices) == ["open"] * len(backlogs)
        assert count(TaskFailure) == 0
        assert_books_clean()
    finally:
        workers.shutdown()
        server.kill()
        print(workers.logs())


def test_redis_flushed_reconciler_invoices_every_pending_item(cluster: Cluster, client: BillingClient,
                                                             redis_url: str) -> None:  # fmt: skip
    backlogs = [backlog(currency) for currency in ("usd", "cad", "eur")]
    for cus in backlogs:
        client.create_invoice(customer=cus, idempotency_key=f"flushed-{cus}")
    redis_lib.Redis.from_url(redis_url).flushdb()  # every queued request is gone
    cluster.spawn(BILLING_STALE_PENDING_AFTER_S="1")
    time.sleep(1.5)
    client.app.send_task("billing.maintenance.reconcile", queue="billing.recurring")
    wait_for(lambda: count(InvoiceItem, InvoiceItem.invoice_id.is_(None)) == 0, what="the backlog invoiced")  # type: ignore[union-attr]
    assert count(Invoice) == 3
    assert_books_clean()


def test_postgres_restarted_mid_transaction(
    private_cluster: Cluster, private_postgres: PostgresServer, client: BillingClient, redis_url: str
) -> None:
    """On a cluster this session started (tests/faults/conftest.py), never the one it was given."""
    cus = backlog()
    private_cluster.spawn(BILLING_FAILPOINTS=f"{CREATE}@before_commit=sleep3:once")
    client.create_invoice(customer=cus, finalize=True, idempotency_key="pg-restart")
    time.sleep(1.5)  # the worker holds its transaction open in the failpoint
    started = time.monotonic()
    private_postgres.restart()
    get_engine().dispose()
    wait_for(
        lambda: _count_or_zero() == 1 and broker_empty(redis_url),
        timeout=60,
        what="the invoice after restart",
    )
    print(f"invoiced {time.monotonic() - started:.1f}s after the restart began")
    assert count(TaskFailure) == 0
    assert_books_clean()


def _count_or_zero() -> int:
    try:
        return count(Invoice)
    except Exception:
        return 0


def test_two_beat_processes_finish_a_chain_once(cluster: Cluster, client: BillingClient) -> None:
    cus = backlog(n=520)  # three parts: 250, 250, 20
    worker = cluster.spawn(BILLING_FAILPOINTS=f"{CREATE}@before_publish=kill_worker:once")
    client.create_invoice(customer=cus, idempotency_key="two-beats")
    worker.wait_dead()
    redis_lib.Redis.from_url(cluster.base_env["BILLING_BROKER_URL"]).flushdb()
    cluster.spawn(concurrency=2)
    env = {**cluster.base_env, "BILLING_RECONCILE_INTERVAL_S": "1"}
    beats = [BeatProcess(env, cluster.tmp_path, f"beat{i}") for i in range(2)]
    try:
        wait_for(lambda: count(Invoice) == 3, what="the chain finished by the reconciler")
        time.sleep(3)  # more ticks from both beats: nothing more may happen
    finally:
        for beat in beats:
            beat.stop()
    assert count(Invoice) == 3
    assert [
        get(derived_id("in", k))["lines"]["total_count"]
        for k in ("two-beats", "two-beats:part2", "two-beats:part3")
    ] == [250, 250, 20]
    assert count(TaskFailure) == 0
    assert_books_clean()


@pytest.mark.parametrize("point", ["before_commit", "after_commit"])
def test_a_worker_killed_mid_renewal_bills_the_period_once(
    cluster: Cluster, redis_url: str, point: str
) -> None:
    from worker.tables import SubscriptionPeriod

    renew = "billing.subscriptions.renew"
    cus = customer("usd")
    pro = call("billing.products.create", name="Pro").id
    daily = call(
        "billing.prices.create", product=pro, currency="usd", unit_amount=700, recurring={"interval": "day"}
    ).id
    boundary = int(time.time()) + 4
    sub = call(
        "billing.subscriptions.create", customer=cus, items=[{"price": daily, "quantity": 3}],
        billing_cycle_anchor=boundary - 86_400,
    ).id  # fmt: skip
    assert count(SubscriptionPeriod) == 1
    worker = cluster.spawn(BILLING_FAILPOINTS=f"{renew}@{point}=kill_worker:once")
    beat = BeatProcess({**cluster.base_env, "BILLING_RENEW_INTERVAL_S": "1"}, cluster.tmp_path, "beat")
    try:
        worker.wait_dead(timeout=40)
        assert count(SubscriptionPeriod) == (2 if point == "after_commit" else 1)
        cluster.spawn(concurrency=2)
        cycle = Invoice.billing_reason == "subscription_cycle"
        wait_for(
            lambda: count(Invoice, cycle) == 1 and broker_empty(redis_url), timeout=40, what="the renewal"
        )
        time.sleep(3)  # more beat ticks and any redelivery: nothing more may happen
    finally:
        beat.stop()
    assert count(Invoice, cycle) == 1 and count(SubscriptionPeriod) == 2
    view = get(sub)
    assert (view["current_period_start"], view["current_period_end"]) == (boundary, boundary + 86_400)
    assert get(view["latest_invoice"])["total"] == 2100
    assert count(TaskFailure) == 0
    assert audit_database() == []


@pytest.mark.parametrize(
    "fault", ["before_commit=kill_worker", "after_commit=kill_worker", "before_commit=kill_child"]
)
def test_a_worker_killed_mid_batch_of_single_item_messages_loses_and_doubles_nothing(
    cluster: Cluster, client: BillingClient, redis_url: str, fault: str
) -> None:
    """Single-item messages are written together (one transaction per batch) and acknowledged
    after the commit: a crash at either side of it redelivers the batch, and the keys make
    the second write a replay."""
    cus = customer("usd")
    worker = cluster.spawn(BILLING_FAILPOINTS=f"billing.invoice_items.create@{fault}:once")
    sent = [client.create_invoice_item(customer=cus, amount=100 + n) for n in range(30)]
    if fault.endswith("kill_worker"):
        worker.wait_dead()
        cluster.spawn(concurrency=2)
    wait_for(
        lambda: count(InvoiceItem) == 30 and broker_empty(redis_url), timeout=45, what="every item, once"
    )
    point = fault.partition("=")[0]
    assert (cluster.tmp_path / f"failpoint-billing.invoice_items.create-{point}.fired").exists()
    with read_session() as session:
        stored = session.execute(select(InvoiceItem.id, InvoiceItem.amount)).all()
    assert sorted(stored) == sorted(zip(sent, range(100, 130), strict=True))
    assert all(events_of(item) == ["invoiceitem.created"] for item in sent)  # one each, crash or not
    assert count(TaskFailure) == 0
    assert audit_database() == []


@pytest.mark.parametrize("point", ["before_commit", "after_commit"])
def test_a_list_killed_at_its_commit_has_its_items_and_one_summary_event_together(
    cluster: Cluster, client: BillingClient, redis_url: str, point: str
) -> None:
    """Killed before its commit a list leaves neither items nor event; after it, both; the
    redelivered message replays and writes no second event."""
    cus = customer("usd")
    worker = cluster.spawn(BILLING_FAILPOINTS=f"billing.invoice_items.create_many@{point}=kill_worker:once")
    sent = client.create_invoice_items([{"customer": cus, "amount": 100 + n} for n in range(50)])
    worker.wait_dead()
    summaries = [events_of(key) for key in batch_keys()]
    assert (count(InvoiceItem), summaries) == ((0, []) if point == "before_commit" else (50, [[BATCH]]))
    cluster.spawn()
    wait_for(lambda: count(InvoiceItem) == 50 and broker_empty(redis_url), timeout=45, what="the list, once")
    (key,) = batch_keys()
    assert events_of(key) == [BATCH]
    with read_session() as session:
        (event,) = session.execute(select(Event).where(Event.type == BATCH)).scalars()
    assert event.data["object"]["items"] == sent
    assert audit_database() == []


BATCH = "invoiceitem.batch_created"


def batch_keys() -> list[str]:
    """The keys of the list requests that committed (a list's summary event has its key as id)."""
    with read_session() as session:
        keys = session.execute(
            select(IdempotencyKey.key).where(IdempotencyKey.operation == "billing.invoice_items.create_many")
        ).scalars()
        return list(keys)
