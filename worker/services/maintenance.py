"""Beat jobs: the reconciler and the purge; subscription renewals, draft finalization and
overdue marking. Idempotent by nature, so a tick that fires twice, or two beat processes,
change nothing more than one tick would."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, delete, or_, select, tuple_, update
from sqlmodel import Session

from domain.invoices import AUTO_ADVANCE_AFTER_S, InvoiceStatus
from domain.subscriptions import ACTIVE
from tasks.ids import PREFIXES, derived_id
from worker.services.base import FollowUp
from worker.services.invoices.generation import CREATE_TASK
from worker.services.subscriptions import renewal
from worker.settings import Settings
from worker.tables import (
    Customer,
    IdempotencyKey,
    Invoice,
    InvoiceItem,
    MessageDelivery,
    OutboxMessage,
    Subscription,
)

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


# Chunked sweeps: ``job(session, now, settings, cursor) -> (follow-ups, next cursor)``, one
# transaction per chunk (``BillingTask.sweep``); a cursor of None means done. They publish
# without the outbox: what they ask for stays due, so a lost message is asked for again.

Chunk = tuple[list[FollowUp], Any]
FINALIZE_TASK = "billing.invoices.finalize"


def _billed_by_beat() -> tuple[Any, ...]:
    """Customers beat bills: live, and not on a test clock (those move with their clock)."""
    return (Customer.test_clock_id.is_(None), Customer.deleted.is_(False))  # type: ignore[union-attr,attr-defined]


def renew_subscriptions(session: Session, now: int, settings: Settings, after: Any) -> Chunk:
    """Ask for the next renewal of every active subscription whose current period has ended.

    Keyset pages on (current_period_end, id) through ``ix_subscriptions_due``. A row is
    marked when asked for and asked again only after ``outbox_republish_after_s``; on
    PostgreSQL, rows another beat job is marking are skipped (SKIP LOCKED). One renewal
    per (subscription, period), keyed by both: asking twice bills once.
    """
    due = (
        select(Subscription.id, Subscription.current_period_end)
        .join(Customer, Customer.id == Subscription.customer_id)  # type: ignore[arg-type]
        .where(
            Subscription.status == ACTIVE,  # type: ignore[arg-type]
            Subscription.current_period_end <= now,  # type: ignore[arg-type]
            or_(
                Subscription.renewal_requested_at.is_(None),  # type: ignore[union-attr]
                Subscription.renewal_requested_at <= now - settings.outbox_republish_after_s,  # type: ignore[operator]
            ),
            *_billed_by_beat(),
        )
        .order_by(Subscription.current_period_end, Subscription.id)
        .limit(settings.beat_chunk_size)
        .with_for_update(of=Subscription, skip_locked=True)  # type: ignore[arg-type]
    )
    if after is not None:
        due = due.where(tuple_(Subscription.current_period_end, Subscription.id) > tuple_(*after))
    rows = session.execute(due).all()
    if not rows:
        return [], None
    session.execute(
        update(Subscription)
        .where(Subscription.id.in_([row.id for row in rows]))  # type: ignore[attr-defined]
        .values(renewal_requested_at=now)
        .execution_options(synchronize_session=False)
    )
    return [renewal(row.id, row.current_period_end) for row in rows], (
        rows[-1].current_period_end,
        rows[-1].id,
    )


def finalize_drafts(session: Session, now: int, settings: Settings, after: Any) -> Chunk:
    """Finalize ``auto_advance`` drafts made more than an hour ago (domain/README.md §4; README: Beat)."""
    due = (
        select(Invoice.id, Invoice.created)
        .join(Customer, Customer.id == Invoice.customer_id)  # type: ignore[arg-type]
        .where(
            Invoice.status == InvoiceStatus.DRAFT,  # type: ignore[arg-type]
            Invoice.auto_advance,  # type: ignore[arg-type]
            Invoice.created <= now - AUTO_ADVANCE_AFTER_S,  # type: ignore[arg-type]
            *_billed_by_beat(),
        )
        .order_by(Invoice.created, Invoice.id)
        .limit(settings.beat_chunk_size)
    )
    if after is not None:
        due = due.where(tuple_(Invoice.created, Invoice.id) > tuple_(*after))
    rows = session.execute(due).all()
    if not rows:
        return [], None
    follow_ups = []
    for row in rows:
        key = f"auto_advance:{row.id}"
        follow_ups.append(FollowUp(FINALIZE_TASK, {"invoice": row.id, "idempotency_key": key}, key))
    return follow_ups, (rows[-1].created, rows[-1].id)


def overdue(now: int) -> tuple[Any, ...]:
    """Open ``send_invoice`` invoices past their due date at ``now``, not yet marked."""
    return (
        Invoice.status == InvoiceStatus.OPEN,
        Invoice.collection_method == "send_invoice",
        Invoice.due_date < now,  # type: ignore[operator]
        Invoice.overdue_at.is_(None),  # type: ignore[union-attr]
    )


def mark_overdue(session: Session, now: int, settings: Settings, after: Any) -> Chunk:
    """Mark a chunk of overdue invoices (``overdue_at``); marked rows leave the selection."""
    chunk = (
        select(Invoice.id)
        .join(Customer, Customer.id == Invoice.customer_id)  # type: ignore[arg-type]
        .where(*overdue(now), *_billed_by_beat())
        .limit(settings.beat_chunk_size)
    )
    ids = list(session.execute(chunk).scalars())
    if ids:
        session.execute(
            update(Invoice)
            .where(Invoice.id.in_(ids))  # type: ignore[attr-defined]
            .values(overdue_at=now)
            .execution_options(synchronize_session=False)
        )
    return [], (True if len(ids) == settings.beat_chunk_size else None)
