"""Customer discounts: the one coupon a customer holds (domain/README.md §5)."""

from __future__ import annotations

from sqlalchemy import select
from sqlmodel import col

from domain.coupons import check_redeemable
from domain.errors import NotFound
from domain.periods import add_months
from tasks.contracts import CustomerDiscountCreate, CustomerDiscountDelete
from tasks.ids import PREFIXES, derived_id
from worker.services.base import Outcome, Request
from worker.services.coupons import redemptions
from worker.tables import CouponRow, DiscountRow


def create(request: Request, command: CustomerDiscountCreate) -> Outcome:
    """A customer holds one discount; attaching another replaces it. Counts a redemption."""
    customer = request.lock_customer(command.customer)
    if prior := request.replayed():
        return prior
    coupon = request.get(CouponRow, command.coupon, resource="coupon", field="coupon")
    check_redeemable(redemptions(coupon), request.now, field="coupon")
    coupon.times_redeemed += 1
    replaced = request.session.execute(
        select(DiscountRow).where(col(DiscountRow.customer_id) == customer.id)
    ).scalar()
    if replaced is not None:
        request.emit("customer.discount.deleted", request.render(replaced))
        request.session.delete(replaced)
        request.session.flush()  # before the new one: one discount per customer
    end = add_months(request.now, coupon.duration_in_months) if coupon.duration_in_months else None
    discount_id = derived_id(PREFIXES["discount"], request.key)
    discount = DiscountRow(
        id=discount_id,
        customer_id=customer.id,
        coupon_id=coupon.id,
        start=request.now,
        end=end,
        created=request.now,
    )
    request.session.add(discount)
    request.emit("customer.discount.created", discount)
    return request.done(discount_id)


def delete(request: Request, command: CustomerDiscountDelete) -> Outcome:
    customer = request.lock_customer(command.customer)
    if prior := request.replayed():
        return prior
    held = request.session.execute(
        select(DiscountRow).where(col(DiscountRow.customer_id) == customer.id)
    ).scalar()
    if held is None:
        raise NotFound("discount of customer", customer.id, field="customer")
    request.emit("customer.discount.deleted", request.render(held))
    request.session.delete(held)
    return request.done(held.id)
