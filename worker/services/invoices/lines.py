"""An invoice's lines: reading a customer's oldest pending items of a currency, and writing
the lines' amounts, attaching them to their invoice (the claim) in the same statement.

Reads and claims happen under the customer's lock, which every claim takes: items read
as pending stay pending until the claim in the same transaction, and a claim that finds
one taken anyway rolls back (``ConcurrentClaim``) rather than steal it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, case
from sqlmodel import Session, col

from domain.errors import TransientError
from domain.invoices import MAX_LINES_PER_INVOICE
from worker.services.base import Request
from worker.services.invoices import statements
from worker.tables import InvoiceItem


def pending_lines(
    request: Request, customer_id: str, currency: str, *, subscription_first: str | None = None
) -> tuple[list[Any], bool]:
    """The oldest ≤ 250 pending items of (customer, currency), in claim order (created, id),
    and whether more remain for the chain's next part: one SELECT of 251.

    The caller holds the customer's lock, which every claim takes, so the items stay
    pending until ``write_lines`` attaches them in this transaction; an item committed
    after this read waits for the next invoice, like one that arrives after it.
    ``subscription_first``: that subscription's items come first, so a period's own lines
    are on its invoice even behind a backlog of older pending items.
    """
    return pending_lines_in(request.session, customer_id, currency, subscription_first)


def pending_lines_in(
    session: Session,
    customer_id: str,
    currency: str,
    subscription_first: str | None = None,
    unstored: Sequence[Any] = (),
) -> tuple[list[Any], bool]:
    """``pending_lines`` in a session, without a request (invoices made together).

    ``unstored``: lines of ``subscription_first`` not yet in the table (a preview's period
    lines, with ``first = 0``), placed where the query would place them once stored.
    """
    stmt = statements.PENDING_LINES
    if subscription_first is not None:
        first = case((col(InvoiceItem.subscription_id) == subscription_first, 0), else_=1)
        stmt = stmt.add_columns(first.label("first"))
        stmt = stmt.order_by(None).order_by(first, col(InvoiceItem.created), col(InvoiceItem.id))
    rows: Sequence[Any] = session.execute(stmt, {"customer": customer_id, "currency": currency}).all()
    if unstored:
        rows = sorted([*rows, *unstored], key=lambda row: (row.first, row.created, row.id))
    lines = list(rows[:MAX_LINES_PER_INVOICE])
    if subscription_first is not None:
        lines.sort(key=lambda row: (row.created, row.id))
    return lines, len(rows) > MAX_LINES_PER_INVOICE


def write_lines(session: Session, lines: list[dict[str, Any]], *, claim: bool = False) -> None:
    """Store lines' discount and tax amounts (``line_amounts``) in one statement; with
    ``claim``, also attach each, still pending, to its ``invoice``.

    PostgreSQL: one UPDATE … FROM jsonb_to_recordset(one JSON document), not one statement
    per line, for the lines of one invoice or of many. Elsewhere: one executemany.
    """
    if not lines:
        return
    if session.get_bind().dialect.name == "postgresql":
        stmt = statements.CLAIM_LINES if claim else statements.LINE_AMOUNTS
        result = session.execute(stmt, {"lines": json.dumps(lines)})
    else:
        result = session.execute(
            statements.write_lines_elsewhere(claim=claim), [_bound(line, claim=claim) for line in lines]
        )
    if claim:
        # Session.execute is typed to return a Result; for an UPDATE it is a CursorResult
        _check_claimed(lines, cast(CursorResult[Any], result).rowcount)


def _bound(line: dict[str, Any], *, claim: bool) -> dict[str, Any]:
    """One line's parameters for ``statements.write_lines_elsewhere``."""
    return {
        "line_id": line["id"],
        "d": line.get("discount_amounts"),
        "t": line.get("tax_amounts"),
        **({"invoice": line["invoice"]} if claim else {}),
    }


def _check_claimed(lines: list[dict[str, Any]], claimed: int) -> None:
    if claimed != len(lines):
        # every claim holds the customer's lock: this would be a change made without it
        invoices = sorted({line["invoice"] for line in lines})
        raise ConcurrentClaim(
            f"{len(lines) - claimed} of {len(lines)} items read as pending were no longer"
            f" pending when invoice {', '.join(invoices)} claimed them"
        )


class ConcurrentClaim(TransientError):
    """Items changed under a claim: the transaction rolls back and the task retries."""
