"""Invoices: generation from pending items, pricing, finalization and the lifecycle (README:
How invoice generation works, Behaviour and decisions).

Generation claims at most 250 of a customer's oldest pending items in the invoice's
currency (read with one SELECT under the customer's lock, priced, then attached with their
amounts by one UPDATE), in the same transaction that writes the invoice, prices it and
(when asked) finalizes it. If items of that currency remain, the outcome carries a
follow-up for the next part of the chain; the task publishes it after the commit.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Integer,
    String,
    bindparam,
    case,
    cast,
    column,
    func,
    insert,
    select,
    text,
    true,
    update,
)
from sqlalchemy import delete as delete_rows
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Session

from domain import invoices as lifecycle
from domain.coupons import check_redeemable
from domain.credit import apply_credit_balance
from domain.currencies import currency_info
from domain.errors import BadRequest, NotFound, NothingToInvoice, TransientError
from domain.pricing import Coupon, Line, PricedInvoice, TaxRate, price_invoice
from tasks.contracts import InvoiceAction, InvoiceCreate, InvoicePay, InvoicePendingCreate, payload_of
from tasks.ids import PREFIXES, derived_id
from worker.services import ledger
from worker.services.base import FollowUp, Outcome, Request, known_keys, lock_customers
from worker.services.coupons import redemptions
from worker.services.customers import set_default_currency
from worker.tables import (
    BalanceTransaction,
    CouponRow,
    Customer,
    CustomerTaxId,
    DiscountRow,
    IdempotencyKey,
    Invoice,
    InvoiceItem,
    OutboxMessage,
    TaxRateRow,
)

CREATE_TASK = "billing.invoices.create"
_PENDING = InvoiceItem.invoice_id.is_(None)  # type: ignore[union-attr]


_PRICED_COLUMNS = (
    InvoiceItem.id,
    InvoiceItem.amount,
    InvoiceItem.discountable,
    InvoiceItem.tax_rates,
    InvoiceItem.created,
)
"""What pricing reads of a line (and claim order needs: created, id)."""


def _oldest_pending(customer: Any, currency: Any) -> Any:
    """The 251 oldest pending items of (customer, currency), in claim order: the 251st says
    whether the chain goes on."""
    return (
        select(*_PRICED_COLUMNS)
        .where(InvoiceItem.customer_id == customer, InvoiceItem.currency == currency, _PENDING)  # type: ignore[arg-type]
        .order_by(InvoiceItem.created, InvoiceItem.id)
        .limit(lifecycle.MAX_LINES_PER_INVOICE + 1)
    )


_PENDING_LINES = _oldest_pending(bindparam("customer"), bindparam("currency"))
"""Built once: the hot path's statements are not rebuilt (and their cache keys not
recomputed) for every invoice."""


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
    return _pending_lines(request.session, customer_id, currency, subscription_first)


def _pending_lines(
    session: Session, customer_id: str, currency: str, subscription_first: str | None = None
) -> tuple[list[Any], bool]:
    stmt = _PENDING_LINES
    if subscription_first is not None:
        first = case((InvoiceItem.subscription_id == subscription_first, 0), else_=1)
        stmt = stmt.order_by(None).order_by(first, InvoiceItem.created, InvoiceItem.id)
    rows = session.execute(stmt, {"customer": customer_id, "currency": currency}).all()
    lines = rows[: lifecycle.MAX_LINES_PER_INVOICE]
    if subscription_first is not None:
        lines.sort(key=lambda row: (row.created, row.id))
    return lines, len(rows) > lifecycle.MAX_LINES_PER_INVOICE


_PAIRS = (
    func.jsonb_to_recordset(cast(bindparam("pairs", type_=String), JSONB))
    .table_valued(column("at", Integer), column("customer", String), column("currency", String))
    .render_derived(name="t", with_types=True)
)
_EACH_PAIR = _oldest_pending(_PAIRS.c.customer, _PAIRS.c.currency).lateral("i")
_PENDING_LINES_OF = (
    select(_PAIRS.c.at, *_EACH_PAIR.c)
    .select_from(_PAIRS.join(_EACH_PAIR, true()))
    .order_by(_PAIRS.c.at, _EACH_PAIR.c.created, _EACH_PAIR.c.id)
)
"""PostgreSQL: ``_oldest_pending`` of each (customer, currency) of a JSON document, joined
LATERAL: the single-pair query runs once per pair, on the pending-items index."""


def pending_lines_of(session: Session, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[Any], bool]]:
    """``pending_lines`` of many (customer, currency) pairs, in their order.

    PostgreSQL: one statement (``_PENDING_LINES_OF``). Elsewhere: one query per pair.
    """
    if session.get_bind().dialect.name != "postgresql":
        return [_pending_lines(session, customer, currency) for customer, currency in pairs]
    document = json.dumps([{"at": at, "customer": c, "currency": cur} for at, (c, cur) in enumerate(pairs)])
    found: list[list[Any]] = [[] for _ in pairs]
    for row in session.execute(_PENDING_LINES_OF, {"pairs": document}).all():  # one fetch, not one per row
        found[row.at].append(row)
    limit = lifecycle.MAX_LINES_PER_INVOICE
    return [(rows[:limit], len(rows) > limit) for rows in found]


def _tax_rates(session: Session, ids: set[str]) -> dict[str, TaxRate]:
    """The tax rates with these ids (those that exist), each read once per transaction."""
    held: dict[str, TaxRate] = session.info.setdefault("tax_rates", {})
    missing = ids - held.keys()
    if missing:
        rows = session.execute(select(TaxRateRow).where(TaxRateRow.id.in_(missing))).scalars()  # type: ignore[attr-defined]
        held.update({r.id: TaxRate(r.id, Decimal(r.percentage), r.inclusive) for r in rows})
    return {i: held[i] for i in ids if i in held}


def _as_coupon(row: CouponRow) -> Coupon:
    return Coupon(
        id=row.id,
        percent_off=Decimal(row.percent_off) if row.percent_off is not None else None,
        amount_off=row.amount_off,
        currency=row.currency,
        currency_options=row.currency_options or {},
    )


_DISCOUNT = select(DiscountRow).where(DiscountRow.customer_id == bindparam("customer"))  # type: ignore[arg-type]


def customer_discount(request: Request, customer_id: str) -> DiscountRow | None:
    # Asked by pricing and again by finalization: read once per transaction (the customer is locked).
    held = request.session.info.setdefault("discounts", {})
    if customer_id not in held:
        held[customer_id] = request.session.execute(_DISCOUNT, {"customer": customer_id}).scalar()
    row = held[customer_id]
    if row is None or (row.end is not None and row.end <= request.now):
        return None
    return row


def read_discounts(session: Session, customer_ids: Collection[str]) -> None:
    """``customer_discount`` of many customers read with one query, and their coupons with
    another: for invoices made together in one transaction."""
    held = session.info.setdefault("discounts", {})
    wanted = set(customer_ids) - held.keys()
    if not wanted:
        return
    found = {
        row.customer_id: row
        for row in session.execute(
            select(DiscountRow).where(DiscountRow.customer_id.in_(wanted))  # type: ignore[attr-defined]
        ).scalars()
    }
    held.update({customer_id: found.get(customer_id) for customer_id in wanted})
    coupons = {row.coupon_id for row in found.values()}
    if coupons:  # into the session's identity map, where ``request.get`` finds them (held: it is weak)
        session.info.setdefault("coupons", []).extend(
            session.execute(select(CouponRow).where(CouponRow.id.in_(coupons))).scalars()  # type: ignore[attr-defined]
        )


def _coupons(request: Request, customer: Customer, command: InvoiceCreate) -> list[CouponRow]:
    """The request's discounts if it names any, else the customer's discount.

    A chain is one request split for size: its coupons are redeemed by the first part only.
    """
    if command.discounts is not None:
        coupons = []
        for index, discount in enumerate(command.discounts):
            field = f"discounts[{index}].coupon"
            coupon = request.get(CouponRow, discount.coupon, resource="coupon", field=field)
            if command.part == 1:
                check_redeemable(redemptions(coupon), request.now, field=field)
                coupon.times_redeemed += 1
            coupons.append(coupon)
        return coupons
    held = customer_discount(request, customer.id)
    return [request.get(CouponRow, held.coupon_id, resource="coupon", field="discounts")] if held else []


def price(
    request: Request,
    invoice: Invoice,
    lines: Sequence[Any],
    customer: Customer,
    coupons: Sequence[CouponRow],
) -> PricedInvoice:
    """Discounts and taxes of every line and the invoice's totals, for the customer's tax
    status now (recorded on the invoice). Lines are in claim order: (created, id). The
    lines' own amounts are the caller's to store (``line_amounts``, ``write_lines``).
    """
    default_ids = list(invoice.default_tax_rates or ())
    rates = _tax_rates(
        request.session, set(default_ids) | {r for line in lines for r in line.tax_rates or ()}
    )
    for index, rate_id in enumerate(default_ids):
        if rate_id not in rates:
            raise NotFound("tax rate", rate_id, field=f"default_tax_rates[{index}]")
    priced = price_invoice(
        [
            Line(
                line.amount,
                line.discountable,
                tuple(rates[r] for r in line.tax_rates) if line.tax_rates is not None else None,
            )
            for line in lines
        ],
        currency=invoice.currency,
        coupons=[_as_coupon(c) for c in coupons],
        default_tax_rates=[rates[r] for r in default_ids],
        tax_exempt=customer.tax_exempt in ("exempt", "reverse"),
    )
    invoice.subtotal = priced.subtotal
    invoice.total_excluding_tax = priced.total_excluding_tax
    invoice.total = priced.total
    invoice.discounts = list(priced.applied_coupons)
    invoice.total_discount_amounts = [
        {"amount": d.amount, "discount": d.coupon} for d in priced.total_discount_amounts
    ]
    invoice.total_taxes = [_tax_dict(t) for t in priced.total_taxes]
    invoice.amount_due = invoice.amount_remaining = max(priced.total, 0)
    invoice.customer_tax_exempt = customer.tax_exempt
    return priced


def line_amounts(
    lines: Sequence[Any], priced: PricedInvoice, *, every: bool, invoice: str | None = None
) -> list[dict[str, Any]]:
    """Per line: its discount and tax amounts as stored. ``every``: also lines that get
    none ([] each); else those stay NULL, as freshly claimed lines are. ``invoice``: the
    invoice that claims the lines (``write_lines(claim=True)``)."""
    out = []
    for line, p in zip(lines, priced.lines, strict=True):
        row: dict[str, Any] = {"id": line.id, "invoice": invoice} if invoice else {"id": line.id}
        if every or p.discount_amounts or p.tax_amounts:
            row["discount_amounts"] = [{"amount": d.amount, "discount": d.coupon} for d in p.discount_amounts]
            row["tax_amounts"] = [_tax_dict(t) for t in p.tax_amounts]
        out.append(row)
    return out


def reprice_for_tax_status(request: Request, invoice: Invoice, customer: Customer) -> None:
    """A draft follows its customer's tax status until it is finalized (as Stripe's
    ``customer_tax_exempt``): a draft priced before the customer became exempt, or stopped
    being so, is priced again with the same lines and coupons."""
    if invoice.customer_tax_exempt == customer.tax_exempt:
        return
    lines = request.session.execute(
        select(*_PRICED_COLUMNS)
        .where(InvoiceItem.invoice_id == invoice.id)
        .order_by(InvoiceItem.created, InvoiceItem.id)
    ).all()
    coupons = [row for c in invoice.discounts or () if (row := request.session.get(CouponRow, c)) is not None]
    priced = price(request, invoice, lines, customer, coupons)
    write_lines(request.session, line_amounts(lines, priced, every=True))


_WRITE_LINES = (
    "UPDATE invoice_items SET discount_amounts = u.discount_amounts, tax_amounts = u.tax_amounts{claim}"
    " FROM jsonb_to_recordset(CAST(:lines AS jsonb))"
    " AS u(id varchar, invoice varchar, discount_amounts jsonb, tax_amounts jsonb)"
    " WHERE invoice_items.id = u.id{pending}"
)
_LINE_AMOUNTS = text(_WRITE_LINES.format(claim="", pending=""))
# The pending guard is spelt so that no index can serve it: with ``IS NULL`` the planner
# scans every pending item through the invoice_id index (it assumes 100 rows from the JSON
# document and few pending items) instead of looking up 250 by primary key, measured 15 ms
# instead of 2 at 100k pending. PostgreSQL folds ``IS NOT DISTINCT FROM NULL`` into ``IS NULL``.
_CLAIM_LINES = text(
    _WRITE_LINES.format(
        claim=", invoice_id = u.invoice", pending=" AND coalesce(invoice_items.invoice_id, '') = ''"
    )
)


def write_lines(session: Session, lines: list[dict[str, Any]], *, claim: bool = False) -> None:
    """Store lines' discount and tax amounts (``line_amounts``) in one statement; with
    ``claim``, also attach each, still pending, to its ``invoice``.

    PostgreSQL: one UPDATE … FROM jsonb_to_recordset(one JSON document), not one statement
    per line, for the lines of one invoice or of many. Elsewhere: one executemany.
    """
    if not lines:
        return
    if session.get_bind().dialect.name == "postgresql":
        result = session.execute(_CLAIM_LINES if claim else _LINE_AMOUNTS, {"lines": json.dumps(lines)})
    else:
        table: Any = InvoiceItem.__table__  # type: ignore[attr-defined]
        stmt = (
            update(table)
            .where(table.c.id == bindparam("line_id"))
            .values(discount_amounts=bindparam("d"), tax_amounts=bindparam("t"))
        )
        if claim:
            stmt = stmt.where(table.c.invoice_id.is_(None)).values(invoice_id=bindparam("invoice"))
        result = session.execute(
            stmt,
            [
                {
                    "line_id": line["id"],
                    "d": line.get("discount_amounts"),
                    "t": line.get("tax_amounts"),
                    **({"invoice": line["invoice"]} if claim else {}),
                }
                for line in lines
            ],
        )
    if claim and result.rowcount != len(lines):  # type: ignore[attr-defined]
        # every claim holds the customer's lock: this would be a change made without it
        invoices = sorted({line["invoice"] for line in lines})
        raise ConcurrentClaim(
            f"{len(lines) - result.rowcount} of {len(lines)} items read as pending were no longer"  # type: ignore[attr-defined]
            f" pending when invoice {', '.join(invoices)} claimed them"
        )


class ConcurrentClaim(TransientError):
    """Items changed under a claim: the transaction rolls back and the task retries."""


def _tax_dict(tax: Any) -> dict[str, Any]:
    return {
        "amount": tax.amount,
        "tax_rate": tax.tax_rate,
        "taxable_amount": tax.taxable_amount,
        "inclusive": tax.inclusive,
    }


_TAX_IDS = (
    select(CustomerTaxId)
    .where(CustomerTaxId.customer_id == bindparam("customer"))  # type: ignore[arg-type]
    .order_by(CustomerTaxId.created)
)


def _snapshot(tax_ids: Iterable[CustomerTaxId]) -> list[dict[str, str]]:
    return [{"type": t.type, "value": t.value} for t in tax_ids]


def finalize_reads(request: Request, customer: Customer, currency: str) -> tuple[list[dict[str, str]], Any]:
    """What finalization reads: the customer's tax ids and its balance row (locked).

    Read before the invoice changes, so that its changes reach the database in one UPDATE
    at the next flush instead of one per query in between.
    """
    tax_ids = request.session.execute(_TAX_IDS, {"customer": customer.id}).scalars()
    return _snapshot(tax_ids), ledger.lock_balance(request.session, customer.id, currency)


def finalize_reads_of(
    session: Session, pairs: Sequence[tuple[str, str]]
) -> list[tuple[list[dict[str, str]], Any]]:
    """``finalize_reads`` of many (customer, currency) pairs, with one query for the tax ids
    and one for the balances, in the pairs' order."""
    if not pairs:
        return []
    customer_ids = {customer for customer, _ in pairs}
    tax_ids: dict[str, list[CustomerTaxId]] = {customer: [] for customer in customer_ids}
    for row in session.execute(
        select(CustomerTaxId)
        .where(CustomerTaxId.customer_id.in_(customer_ids))  # type: ignore[attr-defined]
        .order_by(CustomerTaxId.created)
    ).scalars():
        tax_ids[row.customer_id].append(row)
    balances = ledger.lock_balances(session, pairs)
    return [(_snapshot(tax_ids[customer]), balances[(customer, currency)]) for customer, currency in pairs]


