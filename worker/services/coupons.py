"""Coupons: percent-off, or amount-off in their own currency (domain/README.md §5)."""

from __future__ import annotations

from domain.coupons import Redemptions
from domain.money import check_amount
from tasks.contracts import CouponCreate
from worker.services.base import Outcome, Request
from worker.tables import CouponRow


def redemptions(coupon: CouponRow) -> Redemptions:
    """What ``domain.coupons.check_redeemable`` reads of a stored coupon."""
    return Redemptions(coupon.id, coupon.redeem_by, coupon.max_redemptions, coupon.times_redeemed)


def create(request: Request, command: CouponCreate) -> Outcome:
    if prior := request.replayed():
        return prior
    request.ensure_new(CouponRow, command.id, resource="coupon")
    if command.amount_off is not None:
        check_amount(command.amount_off, "amount_off", currency=command.currency)
    options = {cur: opt.amount_off for cur, opt in (command.currency_options or {}).items()}
    for cur, amount in options.items():
        check_amount(amount, f"currency_options.{cur}.amount_off", currency=cur)
    coupon = CouponRow(
        id=command.id,
        name=command.name,
        percent_off=command.percent_off,
        amount_off=command.amount_off,
        currency=command.currency,
        currency_options=options or None,
        duration=command.duration,
        duration_in_months=command.duration_in_months,
        max_redemptions=command.max_redemptions,
        redeem_by=command.redeem_by,
        metadata_=command.metadata,
        created=request.now,
    )
    request.session.add(coupon)
    request.emit("coupon.created", coupon)
    return request.done(command.id)
