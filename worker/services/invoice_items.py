"""Invoice items: pending charges waiting for an invoice of their currency (domain/README.md §3)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select, text
from sqlmodel import Session, col

from domain.errors import BadRequest, BillingError, NotFound
from domain.money import check_amount
from tasks.contracts import InvoiceItemCreate, InvoiceItemsCreate
from worker.db import table_of
from worker.events import Emitted
from worker.services.base import Outcome, Request, key_row, known_keys
from worker.tables import Customer, IdempotencyKey, InvoiceItem, TaxRateRow
from worker.views import invoice_item_of_values


def _lookups(session: Session, items: Sequence[InvoiceItemCreate]) -> tuple[dict[str, Any], set[str]]:
    """The items' customers (id, currency, deleted) and which of their tax rates are active."""
    customer_ids = {item.customer for item in items}
    customers = {
        c.id: c
        for c in session.execute(
            select(col(Customer.id), col(Customer.currency), col(Customer.deleted)).where(
                col(Customer.id).in_(customer_ids)
            )
        )
    }
    rate_ids = {r for item in items for r in item.tax_rates or ()}
    if not rate_ids:
        return customers, set()
    rows = session.execute(
        select(col(TaxRateRow.id)).where(col(TaxRateRow.id).in_(rate_ids), col(TaxRateRow.active))
    )
    return customers, {row.id for row in rows}


def _row(
    item: InvoiceItemCreate, customers: dict[str, Any], active_rates: set[str], at: str, now: int
) -> dict[str, Any]:
    customer = customers.get(item.customer)
    if customer is None or customer.deleted:
        raise NotFound("customer", item.customer, field=f"{at}customer", deleted=customer is not None)
    currency = item.currency or customer.currency
    if currency is None:
        raise BadRequest(
            f"customer {customer.id} has no default currency; name the item's currency",
            field=f"{at}currency",
        )
    amount = check_amount(item.line_amount, f"{at}amount", currency=currency)
    for rate_index, rate in enumerate(item.tax_rates or ()):
        if rate not in active_rates:
            raise NotFound("active tax rate", rate, field=f"{at}tax_rates[{rate_index}]")
    return {
        "id": item.id,
        "customer_id": item.customer,
        "currency": currency,
        "amount": amount,
        "unit_amount": item.unit_amount if item.unit_amount is not None else amount,
        "quantity": item.quantity or 1,
        "description": item.description,
        "discountable": item.discountable if item.discountable is not None else amount >= 0,
        "period_start": item.period.start if item.period else None,
        "period_end": item.period.end if item.period else None,
        "metadata": item.metadata,
        "tax_rates": item.tax_rates,
        "created": now,
    }


def _rows(request: Request, items: Sequence[InvoiceItemCreate], field_prefix: str) -> list[dict[str, Any]]:
    """Validate a batch against the database and build its rows: every check before any write."""
    customers, active_rates = _lookups(request.session, items)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        at = f"{field_prefix}[{index}]." if field_prefix else ""
        customer = customers.get(item.customer)
        if customer is None or customer.deleted:
            raise NotFound("customer", item.customer, field=f"{at}customer", deleted=customer is not None)
        if item.id in seen:
            raise BadRequest(f"invoice item {item.id} already exists", field=f"{at}id")
        seen.add(item.id)
        rows.append(_row(item, customers, active_rates, at, request.now))
    return rows


_COLUMN_TYPES = {
    "id": "varchar",
    "customer_id": "varchar",
    "currency": "varchar",
    "amount": "bigint",
    "unit_amount": "bigint",
    "quantity": "integer",
    "description": "varchar",
    "discountable": "boolean",
    "period_start": "bigint",
    "period_end": "bigint",
    "metadata": "jsonb",
    "tax_rates": "jsonb",
    "created": "bigint",
}
_PG_INSERT = text(
    "WITH rows AS (SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb))"
    f" AS r({', '.join(f'{c} {t}' for c, t in _COLUMN_TYPES.items())})),"
    f" inserted AS (INSERT INTO invoice_items ({', '.join(_COLUMN_TYPES)}) SELECT * FROM rows"
    " ON CONFLICT (id) DO NOTHING RETURNING id)"
    " SELECT id FROM rows EXCEPT SELECT id FROM inserted"
)


