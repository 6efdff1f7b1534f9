"""Calendar arithmetic on Unix seconds, always in UTC.

Billing periods are computed from a stored anchor, never step by step from the previous
period: the n-th boundary of a monthly subscription anchored on 31 January is "31 January
plus n months, clamped to the month's last day", so February's 28th does not drag March
back to the 28th.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

INTERVALS: Final = ("day", "week", "month", "year")
_SECONDS: Final = {"day": 86_400, "week": 7 * 86_400}
_MONTHS: Final = {"month": 1, "year": 12}
MAX_INTERVAL_COUNT: Final = {"day": 365, "week": 52, "month": 12, "year": 1}
"""Stripe's limit: a recurring interval is at most one year."""


def add_months(timestamp: int, months: int) -> int:
    """Same day and time ``months`` later; a day past the month's end lands on its last day."""
    start = datetime.fromtimestamp(timestamp, tz=UTC)
    years, month_index = divmod(start.month - 1 + months, 12)
    year, month = start.year + years, month_index + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return int(start.replace(year=year, month=month, day=day).timestamp())


@dataclass(frozen=True, slots=True)
class Period:
    start: int
    end: int
    """Exclusive: the next period's start."""


def boundary(anchor: int, interval: str, count: int, n: int) -> int:
    """Start of the ``n``-th period counted from ``anchor`` (n = 0 is the anchor; n < 0 before it)."""
    if interval in _SECONDS:
        return anchor + n * count * _SECONDS[interval]
    return add_months(anchor, n * count * _MONTHS[interval])


def period_index(anchor: int, interval: str, count: int, at: int) -> int:
    """The ``n`` of the period that contains ``at``: the largest n with boundary(n) <= at."""
    if interval in _SECONDS:
        return (at - anchor) // (count * _SECONDS[interval])
    first, then = datetime.fromtimestamp(anchor, tz=UTC), datetime.fromtimestamp(at, tz=UTC)
    months = (then.year - first.year) * 12 + then.month - first.month
    n = months // (count * _MONTHS[interval])
    while boundary(anchor, interval, count, n) > at:
        n -= 1
    while boundary(anchor, interval, count, n + 1) <= at:
        n += 1
    return n


def nth_period(anchor: int, interval: str, count: int, n: int) -> Period:
    return Period(boundary(anchor, interval, count, n), boundary(anchor, interval, count, n + 1))


def period_containing(anchor: int, interval: str, count: int, at: int) -> Period:
    return nth_period(anchor, interval, count, period_index(anchor, interval, count, at))


def period_after(anchor: int, interval: str, count: int, period: Period) -> Period:
    """The period that starts where ``period`` ends."""
    return period_containing(anchor, interval, count, period.end)