def finalize_invoice(
    request: Request,
    invoice: Invoice,
    customer: Customer,
    reads: tuple[list[dict[str, str]], Any] | None = None,
) -> None:
    """Number, snapshot, apply the same-currency balance, write the ledger rows."""
    opened = lifecycle.transition(invoice.id, invoice.status, "finalize")
    reprice_for_tax_status(request, invoice, customer)
    tax_ids, balance = reads or finalize_reads(request, customer, invoice.currency)
    invoice.number = lifecycle.invoice_number(customer.invoice_prefix, customer.next_invoice_sequence)
    customer.next_invoice_sequence += 1
    invoice.customer_email = customer.email
    invoice.customer_name = customer.name
    invoice.customer_phone = customer.phone
    invoice.customer_address = customer.address
    invoice.customer_shipping = customer.shipping
    invoice.customer_tax_ids = tax_ids

    info = currency_info(invoice.currency)
    credit = apply_credit_balance(invoice.total, balance.balance, info.minimum_charge if info else 0)
    common = {
        "customer_id": customer.id,
        "currency": invoice.currency,
        "now": request.now,
        "invoice_id": invoice.id,
    }
    ledger.append(
        request.session, amount=credit.applied, type="applied_to_invoice", balance=balance, **common
    )
    ledger.append(
        request.session, amount=credit.too_small, type="invoice_too_small", balance=balance, **common
    )
    invoice.starting_balance = credit.starting_balance
    invoice.ending_balance = credit.ending_balance
    invoice.amount_due = invoice.amount_remaining = credit.amount_due
    invoice.finalized_at = request.now
    invoice.status = lifecycle.settle(opened, credit.amount_due)
    if invoice.status == lifecycle.InvoiceStatus.PAID:
        invoice.paid_at = request.now
    if invoice.collection_method == "send_invoice" and invoice.due_date is None:
        invoice.due_date = lifecycle.due_date(request.now, invoice.days_until_due or 0)
    held = customer_discount(request, customer.id)
    if held and held.coupon_id in (invoice.discounts or ()):
        coupon = request.session.get(CouponRow, held.coupon_id)
        if coupon is not None and coupon.duration == "once":
            request.session.delete(held)
            request.session.info["discounts"][customer.id] = (
                None  # used up: not for later invoices of this transaction
            )


