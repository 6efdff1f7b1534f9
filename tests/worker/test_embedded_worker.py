"""A real Celery worker in this process (memory broker), fed through BillingClient."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tasks.client import BillingClient
from tasks.ids import derived_id
from tests.support import count, get
from worker.devtools.embedded import EmbeddedWorker
from worker.tables import Invoice, InvoiceItem, TaskFailure

pytestmark = [pytest.mark.usefixtures("database"), pytest.mark.slow]


@pytest.fixture
def running(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[BillingClient, EmbeddedWorker]]:
    from worker.app import app

    monkeypatch.setenv("BILLING_MISSING_REFERENCE_RETRIES", "1")
    worker = EmbeddedWorker(app)
    worker.purge()  # messages other tests sent to the process-wide memory broker
    with worker:
        yield BillingClient(app=app), worker


def test_chain_of_invoices_through_the_broker(running: tuple[BillingClient, EmbeddedWorker]) -> None:
    client, worker = running
    cus = client.create_customer(email="bea@example.ca", currency="cad")
    worker.wait_idle()
    client.create_invoice_items([{"customer": cus, "amount": 100} for _ in range(260)])
    client.create_invoice_items([{"customer": cus, "currency": "usd", "amount": 100} for _ in range(3)])
    worker.wait_idle()
    first = client.create_invoice(customer=cus, currency="cad", finalize=True, idempotency_key="embedded-run")
    worker.wait_idle()

    second = derived_id("in", "embedded-run:part2")
    assert first == derived_id("in", "embedded-run")
    assert (get(first)["lines"]["total_count"], get(second)["lines"]["total_count"]) == (250, 10)
    assert (get(first)["status"], get(second)["status"]) == ("open", "open")
    assert count(Invoice) == 2
    assert count(InvoiceItem, InvoiceItem.invoice_id.is_(None)) == 3  # type: ignore[union-attr]


def test_a_message_that_cannot_succeed_is_recorded_not_dropped(
    running: tuple[BillingClient, EmbeddedWorker],
) -> None:
    client, worker = running
    client.create_invoice_item(customer="cus_DOESNOTEXIST", currency="usd", amount=100)
    worker.wait_idle()
    failures = get_failures()
    assert [(f["task_name"], f["error"]["class"], f["error"]["field"]) for f in failures] == [
        ("billing.invoice_items.create", "NotFound", "customer")
    ]
    assert failures[0]["error"]["type"] == "invalid_request_error"
    assert failures[0]["payload"]["customer"] == "cus_DOESNOTEXIST"
    assert failures[0]["attempts"] == 1
    assert count(TaskFailure) == 1


def get_failures() -> list[dict]:
    from worker.db import read_session
    from worker.views import list_objects

    with read_session() as session:
        return list_objects(session, "task_failures")["data"]


def test_an_invoice_request_that_overtakes_its_items_waits_for_them(
    running: tuple[BillingClient, EmbeddedWorker], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Items and invoices travel in different queues, so a request sent after its items
    can run first. It finds nothing pending and looks again (with backoff) before it
    would record NothingToInvoice."""
    from worker.devtools.soak import wait_for

    client, worker = running
    cus = client.create_customer(email="ola@example.no", currency="nok")
    worker.wait_idle()
    invoice = client.create_invoice(customer=cus, finalize=True, idempotency_key="overtaken")
    wait_for(lambda: count(Invoice) == 0 and worker.queued() == 0, 10, "the first, empty-handed run")
    time.sleep(0.5)
    client.create_invoice_items([{"customer": cus, "amount": 1000 + n} for n in range(3)])
    wait_for(lambda: count(Invoice) == 1, 60, "the retried request to find its items")
    worker.wait_idle()
    assert get(invoice)["lines"]["total_count"] == 3
    assert get(invoice)["amount_due"] == 3003
    assert count(TaskFailure) == 0


def test_each_request_s_fate_without_the_database(running: tuple[BillingClient, EmbeddedWorker]) -> None:
    """On the embedded default the fates live in this process's memory (so does its broker):
    the handle every method returns waits for the outcome, with the ids, or the error."""
    import uuid

    client, _ = running
    key = f"fate-{uuid.uuid4().hex}"
    cus = client.create_customer(email="fay@example.ca", currency="cad")
    assert cus.wait(timeout=60).as_dict() | {"requests": 1} == {
        "object": "request_fate", "idempotency_key": cus, "status": "succeeded",
        "task": "billing.customers.create", "ids": [cus], "error": None, "failed_key": None,
        "pending": [], "requests": 1,
    }  # fmt: skip
    listed = client.create_invoice_items([{"customer": cus, "amount": 100} for _ in range(1_003)])
    fate = listed.wait(timeout=60)
    assert (fate.status, fate.ids, fate.requests) == ("succeeded", tuple(listed), 2)  # two messages

    invoice = client.create_invoice(customer=cus, currency="cad", finalize=True, idempotency_key=key)
    fate = invoice.wait(timeout=120)
    parts = [key] + [f"{key}:part{n}" for n in range(2, 6)]  # 1,003 items: 250 x 4 and 3
    assert (fate.status, fate.ids) == ("succeeded", tuple(derived_id("in", part) for part in parts))
    assert client.fate(key) == fate and fate.ids[0] == invoice

    voided = client.void_invoice(invoice)  # an action: its handle is the invoice it acts on
    assert voided == invoice and voided.idempotency_key.startswith("req_")
    assert voided.wait(timeout=60).ids == (invoice,)

    again = client.void_invoice(invoice)  # a bad request: final at once (no retry for a wrong state)
    fate = again.wait(timeout=60)
    assert (fate.status, fate.failed_key, fate.ids) == ("failed", again.idempotency_key, ())
    assert fate.error is not None
    error = (fate.error["type"], fate.error["code"], fate.error["field"])
    assert error == ("invalid_request_error", "invalid_state", "invoice")  # Stripe's type
    assert fate.error["class"] == "WrongState"
    assert invoice in fate.error["message"]
    assert voided.fate().status == "succeeded"  # one request's failure is not another's
