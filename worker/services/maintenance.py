"""Beat jobs: the reconciler and the purge; subscription renewals, draft finalization and
overdue marking. Idempotent by nature, so a tick that fires twice, or two beat processes,
change nothing more than one tick would."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, or_, select, tuple_, update
from sqlmodel import Session, col

from domain.errors import BillingError
from domain.invoices import AUTO_ADVANCE_AFTER_S, InvoiceStatus
from domain.subscriptions import ACTIVE
from tasks.ids import PREFIXES, derived_id
from worker.events import Emitted, write_events
from worker.services.base import FollowUp
from worker.services.invoices.generation import CREATE_TASK
from worker.services.invoices.previews import preview
from worker.services.subscriptions import renewal
from worker.settings import Settings
from worker.tables import (
    Customer,
    Event,
    IdempotencyKey,
    Invoice,
    InvoiceItem,
    MessageDelivery,
    OutboxMessage,
    Subscription,
    WebhookAttempt,
    WebhookDelivery,
)
from worker.webhooks import fan_out

BATCH = 500
log = logging.getLogger("billing.maintenance")


def due_follow_ups(session: Session, now: int, settings: Settings) -> list[FollowUp]:
    """Outbox rows never published (the publisher died after commit) or published long
    ago and still not done (the message was lost: broker flushed, worker killed, or it is
    still waiting behind a deep queue: those are marked ``republish``, and the task sends them
    only when their queue is empty)."""
    stale = col(OutboxMessage.published_at) <= now - settings.outbox_republish_after_s
    never = and_(
        col(OutboxMessage.published_at).is_(None),
        col(OutboxMessage.created) <= now - settings.outbox_grace_s,
    )
    rows = session.execute(
        select(OutboxMessage)
        .where(col(OutboxMessage.done_at).is_(None), or_(never, stale))
        .order_by(col(OutboxMessage.created))
        .limit(BATCH)
    ).scalars()
    return [
        FollowUp(row.task_name, row.payload, row.key, row.task_id, republish=row.published_at is not None)
        for row in rows
    ]


def stale_backlogs(session: Session, now: int, settings: Settings) -> list[FollowUp]:
    """Invoices (drafts) for pending items older than ``stale_pending_after_s``: the safety
    net for an invoice request lost before any worker saw it. One key per customer,
    currency and time window, so ticks within a window ask once."""
    if not settings.stale_pending_after_s:
        return []
    window = now // settings.stale_pending_after_s
    backlogs = session.execute(
        select(col(InvoiceItem.customer_id), col(InvoiceItem.currency))
        .join(Customer, col(Customer.id) == col(InvoiceItem.customer_id))
        .where(
            col(InvoiceItem.invoice_id).is_(None),
            col(InvoiceItem.created) <= now - settings.stale_pending_after_s,
            col(Customer.deleted).is_(False),
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
    """Forget idempotency keys, finished outbox rows and delivery counts past the retention, and
    finished webhook deliveries with their attempts past theirs."""
    cutoff = now - settings.idempotency_key_retention_s
    session.execute(delete(IdempotencyKey).where(col(IdempotencyKey.created) < cutoff))
    session.execute(delete(OutboxMessage).where(col(OutboxMessage.done_at) < cutoff))
    session.execute(delete(MessageDelivery).where(col(MessageDelivery.last_seen) < cutoff))
    finished = select(col(WebhookDelivery.id)).where(
        col(WebhookDelivery.completed_at) < now - settings.webhook_history_retention_s
    )
    session.execute(delete(WebhookAttempt).where(col(WebhookAttempt.delivery_id).in_(finished)))
    session.execute(delete(WebhookDelivery).where(col(WebhookDelivery.id).in_(finished)))
    return []


# Chunked sweeps: ``job(session, now, settings, cursor) -> (follow-ups, next cursor)``, one
# transaction per chunk (``BillingTask.sweep``); a cursor of None means done. They publish
# without the outbox: what they ask for stays due, so a lost message is asked for again.

Chunk = tuple[list[FollowUp], Any]
FINALIZE_TASK = "billing.invoices.finalize"


def _billed_by_beat() -> tuple[ColumnElement[bool], ...]:
    """Customers beat bills: live, and not on a test clock (those move with their clock)."""
    return (col(Customer.test_clock_id).is_(None), col(Customer.deleted).is_(False))


def renew_subscriptions(session: Session, now: int, settings: Settings, after: Any) -> Chunk:
    """Ask for the next renewal of every active subscription whose current period has ended.

    Keyset pages on (current_period_end, id) through ``ix_subscriptions_due``. A row is
    marked when asked for and asked again only after ``outbox_republish_after_s``; on
    PostgreSQL, rows another beat job is marking are skipped (SKIP LOCKED). One renewal
    per (subscription, period), keyed by both: asking twice bills once. The first chunk of a
    tick also emits ``invoice.upcoming`` for the subscriptions that renew soon (``upcoming``).
    """
    if after is None:
        upcoming(session, now, settings)
    due = (
        select(col(Subscription.id), col(Subscription.current_period_end))
        .join(Customer, col(Customer.id) == col(Subscription.customer_id))
        .where(
            col(Subscription.status) == ACTIVE,
            col(Subscription.current_period_end) <= now,
            or_(
                col(Subscription.renewal_requested_at).is_(None),
                col(Subscription.renewal_requested_at) <= now - settings.outbox_republish_after_s,
            ),
            *_billed_by_beat(),
        )
        .order_by(col(Subscription.current_period_end), col(Subscription.id))
        .limit(settings.beat_chunk_size)
        .with_for_update(of=Subscription, skip_locked=True)
    )
    if after is not None:
        due = due.where(tuple_(col(Subscription.current_period_end), col(Subscription.id)) > tuple_(*after))
    rows = session.execute(due).all()
    if not rows:
        return [], None
    session.execute(
        update(Subscription)
        .where(col(Subscription.id).in_([row.id for row in rows]))
        .values(renewal_requested_at=now)
        .execution_options(synchronize_session=False)
    )
    return [renewal(row.id, row.current_period_end) for row in rows], (
        rows[-1].current_period_end,
        rows[-1].id,
    )


def upcoming_key(subscription_id: str, period_end: int) -> str:
    """The ``idempotency_key`` of a period's ``invoice.upcoming`` event: one per period."""
    return f"upcoming:{subscription_id}:{period_end}"


