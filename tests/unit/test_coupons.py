"""Coupon redemption: until ``redeem_by``, at most ``max_redemptions`` times (README:
Behaviour and decisions)."""

from __future__ import annotations

import pytest

from domain.coupons import Redemptions, check_redeemable
from domain.errors import BadRequest

NOW = 1_700_000_000


def coupon(
    redeem_by: int | None = None, max_redemptions: int | None = None, times_redeemed: int = 0
) -> Redemptions:
    return Redemptions("co_TEST", redeem_by, max_redemptions, times_redeemed)


@pytest.mark.parametrize(
    "redemptions",
    [
        pytest.param(coupon(), id="no-limits"),
        pytest.param(coupon(redeem_by=NOW + 1), id="before-redeem-by"),
        pytest.param(coupon(redeem_by=NOW), id="at-redeem-by"),
        pytest.param(coupon(max_redemptions=3, times_redeemed=2), id="one-redemption-left"),
        pytest.param(coupon(redeem_by=NOW, max_redemptions=1), id="both-limits-not-reached"),
    ],
)
def test_redeemable(redemptions: Redemptions) -> None:
    assert check_redeemable(redemptions, NOW, field="coupon") is None


@pytest.mark.parametrize("redeem_by", [NOW - 1, NOW - 86_400])
def test_redeem_by_passed(redeem_by: int) -> None:
    with pytest.raises(BadRequest) as caught:
        check_redeemable(coupon(redeem_by=redeem_by), NOW, field="discounts[1].coupon")
    assert caught.value.field == "discounts[1].coupon"
    assert caught.value.message == f"coupon co_TEST could be redeemed only until {redeem_by}"


@pytest.mark.parametrize("times_redeemed", [3, 4])
def test_max_redemptions_reached(times_redeemed: int) -> None:
    with pytest.raises(BadRequest) as caught:
        check_redeemable(coupon(max_redemptions=3, times_redeemed=times_redeemed), NOW, field="coupon")
    assert caught.value.field == "coupon"
    assert caught.value.message == "coupon co_TEST has reached its 3 redemptions"


def test_redeem_by_is_checked_first() -> None:
    with pytest.raises(BadRequest) as caught:
        check_redeemable(coupon(redeem_by=NOW - 1, max_redemptions=1, times_redeemed=1), NOW, field="coupon")
    assert "could be redeemed only until" in caught.value.message
