"""The invoice path's SQL statements: those built once at import, and the PostgreSQL text
that reads or writes the rows of many lines or customers in one statement."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    Update,
    bindparam,
    cast,
    column,
    func,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import col

from domain.invoices import MAX_LINES_PER_INVOICE
from worker.db import table_of
from worker.tables import CustomerTaxId, DiscountRow, InvoiceItem

PENDING = col(InvoiceItem.invoice_id).is_(None)


PRICED_COLUMNS = (
    col(InvoiceItem.id),
    col(InvoiceItem.amount),
    col(InvoiceItem.discountable),
    col(InvoiceItem.tax_rates),
    col(InvoiceItem.created),
)
"""What pricing reads of a line (and claim order needs: created, id)."""

PricedLinesSelect = Select[str, int, bool, list[str] | None, int]
"""A query of ``PRICED_COLUMNS``: what its rows hold, in order."""


def oldest_pending(customer: ColumnElement[Any], currency: ColumnElement[Any]) -> PricedLinesSelect:
    """The 251 oldest pending items of (customer, currency), in claim order: the 251st says
    whether the chain goes on."""
    return (
        select(*PRICED_COLUMNS)
        .where(col(InvoiceItem.customer_id) == customer, col(InvoiceItem.currency) == currency, PENDING)
        .order_by(col(InvoiceItem.created), col(InvoiceItem.id))
        .limit(MAX_LINES_PER_INVOICE + 1)
    )


PENDING_LINES = oldest_pending(bindparam("customer"), bindparam("currency"))
"""Built once: the hot path's statements are not rebuilt (and their cache keys not
recomputed) for every invoice."""


_PAIRS = (
    func.jsonb_to_recordset(cast(bindparam("pairs", type_=String), JSONB))
    .table_valued(column("at", Integer), column("customer", String), column("currency", String))
    .render_derived(name="t", with_types=True)
)
_EACH_PAIR = oldest_pending(_PAIRS.c.customer, _PAIRS.c.currency).lateral("i")
PENDING_LINES_OF = (
    select(_PAIRS.c.at, *_EACH_PAIR.c)
    .select_from(_PAIRS.join(_EACH_PAIR, true()))
    .order_by(_PAIRS.c.at, _EACH_PAIR.c.created, _EACH_PAIR.c.id)
)
"""PostgreSQL: ``oldest_pending`` of each (customer, currency) of a JSON document, joined
LATERAL: the single-pair query runs once per pair, on the pending-items index."""


DISCOUNT = select(DiscountRow).where(col(DiscountRow.customer_id) == bindparam("customer"))


_WRITE_LINES = (
    "UPDATE invoice_items SET discount_amounts = u.discount_amounts, tax_amounts = u.tax_amounts{claim}"
    " FROM jsonb_to_recordset(CAST(:lines AS jsonb))"
    " AS u(id varchar, invoice varchar, discount_amounts jsonb, tax_amounts jsonb)"
    " WHERE invoice_items.id = u.id{pending}"
)
"""PostgreSQL: the amounts (``LINE_AMOUNTS``), or amounts and claims (``CLAIM_LINES``), of
the lines of one JSON document in one UPDATE, for the lines of one invoice or of many."""
LINE_AMOUNTS = text(_WRITE_LINES.format(claim="", pending=""))
# The pending guard is spelt so that no index can serve it: with ``IS NULL`` the planner
# scans every pending item through the invoice_id index (it assumes 100 rows from the JSON
# document and few pending items) instead of looking up 250 by primary key, measured 15 ms
# instead of 2 at 100k pending. PostgreSQL folds ``IS NOT DISTINCT FROM NULL`` into ``IS NULL``.
CLAIM_LINES = text(
    _WRITE_LINES.format(
        claim=", invoice_id = u.invoice", pending=" AND coalesce(invoice_items.invoice_id, '') = ''"
    )
)


def write_lines_elsewhere(*, claim: bool) -> Update:
    """Other databases: the same UPDATE for one line, to run as one executemany."""
    table = table_of(InvoiceItem)
    stmt = (
        update(table)
        .where(table.c.id == bindparam("line_id"))
        .values(discount_amounts=bindparam("d"), tax_amounts=bindparam("t"))
    )
    if claim:
        stmt = stmt.where(table.c.invoice_id.is_(None)).values(invoice_id=bindparam("invoice"))
    return stmt


TAX_IDS = (
    select(CustomerTaxId)
    .where(col(CustomerTaxId.customer_id) == bindparam("customer"))
    .order_by(col(CustomerTaxId.created))
)
