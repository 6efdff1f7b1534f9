"""The per-currency credit balance and how finalization draws on it (domain/README.md §2, §4.2).

Sign convention: a balance is stored with the ledger's sign, negative = credit the
customer holds, positive = money the customer owes. Stripe's ``invoice_credit_balance``
shows credit as positive; ``credit_available`` is the only place that flips the sign.
"""

from __future__ import annotations

from dataclasses import dataclass


def credit_available(balance: int) -> int:
    """Ledger balance -> the amount shown in ``invoice_credit_balance`` (positive = credit)."""
    return -balance


@dataclass(frozen=True, slots=True)
class CreditApplication:
    starting_balance: int
    ending_balance: int
    amount_due: int
    applied: int
    """Amount of the ``applied_to_invoice`` transaction (0: none)."""
    too_small: int
    """Amount of the ``invoice_too_small`` transaction (0: none)."""

    @property
    def paid(self) -> bool:
        return self.amount_due == 0


def apply_credit_balance(total: int, balance: int, minimum_charge: int) -> CreditApplication:
    """Apply the balance of the invoice's currency to an invoice of ``total``.

    ``amount_due = max(T + B, 0)``, ``ending_balance = min(T + B, 0)``, and the
    ``applied_to_invoice`` transaction moves the balance from B to that ending balance.
    A positive amount due below the currency's minimum charge is not collected: the
    invoice is settled with nothing due and the amount is carried to the balance
    (``invoice_too_small``) for the next invoice of that currency to collect.
    """
    combined = total + balance
    due = max(combined, 0)
    ending = min(combined, 0)
    applied = ending - balance
    too_small = 0
    if 0 < due < minimum_charge:
        too_small, ending, due = due, ending + due, 0
    return CreditApplication(
        starting_balance=balance, ending_balance=ending, amount_due=due, applied=applied, too_small=too_small
    )
