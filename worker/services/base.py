"""What every service shares: the request context, idempotency, locks and lookups."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col

from domain.errors import BadRequest, IdempotencyConflict, NotFound, Parked
from tasks.contracts import Contract
from worker import clock
from worker.db import UnitOfWork, table_of
from worker.events import Emitted, write_events
from worker.failpoints import failpoint
from worker.tables import Customer, IdempotencyKey, OutboxMessage, SandboxClock
from worker.views import render_rows
from worker.webhooks import fan_out

Row = TypeVar("Row", bound=SQLModel)


@dataclass(frozen=True, slots=True)
class FollowUp:
    """A task to publish once the transaction that asked for it has committed.

    ``key`` is the follow-up's own idempotency key: its outbox row is closed when an
    operation with that key succeeds. ``task_id`` is set once the outbox row exists, so
    every publication of one follow-up carries the same Celery task id.
    """

    task_name: str
    payload: dict[str, Any]
    key: str
    task_id: str | None = None
    republish: bool = False
    """Published before and not done since (the reconciler's): its message may still wait in
    its queue, so it is sent again only when that queue holds none (``BillingTask.maintain``)."""


@dataclass(slots=True)
class Outcome:
    id: str | None
    replayed: bool = False
    follow_ups: list[FollowUp] = field(default_factory=list)
    events: list[Emitted] = field(default_factory=list)
    """What the request emitted (``Request.emit``); a replay emits nothing."""
    key: str | None = field(default=None, compare=False)
    """The request's key, set once committed (``execute``): its fate is written under it. Not
    part of what the request did (two runs of one request compare equal)."""

    def as_result(self) -> dict[str, Any]:
        return {"id": self.id, "replayed": self.replayed, "follow_ups": len(self.follow_ups)}


def request_hash(operation: str, payload: dict[str, Any]) -> str:
    body = {k: v for k, v in payload.items() if k != "idempotency_key"}
    canonical = json.dumps([operation, body], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def key_row(
    key: str, operation: str, fingerprint: str, resource_id: str | None, created: int
) -> dict[str, Any]:
    """An ``idempotency_keys`` row: the request's key, what it did and to which resource."""
    return {
        "key": key,
        "operation": operation,
        "request_hash": fingerprint,
        "resource_id": resource_id,
        "created": created,
    }


# FOR NO KEY UPDATE on PostgreSQL: billing operations still queue up behind each other, but
# rows that merely reference the customer (invoice items being added) do not wait for them.
_CUSTOMER = select(Customer).where(col(Customer.id) == bindparam("id"))
_LOCK_CUSTOMER = _CUSTOMER.with_for_update(key_share=True)


@dataclass(slots=True)
class Request:
    """One operation's context inside one transaction."""

    session: Session
    operation: str
    key: str
    fingerprint: str
    now: int
    redeliveries: int = 0
    """How often this message came back without finishing (see ``redelivery_cap``)."""
    redelivery_cap: int = 0
    customer_id: str | None = None
    """The customer whose lock this operation holds, once it holds it."""
    received: int = 0
    """The real time of the request. ``now`` is the billing time: the same, except for a
    customer on a test clock, whose operations run at the clock's time (``lock_customer``)."""
    retry: bool = False
    """This transaction runs again after a unique violation (see ``execute``)."""
    key_row: dict[str, Any] | None = None
    """The idempotency key to store, once ``done``."""
    idempotency_key: str | None = None
    """The producer's key (a chain's part n is stored under ``<key>:part<n>``): its events'
    ``request.idempotency_key``; their ``request.id`` is ``key``."""
    events: list[Emitted] = field(default_factory=list)
    follow_ups: list[FollowUp] = field(default_factory=list)
    """Follow-ups asked for deep in the operation (a finalized invoice's document): ``done``
    hands them to the outcome, so they reach the outbox in this transaction."""

    def __post_init__(self) -> None:
        self.received = self.received or self.now
        self.idempotency_key = self.idempotency_key or self.key

    def emit(self, type: str, obj: dict[str, Any] | SQLModel, previous: dict[str, Any] | None = None) -> None:
        """An event of this request, written with its effect (``worker.events``): ``obj`` is a
        table row (rendered as it is when the transaction ends) or an object rendered already
        (``render``: what the transaction deletes); ``previous`` the object before an update."""
        self.events.append(Emitted(type, obj, previous, self.key, self.idempotency_key))

    def render(self, row: SQLModel) -> dict[str, Any]:
        """``row`` as ``billing get`` prints it at this point of the transaction."""
        return render_rows(self.session, [row], now=self.received)[0]

    def replayed(self) -> Outcome | None:
        """The earlier outcome for this key, or None. Same key, other parameters: an error.

        Call it after taking the operation's lock, so that a concurrent duplicate
        waits for the first to commit and then sees its key.
        """
        row = self.session.execute(_KEY_LOOKUP, {"key": self.key}).first()
        if row is None:
            if self.redelivery_cap and self.redeliveries >= self.redelivery_cap:
                # Decided under the operation's lock: a copy that overlapped a slow first
                # run waits here and replays; only a message that never commits is parked.
                whose = f"customer {self.customer_id}: " if self.customer_id else ""
                raise Parked(
                    f"{whose}{self.operation} delivered {self.redeliveries + 1} times without ever"
                    " committing (it crashes or outlives its worker); parked. Find the cause, then"
                    " `billing failures retry` sends it again",
                    field="customer" if self.customer_id else None,
                )
            return None
        if row.operation != self.operation or row.request_hash != self.fingerprint:
            raise IdempotencyConflict(self.key, row.operation)
        return Outcome(row.resource_id, replayed=True)

    def done(self, resource_id: str | None, **extra: Any) -> Outcome:
        """The operation's effect is made: its key is stored with it (``settle``)."""
        self.key_row = key_row(self.key, self.operation, self.fingerprint, resource_id, self.received)
        outcome = Outcome(resource_id, events=self.events, **extra)
        outcome.follow_ups.extend(self.follow_ups)
        return outcome

    def get(self, model: type[Row], object_id: str, *, resource: str, field: str) -> Row:
        row = self.session.get(model, object_id)
        if row is None:
            raise NotFound(resource, object_id, field=field)
        return row

    def ensure_new(
        self, model: type[SQLModel], object_id: str, *, resource: str, on_conflict: bool = False
    ) -> None:
        """A create's id must not be taken (by another request: a replay returned earlier).

        ``on_conflict``: checked only when the transaction runs again. The first run
        inserts optimistically; a taken id fails its INSERT on the primary key, which rolls
        back and runs again (``execute``), and that run finds the id here and names it. One
        query fewer, for a hot path that loads nothing else of that id before its INSERT.
        """
        if (self.retry or not on_conflict) and self.session.get(model, object_id) is not None:
            raise BadRequest(f"{resource} {object_id} already exists", field="id")

    def lock_customer(self, customer_id: str, *, field: str = "customer", lock: bool = True) -> Customer:
        """Serialise every change to one customer's books (row lock; SQLite: BEGIN IMMEDIATE).

        A deleted customer cannot be billed, except that a request already done before
        the deletion still replays its result. A customer on a test clock is billed at the
        clock's time: from here on ``now`` is the clock's ``frozen_time``. ``lock=False``:
        the same checks and time without the lock, for a read (an invoice preview).
        """
        stmt = _LOCK_CUSTOMER if lock else _CUSTOMER
        customer = self.session.scalars(stmt, {"id": customer_id}).one_or_none()
        if customer is None:
            raise NotFound("customer", customer_id, field=field)
        if customer.deleted and self.session.get(IdempotencyKey, self.key) is None:
            raise NotFound("customer", customer_id, field=field, deleted=True)  # final: never retried
        self.customer_id = customer.id
        if customer.test_clock_id is not None:
            test_clock = self.session.get(SandboxClock, customer.test_clock_id)
            if test_clock is not None:
                self.now = test_clock.frozen_time
        return customer

    def lock_owner(self, model: type[Row], object_id: str, *, resource: str) -> tuple[Row, Customer]:
        """Lock the customer an object (invoice, subscription) belongs to, then read the object
        as it is under that lock: a change made by the lock's previous holder is seen. Errors
        name the request field called like the resource."""
        table = table_of(model)
        customer_id = self.session.execute(
            select(table.c.customer_id).where(table.c.id == object_id)
        ).scalar()
        if customer_id is None:
            raise NotFound(resource, object_id, field=resource)
        customer = self.lock_customer(customer_id, field=resource)
        row = self.session.execute(
            select(model).where(table.c.id == object_id).execution_options(populate_existing=True)
        ).scalar_one()
        return row, customer


Service = Callable[[Request, Any], Outcome]


_OUTBOX = table_of(OutboxMessage)
_KEYS = table_of(IdempotencyKey)


def close_outbox(session: Session, keys: Collection[str], now: int, *, failed: bool = False) -> None:
    """The follow-ups with these keys have happened (or failed for good): stop re-publishing them."""
    session.execute(
        update(_OUTBOX)
        .where(_OUTBOX.c.key.in_(keys), _OUTBOX.c.done_at.is_(None))
        .values(done_at=now, failed=failed)
    )


_KEY_FIELDS = (_KEYS.c.operation, _KEYS.c.request_hash, _KEYS.c.resource_id)
"""What a replay compares and answers with."""
_KEY_LOOKUP = select(*_KEY_FIELDS).where(_KEYS.c.key == bindparam("key"))


def known_keys(session: Session, keys: Collection[str]) -> dict[str, Any]:
    """The stored idempotency keys among ``keys`` (``_KEY_FIELDS`` each)."""
    rows = session.execute(select(_KEYS.c.key, *_KEY_FIELDS).where(_KEYS.c.key.in_(keys)))
    return {row.key: row for row in rows}


def lock_customers(session: Session, customer_ids: Collection[str]) -> dict[str, Customer]:
    """Lock many customers at once (as ``Request.lock_customer`` does one), in id order:
    two transactions that lock overlapping sets this way cannot deadlock on them.

    Only customers billed at the real time are locked and returned: not deleted, not on a
    test clock (an advance locks its customers one by one in event order; a request for
    one of them is made alone, at the clock's time)."""
    stmt = (
        select(Customer)
        .where(
            col(Customer.id).in_(sorted(customer_ids)),
            col(Customer.deleted).is_(False),
            col(Customer.test_clock_id).is_(None),
        )
        .order_by(Customer.id)
        .with_for_update(key_share=True)
    )
    return {customer.id: customer for customer in session.execute(stmt).scalars()}


_SETTLE = text(
    "WITH closed AS (UPDATE outbox SET done_at = :now, failed = false WHERE key = :key AND done_at IS NULL)"
    " INSERT INTO idempotency_keys (key, operation, request_hash, resource_id, created)"
    " VALUES (:key, :operation, :request_hash, :resource_id, :created)"
)


def settle(request: Request) -> None:
    """Store the request's idempotency key (once ``done``) and close its own outbox row (if
    it was a follow-up). PostgreSQL: one statement for both."""
    session, row = request.session, request.key_row
    if row is not None and session.get_bind().dialect.name == "postgresql":
        session.execute(_SETTLE, {**row, "now": request.received})
        return
    if row is not None:
        session.execute(insert(_KEYS).values(**row))
    close_outbox(session, [request.key], request.received)


def write_outbox(session: Session, follow_ups: list[FollowUp], now: int) -> list[FollowUp]:
    """Record follow-ups in this transaction; returns those still to publish (not done), each
    with the task id its outbox row holds.

    One ``INSERT … ON CONFLICT DO NOTHING RETURNING`` for all of them; only keys already
    there (a redelivered request writing the same follow-ups again) are read back, to keep
    their task id and skip those done."""
    if not follow_ups:
        return []
    rows: dict[str, dict[str, Any]] = {}
    for follow_up in follow_ups:
        rows.setdefault(
            follow_up.key,
            {
                "key": follow_up.key,
                "task_id": str(uuid.uuid4()),
                "task_name": follow_up.task_name,
                "payload": follow_up.payload,
                "created": now,
                "publish_count": 0,
                "failed": False,
            },
        )
    insert_ = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert_(_OUTBOX).values(list(rows.values())).on_conflict_do_nothing(index_elements=["key"])
    made = {row.key: row.task_id for row in session.execute(stmt.returning(_OUTBOX.c.key, _OUTBOX.c.task_id))}
    if len(made) < len(rows):  # written before: its task id, unless it is done
        missing = [key for key in rows if key not in made]
        made |= {
            row.key: row.task_id
            for row in session.execute(
                select(_OUTBOX.c.key, _OUTBOX.c.task_id).where(
                    _OUTBOX.c.key.in_(missing), _OUTBOX.c.done_at.is_(None)
                )
            )
        }
    return [replace(f, task_id=made[f.key]) for f in follow_ups if f.key in made]


def execute(
    operation: str,
    command: Contract,
    service: Service,
    *,
    redeliveries: int = 0,
    redelivery_cap: int = 0,
) -> Outcome:
    """Run ``service`` in one transaction and commit it.

    In the same transaction: the outbox row of this request (if it was a follow-up) is
    closed, and the follow-ups it asks for are written to the outbox.

    A unique violation rolls back and runs again once: after a race (two deliveries of
    one message inserting the same key or id at once) the second run finds the first's key
    and replays its result; after an id that another request took, it names the id
    (``Request.ensure_new``).
    """
    payload = command.model_dump(mode="json", exclude_unset=True)
    key = command.request_key
    fingerprint = request_hash(operation, payload)
    for attempt in (1, 2):
        try:
            with UnitOfWork() as uow:
                request = Request(
                    uow.session,
                    operation,
                    key,
                    fingerprint,
                    clock.now(),
                    redeliveries,
                    redelivery_cap,
                    retry=attempt > 1,
                    idempotency_key=getattr(command, "idempotency_key", None),
                )
                outcome = service(request, command)
                settle(request)
                outcome.follow_ups = write_outbox(uow.session, outcome.follow_ups, request.received)
                written = write_events(uow.session, outcome.events, request.received)
                if written:  # the deliveries of its events to webhook endpoints (README: Webhooks)
                    deliveries = fan_out(uow.session, written, request.received)
                    outcome.follow_ups += write_outbox(uow.session, deliveries, request.received)
                failpoint("before_commit", operation)
                uow.commit()
            failpoint("after_commit", operation)
            outcome.key = key
            return outcome
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


TogetherService = Callable[[Session, str, list[tuple[str, str, Any]], int], list[Outcome | None]]


def execute_together(
    operation: str, commands: list[Contract], service: TogetherService
) -> list[Outcome | None]:
    """Run many commands of one operation in one transaction (messages that a worker took
    together) and commit it; returns, per command, its outcome, or None if it is not settled.

    Each command keeps its own idempotency key, fingerprint and outbox row; the service
    settles only what it can do exactly as ``execute`` would, and the caller runs the rest
    alone. The follow-ups of settled commands are written to the outbox in the same
    transaction. Any error rolls the whole transaction back: then every command runs alone.
    """
    entries = []
    for command in commands:
        payload = command.model_dump(mode="json", exclude_unset=True)
        entries.append((command.request_key, request_hash(operation, payload), command))
    with UnitOfWork() as uow:
        now = clock.now()
        settled = service(uow.session, operation, entries, now)
        keys = [key for (key, _, _), outcome in zip(entries, settled, strict=True) if outcome is not None]
        for (key, _, _), outcome in zip(entries, settled, strict=True):
            if outcome is not None:
                outcome.key = key
        if keys:
            close_outbox(uow.session, keys, now)
        for outcome in settled:
            if outcome is not None and outcome.follow_ups:
                outcome.follow_ups = write_outbox(uow.session, outcome.follow_ups, now)
        written = write_events(
            uow.session, [e for outcome in settled if outcome for e in outcome.events], now
        )
        if written:  # the deliveries go with the first settled request; the reconciler covers them too
            deliveries = write_outbox(uow.session, fan_out(uow.session, written, now), now)
            first = next(outcome for outcome in settled if outcome is not None)
            first.follow_ups = [*first.follow_ups, *deliveries]
        failpoint("before_commit", operation)
        uow.commit()
    failpoint("after_commit", operation)
    return settled
