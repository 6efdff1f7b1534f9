"""Invoice requests a worker took together, made in one transaction (README: Performance).

Every read, lock and write is one statement for all of the batch's invoices, in a fixed
order tuned for the hot path: lock the customers, look up the keys, read the pending
lines, the discounts and coupons, the tax rates and what finalization reads; then build
each invoice in memory (``generation.build_invoice``, as one alone) and write them all:
one flush, one claim of every line, one insert of every key.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlmodel import Session, col

from domain.invoices import MAX_LINES_PER_INVOICE
from tasks.contracts import InvoiceCreate
from worker.db import table_of
from worker.services import ledger
from worker.services.base import Outcome, Request, known_keys, lock_customers
from worker.services.customers import set_default_currency
from worker.services.invoices import statements
from worker.services.invoices.generation import FinalizeReads, build_invoice, next_part, tax_id_snapshot
from worker.services.invoices.lines import pending_lines_in, write_lines
from worker.services.invoices.pricing import tax_rates
from worker.tables import CouponRow, Customer, CustomerTaxId, DiscountRow, IdempotencyKey

Entry = tuple[str, str, InvoiceCreate]
"""A request of the batch: (idempotency key, fingerprint, command)."""

Chosen = tuple[int, Customer, str]
"""A request settled here: (its index in the batch, its customer, the invoice's currency)."""

Ready = tuple[Chosen, tuple[list[Any], bool]]
"""A chosen request with its pending lines and whether more remain."""


def create_together(
    session: Session, operation: str, entries: Sequence[Entry], now: int
) -> list[Outcome | None]:
    """Invoice requests that a worker took together (``(key, fingerprint, command)`` each),
    made in the caller's one transaction: every read, lock and write is one statement for
    all of them, and each invoice is built by the same ``build_invoice`` as one alone.

    Customers are locked in id order (``lock_customers``). Settled here, per request: the
    common case, a first run that invoices the pending items of a customer's currency with
    the customer's own discount. Left to run alone afterwards, where it is made, replays,
    retries or fails exactly as its message would on its own: a key seen before, a second
    request for a customer of the batch, a customer missing, deleted or on a test clock,
    no currency, coupons named in the request, no pending items, or items excluded.
    """
    customers = lock_customers(session, {command.customer for _, _, command in entries})
    known = known_keys(session, [key for key, _, _ in entries])  # under the locks, as ``replayed``
    chosen = _choose(entries, customers, known)
    pending = pending_lines_of(session, [(customer.id, currency) for _, customer, currency in chosen])
    ready = [(at, lines_more) for at, lines_more in zip(chosen, pending, strict=True) if lines_more[0]]
    if not ready:
        return [None] * len(entries)
    reads = _read_ahead(session, entries, ready)
    return _make(session, operation, entries, now, ready, reads)


def _choose(entries: Sequence[Entry], customers: dict[str, Customer], known: Collection[str]) -> list[Chosen]:
    """The requests settled here (see ``create_together``); the others run alone."""
    chosen: list[Chosen] = []
    seen: set[str] = set()
    for index, (key, _, command) in enumerate(entries):
        customer = customers.get(command.customer)
        currency = command.currency or (customer.currency if customer else None)
        if (
            key in known
            or customer is None  # missing, deleted or on a test clock (``lock_customers``)
            or customer.id in seen
            or currency is None
            or command.discounts is not None
            or command.pending_invoice_items_behavior != "include"
        ):
            continue
        seen.add(customer.id)
        chosen.append((index, customer, currency))
    return chosen


def _read_ahead(
    session: Session, entries: Sequence[Entry], ready: list[Ready]
) -> dict[tuple[str, str], FinalizeReads]:
    """Everything building the invoices reads, for all of them: their customers' discounts
    and coupons, their tax rates, and (those finalized) what finalization reads."""
    read_discounts(session, {customer.id for (_, customer, _), _ in ready})
    tax_rates(
        session,
        {rate for (index, _, _), (lines, _) in ready for rate in entries[index][2].default_tax_rates or ()}
        | {rate for _, (lines, _) in ready for line in lines for rate in line.tax_rates or ()},
    )
    finalizing = [
        (customer.id, currency) for (index, customer, currency), _ in ready if entries[index][2].finalize
    ]
    return dict(zip(finalizing, finalize_reads_of(session, finalizing), strict=True))


def _make(
    session: Session,
    operation: str,
    entries: Sequence[Entry],
    now: int,
    ready: list[Ready],
    reads: dict[tuple[str, str], FinalizeReads],
) -> list[Outcome | None]:
    """Build each ready request's invoice, then write them all: per request, its outcome."""
    settled: list[Outcome | None] = [None] * len(entries)
    claims: list[dict[str, Any]] = []
    keys: list[dict[str, Any]] = []
    for (index, customer, currency), (lines, more) in ready:
        key, fingerprint, command = entries[index]
        request = Request(session, operation, key, fingerprint, now, customer_id=customer.id)
        set_default_currency(customer, currency, field="customer")
        invoice, invoice_claims = build_invoice(
            request, customer, command, currency, lines, reads.get((customer.id, currency))
        )
        claims.extend(invoice_claims)
        outcome = request.done(invoice.id)
        if more:
            outcome.follow_ups.append(next_part(command))
        assert request.key_row is not None  # set by ``done``
        keys.append(request.key_row)
        settled[index] = outcome
    session.flush()  # the invoices (one INSERT), then the customers' and balances' changes and ledger rows
    write_lines(session, claims, claim=True)
    session.execute(insert(table_of(IdempotencyKey)), keys)
    return settled


def pending_lines_of(session: Session, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[Any], bool]]:
    """``pending_lines`` of many (customer, currency) pairs, in their order.

    PostgreSQL: one statement (``statements.PENDING_LINES_OF``). Elsewhere: one query per pair.
    """
    if session.get_bind().dialect.name != "postgresql":
        return [pending_lines_in(session, customer, currency) for customer, currency in pairs]
    document = json.dumps([{"at": at, "customer": c, "currency": cur} for at, (c, cur) in enumerate(pairs)])
    found: list[list[Any]] = [[] for _ in pairs]
    rows = session.execute(statements.PENDING_LINES_OF, {"pairs": document}).all()  # one fetch, not per row
    for row in rows:
        found[row.at].append(row)
    limit = MAX_LINES_PER_INVOICE
    return [(lines[:limit], len(lines) > limit) for lines in found]


