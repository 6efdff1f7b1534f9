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

from tasks.contracts import DocumentRender
from worker.services.base import FollowUp, Outcome, Request

RENDER_TASK = "billing.documents.render"


def document_follow_up(*, invoice: str | None = None, credit_note: str | None = None) -> FollowUp:
    """The document request for a finalized invoice or a new credit note, keyed by its object:
    asked for twice (a replay), it is one outbox row."""
    object_id = invoice or credit_note
    assert object_id is not None and (invoice is None or credit_note is None)
    key = f"document:{object_id}"
    field = "invoice" if invoice else "credit_note"
    return FollowUp(RENDER_TASK, {field: object_id, "idempotency_key": key}, key)


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
    return request.done(object_id)
