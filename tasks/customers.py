"""Customer tasks: each forwards its payload to the service of the same name."""

from __future__ import annotations

from typing import Any

from tasks.base import BillingTask
from worker.app import app


@app.task(name="billing.customers.create", base=BillingTask, bind=True)
def create_customer(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
    return self.perform(payload, args)


@app.task(name="billing.customers.update", base=BillingTask, bind=True)
def update_customer(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
    return self.perform(payload, args)


@app.task(name="billing.customers.delete", base=BillingTask, bind=True)
def delete_customer(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
    return self.perform(payload, args)
