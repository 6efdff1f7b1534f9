"""Dead letters: every task that could not succeed is recorded with its payload and error."""

from __future__ import annotations

import json
import logging
from typing import Any, cast

from sqlalchemy import String, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from domain.errors import BillingError, error_type
from worker import clock
from worker.db import UnitOfWork, table_of
from worker.events import Emitted, write_events
from worker.fates import request_key_of, write_failed
from worker.tables import Event, FailureStatus, MessageDelivery, OutboxMessage, TaskFailure, TaskFailureEvent
from worker.webhooks import fan_out

log = logging.getLogger("billing.failures")


FIELD_LENGTH = cast(String, table_of(TaskFailure).c.error_field.type).length
ID_LENGTH = cast(String, table_of(TaskFailure).c.task_id.type).length
NAME_LENGTH = cast(String, table_of(TaskFailure).c.task_name.type).length
TYPE_LENGTH = cast(String, table_of(TaskFailure).c.error_type.type).length


PAYLOAD_LIMIT = 256 * 1024
"""A payload whose JSON is larger is stored as an excerpt: a 10 MB body is not a 10 MB row."""
EXCERPT_LIMIT = 16 * 1024


def excerpt(raw: bytes | str) -> dict[str, Any]:
    """A bounded, storable excerpt of anything: text as is, bytes as UTF-8 with every other
    byte escaped (``\\xff``), NUL escaped (PostgreSQL's text and JSONB refuse it)."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    text = data[:EXCERPT_LIMIT].decode("utf-8", "backslashreplace").replace("\x00", "\\x00")
    return {"excerpt": text, "bytes": len(data), "truncated": len(data) > EXCERPT_LIMIT}


def _storable(payload: Any) -> dict[str, Any]:
    """The payload as sent when it is a strict-JSON object the database can store, at most
    ``PAYLOAD_LIMIT`` long; else its repr when it is not strict JSON (NaN, not an object), as
    before; else (too long, NUL, lone surrogates) an excerpt of its JSON. Never raises."""
    try:
        text = json.dumps(payload, allow_nan=False, ensure_ascii=False)
    except (Exception, RecursionError):
        shown = _repr(payload)  # repr escapes NUL and lone surrogates
        return {"raw": shown[:10_000]} if shown is not None else excerpt(f"<{type(payload).__name__}>")
    if not isinstance(payload, dict):
        return {"raw": (_repr(payload) or "")[:10_000]}
    if len(text) <= PAYLOAD_LIMIT and "\\u0000" not in text and _encodes(text):
        return payload
    return excerpt(text)


def _repr(value: Any) -> str | None:
    try:
        return repr(value)
    except (Exception, RecursionError):
        return None


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _column_text(value: str, limit: int | None = None) -> str:
    """Text a column can hold: no NUL, no lone surrogate, at most ``limit`` characters."""
    if not value.isascii() or "\x00" in value:
        value = value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return value[:limit] if limit else value


SECRET_FIELDS = frozenset({"secret"})
"""Payload fields never stored with a dead letter (a webhook endpoint's signing secret)."""
REDACTED = "(redacted)"


def redacted(payload: Any) -> Any:
    """The payload with its secrets replaced: a dead letter is read by operators and retried
    by hand, a signing secret is shown once to its owner and never again."""
    if isinstance(payload, dict) and SECRET_FIELDS & payload.keys():
        return {k: (REDACTED if k in SECRET_FIELDS else v) for k, v in payload.items()}
    return payload


def record_failure(
    *,
    task_id: str,
    task_name: str,
    payload: Any,
    error: BaseException,
    retryable: bool,
    fate_key: str | None = None,
) -> None:
    """Insert or update the failure row of one message, in a transaction of its own.

    A failure newly recorded, or recorded again after a retry or a resolution, emits
    ``request.failed`` in the same transaction; the same message failing again while its
    failure is open (a redelivery) does not. Then the request's failed fate
    (``worker.fates``), under ``fate_key``, else the key ``payload`` names."""
    if isinstance(error, BillingError):
        error_class, code, field, message = type(error).__name__, error.code, error.field, error.message
    else:
        error_class, code, field, message = type(error).__name__, None, None, str(error) or repr(error)
    body = _storable(redacted(payload))
    field = _column_text(field, FIELD_LENGTH) if field else field
    task_id, task_name = _column_text(task_id, ID_LENGTH), _column_text(task_name, NAME_LENGTH)
    error_class, message = _column_text(error_class, TYPE_LENGTH), _column_text(message, 10_000)
    # the error as Stripe shows one: the request.failed event's and the failed fate's
    stripe_error = {"type": error_type(error_class), "code": code, "field": field, "message": message}
    request_key = fate_key or request_key_of(task_name, payload)
    with UnitOfWork() as uow:
        now = clock.now()
        row = uow.session.execute(select(TaskFailure).where(col(TaskFailure.task_id) == task_id)).scalar()
        failed_now = row is None or row.status != FailureStatus.OPEN
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
        row.error_type, row.error_code, row.error_field, row.error_message = error_class, code, field, message
        row.retryable = retryable
        row.attempts += 1
        row.last_seen = now
        uow.session.execute(  # a follow-up that failed for good is not re-published
            update(OutboxMessage)
            .where(col(OutboxMessage.task_id) == task_id, col(OutboxMessage.done_at).is_(None))
            .values(done_at=now, failed=True)
        )
        if failed_now:
            uow.session.flush()
            written = write_events(
                uow.session, [_request_failed(row, payload, request_key, stripe_error)], now
            )
            fan_out(uow.session, written, now, published=False)  # the dispatch sweep sends them
        uow.commit()
    log.warning("task %s [%s] failed: %s: %s (field=%s)", task_name, task_id, error_class, message, field)
    write_failed(request_key, task_name, {**stripe_error, "class": error_class}, retryable=retryable)


KEY_LENGTH = cast(String, table_of(Event).c.request_id.type).length
CUSTOMER_LENGTH = cast(String, table_of(Event).c.customer_id.type).length


def _storable_text(value: Any, limit: int | None) -> str | None:
    """A string of the payload an event can name: stored as is if a column can hold it whole,
    else not named at all (a hostile payload's key or customer is not truncated into another's)."""
    if not isinstance(value, str):
        return None
    text = _column_text(value)
    return text if limit is None or len(text) <= limit else None


def _request_failed(
    row: TaskFailure, payload: Any, request_key: str | None, error: dict[str, Any]
) -> Emitted:
    """The ``request.failed`` event of a recorded failure: which request (``request_key``, as
    ``worker.fates.request_key_of`` reads it: a chain's part n is ``<key>:part<n>``; the key
    as sent when the payload is what failed), which task, which customer, and ``error`` in
    Stripe's terms."""
    sent = payload if isinstance(payload, dict) else {}
    key = _storable_text(sent.get("idempotency_key"), KEY_LENGTH)
    request_id = (_storable_text(request_key, KEY_LENGTH) or key) if key is not None else None
    customer = _storable_text(sent.get("customer"), CUSTOMER_LENGTH)
    failed = {
        "object": "request",
        "id": request_id,
        "idempotency_key": key,
        "task": row.task_name,
        "task_id": row.task_id,
        "task_failure": row.id,
        "customer": customer,
        "error": error,
        "retryable": row.retryable,
        "attempts": row.attempts,
    }
    return Emitted("request.failed", failed, request_id=request_id, idempotency_key=key)


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
