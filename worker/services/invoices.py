"""Invoices: generation from pending items, pricing, finalization and the lifecycle (SPEC §4-6).

Generation claims at most 250 of a customer's oldest pending items in the invoice's
currency, in the same transaction that writes the invoice, prices it and (when asked)
finalizes it. If items of that currency remain, the outcome carries a follow-up for
the next part of the chain; the task publishes it after the commit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, case, delete, exists, func, select, text, tuple_, update

from domain import invoices as lifecycle
from domain.credit import apply_credit_balance
from domain.currencies import currency_info
from domain.errors import BadRequest, NotFound, NothingToInvoice
from domain.pricing import Coupon, Line, PricedInvoice, TaxRate, price_invoice
from tasks.contracts import InvoiceAction, InvoiceCreate, InvoicePay, InvoicePendingCreate, payload_of
from tasks.ids import PREFIXES, derived_id
from worker.services import ledger
from worker.services.base import FollowUp, Outcome, Request
from worker.services.customers import set_default_currency
from worker.tables import (
    BalanceTransaction,
    CouponRow,
    Customer,
    CustomerTaxId,
    DiscountRow,
    Invoice,
    InvoiceItem,
    OutboxMessage,
    TaxRateRow,
)

CREATE_TASK = "billing.invoices.create"
_PENDING = InvoiceItem.invoice_id.is_(None)  # type: ignore[union-attr]


def _pending_of(customer_id: str, currency: str) -> Any:
    return and_(InvoiceItem.customer_id == customer_id, InvoiceItem.currency == currency, _PENDING)


_PRICED_COLUMNS = (
    InvoiceItem.id,
    InvoiceItem.amount,
    InvoiceItem.discountable,
    InvoiceItem.tax_rates,
    InvoiceItem.created,
)
"""What pricing reads of a line (and claim order needs: created, id)."""


def claim_pending_items(
    request: Request,
    invoice_id: str,
    customer_id: str,
    currency: str,
    *,
    subscription_first: str | None = None,
) -> list[Any]:
    """Attach the oldest ≤ 250 pending items of (customer, currency) to the invoice: one UPDATE.

    ``subscription_first``: that subscription's items come first, so a period's own lines
    are on its invoice even behind a backlog of older pending items.
    """
    order: list[Any] = [InvoiceItem.created, InvoiceItem.id]
    if subscription_first is not None:
        order.insert(0, case((InvoiceItem.subscription_id == subscription_first, 0), else_=1))
    oldest = (
        select(InvoiceItem.id)
        .where(_pending_of(customer_id, currency))
        .order_by(*order)
        .limit(lifecycle.MAX_LINES_PER_INVOICE)
    )
    claimed = request.session.execute(
        update(InvoiceItem)
        .where(InvoiceItem.id.in_(oldest.scalar_subquery()))  # type: ignore[attr-defined]
        .values(invoice_id=invoice_id)
        .returning(*_PRICED_COLUMNS)
        .execution_options(synchronize_session=False)
    ).all()
    return sorted(claimed, key=lambda row: (row.created, row.id))


def pending_remain(request: Request, customer_id: str, currency: str, claimed: Sequence[Any] = ()) -> bool:
    """Whether pending items of (customer, currency) are left for the chain's next part.

    After a claim: fewer than 250 claimed means none were left when the claim ran (one
    that commits later is like one that arrives after this invoice: it waits for the
    next). After a full claim, look past the last item claimed, in the pending index's
    order, instead of wading through the 250 entries this transaction has just claimed.
    """
    condition = _pending_of(customer_id, currency)
    if claimed:
        if len(claimed) < lifecycle.MAX_LINES_PER_INVOICE:
            return False
        last = claimed[-1]
        condition = and_(
            condition, tuple_(InvoiceItem.created, InvoiceItem.id) > tuple_(last.created, last.id)
        )
    return bool(request.session.execute(select(exists().where(condition))).scalar())


def _tax_rates(request: Request, ids: set[str]) -> dict[str, TaxRate]:
    if not ids:
        return {}
    rows = request.session.execute(select(TaxRateRow).where(TaxRateRow.id.in_(ids))).scalars()  # type: ignore[attr-defined]
    return {r.id: TaxRate(r.id, Decimal(r.percentage), r.inclusive) for r in rows}


def _as_coupon(row: CouponRow) -> Coupon:
    return Coupon(
        id=row.id,
        percent_off=Decimal(row.percent_off) if row.percent_off is not None else None,
        amount_off=row.amount_off,
        currency=row.currency,
        currency_options=row.currency_options or {},
    )


def check_redeemable(coupon: CouponRow, now: int, *, field: str) -> None:
    if coupon.redeem_by is not None and now > coupon.redeem_by:
        raise BadRequest(f"coupon {coupon.id} could be redeemed only until {coupon.redeem_by}", field=field)
    if coupon.max_redemptions is not None and coupon.times_redeemed >= coupon.max_redemptions:
        raise BadRequest(
            f"coupon {coupon.id} has reached its {coupon.max_redemptions} redemptions", field=field
        )


def customer_discount(request: Request, customer_id: str) -> DiscountRow | None:
    # Asked by pricing and again by finalization: read once per transaction (the customer is locked).
    held = request.session.info.setdefault("discounts", {})
    if customer_id not in held:
        held[customer_id] = request.session.execute(
            select(DiscountRow).where(DiscountRow.customer_id == customer_id)  # type: ignore[arg-type]
        ).scalar()
    row = held[customer_id]
    if row is None or (row.end is not None and row.end <= request.now):
        return None
    return row


def _coupons(request: Request, customer: Customer, command: InvoiceCreate) -> list[CouponRow]:
    """The request's discounts if it names any, else the customer's discount.

    A chain is one request split for size: its coupons are redeemed by the first part only.
    """
    if command.discounts is not None:
        coupons = []
        for index, discount in enumerate(command.discounts):
            field = f"discounts[{index}].coupon"
            coupon = request.get(CouponRow, discount.coupon, resource="coupon", field=field)
            if command.part == 1:
                check_redeemable(coupon, request.now, field=field)
                coupon.times_redeemed += 1
            coupons.append(coupon)
        return coupons
    held = customer_discount(request, customer.id)
    return [request.get(CouponRow, held.coupon_id, resource="coupon", field="discounts")] if held else []


def price(
    request: Request,
    invoice: Invoice,
    lines: Sequence[Any],
    customer: Customer,
    coupons: Sequence[CouponRow],
    *,
    repricing: bool = False,
) -> PricedInvoice:
    """Discounts and taxes of every line and the invoice's totals, for the customer's tax
    status now (recorded on the invoice). Lines are in claim order: (created, id).

    ``repricing`` rewrites every line, also those that no longer get discounts or taxes;
    freshly claimed lines have none, so only those that get some are written.
    """
    default_ids = list(invoice.default_tax_rates or ())
    rates = _tax_rates(request, set(default_ids) | {r for line in lines for r in line.tax_rates or ()})
    for index, rate_id in enumerate(default_ids):
        if rate_id not in rates:
            raise NotFound("tax rate", rate_id, field=f"default_tax_rates[{index}]")
    priced = price_invoice(
        [
            Line(
                line.amount,
                line.discountable,
                tuple(rates[r] for r in line.tax_rates) if line.tax_rates is not None else None,
            )
            for line in lines
        ],
        currency=invoice.currency,
        coupons=[_as_coupon(c) for c in coupons],
        default_tax_rates=[rates[r] for r in default_ids],
        tax_exempt=customer.tax_exempt in ("exempt", "reverse"),
    )
    updates = [
        {
            "id": line.id,
            "discount_amounts": [{"amount": d.amount, "discount": d.coupon} for d in p.discount_amounts],
            "tax_amounts": [_tax_dict(t) for t in p.tax_amounts],
        }
        for line, p in zip(lines, priced.lines, strict=True)
        if repricing or p.discount_amounts or p.tax_amounts
    ]
    if updates:
        _write_line_amounts(request, updates)
    invoice.subtotal = priced.subtotal
    invoice.total_excluding_tax = priced.total_excluding_tax
    invoice.total = priced.total
    invoice.discounts = list(priced.applied_coupons)
    invoice.total_discount_amounts = [
        {"amount": d.amount, "discount": d.coupon} for d in priced.total_discount_amounts
    ]
    invoice.total_taxes = [_tax_dict(t) for t in priced.total_taxes]
    invoice.amount_due = invoice.amount_remaining = max(priced.total, 0)
    invoice.customer_tax_exempt = customer.tax_exempt
    return priced


def reprice_for_tax_status(request: Request, invoice: Invoice, customer: Customer) -> None:
    """A draft follows its customer's tax status until it is finalized (as Stripe's
    ``customer_tax_exempt``): a draft priced before the customer became exempt, or stopped
    being so, is priced again with the same lines and coupons."""
    if invoice.customer_tax_exempt == customer.tax_exempt:
        return
    lines = request.session.execute(
        select(*_PRICED_COLUMNS)
        .where(InvoiceItem.invoice_id == invoice.id)
        .order_by(InvoiceItem.created, InvoiceItem.id)
    ).all()
    coupons = [row for c in invoice.discounts or () if (row := request.session.get(CouponRow, c)) is not None]
    price(request, invoice, lines, customer, coupons, repricing=True)


_LINE_AMOUNTS = text(
    "UPDATE invoice_items SET discount_amounts = u.discount_amounts, tax_amounts = u.tax_amounts"
    " FROM unnest(CAST(:id AS varchar[]), CAST(:discount_amounts AS jsonb[]), CAST(:tax_amounts AS jsonb[]))"
    " AS u(id, discount_amounts, tax_amounts) WHERE invoice_items.id = u.id"
)


def _write_line_amounts(request: Request, updates: list[dict[str, Any]]) -> None:
    """PostgreSQL: one UPDATE … FROM unnest(arrays) for all lines, not one statement per line."""
    if request.session.get_bind().dialect.name != "postgresql":
        request.session.execute(update(InvoiceItem), updates)
        return
    request.session.execute(
        _LINE_AMOUNTS,
        {
            "id": [u["id"] for u in updates],
            "discount_amounts": [json.dumps(u["discount_amounts"]) for u in updates],
            "tax_amounts": [json.dumps(u["tax_amounts"]) for u in updates],
        },
    )


def _tax_dict(tax: Any) -> dict[str, Any]:
    return {
        "amount": tax.amount,
        "tax_rate": tax.tax_rate,
        "taxable_amount": tax.taxable_amount,
        "inclusive": tax.inclusive,
    }


def finalize_reads(request: Request, customer: Customer, currency: str) -> tuple[list[dict[str, str]], Any]:
    """What finalization reads: the customer's tax ids and its balance row (locked).

    Read before the invoice changes, so that its changes reach the database in one UPDATE
    at the next flush instead of one per query in between.
    """
    tax_ids = request.session.execute(
        select(CustomerTaxId).where(CustomerTaxId.customer_id == customer.id).order_by(CustomerTaxId.created)  # type: ignore[arg-type]
    ).scalars()
    snapshot = [{"type": t.type, "value": t.value} for t in tax_ids]
    return snapshot, ledger.lock_balance(request.session, customer.id, currency)


def finalize_invoice(
    request: Request,
    invoice: Invoice,
    customer: Customer,
    reads: tuple[list[dict[str, str]], Any] | None = None,
) -> None:
    """Number, snapshot, apply the same-currency balance, write the ledger rows."""
    lifecycle.check_transition(invoice.id, invoice.status, "finalize")
    reprice_for_tax_status(request, invoice, customer)
    tax_ids, balance = reads or finalize_reads(request, customer, invoice.currency)
    invoice.number = lifecycle.invoice_number(customer.invoice_prefix, customer.next_invoice_sequence)
    customer.next_invoice_sequence += 1
    invoice.customer_email = customer.email
    invoice.customer_name = customer.name
    invoice.customer_phone = customer.phone
    invoice.customer_address = customer.address
    invoice.customer_shipping = customer.shipping
    invoice.customer_tax_ids = tax_ids

    info = currency_info(invoice.currency)
    credit = apply_credit_balance(invoice.total, balance.balance, info.minimum_charge if info else 0)
    common = {
        "customer_id": customer.id,
        "currency": invoice.currency,
        "now": request.now,
        "invoice_id": invoice.id,
    }
    ledger.append(
        request.session, amount=credit.applied, type="applied_to_invoice", balance=balance, **common
    )
    ledger.append(
        request.session, amount=credit.too_small, type="invoice_too_small", balance=balance, **common
    )
    invoice.starting_balance = credit.starting_balance
    invoice.ending_balance = credit.ending_balance
    invoice.amount_due = invoice.amount_remaining = credit.amount_due
    invoice.finalized_at = request.now
    invoice.status = lifecycle.PAID if credit.paid else lifecycle.OPEN
    if credit.paid:
        invoice.paid_at = request.now
    if invoice.collection_method == "send_invoice" and invoice.due_date is None:
        invoice.due_date = lifecycle.due_date(request.now, invoice.days_until_due or 0)
    held = customer_discount(request, customer.id)
    if held and held.coupon_id in (invoice.discounts or ()):
        coupon = request.session.get(CouponRow, held.coupon_id)
        if coupon is not None and coupon.duration == "once":
            request.session.delete(held)
            request.session.info["discounts"][customer.id] = (
                None  # used up: not for later invoices of this transaction
            )


def _next_part(command: InvoiceCreate) -> FollowUp:
    part = command.part + 1
    key = f"{command.idempotency_key}:part{part}"
    payload = payload_of(command)
    payload.update(part=part, id=derived_id(PREFIXES["invoice"], key))
    return FollowUp(CREATE_TASK, payload, key)


def create_invoice(request: Request, command: InvoiceCreate) -> Outcome:
    customer = request.lock_customer(command.customer)
    currency = command.currency or customer.currency
    if prior := request.replayed():
        # Ask again for the next part only if the first run asked for it (its outbox row):
        # it may have died before publishing. Items that arrived since are not ours.
        following = _next_part(command)
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
    request.ensure_new(Invoice, command.id, resource="invoice")
    invoice = Invoice(
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
    request.session.add(invoice)
    request.session.flush()
    lines: list[Any] = []
    if command.pending_invoice_items_behavior == "include":
        lines = claim_pending_items(
            request, invoice.id, customer.id, currency, subscription_first=subscription_id
        )
        if not lines:
            if command.part > 1:  # the chain's backlog is gone (another run took it): the chain ends
                request.session.delete(invoice)
                return None, []
            raise NothingToInvoice(
                f"customer {customer.id} has no pending {currency} invoice items", field="customer"
            )
    reads = finalize_reads(request, customer, currency) if command.finalize else None
    if coupons is None:
        coupons = _coupons(request, customer, command)
    price(request, invoice, lines, customer, coupons)
    if command.finalize:
        finalize_invoice(request, invoice, customer, reads)
    follow_ups = []
    # a period's own lines jump the queue, so its claim is not the oldest 250: probe it all
    claimed = lines if subscription_id is None else ()
    if command.pending_invoice_items_behavior == "include" and pending_remain(
        request, customer.id, currency, claimed
    ):
        follow_ups.append(_next_part(command))
    return invoice, follow_ups


def create_invoices_for_pending(request: Request, command: InvoicePendingCreate) -> Outcome:
    """One invoice chain per currency with pending items; each chain is its own task."""
    customer = request.lock_customer(command.customer)
    replay = request.replayed()
    currencies = request.session.execute(
        select(InvoiceItem.currency).where(InvoiceItem.customer_id == customer.id, _PENDING).distinct()
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


def lock_invoice(request: Request, invoice_id: str) -> tuple[Invoice, Customer]:
    """Lock the invoice's customer, then read the invoice as it is under that lock."""
    customer_id = request.session.execute(
        select(Invoice.customer_id).where(Invoice.id == invoice_id)
    ).scalar()  # type: ignore[arg-type]
    if customer_id is None:
        raise NotFound("invoice", invoice_id, field="invoice")
    customer = request.lock_customer(customer_id, field="invoice")
    invoice = request.session.execute(
        select(Invoice).where(Invoice.id == invoice_id).execution_options(populate_existing=True)  # type: ignore[arg-type]
    ).scalar_one()
    return invoice, customer


