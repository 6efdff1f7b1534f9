"""Products, prices, subscriptions and test clocks. Renewals are asked for by beat
(``billing.maintenance.renew_subscriptions``) and by the renewal before them."""

from __future__ import annotations

from typing import Any

from tasks.base import BillingTask
from worker.app import app


@app.task(name="billing.products.create", base=BillingTask, bind=True)
def create_product(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
    return self.perform(payload, args)


@app.task(name="billing.prices.create", base=BillingTask, bind=True)
def create_price(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
    return self.perform(payload, args)


@app.task(name="billing.subscriptions.create", base=BillingTask, bind=True)
def create_subscription(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
    return self.perform(payload, args)


@app.task(name="billing.subscriptions.cancel", base=BillingTask, bind=True)
def cancel_subscription(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
    return self.perform(payload, args)


@app.task(name="billing.subscriptions.change_currency", base=BillingTask, bind=True)
def change_subscription_currency(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
    return self.perform(payload, args)


@app.task(name="billing.subscriptions.renew", base=BillingTask, bind=True)
def renew_subscription(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
    return self.perform(payload, args)


@app.task(name="billing.test_clocks.create", base=BillingTask, bind=True)
def create_test_clock(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
    return self.perform(payload, args)


@app.task(name="billing.test_clocks.advance", base=BillingTask, bind=True)
def advance_test_clock(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
    return self.perform(payload, args)