def _next_part(command: InvoiceCreate) -> FollowUp:
    part = command.part + 1
    key = f"{command.idempotency_key}:part{part}"
    payload = payload_of(command)
    payload.update(part=part, id=derived_id(PREFIXES["invoice"], key))
    return FollowUp(CREATE_TASK, payload, key)


def create(request: Request, command: InvoiceCreate) -> Outcome:
    customer = request.lock_customer(command.customer)
    currency = command.currency or customer.currency
    if prior := request.replayed():
        # Ask again for the next part only if the first run asked for it (its outbox row):
        # it may have died before publishing. Items that arrived since are not ours.
        following = _next_part(command)
        if request.session.get(OutboxMessage, following.key) is not None:
            prior.follow_ups.append(following)
        return prior
    if currency is None:
        raise BadRequest(
            f"customer {customer.id} has no default currency; name the invoice's currency", field="currency"
        )
    set_default_currency(customer, currency, field="customer")
    invoice, follow_ups = generate_invoice(request, customer, command, currency)
    outcome = request.done(invoice.id if invoice else None)
    outcome.follow_ups.extend(follow_ups)
    return outcome


def generate_invoice(
    request: Request,
    customer: Customer,
    command: InvoiceCreate,
    currency: str,
    *,
    coupons: Sequence[CouponRow] | None = None,
    billing_reason: str = "manual",
    subscription_id: str | None = None,
) -> tuple[Invoice | None, list[FollowUp]]:
    """Make one invoice of a chain under the customer's lock; the caller records the key.

    Returns the invoice (None: a later part found the backlog gone) and the follow-up for
    the next part when pending items of the currency remain. ``coupons`` replaces the
    request's or customer's discounts (a subscription's coupon); ``subscription_id``
    puts that subscription's pending lines first.
    """
    request.ensure_new(Invoice, command.id, resource="invoice", on_conflict=True)
    lines: list[Any] = []
    more = False
    if command.pending_invoice_items_behavior == "include":
        lines, more = pending_lines(request, customer.id, currency, subscription_first=subscription_id)
        if not lines:
            if command.part > 1:  # the chain's backlog is gone (another run took it): the chain ends
                return None, []
            raise NothingToInvoice(
                f"customer {customer.id} has no pending {currency} invoice items", field="customer"
            )
    reads = finalize_reads(request, customer, currency) if command.finalize else None
    invoice, claims = build_invoice(
        request, customer, command, currency, lines, reads,
        coupons=coupons, billing_reason=billing_reason, subscription_id=subscription_id,
    )  # fmt: skip
    request.session.flush()  # one INSERT of the whole invoice, finalized or not, before its ledger rows
    write_lines(request.session, claims, claim=True)
    return invoice, [_next_part(command)] if more else []


