"""billing.documents.render: make and keep the PDF of a finalized invoice or a credit note.

Asked for through the outbox by the transaction that finalizes the invoice (every path:
``generation.finalize_invoice``) or creates the credit note, and published once it commits;
runs on its own queue (``billing.documents``), off the billing path.

Made once: the first rendition is stored and never replaced (Stripe: finalized invoices
are immutable). A voided invoice keeps its document as it was: Stripe's documentation says
nothing of a "Void" mark on the PDF of a voided invoice, only that voiding keeps a paper
trail, so no new rendition is made (domain/README.md §10). A redelivery finds the document
(or the request's key) and does nothing; rendering the same object twice gives the same
bytes anyway (``worker.documents.render``).

The PDF is rendered with no transaction open: what it shows is read in a short transaction
of its own, then the document is written in the request's transaction. On SQLite, whose
transactions take the write lock at BEGIN, no billing write waits for a render.
"""

from __future__ import annotations

from sqlmodel import Session

from domain.errors import NotFound
from tasks.contracts import DocumentEmail, DocumentRender
from worker.services.base import FollowUp, Outcome, Request
from worker.settings import get_settings
from worker.tables import CreditNote, Customer, EmailDelivery, Invoice

RENDER_TASK = "billing.documents.render"
EMAIL_TASK = "billing.documents.email"


def document_follow_up(*, invoice: str | None = None, credit_note: str | None = None) -> FollowUp:
    """The document request for a finalized invoice or a new credit note, keyed by its object:
    asked for twice (a replay), it is one outbox row."""
    object_id = invoice or credit_note
    assert object_id is not None and (invoice is None or credit_note is None)
    key = f"document:{object_id}"
    field = "invoice" if invoice else "credit_note"
    return FollowUp(RENDER_TASK, {field: object_id, "idempotency_key": key}, key)


def ask_for_document(request: Request, *, invoice: str | None = None, credit_note: str | None = None) -> None:
    """Ask for the document of a finalized invoice or a new credit note, unless documents are
    off (``BILLING_DOCUMENTS=false``: no PDF, no email, ``invoice_pdf``/``pdf`` stay null)."""
    if get_settings().documents:
        request.follow_ups.append(document_follow_up(invoice=invoice, credit_note=credit_note))


def email_follow_up(field: str, object_id: str) -> FollowUp:
    key = f"email:{object_id}"
    return FollowUp(EMAIL_TASK, {field: object_id, "idempotency_key": key}, key)


def _emailed(session: Session, kind: str, object_id: str) -> bool:
    """Whether the document goes to the customer by email: a send_invoice invoice's (Stripe
    emails those when they are finalized) and every credit note's; a customer with an email."""
    if kind == "credit_note":
        note = session.get(CreditNote, object_id)
        invoice = session.get(Invoice, note.invoice_id) if note else None
        return invoice is not None and bool(invoice.customer_email)
    invoice = session.get(Invoice, object_id)
    return (
        invoice is not None and invoice.collection_method == "send_invoice" and bool(invoice.customer_email)
    )


def render(request: Request, command: DocumentRender) -> Outcome:
    from worker.documents import render as render_document
    from worker.documents.model import load
    from worker.documents.store import DatabaseStore, stored

    object_id = command.object_id
    field = "invoice" if command.invoice else "credit_note"
    rendition = None
    with Session(request.session.get_bind()) as reading:  # its own short transaction
        if DatabaseStore(reading).get(object_id) is None:
            source = load(reading, object_id, field_name=field)
            reading.expunge_all()
        else:
            source = None
    if source is not None:
        rendition = render_document(source)  # no transaction open while it renders
    if prior := request.replayed():
        return prior
    if rendition is not None:
        DatabaseStore(request.session).put(
            stored(rendition.object_id, rendition.kind, rendition.locale, rendition.pdf, rendition.created)
        )
        if _emailed(request.session, rendition.kind, object_id):
            request.follow_ups.append(email_follow_up(field, object_id))
    return request.done(object_id)


def email(request: Request, command: DocumentEmail) -> Outcome:
    """Send the stored document to the customer, once in practice, never lost.

    The delivery is recorded (its ``Message-ID``, stable per document and recipient) in a
    transaction of its own before the message leaves, and marked sent in the request's
    transaction after. A worker that dies in between leaves it unmarked: the redelivery sends
    the same message again, with the same ``Message-ID``, so the receiving side can tell it
    is one; a delivery marked sent is never sent again.
    """
    from worker.documents.email import Sender, build_message, letter_for, message_id, smtp_domain
    from worker.documents.store import DatabaseStore

    object_id = command.object_id
    field = "invoice" if command.invoice else "credit_note"
    settings = get_settings()
    sender = settings.email_from or settings.issuer_support_email or "billing@billing-worker.invalid"
    bind = request.session.get_bind()
    with Session(bind) as session:  # recorded before sending, in a transaction of its own
        document = DatabaseStore(session).get(object_id)
        if document is None:
            raise NotFound("document", object_id, field=field)
        note = session.get(CreditNote, object_id) if field == "credit_note" else None
        invoice = session.get(Invoice, note.invoice_id if note else object_id)
        assert invoice is not None and invoice.number is not None
        customer = session.get(Customer, invoice.customer_id)
        recipient = invoice.customer_email or (customer.email if customer else None)
        if not recipient:
            raise NotFound("customer email", invoice.customer_id, field=field)
        mid = message_id(object_id, recipient, smtp_domain(sender))
        delivery = session.get(EmailDelivery, mid)
        if delivery is None:
            delivery = EmailDelivery(
                message_id=mid, object_id=object_id, recipient=recipient, created=request.now
            )
            session.add(delivery)
        already_sent = delivery.sent_at is not None
        if not already_sent:
            delivery.attempts += 1
        session.commit()
        letter = letter_for(
            document.kind,
            document.locale,
            note.number if note else invoice.number,
            settings.issuer_name or sender,
            note.amount if note else invoice.amount_due,
            invoice.currency,
            None if note else invoice.due_date,
        )
        filename = f"{note.number if note else invoice.number}.pdf"
        message = build_message(
            letter,
            sender=sender,
            recipient=recipient,
            recipient_name=invoice.customer_name,
            pdf=document.content,
            filename=filename,
            message_id_value=mid,
            date=document.created,
        )
    if not already_sent:
        Sender(settings.smtp_url, settings.emails_dir).send(message)
    if prior := request.replayed():
        return prior
    row = request.session.get(EmailDelivery, mid)
    if row is not None and row.sent_at is None:
        row.sent_at = request.now
    return request.done(object_id)
