"""Invoices from pending items: generation, chains and finalization (README: How invoice
generation works).

Generation claims at most 250 of a customer's oldest pending items in the invoice's
currency (read with one SELECT under the customer's lock, priced, then attached with their
amounts by one UPDATE), in the same transaction that writes the invoice, prices it and
(when asked) finalizes it. If items of that currency remain, the outcome carries a
follow-up for the next part of the chain; the task publishes it after the commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlmodel import col

from domain.coupons import check_redeemable
from domain.credit import CreditApplication, apply_credit_balance
from domain.currencies import currency_info
from domain.errors import BadRequest, NothingToInvoice
from domain.invoices import InvoiceStatus, due_date, invoice_number, settle, transition
from domain.pricing import PricedInvoice
from tasks.contracts import InvoiceCreate, InvoicePendingCreate, payload_of
from tasks.ids import PREFIXES, derived_id
from worker.services import ledger
from worker.services.base import FollowUp, Outcome, Request
from worker.services.coupons import redemptions
from worker.services.customers import set_default_currency
from worker.services.documents import ask_for_document
from worker.services.invoices import statements
from worker.services.invoices.lines import pending_lines, write_lines
from worker.services.invoices.pricing import customer_discount, line_amounts, price, reprice_for_tax_status
from worker.tables import (
    CouponRow,
    Customer,
    CustomerBalance,
    CustomerTaxId,
    Invoice,
    InvoiceItem,
    OutboxMessage,
)

CREATE_TASK = "billing.invoices.create"

FinalizeReads = tuple[list[dict[str, str]], CustomerBalance]
"""What finalization reads (``finalize_reads``): the customer's tax ids and balance row."""


def create(request: Request, command: InvoiceCreate) -> Outcome:
    customer = request.lock_customer(command.customer)
    currency = command.currency or customer.currency
    if prior := request.replayed():
        # Ask again for the next part only if the first run asked for it (its outbox row):
        # it may have died before publishing. Items that arrived since are not ours.
        following = next_part(command)
        if request.session.get(OutboxMessage, following.key) is not None:
            prior.follow_ups.append(following)
        return prior
    if currency is None:
        raise BadRequest(
            f"customer {customer.id} has no default currency; name the invoice's currency", field="currency"
        )
    set_default_currency(customer, currency, field="customer")
    invoice, follow_ups = generate_invoice(request, customer, command, currency)
    outcome = request.done(invoice.id if invoice else None)
    outcome.follow_ups.extend(follow_ups)
    return outcome


def create_for_pending(request: Request, command: InvoicePendingCreate) -> Outcome:
    """One invoice chain per currency with pending items; each chain is its own task."""
    customer = request.lock_customer(command.customer)
    replay = request.replayed()
    currencies = request.session.execute(
        select(col(InvoiceItem.currency))
        .where(col(InvoiceItem.customer_id) == customer.id, statements.PENDING)
        .distinct()
    ).scalars()
    base = payload_of(command)
    follow_ups = []
    for currency in sorted(currencies):
        key = f"{command.idempotency_key}:{currency}"
        payload = {
            **base,
            "currency": currency,
            "id": derived_id(PREFIXES["invoice"], key),
            "idempotency_key": key,
        }
        follow_ups.append(FollowUp(CREATE_TASK, payload, key))
    if replay:  # only what the first run asked for (its outbox rows), never new work
        replay.follow_ups.extend(
            f for f in follow_ups if request.session.get(OutboxMessage, f.key) is not None
        )
        return replay
    outcome = request.done(None)
    outcome.follow_ups.extend(follow_ups)
    return outcome


def next_part(command: InvoiceCreate) -> FollowUp:
    """The request for the chain's next invoice: keyed and identified after this one's key."""
    part = command.part + 1
    key = f"{command.idempotency_key}:part{part}"
    payload = payload_of(command)
    payload.update(part=part, id=derived_id(PREFIXES["invoice"], key))
    return FollowUp(CREATE_TASK, payload, key)


