"""Subscriptions and their periods (SPEC §8).

A subscription bills one currency, one interval, periods computed from its stored
``billing_cycle_anchor`` (``domain.periods``). ``bill_period`` is the one place a period
becomes invoice lines and an invoice; it runs under the customer's lock and first inserts
the ``subscription_periods`` row, whose primary key (subscription, period start) makes a
second bill of the same period impossible whatever delivers the request twice.

The period's invoice is made by the invoice generation of ``worker.services.invoices``:
it sweeps the customer's pending items of that currency too (the period's own lines
first), at most 250 per invoice, chaining the rest, and applies the same-currency
credit when it is finalized.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select

from domain.coupons import check_redeemable
from domain.errors import BadRequest, NotFound, SubscriptionCurrencyConflict, WrongState
from domain.periods import Period, period_after, period_containing
from domain.subscriptions import discount_applies, discount_end, line_amount, unit_amount_in
from tasks.contracts import (
    InvoiceCreate,
    SubscriptionCancel,
    SubscriptionCreate,
    SubscriptionCurrencyChange,
    SubscriptionRenew,
)
from tasks.ids import PREFIXES, derived_id
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
ACTIVE = "active"
CANCELED = "canceled"


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
            .where(Subscription.customer_id == customer_id, Subscription.status == ACTIVE)  # type: ignore[arg-type]
            .order_by(Subscription.created, Subscription.id)
        ).scalars()
    )


def _priced_items(request: Request, subscription_id: str) -> list[Any]:
    return list(
        request.session.execute(
            select(SubscriptionItem, Price, Product)
            .join(Price, Price.id == SubscriptionItem.price_id)  # type: ignore[arg-type]
            .join(Product, Product.id == Price.product_id)  # type: ignore[arg-type]
            .where(SubscriptionItem.subscription_id == subscription_id)  # type: ignore[arg-type]
            .order_by(SubscriptionItem.created, SubscriptionItem.id)
        ).all()
    )


def _amount_in(price: Price, currency: str) -> int | None:
    return unit_amount_in(currency, price.currency, price.unit_amount, price.currency_options)


def _switch_currency(request: Request, customer_id: str) -> None:
    """A pending currency change takes effect for all the customer's subscriptions at once,
    so no two active subscriptions of one customer ever bill different currencies."""
    for subscription in active_subscriptions(request, customer_id):
        if subscription.pending_currency is not None:
            subscription.currency, subscription.pending_currency = subscription.pending_currency, None


def bill_period(
    request: Request, customer: Customer, subscription: Subscription, period: Period, billing_reason: str
) -> tuple[str | None, list[FollowUp]]:
    """Bill ``period`` (the one after the current period, or the first): lines and invoice.

    Returns the invoice id (None when the subscription ended at this boundary instead)
    and the follow-ups of the invoice chain. The caller holds the customer's lock.
    """
    if subscription.pending_currency is not None:
        _switch_currency(request, customer.id)
    if billing_reason == "subscription_cycle" and subscription.cancel_at_period_end:
        subscription.status = CANCELED
        subscription.ended_at = period.start
        return None, []
    key = renewal_key(subscription.id, period.start)
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
    rows = []
    for index, (item, price, product) in enumerate(_priced_items(request, subscription.id)):
        unit = _amount_in(price, subscription.currency)
        if unit is None:  # checked when the subscription or its currency was set; prices are immutable
            raise WrongState(f"price {price.id} has no {subscription.currency} amount", field="subscription")
        rows.append(
            {
                "id": derived_id(PREFIXES["invoice_item"], f"{key}:{item.id}"),
                "customer_id": customer.id,
                "currency": subscription.currency,
                "amount": line_amount(unit, item.quantity, field=f"items[{index}].quantity"),
                "unit_amount": unit,
                "quantity": item.quantity,
                "description": f"{item.quantity} × {product.name}",  # noqa: RUF001 (Stripe's wording)
                "discountable": True,
                "period_start": period.start,
                "period_end": period.end,
                "subscription_id": subscription.id,
                "created": request.now,
            }
        )
    request.session.execute(insert(InvoiceItem.__table__), rows)  # type: ignore[attr-defined]
    options: dict[str, Any] = {
        "id": derived_id(PREFIXES["invoice"], key),
        "customer": customer.id,
        "currency": subscription.currency,
        "collection_method": subscription.collection_method,
        "auto_advance": subscription.auto_advance,
        "idempotency_key": key,
    }
    if subscription.days_until_due is not None:
        options["days_until_due"] = subscription.days_until_due
    if billing_reason == "subscription_create":
        options["finalize"] = True
    command = InvoiceCreate.model_validate(options)
    coupons = None  # none of its own: the customer's discount, as on any invoice
    if subscription.coupon_id is not None and discount_applies(subscription.discount_end, period.start):
        coupons = [request.get(CouponRow, subscription.coupon_id, resource="coupon", field="coupon")]
    invoice, follow_ups = generate_invoice(
        request,
        customer,
        command,
        subscription.currency,
        coupons=coupons,
        billing_reason=billing_reason,
        subscription_id=subscription.id,
    )
    billed.invoice_id = invoice.id if invoice else None
    subscription.current_period_start, subscription.current_period_end = period.start, period.end
    return billed.invoice_id, follow_ups


def next_period(subscription: Subscription) -> Period:
    current = Period(subscription.current_period_start, subscription.current_period_end)
    return period_after(
        subscription.billing_cycle_anchor, subscription.interval, subscription.interval_count, current
    )


def create(request: Request, command: SubscriptionCreate) -> Outcome:
    """Validate everything, then write the subscription and bill its first period at once."""
    customer = request.lock_customer(command.customer)
    if prior := request.replayed():
        return prior
    request.ensure_new(Subscription, command.id, resource="subscription")
    prices: list[Price] = []
    for index, item in enumerate(command.items):
        field = f"items[{index}].price"
        if any(earlier.price == item.price for earlier in command.items[:index]):
            raise BadRequest(f"price {item.price} is listed twice; raise its quantity instead", field=field)
        price = request.get(Price, item.price, resource="price", field=field)
        if price.recurring_interval is None or price.recurring_interval_count is None:
            raise BadRequest(
                f"price {price.id} is a one-time price; subscriptions need recurring prices", field=field
            )
        if prices and (price.recurring_interval, price.recurring_interval_count) != (
            prices[0].recurring_interval,
            prices[0].recurring_interval_count,
        ):
            raise BadRequest(
                f"price {price.id} bills every {price.recurring_interval_count} {price.recurring_interval},"
                f" items[0].price every {prices[0].recurring_interval_count} {prices[0].recurring_interval};"
                " one subscription has one interval",
                field=field,
            )
        prices.append(price)

    active = active_subscriptions(request, customer.id)
    held = active[0].currency if active else None
    currency = command.currency or held or customer.currency or prices[0].currency
    if held is not None and currency != held:
        raise SubscriptionCurrencyConflict(
            f"customer {customer.id} has active subscriptions in {held}; all of a customer's subscriptions"
            " bill one currency (move them together with billing.subscriptions.change_currency)",
            field="currency",
        )
    pending = active[0].pending_currency if active else None
    for index, (item, price) in enumerate(zip(command.items, prices, strict=True)):
        for wanted in (currency, pending):
            if wanted is not None and _amount_in(price, wanted) is None:
                raise BadRequest(
                    f"price {price.id} has no {wanted} amount (add it to the price's currency_options)",
                    field=f"items[{index}].price",
                )
        line_amount(_amount_in(price, currency) or 0, item.quantity, field=f"items[{index}].quantity")

    coupon = None
    if command.coupon is not None:
        coupon = request.get(CouponRow, command.coupon, resource="coupon", field="coupon")
        check_redeemable(redemptions(coupon), request.now, field="coupon")
    anchor = command.billing_cycle_anchor if command.billing_cycle_anchor is not None else request.now
    if anchor > request.now:
        raise BadRequest(
            "must not be in the future (a prorated first period is not supported); give a past anchor"
            " on the wanted day, e.g. last month's 1st",
            field="billing_cycle_anchor",
        )
    interval, count = prices[0].recurring_interval, prices[0].recurring_interval_count
    assert interval is not None and count is not None
    first = period_containing(anchor, interval, count, request.now)

    # every check passed: write
    if coupon is not None:
        coupon.times_redeemed += 1
    set_default_currency(customer, currency, field="customer")
    subscription = Subscription(
        id=command.id,
        customer_id=customer.id,
        currency=currency,
        pending_currency=pending,
        interval=interval,
        interval_count=count,
        billing_cycle_anchor=anchor,
        current_period_start=first.start,
        current_period_end=first.end,
        collection_method=command.collection_method,
        days_until_due=command.days_until_due,
        auto_advance=command.auto_advance,
        coupon_id=coupon.id if coupon else None,
        discount_start=request.now if coupon else None,
        discount_end=discount_end(coupon.duration, coupon.duration_in_months, request.now, first.end)
        if coupon
        else None,
        cancel_at_period_end=command.cancel_at_period_end,
        metadata_=command.metadata,
        created=request.now,
    )
    request.session.add(subscription)
    request.session.flush()
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
    _, follow_ups = bill_period(request, customer, subscription, first, "subscription_create")
    outcome = request.done(subscription.id)
    outcome.follow_ups.extend(follow_ups)
    return outcome


def _lock_subscription(request: Request, subscription_id: str) -> tuple[Subscription, Customer]:
    """Lock the subscription's customer, then read the subscription as it is under that lock."""
    customer_id = request.session.execute(
        select(Subscription.customer_id).where(Subscription.id == subscription_id)  # type: ignore[arg-type]
    ).scalar()
    if customer_id is None:
        raise NotFound("subscription", subscription_id, field="subscription")
    customer = request.lock_customer(customer_id, field="subscription")
    subscription = request.session.execute(
        select(Subscription)
        .where(Subscription.id == subscription_id)  # type: ignore[arg-type]
        .execution_options(populate_existing=True)
    ).scalar_one()
    return subscription, customer


