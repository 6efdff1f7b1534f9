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
