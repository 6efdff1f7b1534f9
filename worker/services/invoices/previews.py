"""Invoice preview (Stripe's "create preview invoice"; README: Invoice preview): the invoice that
creating one now, or a subscription's next renewal, would make, shown and written nowhere.

It is computed by the code that makes the invoice, not a copy of it: the customer read with
``Request.lock_customer``'s checks and clock (without the lock), the lines chosen by
``lines.pending_lines_in`` (a renewal's period lines by ``subscriptions.period_lines``, placed
as the claim would place them once stored), discounts and taxes by ``generation.compose_invoice``
and the credit by ``generation.credit_applied``, which is what finalization applies. Only the
writes are left out: no lock, no claim, no coupon redeemed, no number, no ledger row.

The invoice is shown as a draft would be once finalized: ``amount_due`` after the credit of
its currency, which Stripe's preview shows too. ``chain`` says how many pending items of the
currency the invoice would leave for the next parts of its chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session, col

from domain.errors import BadRequest, NothingToInvoice, WrongState
from domain.invoices import MAX_LINES_PER_INVOICE
from domain.money import check_currency
from domain.subscriptions import ACTIVE
from tasks.contracts import InvoiceCreate
from tasks.ids import PREFIXES, derived_id
from worker import clock
from worker.db import read_session
from worker.services.base import Request
from worker.services.invoices import statements
from worker.services.invoices.generation import compose_invoice, credit_applied
from worker.services.invoices.lines import pending_lines_in
from worker.services.invoices.pricing import line_amounts
from worker.services.subscriptions import next_period, period_coupons, period_invoice, period_lines
from worker.tables import CouponRow, Customer, CustomerBalance, InvoiceItem, Subscription
from worker.views import InvoiceContext, invoice_object

OPERATION = "billing.invoices.preview"
"""Not a task: the name a preview's ``Request`` carries (it stores no key)."""

PREVIEW_PREFIX = "upcoming_"
"""Stripe's preview invoices have ids ``upcoming_in_…``: here, ``upcoming_`` and the id the
invoice would get (a renewal's is known; a manual invoice's is derived from the preview)."""


def preview(
    customer: str,
    *,
    currency: str | None = None,
    subscription: str | None = None,
    session: Session | None = None,
    now: int | None = None,
) -> dict[str, Any]:
    """The Stripe-shaped invoice that ``billing.invoices.create`` for ``customer`` (in
    ``currency``, default the customer's) would make now, or the next renewal of
    ``subscription``, with ``chain``: the pending items it would leave for the next parts.
    Writes nothing. Bad input raises the typed error naming its field, as a task would.

    ``session``: a caller's (``worker.db.read_session()``); by default one of its own.
    ``now``: the time to preview at (Unix seconds; default the clock; a customer on a test
    clock is previewed at the clock's time, a renewal at its period's start at the earliest).
    """
    if session is None:
        with read_session() as own:
            return preview(customer, currency=currency, subscription=subscription, session=own, now=now)
    if not customer:
        raise BadRequest("name the customer to preview an invoice for", field="customer")
    if currency is not None:
        check_currency(currency)
    request = Request(session, OPERATION, "", "", clock.now() if now is None else now)
    payer = request.lock_customer(customer, lock=False)
    plan = (
        _renewal(request, payer, subscription, currency)
        if subscription is not None
        else _manual(request, payer, currency)
    )
    return _show(request, payer, plan)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What generation would be asked to make: its request, its lines, its coupons."""

    command: InvoiceCreate
    currency: str
    billing_reason: str
    subscription_id: str | None = None
    coupons: list[CouponRow] | None = None
    unstored: tuple[dict[str, Any], ...] = ()
    """A renewal's period lines, made by the renewal itself."""
    previous_period: tuple[int, int] | None = None


def _manual(request: Request, payer: Customer, currency: str | None) -> _Plan:
    currency = currency or payer.currency
    if currency is None:  # as ``generation.create`` refuses it
        raise BadRequest(
            f"customer {payer.id} has no default currency; name the invoice's currency", field="currency"
        )
    command = InvoiceCreate.model_validate(
        {
            "id": derived_id(PREFIXES["invoice"], f"preview:{payer.id}:{currency}"),
            "customer": payer.id,
            "currency": currency,
            "idempotency_key": f"preview:{payer.id}:{currency}",
        }
    )
    return _Plan(command, currency, "manual")


