"""Money: integer minor units with a lowercase ISO 4217 code, and the one rounding rule.

Amounts never pass through floats. Fractions appear only inside tax and percentage
discount arithmetic, which runs on ``Decimal`` and comes back to integers through
``round_half_up``: halves round away from zero (0.5 -> 1, -0.5 -> -1), the way
invoices are rounded by hand.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from domain.currencies import Currency, currency_info
from domain.errors import BadRequest

MAX_AMOUNT = 99_999_999
"""Largest absolute amount of one item or one request, in minor units (Stripe's limit)."""


def round_half_up(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def check_currency(code: object, field: str = "currency") -> Currency:
    if not isinstance(code, str) or not code:
        raise BadRequest("must be a three-letter ISO 4217 currency code such as 'usd'", field=field)
    info = currency_info(code)
    if info is None:
        hint = " (currency codes are lowercase)" if currency_info(code.lower()) else ""
        raise BadRequest(f"unknown currency {code!r}{hint}", field=field)
    return info


def check_amount(
    value: object,
    field: str = "amount",
    *,
    currency: str | None = None,
    minimum: int = -MAX_AMOUNT,
) -> int:
    """An integer amount in minor units within [minimum, MAX_AMOUNT].

    ``bool`` is refused although Python counts it as an int, and so is every float,
    even a whole one: a float in a payload means the caller is not counting in minor
    units. With ``currency``, the amount must also respect that currency's step
    (three-decimal currencies settle in multiples of 10).
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(
            f"must be an integer number of minor units (got {type(value).__name__} {value!r})", field=field
        )
    if value > MAX_AMOUNT or value < minimum:
        low = "0" if minimum == 0 else ("1" if minimum == 1 else f"{minimum:,}")
        raise BadRequest(f"must be between {low} and {MAX_AMOUNT:,} (got {value:,})", field=field)
    if currency is not None:
        step = check_currency(currency).amount_step
        if value % step:
            raise BadRequest(f"{currency} amounts must be a multiple of {step} (got {value})", field=field)
    return value


def format_amount(amount: int, currency: str) -> str:
    """Minor units as a plain decimal with the code: 123456 usd -> '1234.56 USD'."""
    exponent = check_currency(currency).exponent
    sign = "-" if amount < 0 else ""
    whole, fraction = divmod(abs(amount), 10**exponent)
    digits = f"{whole}.{fraction:0{exponent}d}" if exponent else str(whole)
    return f"{sign}{digits} {currency.upper()}"