def build_invoice(
    request: Request,
    customer: Customer,
    command: InvoiceCreate,
    currency: str,
    lines: Sequence[Any],
    reads: tuple[list[dict[str, str]], Any] | None,
    *,
    coupons: Sequence[CouponRow] | None = None,
    billing_reason: str = "manual",
    subscription_id: str | None = None,
) -> tuple[Invoice, list[dict[str, Any]]]:
    """The invoice of these pending lines, priced and (if asked) finalized, added to the
    session but not yet flushed; and its lines' claims for ``write_lines(claim=True)``.

    Everything it reads is read already (``reads``: ``finalize_reads`` when finalizing),
    or once per transaction (discounts, coupons, tax rates), so that many invoices built
    one after the other reach the database together at the next flush.
    """
    invoice = Invoice(
        id=command.id,
        customer_id=customer.id,
        currency=currency,
        billing_reason=billing_reason,
        subscription_id=subscription_id,
        collection_method=command.collection_method,
        days_until_due=command.days_until_due,
        due_date=command.due_date,
        auto_advance=bool(command.auto_advance),
        description=command.description,
        footer=command.footer,
        metadata_=command.metadata,
        default_tax_rates=command.default_tax_rates,
        chain_part=command.part,
        created=request.now,
    )
    if coupons is None:
        coupons = _coupons(request, customer, command)
    priced = price(request, invoice, lines, customer, coupons)
    request.session.add(invoice)
    if command.finalize:
        finalize_invoice(request, invoice, customer, reads)
    return invoice, line_amounts(lines, priced, every=False, invoice=invoice.id)


