"""Bad input, task by task: every refusal is typed, names its field, writes nothing but a dead letter.

Each row builds what it needs through the services (``tests.support``), then sends one
bad payload through the Celery task exactly as the worker receives it (``task.apply``,
eager). The row then proves four things:

- the task failed with a ``BillingError``;
- every table holds exactly the rows it held before (counts and contents), except
  ``task_failures``, which gained exactly one row;
- that row names the task, keeps the payload as sent and records the error's type,
  code and field exactly;
- the operation ran once, or ``1 + missing_reference_retries`` times when the error is
  a missing customer / invoice / credit note that may still be on its way.

Runs on SQLite and PostgreSQL (the ``database`` fixture).
"""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

import worker.tasks.base
from domain.errors import (
    BadRequest,
    BillingError,
    CurrencyLocked,
    IdempotencyConflict,
    NotFound,
    NothingToInvoice,
    SubscriptionCurrencyConflict,
    WrongState,
)
from tasks.ids import new_id
from tasks.operations import REQUESTS
from tests.support import call, customer, invoice, items, row_counts, table_contents
from worker import clock
from worker.app import app
from worker.db import read_session
from worker.services.registry import run
from worker.settings import get_settings
from worker.tables import Customer, Event, Invoice, TaskFailure

pytestmark = pytest.mark.usefixtures("database")

app.loader.import_default_modules()

MISSING_REFERENCE_RETRIES = 1
NOW = 1_800_000_000
"""The clock every row runs at (coupons' ``redeem_by`` is judged against it)."""

Build = Callable[[], dict[str, Any]]


# -- what the rows are made of ----------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    task: str
    build: Build
    """Creates what the row needs through the services and returns the bad payload."""
    error: type[BillingError]
    field: str | None
    retried: bool | None = None
    """Whether the worker retries before recording; by default: a NotFound on a reference field.
    A deleted customer is never retried: it cannot be in flight (README: Failures)."""

    @property
    def runs(self) -> int:
        retried = self.retried
        if retried is None:
            retried = (
                self.error is NotFound and self.field in ("customer", "invoice", "credit_note")
            ) or self.error is NothingToInvoice  # its items may be in flight
        return 1 + MISSING_REFERENCE_RETRIES if retried else 1


def key() -> str:
    return new_id("req")


def unknown(prefix: str) -> str:
    """An id of the right shape that no row carries."""
    return new_id(prefix)


def without(payload: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in names}


def deleted_customer() -> str:
    cus = customer("usd")
    call("billing.customers.delete", customer=cus)
    return cus


def draft_invoice(amount: int = 3000, currency: str = "usd") -> str:
    cus = customer(currency)
    items(cus, currency, [amount])
    return invoice(cus).id


def open_invoice(amount: int = 3000, currency: str = "usd") -> str:
    cus = customer(currency)
    items(cus, currency, [amount])
    inv = invoice(cus, finalize=True).id
    assert status_of(inv) == "open"
    return inv


def paid_invoice(amount: int = 3000) -> str:
    if amount <= 0:  # nothing due: paid at finalization
        cus = customer("usd")
        items(cus, "usd", [amount])
        inv = invoice(cus, finalize=True).id
    else:
        inv = open_invoice(amount)
        call("billing.invoices.pay", invoice=inv)
    assert status_of(inv) == "paid"
    return inv


def uncollectible_invoice() -> str:
    inv = open_invoice()
    call("billing.invoices.mark_uncollectible", invoice=inv)
    return inv


def void_invoice() -> str:
    inv = open_invoice()
    call("billing.invoices.void", invoice=inv)
    return inv


def status_of(invoice_id: str) -> str:
    with read_session() as session:
        row = session.get(Invoice, invoice_id)
        assert row is not None
        return row.status


def credit_note(invoice_id: str, amount: int, **fields: Any) -> str:
    outcome = call("billing.credit_notes.create", invoice=invoice_id, amount=amount, **fields)
    assert outcome.id
    return outcome.id


def coupon(**fields: Any) -> str:
    coupon_id = new_id("co")
    fields.setdefault("percent_off", "10")
    call("billing.coupons.create", id=coupon_id, **fields)
    return coupon_id


def tax_rate(**fields: Any) -> str:
    fields = {"display_name": "VAT", "percentage": "20", "inclusive": False, **fields}
    outcome = call("billing.tax_rates.create", **fields)
    assert outcome.id
    return outcome.id


# -- payloads, valid unless a row changes them ----------------------------------------------


def customer_create(**fields: Any) -> dict[str, Any]:
    return {"id": new_id("cus"), "idempotency_key": key(), "name": "Ada", **fields}


def customer_update(customer_id: str, **fields: Any) -> dict[str, Any]:
    return {"customer": customer_id, "idempotency_key": key(), **fields}


def item_create(customer_id: str | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "id": new_id("ii"),
        "customer": customer_id or customer("usd"),
        "currency": "usd",
        "amount": 1000,
        "idempotency_key": key(),
        **fields,
    }


def batch(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"items": list(entries), "idempotency_key": key()}


