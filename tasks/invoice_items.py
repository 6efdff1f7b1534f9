"""Invoice item tasks (queue ``billing.items``)."""

from __future__ import annotations

from typing import Any

from tasks.base import BillingBatchTask, BillingTask
from worker.app import app


@app.task(name="billing.invoice_items.create", base=BillingBatchTask, bind=True)
def create_invoice_item(self: BillingBatchTask, /, *args: Any, **payload: Any) -> Any:
    """One item per message; a worker takes many messages together (see BillingBatchTask)."""
    if self.is_batch(args, payload):
        return self.run_batch(args[0])
    return self.perform(payload, args)


@app.task(name="billing.invoice_items.create_many", base=BillingTask, bind=True)
def create_invoice_items(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
    return self.perform(payload, args)
