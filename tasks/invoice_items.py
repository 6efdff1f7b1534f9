"""Invoice item tasks (queue ``billing.items``)."""

from __future__ import annotations

from typing import Any

from tasks.base import BillingTask
from worker.app import app


@app.task(name="billing.invoice_items.create", base=BillingTask, bind=True)
def create_invoice_item(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
    return self.perform(payload, args)


@app.task(name="billing.invoice_items.create_many", base=BillingTask, bind=True)
def create_invoice_items(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
    return self.perform(payload, args)
