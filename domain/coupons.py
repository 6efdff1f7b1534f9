"""Coupon redemption: whether a coupon may be redeemed once more (domain/README.md §5).

A coupon is redeemed when a customer's discount, a subscription or an invoice's own
discounts take it; it can no longer be once its ``redeem_by`` time has passed or it has
been redeemed ``max_redemptions`` times.
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.errors import BadRequest


@dataclass(frozen=True, slots=True)
class Redemptions:
    """What redeemability reads of a coupon."""

    coupon: str
    redeem_by: int | None
    """Unix time after which it cannot be redeemed (None: no limit)."""
    max_redemptions: int | None
    """None: no limit."""
    times_redeemed: int


def check_redeemable(redemptions: Redemptions, now: int, *, field: str) -> None:
    """Refuse (``BadRequest`` on ``field``) a coupon that cannot be redeemed at ``now``."""
    coupon = redemptions.coupon
    if redemptions.redeem_by is not None and now > redemptions.redeem_by:
        raise BadRequest(f"coupon {coupon} could be redeemed only until {redemptions.redeem_by}", field=field)
    limit = redemptions.max_redemptions
    if limit is not None and redemptions.times_redeemed >= limit:
        raise BadRequest(f"coupon {coupon} has reached its {limit} redemptions", field=field)
