"""Dead letters an operator can work: find them, read one, send them again, close them.

A failure is ``open`` when recorded, ``retried`` once sent again (open again if it fails
again: ``worker.failures.record_failure``), ``resolved`` when an operator closes it with a
note. Every retry, resolution and reopening is a ``task_failure_events`` row: who, when, what
(README: Failures). ``billing list task_failures`` keeps its own shape; these objects add the
status, the resolution and, for one failure, its history.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlmodel import Session, col

from domain.errors import BadRequest, NotFound
from tasks.operations import OPERATIONS
from worker import clock
from worker.db import UnitOfWork, table_of
from worker.tables import FailureStatus, TaskFailure, TaskFailureEvent
from worker.views import MAX_LIMIT, task_failure_object

PARKED = "Parked"
"""The error type of a message parked after too many redeliveries (README: What it guarantees)."""


@dataclass(frozen=True, slots=True)
class FailureFilter:
    """Which failures: every given criterion must hold."""

    task: str | None = None
    code: str | None = None
    customer: str | None = None  # the payload's ``customer``
    since: int | None = None  # last failed at or after (Unix seconds)
    parked: bool | None = None
    status: str | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in set(FailureStatus):
            statuses = ", ".join(FailureStatus)
            raise BadRequest(f"must be one of {statuses} (got {self.status!r})", field="status")

    def given(self) -> bool:
        return any(value is not None for value in (self.task, self.code, self.customer, self.since,
                                                   self.parked, self.status))  # fmt: skip

    def conditions(self) -> list[ColumnElement[bool]]:
        table = table_of(TaskFailure).c
        conditions: list[ColumnElement[bool]] = []
        if self.task is not None:
            conditions.append(table.task_name == self.task)
        if self.code is not None:
            conditions.append(table.error_code == self.code)
        if self.customer is not None:
            conditions.append(table.payload["customer"].as_string() == self.customer)
        if self.since is not None:
            conditions.append(table.last_seen >= self.since)
        if self.parked is not None:
            conditions.append((table.error_type == PARKED) if self.parked else (table.error_type != PARKED))
        if self.status is not None:
            conditions.append(table.status == self.status)
        return conditions


def failure_object(row: TaskFailure, history: Sequence[TaskFailureEvent] | None = None) -> dict[str, Any]:
    """A failure as ``billing list task_failures`` shows it, plus where the operator is with it."""
    body = task_failure_object(row)
    customer = (row.payload or {}).get("customer")
    body.update(
        customer=customer if isinstance(customer, str) else None,
        parked=row.error_type == PARKED,
        replayable=replayable(row),
        status=row.status,
        resolved_at=row.resolved_at,
        note=row.note,
    )
    if history is not None:
        body["history"] = [
            {"action": e.action, "actor": e.actor, "at": e.at, "note": e.note} for e in history
        ]
    return body


def replayable(row: TaskFailure) -> bool:
    """Sent again as recorded: a known task with its JSON payload (not a refused message's repr,
    nor the excerpt kept of one too large or unstorable: ``worker.failures``)."""
    payload = row.payload or {}
    return row.task_name in OPERATIONS and bool(payload) and not {"raw", "excerpt"} & payload.keys()


def list_failures(
    session: Session, filters: FailureFilter, *, limit: int = MAX_LIMIT, starting_after: str | None = None
) -> dict[str, Any]:
    """One page of failures, newest first as every list (``worker.views``), in Stripe's list
    shape; ``starting_after`` is the last task id seen (the next, older page)."""
    stmt = select(TaskFailure).where(*filters.conditions())
    if starting_after is not None:
        anchor = _by_task_ids(session, [starting_after], field="starting_after")[0]
        stmt = stmt.where(col(TaskFailure.id) < anchor.id)
    rows = session.execute(stmt.order_by(col(TaskFailure.id).desc()).limit(limit + 1)).scalars().all()
    return {
        "object": "list",
        "data": [failure_object(row) for row in rows[:limit]],
        "has_more": len(rows) > limit,
        "url": "/v1/task_failures",
    }


def show_failure(session: Session, task_id: str) -> dict[str, Any]:
    (row,) = _by_task_ids(session, [task_id])
    history = session.execute(
        select(TaskFailureEvent)
        .where(col(TaskFailureEvent.task_id) == task_id)
        .order_by(col(TaskFailureEvent.id))
    ).scalars()
    return failure_object(row, list(history))


def retry_failures(
    task_ids: Sequence[str], filters: FailureFilter, *, actor: str, send: Callable[[TaskFailure], None]
) -> dict[str, Any]:
    """Send failures again with their payload and task id (every billing task is idempotent).

    Either ids or a filter (open failures unless it names a status). All are checked first:
    an unknown id or a failure that cannot be replayed refuses the whole retry. Each is marked
    ``retried`` before it is sent, so a retry that fails again at once is seen open again."""
    with UnitOfWork() as uow:
        rows = _chosen(uow.session, task_ids, filters)
        refused = [row.task_id for row in rows if not replayable(row)]
        if refused:
            raise BadRequest(
                f"no replayable payload recorded for {', '.join(refused)} (resolve them instead)",
                field="task_ids",
            )
        _mark(uow.session, rows, FailureStatus.RETRIED, actor=actor, note=None)
        uow.commit()
    for index, row in enumerate(rows):
        try:
            send(row)
        except Exception:
            _reopen_unsent(rows[index:], actor)
            raise
    return {"object": "list", "data": [failure_object(row) for row in rows], "has_more": False}


def resolve_failures(task_ids: Sequence[str], *, note: str, actor: str) -> dict[str, Any]:
    """Close failures that need nothing more (fixed by hand, or not to be done), with a note."""
    if not note.strip():
        raise BadRequest("say why in a note", field="note")
    with UnitOfWork() as uow:
        rows = _by_task_ids(uow.session, task_ids)
        _mark(uow.session, rows, FailureStatus.RESOLVED, actor=actor, note=note)
        uow.commit()
    return {"object": "list", "data": [failure_object(row) for row in rows], "has_more": False}


def _chosen(session: Session, task_ids: Sequence[str], filters: FailureFilter) -> list[TaskFailure]:
    if task_ids and filters.given():
        raise BadRequest("give task ids or filters, not both", field="task_ids")
    if task_ids:
        return _by_task_ids(session, task_ids)
    if not filters.given():
        raise BadRequest("give task ids or at least one filter", field="task_ids")
    if filters.status is None:
        filters = replace(filters, status=FailureStatus.OPEN)
    stmt = select(TaskFailure).where(*filters.conditions()).order_by(col(TaskFailure.id))
    return list(session.execute(stmt).scalars())


def _by_task_ids(session: Session, task_ids: Sequence[str], field: str = "task_id") -> list[TaskFailure]:
    """The failures of these task ids, in the order given; NotFound names every unknown id."""
    wanted = list(dict.fromkeys(task_ids))
    found = {
        row.task_id: row
        for row in session.execute(select(TaskFailure).where(col(TaskFailure.task_id).in_(wanted))).scalars()
    }
    unknown = [task_id for task_id in wanted if task_id not in found]
    if unknown:
        raise NotFound("task failure", ", ".join(unknown), field=field)
    return [found[task_id] for task_id in wanted]


def _mark(
    session: Session, rows: Sequence[TaskFailure], status: FailureStatus, *, actor: str, note: str | None
) -> None:
    now = clock.now()
    for row in rows:
        row.status = status
        row.resolved_at = now if status == FailureStatus.RESOLVED else None
        row.note = note
        session.add(TaskFailureEvent(task_id=row.task_id, action=status, actor=actor, at=now, note=note))


def _reopen_unsent(rows: Sequence[TaskFailure], actor: str) -> None:
    """Sending stopped (the broker is down): what was not sent is open again, and says so."""
    with UnitOfWork() as uow:
        unsent = _by_task_ids(uow.session, [row.task_id for row in rows])
        now = clock.now()
        for row in unsent:
            row.status = FailureStatus.OPEN
            note = "retry not sent: the broker refused it"
            uow.session.add(
                TaskFailureEvent(task_id=row.task_id, action="reopened", actor=actor, at=now, note=note)
            )
        uow.commit()