def renew(request: Request, command: SubscriptionRenew) -> Outcome:
    """Bill the period starting at ``period_start`` if it is the next one and it is due.

    A period already billed, or a subscription canceled since the request was made, is
    not an error (beat and redeliveries ask again): nothing is billed. When the period
    after this one is due too (beat was down), it is asked for next, so missed periods
    are billed one by one, in order.
    """
    subscription, customer = _lock_subscription(request, command.subscription)
    if prior := request.replayed():
        return prior
    if command.period_start > request.now:
        raise WrongState(
            f"period {command.period_start} is not due yet (now {request.now})", field="period_start"
        )
    period = period_containing(
        subscription.billing_cycle_anchor,
        subscription.interval,
        subscription.interval_count,
        command.period_start,
    )
    if period.start != command.period_start:
        raise BadRequest(
            f"{command.period_start} is not a period boundary of subscription {subscription.id}"
            f" (the period around it starts at {period.start})",
            field="period_start",
        )
    if period.start < subscription.current_period_end or subscription.status != ACTIVE:
        billed = request.session.get(SubscriptionPeriod, (subscription.id, period.start))
        return request.done(billed.invoice_id if billed else None)
    if period.start > subscription.current_period_end:
        raise WrongState(
            f"period {period.start} is not the next to bill; {subscription.current_period_end} comes first",
            field="period_start",
        )
    invoice_id, follow_ups = bill_period(request, customer, subscription, period, "subscription_cycle")
    subscription.renewal_requested_at = None
    if subscription.status == ACTIVE and subscription.current_period_end <= request.now:
        follow_ups.append(renewal(subscription.id, subscription.current_period_end))
        subscription.renewal_requested_at = request.received
    outcome = request.done(invoice_id)
    outcome.follow_ups.extend(follow_ups)
    return outcome