def invoice_create(customer_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": new_id("in"), "customer": customer_id, "idempotency_key": key(), **fields}


def with_pending(currency: str = "usd", amount: int = 1000) -> str:
    cus = customer(currency)
    items(cus, currency, [amount])
    return cus


def action(invoice_id: str, **fields: Any) -> dict[str, Any]:
    return {"invoice": invoice_id, "idempotency_key": key(), **fields}


def note_create(invoice_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": new_id("cn"), "invoice": invoice_id, "idempotency_key": key(), **fields}


def note_void(note_id: str) -> dict[str, Any]:
    return {"credit_note": note_id, "idempotency_key": key()}


def balance_create(customer_id: str | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "id": new_id("cbtxn"),
        "customer": customer_id or customer("usd"),
        "amount": -500,
        "idempotency_key": key(),
        **fields,
    }


def coupon_create(**fields: Any) -> dict[str, Any]:
    return {"id": new_id("co"), "idempotency_key": key(), **fields}


def discount_create(customer_id: str, coupon_id: str) -> dict[str, Any]:
    return {"customer": customer_id, "coupon": coupon_id, "idempotency_key": key()}


def tax_rate_create(**fields: Any) -> dict[str, Any]:
    base = {"id": new_id("txr"), "display_name": "VAT", "percentage": "20", "inclusive": False}
    return {**base, "idempotency_key": key(), **fields}


def metadata(keys: int) -> dict[str, str]:
    return {f"k{i}": "v" for i in range(keys)}


# -- rows that need more than one line -------------------------------------------------------


def customer_key_reused_with_other_name() -> dict[str, Any]:
    cus, k = new_id("cus"), key()
    call("billing.customers.create", id=cus, idempotency_key=k, name="Ada")
    return {"id": cus, "idempotency_key": k, "name": "Bea"}


def customer_id_taken_under_another_key() -> dict[str, Any]:
    cus = customer("usd")
    return customer_create(id=cus)


def customer_prefix_taken() -> dict[str, Any]:
    customer("usd", invoice_prefix="ACME")
    return customer_create(invoice_prefix="ACME")


def update_prefix_taken() -> dict[str, Any]:
    customer("usd", invoice_prefix="ACME")
    return customer_update(customer("usd", invoice_prefix="BETA"), invoice_prefix="ACME")


def update_prefix_after_numbered_invoice() -> dict[str, Any]:
    cus = customer("usd", invoice_prefix="ACME")
    items(cus, "usd", [1000])
    invoice(cus, finalize=True)
    return customer_update(cus, invoice_prefix="ACME2")


def item_key_reused_from_customer() -> dict[str, Any]:
    k = key()
    cus = customer("usd", idempotency_key=k)
    return item_create(cus, idempotency_key=k)


def item_id_taken() -> dict[str, Any]:
    cus = customer("usd")
    (existing,) = items(cus, "usd", [1000])
    return item_create(cus, id=existing)


def invoice_id_taken() -> dict[str, Any]:
    cus = with_pending()
    existing = invoice(cus).id
    items(cus, "usd", [500])
    return invoice_create(cus, id=existing)


def invoice_key_reused_with_other_description() -> dict[str, Any]:
    cus = with_pending()
    k = key()
    first = invoice(cus, idempotency_key=k, description="first")
    items(cus, "usd", [500])
    return invoice_create(cus, id=first.id, idempotency_key=k, description="second")


def coupon_at_max_redemptions() -> str:
    cou = coupon(max_redemptions=1)
    call("billing.discounts.create", customer=customer("usd"), coupon=cou)
    return cou


def coupon_past_redeem_by() -> str:
    """Made an hour before the rows' clock, redeemable until a second before it."""
    previous = clock.set_source(lambda: float(NOW - 3600))
    try:
        return coupon(redeem_by=NOW - 1)
    finally:
        clock.set_source(previous)


def note_on_line_of_other_invoice() -> dict[str, Any]:
    other = customer("usd")
    (foreign,) = items(other, "usd", [3000])
    invoice(other, finalize=True)
    inv = open_invoice()
    line = {"type": "invoice_line_item", "invoice_line_item": foreign, "amount": 100}
    return note_create(inv, lines=[line])


def note_line_over_item_amount() -> dict[str, Any]:
    cus = customer("usd")
    first, _ = items(cus, "usd", [1000, 2000])
    inv = invoice(cus, finalize=True).id
    line = {"type": "invoice_line_item", "invoice_line_item": first, "amount": 1001}
    return note_create(inv, lines=[line])


def invoice_line(item_id: str, amount: int) -> dict[str, Any]:
    return {"type": "invoice_line_item", "invoice_line_item": item_id, "amount": amount}


def note_same_line_twice() -> dict[str, Any]:
    """Each line fits the item (1000) on its own; together they credit it 1200."""
    cus = customer("usd")
    first, _ = items(cus, "usd", [1000, 2000])
    inv = invoice(cus, finalize=True).id
    return note_create(inv, lines=[invoice_line(first, 600), invoice_line(first, 600)])


def note_line_credited_again() -> dict[str, Any]:
    """A first note credited 800 of the item's 1000; 800 more would credit it 1600."""
    cus = customer("usd")
    first, _ = items(cus, "usd", [1000, 2000])
    inv = invoice(cus, finalize=True).id
    call(NOTE, invoice=inv, lines=[invoice_line(first, 800)])
    return note_create(inv, lines=[invoice_line(first, 800)])


def note_id_taken() -> dict[str, Any]:
    inv = open_invoice()
    existing = credit_note(inv, 500)
    return note_create(inv, id=existing, amount=500)


def second_note_over_total() -> dict[str, Any]:
    inv = open_invoice(3000)
    credit_note(inv, 2000)
    return note_create(inv, amount=1001)


def void_note_twice() -> dict[str, Any]:
    note = credit_note(open_invoice(), 1000)
    call("billing.credit_notes.void", credit_note=note)
    return note_void(note)


def void_note_on_paid_invoice() -> dict[str, Any]:
    inv = open_invoice()
    note = credit_note(inv, 1000)
    call("billing.invoices.pay", invoice=inv)
    return note_void(note)


def balance_id_taken() -> dict[str, Any]:
    cus = customer("usd")
    existing = call("billing.balance_transactions.create", customer=cus, amount=-500).id
    return balance_create(cus, id=existing)


def balance_key_reused_with_other_amount() -> dict[str, Any]:
    cus = customer("usd")
    k, txn = key(), new_id("cbtxn")
    call("billing.balance_transactions.create", id=txn, customer=cus, amount=-500, idempotency_key=k)
    return balance_create(cus, id=txn, idempotency_key=k, amount=-600)


def coupon_id_taken() -> dict[str, Any]:
    return coupon_create(id=coupon(), percent_off="10")


def tax_rate_id_taken() -> dict[str, Any]:
    return tax_rate_create(id=tax_rate())


def discount_on_customer_without_one() -> dict[str, Any]:
    return {"customer": customer("usd"), "idempotency_key": key()}


def bad_batch_at(index: int, **bad: Any) -> Build:
    def build() -> dict[str, Any]:
        cus = customer("usd")
        entries = [item_create(cus) for _ in range(3)]
        entries[index].update(bad)
        return batch(*entries)

    return build


def batch_with_unknown_customer() -> dict[str, Any]:
    return batch(item_create(unknown("cus")), item_create())


def batch_with_deleted_customer() -> dict[str, Any]:
    return batch(item_create(), item_create(deleted_customer()))


def batch_with_duplicate_ids() -> dict[str, Any]:
    cus = customer("usd")
    first = item_create(cus)
    return batch(first, item_create(cus, id=first["id"]))


def batch_of(size: int) -> dict[str, Any]:
    cus = customer("usd")
    return batch(*(item_create(cus, amount=100) for _ in range(size)))


# -- the catalogue ------------------------------------------------------------------------------

BAD_CURRENCIES = [("USD", "USD"), ("us", "us"), ("xyz", "xyz"), ("int-5", 5)]
BAD_AMOUNTS = [
    ("float-10.5", 10.5),
    ("float-10.0", 10.0),
    ("string-100", "100"),
    ("true", True),
    ("nan", float("nan")),
    ("100_000_000", 100_000_000),
    ("-100_000_000", -100_000_000),
]
TOO_LONG = "x" * 5001

CUSTOMERS_CREATE = "billing.customers.create"
CUSTOMERS_UPDATE = "billing.customers.update"
CUSTOMERS_DELETE = "billing.customers.delete"
ITEM = "billing.invoice_items.create"
ITEMS = "billing.invoice_items.create_many"
INVOICE = "billing.invoices.create"
PENDING = "billing.invoices.create_for_pending"
FINALIZE = "billing.invoices.finalize"
VOID = "billing.invoices.void"
PAY = "billing.invoices.pay"
UNCOLLECTIBLE = "billing.invoices.mark_uncollectible"
DELETE = "billing.invoices.delete"
NOTE = "billing.credit_notes.create"
NOTE_VOID = "billing.credit_notes.void"
BALANCE = "billing.balance_transactions.create"
COUPON = "billing.coupons.create"
DISCOUNT = "billing.discounts.create"
DISCOUNT_DELETE = "billing.discounts.delete"
TAX_RATE = "billing.tax_rates.create"
RENDER = "billing.documents.render"
EMAIL = "billing.documents.email"


def cases() -> list[Case]:
    rows: list[Case] = []

    def row(
        label: str,
        task: str,
        build: Build,
        error: type[BillingError],
        field: str | None,
        *,
        retried: bool | None = None,
    ) -> None:
        rows.append(Case(f"{task.removeprefix('billing.')}:{label}", task, build, error, field, retried))

    # customers.create
    row("extra-field", CUSTOMERS_CREATE, lambda: customer_create(nickname="ada"), BadRequest, "nickname")
    row("missing-id", CUSTOMERS_CREATE, lambda: without(customer_create(), "id"), BadRequest, "id")
    row(
        "missing-idempotency-key",
        CUSTOMERS_CREATE,
        lambda: without(customer_create(), "idempotency_key"),
        BadRequest,
        "idempotency_key",
    )
    row(
        "empty-idempotency-key",
        CUSTOMERS_CREATE,
        lambda: customer_create(idempotency_key=""),
        BadRequest,
        "idempotency_key",
    )
    row("id-of-an-invoice", CUSTOMERS_CREATE, lambda: customer_create(id=new_id("in")), BadRequest, "id")
    for label, code in BAD_CURRENCIES:
        row(
            f"currency-{label}",
            CUSTOMERS_CREATE,
            lambda c=code: customer_create(currency=c),
            BadRequest,
            "currency",
        )
    row(
        "description-5001",
        CUSTOMERS_CREATE,
        lambda: customer_create(description=TOO_LONG),
        BadRequest,
        "description",
    )
    row(
        "metadata-51-keys",
        CUSTOMERS_CREATE,
        lambda: customer_create(metadata=metadata(51)),
        BadRequest,
        "metadata",
    )
    row(
        "email-without-at",
        CUSTOMERS_CREATE,
        lambda: customer_create(email="ada.example.com"),
        BadRequest,
        "email",
    )
    row(
        "address-country-lowercase",
        CUSTOMERS_CREATE,
        lambda: customer_create(address={"country": "us"}),
        BadRequest,
        "address.country",
    )
    row(
        "tax-id-type-unknown",
        CUSTOMERS_CREATE,
        lambda: customer_create(tax_id_data=[{"type": "xx_vat", "value": "1"}]),
        BadRequest,
        "tax_id_data[0].type",
    )
    row(
        "tax-id-given-twice",
        CUSTOMERS_CREATE,
        lambda: customer_create(tax_id_data=[{"type": "eu_vat", "value": "DE123456789"}] * 2),
        BadRequest,
        "tax_id_data[1]",
    )
    row(
        "extra-field-camel-case",
        CUSTOMERS_CREATE,
        lambda: customer_create(customerId="x"),
        BadRequest,
        "customerId",
    )
    row(
        "idempotency-key-256",
        CUSTOMERS_CREATE,
        lambda: customer_create(idempotency_key="k" * 256),
        BadRequest,
        "idempotency_key",
    )
    row(
        "address-line1-501",
        CUSTOMERS_CREATE,
        lambda: customer_create(address={"line1": "x" * 501}),
        BadRequest,
        "address.line1",
    )
    row(
        "shipping-without-address",
        CUSTOMERS_CREATE,
        lambda: customer_create(shipping={"name": "Ada"}),
        BadRequest,
        "shipping.address",
    )
    row(
        "tax-id-eu-vat-without-country",
        CUSTOMERS_CREATE,
        lambda: customer_create(tax_id_data=[{"type": "eu_vat", "value": "123456789"}]),
        BadRequest,
        "tax_id_data[0].value",
    )
    row(
        "tax-id-us-ein-letters",
        CUSTOMERS_CREATE,
        lambda: customer_create(tax_id_data=[{"type": "us_ein", "value": "12-ABCDEFG"}]),
        BadRequest,
        "tax_id_data[0].value",
    )
    row(
        "shipping-address-country-name",
        CUSTOMERS_CREATE,
        lambda: customer_create(
            shipping={"name": "Depot", "address": {"line1": "1 rue", "country": "France"}}
        ),
        BadRequest,
        "shipping.address.country",
    )
    row(
        "preferred-locale-underscore",
        CUSTOMERS_CREATE,
        lambda: customer_create(preferred_locales=["en_US"]),
        BadRequest,
        "preferred_locales[0]",
    )
    row(
        "preferred-locale-two-regions",
        CUSTOMERS_CREATE,
        lambda: customer_create(preferred_locales=["fr-CA", "de-DE-DE"]),
        BadRequest,
        "preferred_locales[1]",
    )
    row(
        "preferred-locale-dangling-hyphen",
        CUSTOMERS_UPDATE,
        lambda: customer_update(customer("usd"), preferred_locales=["en-"]),
        BadRequest,
        "preferred_locales[0]",
    )
    row(
        "metadata-key-with-brackets",
        CUSTOMERS_CREATE,
        lambda: customer_create(metadata={"a[b]": "x"}),
        BadRequest,
        "metadata",
    )
    row(
        "tax-exempt-unknown",
        CUSTOMERS_CREATE,
        lambda: customer_create(tax_exempt="yes"),
        BadRequest,
        "tax_exempt",
    )
    row("invoice-prefix-taken", CUSTOMERS_CREATE, customer_prefix_taken, BadRequest, "invoice_prefix")
    row(
        "invoice-prefix-lowercase",
        CUSTOMERS_CREATE,
        lambda: customer_create(invoice_prefix="acme"),
        BadRequest,
        "invoice_prefix",
    )
    row("id-taken-under-another-key", CUSTOMERS_CREATE, customer_id_taken_under_another_key, BadRequest, "id")
    row(
        "key-reused-with-other-name",
        CUSTOMERS_CREATE,
        customer_key_reused_with_other_name,
        IdempotencyConflict,
        "idempotency_key",
    )

    # customers.update
    row(
        "unknown-customer",
        CUSTOMERS_UPDATE,
        lambda: customer_update(unknown("cus"), name="B"),
        NotFound,
        "customer",
    )
    row(
        "deleted-customer",
        CUSTOMERS_UPDATE,
        lambda: customer_update(deleted_customer(), name="B"),
        NotFound,
        "customer",
        retried=False,
    )
    row(
        "currency-locked-usd-to-eur",
        CUSTOMERS_UPDATE,
        lambda: customer_update(customer("usd"), currency="eur"),
        CurrencyLocked,
        "currency",
    )
    row(
        "currency-USD",
        CUSTOMERS_UPDATE,
        lambda: customer_update(customer(None), currency="USD"),
        BadRequest,
        "currency",
    )
    row(
        "extra-field",
        CUSTOMERS_UPDATE,
        lambda: customer_update(customer("usd"), balance=-500),
        BadRequest,
        "balance",
    )
    row(
        "missing-customer",
        CUSTOMERS_UPDATE,
        lambda: {"idempotency_key": key(), "name": "B"},
        BadRequest,
        "customer",
    )
    row("invoice-prefix-taken", CUSTOMERS_UPDATE, update_prefix_taken, BadRequest, "invoice_prefix")
    row(
        "invoice-prefix-after-numbered-invoice",
        CUSTOMERS_UPDATE,
        update_prefix_after_numbered_invoice,
        BadRequest,
        "invoice_prefix",
    )

    # customers.delete
    row("unknown-customer", CUSTOMERS_DELETE, lambda: customer_update(unknown("cus")), NotFound, "customer")
    row(
        "deleted-twice", CUSTOMERS_DELETE, lambda: customer_update(deleted_customer()), NotFound, "customer",
        retried=False,
    )  # fmt: skip
    row("missing-customer", CUSTOMERS_DELETE, lambda: {"idempotency_key": key()}, BadRequest, "customer")
    row(
        "customer-id-of-an-item",
        CUSTOMERS_DELETE,
        lambda: customer_update(new_id("ii")),
        BadRequest,
        "customer",
    )

    # invoice_items.create
    row("unknown-customer", ITEM, lambda: item_create(unknown("cus")), NotFound, "customer")
    row(
        "deleted-customer", ITEM, lambda: item_create(deleted_customer()), NotFound, "customer", retried=False
    )
    for label, code in BAD_CURRENCIES:
        row(f"currency-{label}", ITEM, lambda c=code: item_create(currency=c), BadRequest, "currency")
    for label, amount in BAD_AMOUNTS:
        row(f"amount-{label}", ITEM, lambda a=amount: item_create(amount=a), BadRequest, "amount")
    row(
        "kwd-amount-1005",
        ITEM,
        lambda: item_create(customer("kwd"), currency="kwd", amount=1005),
        BadRequest,
        "amount",
    )
    row(
        "isk-amount-150",
        ITEM,
        lambda: item_create(customer("isk"), currency="isk", amount=150),
        BadRequest,
        "amount",
    )
    row(
        "kwd-default-currency-amount-1005",
        ITEM,
        lambda: without(item_create(customer("kwd"), amount=1005), "currency"),
        BadRequest,
        "amount",
    )
    row(
        "no-currency-anywhere",
        ITEM,
        lambda: without(item_create(customer(None)), "currency"),
        BadRequest,
        "currency",
    )
    row("amount-and-unit-amount", ITEM, lambda: item_create(unit_amount=500), BadRequest, "amount")
    row(
        "neither-amount-nor-unit-amount", ITEM, lambda: without(item_create(), "amount"), BadRequest, "amount"
    )
    row("quantity-with-amount", ITEM, lambda: item_create(quantity=2), BadRequest, "quantity")
    row(
        "quantity-0",
        ITEM,
        lambda: without(item_create(unit_amount=100, quantity=0), "amount"),
        BadRequest,
        "quantity",
    )
    row(
        "unit-amount-times-quantity-over-max",
        ITEM,
        lambda: without(item_create(unit_amount=50_000_000, quantity=2), "amount"),
        BadRequest,
        "unit_amount",
    )
    row("extra-field", ITEM, lambda: item_create(price="price_1"), BadRequest, "price")
    row(
        "extra-field-with-a-hyphen",
        ITEM,
        lambda: item_create(**{"unit-amount": 100}),
        BadRequest,
        "unit-amount",
    )
    row("missing-customer", ITEM, lambda: without(item_create(), "customer"), BadRequest, "customer")
    row("description-5001", ITEM, lambda: item_create(description=TOO_LONG), BadRequest, "description")
    row("metadata-51-keys", ITEM, lambda: item_create(metadata=metadata(51)), BadRequest, "metadata")
    row("metadata-value-not-a-string", ITEM, lambda: item_create(metadata={"n": 1}), BadRequest, "metadata")
    row(
        "period-end-before-start",
        ITEM,
        lambda: item_create(period={"start": 200, "end": 100}),
        BadRequest,
        "period.end",
    )
    row(
        "period-start-a-string",
        ITEM,
        lambda: item_create(period={"start": "1", "end": 100}),
        BadRequest,
        "period.start",
    )
    row("unknown-tax-rate", ITEM, lambda: item_create(tax_rates=[unknown("txr")]), NotFound, "tax_rates[0]")
    row(
        "inactive-tax-rate",
        ITEM,
        lambda: item_create(tax_rates=[tax_rate(active=False)]),
        NotFound,
        "tax_rates[0]",
    )
    row(
        "six-tax-rates",
        ITEM,
        lambda: item_create(tax_rates=[unknown("txr") for _ in range(6)]),
        BadRequest,
        "tax_rates",
    )
    row("id-taken-under-another-key", ITEM, item_id_taken, BadRequest, "id")
    row(
        "key-reused-from-a-customer",
        ITEM,
        item_key_reused_from_customer,
        IdempotencyConflict,
        "idempotency_key",
    )

    # invoice_items.create_many
    row("1001-items", ITEMS, lambda: batch_of(1001), BadRequest, "items")
    row("no-items", ITEMS, lambda: batch(), BadRequest, "items")
    row("float-amount-at-1", ITEMS, bad_batch_at(1, amount=10.5), BadRequest, "items[1].amount")
    row("bad-currency-at-2", ITEMS, bad_batch_at(2, currency="USD"), BadRequest, "items[2].currency")
    row(
        "kwd-amount-1005-at-0",
        ITEMS,
        bad_batch_at(0, currency="kwd", amount=1005),
        BadRequest,
        "items[0].amount",
    )
    row("extra-field-at-1", ITEMS, bad_batch_at(1, price="price_1"), BadRequest, "items[1].price")
    row(
        "period-end-before-start-at-0",
        ITEMS,
        bad_batch_at(0, period={"start": 2, "end": 1}),
        BadRequest,
        "items[0].period.end",
    )
    # the batch's customer may be on its way in another queue, as for a single item
    row(
        "unknown-customer-at-0",
        ITEMS,
        batch_with_unknown_customer,
        NotFound,
        "items[0].customer",
        retried=True,
    )
    row(
        "deleted-customer-at-1",
        ITEMS,
        batch_with_deleted_customer,
        NotFound,
        "items[1].customer",
        retried=False,
    )
    row("duplicate-id-at-1", ITEMS, batch_with_duplicate_ids, BadRequest, "items[1].id")
    row(
        "missing-idempotency-key",
        ITEMS,
        lambda: without(batch(item_create()), "idempotency_key"),
        BadRequest,
        "idempotency_key",
    )
    row(
        "items-not-a-list",
        ITEMS,
        lambda: {"items": item_create(), "idempotency_key": key()},
        BadRequest,
        "items",
    )

    # invoices.create
    row("unknown-customer", INVOICE, lambda: invoice_create(unknown("cus")), NotFound, "customer")
    row(
        "deleted-customer",
        INVOICE,
        lambda: invoice_create(deleted_customer()),
        NotFound,
        "customer",
        retried=False,
    )
    row("nothing-to-invoice", INVOICE, lambda: invoice_create(customer("usd")), NothingToInvoice, "customer")
    row(
        "nothing-pending-in-that-currency",
        INVOICE,
        lambda: invoice_create(with_pending("usd"), currency="eur"),
        NothingToInvoice,
        "customer",
    )
    row("no-currency-anywhere", INVOICE, lambda: invoice_create(customer(None)), BadRequest, "currency")
    for label, code in BAD_CURRENCIES:
        row(
            f"currency-{label}",
            INVOICE,
            lambda c=code: invoice_create(with_pending(), currency=c),
            BadRequest,
            "currency",
        )
    row(
        "send-invoice-without-days-until-due",
        INVOICE,
        lambda: invoice_create(with_pending(), collection_method="send_invoice"),
        BadRequest,
        "days_until_due",
    )
    row(
        "days-until-due-when-charging-automatically",
        INVOICE,
        lambda: invoice_create(with_pending(), days_until_due=30),
        BadRequest,
        "days_until_due",
    )
    row(
        "days-until-due-and-due-date",
        INVOICE,
        lambda: invoice_create(
            with_pending(), collection_method="send_invoice", days_until_due=30, due_date=NOW + 86_400
        ),
        BadRequest,
        "due_date",
    )
    row(
        "days-until-due-float",
        INVOICE,
        lambda: invoice_create(with_pending(), collection_method="send_invoice", days_until_due=30.0),
        BadRequest,
        "days_until_due",
    )
    row(
        "unknown-coupon",
        INVOICE,
        lambda: invoice_create(with_pending(), discounts=[{"coupon": "NOPE"}]),
        NotFound,
        "discounts[0].coupon",
    )
    row(
        "coupon-at-max-redemptions",
        INVOICE,
        lambda: invoice_create(with_pending(), discounts=[{"coupon": coupon_at_max_redemptions()}]),
        BadRequest,
        "discounts[0].coupon",
    )
    row(
        "coupon-past-redeem-by",
        INVOICE,
        lambda: invoice_create(with_pending(), discounts=[{"coupon": coupon_past_redeem_by()}]),
        BadRequest,
        "discounts[0].coupon",
    )
    row(
        "unknown-default-tax-rate",
        INVOICE,
        lambda: invoice_create(with_pending(), default_tax_rates=[unknown("txr")]),
        NotFound,
        "default_tax_rates[0]",
    )
    row(
        "metadata-51-keys",
        INVOICE,
        lambda: invoice_create(with_pending(), metadata=metadata(51)),
        BadRequest,
        "metadata",
    )
    row("footer-5001", INVOICE, lambda: invoice_create(with_pending(), footer=TOO_LONG), BadRequest, "footer")
    row(
        "extra-field",
        INVOICE,
        lambda: invoice_create(with_pending(), subscription="sub_1"),
        BadRequest,
        "subscription",
    )
    row(
        "missing-customer",
        INVOICE,
        lambda: without(invoice_create(with_pending()), "customer"),
        BadRequest,
        "customer",
    )
    row(
        "collection-method-unknown",
        INVOICE,
        lambda: invoice_create(with_pending(), collection_method="invoice"),
        BadRequest,
        "collection_method",
    )
    row(
        "21-discounts",
        INVOICE,
        lambda: invoice_create(with_pending(), discounts=[{"coupon": "A"}] * 21),
        BadRequest,
        "discounts",
    )
    row("part-0", INVOICE, lambda: invoice_create(with_pending(), part=0), BadRequest, "part")
    row("id-taken-under-another-key", INVOICE, invoice_id_taken, BadRequest, "id")
    row(
        "key-reused-with-other-description",
        INVOICE,
        invoice_key_reused_with_other_description,
        IdempotencyConflict,
        "idempotency_key",
    )

    # invoices.create_for_pending
    row(
        "unknown-customer",
        PENDING,
        lambda: without(invoice_create(unknown("cus")), "id"),
        NotFound,
        "customer",
    )
    row(
        "deleted-customer",
        PENDING,
        lambda: without(invoice_create(deleted_customer()), "id"),
        NotFound,
        "customer",
        retried=False,
    )
    row("extra-field-id", PENDING, lambda: invoice_create(with_pending()), BadRequest, "id")
    row(
        "send-invoice-without-days-until-due",
        PENDING,
        lambda: without(invoice_create(with_pending(), collection_method="send_invoice"), "id"),
        BadRequest,
        "days_until_due",
    )
    row(
        "currency-USD",
        PENDING,
        lambda: without(invoice_create(with_pending(), currency="USD"), "id"),
        BadRequest,
        "currency",
    )

    # invoices.finalize / void / pay / mark_uncollectible / delete
    def finalized_twice() -> dict[str, Any]:
        inv = draft_invoice()
        call(FINALIZE, invoice=inv)
        return action(inv)

    row("finalize-twice", FINALIZE, finalized_twice, WrongState, "invoice")
    row("void-invoice", FINALIZE, lambda: action(void_invoice()), WrongState, "invoice")
    row("unknown-invoice", FINALIZE, lambda: action(unknown("in")), NotFound, "invoice")
    row(
        "extra-field",
        FINALIZE,
        lambda: action(draft_invoice(), auto_advance=True),
        BadRequest,
        "auto_advance",
    )
    row("invoice-id-of-a-customer", FINALIZE, lambda: action(new_id("cus")), BadRequest, "invoice")
    row("paid-invoice", VOID, lambda: action(paid_invoice()), WrongState, "invoice")
    row("draft-invoice", VOID, lambda: action(draft_invoice()), WrongState, "invoice")
    row("void-twice", VOID, lambda: action(void_invoice()), WrongState, "invoice")
    row("unknown-invoice", VOID, lambda: action(unknown("in")), NotFound, "invoice")
    row("draft-invoice", PAY, lambda: action(draft_invoice()), WrongState, "invoice")
    row("paid-twice", PAY, lambda: action(paid_invoice()), WrongState, "invoice")
    row("void-invoice", PAY, lambda: action(void_invoice()), WrongState, "invoice")
    row(
        "paid-out-of-band-false",
        PAY,
        lambda: action(open_invoice(), paid_out_of_band=False),
        BadRequest,
        "paid_out_of_band",
    )
    row("missing-invoice", PAY, lambda: {"idempotency_key": key()}, BadRequest, "invoice")
    row("draft-invoice", UNCOLLECTIBLE, lambda: action(draft_invoice()), WrongState, "invoice")
    row("paid-invoice", UNCOLLECTIBLE, lambda: action(paid_invoice()), WrongState, "invoice")
    row("uncollectible-twice", UNCOLLECTIBLE, lambda: action(uncollectible_invoice()), WrongState, "invoice")
    row("unknown-invoice", UNCOLLECTIBLE, lambda: action(unknown("in")), NotFound, "invoice")
    row("finalized-invoice", DELETE, lambda: action(open_invoice()), WrongState, "invoice")
    row("paid-invoice", DELETE, lambda: action(paid_invoice()), WrongState, "invoice")
    row("void-invoice", DELETE, lambda: action(void_invoice()), WrongState, "invoice")
    row("unknown-invoice", DELETE, lambda: action(unknown("in")), NotFound, "invoice")

    def deleted_draft() -> dict[str, Any]:
        inv = draft_invoice()
        call(DELETE, invoice=inv)
        return action(inv)

    row("deleted-twice", DELETE, deleted_draft, NotFound, "invoice")

    # credit_notes.create
    row(
        "over-the-total-3001-of-3000",
        NOTE,
        lambda: note_create(open_invoice(3000), amount=3001),
        BadRequest,
        "amount",
    )
    row("second-note-over-the-total", NOTE, second_note_over_total, BadRequest, "amount")
    row(
        "over-the-total-of-a-paid-invoice",
        NOTE,
        lambda: note_create(paid_invoice(3000), amount=3001),
        BadRequest,
        "amount",
    )
    row("draft-invoice", NOTE, lambda: note_create(draft_invoice(), amount=100), WrongState, "invoice")
    row("void-invoice", NOTE, lambda: note_create(void_invoice(), amount=100), WrongState, "invoice")
    row(
        "uncollectible-invoice",
        NOTE,
        lambda: note_create(uncollectible_invoice(), amount=100),
        WrongState,
        "invoice",
    )
    row(
        "negative-total-nothing-creditable",
        NOTE,
        lambda: note_create(paid_invoice(-500), amount=100),
        BadRequest,
        "amount",
    )
    row("unknown-invoice", NOTE, lambda: note_create(unknown("in"), amount=100), NotFound, "invoice")
    for label, amount in [*BAD_AMOUNTS, ("zero", 0), ("negative", -100)]:
        row(
            f"amount-{label}",
            NOTE,
            lambda a=amount: note_create(open_invoice(), amount=a),
            BadRequest,
            "amount",
        )
    row(
        "kwd-amount-1005",
        NOTE,
        lambda: note_create(open_invoice(3000, "kwd"), amount=1005),
        BadRequest,
        "amount",
    )
    row("no-amount-no-lines", NOTE, lambda: note_create(open_invoice()), BadRequest, "amount")
    row(
        "amount-differs-from-lines",
        NOTE,
        lambda: note_create(open_invoice(), amount=500, lines=[{"type": "custom_line_item", "amount": 400}]),
        BadRequest,
        "amount",
    )
    row(
        "refund-on-an-open-invoice",
        NOTE,
        lambda: note_create(open_invoice(), amount=500, refund_amount=500),
        BadRequest,
        "refund_amount",
    )
    row(
        "settlement-not-summing-to-amount",
        NOTE,
        lambda: note_create(paid_invoice(), amount=500, refund_amount=200, credit_amount=200),
        BadRequest,
        "amount",
    )
    row(
        "line-of-another-invoice", NOTE, note_on_line_of_other_invoice, NotFound, "lines[0].invoice_line_item"
    )
    row("line-over-its-item", NOTE, note_line_over_item_amount, BadRequest, "lines[0].amount")
    row("same-line-twice-over-its-item", NOTE, note_same_line_twice, BadRequest, "lines[1].amount")
    row("line-credited-again-over-its-item", NOTE, note_line_credited_again, BadRequest, "lines[0].amount")
    row(
        "custom-line-naming-an-item",
        NOTE,
        lambda: note_create(
            open_invoice(),
            lines=[{"type": "custom_line_item", "invoice_line_item": new_id("ii"), "amount": 100}],
        ),
        BadRequest,
        "lines[0].invoice_line_item",
    )
    row(
        "reason-unknown",
        NOTE,
        lambda: note_create(open_invoice(), amount=100, reason="goodwill"),
        BadRequest,
        "reason",
    )
    row("memo-5001", NOTE, lambda: note_create(open_invoice(), amount=100, memo=TOO_LONG), BadRequest, "memo")
    row("id-taken-under-another-key", NOTE, note_id_taken, BadRequest, "id")

    # credit_notes.void
    row("void-twice", NOTE_VOID, void_note_twice, WrongState, "credit_note")
    row("invoice-paid", NOTE_VOID, void_note_on_paid_invoice, WrongState, "credit_note")
    row("unknown-credit-note", NOTE_VOID, lambda: note_void(unknown("cn")), NotFound, "credit_note")
    row("extra-field", NOTE_VOID, lambda: {**note_void(unknown("cn")), "reason": "x"}, BadRequest, "reason")

    # balance_transactions.create
    row("unknown-customer", BALANCE, lambda: balance_create(unknown("cus")), NotFound, "customer")
    row(
        "deleted-customer",
        BALANCE,
        lambda: balance_create(deleted_customer()),
        NotFound,
        "customer",
        retried=False,
    )
    for label, amount in [*BAD_AMOUNTS, ("zero", 0)]:
        row(f"amount-{label}", BALANCE, lambda a=amount: balance_create(amount=a), BadRequest, "amount")
    row(
        "kwd-amount-1005",
        BALANCE,
        lambda: balance_create(customer("kwd"), amount=-1005),
        BadRequest,
        "amount",
    )
    row(
        "isk-amount-150",
        BALANCE,
        lambda: balance_create(customer("usd"), currency="isk", amount=150),
        BadRequest,
        "amount",
    )
    row("no-currency-anywhere", BALANCE, lambda: balance_create(customer(None)), BadRequest, "currency")
    for label, code in BAD_CURRENCIES:
        row(f"currency-{label}", BALANCE, lambda c=code: balance_create(currency=c), BadRequest, "currency")
    row("description-501", BALANCE, lambda: balance_create(description="x" * 501), BadRequest, "description")
    row("extra-field", BALANCE, lambda: balance_create(type="credit_note"), BadRequest, "type")
    row("id-taken-under-another-key", BALANCE, balance_id_taken, BadRequest, "id")
    row(
        "key-reused-with-other-amount",
        BALANCE,
        balance_key_reused_with_other_amount,
        IdempotencyConflict,
        "idempotency_key",
    )

    # coupons.create
    row("amount-off-without-currency", COUPON, lambda: coupon_create(amount_off=500), BadRequest, "currency")
    row(
        "percent-off-and-amount-off",
        COUPON,
        lambda: coupon_create(percent_off="10", amount_off=500, currency="usd"),
        BadRequest,
        "percent_off",
    )
    row("neither-percent-nor-amount", COUPON, lambda: coupon_create(), BadRequest, "percent_off")
    row("percent-off-0", COUPON, lambda: coupon_create(percent_off=0), BadRequest, "percent_off")
    row("percent-off-100.5", COUPON, lambda: coupon_create(percent_off="100.5"), BadRequest, "percent_off")
    row("percent-off-nan", COUPON, lambda: coupon_create(percent_off="NaN"), BadRequest, "percent_off")
    row(
        "currency-with-percent-off",
        COUPON,
        lambda: coupon_create(percent_off="10", currency="usd"),
        BadRequest,
        "currency",
    )
    row(
        "amount-off-float",
        COUPON,
        lambda: coupon_create(amount_off=5.0, currency="usd"),
        BadRequest,
        "amount_off",
    )
    row(
        "amount-off-currency-USD",
        COUPON,
        lambda: coupon_create(amount_off=500, currency="USD"),
        BadRequest,
        "currency",
    )
    row(
        "kwd-amount-off-1005",
        COUPON,
        lambda: coupon_create(amount_off=1005, currency="kwd"),
        BadRequest,
        "amount_off",
    )
    row(
        "kwd-currency-option-1005",
        COUPON,
        lambda: coupon_create(amount_off=500, currency="usd", currency_options={"kwd": {"amount_off": 1005}}),
        BadRequest,
        "currency_options.kwd.amount_off",
    )
    row(
        "currency-option-USD",
        COUPON,
        lambda: coupon_create(amount_off=500, currency="usd", currency_options={"USD": {"amount_off": 5}}),
        BadRequest,
        "currency_options.USD",
    )
    row(
        "repeating-without-months",
        COUPON,
        lambda: coupon_create(percent_off="10", duration="repeating"),
        BadRequest,
        "duration_in_months",
    )
    row(
        "max-redemptions-0",
        COUPON,
        lambda: coupon_create(percent_off="10", max_redemptions=0),
        BadRequest,
        "max_redemptions",
    )
    row("id-with-a-space", COUPON, lambda: coupon_create(id="SUMMER 25", percent_off="10"), BadRequest, "id")
    row("id-taken-under-another-key", COUPON, coupon_id_taken, BadRequest, "id")

    # discounts.create / delete
    row("unknown-customer", DISCOUNT, lambda: discount_create(unknown("cus"), coupon()), NotFound, "customer")
    row(
        "deleted-customer",
        DISCOUNT,
        lambda: discount_create(deleted_customer(), coupon()),
        NotFound,
        "customer",
        retried=False,
    )
    row("unknown-coupon", DISCOUNT, lambda: discount_create(customer("usd"), "NOPE"), NotFound, "coupon")
    row(
        "coupon-past-redeem-by",
        DISCOUNT,
        lambda: discount_create(customer("usd"), coupon_past_redeem_by()),
        BadRequest,
        "coupon",
    )
    row(
        "coupon-at-max-redemptions",
        DISCOUNT,
        lambda: discount_create(customer("usd"), coupon_at_max_redemptions()),
        BadRequest,
        "coupon",
    )
    row(
        "extra-field",
        DISCOUNT,
        lambda: {**discount_create(customer("usd"), coupon()), "end": NOW},
        BadRequest,
        "end",
    )
    row(
        "unknown-customer",
        DISCOUNT_DELETE,
        lambda: {"customer": unknown("cus"), "idempotency_key": key()},
        NotFound,
        "customer",
    )
    row("customer-without-discount", DISCOUNT_DELETE, discount_on_customer_without_one, NotFound, "customer")
    row("missing-customer", DISCOUNT_DELETE, lambda: {"idempotency_key": key()}, BadRequest, "customer")

    # tax_rates.create
    row("percentage-101", TAX_RATE, lambda: tax_rate_create(percentage="101"), BadRequest, "percentage")
    row(
        "percentage-5-decimals",
        TAX_RATE,
        lambda: tax_rate_create(percentage="8.12345"),
        BadRequest,
        "percentage",
    )
    row("percentage-negative", TAX_RATE, lambda: tax_rate_create(percentage="-1"), BadRequest, "percentage")
    row(
        "percentage-nan", TAX_RATE, lambda: tax_rate_create(percentage=float("nan")), BadRequest, "percentage"
    )
    row("percentage-true", TAX_RATE, lambda: tax_rate_create(percentage=True), BadRequest, "percentage")
    row(
        "missing-inclusive",
        TAX_RATE,
        lambda: without(tax_rate_create(), "inclusive"),
        BadRequest,
        "inclusive",
    )
    row("display-name-empty", TAX_RATE, lambda: tax_rate_create(display_name=""), BadRequest, "display_name")
    row("country-lowercase", TAX_RATE, lambda: tax_rate_create(country="de"), BadRequest, "country")
    row("extra-field", TAX_RATE, lambda: tax_rate_create(tax_type="vat"), BadRequest, "tax_type")
    row("id-taken-under-another-key", TAX_RATE, tax_rate_id_taken, BadRequest, "id")

    # documents.render, documents.email (follow-ups; anyone may still send them)
    def document(**fields: Any) -> dict[str, Any]:
        return {"idempotency_key": key(), **fields}

    row(
        "both-objects",
        RENDER,
        lambda: document(invoice=unknown("in"), credit_note=unknown("cn")),
        BadRequest,
        "invoice",
    )
    row("no-object", RENDER, document, BadRequest, "invoice")
    row("draft-invoice", RENDER, lambda: document(invoice=draft_invoice()), WrongState, "invoice")
    row("unknown-credit-note", RENDER, lambda: document(credit_note=unknown("cn")), NotFound, "credit_note")
    row("not-rendered-yet", EMAIL, lambda: document(invoice=open_invoice()), NotFound, "invoice")

    return rows


# -- products, prices, subscriptions, test clocks ---------------------------------------------------

PRODUCT = "billing.products.create"
PRICE = "billing.prices.create"
SUBSCRIBE = "billing.subscriptions.create"
CANCEL = "billing.subscriptions.cancel"
CHANGE_CURRENCY = "billing.subscriptions.change_currency"
RENEW = "billing.subscriptions.renew"
CLOCK = "billing.test_clocks.create"
ADVANCE = "billing.test_clocks.advance"
MONTH = 31 * 86_400
IN_FLIGHT = ("product", "price", "subscription", "test_clock")


def product() -> str:
    outcome = call(PRODUCT, name="Pro")
    assert outcome.id
    return outcome.id


def price(currency: str = "usd", unit_amount: int = 1000, **fields: Any) -> str:
    fields.setdefault("recurring", {"interval": "month"})
    outcome = call(PRICE, product=product(), currency=currency, unit_amount=unit_amount, **fields)
    assert outcome.id
    return outcome.id


def product_create(**fields: Any) -> dict[str, Any]:
    return {"id": new_id("prod"), "name": "Pro", "idempotency_key": key(), **fields}


def price_create(**fields: Any) -> dict[str, Any]:
    base = {"id": new_id("price"), "product": product(), "currency": "usd", "unit_amount": 1000}
    return {**base, "recurring": {"interval": "month"}, "idempotency_key": key(), **fields}


def subscribe(customer_id: str | None = None, *prices: str, **fields: Any) -> dict[str, Any]:
    lines = [{"price": p, "quantity": 1} for p in prices or (price(),)]
    base = {"id": new_id("sub"), "customer": customer_id or customer("usd"), "items": lines}
    return {**base, "idempotency_key": key(), **fields}


def subscription(customer_id: str | None = None, *prices: str) -> str:
    payload = subscribe(customer_id, *prices)
    call(SUBSCRIBE, **payload)
    return payload["id"]


def canceled_subscription() -> str:
    sub = subscription()
    call(CANCEL, subscription=sub)
    return sub


def renew(subscription_id: str, period_start: int) -> dict[str, Any]:
    return {"subscription": subscription_id, "period_start": period_start, "idempotency_key": key()}


def sandbox_clock(frozen_time: int = NOW) -> str:
    outcome = call(CLOCK, frozen_time=frozen_time)
    assert outcome.id
    return outcome.id


def subscription_cases() -> list[Case]:
    rows: list[Case] = []

    def row(
        label: str,
        task: str,
        build: Build,
        error: type[BillingError],
        field: str | None,
        retried: bool = True,
    ) -> None:
        # a product, price, subscription or test clock may be in flight too: retried like a customer
        # (a deleted customer is not: ``retried=False``)
        in_flight = error is NotFound and field is not None and field.rpartition(".")[2] in IN_FLIGHT
        rows.append(
            Case(
                f"{task.removeprefix('billing.')}:{label}", task, build, error, field,
                (in_flight or None) if retried else False,
            )
        )  # fmt: skip

    row("missing-name", PRODUCT, lambda: without(product_create(), "name"), BadRequest, "name")
    row("name-empty", PRODUCT, lambda: product_create(name=""), BadRequest, "name")
    row("id-of-a-price", PRODUCT, lambda: product_create(id=new_id("price")), BadRequest, "id")
    row("extra-field", PRODUCT, lambda: product_create(url="https://x"), BadRequest, "url")
    row("id-taken", PRODUCT, lambda: product_create(id=product()), BadRequest, "id")

    row("unknown-product", PRICE, lambda: price_create(product=unknown("prod")), NotFound, "product")
    row("unit-amount-float", PRICE, lambda: price_create(unit_amount=10.5), BadRequest, "unit_amount")
    row("unit-amount-negative", PRICE, lambda: price_create(unit_amount=-1), BadRequest, "unit_amount")
    row(
        "unit-amount-off-step",
        PRICE,
        lambda: price_create(currency="kwd", unit_amount=15),
        BadRequest,
        "unit_amount",
    )
    row("currency-uppercase", PRICE, lambda: price_create(currency="USD"), BadRequest, "currency")
    row(
        "option-in-own-currency",
        PRICE,
        lambda: price_create(currency_options={"usd": {"unit_amount": 900}}),
        BadRequest,
        "currency_options",
    )
    row(
        "option-amount-negative",
        PRICE,
        lambda: price_create(currency_options={"eur": {"unit_amount": -5}}),
        BadRequest,
        "currency_options.eur.unit_amount",
    )
    row(
        "option-unknown-currency",
        PRICE,
        lambda: price_create(currency_options={"xyz": {"unit_amount": 5}}),
        BadRequest,
        "currency_options.xyz",
    )
    row(
        "interval-fortnight",
        PRICE,
        lambda: price_create(recurring={"interval": "fortnight"}),
        BadRequest,
        "recurring.interval",
    )
    row(
        "interval-13-months",
        PRICE,
        lambda: price_create(recurring={"interval": "month", "interval_count": 13}),
        BadRequest,
        "recurring.interval_count",
    )
    row(
        "interval-count-zero",
        PRICE,
        lambda: price_create(recurring={"interval": "week", "interval_count": 0}),
        BadRequest,
        "recurring.interval_count",
    )
    row("id-taken", PRICE, lambda: price_create(id=price()), BadRequest, "id")

    row("unknown-customer", SUBSCRIBE, lambda: subscribe(unknown("cus")), NotFound, "customer")
    row(
        "deleted-customer",
        SUBSCRIBE,
        lambda: subscribe(deleted_customer()),
        NotFound,
        "customer",
        retried=False,
    )
    row("no-items", SUBSCRIBE, lambda: {**subscribe(), "items": []}, BadRequest, "items")
    row("unknown-price", SUBSCRIBE, lambda: subscribe(None, unknown("price")), NotFound, "items[0].price")
    row(
        "one-time-price",
        SUBSCRIBE,
        lambda: subscribe(None, price(recurring=None)),
        BadRequest,
        "items[0].price",
    )
    row("same-price-twice", SUBSCRIBE, lambda: subscribe(None, *[price()] * 2), BadRequest, "items[1].price")
    row(
        "intervals-differ",
        SUBSCRIBE,
        lambda: subscribe(None, price(), price(recurring={"interval": "year"})),
        BadRequest,
        "items[1].price",
    )
    row(
        "price-without-the-currency",
        SUBSCRIBE,
        lambda: subscribe(
            None, price(currency_options={"eur": {"unit_amount": 900}}), price(), currency="eur"
        ),
        BadRequest,
        "items[1].price",
    )
    row(
        "quantity-zero",
        SUBSCRIBE,
        lambda: {**subscribe(), "items": [{"price": price(), "quantity": 0}]},
        BadRequest,
        "items[0].quantity",
    )
    row(
        "quantity-float",
        SUBSCRIBE,
        lambda: {**subscribe(), "items": [{"price": price(), "quantity": 1.5}]},
        BadRequest,
        "items[0].quantity",
    )
    row(
        "quantity-overflows",
        SUBSCRIBE,
        lambda: {**subscribe(), "items": [{"price": price(unit_amount=50_000_000), "quantity": 2}]},
        BadRequest,
        "items[0].quantity",
    )
    row(
        "second-currency",
        SUBSCRIBE,
        lambda: subscribe(
            _held_usd(),
            price(currency_options={"eur": {"unit_amount": 900}}),
            currency="eur",
        ),
        SubscriptionCurrencyConflict,
        "currency",
    )
    row(
        "send-invoice-without-days",
        SUBSCRIBE,
        lambda: subscribe(collection_method="send_invoice"),
        BadRequest,
        "days_until_due",
    )
    row("days-when-charged", SUBSCRIBE, lambda: subscribe(days_until_due=7), BadRequest, "days_until_due")
    row(
        "anchor-in-the-future",
        SUBSCRIBE,
        lambda: subscribe(billing_cycle_anchor=NOW + 1),
        BadRequest,
        "billing_cycle_anchor",
    )
    row("unknown-coupon", SUBSCRIBE, lambda: subscribe(coupon="NOPE"), NotFound, "coupon")
    row(
        "coupon-used-up",
        SUBSCRIBE,
        lambda: subscribe(coupon=coupon_at_max_redemptions()),
        BadRequest,
        "coupon",
    )
    row("extra-field", SUBSCRIBE, lambda: subscribe(plan="gold"), BadRequest, "plan")
    row("id-taken", SUBSCRIBE, lambda: subscribe(id=subscription()), BadRequest, "id")

    row(
        "unknown-subscription",
        CANCEL,
        lambda: {"subscription": unknown("sub"), "idempotency_key": key()},
        NotFound,
        "subscription",
    )
    row(
        "already-canceled",
        CANCEL,
        lambda: {"subscription": canceled_subscription(), "idempotency_key": key()},
        WrongState,
        "subscription",
    )
    row(
        "at-period-end-maybe",
        CANCEL,
        lambda: {"subscription": subscription(), "at_period_end": "maybe", "idempotency_key": key()},
        BadRequest,
        "at_period_end",
    )

    def change(customer_id: str, currency: str = "eur") -> dict[str, Any]:
        return {"customer": customer_id, "currency": currency, "idempotency_key": key()}

    row("unknown-customer", CHANGE_CURRENCY, lambda: change(unknown("cus")), NotFound, "customer")
    row("no-subscriptions", CHANGE_CURRENCY, lambda: change(customer("usd")), WrongState, "customer")
    row("price-without-it", CHANGE_CURRENCY, lambda: change(_held_usd()), BadRequest, "currency")
    row("currency-unknown", CHANGE_CURRENCY, lambda: change(_held_usd(), "xyz"), BadRequest, "currency")

    row("unknown-subscription", RENEW, lambda: renew(unknown("sub"), NOW), NotFound, "subscription")
    row("not-a-boundary", RENEW, lambda: renew(subscription(), NOW - 86_400), BadRequest, "period_start")
    row("not-due", RENEW, lambda: renew(subscription(), NOW + MONTH), WrongState, "period_start")
    row(
        "period-in-year-9999",
        RENEW,
        lambda: renew(subscription(), 253_402_300_799),
        WrongState,
        "period_start",
    )
    row("period-negative", RENEW, lambda: renew(subscription(), -1), BadRequest, "period_start")

    def clock_create(**fields: Any) -> dict[str, Any]:
        return {"id": new_id("clock"), "frozen_time": NOW, "idempotency_key": key(), **fields}

    row(
        "missing-frozen-time",
        CLOCK,
        lambda: without(clock_create(), "frozen_time"),
        BadRequest,
        "frozen_time",
    )
    row("frozen-time-float", CLOCK, lambda: clock_create(frozen_time=1.5), BadRequest, "frozen_time")
    row("name-301", CLOCK, lambda: clock_create(name="x" * 301), BadRequest, "name")
    row("id-taken", CLOCK, lambda: clock_create(id=sandbox_clock()), BadRequest, "id")

    def advance(clock_id: str, frozen_time: int) -> dict[str, Any]:
        return {"test_clock": clock_id, "frozen_time": frozen_time, "idempotency_key": key()}

    row("unknown-clock", ADVANCE, lambda: advance(unknown("clock"), NOW + 1), NotFound, "test_clock")
    row("backwards", ADVANCE, lambda: advance(sandbox_clock(), NOW - 1), BadRequest, "frozen_time")
    row("standing-still", ADVANCE, lambda: advance(sandbox_clock(), NOW), BadRequest, "frozen_time")
    row(
        "customer-on-unknown-clock",
        CUSTOMERS_CREATE,
        lambda: customer_create(test_clock=unknown("clock")),
        NotFound,
        "test_clock",
    )
    return rows


def _held_usd() -> str:
    """A customer with an active USD subscription whose price has no EUR amount."""
    cus = customer("usd")
    subscription(cus)
    return cus


CASES = cases() + subscription_cases()


# -- how a row is checked -----------------------------------------------------------------------


def failures() -> list[TaskFailure]:
    with read_session() as session:
        return list(session.execute(select(TaskFailure)).scalars())


def as_json(value: Any) -> str:
    """Payloads compared as JSON text: NaN compares equal to NaN, key order does not matter."""
    return json.dumps(value, sort_keys=True)


def assert_payload_kept(stored: Any, sent: dict[str, Any]) -> None:
    """The dead letter keeps the payload as sent. A payload that is not strict JSON (NaN, which
    PostgreSQL's JSONB refuses) may instead be kept as its repr, the form already used for
    payloads that are not objects."""
    try:
        json.dumps(sent, allow_nan=False)
    except ValueError:
        if stored == {"raw": repr(sent)[:10_000]}:
            return
    assert as_json(stored) == as_json(sent)


@pytest.fixture(autouse=True)
def fast_retries(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_MISSING_REFERENCE_RETRIES", str(MISSING_REFERENCE_RETRIES))
    monkeypatch.setenv("BILLING_NOTHING_PENDING_RETRIES", str(MISSING_REFERENCE_RETRIES))
    get_settings.cache_clear()
    assert get_settings().missing_reference_retries == MISSING_REFERENCE_RETRIES
    monkeypatch.setattr(clock, "_source", lambda: float(NOW))


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The operations the task ran (once per attempt)."""
    seen: list[str] = []

    def counting(name: str, payload: dict[str, Any], **options: Any) -> Any:
        seen.append(name)
        return run(name, payload, **options)

    monkeypatch.setattr(worker.tasks.base, "run", counting)
    return seen


def test_the_catalogue_covers_every_task() -> None:
    assert {case.task for case in CASES} == set(REQUESTS)
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_refused_recorded_and_writes_nothing(case: Case, runs: list[str]) -> None:
    payload = case.build()
    sent = copy.deepcopy(payload)
    counts, contents = row_counts(), table_contents()
    assert counts["task_failures"] == 0

    result = app.tasks[case.task].apply(kwargs=payload)

    assert result.failed(), f"accepted: {result.result!r}"
    assert isinstance(result.result, BillingError), repr(result.result)
    after = row_counts()
    assert after == {**counts, "task_failures": 1, "events": counts["events"] + 1}
    recorded = {"task_failures", "events"}
    assert {name: rows for name, rows in table_contents().items() if name not in recorded} == {
        name: rows for name, rows in contents.items() if name not in recorded
    }
    (failure,) = failures()
    assert_reported(failure, case.error, sent)
    assert (failure.task_name, failure.error_type, failure.error_code, failure.error_field) == (
        case.task,
        case.error.__name__,
        case.error.code,
        case.field,
    ), failure.error_message
    assert failure.error_message
    assert failure.retryable is False
    assert_payload_kept(failure.payload, sent)
    assert runs == [case.task] * case.runs


def assert_reported(failure: TaskFailure, error: type[BillingError], sent: dict[str, Any]) -> None:
    """The failure is the request's one ``request.failed`` event, with Stripe's error type."""
    with read_session() as session:
        (event,) = session.execute(select(Event).where(Event.type == "request.failed")).scalars()
    obj = event.data["object"]
    assert (obj["task"], obj["task_id"], event.idempotency_key) == (
        failure.task_name,
        failure.task_id,
        key if isinstance(key := sent.get("idempotency_key"), str) and len(key) <= 300 else None,
    )
    assert obj["error"] == {
        "type": error.type,
        "code": failure.error_code,
        "field": failure.error_field,
        "message": failure.error_message,
    }


# -- the invoice preview: not a task, a read; refused the same way, and still writes nothing -------


@dataclass(frozen=True)
class PreviewCase:
    id: str
    build: Build
    """Creates what the row needs through the services and returns the preview's parameters."""
    error: type[BillingError]
    field: str


def _pending(currency: str = "usd", amount: int = 1000) -> str:
    cus = customer(currency)
    items(cus, currency, [amount])
    return cus


def _own_subscription(*, canceled: bool = False, at_period_end: bool = False) -> dict[str, Any]:
    cus = customer("usd")
    sub = subscription(cus)
    if canceled or at_period_end:
        call(CANCEL, subscription=sub, at_period_end=at_period_end)
    return {"customer": cus, "subscription": sub}


PREVIEW_CASES = [
    PreviewCase("unknown-customer", lambda: {"customer": unknown("cus")}, NotFound, "customer"),
    PreviewCase("deleted-customer", lambda: {"customer": deleted_customer()}, NotFound, "customer"),
    PreviewCase("empty-customer", lambda: {"customer": ""}, BadRequest, "customer"),
    PreviewCase(
        "unknown-currency", lambda: {"customer": _pending(), "currency": "usx"}, BadRequest, "currency"
    ),
    PreviewCase(
        "uppercase-currency", lambda: {"customer": _pending(), "currency": "USD"}, BadRequest, "currency"
    ),
    PreviewCase("no-currency-at-all", lambda: {"customer": customer(None)}, BadRequest, "currency"),
    PreviewCase("nothing-pending", lambda: {"customer": customer("usd")}, NothingToInvoice, "customer"),
    PreviewCase(
        "nothing-pending-in-that-currency",
        lambda: {"customer": _pending("eur"), "currency": "usd"},
        NothingToInvoice,
        "customer",
    ),
    PreviewCase(
        "unknown-subscription",
        lambda: {"customer": customer("usd"), "subscription": unknown("sub")},
        NotFound,
        "subscription",
    ),
    PreviewCase(
        "subscription-of-another-customer",
        lambda: {"customer": _pending(), "subscription": subscription()},
        BadRequest,
        "subscription",
    ),
    PreviewCase(
        "canceled-subscription", lambda: _own_subscription(canceled=True), WrongState, "subscription"
    ),
    PreviewCase(
        "subscription-ending-at-period-end",
        lambda: _own_subscription(at_period_end=True),
        WrongState,
        "subscription",
    ),
    PreviewCase(
        "subscription-in-another-currency",
        lambda: {**_own_subscription(), "currency": "eur"},
        BadRequest,
        "currency",
    ),
]


@pytest.mark.parametrize("case", PREVIEW_CASES, ids=[case.id for case in PREVIEW_CASES])
def test_a_bad_preview_is_refused_with_its_field_and_writes_nothing(case: PreviewCase) -> None:
    from worker.services.invoices import preview

    params = case.build()
    contents = table_contents()

    with pytest.raises(BillingError) as error:
        preview(**params)

    assert (type(error.value), error.value.field) == (case.error, case.field), error.value.message
    assert error.value.message
    assert table_contents() == contents


# -- beyond the table ---------------------------------------------------------------------------


def test_the_same_key_with_the_same_parameters_replays_and_creates_nothing(runs: list[str]) -> None:
    payload = customer_create(email="ada@example.com")
    task = app.tasks[CUSTOMERS_CREATE]
    first = task.apply(kwargs=copy.deepcopy(payload))
    assert first.successful(), repr(first.result)
    assert first.result == {"id": payload["id"], "replayed": False, "follow_ups": 0}
    counts = row_counts()
    assert (counts["customers"], counts["idempotency_keys"]) == (1, 1)

    again = task.apply(kwargs=copy.deepcopy(payload))

    assert again.successful(), repr(again.result)
    assert again.result == {"id": payload["id"], "replayed": True, "follow_ups": 0}
    assert row_counts() == counts
    assert failures() == []
    assert runs == [CUSTOMERS_CREATE, CUSTOMERS_CREATE]


def test_a_replay_with_the_same_key_still_works_after_a_conflicting_attempt() -> None:
    k, cus = key(), new_id("cus")
    call(CUSTOMERS_CREATE, id=cus, idempotency_key=k, name="Ada")
    conflict = app.tasks[CUSTOMERS_CREATE].apply(kwargs={"id": cus, "idempotency_key": k, "name": "Bea"})
    assert conflict.failed()
    replay = app.tasks[CUSTOMERS_CREATE].apply(kwargs={"id": cus, "idempotency_key": k, "name": "Ada"})
    assert replay.successful(), repr(replay.result)
    assert replay.result["replayed"] is True
    with read_session() as session:
        row = session.get(Customer, cus)
        assert row is not None and row.name == "Ada"
    assert row_counts()["customers"] == 1


@pytest.mark.parametrize(
    "case_id",
    [
        "customers.create:extra-field",
        "invoice_items.create:unknown-customer",
        "customers.create:key-reused-with-other-name",
        "invoices.finalize:finalize-twice",
        "customers.update:currency-locked-usd-to-eur",
        "invoices.create:nothing-to-invoice",
    ],
)
def test_the_task_result_carries_the_exact_error(case_id: str) -> None:
    """What Celery reports (eager result here; a result backend, Flower, the prefork pool's pipe in a
    worker) is the error itself: same type, same field. Celery pickles it, so it must survive that."""
    (case,) = [c for c in CASES if c.id == case_id]
    result = app.tasks[case.task].apply(kwargs=case.build())
    assert result.failed()
    assert (type(result.result), result.result.field) == (case.error, case.field)


@pytest.mark.parametrize(
    "error",
    [
        BadRequest("must be an integer", field="amount"),
        NotFound("customer", "cus_1", field="customer"),
        IdempotencyConflict("k", "billing.customers.create"),
        WrongState("invoice in_1 is paid", field="invoice"),
        CurrencyLocked("locked", field="currency"),
        NothingToInvoice("nothing", field="customer"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_every_billing_error_survives_pickling(error: BillingError) -> None:
    copied = pickle.loads(pickle.dumps(error))
    assert (type(copied), copied.field, copied.message, copied.code) == (
        type(error),
        error.field,
        error.message,
        error.code,
    )


def test_a_payload_that_is_not_an_object_is_refused_by_the_contract() -> None:
    counts = row_counts()
    for bad in (["cus_1"], "cus_1", None, 5):
        with pytest.raises(BadRequest) as error:
            run(CUSTOMERS_CREATE, bad)  # type: ignore[arg-type]
        assert type(error.value) is BadRequest and error.value.field is None
    assert row_counts() == counts


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        pytest.param([{"id": "cus_A", "idempotency_key": "k"}], {}, id="positional-args"),
        pytest.param([], {"self": "x", "id": "cus_A", "idempotency_key": "k"}, id="field-named-self"),
    ],
)
def test_a_message_the_task_signature_cannot_take_is_still_recorded(
    args: list[Any], kwargs: dict[str, Any]
) -> None:
    """A message that never reaches the contract (positional arguments, a field the Python
    signature claims) must not vanish: it is refused as a bad request and kept as a dead letter."""
    counts = row_counts()
    result = app.tasks[CUSTOMERS_CREATE].apply(args=args, kwargs=kwargs)
    assert result.failed()
    assert row_counts() == {**counts, "task_failures": 1, "events": counts["events"] + 1}  # request.failed
    (failure,) = failures()
    assert (failure.task_name, failure.error_type, failure.error_code) == (
        CUSTOMERS_CREATE,
        "BadRequest",
        "invalid_request",
    ), f"{failure.error_type}: {failure.error_message}"


def test_an_unknown_parameter_with_a_long_name_is_still_recorded() -> None:
    """The dead letter must be written whatever the caller sent: a 200-character parameter
    name is named (in full or cut to fit ``error_field``), never a reason to lose the record."""
    name = "x" * 200
    payload = customer_create(**{name: 1})
    counts = row_counts()
    result = app.tasks[CUSTOMERS_CREATE].apply(kwargs=copy.deepcopy(payload))
    assert result.failed()
    assert type(result.result) is BadRequest and result.result.field == name
    assert row_counts() == {**counts, "task_failures": 1, "events": counts["events"] + 1}  # request.failed
    (failure,) = failures()
    assert (failure.error_type, failure.error_code) == ("BadRequest", "invalid_request")
    assert failure.error_field and name.startswith(failure.error_field)
    assert as_json(failure.payload) == as_json(payload)
