"""Credit note tasks."""

from __future__ import annotations

from typing import Any

from tasks.base import BillingTask
from worker.app import app


@app.task(name="billing.credit_notes.create", base=BillingTask, bind=True)
def create_credit_note(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
    return self.perform(payload, args)


@app.task(name="billing.credit_notes.void", base=BillingTask, bind=True)
def void_credit_note(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
    return self.perform(payload, args)