def generate_invoice(
    request: Request,
    customer: Customer,
    command: InvoiceCreate,
    currency: str,
    *,
    coupons: Sequence[CouponRow] | None = None,
    billing_reason: str = "manual",
    subscription_id: str | None = None,
) -> tuple[Invoice | None, list[FollowUp]]:
    """Make one invoice of a chain under the customer's lock; the caller records the key.

    Returns the invoice (None: a later part found the backlog gone) and the follow-up for
    the next part when pending items of the currency remain. ``coupons`` replaces the
    request's or customer's discounts (a subscription's coupon); ``subscription_id``
    puts that subscription's pending lines first.
    """
    request.ensure_new(Invoice, command.id, resource="invoice", on_conflict=True)
    lines: list[Any] = []
    more = False
    if command.pending_invoice_items_behavior == "include":
        lines, more = pending_lines(request, customer.id, currency, subscription_first=subscription_id)
        if not lines:
            if command.part > 1:  # the chain's backlog is gone (another run took it): the chain ends
                return None, []
            raise NothingToInvoice(
                f"customer {customer.id} has no pending {currency} invoice items", field="customer"
            )
    reads = finalize_reads(request, customer, currency) if command.finalize else None
    invoice, claims = build_invoice(
        request, customer, command, currency, lines, reads,
        coupons=coupons, billing_reason=billing_reason, subscription_id=subscription_id,
    )  # fmt: skip
    request.session.flush()  # one INSERT of the whole invoice, finalized or not, before its ledger rows
    write_lines(request.session, claims, claim=True)
    return invoice, [next_part(command)] if more else []


def build_invoice(
    request: Request,
    customer: Customer,
    command: InvoiceCreate,
    currency: str,
    lines: Sequence[Any],
    reads: FinalizeReads | None,
    *,
    coupons: Sequence[CouponRow] | None = None,
    billing_reason: str = "manual",
    subscription_id: str | None = None,
) -> tuple[Invoice, list[dict[str, Any]]]:
    """The invoice of these pending lines, priced and (if asked) finalized, added to the
    session but not yet flushed; and its lines' claims for ``write_lines(claim=True)``.

    Everything it reads is read already (``reads``: ``finalize_reads`` when finalizing),
    or once per transaction (discounts, coupons, tax rates), so that many invoices built
    one after the other reach the database together at the next flush.
    """
    invoice, priced = compose_invoice(
        request, customer, command, currency, lines,
        coupons=coupons, billing_reason=billing_reason, subscription_id=subscription_id, redeem=True,
    )  # fmt: skip
    request.session.add(invoice)
    request.emit("invoice.created", invoice)
    if command.finalize:
        finalize_invoice(request, invoice, customer, reads)
    return invoice, line_amounts(lines, priced, every=False, invoice=invoice.id)


def compose_invoice(
    request: Request,
    customer: Customer,
    command: InvoiceCreate,
    currency: str,
    lines: Sequence[Any],
    *,
    coupons: Sequence[CouponRow] | None,
    billing_reason: str,
    subscription_id: str | None,
    redeem: bool,
) -> tuple[Invoice, PricedInvoice]:
    """The invoice of these lines, priced, in memory only (not added to the session): what
    generation stores and what ``previews.preview`` shows. ``redeem``: a first part's named
    coupons are counted as redeemed (generation); a preview only checks that they may be."""
    invoice = _new_invoice(request, customer, command, currency, billing_reason, subscription_id)
    if coupons is None:
        coupons = _coupons(request, customer, command, redeem=redeem)
    return invoice, price(request, invoice, lines, customer, coupons)


def _new_invoice(
    request: Request,
    customer: Customer,
    command: InvoiceCreate,
    currency: str,
    billing_reason: str,
    subscription_id: str | None,
) -> Invoice:
    return Invoice(
        id=command.id,
        customer_id=customer.id,
        currency=currency,
        billing_reason=billing_reason,
        subscription_id=subscription_id,
        collection_method=command.collection_method,
        days_until_due=command.days_until_due,
        due_date=command.due_date,
        auto_advance=bool(command.auto_advance),
        description=command.description,
        footer=command.footer,
        metadata_=command.metadata,
        default_tax_rates=command.default_tax_rates,
        chain_part=command.part,
        created=request.now,
    )


def _coupons(
    request: Request, customer: Customer, command: InvoiceCreate, *, redeem: bool
) -> list[CouponRow]:
    """The request's discounts if it names any, else the customer's discount.

    A chain is one request split for size: its coupons are redeemed by the first part only.
    """
    if command.discounts is not None:
        coupons = []
        for index, discount in enumerate(command.discounts):
            field = f"discounts[{index}].coupon"
            coupon = request.get(CouponRow, discount.coupon, resource="coupon", field=field)
            if command.part == 1:
                check_redeemable(redemptions(coupon), request.now, field=field)
                if redeem:
                    coupon.times_redeemed += 1
            coupons.append(coupon)
        return coupons
    held = customer_discount(request, customer.id)
    return [request.get(CouponRow, held.coupon_id, resource="coupon", field="discounts")] if held else []


