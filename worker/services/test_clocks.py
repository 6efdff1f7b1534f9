"""Test clocks: a sandbox in which a customer's time moves only when the clock advances.

A customer created with ``test_clock`` lives at the clock's ``frozen_time`` (see
``Request.lock_customer``); beat leaves such customers alone. Advancing the clock plays
what would have happened in between, in time order, in one transaction: each period
boundary bills its period (``bill_period``, the same code beat's renewals run) at the
boundary's time, each ``auto_advance`` draft is finalized an hour after it was made,
and ``send_invoice`` invoices past due at the new time are marked overdue.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlmodel import col

from domain.errors import BadRequest, NotFound
from domain.invoices import AUTO_ADVANCE_AFTER_S, InvoiceStatus
from domain.subscriptions import ACTIVE
from tasks.contracts import TestClockAdvance, TestClockCreate
from worker.services.base import FollowUp, Outcome, Request
from worker.services.invoices.generation import finalize_invoice
from worker.services.maintenance import overdue
from worker.services.subscriptions import bill_period, next_period
from worker.tables import Customer, Invoice, SandboxClock, Subscription

MAX_EVENTS_PER_ADVANCE = 2000
READY = "test_helpers.test_clock.ready"


def create(request: Request, command: TestClockCreate) -> Outcome:
    if prior := request.replayed():
        return prior
    request.ensure_new(SandboxClock, command.id, resource="test clock")
    test_clock = SandboxClock(
        id=command.id, name=command.name, frozen_time=command.frozen_time, created=request.now
    )
    request.session.add(test_clock)
    request.emit(READY, test_clock)
    return request.done(command.id)


def _next_event(request: Request, clock_id: str, until: int) -> tuple[int, str, str, str] | None:
    """The earliest (time, kind, object id, customer id) due by ``until``; a draft's
    finalization comes before a renewal at the same instant (the draft is older)."""
    on_clock = (col(Customer.test_clock_id) == clock_id, col(Customer.deleted).is_(False))
    finalize_at = col(Invoice.created) + AUTO_ADVANCE_AFTER_S
    draft = request.session.execute(
        select(finalize_at, col(Invoice.id), col(Invoice.customer_id))
        .join(Customer, col(Customer.id) == col(Invoice.customer_id))
        .where(
            *on_clock,
            col(Invoice.status) == InvoiceStatus.DRAFT,
            col(Invoice.auto_advance),
            finalize_at <= until,
        )
        .order_by(col(Invoice.created), col(Invoice.id))
        .limit(1)
    ).first()
    renewal = request.session.execute(
        select(col(Subscription.current_period_end), col(Subscription.id), col(Subscription.customer_id))
        .join(Customer, col(Customer.id) == col(Subscription.customer_id))
        .where(*on_clock, col(Subscription.status) == ACTIVE, col(Subscription.current_period_end) <= until)
        .order_by(col(Subscription.current_period_end), col(Subscription.id))
        .limit(1)
    ).first()
    events = [
        (row[0], kind, row[1], row[2]) for kind, row in (("finalize", draft), ("renew", renewal)) if row
    ]
    return min(events, key=lambda event: (event[0], event[1])) if events else None


def advance(request: Request, command: TestClockAdvance) -> Outcome:
    clock = request.session.execute(
        select(SandboxClock).where(col(SandboxClock.id) == command.test_clock).with_for_update()
    ).scalar_one_or_none()
    if clock is None:
        raise NotFound("test clock", command.test_clock, field="test_clock")
    if prior := request.replayed():
        return prior
    if command.frozen_time <= clock.frozen_time:
        raise BadRequest(
            f"must be after the clock's current time {clock.frozen_time} (clocks only move forward)",
            field="frozen_time",
        )
    follow_ups: list[FollowUp] = []
    for _ in range(MAX_EVENTS_PER_ADVANCE):
        event = _next_event(request, clock.id, command.frozen_time)
        if event is None:
            break
        at, kind, object_id, customer_id = event
        customer = request.lock_customer(customer_id, field="test_clock")
        request.now = at
        if kind == "finalize":
            invoice = request.session.get(Invoice, object_id)
            assert invoice is not None
            finalize_invoice(request, invoice, customer)
        else:
            subscription = request.session.get(Subscription, object_id)
            assert subscription is not None
            _, more = bill_period(
                request, customer, subscription, next_period(subscription), "subscription_cycle"
            )
            follow_ups.extend(more)
        request.session.flush()
    else:
        raise BadRequest(
            f"more than {MAX_EVENTS_PER_ADVANCE} billing events before that time; advance in smaller steps",
            field="frozen_time",
        )
    customers = select(col(Customer.id)).where(col(Customer.test_clock_id) == clock.id)
    on_clock = col(Invoice.customer_id).in_(customers.scalar_subquery())
    late = request.session.scalars(select(Invoice).where(on_clock, *overdue(command.frozen_time))).all()
    if late:
        request.session.execute(
            update(Invoice)
            .where(col(Invoice.id).in_([invoice.id for invoice in late]))
            .values(overdue_at=command.frozen_time)
            .execution_options(synchronize_session=False)
        )
    for invoice in late:
        request.emit("invoice.overdue", invoice)
    before = request.render(clock)
    clock.frozen_time = command.frozen_time
    request.emit(READY, clock, previous=before)
    request.now = request.received
    outcome = request.done(clock.id)
    outcome.follow_ups.extend(follow_ups)
    return outcome
