"""Operation name -> service: the single entry point for tasks and for tests.

``run`` validates a payload with the operation's contract and executes its service in
one transaction, as the worker does for a message of that task name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tasks.contracts import CONTRACTS, InvoiceCreate, parse
from worker.services import (
    catalog,
    credit_notes,
    customers,
    invoice_items,
    invoices,
    products,
    subscriptions,
    test_clocks,
)
from worker.services.base import Outcome, Service, TogetherService, execute, execute_together


@dataclass(frozen=True, slots=True)
class Operation:
    service: Service
    key: Callable[[Any], str] | None = None
    """The idempotency key of a command, when it is not simply ``command.idempotency_key``."""


def _part_key(command: InvoiceCreate) -> str:
    return command.part_key


OPERATIONS: dict[str, Operation] = {
    "billing.customers.create": Operation(customers.create_customer),
    "billing.customers.update": Operation(customers.update_customer),
    "billing.customers.delete": Operation(customers.delete_customer),
    "billing.invoice_items.create": Operation(invoice_items.create_invoice_item),
    "billing.invoice_items.create_many": Operation(invoice_items.create_invoice_items),
    "billing.invoices.create": Operation(invoices.create_invoice, key=_part_key),
    "billing.invoices.create_for_pending": Operation(invoices.create_invoices_for_pending),
    "billing.invoices.finalize": Operation(invoices.finalize),
    "billing.invoices.void": Operation(invoices.void),
    "billing.invoices.pay": Operation(invoices.pay),
    "billing.invoices.mark_uncollectible": Operation(invoices.mark_uncollectible),
    "billing.invoices.delete": Operation(invoices.delete_draft),
    "billing.credit_notes.create": Operation(credit_notes.create_credit_note),
    "billing.credit_notes.void": Operation(credit_notes.void_credit_note),
    "billing.balance_transactions.create": Operation(catalog.create_balance_transaction),
    "billing.coupons.create": Operation(catalog.create_coupon),
    "billing.discounts.create": Operation(catalog.attach_discount),
    "billing.discounts.delete": Operation(catalog.remove_discount),
    "billing.tax_rates.create": Operation(catalog.create_tax_rate),
    "billing.products.create": Operation(products.create_product),
    "billing.prices.create": Operation(products.create_price),
    "billing.subscriptions.create": Operation(subscriptions.create_subscription),
    "billing.subscriptions.cancel": Operation(subscriptions.cancel_subscription),
    "billing.subscriptions.change_currency": Operation(subscriptions.change_currency),
    "billing.subscriptions.renew": Operation(subscriptions.renew_subscription),
    "billing.test_clocks.create": Operation(test_clocks.create_test_clock),
    "billing.test_clocks.advance": Operation(test_clocks.advance_test_clock),
}
assert OPERATIONS.keys() == CONTRACTS.keys(), "every contract needs a service and vice versa"


def run(name: str, payload: dict[str, Any], *, redeliveries: int = 0, redelivery_cap: int = 0) -> Outcome:
    operation = OPERATIONS[name]
    command = parse(CONTRACTS[name], payload)
    return execute(
        name,
        command,
        operation.service,
        key=operation.key(command) if operation.key else None,
        redeliveries=redeliveries,
        redelivery_cap=redelivery_cap,
    )


TOGETHER: dict[str, TogetherService] = {
    "billing.invoice_items.create": invoice_items.create_invoice_items_together,
    "billing.invoices.create": invoices.create_invoices_together,
}
"""Operations whose messages a worker may take together (see ``run_together``)."""


def run_together(name: str, commands: list[Any]) -> list[Outcome | None]:
    """Parsed commands of one operation in one transaction; per command, its outcome if it
    is settled, else None (those must run alone with ``run``)."""
    return execute_together(name, commands, TOGETHER[name])
