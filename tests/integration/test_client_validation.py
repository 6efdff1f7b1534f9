"""The producer client refuses bad input before sending, exactly as the worker would.

``BillingClient`` runs the same contracts as the worker: a bad call raises the same
``BadRequest`` (type, field, message) in the caller's process and sends nothing. A good
call sends one message and returns the id the worker will give the object; the messages
it sends are then run through the worker's tasks (eager) to prove they are accepted.
Runs on SQLite and PostgreSQL (the ``database`` fixture) for the worker's half.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from domain.errors import BadRequest
from tasks.client import BillingClient
from tests.support import row_counts
from worker.app import app
from worker.db import read_session
from worker.tables import TaskFailure

pytestmark = pytest.mark.usefixtures("database")

app.loader.import_default_modules()

Sent = list[tuple[str, dict[str, Any]]]


@pytest.fixture
def client() -> BillingClient:
    return BillingClient(broker_url="memory://localhost/")


@pytest.fixture
def sent(client: BillingClient, monkeypatch: pytest.MonkeyPatch) -> Sent:
    """Every message the client hands to Celery, in order (and still sent to the memory broker)."""
    messages: Sent = []
    send_task = client.app.send_task

    def spy(name: str, *args: Any, **options: Any) -> Any:
        messages.append((name, dict(options["kwargs"])))
        return send_task(name, *args, **options)

    monkeypatch.setattr(client.app, "send_task", spy)
    return messages


def deliver(name: str, payload: dict[str, Any]) -> Any:
    """Run one message through the worker's task, as a worker would on receipt."""
    return app.tasks[name].apply(kwargs=payload)


def recorded_failure() -> TaskFailure:
    with read_session() as session:
        (failure,) = session.execute(select(TaskFailure)).scalars()
        return failure


BAD_CALLS: list[tuple[str, str, Callable[[BillingClient], Any], str, dict[str, Any]]] = [
    (
        "float-amount",
        "billing.invoice_items.create",
        lambda c: c.create_invoice_item(customer="cus_1", currency="usd", amount=10.5),
        "amount",
        {"id": "ii_1", "customer": "cus_1", "currency": "usd", "amount": 10.5},
    ),
    (
        "whole-float-amount",
        "billing.invoice_items.create",
        lambda c: c.create_invoice_item(customer="cus_1", currency="usd", amount=10.0),
        "amount",
        {"id": "ii_1", "customer": "cus_1", "currency": "usd", "amount": 10.0},
    ),
    (
        "bad-currency",
        "billing.customers.create",
        lambda c: c.create_customer(name="Ada", currency="USD"),
        "currency",
        {"id": "cus_1", "name": "Ada", "currency": "USD"},
    ),
    (
        "unknown-parameter",
        "billing.customers.create",
        lambda c: c.create_customer(name="Ada", nickname="ada"),
        "nickname",
        {"id": "cus_1", "name": "Ada", "nickname": "ada"},
    ),
    (
        "bad-currency-on-a-balance-transaction",
        "billing.balance_transactions.create",
        lambda c: c.create_balance_transaction(customer="cus_1", amount=-500, currency="us"),
        "currency",
        {"id": "cbtxn_1", "customer": "cus_1", "amount": -500, "currency": "us"},
    ),
    (
        "unknown-parameter-on-an-update",
        "billing.customers.update",
        lambda c: c.update_customer("cus_1", nickname="x"),
        "nickname",
        {"customer": "cus_1", "nickname": "x"},
    ),
]


@pytest.mark.parametrize(
    ("task_name", "bad_call", "field", "payload"),
    [pytest.param(name, call, field, payload, id=label) for label, name, call, field, payload in BAD_CALLS],
)
def test_a_bad_call_raises_the_workers_bad_request_and_sends_nothing(
    client: BillingClient,
    sent: Sent,
    task_name: str,
    bad_call: Callable[[BillingClient], Any],
    field: str,
    payload: dict[str, Any],
) -> None:
    with pytest.raises(BadRequest) as raised:
        bad_call(client)
    error = raised.value
    assert type(error) is BadRequest
    assert error.field == field
    assert sent == []

    # the worker, sent the same payload by another producer, refuses it identically
    counts = row_counts()
    result = deliver(task_name, {**payload, "idempotency_key": "req_1"})
    assert result.failed()
    assert (type(result.result), result.result.field, result.result.message) == (
        BadRequest,
        error.field,
        error.message,
    )
    assert row_counts() == {
        **counts,
        "task_failures": counts["task_failures"] + 1,
        "events": counts["events"] + 1,  # request.failed
    }
    failure = recorded_failure()
    assert (failure.error_type, failure.error_field, failure.error_message) == (
        "BadRequest",
        error.field,
        error.message,
    )


