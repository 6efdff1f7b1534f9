"""Invoice tasks. Generation runs on ``billing.invoices``; the chain's next part is
published once this part has committed."""

from __future__ import annotations

from typing import Any

from tasks.base import BillingBatchTask, BillingTask
from worker.app import app


@app.task(
    name="billing.invoices.create",
    base=BillingBatchTask,
    bind=True,
    batch_size="invoice_batch_size",
    batch_interval="invoice_batch_interval_s",
)
def create_invoice(self: BillingBatchTask, /, *args: Any, **payload: Any) -> Any:
    """A worker takes many requests together (see BillingBatchTask and
    ``worker.services.invoices.create_invoices_together``)."""
    if self.is_batch(args, payload):
        return self.run_batch(args[0])
    return self.perform(payload, args)


@app.task(name="billing.invoices.create_for_pending", base=BillingTask, bind=True)
def create_invoices_for_pending(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
    return self.perform(payload, args)


@app.task(name="billing.invoices.finalize", base=BillingTask, bind=True)
def finalize_invoice(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
    return self.perform(payload, args)


@app.task(name="billing.invoices.void", base=BillingTask, bind=True)
def void_invoice(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
    return self.perform(payload, args)


@app.task(name="billing.invoices.pay", base=BillingTask, bind=True)
def pay_invoice(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
    return self.perform(payload, args)


@app.task(name="billing.invoices.mark_uncollectible", base=BillingTask, bind=True)
def mark_invoice_uncollectible(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
    return self.perform(payload, args)


@app.task(name="billing.invoices.delete", base=BillingTask, bind=True)
def delete_invoice(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
    return self.perform(payload, args)
