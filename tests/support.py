"""Helpers for service-level tests: call operations as the worker would, read the results."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select
from sqlmodel import SQLModel

from tasks.ids import PREFIXES, new_id
from worker.db import read_session
from worker.services.base import Outcome
from worker.services.registry import run
from worker.views import get_object, list_objects

CREATES = {
    "billing.customers.create": "customer",
    "billing.invoice_items.create": "invoice_item",
    "billing.invoices.create": "invoice",
    "billing.credit_notes.create": "credit_note",
    "billing.balance_transactions.create": "customer_balance_transaction",
    "billing.tax_rates.create": "tax_rate",
    "billing.products.create": "product",
    "billing.prices.create": "price",
    "billing.subscriptions.create": "subscription",
    "billing.test_clocks.create": "test_clock",
}


def call(operation: str, /, **payload: Any) -> Outcome:
    """Run one operation; ids and keys are made here as the producer client makes them."""
    if operation in CREATES and "id" not in payload:
        payload["id"] = new_id(PREFIXES[CREATES[operation]])
    payload.setdefault("idempotency_key", payload.get("id") or new_id("req"))
    return run(operation, payload)


def customer(currency: str | None = "usd", **fields: Any) -> str:
    if currency is not None:
        fields["currency"] = currency
    outcome = call("billing.customers.create", **fields)
    assert outcome.id
    return outcome.id


def items(customer_id: str, currency: str, amounts: list[int], **fields: Any) -> list[str]:
    batch = [
        {
            "id": new_id("ii"),
            "idempotency_key": new_id("req"),
            "customer": customer_id,
            "currency": currency,
            "amount": amount,
            **fields,
        }
        for amount in amounts
    ]
    call("billing.invoice_items.create_many", items=batch)
    return [item["id"] for item in batch]


def invoice(customer_id: str, **options: Any) -> Outcome:
    return call("billing.invoices.create", customer=customer_id, **options)


def run_chain(customer_id: str, **options: Any) -> list[str]:
    """Create the first invoice and run every follow-up it asks for, as the worker would."""
    outcome = invoice(customer_id, **options)
    invoice_ids = [outcome.id] if outcome.id else []
    follow_ups = billing_follow_ups(outcome)
    while follow_ups:
        follow_up = follow_ups.pop(0)
        nxt = call(follow_up.task_name, **follow_up.payload)
        if nxt.id:
            invoice_ids.append(nxt.id)
        follow_ups.extend(billing_follow_ups(nxt))
    return invoice_ids


DOCUMENTS = "billing.documents.render"


def billing_follow_ups(outcome: Outcome) -> list[Any]:
    """The follow-ups that change the books: not the document requests (queue
    billing.documents; tests/integration/test_documents.py runs those)."""
    return [f for f in outcome.follow_ups if f.task_name != DOCUMENTS]


def adjust(customer_id: str, amount: int, currency: str | None = None) -> str:
    """A balance adjustment (negative = credit)."""
    payload: dict[str, Any] = {"customer": customer_id, "amount": amount}
    if currency:
        payload["currency"] = currency
    outcome = call("billing.balance_transactions.create", **payload)
    assert outcome.id
    return outcome.id


def tax_rate(percentage: str, *, inclusive: bool) -> str:
    outcome = call("billing.tax_rates.create", display_name="VAT", percentage=percentage, inclusive=inclusive)
    assert outcome.id
    return outcome.id


def seat_subscription(customer_id: str, *, quantity: int = 3, coupon: str | None = None) -> str:
    """A monthly subscription to ``quantity`` seats at 20.00 USD (18.00 EUR) each."""
    product = call("billing.products.create", name="Seat").id
    price = call(
        "billing.prices.create",
        product=product,
        currency="usd",
        unit_amount=2000,
        currency_options={"eur": {"unit_amount": 1800}},
        recurring={"interval": "month"},
    ).id
    fields: dict[str, Any] = {"coupon": coupon} if coupon else {}
    items = [{"price": price, "quantity": quantity}]
    outcome = call("billing.subscriptions.create", customer=customer_id, items=items, **fields)
    assert outcome.id
    return outcome.id


def get(object_id: str, **kwargs: Any) -> dict[str, Any]:
    with read_session() as session:
        return get_object(session, object_id, **kwargs)


def all_lines(invoice_id: str) -> list[dict[str, Any]]:
    """Every line of an invoice, in claim order: ``billing list lines`` page by page (the
    invoice itself shows the first ten)."""
    lines: list[dict[str, Any]] = []
    with read_session() as session:
        while True:
            after = {"starting_after": lines[-1]["id"]} if lines else {}
            page = list_objects(session, "lines", invoice=invoice_id, **after)
            lines += page["data"]
            if not page["has_more"]:
                return lines


def count(table: type[SQLModel], *where: Any) -> int:
    with read_session() as session:
        return session.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def row_counts() -> dict[str, int]:
    """Rows per table, to prove that a refused request wrote nothing."""
    with read_session() as session:
        return {
            table.name: session.execute(select(func.count()).select_from(table)).scalar_one()
            for table in SQLModel.metadata.sorted_tables
        }


def table_contents() -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted: a refused request (or a preview) must leave all of
    them as they were."""
    with read_session() as session:
        return {
            table.name: sorted(
                (
                    tuple(json.dumps(v, sort_keys=True, default=str) for v in row)
                    for row in session.execute(select(table))
                ),
            )
            for table in SQLModel.metadata.sorted_tables
        }


def batched(task_name: str, task_id: str, kwargs: dict[str, Any]) -> Any:
    """A message as a batch task (celery-batches) hands it to ``run_batch``: eager, first delivery."""
    from celery_batches import SimpleRequest

    return SimpleRequest(
        id=task_id,
        name=task_name,
        args=(),
        kwargs=kwargs,
        delivery_info={"is_eager": True},
        hostname="test",
        ignore_result=True,
        reply_to=None,
        correlation_id=None,
        request_dict={},
    )