def tax_id_snapshot(tax_ids: Iterable[CustomerTaxId]) -> list[dict[str, str]]:
    return [{"type": t.type, "value": t.value} for t in tax_ids]


def finalize_reads(request: Request, customer: Customer, currency: str) -> FinalizeReads:
    """What finalization reads: the customer's tax ids and its balance row (locked).

    Read before the invoice changes, so that its changes reach the database in one UPDATE
    at the next flush instead of one per query in between.
    """
    tax_ids = request.session.execute(statements.TAX_IDS, {"customer": customer.id}).scalars()
    return tax_id_snapshot(tax_ids), ledger.lock_balance(request.session, customer.id, currency)


def finalize_invoice(
    request: Request,
    invoice: Invoice,
    customer: Customer,
    reads: FinalizeReads | None = None,
) -> None:
    """Number, snapshot, apply the same-currency balance, write the ledger rows."""
    opened = transition(invoice.id, invoice.status, "finalize")
    reprice_for_tax_status(request, invoice, customer)
    tax_ids, balance = reads or finalize_reads(request, customer, invoice.currency)
    _number_and_snapshot(invoice, customer, tax_ids)
    credit = _apply_credit_balance(request, invoice, customer, balance)
    invoice.finalized_at = request.now
    invoice.status = settle(opened, credit.amount_due)
    request.emit("invoice.finalized", invoice)
    if invoice.status == InvoiceStatus.PAID:
        invoice.paid_at = request.now
        request.emit("invoice.paid", invoice)
    if invoice.collection_method == "send_invoice" and invoice.due_date is None:
        invoice.due_date = due_date(request.now, invoice.days_until_due or 0)
    _use_up_once_coupon(request, invoice, customer)
    ask_for_document(request, invoice=invoice.id)


def _number_and_snapshot(invoice: Invoice, customer: Customer, tax_ids: list[dict[str, str]]) -> None:
    """The invoice's number, and the customer as it is at finalization."""
    invoice.number = invoice_number(customer.invoice_prefix, customer.next_invoice_sequence)
    customer.next_invoice_sequence += 1
    invoice.customer_email = customer.email
    invoice.customer_name = customer.name
    invoice.customer_phone = customer.phone
    invoice.customer_address = customer.address
    invoice.customer_shipping = customer.shipping
    invoice.customer_tax_ids = tax_ids


def _apply_credit_balance(
    request: Request, invoice: Invoice, customer: Customer, balance: CustomerBalance
) -> CreditApplication:
    """The balance of the invoice's currency drawn on (``credit_applied``), with its ledger rows."""
    credit = credit_applied(invoice, balance.balance)
    for amount, reason in ((credit.applied, "applied_to_invoice"), (credit.too_small, "invoice_too_small")):
        txn = ledger.append(
            request.session,
            customer_id=customer.id,
            currency=invoice.currency,
            amount=amount,
            type=reason,
            now=request.now,
            invoice_id=invoice.id,
            balance=balance,
        )
        if txn is not None:
            request.emit("customer.balance_transaction.created", txn)
    return credit


def credit_applied(invoice: Invoice, balance: int) -> CreditApplication:
    """What the ledger ``balance`` of the invoice's currency does to it at finalization
    (``domain.credit``, §4.2): its starting and ending balance and amount due, set on it."""
    info = currency_info(invoice.currency)
    credit = apply_credit_balance(invoice.total, balance, info.minimum_charge if info else 0)
    invoice.starting_balance = credit.starting_balance
    invoice.ending_balance = credit.ending_balance
    invoice.amount_due = invoice.amount_remaining = credit.amount_due
    return credit


def _use_up_once_coupon(request: Request, invoice: Invoice, customer: Customer) -> None:
    """A ``once`` coupon the customer holds is used up by the invoice that applied it."""
    held = customer_discount(request, customer.id)
    if held and held.coupon_id in (invoice.discounts or ()):
        coupon = request.session.get(CouponRow, held.coupon_id)
        if coupon is not None and coupon.duration == "once":
            request.emit("customer.discount.deleted", request.render(held))
            request.session.delete(held)
            request.session.info["discounts"][customer.id] = (
                None  # used up: not for later invoices of this transaction
            )
