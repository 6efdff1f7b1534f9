"""Subscriptions and their periods (domain/README.md §8).

A subscription bills one currency, one interval, periods computed from its stored
``billing_cycle_anchor`` (``domain.periods``). The rules (what a subscription may be made
of, which currency it bills, which period a renewal bills) are ``domain.subscriptions``;
this module locks, reads the rows, asks those rules and writes.

``bill_period`` is the one place a period becomes invoice lines and an invoice; it runs
under the customer's lock and first inserts the ``subscription_periods`` row, whose
primary key (subscription, period start) makes a second bill of the same period
impossible whatever delivers the request twice.

The period's invoice is made by the invoice generation of ``worker.services.invoices``:
it sweeps the customer's pending items of that currency too (the period's own lines
first), at most 250 per invoice, chaining the rest, and applies the same-currency
credit when it is finalized.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, insert, select
from sqlmodel import col

from domain import subscriptions as rules
from domain.coupons import check_redeemable
from domain.periods import Period
from domain.subscriptions import ACTIVE, CANCELED, PriceTerms, Schedule, SubscriptionState
from tasks.contracts import (
    InvoiceCreate,
    SubscriptionCancel,
    SubscriptionCreate,
    SubscriptionCurrencyChange,
    SubscriptionRenew,
)
from tasks.ids import PREFIXES, derived_id
from worker.db import table_of
from worker.services.base import FollowUp, Outcome, Request
from worker.services.coupons import redemptions
from worker.services.customers import set_default_currency
from worker.services.invoices.generation import generate_invoice
from worker.tables import (
    CouponRow,
    Customer,
    InvoiceItem,
    Price,
    Product,
    Subscription,
    SubscriptionItem,
    SubscriptionPeriod,
)

RENEW_TASK = "billing.subscriptions.renew"
UPDATED = "customer.subscription.updated"
DELETED = "customer.subscription.deleted"


def renewal_key(subscription_id: str, period_start: int) -> str:
    """The idempotency key of billing one period; the period's invoice id derives from it."""
    return f"renew:{subscription_id}:{period_start}"


def renewal(subscription_id: str, period_start: int) -> FollowUp:
    key = renewal_key(subscription_id, period_start)
    payload = {"subscription": subscription_id, "period_start": period_start, "idempotency_key": key}
    return FollowUp(RENEW_TASK, payload, key)


def active_subscriptions(request: Request, customer_id: str) -> list[Subscription]:
    return list(
        request.session.execute(
            select(Subscription)
            .where(col(Subscription.customer_id) == customer_id, col(Subscription.status) == ACTIVE)
            .order_by(col(Subscription.created), col(Subscription.id))
        ).scalars()
    )


def _priced_items(request: Request, subscription_id: str) -> list[Row[SubscriptionItem, Price, Product]]:
    return list(
        request.session.execute(
            select(SubscriptionItem, Price, Product)
            .join(Price, col(Price.id) == col(SubscriptionItem.price_id))
            .join(Product, col(Product.id) == col(Price.product_id))
            .where(col(SubscriptionItem.subscription_id) == subscription_id)
            .order_by(col(SubscriptionItem.created), col(SubscriptionItem.id))
        ).all()
    )


def _terms(price: Price) -> PriceTerms:
    return PriceTerms(
        price.id,
        price.currency,
        price.unit_amount,
        price.currency_options,
        price.recurring_interval,
        price.recurring_interval_count,
    )


def _state(subscription: Subscription) -> SubscriptionState:
    schedule = Schedule(subscription.billing_cycle_anchor, subscription.interval, subscription.interval_count)
    current = Period(subscription.current_period_start, subscription.current_period_end)
    return SubscriptionState(subscription.id, subscription.status, schedule, current)


def _switch_currency(request: Request, customer_id: str) -> None:
    """A pending currency change takes effect for all the customer's subscriptions at once,
    so no two active subscriptions of one customer ever bill different currencies."""
    for subscription in active_subscriptions(request, customer_id):
        if subscription.pending_currency is not None:
            before = request.render(subscription)
            subscription.currency, subscription.pending_currency = subscription.pending_currency, None
            request.emit(UPDATED, subscription, previous=before)


def bill_period(
    request: Request, customer: Customer, subscription: Subscription, period: Period, billing_reason: str
) -> tuple[str | None, list[FollowUp]]:
    """Bill ``period`` (the one after the current period, or the first): lines and invoice.

    Returns the invoice id (None when the subscription ended at this boundary instead)
    and the follow-ups of the invoice chain. The caller holds the customer's lock. A renewal
    emits ``customer.subscription.updated`` (the period moved), or ``.deleted`` when the
    subscription ends at this boundary.
    """
    if subscription.pending_currency is not None:
        _switch_currency(request, customer.id)
    renewing = billing_reason != "subscription_create"
    before = request.render(subscription) if renewing else None
    if rules.ends_at_boundary(billing_reason, subscription.cancel_at_period_end):
        subscription.status = CANCELED
        subscription.ended_at = period.start
        request.emit(DELETED, subscription)
        return None, []
    billed = _record_period(request, subscription, period, billing_reason)
    lines = period_lines(request, customer.id, subscription, period, subscription.currency)
    request.session.execute(insert(table_of(InvoiceItem)), lines)
    command = period_invoice(customer.id, subscription, period, billing_reason, subscription.currency)
    invoice, follow_ups = generate_invoice(
        request,
        customer,
        command,
        subscription.currency,
        coupons=period_coupons(request, subscription, period),
        billing_reason=billing_reason,
        subscription_id=subscription.id,
    )
    billed.invoice_id = invoice.id if invoice else None
    subscription.current_period_start, subscription.current_period_end = period.start, period.end
    if before is not None:
        request.emit(UPDATED, subscription, previous=before)
    return billed.invoice_id, follow_ups