def test_valid_calls_return_prefixed_ids_that_the_worker_then_creates(
    client: BillingClient, sent: Sent
) -> None:
    cus = client.create_customer(email="ada@example.com", name="Ada", currency="usd")
    item = client.create_invoice_item(customer=cus, currency="usd", amount=3000)
    inv = client.create_invoice(customer=cus, currency="usd", finalize=True)
    note = client.create_credit_note(invoice=inv, amount=500)
    txn = client.create_balance_transaction(customer=cus, amount=-200, currency="usd")
    rate = client.create_tax_rate(display_name="VAT", percentage="20", inclusive=False)

    ids = {"cus": cus, "ii": item, "in": inv, "cn": note, "cbtxn": txn, "txr": rate}
    for prefix, object_id in ids.items():
        assert re.fullmatch(rf"{prefix}_[0-9A-Z]{{26}}", object_id), (prefix, object_id)
    assert [name for name, _ in sent] == [
        "billing.customers.create",
        "billing.invoice_items.create",
        "billing.invoices.create",
        "billing.credit_notes.create",
        "billing.balance_transactions.create",
        "billing.tax_rates.create",
    ]
    assert [payload["id"] for _, payload in sent] == list(ids.values())

    for name, payload in sent:
        result = deliver(name, payload)
        assert result.successful(), (name, result.result)
        assert result.result["id"] == payload["id"]
    counts = row_counts()
    assert (counts["customers"], counts["invoice_items"], counts["invoices"]) == (1, 1, 1)
    assert (counts["credit_notes"], counts["tax_rates"], counts["task_failures"]) == (1, 1, 0)


def test_the_same_idempotency_key_yields_the_same_id_and_one_row(client: BillingClient, sent: Sent) -> None:
    first = client.create_customer(name="Ada", idempotency_key="signup-42")
    again = client.create_customer(name="Ada", idempotency_key="signup-42")
    other = client.create_customer(name="Ada", idempotency_key="signup-43")

    assert first == again != other
    assert first.startswith("cus_") and other.startswith("cus_")
    assert sent[0] == sent[1]
    assert sent[0][1]["idempotency_key"] == "signup-42"

    results = [deliver(name, payload) for name, payload in sent[:2]]
    assert [r.result for r in results] == [
        {"id": first, "replayed": False, "follow_ups": 0},
        {"id": first, "replayed": True, "follow_ups": 0},
    ]
    assert row_counts()["customers"] == 1


def test_keyed_items_and_invoices_map_to_the_same_ids(client: BillingClient) -> None:
    items = [{"customer": "cus_1", "currency": "usd", "amount": 100}] * 3
    assert client.create_invoice_items(items, idempotency_key="b1") == client.create_invoice_items(
        items, idempotency_key="b1"
    )
    assert client.create_invoice(customer="cus_1", idempotency_key="i1") == client.create_invoice(
        customer="cus_1", idempotency_key="i1"
    )


def test_a_bad_item_in_a_big_batch_sends_no_chunk_before_it(client: BillingClient, sent: Sent) -> None:
    """1,001 items go as two messages; the 1,001st is bad, so nothing at all may leave, and the
    error names the caller's index, not the index inside the second message."""
    good = {"customer": "cus_1", "currency": "usd", "amount": 100}
    items = [good] * 1000 + [{**good, "amount": 1.5}]
    with pytest.raises(BadRequest) as raised:
        client.create_invoice_items(items)
    assert sent == []
    assert raised.value.field == "items[1000].amount"


def test_a_big_batch_is_split_into_messages_of_1000(client: BillingClient, sent: Sent) -> None:
    good = {"customer": "cus_1", "currency": "usd", "amount": 100}
    ids = client.create_invoice_items([good] * 1001)
    assert len(ids) == len(set(ids)) == 1001
    assert [len(payload["items"]) for _, payload in sent] == [1000, 1]
    assert [item["id"] for _, payload in sent for item in payload["items"]] == ids


def test_subscription_calls_return_prefixed_ids_that_the_worker_then_creates(
    client: BillingClient, sent: Sent
) -> None:
    clock_id = client.create_test_clock(frozen_time=1_800_000_000, name="sandbox")
    cus = client.create_customer(name="Ada", currency="usd", test_clock=clock_id)
    pro = client.create_product(name="Pro")
    monthly = client.create_price(
        product=pro,
        currency="usd",
        unit_amount=2000,
        currency_options={"eur": {"unit_amount": 1800}},
        recurring={"interval": "month"},
    )
    sub = client.create_subscription(customer=cus, items=[{"price": monthly, "quantity": 2}])
    client.change_subscription_currency(cus, "eur")
    client.advance_test_clock(clock_id, 1_800_000_000 + 40 * 86_400)
    client.cancel_subscription(sub, at_period_end=True)
    with pytest.raises(BadRequest) as error:
        client.create_subscription(customer=cus, items=[{"price": monthly, "quantity": 0}])
    assert error.value.field == "items[0].quantity"

    for prefix, object_id in {"clock": clock_id, "prod": pro, "price": monthly, "sub": sub}.items():
        assert re.fullmatch(rf"{prefix}_[0-9A-Z]{{26}}", object_id), (prefix, object_id)
    for name, payload in sent:
        result = deliver(name, payload)
        assert result.successful(), (name, result.result)
    counts = row_counts()
    assert (counts["subscriptions"], counts["invoices"], counts["task_failures"]) == (1, 2, 0)
