"""Invoice tasks. Generation runs on ``billing.invoices``; the chain's next part is
published by ``BillingTask.publish`` once this part has committed."""

from __future__ import annotations

from typing import Any

from tasks.base import BillingTask
from worker.app import app


@app.task(name="billing.invoices.create", base=BillingTask, bind=True)
def create_invoice(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
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
