"""Pricing an invoice: discounts, then tax, then totals (domain/README.md §4.1, §5, §6).

Each case reads "given these lines, coupons and tax rates, the invoice shows these
figures". Every expected figure is worked out by hand in the case's comment.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.pricing import (
    Coupon,
    DiscountAmount,
    Line,
    PricedInvoice,
    TaxAmount,
    TaxRate,
    allocate_proportionally,
    price_invoice,
)

# Tax rates used across the tables.
VAT5 = TaxRate("txr_5", Decimal("5"))
VAT10 = TaxRate("txr_10", Decimal("10"))
SALES825 = TaxRate("txr_825", Decimal("8.25"))
INCL10 = TaxRate("txr_incl10", Decimal("10"), inclusive=True)
INCL5 = TaxRate("txr_incl5", Decimal("5"), inclusive=True)

# Coupons used across the tables.
TEN_PERCENT = Coupon("TEN", percent_off=Decimal("10"))
FIFTY_PERCENT = Coupon("HALF", percent_off=Decimal("50"))
FIVE_USD_OFF = Coupon("FIVEOFF", amount_off=500, currency="usd")


@dataclass(frozen=True)
class Expected:
    subtotal: int
    discounts: tuple[tuple[str, int], ...]  # total_discount_amounts as (coupon, amount)
    line_discounts: tuple[int, ...]  # discount total of each line, in line order
    taxes: tuple[tuple[str, int, int], ...]  # total_taxes as (rate, amount, taxable_amount)
    total_excluding_tax: int
    total: int


def figures(priced: PricedInvoice) -> Expected:
    return Expected(
        subtotal=priced.subtotal,
        discounts=tuple((d.coupon, d.amount) for d in priced.total_discount_amounts),
        line_discounts=tuple(line.discount_total for line in priced.lines),
        taxes=tuple((t.tax_rate, t.amount, t.taxable_amount) for t in priced.total_taxes),
        total_excluding_tax=priced.total_excluding_tax,
        total=priced.total,
    )


# --------------------------------------------------------------------------------------
# The worked examples of domain/README.md §4.1, §4.2 and §6, figure for figure.
# --------------------------------------------------------------------------------------

WORKED_EXAMPLES = [
    pytest.param(
        # §4.1: 2000 + 1500 = 3500, nothing off, no tax.
        [Line(2000), Line(1500)],
        {},
        Expected(3500, (), (0, 0), (), 3500, 3500),
        id="s4.1-two-lines-no-discount-no-tax",
    ),
    pytest.param(
        # §4.1: 10% of 2000 = 200 off -> 1800; 5% of 1800 = 90; 1800 + 90 = 1890.
        [Line(2000)],
        {"coupons": [TEN_PERCENT], "default_tax_rates": [VAT5]},
        Expected(2000, (("TEN", 200),), (200,), (("txr_5", 90, 1800),), 1800, 1890),
        id="s4.1-ten-percent-off-then-five-percent-tax",
    ),
    pytest.param(
        # §4.1/§5: 500 spread over 1000 and 2000: first share 500*1000//3000 = 166 (rounded
        # down), the last line takes the remainder 500 - 166 = 334; 3000 - 500 = 2500.
        [Line(1000), Line(2000)],
        {"coupons": [FIVE_USD_OFF]},
        Expected(3000, (("FIVEOFF", 500),), (166, 334), (), 2500, 2500),
        id="s4.1-amount-off-split-166-334",
    ),
    pytest.param(
        # §6: 10% off: 50 and 100 -> 450 and 900; 5% of 450 = 22.5 -> 23 (half up), 5% of
        # 900 = 45; tax 68 on 1350 taxable; 1350 + 68 = 1418.
        [Line(500), Line(1000)],
        {"coupons": [TEN_PERCENT], "default_tax_rates": [VAT5]},
        Expected(1500, (("TEN", 150),), (50, 100), (("txr_5", 68, 1350),), 1350, 1418),
        id="s6-per-line-tax-rounding-23-plus-45",
    ),
    pytest.param(
        # §6: exempt customer, 10000 with 10% inclusive tax: 10000 / 1.1 = 9090.909...
        # so the contained tax is 909.09 -> 909, backed out: 10000 - 909 = 9091, no tax.
        [Line(10000)],
        {"default_tax_rates": [INCL10], "tax_exempt": True},
        Expected(10000, (), (0,), (("txr_incl10", 0, 9091),), 9091, 9091),
        id="s6-inclusive-backed-out-for-exempt",
    ),
    pytest.param(
        # §6: same line, normal customer: the 909 stays inside the 10000 total, and the
        # total excluding tax is 10000 - 909 = 9091.
        [Line(10000)],
        {"default_tax_rates": [INCL10]},
        Expected(10000, (), (0,), (("txr_incl10", 909, 9091),), 9091, 10000),
        id="s6-inclusive-stays-in-total-for-normal-customer",
    ),
]


@pytest.mark.parametrize(("lines", "options", "expected"), WORKED_EXAMPLES)
def test_spec_worked_examples(lines: list[Line], options: dict, expected: Expected) -> None:
    assert figures(price_invoice(lines, currency="usd", **options)) == expected


def test_inclusive_tax_entry_is_marked_inclusive() -> None:
    # §6 normal customer: the 909 is reported on the line and in total_taxes as inclusive.
    priced = price_invoice([Line(10000)], currency="usd", default_tax_rates=[INCL10])
    assert priced.lines[0].tax_amounts == (TaxAmount("txr_incl10", 909, 9091, True),)
    assert priced.total_taxes == (TaxAmount("txr_incl10", 909, 9091, True),)


def test_amount_off_line_shares_are_recorded_per_line() -> None:
    # §4.1: the 166 / 334 split is visible on each line's discount_amounts.
    priced = price_invoice([Line(1000), Line(2000)], currency="usd", coupons=[FIVE_USD_OFF])
    assert [line.discount_amounts for line in priced.lines] == [
        (DiscountAmount("FIVEOFF", 166),),
        (DiscountAmount("FIVEOFF", 334),),
    ]
    assert priced.applied_coupons == ("FIVEOFF",)


# --------------------------------------------------------------------------------------
# Coupons and discounts (§5).
# --------------------------------------------------------------------------------------

DISCOUNT_CASES = [
    pytest.param(
        # Amount-off in usd on a eur invoice: ignored, no discount entry at all.
        "eur",
        [Line(1000)],
        [FIVE_USD_OFF],
        Expected(1000, (), (0,), (), 1000, 1000),
        id="amount-off-other-currency-ignored",
    ),
    pytest.param(
        # usd coupon with currency_options {eur: 300}: 300 off on a eur invoice -> 700.
        "eur",
        [Line(1000)],
        [Coupon("MULTI", amount_off=500, currency="usd", currency_options={"eur": 300})],
        Expected(1000, (("MULTI", 300),), (300,), (), 700, 700),
        id="amount-off-via-currency-options",
    ),
    pytest.param(
        # The same coupon on a usd invoice uses its own amount: 500 off 1000 -> 500.
        "usd",
        [Line(1000)],
        [Coupon("MULTI", amount_off=500, currency="usd", currency_options={"eur": 300})],
        Expected(1000, (("MULTI", 500),), (500,), (), 500, 500),
        id="amount-off-own-currency-beats-options",
    ),
    pytest.param(
        # currency_options has no gbp entry: ignored on a gbp invoice.
        "gbp",
        [Line(1000)],
        [Coupon("MULTI", amount_off=500, currency="usd", currency_options={"eur": 300})],
        Expected(1000, (), (0,), (), 1000, 1000),
        id="amount-off-currency-not-in-options-ignored",
    ),
    pytest.param(
        # Percent-off applies in any currency: 25% of 1000 JPY = 250 -> 750.
        "jpy",
        [Line(1000)],
        [Coupon("QUARTER", percent_off=Decimal("25"))],
        Expected(1000, (("QUARTER", 250),), (250,), (), 750, 750),
        id="percent-off-any-currency-jpy",
    ),
    pytest.param(
        # 10% only on the discountable 1000 -> 100; the non-discountable 1000 keeps its
        # amount; 2000 - 100 = 1900.
        "usd",
        [Line(1000), Line(1000, discountable=False)],
        [TEN_PERCENT],
        Expected(2000, (("TEN", 100),), (100, 0), (), 1900, 1900),
        id="percent-off-only-discountable-lines",
    ),
    pytest.param(
        # 500 off, only the first line (1000) is discountable: all 500 lands there;
        # 4000 - 500 = 3500.
        "usd",
        [Line(1000), Line(3000, discountable=False)],
        [FIVE_USD_OFF],
        Expected(4000, (("FIVEOFF", 500),), (500, 0), (), 3500, 3500),
        id="amount-off-only-discountable-lines",
    ),
    pytest.param(
        # Nothing discountable: the coupon applies with 0, nothing changes.
        "usd",
        [Line(1000, discountable=False)],
        [FIVE_USD_OFF],
        Expected(1000, (("FIVEOFF", 0),), (0,), (), 1000, 1000),
        id="amount-off-nothing-discountable",
    ),
    pytest.param(
        # +1000 and -800: subtotal 200. The negative line takes no discount and the
        # discount stops at the subtotal: 500 capped at 200, total 0, no credit.
        "usd",
        [Line(1000), Line(-800)],
        [FIVE_USD_OFF],
        Expected(200, (("FIVEOFF", 200),), (200, 0), (), 0, 0),
        id="negative-line-discount-capped-at-subtotal",
    ),
    pytest.param(
        # Same lines, 50% off: 500 on the positive line would exceed the subtotal 200,
        # so it is capped at 200; total 0.
        "usd",
        [Line(1000), Line(-800)],
        [FIFTY_PERCENT],
        Expected(200, (("HALF", 200),), (200, 0), (), 0, 0),
        id="negative-line-percent-capped-at-subtotal",
    ),
    pytest.param(
        # 10% with a negative line that does not reach the cap: 10% of 1000 = 100, the
        # -300 line gets nothing; 700 - 100 = 600.
        "usd",
        [Line(1000), Line(-300)],
        [TEN_PERCENT],
        Expected(700, (("TEN", 100),), (100, 0), (), 600, 600),
        id="negative-line-gets-no-percent-discount",
    ),
    pytest.param(
        # 1000 off lines 300 + 200 (subtotal 500): capped at 500; 500*300//500 = 300,
        # last line 200; total 0.
        "usd",
        [Line(300), Line(200)],
        [Coupon("BIG", amount_off=1000, currency="usd")],
        Expected(500, (("BIG", 500),), (300, 200), (), 0, 0),
        id="amount-off-larger-than-subtotal-capped",
    ),
    pytest.param(
        # Only negative lines: subtotal -500, no discount can apply (0), total -500.
        "usd",
        [Line(-500)],
        [FIVE_USD_OFF],
        Expected(-500, (("FIVEOFF", 0),), (0,), (), -500, -500),
        id="negative-subtotal-gets-no-discount",
    ),
    pytest.param(
        # 10% of 5 = 0.5 -> 1 per line (half up), three lines -> 3 off; 15 - 3 = 12.
        "usd",
        [Line(5), Line(5), Line(5)],
        [TEN_PERCENT],
        Expected(15, (("TEN", 3),), (1, 1, 1), (), 12, 12),
        id="percent-off-rounds-half-up-per-line",
    ),
    pytest.param(
        # 10% of 4 = 0.4 -> 0 and 10% of 15 = 1.5 -> 2; total discount 2; 19 - 2 = 17.
        "usd",
        [Line(4), Line(15)],
        [TEN_PERCENT],
        Expected(19, (("TEN", 2),), (0, 2), (), 17, 17),
        id="percent-off-rounds-below-half-down",
    ),
    pytest.param(
        # 12.5% of 1234 = 154.25 -> 154; 1234 - 154 = 1080.
        "usd",
        [Line(1234)],
        [Coupon("ODD", percent_off=Decimal("12.5"))],
        Expected(1234, (("ODD", 154),), (154,), (), 1080, 1080),
        id="percent-off-fractional-percentage",
    ),
    pytest.param(
        # 100% off 700 + 300 -> everything; total 0.
        "usd",
        [Line(700), Line(300)],
        [Coupon("FREE", percent_off=Decimal("100"))],
        Expected(1000, (("FREE", 1000),), (700, 300), (), 0, 0),
        id="percent-off-hundred",
    ),
    pytest.param(
        # Two coupons, applied in order on what is left: 10% of 1000 and 2000 -> 100 + 200,
        # leaving 900 and 1800; then 300 split 300*900//2700 = 100 and 300 - 100 = 200.
        # Lines carry 200 and 400; discounts 600; 3000 - 600 = 2400.
        "usd",
        [Line(1000), Line(2000)],
        [TEN_PERCENT, Coupon("THREE", amount_off=300, currency="usd")],
        Expected(3000, (("TEN", 300), ("THREE", 300)), (200, 400), (), 2400, 2400),
        id="two-coupons-applied-in-order",
    ),
    pytest.param(
        # Two coupons that together exceed the subtotal: 500 off 600 leaves 100; the
        # second 500 off is capped at the 100 left; total 0, never negative.
        "usd",
        [Line(600)],
        [FIVE_USD_OFF, Coupon("AGAIN", amount_off=500, currency="usd")],
        Expected(600, (("FIVEOFF", 500), ("AGAIN", 100)), (600,), (), 0, 0),
        id="two-coupons-capped-at-subtotal",
    ),
    pytest.param(
        # A eur coupon is skipped on a usd invoice but the usd one applies: 500 off 1000.
        "usd",
        [Line(1000)],
        [Coupon("EURO", amount_off=200, currency="eur"), FIVE_USD_OFF],
        Expected(1000, (("FIVEOFF", 500),), (500,), (), 500, 500),
        id="mixed-currency-coupons-only-matching-applies",
    ),
]


@pytest.mark.parametrize(("currency", "lines", "coupons", "expected"), DISCOUNT_CASES)
def test_discounts(currency: str, lines: list[Line], coupons: list[Coupon], expected: Expected) -> None:
    assert figures(price_invoice(lines, currency=currency, coupons=coupons)) == expected


def test_ignored_coupon_is_not_among_applied_coupons() -> None:
    # §5: an amount-off coupon in another currency is "ignored on that invoice and not
    # consumed": it must not appear in applied_coupons either.
    priced = price_invoice([Line(1000)], currency="cad", coupons=[FIVE_USD_OFF, TEN_PERCENT])
    assert priced.applied_coupons == ("TEN",)
    assert priced.total == 900


# --------------------------------------------------------------------------------------
# allocate_proportionally (§5: shares rounded down, the last line takes the remainder).
# --------------------------------------------------------------------------------------

ALLOCATIONS = [
    # 500*1000//3000 = 166; last 500 - 166 = 334.
    pytest.param(500, [1000, 2000], [166, 334], id="spec-166-334"),
    # 2*1//3 = 0 twice, the last would take 2 > its weight 1: the excess 1 moves to
    # the line before it.
    pytest.param(2, [1, 1, 1], [0, 1, 1], id="excess-moves-back-1-1-1"),
    # whole 11: 10*5//11 = 4, 4; last would be 2 > 1: 1 moves to the second line.
    pytest.param(10, [5, 5, 1], [4, 5, 1], id="excess-moves-back-5-5-1"),
    # whole 13: 0, 0, 70//13 = 5; last would be 2 > 1: 1 moves to the third line.
    pytest.param(7, [1, 1, 10, 1], [0, 0, 6, 1], id="excess-skips-full-lines"),
    # Zero weights take nothing; the last carrier (index 3) takes the remainder:
    # 3*5//10 = 1, then 3 - 1 = 2.
    pytest.param(3, [0, 5, 0, 5], [0, 1, 0, 2], id="zero-weights-skipped"),
    pytest.param(3, [5, 5, 0], [1, 2, 0], id="trailing-zero-weight-not-last"),
    pytest.param(10, [10], [10], id="single-weight-all"),
    pytest.param(10, [3, 7], [3, 7], id="exactly-the-whole"),
    pytest.param(0, [1, 2], [0, 0], id="nothing-to-allocate"),
    pytest.param(5, [0, 0], [0, 0], id="no-weight-no-share"),
    pytest.param(5, [], [], id="no-lines"),
    # 100 over three equal weights of 100: 100*100//300 = 33, 33, last 100 - 66 = 34.
    pytest.param(100, [100, 100, 100], [33, 33, 34], id="thirds-remainder-to-last"),
]


@pytest.mark.parametrize(("total", "weights", "expected"), ALLOCATIONS)
def test_allocate_proportionally(total: int, weights: list[int], expected: list[int]) -> None:
    shares = allocate_proportionally(total, weights)
    assert shares == expected
    if sum(weights) > 0:
        assert sum(shares) == total


def test_allocate_more_than_the_weights_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot allocate 4 over weights summing to 3"):
        allocate_proportionally(4, [1, 2])


@given(
    weights=st.lists(st.integers(min_value=0, max_value=10**8), min_size=1, max_size=30),
    data=st.data(),
)
def test_allocate_sums_exactly_and_never_exceeds_a_weight(weights: list[int], data: st.DataObject) -> None:
    total = data.draw(st.integers(min_value=0, max_value=sum(weights)))
    shares = allocate_proportionally(total, weights)
    assert len(shares) == len(weights)
    assert sum(shares) == (total if sum(weights) else 0)
    assert all(0 <= share <= weight for share, weight in zip(shares, weights, strict=True))


# --------------------------------------------------------------------------------------
# Tax (§6).
# --------------------------------------------------------------------------------------

TAX_CASES = [
    pytest.param(
        # Default 10% on the first line (100); the second line's own 5% replaces the
        # default (50); the third line's empty tuple means no tax. 3000 + 150 = 3150.
        [Line(1000), Line(1000, tax_rates=(VAT5,)), Line(1000, tax_rates=())],
        [VAT10],
        False,
        Expected(3000, (), (0, 0, 0), (("txr_10", 100, 1000), ("txr_5", 50, 1000)), 3000, 3150),
        id="line-rates-replace-defaults-empty-means-none",
    ),
    pytest.param(
        # Two exclusive rates on 1000: 5% = 50 and 8.25% = 82.5 -> 83; 1000 + 133 = 1133.
        [Line(1000, tax_rates=(VAT5, SALES825))],
        [],
        False,
        Expected(1000, (), (0,), (("txr_5", 50, 1000), ("txr_825", 83, 1000)), 1000, 1133),
        id="two-exclusive-rates-one-line",
    ),
    pytest.param(
        # 10% of 2005 = 200.5 -> 201; 10% of -505 = -50.5 -> -51 (half away from zero);
        # tax 150 on taxable 1500; 1500 + 150 = 1650.
        [Line(2005), Line(-505)],
        [VAT10],
        False,
        Expected(1500, (), (0, 0), (("txr_10", 150, 1500),), 1500, 1650),
        id="tax-on-negative-line",
    ),
    pytest.param(
        # A single negative line: 10% of -1000 = -100; total -1100.
        [Line(-1000)],
        [VAT10],
        False,
        Expected(-1000, (), (0,), (("txr_10", -100, -1000),), -1000, -1100),
        id="tax-on-negative-only-invoice",
    ),
    pytest.param(
        # total_taxes aggregates per rate: 10% of 1000 + 10% of 2000 = 300 on 3000.
        [Line(1000), Line(2000)],
        [VAT10],
        False,
        Expected(3000, (), (0, 0), (("txr_10", 300, 3000),), 3000, 3300),
        id="total-taxes-aggregate-per-rate",
    ),
    pytest.param(
        # Aggregation after per-line rounding: 5% of 10 = 0.5 -> 1 on each of three lines
        # gives 3 (not 5% of 30 = 1.5 -> 2). 30 + 3 = 33.
        [Line(10), Line(10), Line(10)],
        [VAT5],
        False,
        Expected(30, (), (0, 0, 0), (("txr_5", 3, 30),), 30, 33),
        id="round-per-line-then-sum",
    ),
    pytest.param(
        # Exempt: exclusive rates add nothing; 1000 stays 1000.
        [Line(1000)],
        [VAT10],
        True,
        Expected(1000, (), (0,), (("txr_10", 0, 1000),), 1000, 1000),
        id="exempt-no-exclusive-tax",
    ),
    pytest.param(
        # Two inclusive rates on 1150: net 1150 / 1.15 = 1000; 10% -> 100, 5% -> 50;
        # the total stays 1150, excluding tax 1000.
        [Line(1150, tax_rates=(INCL10, INCL5))],
        [],
        False,
        Expected(1150, (), (0,), (("txr_incl10", 100, 1000), ("txr_incl5", 50, 1000)), 1000, 1150),
        id="two-inclusive-rates-one-line",
    ),
    pytest.param(
        # Inclusive 10% and exclusive 5% on 1100: net 1000 contains 100; exclusive 5% of
        # the net 1000 = 50 is added; total 1150, excluding tax 1000.
        [Line(1100, tax_rates=(INCL10, VAT5))],
        [],
        False,
        Expected(1100, (), (0,), (("txr_incl10", 100, 1000), ("txr_5", 50, 1000)), 1000, 1150),
        id="inclusive-and-exclusive-on-one-line",
    ),
    pytest.param(
        # Same line, exempt: the 100 inclusive is backed out, no exclusive tax: 1000.
        [Line(1100, tax_rates=(INCL10, VAT5))],
        [],
        True,
        Expected(1100, (), (0,), (("txr_incl10", 0, 1000), ("txr_5", 0, 1000)), 1000, 1000),
        id="inclusive-and-exclusive-exempt",
    ),
]


@pytest.mark.parametrize(("lines", "default_rates", "tax_exempt", "expected"), TAX_CASES)
def test_tax(lines: list[Line], default_rates: list[TaxRate], tax_exempt: bool, expected: Expected) -> None:
    priced = price_invoice(lines, currency="usd", default_tax_rates=default_rates, tax_exempt=tax_exempt)
    assert figures(priced) == expected


def test_line_rate_replacement_is_visible_per_line() -> None:
    priced = price_invoice(
        [Line(1000), Line(1000, tax_rates=(VAT5,)), Line(1000, tax_rates=())],
        currency="usd",
        default_tax_rates=[VAT10],
    )
    assert [line.tax_amounts for line in priced.lines] == [
        (TaxAmount("txr_10", 100, 1000, False),),
        (TaxAmount("txr_5", 50, 1000, False),),
        (),
    ]


@pytest.mark.parametrize(
    ("customer_tax_exempt", "rates", "total"),
    [
        # none: 10% exclusive of 1000 is added -> 1100.
        pytest.param("none", [VAT10], 1100, id="none-exclusive-added"),
        # exempt and reverse: no tax at all -> 1000.
        pytest.param("exempt", [VAT10], 1000, id="exempt-exclusive-dropped"),
        pytest.param("reverse", [VAT10], 1000, id="reverse-exclusive-dropped"),
        # 10000 at 10% inclusive: 909 stays in for none, backed out (9091) for both others.
        pytest.param("none", [INCL10], 10000, id="none-inclusive-kept"),
        pytest.param("exempt", [INCL10], 9091, id="exempt-inclusive-backed-out"),
        pytest.param("reverse", [INCL10], 9091, id="reverse-inclusive-backed-out"),
    ],
)
def test_reverse_charge_behaves_like_exempt(
    customer_tax_exempt: str, rates: list[TaxRate], total: int
) -> None:
    # §6: tax_exempt = exempt or reverse means no tax; price_invoice takes that as one flag.
    amount = 10000 if rates[0].inclusive else 1000
    priced = price_invoice(
        [Line(amount)],
        currency="eur",
        default_tax_rates=rates,
        tax_exempt=customer_tax_exempt in ("exempt", "reverse"),
    )
    assert priced.total == total
    if customer_tax_exempt != "none":
        assert [t.amount for t in priced.total_taxes] == [0]


def test_discount_then_inclusive_tax() -> None:
    # 11000 with 10% inclusive and 1000 off: discounted 10000 -> contains 909 (as in §6);
    # the total is 10000 and excludes 9091 of net amount.
    priced = price_invoice(
        [Line(11000)],
        currency="usd",
        coupons=[Coupon("TEN_USD", amount_off=1000, currency="usd")],
        default_tax_rates=[INCL10],
    )
    assert figures(priced) == Expected(
        11000, (("TEN_USD", 1000),), (1000,), (("txr_incl10", 909, 9091),), 9091, 10000
    )


def test_no_lines_prices_to_zero() -> None:
    priced = price_invoice([], currency="usd", coupons=[FIVE_USD_OFF], default_tax_rates=[VAT10])
    assert figures(priced) == Expected(0, (("FIVEOFF", 0),), (), (), 0, 0)


# --------------------------------------------------------------------------------------
# Properties over random invoices.
# --------------------------------------------------------------------------------------

percentages = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(100), places=4)
tax_rates = st.builds(
    TaxRate,
    id=st.sampled_from(["txr_a", "txr_b", "txr_c", "txr_d"]),
    percentage=st.decimals(min_value=Decimal(0), max_value=Decimal(100), places=4),
    inclusive=st.booleans(),
)
lines_strategy = st.lists(
    st.builds(
        Line,
        amount=st.integers(min_value=-(10**6), max_value=10**6),
        discountable=st.booleans(),
        tax_rates=st.none() | st.lists(tax_rates, max_size=3, unique_by=lambda r: r.id).map(tuple),
    ),
    max_size=8,
)


@st.composite
def coupon_lists(draw: st.DrawFn) -> list[Coupon]:
    count = draw(st.integers(min_value=0, max_value=3))
    coupons = []
    for index in range(count):
        if draw(st.booleans()):
            coupons.append(Coupon(f"c{index}", percent_off=draw(percentages)))
        else:
            coupons.append(
                Coupon(
                    f"c{index}",
                    amount_off=draw(st.integers(min_value=1, max_value=2 * 10**6)),
                    currency=draw(st.sampled_from(["usd", "eur"])),
                    currency_options=draw(
                        st.dictionaries(
                            st.sampled_from(["usd", "eur", "gbp"]), st.integers(1, 2 * 10**6), max_size=2
                        )
                    ),
                )
            )
    return coupons


@settings(max_examples=300)
@given(
    lines=lines_strategy,
    coupons=coupon_lists(),
    default_rates=st.lists(tax_rates, max_size=3, unique_by=lambda r: r.id),
    tax_exempt=st.booleans(),
    currency=st.sampled_from(["usd", "eur", "gbp"]),
)
def test_pricing_invariants(
    lines: list[Line],
    coupons: list[Coupon],
    default_rates: list[TaxRate],
    tax_exempt: bool,
    currency: str,
) -> None:
    priced = price_invoice(
        lines, currency=currency, coupons=coupons, default_tax_rates=default_rates, tax_exempt=tax_exempt
    )
    subtotal = sum(line.amount for line in lines)
    assert priced.subtotal == subtotal

    # Each coupon's line shares add up exactly to its total discount amount.
    for total_discount in priced.total_discount_amounts:
        shares = sum(
            d.amount
            for line in priced.lines
            for d in line.discount_amounts
            if d.coupon == total_discount.coupon
        )
        assert shares == total_discount.amount
    discounts = sum(d.amount for d in priced.total_discount_amounts)
    assert sum(line.discount_total for line in priced.lines) == discounts

    # Only coupons usable in this currency appear, in order.
    usable = [c.id for c in coupons if c.percent_off is not None or c.amount_off_in(currency) is not None]
    assert list(priced.applied_coupons) == usable

    # No line is discounted below zero; negative and non-discountable lines get nothing.
    for line, priced_line in zip(lines, priced.lines, strict=True):
        assert priced_line.amount == line.amount
        assert 0 <= priced_line.discount_total <= (max(line.amount, 0) if line.discountable else 0)

    # Discounts never create credit.
    assert 0 <= discounts <= max(subtotal, 0)

    exclusive = sum(t.amount for line in priced.lines for t in line.tax_amounts if not t.inclusive)
    inclusive = sum(t.amount for line in priced.lines for t in line.tax_amounts if t.inclusive)
    if tax_exempt:
        assert exclusive == inclusive == 0
        assert priced.total == priced.total_excluding_tax
    else:
        assert priced.total == subtotal - discounts + exclusive
        assert priced.total == priced.total_excluding_tax + inclusive + exclusive

    # total_taxes is the per-rate sum of the line taxes.
    per_rate: dict[str, int] = {}
    for priced_line in priced.lines:
        for t in priced_line.tax_amounts:
            per_rate[t.tax_rate] = per_rate.get(t.tax_rate, 0) + t.amount
    assert {t.tax_rate: t.amount for t in priced.total_taxes} == per_rate
