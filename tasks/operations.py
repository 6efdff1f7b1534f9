"""Every operation of the billing worker, in one table: task name, contract, queue.

This is the one place an operation is declared. Each layer reads its row:

- the producer (``tasks.client``) validates a call with the row's contract and sends the
  task by name to the row's queue;
- the worker (``worker.app``) registers one Celery task per row and runs the service named
  like it: task ``billing.<resource>.<verb>`` runs ``worker/services/<resource>.py``'s
  function ``<verb>`` (and ``<verb>_together`` when its messages are taken together);
- beat (``worker.app.beat_schedule``) and the worker's own follow-ups route by it.

Adding an operation is a contract (``tasks.contracts``), a row here and a service. Task
names, queues and message bodies are the wire format: never rename one that was released.

Imports only ``tasks.contracts`` (no Celery, no database): services in any language can
read this table as the list of what they may send.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tasks import contracts as c

QUEUE_DEFAULT = "billing.default"
"""Customer, catalogue and invoice lifecycle requests: small, one transaction each."""
QUEUE_ITEMS = "billing.items"
"""Invoice items: the high-volume ingestion path."""
QUEUE_INVOICES = "billing.invoices"
"""Invoice generation (chains of at most 250 lines)."""
QUEUE_RECURRING = "billing.recurring"
"""Beat jobs and subscription renewals."""
QUEUE_DOCUMENTS = "billing.documents"
"""Rendering invoice and credit note PDFs: off the billing path, on workers of their own."""
BILLING_QUEUES = (QUEUE_DEFAULT, QUEUE_ITEMS, QUEUE_INVOICES, QUEUE_RECURRING)
"""Every queue that changes the books (``celery worker -Q`` for billing workers)."""
ALL_QUEUES = (*BILLING_QUEUES, QUEUE_DOCUMENTS)

Kind = Literal["request", "job", "sweep"]
"""``request``: a message with a JSON object of keyword arguments, checked by the contract,
run in one transaction under its idempotency key. ``job``: a beat job in one transaction.
``sweep``: a beat job that pages through due rows, one transaction per chunk."""


@dataclass(frozen=True, slots=True)
class Batching:
    """A worker takes this operation's messages together: up to ``size`` messages, or what
    arrived within ``interval`` seconds, in one transaction. Both name worker settings."""

    size: str
    interval: str


@dataclass(frozen=True, slots=True)
class Operation:
    name: str
    """The task name, ``billing.<resource>.<verb>``."""
    contract: type[c.Contract] | None
    """What the message's keyword arguments must be; ``None`` for beat jobs (no arguments)."""
    queue: str = QUEUE_DEFAULT
    kind: Kind = "request"
    batching: Batching | None = None

    @property
    def resource(self) -> str:
        return self.name.split(".")[1]

    @property
    def verb(self) -> str:
        return self.name.split(".")[2]


_ITEM_BATCHES = Batching("item_batch_size", "item_batch_interval_s")
_INVOICE_BATCHES = Batching("invoice_batch_size", "invoice_batch_interval_s")

_ROWS = (
    Operation("billing.customers.create", c.CustomerCreate),
    Operation("billing.customers.update", c.CustomerUpdate),
    Operation("billing.customers.delete", c.CustomerDelete),
    Operation("billing.invoice_items.create", c.InvoiceItemCreate, QUEUE_ITEMS, batching=_ITEM_BATCHES),
    Operation("billing.invoice_items.create_many", c.InvoiceItemsCreate, QUEUE_ITEMS),
    Operation("billing.invoices.create", c.InvoiceCreate, QUEUE_INVOICES, batching=_INVOICE_BATCHES),
    Operation("billing.invoices.create_for_pending", c.InvoicePendingCreate, QUEUE_INVOICES),
    Operation("billing.invoices.finalize", c.InvoiceAction),
    Operation("billing.invoices.void", c.InvoiceAction),
    Operation("billing.invoices.pay", c.InvoicePay),
    Operation("billing.invoices.mark_uncollectible", c.InvoiceAction),
    Operation("billing.invoices.delete", c.InvoiceAction),
    Operation("billing.credit_notes.create", c.CreditNoteCreate),
    Operation("billing.credit_notes.void", c.CreditNoteVoid),
    Operation("billing.balance_transactions.create", c.BalanceTransactionCreate),
    Operation("billing.coupons.create", c.CouponCreate),
    Operation("billing.discounts.create", c.CustomerDiscountCreate),
    Operation("billing.discounts.delete", c.CustomerDiscountDelete),
    Operation("billing.tax_rates.create", c.TaxRateCreate),
    Operation("billing.products.create", c.ProductCreate),
    Operation("billing.prices.create", c.PriceCreate),
    Operation("billing.subscriptions.create", c.SubscriptionCreate),
    Operation("billing.subscriptions.cancel", c.SubscriptionCancel),
    Operation("billing.subscriptions.change_currency", c.SubscriptionCurrencyChange),
    Operation("billing.subscriptions.renew", c.SubscriptionRenew, QUEUE_RECURRING),
    Operation("billing.test_clocks.create", c.TestClockCreate),
    Operation("billing.test_clocks.advance", c.TestClockAdvance),
    # Follow-ups of finalization and credit note creation (worker/documents).
    Operation("billing.documents.render", c.DocumentRender, QUEUE_DOCUMENTS),
    Operation("billing.documents.email", c.DocumentEmail, QUEUE_DOCUMENTS),
    # Beat jobs (schedule: ``worker.app.beat_schedule``).
    Operation("billing.maintenance.reconcile", None, QUEUE_RECURRING, kind="job"),
    Operation("billing.maintenance.purge", None, QUEUE_RECURRING, kind="job"),
    Operation("billing.maintenance.renew_subscriptions", None, QUEUE_RECURRING, kind="sweep"),
    Operation("billing.maintenance.finalize_drafts", None, QUEUE_RECURRING, kind="sweep"),
    Operation("billing.maintenance.mark_overdue", None, QUEUE_RECURRING, kind="sweep"),
)

OPERATIONS: dict[str, Operation] = {operation.name: operation for operation in _ROWS}
"""Every operation by task name."""

REQUESTS: dict[str, Operation] = {name: op for name, op in OPERATIONS.items() if op.kind == "request"}
"""The operations a producer may ask for (each with a contract)."""


def queue_for(task_name: str) -> str:
    """The queue of a task; names outside the table (a benchmark's own tasks) go to the default."""
    operation = OPERATIONS.get(task_name)
    return operation.queue if operation else QUEUE_DEFAULT


def contract_of(task_name: str) -> type[c.Contract]:
    """The contract of a request; ``KeyError`` for a name that is not one."""
    contract = REQUESTS[task_name].contract
    assert contract is not None
    return contract
