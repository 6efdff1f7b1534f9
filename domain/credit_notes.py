"""Credit notes: what a note may credit, how it settles and when it can be voided
(domain/README.md §7).

Decision (Stripe's documentation is silent): a note on an open invoice first lowers
``amount_due``; any part of it beyond the amount due (possible when credit balance paid
part of the invoice at finalization) goes back to the customer's balance in the invoice's
currency. A note on a paid invoice with no settlement given is credited to the balance in
full.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from domain.errors import BadRequest, WrongState
from domain.invoices import InvoiceStatus
from domain.money import round_half_up
from domain.pricing import DiscountAmount, TaxAmount

PRE_PAYMENT, POST_PAYMENT = "pre_payment", "post_payment"


class CreditNoteStatus(enum.StrEnum):
    """Stored as its value (``credit_notes.status``) and shown as it in every object."""

    ISSUED = "issued"
    VOID = "void"


@dataclass(frozen=True, slots=True)
class CreditableInvoice:
    id: str
    status: str
    total: int
    amount_remaining: int
    already_credited: int
    """Sum of the invoice's credit notes that are not void."""


@dataclass(frozen=True, slots=True)
class CreditNotePlan:
    type: str
    amount: int
    amount_due_reduction: int
    refund_amount: int
    credit_amount: int
    out_of_band_amount: int


def creditable_amount(invoice: CreditableInvoice) -> int:
    return max(invoice.total, 0) - invoice.already_credited


def plan_credit_note(
    invoice: CreditableInvoice,
    amount: int,
    *,
    refund_amount: int | None = None,
    credit_amount: int | None = None,
    out_of_band_amount: int | None = None,
) -> CreditNotePlan:
    if invoice.status not in (InvoiceStatus.OPEN, InvoiceStatus.PAID):
        raise WrongState(
            f"invoice {invoice.id} is {invoice.status}; credit notes are only for open or paid invoices",
            field="invoice",
        )
    if amount <= 0:
        raise BadRequest("must be greater than 0", field="amount")
    limit = creditable_amount(invoice)
    if amount > limit:
        raise BadRequest(
            f"{amount} exceeds the {limit} still creditable on invoice {invoice.id} (total {invoice.total})",
            field="amount",
        )
    settlement = {
        "refund_amount": refund_amount,
        "credit_amount": credit_amount,
        "out_of_band_amount": out_of_band_amount,
    }
    if invoice.status == InvoiceStatus.OPEN:
        for name, value in settlement.items():
            if value is not None:
                raise BadRequest("applies only to credit notes on paid invoices", field=name)
        reduction = min(amount, invoice.amount_remaining)
        return CreditNotePlan(PRE_PAYMENT, amount, reduction, 0, amount - reduction, 0)
    if all(v is None for v in settlement.values()):
        credit_amount = amount
    refund, credit, oob = refund_amount or 0, credit_amount or 0, out_of_band_amount or 0
    if refund + credit + oob != amount:
        raise BadRequest(
            f"refund_amount + credit_amount + out_of_band_amount must equal the note's amount {amount}"
            f" (got {refund} + {credit} + {oob})",
            field="amount",
        )
    return CreditNotePlan(POST_PAYMENT, amount, 0, refund, credit, oob)


def credit_note_number(invoice_number: str, ordinal: int) -> str:
    return f"{invoice_number}-CN-{ordinal:02d}"


def void_note(note_id: str, status: str, invoice_id: str, invoice_status: str) -> CreditNoteStatus:
    """The status voiding leaves a note in: only an issued note can be voided, and only
    while its invoice is open."""
    if status == CreditNoteStatus.VOID:
        raise WrongState(f"credit note {note_id} is already void", field="credit_note")
    if invoice_status != InvoiceStatus.OPEN:
        raise WrongState(
            f"invoice {invoice_id} is {invoice_status}; credit notes can be voided only on open invoices",
            field="credit_note",
        )
    return CreditNoteStatus.VOID


@dataclass(frozen=True, slots=True)
class NoteAmounts:
    """A note's amounts as Stripe names them (domain/README.md §7)."""

    subtotal: int
    subtotal_excluding_tax: int
    total: int
    total_excluding_tax: int
    discount_amounts: tuple[DiscountAmount, ...]
    total_taxes: tuple[TaxAmount, ...]

    @property
    def discount_amount(self) -> int:
        return sum(d.amount for d in self.discount_amounts)


def note_amounts(
    amount: int,
    invoice_total: int,
    invoice_discounts: Sequence[DiscountAmount],
    invoice_taxes: Sequence[TaxAmount],
) -> NoteAmounts:
    """Decision: a note credits ``amount`` of its invoice's total, tax and discounts included,
    so it carries that share (amount / invoice total) of each of the invoice's discounts and
    taxes, each rounded half up. Then ``total`` is the amount; ``total_excluding_tax`` the
    amount less its taxes; ``subtotal`` the amount before discounts and without exclusive
    tax; ``subtotal_excluding_tax`` that without inclusive tax too. A note of the whole
    total repeats the invoice's figures."""

    def share(value: int) -> int:
        return round_half_up(Decimal(value) * amount / invoice_total) if invoice_total > 0 else 0

    discounts = tuple(DiscountAmount(d.coupon, share(d.amount)) for d in invoice_discounts)
    taxes = tuple(
        TaxAmount(t.tax_rate, share(t.amount), share(t.taxable_amount), t.inclusive) for t in invoice_taxes
    )
    discounted = sum(d.amount for d in discounts)
    exclusive = sum(t.amount for t in taxes if not t.inclusive)
    inclusive = sum(t.amount for t in taxes if t.inclusive)
    excluding_tax = amount - exclusive - inclusive
    return NoteAmounts(
        subtotal=amount - exclusive + discounted,
        subtotal_excluding_tax=excluding_tax + discounted,
        total=amount,
        total_excluding_tax=excluding_tax,
        discount_amounts=discounts,
        total_taxes=taxes,
    )


def pre_and_post_payment(amount: int, amount_due_reduction: int) -> tuple[int, int]:
    """(``pre_payment_amount``, ``post_payment_amount``): the part of the note that lowered the
    invoice's amount due, and the rest (refunded, credited to the balance or out of band)."""
    return amount_due_reduction, amount - amount_due_reduction
