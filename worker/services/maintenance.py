"""Beat jobs: the reconciler and the purge. Idempotent by nature, so a tick that fires
twice, or two beat processes, change nothing more than one tick would."""

from __future__ import annotations

from sqlalchemy import and_, delete, or_, select
from sqlmodel import Session

from tasks.ids import PREFIXES, derived_id
from worker.services.base import FollowUp
from worker.services.invoices import CREATE_TASK
from worker.settings import Settings
from worker.tables import Customer, IdempotencyKey, InvoiceItem, MessageDelivery, OutboxMessage

BATCH = 500


def due_follow_ups(session: Session, now: int, settings: Settings) -> list[FollowUp]:
    """Outbox rows never published (the publisher died after commit) or published long
    ago and still not done (the message was lost: broker flushed, worker killed)."""
    stale = OutboxMessage.published_at <= now - settings.outbox_republish_after_s  # type: ignore[operator]
    never = and_(
        OutboxMessage.published_at.is_(None),  # type: ignore[union-attr]
        OutboxMessage.created <= now - settings.outbox_grace_s,
    )
    rows = session.execute(
        select(OutboxMessage)
        .where(OutboxMessage.done_at.is_(None), or_(never, stale))  # type: ignore[union-attr]
        .order_by(OutboxMessage.created)
        .limit(BATCH)
    ).scalars()
    return [FollowUp(row.task_name, row.payload, row.key, row.task_id) for row in rows]


def stale_backlogs(session: Session, now: int, settings: Settings) -> list[FollowUp]:
    """Invoices (drafts) for pending items older than ``stale_pending_after_s``: the safety
    net for an invoice request lost before any worker saw it. One key per customer,
    currency and time window, so ticks within a window ask once."""
    if not settings.stale_pending_after_s:
        return []
    window = now // settings.stale_pending_after_s
    backlogs = session.execute(
        select(InvoiceItem.customer_id, InvoiceItem.currency)
        .join(Customer, Customer.id == InvoiceItem.customer_id)  # type: ignore[arg-type]
        .where(
            InvoiceItem.invoice_id.is_(None),  # type: ignore[union-attr]
            InvoiceItem.created <= now - settings.stale_pending_after_s,
            Customer.deleted.is_(False),  # type: ignore[attr-defined]
        )
        .distinct()
        .limit(BATCH)
    ).all()
    follow_ups = []
    for customer_id, currency in backlogs:
        key = f"reconcile:{customer_id}:{currency}:{window}"
        payload = {
            "id": derived_id(PREFIXES["invoice"], key),
            "customer": customer_id,
            "currency": currency,
            "idempotency_key": key,
        }
        follow_ups.append(FollowUp(CREATE_TASK, payload, key))
    return follow_ups


def reconcile(session: Session, now: int, settings: Settings) -> list[FollowUp]:
    return due_follow_ups(session, now, settings) + stale_backlogs(session, now, settings)


def purge(session: Session, now: int, settings: Settings) -> list[FollowUp]:
    """Forget idempotency keys, finished outbox rows and delivery counts past the retention."""
    cutoff = now - settings.idempotency_key_retention_s
    session.execute(delete(IdempotencyKey).where(IdempotencyKey.created < cutoff))  # type: ignore[arg-type]
    session.execute(
        delete(OutboxMessage).where(OutboxMessage.done_at < cutoff)  # type: ignore[arg-type,operator]
    )
    session.execute(delete(MessageDelivery).where(MessageDelivery.last_seen < cutoff))  # type: ignore[arg-type]
    return []