def _renewal(request: Request, payer: Customer, subscription_id: str, currency: str | None) -> _Plan:
    """The next period's invoice, as ``subscriptions.renew`` would bill it (``bill_period``)."""
    subscription = request.get(Subscription, subscription_id, resource="subscription", field="subscription")
    if subscription.customer_id != payer.id:
        raise BadRequest(
            f"subscription {subscription.id} belongs to another customer than {payer.id}",
            field="subscription",
        )
    if subscription.status != ACTIVE or subscription.cancel_at_period_end:
        raise WrongState(
            f"subscription {subscription.id} has no next renewal"
            f" ({'canceled' if subscription.status != ACTIVE else 'it ends at the period end'})",
            field="subscription",
        )
    billed_in = subscription.pending_currency or subscription.currency  # switched at the boundary
    if currency is not None and currency != billed_in:
        raise BadRequest(
            f"subscription {subscription.id} renews in {billed_in}, not {currency}", field="currency"
        )
    period = next_period(subscription)
    request.now = max(request.now, period.start)  # a renewal runs once its period has begun
    reason = "subscription_cycle"
    return _Plan(
        period_invoice(payer.id, subscription, period, reason, billed_in),
        billed_in,
        reason,
        subscription.id,
        period_coupons(request, subscription, period),
        tuple(period_lines(request, payer.id, subscription, period, billed_in)),
        (subscription.current_period_start, subscription.current_period_end),
    )


@dataclass(frozen=True, slots=True)
class _Unstored:
    """A period line not yet stored, as ``pending_lines_in`` reads a stored one (its claim
    order: the subscription's lines first, then by creation)."""

    id: str
    amount: int
    discountable: bool
    tax_rates: list[str] | None
    created: int
    first: int = 0


def _show(request: Request, payer: Customer, plan: _Plan) -> dict[str, Any]:
    session = request.session
    unstored = [
        _Unstored(row["id"], row["amount"], row["discountable"], row.get("tax_rates"), row["created"])
        for row in plan.unstored
    ]
    lines, _ = pending_lines_in(session, payer.id, plan.currency, plan.subscription_id, unstored)
    if not lines:
        raise NothingToInvoice(
            f"customer {payer.id} has no pending {plan.currency} invoice items", field="customer"
        )
    invoice, priced = compose_invoice(
        request, payer, plan.command, plan.currency, lines,
        coupons=plan.coupons, billing_reason=plan.billing_reason, subscription_id=plan.subscription_id,
        redeem=False,
    )  # fmt: skip
    stored_balance = session.get(CustomerBalance, (payer.id, plan.currency))
    credit_applied(invoice, stored_balance.balance if stored_balance else 0)
    invoice.id = PREVIEW_PREFIX + plan.command.id
    items = _items(session, lines, plan.unstored, line_amounts(lines, priced, every=True))
    shown = invoice_object(invoice, items, InvoiceContext(payer.test_clock_id, plan.previous_period))
    remaining = _pending_count(session, payer.id, plan.currency) + len(unstored) - len(lines)
    shown["chain"] = {
        "remaining_items": remaining,
        "next_invoices": -(-remaining // MAX_LINES_PER_INVOICE),
    }
    return shown


def _items(
    session: Session, lines: list[Any], unstored: tuple[dict[str, Any], ...], amounts: list[dict[str, Any]]
) -> list[InvoiceItem]:
    """The invoice's lines as items of their own, in claim order, with the amounts the claim
    would store: copies, so that nothing the session holds changes."""
    stored = {
        row.id: row.model_dump()
        for row in session.execute(
            select(InvoiceItem).where(col(InvoiceItem.id).in_([line.id for line in lines]))
        ).scalars()
    }
    made = {row["id"]: row for row in unstored}
    return [
        InvoiceItem(**{**(stored.get(line.id) or made[line.id]), **values})
        for line, values in zip(lines, amounts, strict=True)
    ]


def _pending_count(session: Session, customer_id: str, currency: str) -> int:
    return int(
        session.execute(
            select(func.count())
            .select_from(InvoiceItem)
            .where(
                col(InvoiceItem.customer_id) == customer_id,
                col(InvoiceItem.currency) == currency,
                statements.PENDING,
            )
        ).scalar_one()
    )
