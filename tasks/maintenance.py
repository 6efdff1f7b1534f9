"""Beat jobs (queue ``billing.recurring``); see ``worker.app`` for the schedule."""

from __future__ import annotations

from typing import Any

from tasks.base import BillingTask
from worker.app import app
from worker.services import maintenance


@app.task(name="billing.maintenance.reconcile", base=BillingTask, bind=True)
def reconcile(self: BillingTask) -> dict[str, Any]:
    return self.maintain(maintenance.reconcile)


@app.task(name="billing.maintenance.purge", base=BillingTask, bind=True)
def purge(self: BillingTask) -> dict[str, Any]:
    return self.maintain(maintenance.purge)


@app.task(name="billing.maintenance.renew_subscriptions", base=BillingTask, bind=True)
def renew_subscriptions(self: BillingTask) -> dict[str, Any]:
    return self.sweep(maintenance.renew_due_subscriptions)


@app.task(name="billing.maintenance.finalize_drafts", base=BillingTask, bind=True)
def finalize_drafts(self: BillingTask) -> dict[str, Any]:
    return self.sweep(maintenance.finalize_due_drafts)


@app.task(name="billing.maintenance.mark_overdue", base=BillingTask, bind=True)
def mark_overdue(self: BillingTask) -> dict[str, Any]:
    return self.sweep(maintenance.mark_overdue)
