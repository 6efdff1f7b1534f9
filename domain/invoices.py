"""Invoice lifecycle and numbering (domain/README.md §4).

    draft ──finalize──> open ──pay──> paid
      │                  │ └──mark_uncollectible──> uncollectible ──pay──> paid
    delete               └──void──> void            └──void──> void

``paid`` and ``void`` are terminal. Finalization lands on ``paid`` at once when the credit
balance leaves nothing due (``settle``), as does an open invoice whose credit notes take
what remains to 0. Requests in the wrong state are refused and change nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Final

from domain.errors import WrongState


class InvoiceStatus(enum.StrEnum):
    """Stored as its value (``invoices.status``) and shown as it in every object."""

    DRAFT = "draft"
    OPEN = "open"
    PAID = "paid"
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"


NEXT: Final[dict[str, dict[InvoiceStatus, InvoiceStatus]]] = {
    "finalize": {InvoiceStatus.DRAFT: InvoiceStatus.OPEN},
    "pay": {InvoiceStatus.OPEN: InvoiceStatus.PAID, InvoiceStatus.UNCOLLECTIBLE: InvoiceStatus.PAID},
    "void": {InvoiceStatus.OPEN: InvoiceStatus.VOID, InvoiceStatus.UNCOLLECTIBLE: InvoiceStatus.VOID},
    "mark_uncollectible": {InvoiceStatus.OPEN: InvoiceStatus.UNCOLLECTIBLE},
}
"""Action -> (status it accepts -> status it leaves). ``delete`` leaves no status: the
invoice is gone (``check_deletable``)."""

ALLOWED: Final[dict[str, frozenset[InvoiceStatus]]] = {
    **{action: frozenset(moves) for action, moves in NEXT.items()},
    "delete": frozenset({InvoiceStatus.DRAFT}),
}
"""Action -> the statuses it accepts."""

ACTIONS: Final = tuple(ALLOWED)

MAX_LINES_PER_INVOICE: Final = 250
SECONDS_PER_DAY: Final = 86_400
AUTO_ADVANCE_AFTER_S: Final = 3600
"""An ``auto_advance`` draft is finalized this long after it was made (domain/README.md §4)."""


PAST_TENSE: Final = {
    "finalize": "finalized",
    "delete": "deleted",
    "pay": "paid",
    "void": "voided",
    "mark_uncollectible": "marked uncollectible",
}


def _refuse_unless_allowed(invoice_id: str, status: str, action: str) -> None:
    allowed = ALLOWED[action]
    if status not in allowed:
        wanted = " or ".join(sorted(allowed))
        raise WrongState(
            f"invoice {invoice_id} is {status}; only {wanted} invoices can be {PAST_TENSE[action]}",
            field="invoice",
        )


def transition(invoice_id: str, status: str, action: str) -> InvoiceStatus:
    """The status ``action`` leaves an invoice of ``status`` in; refused (``WrongState`` on
    field ``invoice``) from a status it does not accept. ``finalize`` gives ``open``, which
    ``settle`` turns into ``paid`` when nothing is due."""
    _refuse_unless_allowed(invoice_id, status, action)
    return NEXT[action][InvoiceStatus(status)]


def check_deletable(invoice_id: str, status: str) -> None:
    """Only drafts can be deleted; refused as ``transition`` refuses."""
    _refuse_unless_allowed(invoice_id, status, "delete")


def settle(status: str, amount_remaining: int) -> InvoiceStatus:
    """An open invoice with nothing left to pay is paid: at finalization when the credit
    balance covered it, or when a credit note takes its amount remaining to 0."""
    status = InvoiceStatus(status)
    return InvoiceStatus.PAID if status == InvoiceStatus.OPEN and amount_remaining == 0 else status


def invoice_number(prefix: str, sequence: int) -> str:
    return f"{prefix}-{sequence:04d}"


def due_date(start: int, days_until_due: int) -> int:
    """Unix time ``days_until_due`` whole days after ``start`` (finalization time)."""
    return start + days_until_due * SECONDS_PER_DAY


def subtotal_excluding_tax(total_excluding_tax: int, discounts: Iterable[int]) -> int:
    """The subtotal before invoice-level discounts, without any tax (domain/README.md §4.1):
    ``total_excluding_tax`` (after discounts, inclusive tax backed out) plus the discounts."""
    return total_excluding_tax + sum(discounts)


def automatically_finalizes_at(status: str, auto_advance: bool, created: int) -> int | None:
    """When a draft is due to be finalized by itself (§4: an hour after it was made, with
    ``auto_advance``); None for a draft left alone and for every invoice already finalized."""
    return created + AUTO_ADVANCE_AFTER_S if status == InvoiceStatus.DRAFT and auto_advance else None


def invoice_period(created: int, previous_period: tuple[int, int] | None) -> tuple[int, int]:
    """(``period_start``, ``period_end``): the usage period during which the invoice's items
    were added (§4). A subscription's cycle invoice looks back one period: the period before
    the one it bills; any other invoice (manual, a subscription's first, a chain's later
    parts) is the instant it was made."""
    return previous_period if previous_period is not None else (created, created)
