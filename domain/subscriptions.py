"""Subscription rules (domain/README.md §8): what a subscription may be made of, which
currency it bills, which period a renewal bills, what one period costs and which periods a
coupon covers.

Pure functions over plain values; the worker passes in rows as values and the time as an argument.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from domain.errors import BadRequest, SubscriptionCurrencyConflict, WrongState
from domain.money import MAX_AMOUNT
from domain.periods import Period, add_months, period_after, period_containing


class SubscriptionStatus(enum.StrEnum):
    """Stored as its value (``subscriptions.status``) and shown as it in every object."""

    ACTIVE = "active"
    CANCELED = "canceled"


ACTIVE: Final = SubscriptionStatus.ACTIVE
CANCELED: Final = SubscriptionStatus.CANCELED


@dataclass(frozen=True, slots=True)
class PriceTerms:
    """What the subscription rules need of a price."""

    id: str
    currency: str
    unit_amount: int
    currency_options: Mapping[str, int] | None = None
    interval: str | None = None
    """None for a one-time price."""
    interval_count: int | None = None

    def amount_in(self, currency: str) -> int | None:
        return unit_amount_in(currency, self.currency, self.unit_amount, self.currency_options)


@dataclass(frozen=True, slots=True)
class Schedule:
    """Where a subscription's periods start: every ``interval_count`` ``interval`` from ``anchor``,
    computed from the anchor, never step by step (``domain.periods``)."""

    anchor: int
    interval: str
    interval_count: int

    def period_containing(self, at: int) -> Period:
        return period_containing(self.anchor, self.interval, self.interval_count, at)

    def period_after(self, period: Period) -> Period:
        return period_after(self.anchor, self.interval, self.interval_count, period)


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    """What the renewal rules need of a subscription."""

    id: str
    status: str
    schedule: Schedule
    current_period: Period

    def next_period(self) -> Period:
        return self.schedule.period_after(self.current_period)


@dataclass(frozen=True, slots=True)
class PeriodLine:
    """One item's invoice line for one period."""

    unit_amount: int
    quantity: int
    amount: int
    description: str


def unit_amount_in(
    currency: str, price_currency: str, unit_amount: int, currency_options: Mapping[str, int] | None
) -> int | None:
    """A price's unit amount in ``currency``: its own, or the one in ``currency_options``; None if neither."""
    if currency == price_currency:
        return unit_amount
    return (currency_options or {}).get(currency)


def line_amount(unit_amount: int, quantity: int, *, field: str) -> int:
    """``unit_amount * quantity``: exact integer arithmetic, refused past the per-item limit."""
    amount = unit_amount * quantity
    if amount > MAX_AMOUNT:
        raise BadRequest(
            f"unit amount {unit_amount:,} times quantity {quantity:,} exceeds {MAX_AMOUNT:,}", field=field
        )
    return amount


# -- composing a subscription ---------------------------------------------------------------------


def check_listed_once(price_ids: Sequence[str], index: int) -> None:
    """One item per price: a second item of the same price would be a quantity in disguise."""
    price_id = price_ids[index]
    if price_id in price_ids[:index]:
        raise BadRequest(
            f"price {price_id} is listed twice; raise its quantity instead", field=f"items[{index}].price"
        )


def check_recurring(price: PriceTerms, index: int, first: PriceTerms | None) -> None:
    """Item ``index`` has a recurring price on the interval of ``first`` (items[0]'s price; None
    for items[0] itself): one subscription bills one interval."""
    field = f"items[{index}].price"
    if price.interval is None or price.interval_count is None:
        raise BadRequest(
            f"price {price.id} is a one-time price; subscriptions need recurring prices", field=field
        )
    if first is not None and (price.interval, price.interval_count) != (first.interval, first.interval_count):
        raise BadRequest(
            f"price {price.id} bills every {price.interval_count} {price.interval},"
            f" items[0].price every {first.interval_count} {first.interval};"
            " one subscription has one interval",
            field=field,
        )


def billing_currency(
    customer_id: str,
    *,
    requested: str | None,
    held: str | None,
    customer_currency: str | None,
    first_price_currency: str,
) -> str:
    """The currency a new subscription bills: the one requested, else ``held`` (that of the
    customer's active subscriptions), else the customer's, else the first price's.

    A customer's active subscriptions all bill one currency, so anything but ``held`` is refused.
    """
    currency = requested or held or customer_currency or first_price_currency
    if held is not None and currency != held:
        raise SubscriptionCurrencyConflict(
            f"customer {customer_id} has active subscriptions in {held}; all of a customer's subscriptions"
            " bill one currency (move them together with billing.subscriptions.change_currency)",
            field="currency",
        )
    return currency


