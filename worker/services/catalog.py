"""Coupons, customer discounts, tax rates and balance adjustments (SPEC §2, §5, §6)."""

from __future__ import annotations

from sqlalchemy import delete, select

from domain.errors import BadRequest, NotFound
from domain.money import check_amount
from domain.periods import add_months
from tasks.contracts import (
    BalanceTransactionCreate,
    CouponCreate,
    CustomerDiscountCreate,
    CustomerDiscountDelete,
    TaxRateCreate,
)
from tasks.ids import PREFIXES, derived_id
from worker.services import ledger
from worker.services.base import Outcome, Request
from worker.services.customers import set_default_currency
from worker.services.invoices import check_redeemable
from worker.tables import BalanceTransaction, CouponRow, DiscountRow, TaxRateRow


def create_balance_transaction(request: Request, command: BalanceTransactionCreate) -> Outcome:
    """An ``adjustment``: negative credits the customer, positive records a debt."""
    customer = request.lock_customer(command.customer)
    if prior := request.replayed():
        return prior
    currency = command.currency or customer.currency
    if currency is None:
        raise BadRequest(f"customer {customer.id} has no default currency; name one", field="currency")
    check_amount(command.amount, currency=currency)
    request.ensure_new(BalanceTransaction, command.id, resource="balance transaction")
    set_default_currency(customer, currency, field="customer")
    ledger.append(
        request.session,
        customer_id=customer.id,
        currency=currency,
        amount=command.amount,
        type="adjustment",
        now=request.now,
        description=command.description,
        metadata=command.metadata,
        transaction_id=command.id,
    )
    return request.done(command.id)


def create_coupon(request: Request, command: CouponCreate) -> Outcome:
    if prior := request.replayed():
        return prior
    request.ensure_new(CouponRow, command.id, resource="coupon")
    if command.amount_off is not None:
        check_amount(command.amount_off, "amount_off", currency=command.currency)
    options = {cur: opt.amount_off for cur, opt in (command.currency_options or {}).items()}
    for cur, amount in options.items():
        check_amount(amount, f"currency_options.{cur}.amount_off", currency=cur)
    request.session.add(
        CouponRow(
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
    )
    return request.done(command.id)


def attach_discount(request: Request, command: CustomerDiscountCreate) -> Outcome:
    """A customer holds one discount; attaching another replaces it. Counts a redemption."""
    customer = request.lock_customer(command.customer)
    if prior := request.replayed():
        return prior
    coupon = request.get(CouponRow, command.coupon, resource="coupon", field="coupon")
    check_redeemable(coupon, request.now, field="coupon")
    coupon.times_redeemed += 1
    request.session.execute(delete(DiscountRow).where(DiscountRow.customer_id == customer.id))  # type: ignore[arg-type]
    end = add_months(request.now, coupon.duration_in_months) if coupon.duration_in_months else None
    discount_id = derived_id(PREFIXES["discount"], request.key)
    request.session.add(
        DiscountRow(
            id=discount_id,
            customer_id=customer.id,
            coupon_id=coupon.id,
            start=request.now,
            end=end,
            created=request.now,
        )
    )
    return request.done(discount_id)


def remove_discount(request: Request, command: CustomerDiscountDelete) -> Outcome:
    customer = request.lock_customer(command.customer)
    if prior := request.replayed():
        return prior
    held = request.session.execute(select(DiscountRow).where(DiscountRow.customer_id == customer.id)).scalar()  # type: ignore[arg-type]
    if held is None:
        raise NotFound("discount of customer", customer.id, field="customer")
    request.session.delete(held)
    return request.done(held.id)


def create_tax_rate(request: Request, command: TaxRateCreate) -> Outcome:
    if prior := request.replayed():
        return prior
    request.ensure_new(TaxRateRow, command.id, resource="tax rate")
    request.session.add(
        TaxRateRow(
            id=command.id,
            display_name=command.display_name,
            percentage=command.percentage,
            inclusive=command.inclusive,
            active=command.active,
            country=command.country,
            jurisdiction=command.jurisdiction,
            description=command.description,
            metadata_=command.metadata,
            created=request.now,
        )
    )
    return request.done(command.id)
