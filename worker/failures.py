"""Dead letters: every task that could not succeed is recorded with its payload and error."""

from __future__ import annotations

import json
import logging
from typing import Any, cast

from sqlalchemy import String, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from domain.errors import BillingError
from worker import clock
from worker.db import UnitOfWork, table_of
from worker.tables import FailureStatus, MessageDelivery, OutboxMessage, TaskFailure, TaskFailureEvent

log = logging.getLogger("billing.failures")


FIELD_LENGTH = cast(String, table_of(TaskFailure).c.error_field.type).length


def _storable(payload: Any) -> dict[str, Any]:
    """The payload as sent when it is a strict-JSON object, else its repr (NaN, non-objects)."""
    if isinstance(payload, dict):
        try:
            json.dumps(payload, allow_nan=False)
            return payload
        except (TypeError, ValueError):
            pass
    return {"raw": repr(payload)[:10_000]}


def record_failure(
    *, task_id: str, task_name: str, payload: Any, error: BaseException, retryable: bool
) -> None:
    """Insert or update the failure row of one message, in a transaction of its own."""
    if isinstance(error, BillingError):
        error_type, code, field, message = type(error).__name__, error.code, error.field, error.message
    else:
        error_type, code, field, message = type(error).__name__, None, None, str(error) or repr(error)
    body = _storable(payload)
    field = field[:FIELD_LENGTH] if field else field
    with UnitOfWork() as uow:
        now = clock.now()
        row = uow.session.execute(select(TaskFailure).where(col(TaskFailure.task_id) == task_id)).scalar()
        if row is None:
            row = TaskFailure(
                task_id=task_id,
                task_name=task_name,
                first_seen=now,
                error_type="",
                error_message="",
                attempts=0,
            )
            uow.session.add(row)
        elif row.status != FailureStatus.OPEN:  # failed again after a retry or a resolution
            row.status, row.resolved_at, row.note = FailureStatus.OPEN, None, None
            event = TaskFailureEvent(task_id=task_id, action="reopened", actor="worker", at=now, note=message)
            uow.session.add(event)
        row.payload = body
        row.error_type, row.error_code, row.error_field, row.error_message = error_type, code, field, message
        row.retryable = retryable
        row.attempts += 1
        row.last_seen = now
        uow.session.execute(  # a follow-up that failed for good is not re-published
            update(OutboxMessage)
            .where(col(OutboxMessage.task_id) == task_id, col(OutboxMessage.done_at).is_(None))
            .values(done_at=now, failed=True)
        )
        uow.commit()
    log.warning("task %s [%s] failed: %s: %s (field=%s)", task_name, task_id, error_type, message, field)


def count_redelivery(task_id: str, task_name: str) -> int:
    """Count one more redelivery of a message; returns how many there have been."""
    for attempt in (1, 2):
        try:
            with UnitOfWork() as uow:
                now = clock.now()
                row = uow.session.get(MessageDelivery, task_id, with_for_update=True)
                if row is None:
                    row = MessageDelivery(task_id=task_id, task_name=task_name, first_seen=now)
                    uow.session.add(row)
                row.redeliveries += 1
                row.last_seen = now
                uow.commit()
                return row.redeliveries
        except IntegrityError:  # two redeliveries of one message counting at once
            if attempt == 2:
                raise
    raise AssertionError("unreachable")
