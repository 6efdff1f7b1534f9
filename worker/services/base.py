"""What every service shares: the request context, idempotency, locks and lookups."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel

from domain.errors import IdempotencyConflict, NotFound
from tasks.contracts import Contract
from worker import clock
from worker.db import UnitOfWork
from worker.tables import Customer, IdempotencyKey

Row = TypeVar("Row", bound=SQLModel)


@dataclass(frozen=True, slots=True)
class FollowUp:
    """A task to publish once the transaction that asked for it has committed."""

    task_name: str
    payload: dict[str, Any]


@dataclass(slots=True)
class Outcome:
    id: str | None
    replayed: bool = False
    follow_ups: list[FollowUp] = field(default_factory=list)

    def as_result(self) -> dict[str, Any]:
        return {"id": self.id, "replayed": self.replayed, "follow_ups": len(self.follow_ups)}


def request_hash(operation: str, payload: dict[str, Any]) -> str:
    body = {k: v for k, v in payload.items() if k != "idempotency_key"}
    canonical = json.dumps([operation, body], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(slots=True)
class Request:
    """One operation's context inside one transaction."""

    session: Session
    operation: str
    key: str
    fingerprint: str
    now: int

    def replayed(self) -> Outcome | None:
        """The earlier outcome for this key, or None. Same key, other parameters: an error.

        Call it after taking the operation's lock, so that a concurrent duplicate
        waits for the first to commit and then sees its key.
        """
        row = self.session.get(IdempotencyKey, self.key)
        if row is None:
            return None
        if row.operation != self.operation or row.request_hash != self.fingerprint:
            raise IdempotencyConflict(self.key, row.operation)
        return Outcome(row.resource_id, replayed=True)

    def done(self, resource_id: str | None, **extra: Any) -> Outcome:
        self.session.add(
            IdempotencyKey(
                key=self.key,
                operation=self.operation,
                request_hash=self.fingerprint,
                resource_id=resource_id,
                created=self.now,
            )
        )
        return Outcome(resource_id, **extra)

    def get(self, model: type[Row], object_id: str, *, resource: str, field: str) -> Row:
        row = self.session.get(model, object_id)
        if row is None:
            raise NotFound(resource, object_id, field=field)
        return row

    def lock_customer(self, customer_id: str, *, field: str = "customer") -> Customer:
        """Serialise every change to one customer's books (row lock; SQLite: BEGIN IMMEDIATE).

        A deleted customer cannot be billed, except that a request already done before
        the deletion still replays its result.
        """
        stmt = select(Customer).where(Customer.id == customer_id).with_for_update()  # type: ignore[arg-type]
        customer = self.session.execute(stmt).scalar_one_or_none()
        if customer is None or (customer.deleted and self.session.get(IdempotencyKey, self.key) is None):
            raise NotFound("customer", customer_id, field=field)
        return customer


Service = Callable[[Request, Any], Outcome]


def execute(operation: str, command: Contract, service: Service, *, key: str | None = None) -> Outcome:
    """Run ``service`` in one transaction and commit it.

    A unique-key race (two deliveries of one message inserting the same key or id at
    once) rolls back and runs again once: the second run finds the first's key and
    replays its result.
    """
    payload = command.model_dump(mode="json", exclude_unset=True)
    key = key or payload["idempotency_key"]
    fingerprint = request_hash(operation, payload)
    for attempt in (1, 2):
        try:
            with UnitOfWork() as uow:
                request = Request(uow.session, operation, key, fingerprint, clock.now())
                outcome = service(request, command)
                uow.commit()
                return outcome
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")
