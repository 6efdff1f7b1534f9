"""Events: a Stripe-shaped record of every state change, written in the change's own
transaction (README: Events).

Services call ``Request.emit(type, obj, previous)``; ``execute`` and ``execute_together``
hand what was emitted to ``write_events`` just before they commit, so an event exists if
and only if its effect does. A replayed request returns before it changes anything, and
emits nothing: a redelivered message writes no second event.

``obj`` is either the object already rendered (``worker.views``: what ``billing get``
prints; needed for what the transaction deletes) or a table row, rendered here as the
database holds it at the end of the transaction, every row of a kind with one query.
``previous`` is the object as it was before an update; the event keeps only the fields
that changed (Stripe's ``previous_attributes``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, text
from sqlmodel import Session, SQLModel

from tasks.ids import PREFIXES, new_ids
from worker.db import table_of
from worker.tables import Event
from worker.views import render_rows


@dataclass(slots=True)
class Emitted:
    """An event asked for in a transaction, not yet written."""

    type: str
    object: dict[str, Any] | SQLModel
    previous: dict[str, Any] | None = None
    request_id: str | None = None
    idempotency_key: str | None = None


def _customer_of(obj: dict[str, Any]) -> str | None:
    if obj.get("object") == "customer":
        return str(obj["id"])
    customer = obj.get("customer")
    return customer if isinstance(customer, str) else None


def previous_attributes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The top-level fields of ``before`` whose value changed, with their old values."""
    return {name: value for name, value in before.items() if after.get(name) != value}


_COLUMNS = {
    "id": "varchar",
    "type": "varchar",
    "created": "bigint",
    "customer_id": "varchar",
    "data": "jsonb",
    "request_id": "varchar",
    "idempotency_key": "varchar",
}
_PG_INSERT = text(
    f"INSERT INTO events ({', '.join(_COLUMNS)}) SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb))"
    f" AS r({', '.join(f'{name} {kind}' for name, kind in _COLUMNS.items())})"
)


def write_events(session: Session, events: Sequence[Emitted], now: int) -> list[Event]:
    """Render and insert ``events`` in the session's transaction (one INSERT for all of
    them); returns the rows written, in order. ``now``: their ``created``."""
    if not events:
        return []
    rows = [event.object for event in events if not isinstance(event.object, dict)]
    rendered = iter(render_rows(session, rows, now=now) if rows else [])
    ids = new_ids(PREFIXES["event"], len(events))
    values: list[dict[str, Any]] = []
    for event_id, event in zip(ids, events, strict=True):
        obj = event.object if isinstance(event.object, dict) else next(rendered)
        data: dict[str, Any] = {"object": obj}
        if event.previous is not None:
            data["previous_attributes"] = previous_attributes(event.previous, obj)
        values.append(
            {
                "id": event_id,
                "type": event.type,
                "created": now,
                "customer_id": _customer_of(obj),
                "data": data,
                "request_id": event.request_id,
                "idempotency_key": event.idempotency_key,
            }
        )
    insert_events(session, values)
    return [Event(**row) for row in values]


def insert_events(session: Session, values: list[dict[str, Any]]) -> None:
    """PostgreSQL: one ``INSERT … SELECT FROM jsonb_to_recordset`` of one JSON document (as
    ``invoice_items.insert_new``); elsewhere one executemany."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_PG_INSERT, {"rows": json.dumps(values)})
    else:
        session.execute(insert(table_of(Event)), values)
