"""Subscription rules (domain/README.md §8): what a subscription may be made of, the currency
it bills, and which period a renewal bills. Each table row reads "given these values, the rule
decides this" (a value, or the error class, field and a piece of its message)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from domain.errors import BadRequest, BillingError, SubscriptionCurrencyConflict, WrongState
from domain.periods import Period
from domain.subscriptions import (
    ACTIVE,
    CANCELED,
    PriceTerms,
    Schedule,
    SubscriptionState,
    billing_currency,
    check_cancelable,
    check_has_active,
    check_items_priced,
    check_listed_once,
    check_priced_in,
    check_recurring,
    ends_at_boundary,
    pending_currency_after_change,
    period_line,
    renewal_due,
    renewal_period,
    schedule_from,
)


def ts(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


MONTHLY_USD = PriceTerms("price_m", "usd", 2000, {"eur": 1800}, "month", 1)
MONTHLY_EUR = PriceTerms("price_e", "eur", 900, None, "month", 1)
QUARTERLY = PriceTerms("price_q", "usd", 5000, None, "month", 3)
YEARLY = PriceTerms("price_y", "usd", 20000, None, "year", 1)
ONE_TIME = PriceTerms("price_o", "usd", 500)
HUGE = PriceTerms("price_h", "usd", 99_999_999, None, "month", 1)

NOW = ts("2026-03-15 10:00:00")
MARCH = Period(ts("2026-03-01 10:00:00"), ts("2026-04-01 10:00:00"))
MONTHLY_FROM_JAN = Schedule(ts("2026-01-01 10:00:00"), "month", 1)


def expect(error: tuple[type[BillingError], str, str] | None, call: Callable[[], object]) -> None:
    """Run ``call``; with ``error`` = (class, field, message part), it must raise exactly that."""
    if error is None:
        call()
        return
    kind, field, words = error
    with pytest.raises(kind) as raised:
        call()
    assert type(raised.value) is kind
    assert raised.value.field == field
    assert words in raised.value.message


# -- duplicates and intervals ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price_ids", "index", "error"),
    [
        (["price_a"], 0, None),
        (["price_a", "price_b"], 1, None),
        (["price_a", "price_a"], 0, None),  # the first of the two is fine; the second is refused
        (["price_a", "price_a"], 1, (BadRequest, "items[1].price", "price price_a is listed twice")),
        (["price_a", "price_b", "price_a"], 2, (BadRequest, "items[2].price", "raise its quantity")),
    ],
)
def test_a_price_is_listed_once(
    price_ids: list[str], index: int, error: tuple[type[BillingError], str, str] | None
) -> None:
    expect(error, lambda: check_listed_once(price_ids, index))


@pytest.mark.parametrize(
    ("price", "index", "first", "error"),
    [
        (MONTHLY_USD, 0, None, None),
        (MONTHLY_EUR, 1, MONTHLY_USD, None),  # currencies may differ; the interval may not
        (ONE_TIME, 0, None, (BadRequest, "items[0].price", "price price_o is a one-time price")),
        (ONE_TIME, 2, MONTHLY_USD, (BadRequest, "items[2].price", "subscriptions need recurring prices")),
        (
            YEARLY,
            1,
            MONTHLY_USD,
            (BadRequest, "items[1].price", "price price_y bills every 1 year, items[0].price every 1 month"),
        ),
        (QUARTERLY, 1, MONTHLY_USD, (BadRequest, "items[1].price", "one subscription has one interval")),
        (MONTHLY_USD, 1, QUARTERLY, (BadRequest, "items[1].price", "items[0].price every 3 month")),
    ],
)
def test_a_subscription_has_one_recurring_interval(
    price: PriceTerms, index: int, first: PriceTerms | None, error: tuple[type[BillingError], str, str] | None
) -> None:
    expect(error, lambda: check_recurring(price, index, first))


# -- the billing currency -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "held", "customer_currency", "first_price_currency", "expected"),
    [
        (None, None, None, "usd", "usd"),  # nothing else to go by: the first price's
        (None, None, "eur", "usd", "eur"),  # the customer's
        (None, "gbp", "eur", "usd", "gbp"),  # the active subscriptions' comes before the customer's
        ("eur", None, "usd", "usd", "eur"),  # asked for: taken, even against the customer's
        ("gbp", "gbp", "eur", "usd", "gbp"),  # asked for and held agree
    ],
)
def test_the_billing_currency_defaults_in_order(
    requested: str | None,
    held: str | None,
    customer_currency: str | None,
    first_price_currency: str,
    expected: str,
) -> None:
    chosen = billing_currency(
        "cus_1",
        requested=requested,
        held=held,
        customer_currency=customer_currency,
        first_price_currency=first_price_currency,
    )
    assert chosen == expected


@pytest.mark.parametrize(("requested", "held"), [("eur", "usd"), ("usd", "eur")])
def test_a_second_currency_beside_active_subscriptions_is_a_conflict(requested: str, held: str) -> None:
    with pytest.raises(SubscriptionCurrencyConflict) as raised:
        billing_currency(
            "cus_1", requested=requested, held=held, customer_currency=held, first_price_currency=requested
        )
    assert raised.value.field == "currency"
    assert raised.value.code == "subscription_currency_conflict"
    assert f"customer cus_1 has active subscriptions in {held}" in raised.value.message


@pytest.mark.parametrize(
    ("items", "currency", "pending", "error"),
    [
        ([(MONTHLY_USD, 3)], "usd", None, None),
        ([(MONTHLY_USD, 3)], "eur", None, None),  # through currency_options
        ([(MONTHLY_USD, 1)], "usd", "eur", None),  # the pending currency is priced too
        ([(MONTHLY_USD, 1), (MONTHLY_EUR, 1)], "eur", None, None),
        (
            [(MONTHLY_USD, 1), (MONTHLY_EUR, 1)],
            "usd",
            None,
            (BadRequest, "items[1].price", "price price_e has no usd amount"),
        ),
        (
            [(MONTHLY_USD, 1)],
            "gbp",
            None,
            (BadRequest, "items[0].price", "add it to the price's currency_options"),
        ),
        ([(MONTHLY_EUR, 1)], "eur", "usd", (BadRequest, "items[0].price", "price price_e has no usd amount")),
        ([(HUGE, 1)], "usd", None, None),
        ([(MONTHLY_USD, 1), (HUGE, 2)], "usd", None, (BadRequest, "items[1].quantity", "exceeds")),
        # the currency is checked before the quantity, item by item
        ([(HUGE, 2), (MONTHLY_EUR, 1)], "usd", None, (BadRequest, "items[0].quantity", "exceeds")),
        ([(MONTHLY_EUR, 2), (HUGE, 2)], "usd", None, (BadRequest, "items[0].price", "no usd amount")),
    ],
)
def test_every_price_has_an_amount_in_the_billing_currency(
    items: list[tuple[PriceTerms, int]],
    currency: str,
    pending: str | None,
    error: tuple[type[BillingError], str, str] | None,
) -> None:
    expect(error, lambda: check_items_priced(items, currency, pending))


# -- the anchor -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("anchor", "price", "error", "first"),
    [
        (NOW, MONTHLY_USD, None, Period(NOW, ts("2026-04-15 10:00:00"))),  # default: creation time
        (ts("2026-03-01 10:00:00"), MONTHLY_USD, None, MARCH),  # past: the period containing now
        (ts("2025-12-31 00:00:00"), QUARTERLY, None, Period(ts("2025-12-31"), ts("2026-03-31"))),
        (NOW + 1, MONTHLY_USD, (BadRequest, "billing_cycle_anchor", "must not be in the future"), None),
        (NOW + 86_400, YEARLY, (BadRequest, "billing_cycle_anchor", "prorated first period"), None),
    ],
)
def test_a_future_anchor_is_refused_a_past_one_bills_the_period_containing_now(
    anchor: int, price: PriceTerms, error: tuple[type[BillingError], str, str] | None, first: Period | None
) -> None:
    if error is not None:
        expect(error, lambda: schedule_from(anchor, price, NOW))
        return
    schedule = schedule_from(anchor, price, NOW)
    assert (schedule.anchor, schedule.interval, schedule.interval_count) == (
        anchor,
        price.interval,
        price.interval_count,
    )
    assert schedule.period_containing(NOW) == first


# -- renewals -------------------------------------------------------------------------------------


def billed_through(current: Period, status: str = ACTIVE) -> SubscriptionState:
    return SubscriptionState("sub_1", status, MONTHLY_FROM_JAN, current)


APRIL_START = ts("2026-04-01 10:00:00")
MAY_START = ts("2026-05-01 10:00:00")


@pytest.mark.parametrize(
    ("subscription", "period_start", "now", "expected"),
    [
        # the next period, due: billed
        (billed_through(MARCH), APRIL_START, APRIL_START, Period(APRIL_START, MAY_START)),
        (billed_through(MARCH), APRIL_START, ts("2026-06-15 00:00:00"), Period(APRIL_START, MAY_START)),
        # already billed, or the subscription ended: nothing to bill, not an error
        (billed_through(MARCH), MARCH.start, NOW, None),
        (billed_through(MARCH), ts("2026-02-01 10:00:00"), NOW, None),
        (billed_through(MARCH, CANCELED), APRIL_START, APRIL_START, None),
    ],
)
def test_a_renewal_bills_the_next_due_period_once(
    subscription: SubscriptionState, period_start: int, now: int, expected: Period | None
) -> None:
    assert renewal_period(subscription, period_start, now) == expected


@pytest.mark.parametrize(
    ("subscription", "period_start", "now", "error"),
    [
        (billed_through(MARCH), APRIL_START, APRIL_START - 1, (WrongState, "period_start", "is not due yet")),
        # not yet due comes first, even for a period that is not the next
        (billed_through(MARCH), MAY_START, NOW, (WrongState, "period_start", "is not due yet")),
        (
            billed_through(MARCH),
            ts("2026-02-15 10:00:00"),
            NOW,
            (BadRequest, "period_start", "not a period boundary of subscription sub_1"),
        ),
        (
            billed_through(MARCH),
            MAY_START,
            ts("2026-06-15 00:00:00"),
            (
                WrongState,
                "period_start",
                f"period {MAY_START} is not the next to bill; {APRIL_START} comes first",
            ),
        ),
        # a canceled subscription still refuses a period not yet due or off the boundaries
        (billed_through(MARCH, CANCELED), MAY_START, NOW, (WrongState, "period_start", "is not due yet")),
    ],
)
def test_a_renewal_refuses_periods_not_due_not_on_a_boundary_or_not_next(
    subscription: SubscriptionState,
    period_start: int,
    now: int,
    error: tuple[type[BillingError], str, str],
) -> None:
    expect(error, lambda: renewal_period(subscription, period_start, now))


@pytest.mark.parametrize(
    ("status", "current_period_end", "now", "due"),
    [
        (ACTIVE, APRIL_START, APRIL_START - 1, False),
        (ACTIVE, APRIL_START, APRIL_START, True),  # the boundary itself is due
        (ACTIVE, APRIL_START, MAY_START, True),
        (CANCELED, APRIL_START, MAY_START, False),
    ],
)
def test_the_period_after_is_asked_for_when_it_is_due_already(
    status: str, current_period_end: int, now: int, due: bool
) -> None:
    assert renewal_due(status, current_period_end, now) is due


def test_the_next_period_is_computed_from_the_anchor() -> None:
    anchored_31st = Schedule(ts("2026-01-31 10:00:00"), "month", 1)
    february = Period(ts("2026-02-28 10:00:00"), ts("2026-03-31 10:00:00"))
    state = SubscriptionState("sub_1", ACTIVE, anchored_31st, february)
    assert state.next_period() == Period(ts("2026-03-31 10:00:00"), ts("2026-04-30 10:00:00"))


@pytest.mark.parametrize(
    ("billing_reason", "cancel_at_period_end", "ends"),
    [
        ("subscription_cycle", True, True),
        ("subscription_cycle", False, False),
        ("subscription_create", True, False),  # the first period is billed even so
        ("subscription_create", False, False),
    ],
)
def test_cancel_at_period_end_ends_at_the_next_boundary(
    billing_reason: str, cancel_at_period_end: bool, ends: bool
) -> None:
    assert ends_at_boundary(billing_reason, cancel_at_period_end) is ends


@pytest.mark.parametrize(
    ("price", "quantity", "currency", "index", "expected", "error"),
    [
        (MONTHLY_USD, 3, "usd", 0, (2000, 3, 6000, "3 × Pro"), None),  # noqa: RUF001
        (MONTHLY_USD, 2, "eur", 1, (1800, 2, 3600, "2 × Pro"), None),  # noqa: RUF001
        (MONTHLY_EUR, 1, "usd", 0, None, (WrongState, "subscription", "price price_e has no usd amount")),
        (HUGE, 2, "usd", 4, None, (BadRequest, "items[4].quantity", "exceeds")),
    ],
)
def test_a_period_line_prices_an_item_in_the_subscription_currency(
    price: PriceTerms,
    quantity: int,
    currency: str,
    index: int,
    expected: tuple[int, int, int, str] | None,
    error: tuple[type[BillingError], str, str] | None,
) -> None:
    if error is not None:
        expect(error, lambda: period_line(price, "Pro", quantity, currency, index))
        return
    line = period_line(price, "Pro", quantity, currency, index)
    assert (line.unit_amount, line.quantity, line.amount, line.description) == expected


# -- cancel and change currency -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (ACTIVE, None),
        (CANCELED, (WrongState, "subscription", "subscription sub_1 is already canceled")),
    ],
)
def test_only_an_active_subscription_is_canceled(
    status: str, error: tuple[type[BillingError], str, str] | None
) -> None:
    expect(error, lambda: check_cancelable("sub_1", status))


@pytest.mark.parametrize(
    ("active_count", "prices", "currency", "error"),
    [
        (1, [MONTHLY_USD], "eur", None),
        (2, [MONTHLY_USD, MONTHLY_EUR], "eur", None),
        (0, [], "eur", (WrongState, "customer", "customer cus_1 has no active subscriptions")),
        (
            1,
            [MONTHLY_EUR],
            "usd",
            (BadRequest, "currency", "price price_e of subscription sub_1 has no usd amount"),
        ),
        (
            2,
            [MONTHLY_USD, MONTHLY_EUR],
            "gbp",
            (BadRequest, "currency", "price price_m of subscription sub_1"),
        ),
    ],
)
def test_a_currency_change_needs_active_subscriptions_priced_in_it(
    active_count: int,
    prices: list[PriceTerms],
    currency: str,
    error: tuple[type[BillingError], str, str] | None,
) -> None:
    def change() -> None:
        check_has_active("cus_1", active_count)
        check_priced_in(currency, "sub_1", prices)

    expect(error, change)


@pytest.mark.parametrize(
    ("currency", "requested", "pending"),
    [
        ("usd", "eur", "eur"),
        ("usd", "usd", None),  # naming the current currency withdraws a pending change
    ],
)
def test_a_currency_change_is_pending_until_the_next_boundary(
    currency: str, requested: str, pending: str | None
) -> None:
    assert pending_currency_after_change(currency, requested) == pending
