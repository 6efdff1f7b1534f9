"""The credit ledger: the only code that changes a customer balance.

Every change appends one immutable ``balance_transactions`` row and moves the
``customer_balances`` row for that currency in the same transaction, so the balance
always equals the sum of its transactions and each ``ending_balance`` is the running
sum. Callers hold the customer lock; the balance row is locked too so that a caller
that forgot cannot race.
"""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlmodel import Session

from tasks.ids import PREFIXES, new_id
from worker.tables import BalanceTransaction, CustomerBalance

_LOCK_BALANCE = (
    select(CustomerBalance)
    .where(
        CustomerBalance.customer_id == bindparam("customer"),  # type: ignore[arg-type]
        CustomerBalance.currency == bindparam("currency"),  # type: ignore[arg-type]
    )
    .with_for_update()
)


def lock_balance(session: Session, customer_id: str, currency: str) -> CustomerBalance:
    row = session.execute(_LOCK_BALANCE, {"customer": customer_id, "currency": currency}).scalar_one_or_none()
    if row is None:  # stored by the first ``append``: a currency never credited keeps no row
        row = CustomerBalance(customer_id=customer_id, currency=currency, balance=0, transaction_count=0)
    return row


def append(
    session: Session,
    *,
    customer_id: str,
    currency: str,
    amount: int,
    type: str,
    now: int,
    invoice_id: str | None = None,
    credit_note_id: str | None = None,
    description: str | None = None,
    metadata: dict[str, str] | None = None,
    transaction_id: str | None = None,
    balance: CustomerBalance | None = None,
) -> BalanceTransaction | None:
    """Append one transaction (negative amount = credit to the customer); 0 appends nothing.

    ``balance``: the (customer, currency) row the caller has locked already in this transaction.
    """
    if amount == 0:
        return None
    if balance is None:
        balance = lock_balance(session, customer_id, currency)
    session.add(balance)
    balance.balance += amount
    balance.transaction_count += 1
    txn = BalanceTransaction(
        id=transaction_id or new_id(PREFIXES["customer_balance_transaction"]),
        customer_id=customer_id,
        currency=currency,
        sequence=balance.transaction_count,
        amount=amount,
        ending_balance=balance.balance,
        type=type,
        invoice_id=invoice_id,
        credit_note_id=credit_note_id,
        description=description,
        metadata_=metadata,
        created=now,
    )
    session.add(txn)
    return txn
