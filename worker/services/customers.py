"""Customers: create, update, delete; the default currency lock (domain/README.md §1)."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import select
from sqlalchemy import update as update_rows
from sqlmodel import col

from domain.errors import BadRequest, CurrencyLocked
from domain.subscriptions import SubscriptionStatus
from tasks.contracts import CustomerCreate, CustomerDelete, CustomerFields, CustomerUpdate
from tasks.ids import PREFIXES, derived_id
from worker.services.base import Outcome, Request
from worker.tables import Customer, CustomerTaxId, DiscountRow, SandboxClock, Subscription

_PREFIX_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"

# contract field -> (table attribute, how to store it)
_PROFILE_FIELDS: dict[str, str] = {
    "email": "email",
    "name": "name",
    "phone": "phone",
    "description": "description",
    "metadata": "metadata_",
    "address": "address",
    "shipping": "shipping",
    "preferred_locales": "preferred_locales",
    "tax_exempt": "tax_exempt",
}


def generated_invoice_prefix(customer_id: str) -> str:
    digest = hashlib.sha256(customer_id.encode()).digest()
    return "".join(_PREFIX_ALPHABET[b % len(_PREFIX_ALPHABET)] for b in digest[:8])


def set_default_currency(customer: Customer, currency: str, *, field: str = "currency") -> None:
    """The first invoice, adjustment or explicit setting fixes the default currency for good."""
    if customer.currency is None:
        customer.currency = currency
    elif customer.currency != currency and field == "currency":
        raise CurrencyLocked(
            f"customer {customer.id} already bills in {customer.currency}; the default currency"
            " cannot change once set (bill other currencies by naming them on items and invoices)",
            field=field,
        )


def _check_prefix_free(request: Request, prefix: str, customer_id: str) -> None:
    taken = request.session.execute(
        select(col(Customer.id)).where(
            col(Customer.invoice_prefix) == prefix, col(Customer.id) != customer_id
        )
    ).first()
    if taken:
        raise BadRequest(f"invoice prefix {prefix!r} is used by another customer", field="invoice_prefix")


def _apply_profile(customer: Customer, fields: CustomerFields) -> None:
    data: dict[str, Any] = fields.model_dump(mode="json", exclude_unset=True)
    for name, attribute in _PROFILE_FIELDS.items():
        if name in data:
            setattr(customer, attribute, data[name])
    if "invoice_settings" in data:
        customer.default_payment_method = (data["invoice_settings"] or {}).get("default_payment_method")
    if customer.tax_exempt is None:
        customer.tax_exempt = "none"


def create(request: Request, command: CustomerCreate) -> Outcome:
    if prior := request.replayed():
        return prior
    request.ensure_new(Customer, command.id, resource="customer")
    seen: set[tuple[str, str]] = set()
    for index, tax_id in enumerate(command.tax_id_data or ()):
        if (tax_id.type, tax_id.value) in seen:
            raise BadRequest(f"duplicate tax id {tax_id.type} {tax_id.value}", field=f"tax_id_data[{index}]")
        seen.add((tax_id.type, tax_id.value))
    prefix = command.invoice_prefix or generated_invoice_prefix(command.id)
    _check_prefix_free(request, prefix, command.id)
    created = request.now
    if command.test_clock is not None:
        test_clock = request.get(SandboxClock, command.test_clock, resource="test clock", field="test_clock")
        created = test_clock.frozen_time
    customer = Customer(
        id=command.id,
        invoice_prefix=prefix,
        currency=command.currency,
        test_clock_id=command.test_clock,
        created=created,
    )
    _apply_profile(customer, command)
    request.session.add(customer)
    request.session.flush()
    for tax_id in command.tax_id_data or ():
        request.session.add(
            CustomerTaxId(
                id=derived_id(PREFIXES["tax_id"], f"{command.id}:{tax_id.type}:{tax_id.value}"),
                customer_id=command.id,
                type=tax_id.type,
                value=tax_id.value,
                created=request.now,
            )
        )
    request.emit("customer.created", customer)
    return request.done(command.id)


def update(request: Request, command: CustomerUpdate) -> Outcome:
    customer = request.lock_customer(command.customer)
    if prior := request.replayed():
        return prior
    before = request.render(customer)
    if command.currency is not None:
        set_default_currency(customer, command.currency)
    if command.invoice_prefix is not None and command.invoice_prefix != customer.invoice_prefix:
        _check_prefix_free(request, command.invoice_prefix, customer.id)
        if customer.next_invoice_sequence > 1:
            raise BadRequest("cannot change once the customer has numbered invoices", field="invoice_prefix")
        customer.invoice_prefix = command.invoice_prefix
    _apply_profile(customer, command)
    request.emit("customer.updated", customer, previous=before)
    return request.done(customer.id)


def delete(request: Request, command: CustomerDelete) -> Outcome:
    """Permanent: the customer can no longer be billed and its active subscriptions are
    canceled; invoices and credit notes stay."""
    customer = request.lock_customer(command.customer)
    if prior := request.replayed():
        return prior
    customer.deleted = True
    active = request.session.execute(
        select(Subscription).where(
            col(Subscription.customer_id) == customer.id,
            col(Subscription.status) == SubscriptionStatus.ACTIVE,
        )
    ).scalars()
    for subscription in active:
        request.emit("customer.subscription.deleted", subscription)
    request.session.execute(
        update_rows(Subscription)
        .where(
            col(Subscription.customer_id) == customer.id,
            col(Subscription.status) == SubscriptionStatus.ACTIVE,
        )
        .values(status=SubscriptionStatus.CANCELED, canceled_at=request.now, ended_at=request.now)
        .execution_options(synchronize_session=False)
    )
    discount = request.session.execute(
        select(DiscountRow).where(col(DiscountRow.customer_id) == customer.id)
    ).scalar_one_or_none()
    if discount is not None:
        request.emit("customer.discount.deleted", request.render(discount))
        request.session.delete(discount)
    request.emit("customer.deleted", customer)
    return request.done(customer.id)