def _record_period(
    request: Request, subscription: Subscription, period: Period, billing_reason: str
) -> SubscriptionPeriod:
    billed = SubscriptionPeriod(
        subscription_id=subscription.id,
        period_start=period.start,
        period_end=period.end,
        currency=subscription.currency,
        billing_reason=billing_reason,
        created=request.now,
    )
    request.session.add(billed)
    request.session.flush()  # a second bill of this period fails here, on the primary key
    return billed


def period_lines(
    request: Request, customer_id: str, subscription: Subscription, period: Period, currency: str
) -> list[dict[str, Any]]:
    """The period's pending lines in ``currency``, one per item, as rows to insert; their ids
    derive from the renewal key, so they are made once."""
    key = renewal_key(subscription.id, period.start)
    rows = []
    for index, (item, price, product) in enumerate(_priced_items(request, subscription.id)):
        line = rules.period_line(_terms(price), product.name, item.quantity, currency, index)
        rows.append(
            {
                "id": derived_id(PREFIXES["invoice_item"], f"{key}:{item.id}"),
                "customer_id": customer_id,
                "currency": currency,
                "amount": line.amount,
                "unit_amount": line.unit_amount,
                "quantity": line.quantity,
                "description": line.description,
                "discountable": True,
                "period_start": period.start,
                "period_end": period.end,
                "subscription_id": subscription.id,
                "created": request.now,
            }
        )
    return rows


def period_invoice(
    customer_id: str, subscription: Subscription, period: Period, billing_reason: str, currency: str
) -> InvoiceCreate:
    """The request that makes the period's invoice, keyed (and identified) by its renewal key."""
    key = renewal_key(subscription.id, period.start)
    options: dict[str, Any] = {
        "id": derived_id(PREFIXES["invoice"], key),
        "customer": customer_id,
        "currency": currency,
        "collection_method": subscription.collection_method,
        "auto_advance": subscription.auto_advance,
        "idempotency_key": key,
    }
    if subscription.days_until_due is not None:
        options["days_until_due"] = subscription.days_until_due
    if billing_reason == "subscription_create":
        options["finalize"] = True
    return InvoiceCreate.model_validate(options)


def period_coupons(request: Request, subscription: Subscription, period: Period) -> list[CouponRow] | None:
    """The subscription's coupon while it covers the period; None: the customer's discount, as
    on any invoice."""
    if subscription.coupon_id is None or not rules.discount_applies(subscription.discount_end, period.start):
        return None
    return [request.get(CouponRow, subscription.coupon_id, resource="coupon", field="coupon")]


def next_period(subscription: Subscription) -> Period:
    return _state(subscription).next_period()


def create(request: Request, command: SubscriptionCreate) -> Outcome:
    """Validate everything, then write the subscription and bill its first period at once."""
    customer = request.lock_customer(command.customer)
    if prior := request.replayed():
        return prior
    request.ensure_new(Subscription, command.id, resource="subscription")
    prices = _recurring_prices(request, command)
    currency, pending = _currencies(request, customer, command, prices)

    coupon = None
    if command.coupon is not None:
        coupon = request.get(CouponRow, command.coupon, resource="coupon", field="coupon")
        check_redeemable(redemptions(coupon), request.now, field="coupon")
    anchor = command.billing_cycle_anchor if command.billing_cycle_anchor is not None else request.now
    schedule = rules.schedule_from(anchor, prices[0], request.now)
    first = schedule.period_containing(request.now)

    # every check passed: write
    if coupon is not None:
        coupon.times_redeemed += 1
    set_default_currency(customer, currency, field="customer")
    subscription = _add_subscription(
        request,
        command,
        customer.id,
        currency=currency,
        pending=pending,
        schedule=schedule,
        first=first,
        coupon=coupon,
    )
    _add_items(request, command)
    request.emit("customer.subscription.created", subscription)
    _, follow_ups = bill_period(request, customer, subscription, first, "subscription_create")
    outcome = request.done(subscription.id)
    outcome.follow_ups.extend(follow_ups)
    return outcome


def _recurring_prices(request: Request, command: SubscriptionCreate) -> list[PriceTerms]:
    """The items' prices, in item order; each item is checked before the next price is read."""
    price_ids = [item.price for item in command.items]
    prices: list[PriceTerms] = []
    for index, price_id in enumerate(price_ids):
        rules.check_listed_once(price_ids, index)
        price = _terms(request.get(Price, price_id, resource="price", field=f"items[{index}].price"))
        rules.check_recurring(price, index, prices[0] if prices else None)
        prices.append(price)
    return prices