def check_items_priced(items: Sequence[tuple[PriceTerms, int]], currency: str, pending: str | None) -> None:
    """Every item's price has an amount in ``currency`` and in ``pending`` (the currency the
    customer's subscriptions move to at their next boundary), and no line exceeds the limit."""
    for index, (price, quantity) in enumerate(items):
        for wanted in (currency, pending):
            if wanted is not None and price.amount_in(wanted) is None:
                raise BadRequest(
                    f"price {price.id} has no {wanted} amount (add it to the price's currency_options)",
                    field=f"items[{index}].price",
                )
        line_amount(price.amount_in(currency) or 0, quantity, field=f"items[{index}].quantity")


def schedule_from(anchor: int, price: PriceTerms, now: int) -> Schedule:
    """The periods of a subscription anchored at ``anchor`` on ``price``'s interval.

    A future anchor would need a prorated first period, which is not supported
    (domain/README.md §8).
    """
    if anchor > now:
        raise BadRequest(
            "must not be in the future (a prorated first period is not supported); give a past anchor"
            " on the wanted day, e.g. last month's 1st",
            field="billing_cycle_anchor",
        )
    assert price.interval is not None and price.interval_count is not None  # check_recurring
    return Schedule(anchor, price.interval, price.interval_count)


# -- billing its periods ----------------------------------------------------------------------------


def renewal_period(subscription: SubscriptionState, period_start: int, now: int) -> Period | None:
    """The period a renewal for ``period_start`` bills, or None when there is nothing to bill.

    A period already billed, or a subscription that ended since the renewal was asked for,
    is not an error (beat and redeliveries ask again). A period not yet due, not starting on
    a boundary, or not the next one is refused.
    """
    if period_start > now:
        raise WrongState(f"period {period_start} is not due yet (now {now})", field="period_start")
    period = subscription.schedule.period_containing(period_start)
    if period.start != period_start:
        raise BadRequest(
            f"{period_start} is not a period boundary of subscription {subscription.id}"
            f" (the period around it starts at {period.start})",
            field="period_start",
        )
    current_end = subscription.current_period.end
    if period.start < current_end or subscription.status != ACTIVE:
        return None
    if period.start > current_end:
        raise WrongState(
            f"period {period.start} is not the next to bill; {current_end} comes first", field="period_start"
        )
    return period


def renewal_due(status: str, current_period_end: int, now: int) -> bool:
    """Whether the period after the current one is due already (beat was down): it is asked
    for next, so missed periods are billed one by one, in order."""
    return status == ACTIVE and current_period_end <= now


def ends_at_boundary(billing_reason: str, cancel_at_period_end: bool) -> bool:
    """A subscription canceled at period end ends at the boundary instead of billing the next period."""
    return billing_reason == "subscription_cycle" and cancel_at_period_end


def period_line(price: PriceTerms, product_name: str, quantity: int, currency: str, index: int) -> PeriodLine:
    """Item ``index``'s line for one period, at ``price``'s amount in ``currency``."""
    unit = price.amount_in(currency)
    if unit is None:  # checked when the subscription or its currency was set; prices are immutable
        raise WrongState(f"price {price.id} has no {currency} amount", field="subscription")
    amount = line_amount(unit, quantity, field=f"items[{index}].quantity")
    return PeriodLine(unit, quantity, amount, f"{quantity} × {product_name}")  # noqa: RUF001 (Stripe's wording)


def discount_end(
    duration: str, duration_in_months: int | None, start: int, first_period_end: int
) -> int | None:
    """When a subscription's coupon stops applying (exclusive), judged on period starts.

    ``once``: the first period only. ``repeating``: periods that start within
    ``duration_in_months`` months of ``start`` (3 months of monthly billing = 3 invoices).
    ``forever``: None.
    """
    if duration == "once":
        return first_period_end
    if duration == "repeating":
        assert duration_in_months is not None
        return add_months(start, duration_in_months)
    return None


def discount_applies(end: int | None, period_start: int) -> bool:
    return end is None or period_start < end


# -- cancel and change currency ---------------------------------------------------------------------


def check_cancelable(subscription_id: str, status: str) -> None:
    if status != ACTIVE:
        raise WrongState(f"subscription {subscription_id} is already canceled", field="subscription")


def check_has_active(customer_id: str, active_count: int) -> None:
    """A currency change moves the customer's active subscriptions; there must be some."""
    if not active_count:
        raise WrongState(f"customer {customer_id} has no active subscriptions", field="customer")


def check_priced_in(currency: str, subscription_id: str, prices: Sequence[PriceTerms]) -> None:
    """Every price of the subscription has an amount in the currency it is to move to."""
    for price in prices:
        if price.amount_in(currency) is None:
            raise BadRequest(
                f"price {price.id} of subscription {subscription_id} has no {currency} amount"
                " (add it to the price's currency_options)",
                field="currency",
            )


def pending_currency_after_change(currency: str, requested: str) -> str | None:
    """The currency a subscription moves to at its next boundary; naming its current
    currency withdraws a pending change."""
    return None if requested == currency else requested
