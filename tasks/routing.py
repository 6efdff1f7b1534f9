"""Task names and queues, shared by producers and the worker (no Celery import here)."""

from __future__ import annotations

QUEUE_DEFAULT = "billing.default"
QUEUE_ITEMS = "billing.items"
QUEUE_INVOICES = "billing.invoices"
QUEUE_RECURRING = "billing.recurring"
ALL_QUEUES = (QUEUE_DEFAULT, QUEUE_ITEMS, QUEUE_INVOICES, QUEUE_RECURRING)

_BY_PREFIX = {
    "billing.invoice_items.": QUEUE_ITEMS,
    "billing.invoices.create": QUEUE_INVOICES,
    "billing.recurring.": QUEUE_RECURRING,
    "billing.subscriptions.renew": QUEUE_RECURRING,
    "billing.maintenance.": QUEUE_RECURRING,
}


def queue_for(task_name: str) -> str:
    for prefix, queue in _BY_PREFIX.items():
        if task_name.startswith(prefix):
            return queue
    return QUEUE_DEFAULT