def _currencies(
    request: Request, customer: Customer, command: SubscriptionCreate, prices: list[PriceTerms]
) -> tuple[str, str | None]:
    """The currency the subscription bills and the one it moves to at its next boundary: those
    of the customer's active subscriptions, which all move together."""
    active = active_subscriptions(request, customer.id)
    currency = rules.billing_currency(
        customer.id,
        requested=command.currency,
        held=active[0].currency if active else None,
        customer_currency=customer.currency,
        first_price_currency=prices[0].currency,
    )
    pending = active[0].pending_currency if active else None
    quantities = [item.quantity for item in command.items]
    rules.check_items_priced(list(zip(prices, quantities, strict=True)), currency, pending)
    return currency, pending


def _add_subscription(
    request: Request,
    command: SubscriptionCreate,
    customer_id: str,
    *,
    currency: str,
    pending: str | None,
    schedule: Schedule,
    first: Period,
    coupon: CouponRow | None,
) -> Subscription:
    subscription = Subscription(
        id=command.id,
        customer_id=customer_id,
        currency=currency,
        pending_currency=pending,
        interval=schedule.interval,
        interval_count=schedule.interval_count,
        billing_cycle_anchor=schedule.anchor,
        current_period_start=first.start,
        current_period_end=first.end,
        collection_method=command.collection_method,
        days_until_due=command.days_until_due,
        auto_advance=command.auto_advance,
        coupon_id=coupon.id if coupon else None,
        discount_start=request.now if coupon else None,
        discount_end=rules.discount_end(coupon.duration, coupon.duration_in_months, request.now, first.end)
        if coupon
        else None,
        cancel_at_period_end=command.cancel_at_period_end,
        metadata_=command.metadata,
        created=request.now,
    )
    request.session.add(subscription)
    request.session.flush()
    return subscription


def _add_items(request: Request, command: SubscriptionCreate) -> None:
    for item in command.items:
        request.session.add(
            SubscriptionItem(
                id=derived_id(PREFIXES["subscription_item"], f"{command.id}:{item.price}"),
                subscription_id=command.id,
                price_id=item.price,
                quantity=item.quantity,
                created=request.now,
            )
        )
    request.session.flush()


def renew(request: Request, command: SubscriptionRenew) -> Outcome:
    """Bill the period starting at ``period_start`` if it is the next one and it is due.

    A period already billed, or a subscription canceled since the request was made, is
    not an error (beat and redeliveries ask again): nothing is billed. When the period
    after this one is due too (beat was down), it is asked for next, so missed periods
    are billed one by one, in order.
    """
    subscription, customer = request.lock_owner(Subscription, command.subscription, resource="subscription")
    if prior := request.replayed():
        return prior
    period = rules.renewal_period(_state(subscription), command.period_start, request.now)
    if period is None:
        billed = request.session.get(SubscriptionPeriod, (subscription.id, command.period_start))
        return request.done(billed.invoice_id if billed else None)
    invoice_id, follow_ups = bill_period(request, customer, subscription, period, "subscription_cycle")
    subscription.renewal_requested_at = None
    if rules.renewal_due(subscription.status, subscription.current_period_end, request.now):
        follow_ups.append(renewal(subscription.id, subscription.current_period_end))
        subscription.renewal_requested_at = request.received
    outcome = request.done(invoice_id)
    outcome.follow_ups.extend(follow_ups)
    return outcome


def cancel(request: Request, command: SubscriptionCancel) -> Outcome:
    """Now: the subscription ends at once (the period already billed is not refunded).
    At period end: it ends at the next boundary instead of billing it."""
    subscription, _ = request.lock_owner(Subscription, command.subscription, resource="subscription")
    if prior := request.replayed():
        return prior
    rules.check_cancelable(subscription.id, subscription.status)
    before = request.render(subscription)
    subscription.canceled_at = request.now
    if command.at_period_end:
        subscription.cancel_at_period_end = True
        request.emit(UPDATED, subscription, previous=before)
    else:
        subscription.status = CANCELED
        subscription.ended_at = request.now
        request.emit(DELETED, subscription)
    return request.done(subscription.id)


def change_currency(request: Request, command: SubscriptionCurrencyChange) -> Outcome:
    """Every active subscription of the customer bills ``currency`` from the next period
    boundary of any of them on (``_switch_currency``); periods already billed are untouched.
    Naming the current currency withdraws a pending change."""
    customer = request.lock_customer(command.customer)
    if prior := request.replayed():
        return prior
    active = active_subscriptions(request, customer.id)
    rules.check_has_active(customer.id, len(active))
    for subscription in active:
        prices = [_terms(price) for _, price, _ in _priced_items(request, subscription.id)]
        rules.check_priced_in(command.currency, subscription.id, prices)
    for subscription in active:
        pending = rules.pending_currency_after_change(subscription.currency, command.currency)
        if pending != subscription.pending_currency:
            before = request.render(subscription)
            subscription.pending_currency = pending
            request.emit(UPDATED, subscription, previous=before)
    return request.done(customer.id)
