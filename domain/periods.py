"""Calendar arithmetic on Unix seconds, always in UTC."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime


def add_months(timestamp: int, months: int) -> int:
    """Same day and time ``months`` later; a day past the month's end lands on its last day."""
    start = datetime.fromtimestamp(timestamp, tz=UTC)
    years, month_index = divmod(start.month - 1 + months, 12)
    year, month = start.year + years, month_index + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return int(start.replace(year=year, month=month, day=day).timestamp())
