"""Credit notes: lower what an invoice asks for, or credit the balance after payment
(domain/README.md §7)."""

from __future__ import annotations

from sqlalchemy import select
from sqlmodel import col

from domain import credit_notes as rules
from domain.errors import BadRequest, NotFound
from domain.invoices import settle
from domain.money import check_amount
from tasks.contracts import CreditNoteCreate, CreditNoteVoid
from worker.services import ledger
from worker.services.base import Outcome, Request
from worker.services.documents import ask_for_document
from worker.services.invoices.lifecycle import lock_invoice
from worker.tables import CreditNote, InvoiceItem


def _check_amounts(command: CreditNoteCreate, currency: str) -> None:
    check_amount(command.note_amount, "amount", currency=currency)
    for name in ("refund_amount", "credit_amount", "out_of_band_amount"):
        value = getattr(command, name)
        if value is not None:
            check_amount(value, name, currency=currency)
    for index, line in enumerate(command.lines or ()):
        check_amount(line.amount, f"lines[{index}].amount", currency=currency)


def _check_lines(request: Request, command: CreditNoteCreate, issued: list[CreditNote]) -> None:
    """A line can be credited up to its amount, across this note and the issued ones."""
    credited: dict[str, int] = {}
    for note in issued:
        for stored in note.lines or ():
            if stored.get("invoice_line_item"):
                credited[stored["invoice_line_item"]] = (
                    credited.get(stored["invoice_line_item"], 0) + stored["amount"]
                )
    for index, line in enumerate(command.lines or ()):
        if line.invoice_line_item is None:
            continue
        item = request.session.get(InvoiceItem, line.invoice_line_item)
        if item is None or item.invoice_id != command.invoice:
            raise NotFound(
                f"line item on invoice {command.invoice}",
                line.invoice_line_item,
                field=f"lines[{index}].invoice_line_item",
            )
        total = credited.get(item.id, 0) + line.amount
        if total > max(item.amount, 0):
            raise BadRequest(
                f"credits {total} in all on line {item.id} of amount {item.amount}",
                field=f"lines[{index}].amount",
            )
        credited[item.id] = total


def create(request: Request, command: CreditNoteCreate) -> Outcome:
    invoice, _ = lock_invoice(request, command.invoice)
    if prior := request.replayed():
        return prior
    request.ensure_new(CreditNote, command.id, resource="credit note")
    _check_amounts(command, invoice.currency)
    notes = list(
        request.session.execute(select(CreditNote).where(col(CreditNote.invoice_id) == invoice.id)).scalars()
    )
    issued = [note for note in notes if note.status == rules.CreditNoteStatus.ISSUED]
    count, credited = len(notes), sum(note.amount for note in issued)
    plan = rules.plan_credit_note(
        rules.CreditableInvoice(
            invoice.id, invoice.status, invoice.total, invoice.amount_remaining, credited
        ),
        command.note_amount,
        refund_amount=command.refund_amount,
        credit_amount=command.credit_amount,
        out_of_band_amount=command.out_of_band_amount,
    )
    _check_lines(request, command, issued)
    assert invoice.number is not None
    note = CreditNote(
        id=command.id,
        invoice_id=invoice.id,
        customer_id=invoice.customer_id,
        currency=invoice.currency,
        number=rules.credit_note_number(invoice.number, count + 1),
        type=plan.type,
        amount=plan.amount,
        amount_due_reduction=plan.amount_due_reduction,
        refund_amount=plan.refund_amount,
        credit_amount=plan.credit_amount,
        out_of_band_amount=plan.out_of_band_amount,
        reason=command.reason,
        memo=command.memo,
        lines=[line.model_dump(mode="json", exclude_none=True) for line in command.lines or ()] or None,
        metadata_=command.metadata,
        created=request.now,
    )
    request.session.add(note)
    request.session.flush()
    txn = ledger.append(
        request.session,
        customer_id=invoice.customer_id,
        currency=invoice.currency,
        amount=-plan.credit_amount,
        type="credit_note",
        now=request.now,
        invoice_id=invoice.id,
        credit_note_id=note.id,
    )
    note.customer_balance_transaction = txn.id if txn else None
    request.emit("credit_note.created", note)
    if txn is not None:
        request.emit("customer.balance_transaction.created", txn)
    if plan.type == rules.PRE_PAYMENT:
        invoice.pre_payment_credit_notes_amount += plan.amount
        invoice.amount_due -= plan.amount_due_reduction
        invoice.amount_remaining -= plan.amount_due_reduction
        settled = settle(invoice.status, invoice.amount_remaining)
        if settled != invoice.status:  # the note took what remained: paid
            invoice.status = settled
            invoice.paid_at = request.now
            request.emit("invoice.paid", invoice)
    else:
        invoice.post_payment_credit_notes_amount += plan.amount
    ask_for_document(request, credit_note=note.id)
    return request.done(note.id)


def void(request: Request, command: CreditNoteVoid) -> Outcome:
    """Only while the invoice is open; undoes the note's effect on the invoice and the balance."""
    invoice_id = request.session.execute(
        select(col(CreditNote.invoice_id)).where(col(CreditNote.id) == command.credit_note)
    ).scalar()
    if invoice_id is None:
        raise NotFound("credit note", command.credit_note, field="credit_note")
    invoice, _ = lock_invoice(request, invoice_id)
    if prior := request.replayed():
        return prior
    note = request.session.get(CreditNote, command.credit_note, populate_existing=True)
    assert note is not None
    voided = rules.void_note(note.id, note.status, invoice.id, invoice.status)
    txn = ledger.append(
        request.session,
        customer_id=invoice.customer_id,
        currency=invoice.currency,
        amount=note.credit_amount,
        type="credit_note",
        now=request.now,
        invoice_id=invoice.id,
        credit_note_id=note.id,
        description=f"void of {note.number}",
    )
    if note.type == rules.PRE_PAYMENT:
        invoice.pre_payment_credit_notes_amount -= note.amount
        invoice.amount_due += note.amount_due_reduction
        invoice.amount_remaining += note.amount_due_reduction
    else:
        invoice.post_payment_credit_notes_amount -= note.amount
    note.status = voided
    note.voided_at = request.now
    request.emit("credit_note.voided", note)
    if txn is not None:
        request.emit("customer.balance_transaction.created", txn)
    return request.done(note.id)
