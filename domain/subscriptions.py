"""Subscription rules: what one period costs and which periods a coupon covers (SPEC §5, §8).

Pure functions; the worker passes in rows as plain values and the time as an argument.
"""

from __future__ import annotations

from collections.abc import Mapping

from domain.errors import BadRequest
from domain.money import MAX_AMOUNT
from domain.periods import add_months


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
