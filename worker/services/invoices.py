"""Invoices: generation from pending items, pricing, finalization and the lifecycle (SPEC §4-6).

Generation claims at most 250 of a customer's oldest pending items in the invoice's
currency (read with one SELECT under the customer's lock, priced, then attached with their
amounts by one UPDATE), in the same transaction that writes the invoice, prices it and
(when asked) finalizes it. If items of that currency remain, the outcome carries a
follow-up for the next part of the chain; the task publishes it after the commit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, case, delete, func, select, text, update

from domain import invoices as lifecycle
from domain.credit import apply_credit_balance
from domain.currencies import currency_info
from domain.errors import BadRequest, NotFound, NothingToInvoice, TransientError
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


_PRICED_COLUMNS = (
    InvoiceItem.id,
    InvoiceItem.amount,
    InvoiceItem.discountable,
    InvoiceItem.tax_rates,
    InvoiceItem.created,
)
"""What pricing reads of a line (and claim order needs: created, id)."""


_PENDING_LINES = (
    select(*_PRICED_COLUMNS)
    .where(
        InvoiceItem.customer_id == bindparam("customer"),  # type: ignore[arg-type]
        InvoiceItem.currency == bindparam("currency"),  # type: ignore[arg-type]
        _PENDING,
    )
    .order_by(InvoiceItem.created, InvoiceItem.id)
    .limit(lifecycle.MAX_LINES_PER_INVOICE + 1)
)
"""Built once: the hot path's statements are not rebuilt (and their cache keys not
recomputed) for every invoice."""


def pending_lines(
    request: Request, customer_id: str, currency: str, *, subscription_first: str | None = None
) -> tuple[list[Any], bool]:
    """The oldest ≤ 250 pending items of (customer, currency), in claim order (created, id),
    and whether more remain for the chain's next part: one SELECT of 251.

    The caller holds the customer's lock, which every claim takes, so the items stay
    pending until ``write_lines`` attaches them in this transaction; an item committed
    after this read waits for the next invoice, like one that arrives after it.
    ``subscription_first``: that subscription's items come first, so a period's own lines
    are on its invoice even behind a backlog of older pending items.
    """
    stmt = _PENDING_LINES
    if subscription_first is not None:
        first = case((InvoiceItem.subscription_id == subscription_first, 0), else_=1)
        stmt = stmt.order_by(None).order_by(first, InvoiceItem.created, InvoiceItem.id)
    rows = request.session.execute(stmt, {"customer": customer_id, "currency": currency}).all()
    lines = rows[: lifecycle.MAX_LINES_PER_INVOICE]
    if subscription_first is not None:
        lines.sort(key=lambda row: (row.created, row.id))
    return lines, len(rows) > lifecycle.MAX_LINES_PER_INVOICE


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


_DISCOUNT = select(DiscountRow).where(DiscountRow.customer_id == bindparam("customer"))  # type: ignore[arg-type]


def customer_discount(request: Request, customer_id: str) -> DiscountRow | None:
    # Asked by pricing and again by finalization: read once per transaction (the customer is locked).
    held = request.session.info.setdefault("discounts", {})
    if customer_id not in held:
        held[customer_id] = request.session.execute(_DISCOUNT, {"customer": customer_id}).scalar()
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
) -> PricedInvoice:
    """Discounts and taxes of every line and the invoice's totals, for the customer's tax
    status now (recorded on the invoice). Lines are in claim order: (created, id). The
    lines' own amounts are the caller's to store (``line_amounts``, ``write_lines``).
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


def line_amounts(lines: Sequence[Any], priced: PricedInvoice, *, every: bool) -> list[dict[str, Any]]:
    """Per line: its discount and tax amounts as stored. ``every``: also lines that get
    none ([] each); else those stay NULL, as freshly claimed lines are."""
    out = []
    for line, p in zip(lines, priced.lines, strict=True):
        row: dict[str, Any] = {"id": line.id}
        if every or p.discount_amounts or p.tax_amounts:
            row["discount_amounts"] = [{"amount": d.amount, "discount": d.coupon} for d in p.discount_amounts]
            row["tax_amounts"] = [_tax_dict(t) for t in p.tax_amounts]
        out.append(row)
    return out


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
    priced = price(request, invoice, lines, customer, coupons)
    write_lines(request, line_amounts(lines, priced, every=True))


