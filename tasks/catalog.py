"""Balance adjustments, coupons, customer discounts and tax rates."""

from __future__ import annotations

from typing import Any

from tasks.base import BillingTask
from worker.app import app


@app.task(name="billing.balance_transactions.create", base=BillingTask, bind=True)
def create_balance_transaction(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
    return self.perform(payload, args)


@app.task(name="billing.coupons.create", base=BillingTask, bind=True)
def create_coupon(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
    return self.perform(payload, args)


@app.task(name="billing.discounts.create", base=BillingTask, bind=True)
def attach_discount(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
    return self.perform(payload, args)


@app.task(name="billing.discounts.delete", base=BillingTask, bind=True)
def remove_discount(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
    return self.perform(payload, args)


@app.task(name="billing.tax_rates.create", base=BillingTask, bind=True)
def create_tax_rate(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
    return self.perform(payload, args)
