"""The credit ledger: the only code that changes a customer balance.

Every change appends one immutable ``balance_transactions`` row and moves the
``customer_balances`` row for that currency in the same transaction, so the balance
always equals the sum of its transactions and each ``ending_balance`` is the running
sum. Callers hold the customer lock; the balance row is locked too so that a caller
that forgot cannot race.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import bindparam, select, tuple_
from sqlmodel import Session, col

from tasks.ids import PREFIXES, new_id
from worker.tables import BalanceTransaction, CustomerBalance

_LOCK_BALANCE = (
    select(CustomerBalance)
    .where(
        col(CustomerBalance.customer_id) == bindparam("customer"),
        col(CustomerBalance.currency) == bindparam("currency"),
    )
    .with_for_update()
)


def _unstored(customer_id: str, currency: str) -> CustomerBalance:
    """A balance never moved: stored by the first ``append`` (a currency never credited keeps no row)."""
    return CustomerBalance(customer_id=customer_id, currency=currency, balance=0, transaction_count=0)


def lock_balance(session: Session, customer_id: str, currency: str) -> CustomerBalance:
    row = session.execute(_LOCK_BALANCE, {"customer": customer_id, "currency": currency}).scalar_one_or_none()
    return row if row is not None else _unstored(customer_id, currency)


def lock_balances(
    session: Session, pairs: Collection[tuple[str, str]]
) -> dict[tuple[str, str], CustomerBalance]:
    """``lock_balance`` of many (customer, currency) pairs with one query (locked in key order)."""
    if not pairs:
        return {}
    stmt = (
        select(CustomerBalance)
        .where(tuple_(CustomerBalance.customer_id, CustomerBalance.currency).in_(sorted(pairs)))
        .order_by(CustomerBalance.customer_id, CustomerBalance.currency)
        .with_for_update()
    )
    found = {(row.customer_id, row.currency): row for row in session.execute(stmt).scalars()}
    return {pair: found.get(pair) or _unstored(*pair) for pair in pairs}


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
