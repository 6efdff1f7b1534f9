"""An invoice's lifecycle after it is made: finalize, void, pay, mark uncollectible, delete
(domain/README.md §4). Which action is allowed from which status, and the
status it leaves, is ``domain.invoices.transition``'s; each action here locks the
invoice's customer first (``lock_invoice``).
"""

from __future__ import annotations

from sqlalchemy import delete as delete_rows
from sqlalchemy import func, select, update
from sqlmodel import col

from domain.errors import NotFound
from domain.invoices import check_deletable, transition
from tasks.contracts import InvoiceAction, InvoicePay
from worker.services import ledger
from worker.services.base import Outcome, Request
from worker.services.invoices.generation import finalize_invoice
from worker.tables import BalanceTransaction, Customer, Invoice, InvoiceItem


def lock_invoice(request: Request, invoice_id: str) -> tuple[Invoice, Customer]:
    """Lock the invoice's customer, then read the invoice as it is under that lock."""
    return request.lock_owner(Invoice, invoice_id, resource="invoice")


def finalize(request: Request, command: InvoiceAction) -> Outcome:
    invoice, customer = lock_invoice(request, command.invoice)
    if prior := request.replayed():
        return prior
    finalize_invoice(request, invoice, customer)
    return request.done(invoice.id)


def void(request: Request, command: InvoiceAction) -> Outcome:
    """Void gives back the balance the invoice consumed (``unapplied_from_invoice``)."""
    invoice, customer = lock_invoice(request, command.invoice)
    if prior := request.replayed():
        return prior
    voided = transition(invoice.id, invoice.status, "void")
    applied = request.session.execute(
        select(func.coalesce(func.sum(col(BalanceTransaction.amount)), 0)).where(
            col(BalanceTransaction.invoice_id) == invoice.id,
            col(BalanceTransaction.type).in_(("applied_to_invoice", "unapplied_from_invoice")),
        )
    ).scalar_one()
    txn = ledger.append(
        request.session,
        customer_id=customer.id,
        currency=invoice.currency,
        amount=-applied,
        type="unapplied_from_invoice",
        now=request.now,
        invoice_id=invoice.id,
    )
    invoice.status = voided
    invoice.voided_at = request.now
    request.emit("invoice.voided", invoice)
    if txn is not None:
        request.emit("customer.balance_transaction.created", txn)
    return request.done(invoice.id)


def pay(request: Request, command: InvoicePay) -> Outcome:
    """Paid out of band: the whole remaining amount is recorded as paid."""
    invoice, _ = lock_invoice(request, command.invoice)
    if prior := request.replayed():
        return prior
    invoice.status = transition(invoice.id, invoice.status, "pay")
    invoice.amount_paid += invoice.amount_remaining
    invoice.amount_remaining = 0
    invoice.paid_out_of_band = True
    invoice.paid_at = request.now
    request.emit("invoice.paid", invoice)
    return request.done(invoice.id)


def mark_uncollectible(request: Request, command: InvoiceAction) -> Outcome:
    """Decision: the balance applied at finalization stays consumed (only void gives it back)."""
    invoice, _ = lock_invoice(request, command.invoice)
    if prior := request.replayed():
        return prior
    invoice.status = transition(invoice.id, invoice.status, "mark_uncollectible")
    invoice.marked_uncollectible_at = request.now
    request.emit("invoice.marked_uncollectible", invoice)
    return request.done(invoice.id)


def delete(request: Request, command: InvoiceAction) -> Outcome:
    """Only drafts can be deleted; their items go back to pending (Decision).

    The first run removes the invoice, so a redelivery replays before looking it up.
    """
    if prior := request.replayed():
        return prior
    try:
        invoice, _ = lock_invoice(request, command.invoice)
    except NotFound:
        if prior := request.replayed():  # a concurrent first run deleted it and committed
            return prior
        raise
    if prior := request.replayed():
        return prior
    check_deletable(invoice.id, invoice.status)
    request.emit("invoice.deleted", request.render(invoice))
    request.session.execute(
        update(InvoiceItem)
        .where(col(InvoiceItem.invoice_id) == invoice.id)
        .values(invoice_id=None, discount_amounts=None, tax_amounts=None)
        .execution_options(synchronize_session=False)
    )
    request.session.execute(delete_rows(Invoice).where(col(Invoice.id) == invoice.id))
    return request.done(invoice.id)
