"""``billing audit``: check the books of a live database (README: What it guarantees under
at-least-once delivery).

Every check is one set-based query (aggregates, joins and window functions that run the
same on SQLite >= 3.25 and PostgreSQL) that returns only the rows that break a rule, so
the audit reads each table a small, fixed number of times whatever its size (each
statement is built once per process; SQLAlchemy caches its compiled form). The one
exception is the invoice totals check: its JSON columns (``total_discount_amounts``,
``total_taxes``) are summed in Python over the invoices streamed in chunks, one row per
invoice with its line count and line sum already aggregated in SQL.

The rules are the ones the services keep, derived from their code:

- ``item_on_one_invoice``: an item's invoice exists and has the item's customer and currency.
- ``invoice_lines_total``: at most 250 lines; for finalized invoices ``subtotal`` is the sum
  of the lines, ``total = total_excluding_tax + Σ total_taxes``, discounts stay within
  ``[0, max(subtotal, 0)]``, and the tax contained in the lines
  (``subtotal - discounts - total_excluding_tax``) is the sum of the inclusive taxes
  (0 when there are none; an exempt invoice reports every tax as 0 and is not compared).
- ``balance_is_sum_of_ledger``: ``customer_balances`` = Σ transactions and their count.
- ``ending_balance_running_sum``: ``ending_balance`` is the running sum by ``sequence``,
  and sequences run 1..n without gaps (first bad row of each stream reported).
- ``credit_notes_within_total``: issued notes ≤ ``max(total, 0)``; the invoice's pre- and
  post-payment amounts are the sums of its issued notes of each type; none on drafts.
- ``credit_note_settlement``: a note's amount is split exactly (pre-payment: amount-due
  reduction + credit; post-payment: refund + credit + out of band) and its ledger rows
  sum to ``-credit_amount`` while issued, 0 once void.
- ``no_cross_currency_credit``: a transaction of an invoice or credit note, and a credit
  note of an invoice, has that invoice's (note's) customer and currency.
- ``invoice_amounts``: ``amount_paid + amount_remaining = amount_due``; paid ⇒ nothing
  remains; open/uncollectible ⇒ something remains; a draft asks ``max(total, 0)``; a
  finalized invoice has ``amount_due + Σ pre-payment reductions + ending_balance =
  total + starting_balance`` (``domain.credit``, including ``invoice_too_small``).
- ``applied_credit_matches_invoice``: the finalization rows (``applied_to_invoice``,
  ``invoice_too_small``, at most one of each) move the balance from ``starting_balance``
  to ``ending_balance``, starting at ``starting_balance``; ``unapplied_from_invoice``
  exists only on a void invoice and gives back exactly what was applied; drafts have none.
- ``one_subscription_currency``: a customer's active subscriptions all bill one currency
  (domain/README.md §8).
- ``billed_period_invoice``: a billed (subscription, period)'s invoice exists, belongs to that
  subscription and is in the period's currency.

Events (``EVENT_CHECKS``: an event is written in the transaction of its effect, README: Events):

- ``effect_without_event``: every object has its creation event (an invoice item of a list
  request: named by its ``invoiceitem.batch_created``; a subscription's period lines are
  invoice lines, not Stripe invoice items, and have none), and every state it reached has
  its event: an invoice finalized, paid, voided, marked uncollectible, marked overdue; a
  credit note voided; a subscription canceled; a customer deleted. Objects made before the
  first event (a database upgraded from before events) are not checked.
- ``event_without_effect``: every event's object is there in the state the event reports
  (or its deletion event is: ``invoice.deleted``, ``customer.discount.deleted``), and what
  a deletion event reports deleted is gone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

from sqlalchemy import and_, case, func, literal, or_, select, text
from sqlmodel import Session, col

from domain.credit_notes import CreditNoteStatus
from domain.invoices import MAX_LINES_PER_INVOICE, InvoiceStatus
from domain.subscriptions import SubscriptionStatus
from worker.db import table_of
from worker.tables import (
    BalanceTransaction,
    CouponRow,
    CreditNote,
    Customer,
    CustomerBalance,
    DiscountRow,
    Event,
    Invoice,
    InvoiceItem,
    Price,
    Product,
    SandboxClock,
    Subscription,
    SubscriptionPeriod,
    TaxRateRow,
)

_items = table_of(InvoiceItem)
_invoices = table_of(Invoice)
_notes = table_of(CreditNote)
_balances = table_of(CustomerBalance)
_txns = table_of(BalanceTransaction)

CHUNK = 1000
"""Invoices fetched per round trip by the totals check."""


@dataclass(frozen=True)
class Violation:
    check: str
    object_id: str
    detail: str

    def as_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


Check = Callable[[Session], Iterator[Violation]]


def _sum(expr: Any) -> Any:
    return func.coalesce(func.sum(expr), 0)


def _when(condition: Any, value: Any) -> Any:
    return case((condition, value), else_=0)


def _positive_part(expr: Any) -> Any:
    """``max(expr, 0)`` in SQL both databases accept."""
    return case((expr > 0, expr), else_=0)


def _i(value: Any) -> int:
    """PostgreSQL sums bigints as numeric (``Decimal``); every amount here is whole."""
    return int(value or 0)


# -- items --------------------------------------------------------------------------------------


@cache
def _items_on_invoices_query() -> Any:
    inv = _invoices.alias("inv")
    stmt = (
        select(
            _items.c.id,
            _items.c.invoice_id,
            _items.c.customer_id,
            _items.c.currency,
            inv.c.id.label("found"),
            inv.c.customer_id.label("invoice_customer"),
            inv.c.currency.label("invoice_currency"),
        )
        .select_from(_items.outerjoin(inv, inv.c.id == _items.c.invoice_id))
        .where(
            _items.c.invoice_id.is_not(None),
            or_(
                inv.c.id.is_(None),
                inv.c.customer_id != _items.c.customer_id,
                inv.c.currency != _items.c.currency,
            ),
        )
        .order_by(_items.c.id)
    )
    return stmt


def _items_on_invoices(session: Session) -> Iterator[Violation]:
    for row in session.execute(_items_on_invoices_query()):
        if row.found is None:
            detail = f"invoice {row.invoice_id} does not exist"
        else:
            detail = (
                f"item of {row.customer_id} in {row.currency} is on invoice {row.invoice_id}"
                f" of {row.invoice_customer} in {row.invoice_currency}"
            )
        yield Violation("item_on_one_invoice", row.id, detail)


# -- invoice totals -----------------------------------------------------------------------------


@cache
def _invoice_totals_query() -> Any:
    lines = (
        select(
            _items.c.invoice_id,
            func.count().label("n"),
            _sum(_items.c.amount).label("amount"),
        )
        .where(_items.c.invoice_id.is_not(None))
        .group_by(_items.c.invoice_id)
        .subquery("lines")
    )
    stmt = (
        select(
            _invoices.c.id,
            _invoices.c.status,
            _invoices.c.subtotal,
            _invoices.c.total_excluding_tax,
            _invoices.c.total,
            _invoices.c.total_discount_amounts,
            _invoices.c.total_taxes,
            func.coalesce(lines.c.n, 0).label("line_count"),
            func.coalesce(lines.c.amount, 0).label("line_sum"),
        )
        .select_from(_invoices.outerjoin(lines, lines.c.invoice_id == _invoices.c.id))
        .order_by(_invoices.c.id)
        .execution_options(yield_per=CHUNK)
    )
    return stmt


def _invoice_totals(session: Session) -> Iterator[Violation]:
    for row in session.execute(_invoice_totals_query()):
        problems = _totals_problems(row)
        if problems:
            yield Violation("invoice_lines_total", row.id, "; ".join(problems))


def _totals_problems(row: Any) -> list[str]:
    problems = []
    line_count = _i(row.line_count)
    if line_count > MAX_LINES_PER_INVOICE:
        problems.append(f"{line_count} lines, more than {MAX_LINES_PER_INVOICE}")
    if row.status == InvoiceStatus.DRAFT:
        return problems
    line_sum = _i(row.line_sum)
    if row.subtotal != line_sum:
        problems.append(f"subtotal {row.subtotal} but its lines sum to {line_sum}")
    discounts = [int(d.get("amount", 0)) for d in row.total_discount_amounts or ()]
    taxes = row.total_taxes or ()
    tax_sum = sum(int(t.get("amount", 0)) for t in taxes)
    inclusive = [int(t.get("amount", 0)) for t in taxes if t.get("inclusive")]
    if any(d < 0 for d in discounts) or sum(discounts) > max(row.subtotal, 0):
        problems.append(f"discounts {discounts} outside 0..max(subtotal {row.subtotal}, 0)")
    if row.total != row.total_excluding_tax + tax_sum:
        problems.append(
            f"total {row.total} != total_excluding_tax {row.total_excluding_tax} + taxes {tax_sum}"
        )
    contained = row.subtotal - sum(discounts) - row.total_excluding_tax
    exempt_looking = all(not t.get("amount") for t in taxes)  # exempt: every tax is 0
    if (not inclusive and contained != 0) or (
        inclusive and not exempt_looking and contained != sum(inclusive)
    ):
        problems.append(
            f"subtotal {row.subtotal} - discounts {sum(discounts)} - total_excluding_tax"
            f" {row.total_excluding_tax} = {contained}, but inclusive taxes sum to {sum(inclusive)}"
        )
    return problems


# -- ledger -------------------------------------------------------------------------------------


def _ledger_sums() -> Any:
    return (
        select(
            _txns.c.customer_id,
            _txns.c.currency,
            _sum(_txns.c.amount).label("total"),
            func.count().label("n"),
        )
        .group_by(_txns.c.customer_id, _txns.c.currency)
        .subquery("ledger")
    )


@cache
def _balances_match_ledger_queries() -> tuple[Any, ...]:
    ledger = _ledger_sums()
    total, n = func.coalesce(ledger.c.total, 0), func.coalesce(ledger.c.n, 0)
    on = and_(ledger.c.customer_id == _balances.c.customer_id, ledger.c.currency == _balances.c.currency)
    with_row = (
        select(
            _balances.c.customer_id,
            _balances.c.currency,
            _balances.c.balance,
            _balances.c.transaction_count,
            total.label("total"),
            n.label("n"),
        )
        .select_from(_balances.outerjoin(ledger, on))
        .where(or_(_balances.c.balance != total, _balances.c.transaction_count != n))
    )
    without_row = (
        select(
            ledger.c.customer_id,
            ledger.c.currency,
            literal(0).label("balance"),
            literal(0).label("transaction_count"),
            ledger.c.total,
            ledger.c.n,
        )
        .select_from(ledger.outerjoin(_balances, on))
        .where(_balances.c.customer_id.is_(None))
    )
    return tuple(stmt.order_by("customer_id", "currency") for stmt in (with_row, without_row))


def _balances_match_ledger(session: Session) -> Iterator[Violation]:
    for stmt in _balances_match_ledger_queries():
        for row in session.execute(stmt):
            yield Violation(
                "balance_is_sum_of_ledger",
                row.customer_id,
                f"{row.currency}: balance {_i(row.balance)} over {_i(row.transaction_count)} transactions,"
                f" ledger sums to {_i(row.total)} over {_i(row.n)}",
            )


@cache
def _running_sums_query() -> Any:
    stream = (_txns.c.customer_id, _txns.c.currency)
    walk = select(
        _txns.c.id,
        _txns.c.customer_id,
        _txns.c.currency,
        _txns.c.sequence,
        _txns.c.ending_balance,
        func.sum(_txns.c.amount)
        .over(partition_by=stream, order_by=_txns.c.sequence, rows=(None, 0))
        .label("running"),
        func.row_number().over(partition_by=stream, order_by=_txns.c.sequence).label("position"),
    ).subquery("walk")
    bad = (
        select(
            walk,
            func.count().over(partition_by=(walk.c.customer_id, walk.c.currency)).label("bad_rows"),
            func.row_number()
            .over(partition_by=(walk.c.customer_id, walk.c.currency), order_by=walk.c.sequence)
            .label("bad_rank"),
        )
        .where(or_(walk.c.running != walk.c.ending_balance, walk.c.position != walk.c.sequence))
        .subquery("bad")
    )
    stmt = select(bad).where(bad.c.bad_rank == 1).order_by(bad.c.customer_id, bad.c.currency)
    return stmt


def _running_sums(session: Session) -> Iterator[Violation]:
    for row in session.execute(_running_sums_query()):
        problems = []
        if row.position != row.sequence:
            problems.append(f"sequence {row.sequence} at position {row.position} (gap or duplicate)")
        if _i(row.running) != row.ending_balance:
            problems.append(f"ending_balance {row.ending_balance}, running sum {_i(row.running)}")
        more = f" (and {row.bad_rows - 1} later rows)" if row.bad_rows > 1 else ""
        yield Violation(
            "ending_balance_running_sum",
            row.id,
            f"{row.customer_id} {row.currency}: {'; '.join(problems)}{more}",
        )


# -- credit notes -------------------------------------------------------------------------------


def _issued(kind: str | None = None) -> Any:
    condition = _notes.c.status == CreditNoteStatus.ISSUED
    return condition if kind is None else and_(condition, _notes.c.type == kind)


def _note_sums() -> Any:
    return (
        select(
            _notes.c.invoice_id,
            func.count().label("n"),
            _sum(_when(_issued(), _notes.c.amount)).label("issued"),
            _sum(_when(_issued("pre_payment"), _notes.c.amount)).label("pre"),
            _sum(_when(_issued("post_payment"), _notes.c.amount)).label("post"),
            _sum(_when(_issued("pre_payment"), _notes.c.amount_due_reduction)).label("reduction"),
        )
        .group_by(_notes.c.invoice_id)
        .subquery("notes")
    )


@cache
def _credit_notes_within_total_query() -> Any:
    notes = _note_sums()
    issued, pre, post = (func.coalesce(c, 0) for c in (notes.c.issued, notes.c.pre, notes.c.post))
    stmt = (
        select(
            _invoices.c.id,
            _invoices.c.status,
            _invoices.c.total,
            _invoices.c.pre_payment_credit_notes_amount,
            _invoices.c.post_payment_credit_notes_amount,
            func.coalesce(notes.c.n, 0).label("n"),
            issued.label("issued"),
            pre.label("pre"),
            post.label("post"),
        )
        .select_from(_invoices.outerjoin(notes, notes.c.invoice_id == _invoices.c.id))
        .where(
            or_(
                issued > _positive_part(_invoices.c.total),
                _invoices.c.pre_payment_credit_notes_amount != pre,
                _invoices.c.post_payment_credit_notes_amount != post,
                and_(_invoices.c.status == InvoiceStatus.DRAFT, func.coalesce(notes.c.n, 0) > 0),
            )
        )
        .order_by(_invoices.c.id)
    )
    return stmt


def _credit_notes_within_total(session: Session) -> Iterator[Violation]:
    for row in session.execute(_credit_notes_within_total_query()):
        problems = []
        if _i(row.issued) > max(row.total, 0):
            problems.append(f"issued credit notes {_i(row.issued)} exceed max(total {row.total}, 0)")
        if row.pre_payment_credit_notes_amount != _i(row.pre):
            problems.append(
                f"pre_payment_credit_notes_amount {row.pre_payment_credit_notes_amount},"
                f" issued pre-payment notes {_i(row.pre)}"
            )
        if row.post_payment_credit_notes_amount != _i(row.post):
            problems.append(
                f"post_payment_credit_notes_amount {row.post_payment_credit_notes_amount},"
                f" issued post-payment notes {_i(row.post)}"
            )
        if row.status == InvoiceStatus.DRAFT and row.n:
            problems.append(f"draft with {row.n} credit notes")
        yield Violation("credit_notes_within_total", row.id, "; ".join(problems))


@cache
def _credit_note_settlement_query() -> Any:
    moved = (
        select(_txns.c.credit_note_id, _sum(_txns.c.amount).label("amount"))
        .where(_txns.c.credit_note_id.is_not(None))
        .group_by(_txns.c.credit_note_id)
        .subquery("moved")
    )
    ledger = func.coalesce(moved.c.amount, 0)
    n = _notes.c
    pre_split = and_(
        n.type == "pre_payment",
        or_(
            n.amount != n.amount_due_reduction + n.credit_amount,
            n.refund_amount != 0,
            n.out_of_band_amount != 0,
        ),
    )
    post_split = and_(
        n.type == "post_payment",
        or_(
            n.amount != n.refund_amount + n.credit_amount + n.out_of_band_amount, n.amount_due_reduction != 0
        ),
    )
    expected = case((n.status == CreditNoteStatus.ISSUED, -n.credit_amount), else_=0)
    stmt = (
        select(
            n.id,
            n.type,
            n.status,
            n.amount,
            n.amount_due_reduction,
            n.refund_amount,
            n.credit_amount,
            n.out_of_band_amount,
            ledger.label("ledger"),
        )
        .select_from(_notes.outerjoin(moved, moved.c.credit_note_id == n.id))
        .where(or_(pre_split, post_split, ledger != expected))
        .order_by(n.id)
    )
    return stmt


def _credit_note_settlement(session: Session) -> Iterator[Violation]:
    for row in session.execute(_credit_note_settlement_query()):
        split = (
            f"reduction {row.amount_due_reduction} + credit {row.credit_amount}"
            if row.type == "pre_payment"
            else f"refund {row.refund_amount} + credit {row.credit_amount}"
            f" + out of band {row.out_of_band_amount}"
        )
        wanted = -row.credit_amount if row.status == CreditNoteStatus.ISSUED else 0
        yield Violation(
            "credit_note_settlement",
            row.id,
            f"{row.status} {row.type} note of {row.amount} = {split}; its ledger rows sum to"
            f" {_i(row.ledger)}, expected {wanted}",
        )


# -- currencies and customers of credit -----------------------------------------------------------


@cache
def _no_cross_currency_credit_queries() -> tuple[Any, ...]:
    inv = _invoices.alias("inv")
    note = _notes.alias("note")
    txn_invoice = (
        select(
            _txns.c.id,
            _txns.c.customer_id,
            _txns.c.currency,
            inv.c.id.label("other"),
            inv.c.customer_id.label("other_customer"),
            inv.c.currency.label("other_currency"),
        )
        .select_from(_txns.join(inv, inv.c.id == _txns.c.invoice_id))
        .where(or_(inv.c.customer_id != _txns.c.customer_id, inv.c.currency != _txns.c.currency))
    )
    txn_note = (
        select(
            _txns.c.id,
            _txns.c.customer_id,
            _txns.c.currency,
            note.c.id.label("other"),
            note.c.customer_id.label("other_customer"),
            note.c.currency.label("other_currency"),
        )
        .select_from(_txns.join(note, note.c.id == _txns.c.credit_note_id))
        .where(
            or_(
                note.c.customer_id != _txns.c.customer_id,
                note.c.currency != _txns.c.currency,
                _txns.c.invoice_id.is_(None),
                note.c.invoice_id != _txns.c.invoice_id,
            )
        )
    )
    note_invoice = (
        select(
            _notes.c.id,
            _notes.c.customer_id,
            _notes.c.currency,
            inv.c.id.label("other"),
            inv.c.customer_id.label("other_customer"),
            inv.c.currency.label("other_currency"),
        )
        .select_from(_notes.join(inv, inv.c.id == _notes.c.invoice_id))
        .where(or_(inv.c.customer_id != _notes.c.customer_id, inv.c.currency != _notes.c.currency))
    )
    return tuple(stmt.order_by("id") for stmt in (txn_invoice, txn_note, note_invoice))


def _no_cross_currency_credit(session: Session) -> Iterator[Violation]:
    for stmt in _no_cross_currency_credit_queries():
        for row in session.execute(stmt):
            yield Violation(
                "no_cross_currency_credit",
                row.id,
                f"{row.customer_id} {row.currency} against {row.other} of {row.other_customer}"
                f" {row.other_currency}",
            )


# -- invoice amounts ------------------------------------------------------------------------------


@cache
def _invoice_amounts_query() -> Any:
    notes = _note_sums()
    reduction = func.coalesce(notes.c.reduction, 0)
    i = _invoices.c
    finalized = i.status != InvoiceStatus.DRAFT
    stmt = (
        select(
            i.id,
            i.status,
            i.total,
            i.starting_balance,
            i.ending_balance,
            i.amount_due,
            i.amount_paid,
            i.amount_remaining,
            i.paid_out_of_band,
            reduction.label("reduction"),
        )
        .select_from(_invoices.outerjoin(notes, notes.c.invoice_id == i.id))
        .where(
            or_(
                i.amount_due < 0,
                i.amount_paid < 0,
                i.amount_remaining < 0,
                i.amount_paid + i.amount_remaining != i.amount_due,
                and_(i.status == InvoiceStatus.PAID, i.amount_remaining != 0),
                and_(
                    i.status.in_((InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE)), i.amount_remaining <= 0
                ),
                and_(i.paid_out_of_band, i.status != InvoiceStatus.PAID),
                and_(i.status == InvoiceStatus.DRAFT, i.amount_due != _positive_part(i.total)),
                and_(finalized, i.ending_balance.is_(None)),
                and_(finalized, i.amount_due + reduction + i.ending_balance != i.total + i.starting_balance),
            )
        )
        .order_by(i.id)
    )
    return stmt


def _invoice_amounts(session: Session) -> Iterator[Violation]:
    for row in session.execute(_invoice_amounts_query()):
        yield Violation("invoice_amounts", row.id, "; ".join(_amount_problems(row)))


def _amount_problems(row: Any) -> list[str]:
    problems = []
    due, paid, remaining = row.amount_due, row.amount_paid, row.amount_remaining
    if min(due, paid, remaining) < 0:
        problems.append(f"negative amount (due {due}, paid {paid}, remaining {remaining})")
    if paid + remaining != due:
        problems.append(f"amount_paid {paid} + amount_remaining {remaining} != amount_due {due}")
    if row.status == InvoiceStatus.PAID and remaining:
        problems.append(f"paid with {remaining} remaining")
    if row.status in (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE) and remaining <= 0:
        problems.append(f"{row.status} with nothing remaining")
    if row.paid_out_of_band and row.status != InvoiceStatus.PAID:
        problems.append(f"paid out of band but {row.status}")
    if row.status == InvoiceStatus.DRAFT and due != max(row.total, 0):
        problems.append(f"draft asks {due}, not max(total {row.total}, 0)")
    if row.status != InvoiceStatus.DRAFT:
        if row.ending_balance is None:
            problems.append("finalized without an ending_balance")
        elif due + _i(row.reduction) + row.ending_balance != row.total + row.starting_balance:
            problems.append(
                f"amount_due {due} + pre-payment reductions {_i(row.reduction)} + ending_balance"
                f" {row.ending_balance} != total {row.total} + starting_balance {row.starting_balance}"
            )
    return problems or ["amounts inconsistent"]


@cache
def _applied_credit_query() -> Any:
    kind = _txns.c.type
    sums = (
        select(
            _txns.c.invoice_id,
            _sum(_when(kind == "applied_to_invoice", _txns.c.amount)).label("applied"),
            _sum(_when(kind == "invoice_too_small", _txns.c.amount)).label("too_small"),
            _sum(_when(kind == "unapplied_from_invoice", _txns.c.amount)).label("unapplied"),
            _sum(_when(kind == "applied_to_invoice", 1)).label("n_applied"),
            _sum(_when(kind == "invoice_too_small", 1)).label("n_too_small"),
            _sum(_when(kind == "unapplied_from_invoice", 1)).label("n_unapplied"),
        )
        .where(_txns.c.invoice_id.is_not(None))
        .group_by(_txns.c.invoice_id)
        .subquery("sums")
    )
    finalization = kind.in_(("applied_to_invoice", "invoice_too_small"))
    ranked = (
        select(
            _txns.c.invoice_id,
            (_txns.c.ending_balance - _txns.c.amount).label("before"),
            func.row_number().over(partition_by=_txns.c.invoice_id, order_by=_txns.c.sequence).label("rank"),
        )
        .where(_txns.c.invoice_id.is_not(None), finalization)
        .subquery("ranked")
    )
    first = select(ranked.c.invoice_id, ranked.c.before).where(ranked.c.rank == 1).subquery("first")
    applied, too_small, unapplied = (
        func.coalesce(c, 0) for c in (sums.c.applied, sums.c.too_small, sums.c.unapplied)
    )
    n_applied, n_too_small, n_unapplied = (
        func.coalesce(c, 0) for c in (sums.c.n_applied, sums.c.n_too_small, sums.c.n_unapplied)
    )
    i = _invoices.c
    finalized = i.status != InvoiceStatus.DRAFT
    stmt = (
        select(
            i.id,
            i.status,
            i.starting_balance,
            i.ending_balance,
            applied.label("applied"),
            too_small.label("too_small"),
            unapplied.label("unapplied"),
            n_applied.label("n_applied"),
            n_too_small.label("n_too_small"),
            n_unapplied.label("n_unapplied"),
            first.c.before,
        )
        .select_from(
            _invoices.outerjoin(sums, sums.c.invoice_id == i.id).outerjoin(first, first.c.invoice_id == i.id)
        )
        .where(
            or_(
                and_(i.status == InvoiceStatus.DRAFT, n_applied + n_too_small + n_unapplied > 0),
                and_(
                    finalized, applied + too_small != func.coalesce(i.ending_balance, 0) - i.starting_balance
                ),
                n_applied > 1,
                n_too_small > 1,
                n_unapplied > 1,
                and_(i.status == InvoiceStatus.VOID, applied + unapplied != 0),
                and_(i.status != InvoiceStatus.VOID, n_unapplied > 0),
                and_(first.c.before.is_not(None), first.c.before != i.starting_balance),
            )
        )
        .order_by(i.id)
    )
    return stmt


def _applied_credit(session: Session) -> Iterator[Violation]:
    for row in session.execute(_applied_credit_query()):
        yield Violation("applied_credit_matches_invoice", row.id, "; ".join(_applied_problems(row)))


def _applied_problems(row: Any) -> list[str]:
    applied, too_small, unapplied = _i(row.applied), _i(row.too_small), _i(row.unapplied)
    counts = (_i(row.n_applied), _i(row.n_too_small), _i(row.n_unapplied))
    problems = []
    if row.status == InvoiceStatus.DRAFT and any(counts):
        problems.append("draft with finalization transactions")
    if (
        row.status != InvoiceStatus.DRAFT
        and applied + too_small != (row.ending_balance or 0) - row.starting_balance
    ):
        problems.append(
            f"applied {applied} + too_small {too_small} != ending_balance {row.ending_balance}"
            f" - starting_balance {row.starting_balance}"
        )
    if max(counts) > 1:
        problems.append(f"{counts[0]} applied, {counts[1]} too_small, {counts[2]} unapplied transactions")
    if row.status == InvoiceStatus.VOID and applied + unapplied:
        problems.append(f"void but applied {applied} + unapplied {unapplied} != 0")
    if row.status != InvoiceStatus.VOID and counts[2]:
        problems.append(f"{row.status} but credit was unapplied ({unapplied})")
    if row.before is not None and _i(row.before) != row.starting_balance:
        problems.append(
            f"finalized against a balance of {_i(row.before)}, starting_balance {row.starting_balance}"
        )
    return problems or ["ledger and invoice disagree"]


# -- subscriptions ------------------------------------------------------------------------------


def _one_subscription_currency(session: Session) -> Iterator[Violation]:
    rows = session.execute(
        select(
            col(Subscription.customer_id),
            func.count(func.distinct(col(Subscription.currency))).label("currencies"),
        )
        .where(col(Subscription.status) == SubscriptionStatus.ACTIVE)
        .group_by(col(Subscription.customer_id))
        .having(func.count(func.distinct(col(Subscription.currency))) > 1)
        .order_by(col(Subscription.customer_id))
    )
    for row in rows:
        yield Violation(
            "one_subscription_currency",
            row.customer_id,
            f"active subscriptions in {row.currencies} currencies",
        )


def _billed_periods(session: Session) -> Iterator[Violation]:
    rows = session.execute(
        select(
            col(SubscriptionPeriod.subscription_id),
            col(SubscriptionPeriod.period_start),
            col(SubscriptionPeriod.currency),
            col(Invoice.id).label("found"),
            col(Invoice.subscription_id).label("invoice_subscription"),
            col(Invoice.currency).label("invoice_currency"),
        )
        .outerjoin(Invoice, col(Invoice.id) == col(SubscriptionPeriod.invoice_id))
        .where(
            col(SubscriptionPeriod.invoice_id).is_not(None),
            or_(
                col(Invoice.id).is_(None),
                col(Invoice.subscription_id) != col(SubscriptionPeriod.subscription_id),
                col(Invoice.currency) != col(SubscriptionPeriod.currency),
            ),
        )
        .order_by(col(SubscriptionPeriod.subscription_id), col(SubscriptionPeriod.period_start))
    )
    for row in rows:
        detail = (
            "its invoice does not exist"
            if row.found is None
            else f"billed in {row.currency} on invoice {row.found} of {row.invoice_subscription}"
            f" in {row.invoice_currency}"
        )
        yield Violation("billed_period_invoice", f"{row.subscription_id}@{row.period_start}", detail)


# -- events -------------------------------------------------------------------------------------

_events = table_of(Event)
_object_id = _events.c.data["object"]["id"].as_string()


@dataclass(frozen=True, slots=True)
class _Reported:
    """An event type and the rows whose state it reports (``reached``: the rows that must have it)."""

    kind: str
    model: Any
    reached: Any = None
    deleted_by: str | None = None
    """The deletion event that explains the row being gone."""


def _reports() -> list[_Reported]:
    invoices, notes = table_of(Invoice).c, table_of(CreditNote).c
    return [
        _Reported("customer.created", Customer),
        _Reported("customer.deleted", Customer, table_of(Customer).c.deleted.is_(True)),
        _Reported("customer.balance_transaction.created", BalanceTransaction),
        _Reported("customer.discount.created", DiscountRow, deleted_by="customer.discount.deleted"),
        _Reported("customer.subscription.created", Subscription),
        _Reported(
            "customer.subscription.deleted",
            Subscription,
            table_of(Subscription).c.status == SubscriptionStatus.CANCELED,
        ),
        _Reported("invoice.created", Invoice, deleted_by="invoice.deleted"),
        _Reported("invoice.finalized", Invoice, invoices.finalized_at.is_not(None)),
        _Reported("invoice.paid", Invoice, invoices.paid_at.is_not(None)),
        _Reported("invoice.voided", Invoice, invoices.voided_at.is_not(None)),
        _Reported("invoice.marked_uncollectible", Invoice, invoices.marked_uncollectible_at.is_not(None)),
        _Reported("invoice.overdue", Invoice, invoices.overdue_at.is_not(None)),
        _Reported("credit_note.created", CreditNote),
        _Reported("credit_note.voided", CreditNote, notes.voided_at.is_not(None)),
        _Reported("coupon.created", CouponRow),
        _Reported("tax_rate.created", TaxRateRow),
        _Reported("product.created", Product),
        _Reported("price.created", Price),
        _Reported("test_helpers.test_clock.ready", SandboxClock),
        _Reported("invoiceitem.created", InvoiceItem),
    ]


def _first_event(session: Session) -> int | None:
    return session.execute(select(func.min(_events.c.created))).scalar()


def _has_event(kind: str, object_id: Any) -> Any:
    return (
        select(literal(1))
        .select_from(_events)
        .where(_events.c.type == kind, _object_id == object_id)
        .exists()
    )


_ITEM_NAMED = {
    "postgresql": "SELECT e.id AS event, n.id AS item FROM events e,"
    " jsonb_array_elements_text(e.data -> 'object' -> 'items') AS n(id)"
    " WHERE e.type = 'invoiceitem.batch_created'",
    "sqlite": "SELECT e.id AS event, n.value AS item FROM events e, json_each(e.data, '$.object.items') AS n"
    " WHERE e.type = 'invoiceitem.batch_created'",
}
"""Every (event, item) an ``invoiceitem.batch_created`` names."""


def _effects_without_events(session: Session) -> Iterator[Violation]:
    since = _first_event(session)
    if since is None:
        return
    for report in _reports():
        table = table_of(report.model)
        if report.kind == "invoiceitem.created":
            continue  # below: items may be named by a batch event instead
        stmt = select(table.c.id).where(table.c.created >= since, ~_has_event(report.kind, table.c.id))
        if report.reached is not None:
            stmt = stmt.where(report.reached)
        for object_id in session.execute(stmt.order_by(table.c.id)).scalars():
            yield Violation("effect_without_event", str(object_id), f"no {report.kind} event")
    dialect = session.get_bind().dialect.name
    named = _ITEM_NAMED.get(dialect)
    if named is None:
        return
    items = session.execute(
        text(
            f"SELECT i.id FROM invoice_items i WHERE i.subscription_id IS NULL AND i.created >= :since"
            " AND NOT EXISTS (SELECT 1 FROM events e WHERE e.type = 'invoiceitem.created'"
            f" AND {_JSON_ID[dialect]} = i.id)"
            f" AND NOT EXISTS (SELECT 1 FROM ({named}) n WHERE n.item = i.id) ORDER BY i.id"
        ),
        {"since": since},
    ).scalars()
    for item_id in items:
        yield Violation("effect_without_event", item_id, "no invoiceitem.created or .batch_created event")


_JSON_ID = {"postgresql": "(e.data -> 'object' ->> 'id')", "sqlite": "json_extract(e.data, '$.object.id')"}
"""SQL text: the object id of event ``e``."""


def _events_without_effects(session: Session) -> Iterator[Violation]:
    for report in _reports():
        table = table_of(report.model)
        found = table.alias("found")
        stmt = (
            select(_events.c.id, _object_id.label("object_id"))
            .select_from(_events.outerjoin(found, found.c.id == _object_id))
            .where(_events.c.type == report.kind)
        )
        missing: Any = found.c.id.is_(None)
        if report.reached is not None:  # the state the event reports, on the row found
            reached = select(literal(1)).select_from(table).where(table.c.id == found.c.id, report.reached)
            missing = or_(missing, ~reached.exists())
        stmt = stmt.where(missing)
        if report.deleted_by is not None:
            stmt = stmt.where(~_has_event(report.deleted_by, _object_id))
        for row in session.execute(stmt.order_by(_events.c.id)):
            yield Violation(
                "event_without_effect", row.id, f"{report.kind} of {row.object_id}: not there in that state"
            )
    for kind, model in (("invoice.deleted", Invoice), ("customer.discount.deleted", DiscountRow)):
        table = table_of(model)
        gone = select(_events.c.id, _object_id.label("object_id")).where(
            _events.c.type == kind, select(literal(1)).where(table.c.id == _object_id).exists()
        )
        for row in session.execute(gone.order_by(_events.c.id)):
            yield Violation("event_without_effect", row.id, f"{kind} of {row.object_id}: it is still there")
    named = _ITEM_NAMED.get(session.get_bind().dialect.name)
    if named is not None:
        rows = session.execute(
            text(
                f"SELECT n.event, n.item FROM ({named}) n"
                " WHERE NOT EXISTS (SELECT 1 FROM invoice_items i WHERE i.id = n.item)"
                " ORDER BY n.event, n.item"
            )
        )
        for row in rows:
            yield Violation(
                "event_without_effect", row.event, f"invoiceitem.batch_created names {row.item}: not there"
            )


CHECKS: dict[str, Check] = {
    "item_on_one_invoice": _items_on_invoices,
    "invoice_lines_total": _invoice_totals,
    "balance_is_sum_of_ledger": _balances_match_ledger,
    "ending_balance_running_sum": _running_sums,
    "credit_notes_within_total": _credit_notes_within_total,
    "credit_note_settlement": _credit_note_settlement,
    "no_cross_currency_credit": _no_cross_currency_credit,
    "invoice_amounts": _invoice_amounts,
    "applied_credit_matches_invoice": _applied_credit,
    "one_subscription_currency": _one_subscription_currency,
    "billed_period_invoice": _billed_periods,
}
"""Check name (the ``check`` of its violations) -> the check: the books."""

EVENT_CHECKS: dict[str, Check] = {
    "effect_without_event": _effects_without_events,
    "event_without_effect": _events_without_effects,
}
"""The events against the books (every effect has its event, every event its effect)."""


def audit(session: Session, *, events: bool = True) -> list[Violation]:
    """Every violation of every check, in check order. Reads only. ``events=False``: the books
    alone (a benchmark's rows seeded by plain INSERTs, without requests, have no events)."""
    checks = {**CHECKS, **(EVENT_CHECKS if events else {})}
    return [violation for check in checks.values() for violation in check(session)]


def audit_database(*, events: bool = True) -> list[Violation]:
    """Audit the configured database on one snapshot (PostgreSQL: read-only REPEATABLE READ).

    SQLite: the audit's read transaction starts with ``BEGIN IMMEDIATE`` like every other
    (``worker.db``), so writers wait for it; it takes seconds.
    """
    from worker.db import read_session

    with read_session() as session:
        bind = session.get_bind()
        if bind.dialect.name == "postgresql":
            session.connection(
                execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
            )
        return audit(session, events=events)
