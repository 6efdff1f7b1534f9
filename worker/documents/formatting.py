"""Money, numbers and dates as a locale writes them (Babel's CLDR data).

Amounts are integer minor units (``domain.currencies`` gives each currency's exponent); they
become a ``Decimal`` only here, to be written: ``1.234,56 €`` in de, ``¥1,235`` in ja for a
JPY amount (no decimals), ``CA$12.00`` for CAD in en. Times are Unix seconds, written as
UTC dates (the billing clock is UTC: domain/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from babel import Locale
from babel.dates import format_date, format_interval
from babel.numbers import format_currency, format_decimal, format_percent

from domain.currencies import currency_info


def babel_locale(tag: str) -> Locale:
    """A BCP 47 tag (``fr-CA``) as Babel's locale (``fr_CA``)."""
    return Locale.parse(tag, sep="-")


def major_units(amount: int, currency: str) -> Decimal:
    """Minor units -> the amount as written (exact: a Decimal shifted by the exponent)."""
    info = currency_info(currency)
    exponent = info.exponent if info else 2
    return Decimal(amount).scaleb(-exponent)


@dataclass(frozen=True, slots=True)
class Formatter:
    """How one locale writes the values of a document."""

    locale: str
    """A supported locale tag, such as ``fr-CA``."""

    def money(self, amount: int, currency: str) -> str:
        # never rounded to CLDR's digits: IDR has 2 decimals in minor units (Stripe), 0 in CLDR
        return format_currency(
            major_units(amount, currency),
            currency.upper(),
            locale=babel_locale(self.locale),
            decimal_quantization=False,
        )

    def number(self, value: int | Decimal | str) -> str:
        return format_decimal(Decimal(str(value)), locale=babel_locale(self.locale))

    def percent(self, percentage: str) -> str:
        """A stored percentage (``"20"``, ``"8.25"``): ``20 %`` in de and fr, ``8.25%`` in en."""
        return format_percent(
            Decimal(percentage) / 100, locale=babel_locale(self.locale), decimal_quantization=False
        )

    def date(self, timestamp: int | None) -> str:
        if timestamp is None:
            return ""
        moment = datetime.fromtimestamp(timestamp, UTC)
        return format_date(moment.date(), format="long", locale=babel_locale(self.locale))

    def period(self, start: int | None, end: int | None) -> str:
        """A period as the locale writes a range of dates (``1-31 janv. 2026`` with its own dash)."""
        if start is None:
            return ""
        first = datetime.fromtimestamp(start, UTC).date()
        last = datetime.fromtimestamp(end if end is not None else start, UTC).date()
        return format_interval(first, last, skeleton="yMMMd", locale=babel_locale(self.locale))