def finalize(request: Request, command: InvoiceAction) -> Outcome:
    invoice, customer = lock_invoice(request, command.invoice)
    if prior := request.replayed():
        return prior
    finalize_invoice(request, invoice, customer)
    return request.done(invoice.id)


def void(request: Request, command: InvoiceAction) -> Outcome:
    """Void gives back the balance the invoice consumed (``unapplied_from_invoice``)."""
    invoice, customer = lock_invoice(request, command.invoice)
    if prior := request.replayed():
        return prior
    lifecycle.check_transition(invoice.id, invoice.status, "void")
    applied = request.session.execute(
        select(func.coalesce(func.sum(BalanceTransaction.amount), 0)).where(
            BalanceTransaction.invoice_id == invoice.id,  # type: ignore[arg-type]
            BalanceTransaction.type.in_(("applied_to_invoice", "unapplied_from_invoice")),  # type: ignore[attr-defined]
        )
    ).scalar_one()
    ledger.append(
        request.session,
        customer_id=customer.id,
        currency=invoice.currency,
        amount=-applied,
        type="unapplied_from_invoice",
        now=request.now,
        invoice_id=invoice.id,
    )
    invoice.status = lifecycle.VOID
    invoice.voided_at = request.now
    return request.done(invoice.id)


def pay(request: Request, command: InvoicePay) -> Outcome:
    """Paid out of band: the whole remaining amount is recorded as paid."""
    invoice, _ = lock_invoice(request, command.invoice)
    if prior := request.replayed():
        return prior
    lifecycle.check_transition(invoice.id, invoice.status, "pay")
    invoice.amount_paid += invoice.amount_remaining
    invoice.amount_remaining = 0
    invoice.paid_out_of_band = True
    invoice.status = lifecycle.PAID
    invoice.paid_at = request.now
    return request.done(invoice.id)


