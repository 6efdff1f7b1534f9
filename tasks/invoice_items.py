"""Invoice item tasks (queue ``billing.items``)."""

from __future__ import annotations

from typing import Any

from celery_batches import SimpleRequest

from tasks.base import BillingBatchTask, BillingTask
from worker.app import app


@app.task(name="billing.invoice_items.create", base=BillingBatchTask, bind=True)
def create_invoice_item(self: BillingBatchTask, requests: list[SimpleRequest]) -> bool:
    """One item per message; the worker takes many messages together (see BillingBatchTask)."""
    return self.run_batch(requests)


@app.task(name="billing.invoice_items.create_many", base=BillingTask, bind=True)
def create_invoice_items(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
    return self.perform(payload, args)