_WRITE_LINES = (
    "UPDATE invoice_items SET discount_amounts = u.discount_amounts, tax_amounts = u.tax_amounts{claim}"
    " FROM jsonb_to_recordset(CAST(:lines AS jsonb))"
    " AS u(id varchar, discount_amounts jsonb, tax_amounts jsonb) WHERE invoice_items.id = u.id{pending}"
)
_LINE_AMOUNTS = text(_WRITE_LINES.format(claim="", pending=""))
# The pending guard is spelt so that no index can serve it: with ``IS NULL`` the planner
# scans every pending item through the invoice_id index (it assumes 100 rows from the JSON
# document and few pending items) instead of looking up 250 by primary key, measured 15 ms
# instead of 2 at 100k pending. PostgreSQL folds ``IS NOT DISTINCT FROM NULL`` into ``IS NULL``.
_CLAIM_LINES = text(
    _WRITE_LINES.format(
        claim=", invoice_id = :invoice", pending=" AND coalesce(invoice_items.invoice_id, '') = ''"
    )
)


def write_lines(request: Request, lines: list[dict[str, Any]], *, claim_for: str | None = None) -> None:
    """Store lines' discount and tax amounts (``line_amounts``) in one statement; with
    ``claim_for``, also attach them, still pending, to that invoice.

    PostgreSQL: one UPDATE … FROM jsonb_to_recordset(one JSON document), not one statement
    per line. Elsewhere: one executemany.
    """
    if not lines:
        return
    session = request.session
    if session.get_bind().dialect.name == "postgresql":
        if claim_for is None:
            result = session.execute(_LINE_AMOUNTS, {"lines": json.dumps(lines)})
        else:
            result = session.execute(_CLAIM_LINES, {"lines": json.dumps(lines), "invoice": claim_for})
    else:
        table: Any = InvoiceItem.__table__  # type: ignore[attr-defined]
        stmt = (
            update(table)
            .where(table.c.id == bindparam("line_id"))
            .values(discount_amounts=bindparam("d"), tax_amounts=bindparam("t"))
        )
        if claim_for is not None:
            stmt = stmt.where(table.c.invoice_id.is_(None)).values(invoice_id=claim_for)
        result = session.execute(
            stmt,
            [
                {"line_id": line["id"], "d": line.get("discount_amounts"), "t": line.get("tax_amounts")}
                for line in lines
            ],
        )
    if claim_for is not None and result.rowcount != len(lines):  # type: ignore[attr-defined]
        # every claim holds the customer's lock: this would be a change made without it
        raise ConcurrentClaim(
            f"{len(lines) - result.rowcount} of {len(lines)} items read as pending were no longer"  # type: ignore[attr-defined]
            f" pending when invoice {claim_for} claimed them"
        )


class ConcurrentClaim(TransientError):
    """Items changed under a claim: the transaction rolls back and the task retries."""


def _tax_dict(tax: Any) -> dict[str, Any]:
    return {
        "amount": tax.amount,
        "tax_rate": tax.tax_rate,
        "taxable_amount": tax.taxable_amount,
        "inclusive": tax.inclusive,
    }


_TAX_IDS = (
    select(CustomerTaxId)
    .where(CustomerTaxId.customer_id == bindparam("customer"))  # type: ignore[arg-type]
    .order_by(CustomerTaxId.created)
)


def finalize_reads(request: Request, customer: Customer, currency: str) -> tuple[list[dict[str, str]], Any]:
    """What finalization reads: the customer's tax ids and its balance row (locked).

    Read before the invoice changes, so that its changes reach the database in one UPDATE
    at the next flush instead of one per query in between.
    """
    tax_ids = request.session.execute(_TAX_IDS, {"customer": customer.id}).scalars()
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
    request.ensure_new(Invoice, command.id, resource="invoice", on_conflict=True)
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
    if coupons is None:
        coupons = _coupons(request, customer, command)
    priced = price(request, invoice, lines, customer, coupons)
    session = request.session
    session.add(invoice)
    if command.finalize:
        finalize_invoice(request, invoice, customer, reads)
    session.flush()  # one INSERT of the whole invoice, finalized or not, before its ledger rows
    write_lines(request, line_amounts(lines, priced, every=False), claim_for=invoice.id)
    return invoice, [_next_part(command)] if more else []


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