def create_together(
    session: Session, operation: str, entries: Sequence[tuple[str, str, InvoiceCreate]], now: int
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
    chosen: list[tuple[int, Customer, str]] = []
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
    pending = pending_lines_of(session, [(customer.id, currency) for _, customer, currency in chosen])
    ready = [(at, lines_more) for at, lines_more in zip(chosen, pending, strict=True) if lines_more[0]]
    if not ready:
        return [None] * len(entries)
    read_discounts(session, {customer.id for (_, customer, _), _ in ready})
    _tax_rates(
        session,
        {rate for (index, _, _), (lines, _) in ready for rate in entries[index][2].default_tax_rates or ()}
        | {rate for _, (lines, _) in ready for line in lines for rate in line.tax_rates or ()},
    )
    finalizing = [
        (customer.id, currency) for (index, customer, currency), _ in ready if entries[index][2].finalize
    ]
    reads = dict(zip(finalizing, finalize_reads_of(session, finalizing), strict=True))

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
            outcome.follow_ups.append(_next_part(command))
        keys.append(request.key_row)  # type: ignore[arg-type]
        settled[index] = outcome
    session.flush()  # the invoices (one INSERT), then the customers' and balances' changes and ledger rows
    write_lines(session, claims, claim=True)
    session.execute(insert(IdempotencyKey.__table__), keys)  # type: ignore[attr-defined]
    return settled


def create_for_pending(request: Request, command: InvoicePendingCreate) -> Outcome:
    """One invoice chain per currency with pending items; each chain is its own task."""
    customer = request.lock_customer(command.customer)
    replay = request.replayed()
    currencies = request.session.execute(
        select(InvoiceItem.currency).where(InvoiceItem.customer_id == customer.id, _PENDING).distinct()
    ).scalars()
    base = payload_of(command)
    follow_ups = []
    for currency in sorted(currencies):
        key = f"{command.idempotency_key}:{currency}"
        payload = {
            **base,
            "currency": currency,
            "id": derived_id(PREFIXES["invoice"], key),
            "idempotency_key": key,
        }
        follow_ups.append(FollowUp(CREATE_TASK, payload, key))
    if replay:  # only what the first run asked for (its outbox rows), never new work
        replay.follow_ups.extend(
            f for f in follow_ups if request.session.get(OutboxMessage, f.key) is not None
        )
        return replay
    outcome = request.done(None)
    outcome.follow_ups.extend(follow_ups)
    return outcome


def lock_invoice(request: Request, invoice_id: str) -> tuple[Invoice, Customer]:
    """Lock the invoice's customer, then read the invoice as it is under that lock."""
    customer_id = request.session.execute(
        select(Invoice.customer_id).where(Invoice.id == invoice_id)
    ).scalar()  # type: ignore[arg-type]
    if customer_id is None:
        raise NotFound("invoice", invoice_id, field="invoice")
    customer = request.lock_customer(customer_id, field="invoice")
    invoice = request.session.execute(
        select(Invoice).where(Invoice.id == invoice_id).execution_options(populate_existing=True)  # type: ignore[arg-type]
    ).scalar_one()
    return invoice, customer


def finalize(request: Request, command: InvoiceAction) -> Outcome:
    invoice, customer = lock_invoice(request, command.invoice)
    if prior := request.replayed():
        return prior
    finalize_invoice(request, invoice, customer)
    return request.done(invoice.id)


def void(request: Request, command: InvoiceAction) -> Outcome:
    """Void gives back the balance the invoice consumed (``unapplied_from_invoice``)."""
    invoice, customer = lock_invoice(request, command.invoice)
    if prior := request.replayed():
        return prior
    voided = lifecycle.transition(invoice.id, invoice.status, "void")
    applied = request.session.execute(
        select(func.coalesce(func.sum(BalanceTransaction.amount), 0)).where(
            BalanceTransaction.invoice_id == invoice.id,  # type: ignore[arg-type]
            BalanceTransaction.type.in_(("applied_to_invoice", "unapplied_from_invoice")),  # type: ignore[attr-defined]
        )
    ).scalar_one()
    ledger.append(
        request.session,
        customer_id=customer.id,
        currency=invoice.currency,
        amount=-applied,
        type="unapplied_from_invoice",
        now=request.now,
        invoice_id=invoice.id,
    )
    invoice.status = voided
    invoice.voided_at = request.now
    return request.done(invoice.id)


def pay(request: Request, command: InvoicePay) -> Outcome:
    """Paid out of band: the whole remaining amount is recorded as paid."""
    invoice, _ = lock_invoice(request, command.invoice)
    if prior := request.replayed():
        return prior
    invoice.status = lifecycle.transition(invoice.id, invoice.status, "pay")
    invoice.amount_paid += invoice.amount_remaining
    invoice.amount_remaining = 0
    invoice.paid_out_of_band = True
    invoice.paid_at = request.now
    return request.done(invoice.id)


def mark_uncollectible(request: Request, command: InvoiceAction) -> Outcome:
    """Decision: the balance applied at finalization stays consumed (only void gives it back)."""
    invoice, _ = lock_invoice(request, command.invoice)
    if prior := request.replayed():
        return prior
    invoice.status = lifecycle.transition(invoice.id, invoice.status, "mark_uncollectible")
    invoice.marked_uncollectible_at = request.now
    return request.done(invoice.id)


def delete(request: Request, command: InvoiceAction) -> Outcome:
    """Only drafts can be deleted; their items go back to pending (Decision).

    The first run removes the invoice, so a redelivery replays before looking it up.
    """
    if prior := request.replayed():
        return prior
    try:
        invoice, _ = lock_invoice(request, command.invoice)
    except NotFound:
        if prior := request.replayed():  # a concurrent first run deleted it and committed
            return prior
        raise
    if prior := request.replayed():
        return prior
    lifecycle.check_deletable(invoice.id, invoice.status)
    request.session.execute(
        update(InvoiceItem)
        .where(InvoiceItem.invoice_id == invoice.id)  # type: ignore[arg-type]
        .values(invoice_id=None, discount_amounts=None, tax_amounts=None)
        .execution_options(synchronize_session=False)
    )
    request.session.execute(delete_rows(Invoice).where(Invoice.id == invoice.id))  # type: ignore[arg-type]
    return request.done(invoice.id)