def read_discounts(session: Session, customer_ids: Collection[str]) -> None:
    """``pricing.customer_discount`` of many customers read with one query, and their
    coupons with another: for invoices made together in one transaction."""
    held: dict[str, DiscountRow | None] = session.info.setdefault("discounts", {})
    wanted = set(customer_ids) - held.keys()
    if not wanted:
        return
    found = {
        row.customer_id: row
        for row in session.execute(
            select(DiscountRow).where(col(DiscountRow.customer_id).in_(wanted))
        ).scalars()
    }
    held.update({customer_id: found.get(customer_id) for customer_id in wanted})
    coupons = {row.coupon_id for row in found.values()}
    if coupons:  # into the session's identity map, where ``request.get`` finds them (held: it is weak)
        session.info.setdefault("coupons", []).extend(
            session.execute(select(CouponRow).where(col(CouponRow.id).in_(coupons))).scalars()
        )


def finalize_reads_of(session: Session, pairs: Sequence[tuple[str, str]]) -> list[FinalizeReads]:
    """``generation.finalize_reads`` of many (customer, currency) pairs, with one query for
    the tax ids and one for the balances, in the pairs' order."""
    if not pairs:
        return []
    customer_ids = {customer for customer, _ in pairs}
    tax_ids: dict[str, list[CustomerTaxId]] = {customer: [] for customer in customer_ids}
    for row in session.execute(
        select(CustomerTaxId)
        .where(col(CustomerTaxId.customer_id).in_(customer_ids))
        .order_by(col(CustomerTaxId.created))
    ).scalars():
        tax_ids[row.customer_id].append(row)
    balances = ledger.lock_balances(session, pairs)
    return [
        (tax_id_snapshot(tax_ids[customer]), balances[(customer, currency)]) for customer, currency in pairs
    ]
