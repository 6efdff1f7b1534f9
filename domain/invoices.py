"""Invoice lifecycle and numbering (SPEC §4).

    draft ──finalize──> open ──pay──> paid
      │                  │ └──mark_uncollectible──> uncollectible ──pay──> paid
    delete               └──void──> void            └──void──> void

``paid`` and ``void`` are terminal. Requests in the wrong state are refused and change
nothing.
"""

from __future__ import annotations

from typing import Final

from domain.errors import WrongState

DRAFT, OPEN, PAID, VOID, UNCOLLECTIBLE = "draft", "open", "paid", "void", "uncollectible"

ALLOWED: Final[dict[str, frozenset[str]]] = {
    "finalize": frozenset({DRAFT}),
    "delete": frozenset({DRAFT}),
    "pay": frozenset({OPEN, UNCOLLECTIBLE}),
    "void": frozenset({OPEN, UNCOLLECTIBLE}),
    "mark_uncollectible": frozenset({OPEN}),
}

MAX_LINES_PER_INVOICE: Final = 250
SECONDS_PER_DAY: Final = 86_400
AUTO_ADVANCE_AFTER_S: Final = 3600
"""An ``auto_advance`` draft is finalized this long after it was made (SPEC §4)."""


PAST_TENSE: Final = {
    "finalize": "finalized",
    "delete": "deleted",
    "pay": "paid",
    "void": "voided",
    "mark_uncollectible": "marked uncollectible",
}


def check_transition(invoice_id: str, status: str, action: str) -> None:
    allowed = ALLOWED[action]
    if status not in allowed:
        wanted = " or ".join(sorted(allowed))
        raise WrongState(
            f"invoice {invoice_id} is {status}; only {wanted} invoices can be {PAST_TENSE[action]}",
            field="invoice",
        )


def invoice_number(prefix: str, sequence: int) -> str:
    return f"{prefix}-{sequence:04d}"


def due_date(start: int, days_until_due: int) -> int:
    """Unix time ``days_until_due`` whole days after ``start`` (finalization time)."""
    return start + days_until_due * SECONDS_PER_DAY