def insert_new(session: Session, rows: list[dict[str, Any]]) -> set[str]:
    """Insert the rows whose id is free; returns the ids inserted.

    PostgreSQL: one ``INSERT … SELECT FROM jsonb_to_recordset(one JSON document) ON
    CONFLICT (id) DO NOTHING`` for the whole batch, which answers with the ids it did not
    insert (usually none): neither the server nor the driver handles a statement, a
    placeholder or an array element per row (psycopg escapes text array elements one by
    one; the JSON document is one ``json.dumps``). A row whose id another transaction holds
    waits for it to end, then counts as taken if it committed. SQLite (one writer at a
    time): the ids already there, then executemany.
    """
    if not rows:
        return set()
    if session.get_bind().dialect.name == "postgresql":
        document = json.dumps(rows)  # each row has exactly these columns (``_row``)
        taken = set(session.execute(_PG_INSERT, {"rows": document}).scalars())
        return {row["id"] for row in rows} - taken
    ids = [row["id"] for row in rows]
    taken = set(session.execute(select(col(InvoiceItem.id)).where(col(InvoiceItem.id).in_(ids))).scalars())
    fresh = [row for row in rows if row["id"] not in taken]
    if fresh:
        session.execute(insert(table_of(InvoiceItem)), fresh)
    return {row["id"] for row in fresh}


def _insert(request: Request, rows: list[dict[str, Any]], field_prefix: str) -> Outcome | None:
    """Insert every row, or fail naming the first whose id exists. Returns the earlier
    outcome when this request's own twin (same key, same items) committed them first."""
    inserted = insert_new(request.session, rows)
    if len(inserted) == len(rows):
        return None
    if not inserted and (prior := request.replayed()):
        return prior  # a duplicate delivery overlapped the first; nothing of ours was written
    index = next(i for i, row in enumerate(rows) if row["id"] not in inserted)
    at = f"{field_prefix}[{index}]." if field_prefix else ""
    raise BadRequest(f"invoice item {rows[index]['id']} already exists", field=f"{at}id")


CREATED = "invoiceitem.created"
BATCH_CREATED = "invoiceitem.batch_created"


def create(request: Request, command: InvoiceItemCreate) -> Outcome:
    if prior := request.replayed():
        return prior
    rows = _rows(request, [command], "")
    if prior := _insert(request, rows, ""):
        return prior
    request.emit(CREATED, invoice_item_of_values(rows[0]))
    return request.done(command.id)


def create_many(request: Request, command: InvoiceItemsCreate) -> Outcome:
    """All items of the batch or none: the first bad one fails the batch and names its index.

    One ``invoiceitem.batch_created`` event names the items (README: Events, where the
    choice over one event per item is measured)."""
    if prior := request.replayed():
        return prior
    rows = _rows(request, command.items, "items")
    if prior := _insert(request, rows, "items"):
        return prior
    request.emit(BATCH_CREATED, batch_summary(request.key, rows, request.now))
    return request.done(None)


def batch_summary(key: str, rows: Sequence[dict[str, Any]], now: int) -> dict[str, Any]:
    """The object of ``invoiceitem.batch_created``: the list request and the items it made, in
    its order (each is ``billing get``-able), with their customers (``customer`` when one)."""
    customers = sorted({row["customer_id"] for row in rows})
    return {
        "object": "invoiceitem_batch",
        "id": key,
        "count": len(rows),
        "items": [row["id"] for row in rows],
        "customers": customers,
        "customer": customers[0] if len(customers) == 1 else None,
        "created": now,
    }


def create_together(
    session: Session, operation: str, entries: Sequence[tuple[str, str, InvoiceItemCreate]], now: int
) -> list[Outcome | None]:
    """Single-item messages that a worker took together (``(key, fingerprint, command)``
    each), written in the caller's one transaction: their rows with one insert, their
    idempotency keys with another.

    Returns, per entry, its outcome if it is settled here (created now, or the replay of an
    earlier success with the same key), else None. Any other (a bad item, a key used for
    something else, an id already taken, a twin of a message in this batch or in flight
    elsewhere) is left to run alone afterwards, where it fails, retries or replays exactly
    as its message would on its own.
    """
    known = known_keys(session, [key for key, _, _ in entries])
    customers, active_rates = _lookups(session, [command for _, _, command in entries])
    settled: list[Outcome | None] = [None] * len(entries)
    rows: list[dict[str, Any]] = []
    owners: list[int] = []
    claimed: set[str] = set()
    for index, (key, fingerprint, command) in enumerate(entries):
        if (prior := known.get(key)) is not None:
            if prior.operation == operation and prior.request_hash == fingerprint:
                settled[index] = Outcome(prior.resource_id, replayed=True)
            continue
        if key in claimed or command.id in claimed:
            continue
        try:
            rows.append(_row(command, customers, active_rates, "", now))
        except BillingError:
            continue
        owners.append(index)
        claimed.update((key, command.id))
    inserted = insert_new(session, rows)
    done = [index for index, row in zip(owners, rows, strict=True) if row["id"] in inserted]
    if done:
        session.execute(
            insert(table_of(IdempotencyKey)),
            [key_row(entries[i][0], operation, entries[i][1], entries[i][2].id, now) for i in done],
        )
    for index, row in zip(owners, rows, strict=True):
        if row["id"] in inserted:
            key = entries[index][0]
            event = Emitted(CREATED, invoice_item_of_values(row), request_id=key, idempotency_key=key)
            settled[index] = Outcome(row["id"], events=[event])
    return settled
