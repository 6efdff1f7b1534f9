"""Balance adjustments: a customer's credit or debt in one currency (domain/README.md §2)."""

from __future__ import annotations

from domain.errors import BadRequest
from domain.money import check_amount
from tasks.contracts import BalanceTransactionCreate
from worker.services import ledger
from worker.services.base import Outcome, Request
from worker.services.customers import set_default_currency
from worker.tables import BalanceTransaction


def create(request: Request, command: BalanceTransactionCreate) -> Outcome:
    """An ``adjustment``: negative credits the customer, positive records a debt."""
    customer = request.lock_customer(command.customer)
    if prior := request.replayed():
        return prior
    currency = command.currency or customer.currency
    if currency is None:
        raise BadRequest(f"customer {customer.id} has no default currency; name one", field="currency")
    check_amount(command.amount, currency=currency)
    request.ensure_new(BalanceTransaction, command.id, resource="balance transaction")
    set_default_currency(customer, currency, field="customer")
    txn = ledger.append(
        request.session,
        customer_id=customer.id,
        currency=currency,
        amount=command.amount,
        type="adjustment",
        now=request.now,
        description=command.description,
        metadata=command.metadata,
        transaction_id=command.id,
    )
    if txn is not None:
        request.emit("customer.balance_transaction.created", txn)
    return request.done(command.id)
