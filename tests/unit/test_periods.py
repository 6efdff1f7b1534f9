"""Billing periods from a stored anchor (domain/README.md §8): month ends clamp, nothing drifts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import BadRequest
from domain.periods import (
    INTERVALS,
    MAX_INTERVAL_COUNT,
    Period,
    boundary,
    period_after,
    period_containing,
    period_index,
)
from domain.subscriptions import discount_applies, discount_end, line_amount, unit_amount_in


def ts(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def iso(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


BOUNDARIES = [
    # (anchor, interval, count, [boundary 0, 1, 2, ...])
    pytest.param(
        "2024-01-31 09:30:00", "month", 1,
        ["2024-01-31", "2024-02-29", "2024-03-31", "2024-04-30", "2024-05-31", "2024-06-30",
         "2024-07-31", "2024-08-31", "2024-09-30", "2024-10-31", "2024-11-30", "2024-12-31",
         "2025-01-31", "2025-02-28", "2025-03-31"],
        id="monthly-31st-leap-year",
    ),
    pytest.param(
        "2025-01-30 09:30:00", "month", 1, ["2025-01-30", "2025-02-28", "2025-03-30", "2025-04-30"],
        id="monthly-30th",
    ),
    pytest.param(
        "2025-01-29 09:30:00", "month", 1, ["2025-01-29", "2025-02-28", "2025-03-29"], id="monthly-29th"
    ),
    pytest.param(
        "2024-01-29 09:30:00", "month", 1, ["2024-01-29", "2024-02-29", "2024-03-29"],
        id="monthly-29th-leap-year",
    ),
    pytest.param(
        "2024-11-30 09:30:00", "month", 3,
        ["2024-11-30", "2025-02-28", "2025-05-30", "2025-08-30", "2025-11-30"],
        id="quarterly",
    ),
    pytest.param(
        "2023-08-31 09:30:00", "month", 6, ["2023-08-31", "2024-02-29", "2024-08-31", "2025-02-28"],
        id="half-yearly",
    ),
    pytest.param(
        "2024-02-29 09:30:00", "year", 1,
        ["2024-02-29", "2025-02-28", "2026-02-28", "2027-02-28", "2028-02-29"],
        id="yearly-leap-day",
    ),
    pytest.param(
        "2025-12-29 09:30:00", "week", 1, ["2025-12-29", "2026-01-05", "2026-01-12"], id="weekly-across-year"
    ),
    pytest.param(
        "2024-02-20 09:30:00", "week", 2, ["2024-02-20", "2024-03-05", "2024-03-19"], id="fortnightly-leap"
    ),
    pytest.param(
        "2024-02-27 09:30:00", "day", 1, ["2024-02-27", "2024-02-28", "2024-02-29", "2024-03-01"], id="daily"
    ),
    pytest.param(
        "2025-02-27 09:30:00", "day", 3, ["2025-02-27", "2025-03-02", "2025-03-05"], id="every-3-days"
    ),
]  # fmt: skip


@pytest.mark.parametrize(("anchor", "interval", "count", "days"), BOUNDARIES)
def test_boundaries_keep_the_anchor_time_and_clamp_month_ends(
    anchor: str, interval: str, count: int, days: list[str]
) -> None:
    start = ts(anchor)
    got = [iso(boundary(start, interval, count, n)) for n in range(len(days))]
    assert got == [f"{day} 09:30:00" for day in days]


@pytest.mark.parametrize(("anchor", "interval", "count", "days"), BOUNDARIES)
def test_each_boundary_opens_the_period_that_contains_it(
    anchor: str, interval: str, count: int, days: list[str]
) -> None:
    start = ts(anchor)
    for n, day in enumerate(days):
        moment = ts(f"{day} 09:30:00")
        assert period_index(start, interval, count, moment) == n
        assert period_index(start, interval, count, moment - 1) == n - 1
        period = period_containing(start, interval, count, moment)
        assert period.start == moment
        assert period_after(start, interval, count, period).start == period.end


def test_before_the_anchor_periods_count_backwards() -> None:
    anchor = ts("2024-03-31 00:00:00")
    assert iso(boundary(anchor, "month", 1, -1)) == "2024-02-29 00:00:00"
    assert period_containing(anchor, "month", 1, ts("2024-03-15 00:00:00")) == Period(
        ts("2024-02-29 00:00:00"), anchor
    )


@given(
    anchor=st.integers(0, 4_000_000_000),
    interval=st.sampled_from(INTERVALS),
    data=st.data(),
    offset=st.integers(-400_000_000, 400_000_000),
)
def test_the_containing_period_always_contains(
    anchor: int, interval: str, data: st.DataObject, offset: int
) -> None:
    count = data.draw(st.integers(1, MAX_INTERVAL_COUNT[interval]))
    at = max(0, anchor + offset)
    period = period_containing(anchor, interval, count, at)
    assert period.start <= at < period.end


@pytest.mark.parametrize(
    ("duration", "months", "starts", "applies"),
    [
        ("once", None, ["2025-01-15", "2025-02-15"], [True, False]),
        (
            "repeating",
            3,
            ["2025-01-15", "2025-02-15", "2025-03-15", "2025-04-15", "2025-05-15"],
            [True, True, True, False, False],
        ),
        ("forever", None, ["2025-01-15", "2030-01-15"], [True, True]),
    ],
)
def test_which_periods_a_coupon_covers(
    duration: str, months: int | None, starts: list[str], applies: list[bool]
) -> None:
    start, first_end = ts("2025-01-15 00:00:00"), ts("2025-02-15 00:00:00")
    end = discount_end(duration, months, start, first_end)
    assert [discount_applies(end, ts(f"{day} 00:00:00")) for day in starts] == applies


def test_price_amounts_per_currency_and_quantity() -> None:
    assert unit_amount_in("usd", "usd", 1000, {"eur": 900}) == 1000
    assert unit_amount_in("eur", "usd", 1000, {"eur": 900}) == 900
    assert unit_amount_in("gbp", "usd", 1000, {"eur": 900}) is None
    assert line_amount(1999, 3, field="items[0].quantity") == 5997
    with pytest.raises(BadRequest) as error:
        line_amount(99_999_999, 2, field="items[1].quantity")
    assert error.value.field == "items[1].quantity"