def mark_uncollectible(request: Request, command: InvoiceAction) -> Outcome:
    """Decision: the balance applied at finalization stays consumed (only void gives it back)."""
    invoice, _ = lock_invoice(request, command.invoice)
    if prior := request.replayed():
        return prior
    lifecycle.check_transition(invoice.id, invoice.status, "mark_uncollectible")
    invoice.status = lifecycle.UNCOLLECTIBLE
    invoice.marked_uncollectible_at = request.now
    return request.done(invoice.id)


def delete_draft(request: Request, command: InvoiceAction) -> Outcome:
    """Only drafts can be deleted; their items go back to pending (Decision).

    The first run removes the invoice, so a redelivery replays before looking it up.
    """
    if prior := request.replayed():
        return prior
    try:
        invoice, _ = lock_invoice(request, command.invoice)
    except NotFound:
        if prior := request.replayed():  # a concurrent first run deleted it and committed
            return prior
        raise
    if prior := request.replayed():
        return prior
    lifecycle.check_transition(invoice.id, invoice.status, "delete")
    request.session.execute(
        update(InvoiceItem)
        .where(InvoiceItem.invoice_id == invoice.id)  # type: ignore[arg-type]
        .values(invoice_id=None, discount_amounts=None, tax_amounts=None)
        .execution_options(synchronize_session=False)
    )
    request.session.execute(delete(Invoice).where(Invoice.id == invoice.id))  # type: ignore[arg-type]
    return request.done(invoice.id)
