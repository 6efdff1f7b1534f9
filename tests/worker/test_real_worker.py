"""A real worker process: ``celery -A worker.app worker`` on Redis and PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis

from tasks.client import BillingClient
from tasks.ids import derived_id
from tasks.operations import ALL_QUEUES
from tests.support import count, get
from worker.devtools.soak import wait_for
from worker.tables import Customer, Invoice, InvoiceItem

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def worker_process(postgres: str, redis_url: str, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    redis.Redis.from_url(redis_url).flushdb()
    env = {**os.environ, "BILLING_DATABASE_URL": postgres, "BILLING_BROKER_URL": redis_url}
    log = (tmp_path / "worker.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.app",
            "worker",
            "--loglevel=INFO",
            "--concurrency=2",
            "-Q",
            ",".join(ALL_QUEUES),
            "--without-mingle",
            "--without-gossip",
            "-n",
            f"test-{os.getpid()}@%h",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield redis_url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a warm shutdown waits for renders in progress
            process.kill()
            process.wait(timeout=10)
        log.close()
        output = (tmp_path / "worker.log").read_text()
        if "Traceback" in output:
            print(output[-5000:])


def test_260_items_become_a_chain_of_two_invoices(worker_process: str) -> None:
    client = BillingClient(broker_url=worker_process)
    cus = client.create_customer(email="bea@example.ca", name="Bea", currency="cad")
    wait_for(lambda: count(Customer) == 1, what="the customer")
    client.create_invoice_items([{"customer": cus, "amount": 250 + i} for i in range(260)])
    client.create_invoice_items([{"customer": cus, "currency": "usd", "amount": 999} for _ in range(3)])
    wait_for(lambda: count(InvoiceItem) == 263, what="263 items")
    client.create_balance_transaction(customer=cus, amount=-1000)
    # queues do not order messages between them: the credit must be there before invoicing
    wait_for(lambda: get(cus)["balance"] == -1000, what="the credit")
    client.create_invoice(customer=cus, finalize=True, idempotency_key="real-worker-run")
    wait_for(lambda: count(Invoice) == 2, what="the chained second invoice")

    first, second = get(derived_id("in", "real-worker-run")), get(derived_id("in", "real-worker-run:part2"))
    assert (first["lines"]["total_count"], second["lines"]["total_count"]) == (250, 10)
    assert first["subtotal"] == sum(250 + i for i in range(250))
    assert (first["starting_balance"], first["amount_due"]) == (-1000, first["total"] - 1000)
    assert second["subtotal"] == sum(250 + i for i in range(250, 260))
    assert (first["number"][-4:], second["number"][-4:]) == ("0001", "0002")
    assert count(InvoiceItem, InvoiceItem.invoice_id.is_(None)) == 3  # type: ignore[union-attr]


def test_a_monitor_turns_task_events_on_as_flower_does(worker_process: str) -> None:
    """Events are off by default (they cost CPU on every task); ``enable_events``, which
    Flower broadcasts every few seconds, turns them on, and a task then reports its outcome."""
    import threading

    from celery import Celery

    from tasks.broker import transport_for

    monitor = Celery("monitor", broker=worker_process, set_as_current=False)
    monitor.conf.broker_transport = transport_for(worker_process)
    seen: list[dict[str, object]] = []
    ready = threading.Event()

    def capture() -> None:
        with monitor.connection_for_read() as connection:
            receiver = monitor.events.Receiver(connection, handlers={"*": seen.append})
            ready.set()
            with contextlib.suppress(TimeoutError):
                receiver.capture(limit=None, timeout=20, wakeup=False)

    listener = threading.Thread(target=capture, daemon=True)
    listener.start()
    ready.wait(10)
    time.sleep(1.0)  # the receiver subscribes once capture() runs
    client = BillingClient(broker_url=worker_process)
    client.create_customer(email="quiet@example.com")
    wait_for(lambda: count(Customer) == 1, what="the first customer")
    assert not [e for e in seen if e.get("type") == "task-succeeded"], "events were on before anyone asked"

    def watched() -> bool:  # as Flower does: ask every worker again and again
        monitor.control.enable_events()
        client.create_customer(email="watched@example.com")
        return any(e.get("type") == "task-succeeded" for e in seen)

    wait_for(watched, timeout=20, interval=1.0, what="a task-succeeded event once events are asked for")
    assert any(e.get("type") == "task-received" and e.get("name") == "billing.customers.create" for e in seen)

    # Invoice requests, which a worker takes together, each report as a task of their own.
    customer_id = client.create_customer(email="billed@example.com", currency="usd")
    client.create_invoice_items([{"customer": customer_id, "amount": 500}])
    wait_for(lambda: count(InvoiceItem) == 1, what="the item")
    invoice_id = client.create_invoice(customer=customer_id, finalize=True)
    wait_for(lambda: count(Invoice) == 1, what="the invoice")

    def reported(kind: str) -> list[dict[str, object]]:
        return [e for e in seen if e.get("type") == kind and invoice_id in str(e.get("kwargs", ""))]

    wait_for(lambda: bool(reported("task-received")), what="the invoice request's task-received event")
    # (its document request names the invoice too, once it is finalized)
    (received,) = [e for e in reported("task-received") if e["name"] == "billing.invoices.create"]
    wait_for(
        lambda: any(e.get("type") == "task-succeeded" and e.get("uuid") == received["uuid"] for e in seen),
        what="the invoice request's task-succeeded event",
    )


def test_a_producer_waits_for_each_request_s_fate(
    worker_process: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the database: the handle a method returns waits for its request's end, with the
    ids it made (every invoice of a chain) or the error; ``billing fate`` reads the same."""
    import json
    import uuid

    from click.testing import CliRunner

    from worker.cli import main
    from worker.settings import get_settings

    client = BillingClient(broker_url=worker_process)
    cus = client.create_customer(email="fay@example.com", name="Fay", currency="usd")
    fate = cus.wait(timeout=60)
    assert (fate.status, fate.ids, fate.task) == ("succeeded", (cus,), "billing.customers.create")

    listed = client.create_invoice_items([{"customer": cus, "amount": 100 + i} for i in range(510)])
    assert listed.wait(timeout=60).ids == tuple(listed)
    key = f"fate-{uuid.uuid4().hex}"
    invoice = client.create_invoice(customer=cus, finalize=True, idempotency_key=key)
    fate = invoice.wait(timeout=120)
    chain = (derived_id("in", key), derived_id("in", f"{key}:part2"), derived_id("in", f"{key}:part3"))
    assert (fate.status, fate.ids, fate.requests) == ("succeeded", chain, 3)  # 250, 250 and 10 lines
    assert [get(i)["lines"]["total_count"] for i in fate.ids] == [250, 250, 10]

    voided = client.void_invoice(invoice)
    assert voided.wait(timeout=60).ids == (invoice,)
    again = client.void_invoice(invoice)  # a bad request: the invoice is void already
    fate = again.wait(timeout=60)
    assert fate.status == "failed" and fate.error is not None
    error = (fate.error["type"], fate.error["code"], fate.error["field"], fate.error["class"])
    assert error == ("invalid_request_error", "invalid_state", "invoice", "WrongState")

    monkeypatch.setenv("BILLING_BROKER_URL", worker_process)
    get_settings.cache_clear()
    shown = CliRunner().invoke(main, ["fate", key], catch_exceptions=False)
    assert json.loads(shown.output)["ids"] == list(chain)
    shown = CliRunner().invoke(main, ["fate", again.idempotency_key], catch_exceptions=False)
    assert json.loads(shown.output)["error"] == fate.error