def upcoming(session: Session, now: int, settings: Settings) -> None:
    """Emit ``invoice.upcoming`` for active subscriptions whose period ends within
    ``upcoming_invoice_days`` (at most a chunk per tick; the rest stay due for the next).

    Once per period: the event's ``idempotency_key`` names the subscription and the period's
    end, and a period whose event exists is skipped. ``data.object`` is the invoice the
    renewal will make as the invoice preview shows it (``invoices.preview``: no id yet).
    """
    if not settings.upcoming_invoice_days:
        return
    soon = now + settings.upcoming_invoice_days * 86_400
    due = session.scalars(
        select(Subscription)
        .join(Customer, col(Customer.id) == col(Subscription.customer_id))
        .where(
            col(Subscription.status) == ACTIVE,
            col(Subscription.cancel_at_period_end).is_(False),
            col(Subscription.current_period_end) > now,
            col(Subscription.current_period_end) <= soon,
            *_billed_by_beat(),
        )
        .order_by(col(Subscription.current_period_end), col(Subscription.id))
        .limit(settings.beat_chunk_size)
    ).all()
    keys = {row.id: upcoming_key(row.id, row.current_period_end) for row in due}
    key_of_event = col(Event.idempotency_key)
    sent = set(session.scalars(select(key_of_event).where(key_of_event.in_(keys.values()))))
    events = []
    for row in due:
        if keys[row.id] in sent:
            continue
        try:
            invoice = preview(row.customer_id, subscription=row.id, session=session, now=now)
        except BillingError as exc:  # stays due: asked again at the next tick
            log.warning("invoice.upcoming of %s: no preview: %s", row.id, exc)
            continue
        events.append(Emitted("invoice.upcoming", invoice, idempotency_key=keys[row.id]))
    fan_out(session, write_events(session, events, now), now, published=False)


def finalize_drafts(session: Session, now: int, settings: Settings, after: Any) -> Chunk:
    """Finalize ``auto_advance`` drafts made more than an hour ago (domain/README.md §4; README: Beat)."""
    due = (
        select(col(Invoice.id), col(Invoice.created))
        .join(Customer, col(Customer.id) == col(Invoice.customer_id))
        .where(
            col(Invoice.status) == InvoiceStatus.DRAFT,
            col(Invoice.auto_advance),
            col(Invoice.created) <= now - AUTO_ADVANCE_AFTER_S,
            *_billed_by_beat(),
        )
        .order_by(col(Invoice.created), col(Invoice.id))
        .limit(settings.beat_chunk_size)
    )
    if after is not None:
        due = due.where(tuple_(col(Invoice.created), col(Invoice.id)) > tuple_(*after))
    rows = session.execute(due).all()
    if not rows:
        return [], None
    follow_ups = []
    for row in rows:
        key = f"auto_advance:{row.id}"
        follow_ups.append(FollowUp(FINALIZE_TASK, {"invoice": row.id, "idempotency_key": key}, key))
    return follow_ups, (rows[-1].created, rows[-1].id)


def overdue(now: int) -> tuple[ColumnElement[bool], ...]:
    """Open ``send_invoice`` invoices past their due date at ``now``, not yet marked."""
    return (
        col(Invoice.status) == InvoiceStatus.OPEN,
        col(Invoice.collection_method) == "send_invoice",
        col(Invoice.due_date) < now,
        col(Invoice.overdue_at).is_(None),
    )


def mark_overdue(session: Session, now: int, settings: Settings, after: Any) -> Chunk:
    """Mark a chunk of overdue invoices (``overdue_at``); marked rows leave the selection."""
    chunk = (
        select(col(Invoice.id))
        .join(Customer, col(Customer.id) == col(Invoice.customer_id))
        .where(*overdue(now), *_billed_by_beat())
        .limit(settings.beat_chunk_size)
    )
    ids = list(session.execute(chunk).scalars())
    if ids:
        session.execute(
            update(Invoice)
            .where(col(Invoice.id).in_(ids))
            .values(overdue_at=now)
            .execution_options(synchronize_session=False)
        )
        marked = session.scalars(select(Invoice).where(col(Invoice.id).in_(ids))).all()
        written = write_events(session, [Emitted("invoice.overdue", invoice) for invoice in marked], now)
        fan_out(session, written, now, published=False)
    return [], (True if len(ids) == settings.beat_chunk_size else None)