def cancel(request: Request, command: SubscriptionCancel) -> Outcome:
    """Now: the subscription ends at once (the period already billed is not refunded).
    At period end: it ends at the next boundary instead of billing it."""
    subscription, _ = _lock_subscription(request, command.subscription)
    if prior := request.replayed():
        return prior
    if subscription.status != ACTIVE:
        raise WrongState(f"subscription {subscription.id} is already canceled", field="subscription")
    subscription.canceled_at = request.now
    if command.at_period_end:
        subscription.cancel_at_period_end = True
    else:
        subscription.status = CANCELED
        subscription.ended_at = request.now
    return request.done(subscription.id)


def change_currency(request: Request, command: SubscriptionCurrencyChange) -> Outcome:
    """Every active subscription of the customer bills ``currency`` from the next period
    boundary of any of them on (``_switch_currency``); periods already billed are untouched.
    Naming the current currency withdraws a pending change."""
    customer = request.lock_customer(command.customer)
    if prior := request.replayed():
        return prior
    active = active_subscriptions(request, customer.id)
    if not active:
        raise WrongState(f"customer {customer.id} has no active subscriptions", field="customer")
    for subscription in active:
        for _, price, _ in _priced_items(request, subscription.id):
            if _amount_in(price, command.currency) is None:
                raise BadRequest(
                    f"price {price.id} of subscription {subscription.id} has no {command.currency} amount"
                    " (add it to the price's currency_options)",
                    field="currency",
                )
    for subscription in active:
        subscription.pending_currency = (
            None if command.currency == subscription.currency else command.currency
        )
    return request.done(customer.id)
