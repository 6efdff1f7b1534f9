"""Read side: stored rows as Stripe-shaped dicts (retrieve, list, search).

Pure reads on a caller's ``Session`` (``worker.db.read_session()``); nothing here writes.
There is one serializer per object type, and each object type has a renderer that turns a
page of rows into dicts. Renderers load what an object embeds (a customer's tax ids,
balances and discount; an invoice's lines) for the whole page with one query per kind,
so the number of queries does not grow with the page size.

Lists follow Stripe's shape (``{"object": "list", "data", "has_more", "url"}``) and order:
newest first, by (created, id) descending, with ``starting_after`` (the last object seen:
the next, older page) or ``ending_before`` (the first object seen: the page just newer) as
the cursor, and ``limit`` 1-100. Ids made from an idempotency key are not time-ordered, so
id alone would not do. Pending invoice items are read through the partial index
``ix_invoice_items_pending`` (scanned backwards).

Balances keep the ledger's sign (negative = credit) everywhere except
``invoice_credit_balance``, which goes through ``domain.credit.credit_available``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import and_, bindparam, func, tuple_, type_coerce
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select as core_select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import aliased
from sqlmodel import Session, SQLModel, col, select

from domain.credit import credit_available
from domain.credit_notes import CreditNoteStatus, note_amounts, pre_and_post_payment
from domain.errors import BadRequest, NotFound, error_type
from domain.invoices import InvoiceStatus, automatically_finalizes_at, invoice_period, subtotal_excluding_tax
from domain.money import check_currency
from domain.pricing import DiscountAmount, TaxAmount
from domain.subscriptions import SubscriptionStatus
from tasks.event_types import EVENT_TYPES, matching
from tasks.ids import object_type
from worker import clock
from worker.tables import (
    BalanceTransaction,
    CouponRow,
    CreditNote,
    Customer,
    CustomerBalance,
    CustomerTaxId,
    DiscountRow,
    Document,
    Event,
    FailureStatus,
    Invoice,
    InvoiceItem,
    Price,
    Product,
    SandboxClock,
    Subscription,
    SubscriptionItem,
    SubscriptionPeriod,
    TaskFailure,
    TaxRateRow,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)

MAX_LIMIT = 100
API_VERSION = "2024-06-20"
"""The Stripe API version whose object shapes the views follow (events name it)."""
FINALIZE_TASK = "billing.invoices.finalize"

EXPANDABLE: dict[str, frozenset[str]] = {"customer": frozenset({"invoice_credit_balance"})}
"""Fields left out unless named in ``expand``, per object type."""

INVOICE_STATUSES = frozenset(InvoiceStatus)
SUBSCRIPTION_STATUSES = frozenset(SubscriptionStatus)
CREDIT_NOTE_STATUSES = frozenset(CreditNoteStatus)


@dataclass(frozen=True, slots=True)
class _View:
    session: Session
    expand: frozenset[str]
    now: int


Renderer = Callable[[_View, Sequence[Any]], list[dict[str, Any]]]


def _period(start: int | None, end: int | None) -> dict[str, int | None] | None:
    return None if start is None and end is None else {"start": start, "end": end}


def _list_of(data: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": data, "total_count": len(data), "has_more": False}


def _grouped(rows: Iterable[Any], key: str) -> defaultdict[str, list[Any]]:
    groups: defaultdict[str, list[Any]] = defaultdict(list)
    for row in rows:
        groups[getattr(row, key)].append(row)
    return groups


# Serializers


def _tax_id(row: CustomerTaxId) -> dict[str, Any]:
    return {"object": "tax_id", "id": row.id, "type": row.type, "value": row.value}


def _coupon(row: CouponRow, now: int) -> dict[str, Any]:
    expired = row.redeem_by is not None and now > row.redeem_by
    used_up = row.max_redemptions is not None and row.times_redeemed >= row.max_redemptions
    return {
        "object": "coupon",
        "id": row.id,
        "name": row.name,
        "percent_off": row.percent_off,
        "amount_off": row.amount_off,
        "currency": row.currency,
        "currency_options": {
            currency: _currency_option(option) for currency, option in (row.currency_options or {}).items()
        },
        "duration": row.duration,
        "duration_in_months": row.duration_in_months,
        "max_redemptions": row.max_redemptions,
        "times_redeemed": row.times_redeemed,
        "redeem_by": row.redeem_by,
        "valid": not (expired or used_up),
        "metadata": row.metadata_ or {},
        "created": row.created,
    }


def _currency_option(stored: object) -> object:
    """A coupon's option in one currency as Stripe shows it. Stored as the amount alone; a
    JSON column is not checked when read, so a value stored in Stripe's shape passes as is."""
    return stored if isinstance(stored, dict) else {"amount_off": stored}


def _discount(row: DiscountRow, coupon: CouponRow, now: int) -> dict[str, Any]:
    return {
        "object": "discount",
        "id": row.id,
        "coupon": _coupon(coupon, now),
        "customer": row.customer_id,
        "start": row.start,
        "end": row.end,
    }


def _customer(
    row: Customer,
    *,
    tax_ids: list[CustomerTaxId],
    balances: dict[str, int],
    discount: dict[str, Any] | None,
    expand: frozenset[str],
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "object": "customer",
        "id": row.id,
        "email": row.email,
        "name": row.name,
        "phone": row.phone,
        "description": row.description,
        "metadata": row.metadata_ or {},
        "address": row.address,
        "shipping": row.shipping,
        "preferred_locales": row.preferred_locales or [],
        "tax_exempt": row.tax_exempt,
        "currency": row.currency,
        "invoice_prefix": row.invoice_prefix,
        "next_invoice_sequence": row.next_invoice_sequence,
        "invoice_settings": {"default_payment_method": row.default_payment_method},
        "discount": discount,
        "balance": balances.get(row.currency, 0) if row.currency else 0,
        "tax_ids": {"object": "list", "data": [_tax_id(t) for t in tax_ids]},
        "created": row.created,
    }
    if "invoice_credit_balance" in expand:
        data["invoice_credit_balance"] = {
            currency: credit_available(balance) for currency, balance in balances.items() if balance
        }
    if row.test_clock_id is not None:
        data["test_clock"] = row.test_clock_id
    if row.deleted:
        data["deleted"] = True
    return data


def _line(item: InvoiceItem) -> dict[str, Any]:
    return {
        "object": "line_item",
        "id": item.id,
        "invoice_item": item.id,
        "amount": item.amount,
        "currency": item.currency,
        "description": item.description,
        "discountable": item.discountable,
        "quantity": item.quantity,
        "unit_amount": item.unit_amount,
        "period": _period(item.period_start, item.period_end),
        "metadata": item.metadata_ or {},
        "discount_amounts": item.discount_amounts or [],
        "tax_amounts": item.tax_amounts or [],
        "tax_rates": item.tax_rates or [],
    }


def _document_link(object_id: str, rendered: set[str]) -> str | None:
    """Where an object's PDF is fetched, once the document task has made it (else null)."""
    return f"billing pdf {object_id}" if object_id in rendered else None


def _rendered(session: Session, rows: Sequence[Any]) -> set[str]:
    """The ids of ``rows`` that have a stored document: one query per page."""
    ids = [row.id for row in rows]
    return set(session.exec(select(Document.object_id).where(col(Document.object_id).in_(ids))))


@dataclass(frozen=True, slots=True)
class InvoiceContext:
    """What an invoice shows that its row does not hold, read for a whole page at once
    (``_invoice_contexts``): its customer's test clock, the period a cycle invoice looks back
    on, and the error of the last failed finalization of a draft."""

    test_clock: str | None = None
    previous_period: tuple[int, int] | None = None
    last_finalization_error: dict[str, Any] | None = None
    invoice_pdf: str | None = None
    """Where its PDF is fetched, once the document task has made it."""


def invoice_object(
    row: Invoice, lines: list[InvoiceItem], context: InvoiceContext, total_count: int | None = None
) -> dict[str, Any]:
    """An invoice as Stripe shows it: stored (``get_object``: ``lines`` its first lines, of
    ``total_count``) or composed in memory (a preview: every line it would claim)."""
    period_start, period_end = invoice_period(row.created, context.previous_period)
    discounts = row.total_discount_amounts or []
    return {
        "object": "invoice",
        "id": row.id,
        "customer": row.customer_id,
        "currency": row.currency,
        "status": row.status,
        "number": row.number,
        "billing_reason": row.billing_reason,
        "subscription": row.subscription_id,
        "collection_method": row.collection_method,
        "days_until_due": row.days_until_due,
        "due_date": row.due_date,
        "overdue": row.status == InvoiceStatus.OPEN and row.overdue_at is not None,
        "overdue_at": row.overdue_at,
        "auto_advance": row.auto_advance,
        "description": row.description,
        "footer": row.footer,
        "metadata": row.metadata_ or {},
        "default_tax_rates": row.default_tax_rates or [],
        "discounts": row.discounts or [],
        "subtotal": row.subtotal,
        "total_discount_amounts": row.total_discount_amounts or [],
        "total_taxes": row.total_taxes or [],
        "subtotal_excluding_tax": subtotal_excluding_tax(
            row.total_excluding_tax, (d["amount"] for d in discounts)
        ),
        "total_excluding_tax": row.total_excluding_tax,
        "total": row.total,
        "starting_balance": row.starting_balance,
        "ending_balance": row.ending_balance,
        "amount_due": row.amount_due,
        "amount_paid": row.amount_paid,
        "amount_remaining": row.amount_remaining,
        "pre_payment_credit_notes_amount": row.pre_payment_credit_notes_amount,
        "post_payment_credit_notes_amount": row.post_payment_credit_notes_amount,
        "paid": row.status == InvoiceStatus.PAID,
        "paid_out_of_band": row.paid_out_of_band,
        "customer_email": row.customer_email,
        "customer_name": row.customer_name,
        "customer_phone": row.customer_phone,
        "customer_address": row.customer_address,
        "customer_shipping": row.customer_shipping,
        "customer_tax_exempt": row.customer_tax_exempt,
        "customer_tax_ids": row.customer_tax_ids or [],
        "created": row.created,
        "period_start": period_start,
        "period_end": period_end,
        "effective_at": row.finalized_at,
        "automatically_finalizes_at": automatically_finalizes_at(row.status, row.auto_advance, row.created),
        "test_clock": context.test_clock,
        "last_finalization_error": context.last_finalization_error,
        "status_transitions": {
            "finalized_at": row.finalized_at,
            "paid_at": row.paid_at,
            "voided_at": row.voided_at,
            "marked_uncollectible_at": row.marked_uncollectible_at,
        },
        "lines": {
            "object": "list",
            "data": [_line(item) for item in lines],
            "total_count": len(lines) if total_count is None else total_count,
            "has_more": total_count is not None and total_count > len(lines),
            "url": "/v1/invoices/upcoming/lines" if total_count is None else f"/v1/invoices/{row.id}/lines",
        },
        "invoice_pdf": context.invoice_pdf,
    }


def _invoice_item(row: InvoiceItem) -> dict[str, Any]:
    return {
        "object": "invoiceitem",
        "id": row.id,
        "customer": row.customer_id,
        "currency": row.currency,
        "amount": row.amount,
        "unit_amount": row.unit_amount,
        "quantity": row.quantity,
        "description": row.description,
        "discountable": row.discountable,
        "period": _period(row.period_start, row.period_end),
        "metadata": row.metadata_ or {},
        "tax_rates": row.tax_rates or [],
        "invoice": row.invoice_id,
        "subscription": row.subscription_id,
        "date": row.created,
        "created": row.created,
    }


def invoice_item_of_values(values: dict[str, Any]) -> dict[str, Any]:
    """A new invoice item as ``billing get`` prints it, from the column values it is inserted
    with (ingestion writes its rows without the ORM): pending, of no subscription."""
    row = SimpleNamespace(**values, metadata_=values["metadata"], invoice_id=None, subscription_id=None)
    return _invoice_item(cast(InvoiceItem, row))


def _credit_note(row: CreditNote, invoice: Invoice | None, rendered: set[str]) -> dict[str, Any]:
    amounts = note_amounts(
        row.amount,
        invoice.total if invoice else 0,
        [DiscountAmount(d["discount"], d["amount"]) for d in (invoice.total_discount_amounts or [])]
        if invoice
        else [],
        [
            TaxAmount(t["tax_rate"], t["amount"], t["taxable_amount"], t["inclusive"])
            for t in (invoice.total_taxes or [])
        ]
        if invoice
        else [],
    )
    pre_payment, post_payment = pre_and_post_payment(row.amount, row.amount_due_reduction)
    return {
        "object": "credit_note",
        "id": row.id,
        "number": row.number,
        "invoice": row.invoice_id,
        "customer": row.customer_id,
        "currency": row.currency,
        "status": row.status,
        "type": row.type,
        "amount": row.amount,
        "reason": row.reason,
        "memo": row.memo,
        "refund_amount": row.refund_amount,
        "credit_amount": row.credit_amount,
        "out_of_band_amount": row.out_of_band_amount,
        "amount_due_reduction": row.amount_due_reduction,
        "subtotal": amounts.subtotal,
        "subtotal_excluding_tax": amounts.subtotal_excluding_tax,
        "total": amounts.total,
        "total_excluding_tax": amounts.total_excluding_tax,
        "discount_amount": amounts.discount_amount,
        "discount_amounts": [{"amount": d.amount, "discount": d.coupon} for d in amounts.discount_amounts],
        "total_taxes": [
            {
                "amount": t.amount,
                "tax_rate": t.tax_rate,
                "taxable_amount": t.taxable_amount,
                "inclusive": t.inclusive,
            }
            for t in amounts.total_taxes
        ],
        "pre_payment_amount": pre_payment,
        "post_payment_amount": post_payment,
        "effective_at": row.created,
        "lines": _list_of(row.lines or []),
        "customer_balance_transaction": row.customer_balance_transaction,
        "metadata": row.metadata_ or {},
        "created": row.created,
        "voided_at": row.voided_at,
        "pdf": _document_link(row.id, rendered),
    }


def _balance_transaction(row: BalanceTransaction) -> dict[str, Any]:
    return {
        "object": "customer_balance_transaction",
        "id": row.id,
        "customer": row.customer_id,
        "currency": row.currency,
        "amount": row.amount,
        "ending_balance": row.ending_balance,
        "type": row.type,
        "invoice": row.invoice_id,
        "credit_note": row.credit_note_id,
        "description": row.description,
        "metadata": row.metadata_ or {},
        "created": row.created,
    }


def _tax_rate(row: TaxRateRow) -> dict[str, Any]:
    return {
        "object": "tax_rate",
        "id": row.id,
        "display_name": row.display_name,
        "percentage": row.percentage,
        "inclusive": row.inclusive,
        "active": row.active,
        "country": row.country,
        "jurisdiction": row.jurisdiction,
        "description": row.description,
        "metadata": row.metadata_ or {},
        "created": row.created,
    }


def _product(row: Product) -> dict[str, Any]:
    return {
        "object": "product",
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "active": row.active,
        "metadata": row.metadata_ or {},
        "created": row.created,
    }


def _price(row: Price) -> dict[str, Any]:
    recurring = None
    if row.recurring_interval is not None:
        recurring = {"interval": row.recurring_interval, "interval_count": row.recurring_interval_count}
    return {
        "object": "price",
        "id": row.id,
        "product": row.product_id,
        "currency": row.currency,
        "unit_amount": row.unit_amount,
        "currency_options": {
            currency: {"unit_amount": amount} for currency, amount in (row.currency_options or {}).items()
        },
        "recurring": recurring,
        "type": "recurring" if recurring else "one_time",
        "nickname": row.nickname,
        "active": row.active,
        "metadata": row.metadata_ or {},
        "created": row.created,
    }


def _test_clock(row: SandboxClock) -> dict[str, Any]:
    return {
        "object": "test_helpers.test_clock",
        "id": row.id,
        "name": row.name,
        "frozen_time": row.frozen_time,
        "status": "ready",
        "created": row.created,
    }


def task_failure_object(row: TaskFailure) -> dict[str, Any]:
    return {
        "object": "task_failure",
        "id": row.id,
        "task_id": row.task_id,
        "task_name": row.task_name,
        "payload": row.payload or {},
        "error": {
            "type": error_type(row.error_type),
            "code": row.error_code,
            "field": row.error_field,
            "message": row.error_message,
            "class": row.error_type,
        },
        "retryable": row.retryable,
        "attempts": row.attempts,
        "first_seen": row.first_seen,
        "last_seen": row.last_seen,
    }


def _event(row: Event) -> dict[str, Any]:
    return {
        "object": "event",
        "id": row.id,
        "type": row.type,
        "api_version": API_VERSION,
        "created": row.created,
        "data": row.data,
        "livemode": False,
        "request": {"id": row.request_id, "idempotency_key": row.idempotency_key},
    }


# Renderers: a page of rows -> dicts, embedded objects loaded once per page


def _webhook_endpoint(row: WebhookEndpoint) -> dict[str, Any]:
    """Stripe's ``webhook_endpoint``, without its ``secret`` (shown only when it is made), plus
    ``disabled_reason`` (ours: why the worker disabled it)."""
    if row.deleted:
        return {"id": row.id, "object": "webhook_endpoint", "deleted": True}
    return {
        "object": "webhook_endpoint",
        "id": row.id,
        "url": row.url,
        "enabled_events": list(row.enabled_events),
        "status": row.status,
        "disabled_reason": row.disabled_reason,
        "failing_since": row.failing_since,
        "description": row.description,
        "metadata": row.metadata_ or {},
        "api_version": None,
        "application": None,
        "livemode": False,
        "created": row.created,
    }


def _each(serialize: Callable[[Any], dict[str, Any]]) -> Renderer:
    return lambda _view, rows: [serialize(row) for row in rows]


def _render_coupons(view: _View, rows: Sequence[CouponRow]) -> list[dict[str, Any]]:
    return [_coupon(row, view.now) for row in rows]


def _render_discounts(view: _View, rows: Sequence[DiscountRow]) -> list[dict[str, Any]]:
    coupon_ids = {row.coupon_id for row in rows}
    coupons = {c.id: c for c in view.session.exec(select(CouponRow).where(col(CouponRow.id).in_(coupon_ids)))}
    return [_discount(row, coupons[row.coupon_id], view.now) for row in rows]


def _render_customers(view: _View, rows: Sequence[Customer]) -> list[dict[str, Any]]:
    ids = [row.id for row in rows]
    session = view.session
    tax_ids = _grouped(
        session.exec(
            select(CustomerTaxId)
            .where(col(CustomerTaxId.customer_id).in_(ids))
            .order_by(col(CustomerTaxId.created), col(CustomerTaxId.id))
        ),
        "customer_id",
    )
    balances = _grouped(
        session.exec(
            select(CustomerBalance)
            .where(col(CustomerBalance.customer_id).in_(ids))
            .order_by(col(CustomerBalance.currency))
        ),
        "customer_id",
    )
    discounts = {
        discount.customer_id: _discount(discount, coupon, view.now)
        for discount, coupon in session.exec(
            select(DiscountRow, CouponRow)
            .join(CouponRow, col(DiscountRow.coupon_id) == col(CouponRow.id))
            .where(col(DiscountRow.customer_id).in_(ids))
        )
        if discount.end is None or discount.end > view.now
    }
    return [
        _customer(
            row,
            tax_ids=tax_ids[row.id],
            balances={b.currency: b.balance for b in balances[row.id]},
            discount=discounts.get(row.id),
            expand=view.expand,
        )
        for row in rows
    ]


def _invoice_contexts(session: Session, rows: Sequence[Invoice]) -> dict[str, InvoiceContext]:
    """``InvoiceContext`` of a page of invoices: at most one query per kind of fact."""
    clocks = dict(
        session.execute(
            select(col(Customer.id), col(Customer.test_clock_id)).where(
                col(Customer.id).in_({row.customer_id for row in rows}),
                col(Customer.test_clock_id).is_not(None),
            )
        ).all()
    )
    previous: dict[str, tuple[int, int]] = {}
    cycles = [row.id for row in rows if row.billing_reason == "subscription_cycle"]
    if cycles:
        billed, before = aliased(SubscriptionPeriod), aliased(SubscriptionPeriod)
        for invoice_id, start, end in session.execute(
            select(col(billed.invoice_id), col(before.period_start), col(before.period_end))
            .join(
                before,
                and_(
                    col(before.subscription_id) == col(billed.subscription_id),
                    col(before.period_end) == col(billed.period_start),
                ),
            )
            .where(col(billed.invoice_id).in_(cycles))
        ).all():
            previous[invoice_id] = (start, end)
    errors: dict[str, dict[str, Any]] = {}
    drafts = {row.id for row in rows if row.status == InvoiceStatus.DRAFT}
    if drafts:
        for failure in session.exec(
            select(TaskFailure)
            .where(col(TaskFailure.task_name) == FINALIZE_TASK, col(TaskFailure.status) == FailureStatus.OPEN)
            .order_by(col(TaskFailure.last_seen), col(TaskFailure.id))
        ):
            invoice_id = (failure.payload or {}).get("invoice")
            if invoice_id in drafts:  # the latest failure wins
                errors[invoice_id] = finalization_error(failure)
    rendered = _rendered(session, rows)
    return {
        row.id: InvoiceContext(
            clocks.get(row.customer_id),
            previous.get(row.id),
            errors.get(row.id),
            _document_link(row.id, rendered),
        )
        for row in rows
    }


def finalization_error(failure: TaskFailure) -> dict[str, Any]:
    """A failed finalization as Stripe's error object: a refused request (a typed billing
    error, which has a code) is an ``invalid_request_error``, anything else an ``api_error``."""
    return {
        "type": "invalid_request_error" if failure.error_code else "api_error",
        "code": failure.error_code,
        "message": failure.error_message,
        "param": failure.error_field,
    }


LINES_SHOWN = 10
"""Lines an invoice embeds, the first in claim order, as Stripe's invoice holds "the total count
of line items and the first handful of those items"; ``billing list lines --invoice in_…`` pages
through all of them (Stripe's ``GET /v1/invoices/:id/lines``). Events carry the same object, so
a 250-line invoice does not weigh 250 lines in every event and webhook body."""


def _first_lines_query() -> Any:
    """One statement for every page (built once: building it costs more than running it).
    Lines are selected as plain rows labelled with the model's attribute names (``metadata_``),
    read as ``InvoiceItem`` objects are, without the ORM's per-object work: they are only
    rendered."""
    columns = [prop.columns[0].label(prop.key) for prop in sa_inspect(InvoiceItem).column_attrs]
    claim_order, invoice = (col(InvoiceItem.created), col(InvoiceItem.id)), col(InvoiceItem.invoice_id)
    ranked = (
        core_select(
            *columns,
            func.row_number().over(partition_by=invoice, order_by=claim_order).label("_n"),
            func.count().over(partition_by=invoice).label("_count"),
        )
        .where(invoice.in_(bindparam("invoices", expanding=True)))
        .subquery()
    )
    return (
        core_select(ranked)
        .where(ranked.c._n <= bindparam("shown"))
        .order_by(ranked.c.invoice_id, ranked.c._n)
    )


_FIRST_LINES = _first_lines_query()


def first_lines(
    session: Session, invoice_ids: Sequence[str], *, shown: int = LINES_SHOWN
) -> tuple[defaultdict[str, list[InvoiceItem]], dict[str, int]]:
    """The first ``shown`` lines of each invoice in claim order (created, id), and how many
    each has: one query (window functions) whatever the page size."""
    lines: defaultdict[str, list[InvoiceItem]] = defaultdict(list)
    counts: dict[str, int] = {}
    for row in session.execute(_FIRST_LINES, {"invoices": list(invoice_ids), "shown": shown}):
        lines[row.invoice_id].append(cast(InvoiceItem, row))
        counts[row.invoice_id] = row._count
    return lines, counts


def _render_invoices(view: _View, rows: Sequence[Invoice]) -> list[dict[str, Any]]:
    contexts = _invoice_contexts(view.session, rows)
    lines, counts = first_lines(view.session, [row.id for row in rows])
    return [invoice_object(row, lines[row.id], contexts[row.id], counts.get(row.id, 0)) for row in rows]


def _render_credit_notes(view: _View, rows: Sequence[CreditNote]) -> list[dict[str, Any]]:
    invoices = {
        row.id: row
        for row in view.session.exec(select(Invoice).where(col(Invoice.id).in_({r.invoice_id for r in rows})))
    }
    rendered = _rendered(view.session, rows)
    return [_credit_note(row, invoices.get(row.invoice_id), rendered) for row in rows]


def _render_subscriptions(view: _View, rows: Sequence[Subscription]) -> list[dict[str, Any]]:
    ids = [row.id for row in rows]
    items = _grouped(
        view.session.exec(
            select(SubscriptionItem)
            .where(col(SubscriptionItem.subscription_id).in_(ids))
            .order_by(col(SubscriptionItem.created), col(SubscriptionItem.id))
        ),
        "subscription_id",
    )
    price_ids = {item.price_id for group in items.values() for item in group}
    prices = {p.id: _price(p) for p in view.session.exec(select(Price).where(col(Price.id).in_(price_ids)))}
    latest: dict[str, str | None] = {}
    for period in view.session.exec(
        select(SubscriptionPeriod)
        .where(col(SubscriptionPeriod.subscription_id).in_(ids))
        .order_by(col(SubscriptionPeriod.period_start))
    ):
        latest[period.subscription_id] = period.invoice_id
    coupon_ids = {row.coupon_id for row in rows if row.coupon_id}
    coupons = {c.id: c for c in view.session.exec(select(CouponRow).where(col(CouponRow.id).in_(coupon_ids)))}
    return [
        {
            "object": "subscription",
            "id": row.id,
            "customer": row.customer_id,
            "currency": row.currency,
            "pending_currency": row.pending_currency,
            "status": row.status,
            "items": _list_of(
                [
                    {
                        "object": "subscription_item",
                        "id": item.id,
                        "price": prices[item.price_id],
                        "quantity": item.quantity,
                    }
                    for item in items[row.id]
                ]
            ),
            "billing_cycle_anchor": row.billing_cycle_anchor,
            "current_period_start": row.current_period_start,
            "current_period_end": row.current_period_end,
            "collection_method": row.collection_method,
            "days_until_due": row.days_until_due,
            "auto_advance": row.auto_advance,
            "discount": None
            if row.coupon_id is None
            else {
                "object": "discount",
                "coupon": _coupon(coupons[row.coupon_id], view.now),
                "subscription": row.id,
                "start": row.discount_start,
                "end": row.discount_end,
            },
            "cancel_at_period_end": row.cancel_at_period_end,
            "canceled_at": row.canceled_at,
            "ended_at": row.ended_at,
            "latest_invoice": latest.get(row.id),
            "metadata": row.metadata_ or {},
            "created": row.created,
        }
        for row in rows
    ]


@dataclass(frozen=True, slots=True)
class _Kind:
    table: type[SQLModel]
    name: str
    """Stripe's ``object`` value, used in NotFound messages."""
    render: Renderer


OBJECTS: dict[str, _Kind] = {
    "customer": _Kind(Customer, "customer", _render_customers),
    "invoice": _Kind(Invoice, "invoice", _render_invoices),
    "invoice_item": _Kind(InvoiceItem, "invoiceitem", _each(_invoice_item)),
    "line_item": _Kind(InvoiceItem, "line_item", _each(_line)),
    "credit_note": _Kind(CreditNote, "credit_note", _render_credit_notes),
    "customer_balance_transaction": _Kind(
        BalanceTransaction, "customer_balance_transaction", _each(_balance_transaction)
    ),
    "coupon": _Kind(CouponRow, "coupon", _render_coupons),
    "discount": _Kind(DiscountRow, "discount", _render_discounts),
    "tax_rate": _Kind(TaxRateRow, "tax_rate", _each(_tax_rate)),
    "tax_id": _Kind(CustomerTaxId, "tax_id", _each(_tax_id)),
    "task_failure": _Kind(TaskFailure, "task_failure", _each(task_failure_object)),
    "product": _Kind(Product, "product", _each(_product)),
    "price": _Kind(Price, "price", _each(_price)),
    "subscription": _Kind(Subscription, "subscription", _render_subscriptions),
    "test_clock": _Kind(SandboxClock, "test_helpers.test_clock", _each(_test_clock)),
    "event": _Kind(Event, "event", _each(_event)),
    "webhook_endpoint": _Kind(WebhookEndpoint, "webhook_endpoint", _each(_webhook_endpoint)),
}
"""Object type (``tasks.ids.object_type`` names) -> table, Stripe name and renderer."""


@dataclass(frozen=True, slots=True)
class _Listing:
    kind: str
    filters: frozenset[str] = frozenset()
    statuses: frozenset[str] = frozenset()
    per_invoice: bool = False
    """Listed for one invoice (``invoice`` required), oldest first: an invoice's lines in claim
    order, as the invoice shows its first ones (``LINES_SHOWN``)."""


LISTINGS: dict[str, _Listing] = {
    "customers": _Listing("customer"),
    "invoices": _Listing(
        "invoice", frozenset({"customer", "currency", "status", "overdue", "subscription"}), INVOICE_STATUSES
    ),
    "invoice_items": _Listing("invoice_item", frozenset({"customer", "currency", "pending", "invoice"})),
    "lines": _Listing("line_item", frozenset({"invoice"}), per_invoice=True),
    "credit_notes": _Listing(
        "credit_note", frozenset({"customer", "currency", "status", "invoice"}), CREDIT_NOTE_STATUSES
    ),
    "balance_transactions": _Listing("customer_balance_transaction", frozenset({"customer", "currency"})),
    "coupons": _Listing("coupon"),
    "tax_rates": _Listing("tax_rate"),
    "task_failures": _Listing("task_failure"),
    "products": _Listing("product"),
    "prices": _Listing("price", frozenset({"currency"})),
    "subscriptions": _Listing(
        "subscription", frozenset({"customer", "currency", "status"}), SUBSCRIPTION_STATUSES
    ),
    "test_clocks": _Listing("test_clock"),
    "events": _Listing("event", frozenset({"customer", "type", "created"})),
    "webhook_endpoints": _Listing("webhook_endpoint"),
}
"""List resource -> object type and the filters it accepts."""


_FILTER_OF = {"created_gte": "created", "created_lte": "created"}
"""List parameters that belong to one filter of ``_Listing.filters``."""


def _key(kind: _Kind, raw: str, field: str) -> str | int:
    if kind.table is not TaskFailure:
        return raw
    if not raw.isdigit():
        raise BadRequest(f"task failure ids are integers (got {raw!r})", field=field)
    return int(raw)


def _expansions(kind: str, expand: Sequence[str]) -> frozenset[str]:
    if isinstance(expand, str):
        expand = (expand,)
    allowed = EXPANDABLE.get(kind, frozenset())
    for name in expand:
        if name not in allowed:
            raise BadRequest(f"{kind} has no expandable field {name!r}", field="expand")
    return frozenset(expand)


def get_object(
    session: Session,
    object_id: str,
    *,
    expand: Sequence[str] = (),
    kind: str | None = None,
    now: int | None = None,
) -> dict[str, Any]:
    """The object named by ``object_id``, dispatched on its prefix.

    ``kind`` names the object type for ids without a known prefix (coupon ids are
    chosen by the caller; task failures are numbered).
    """
    if kind is not None and kind not in OBJECTS:
        raise BadRequest(f"unknown object type {kind!r}", field="kind")
    kind = kind or object_type(object_id)
    if kind is None:
        raise BadRequest(f"unrecognised object id {object_id!r}", field="id")
    entry = OBJECTS[kind]
    view = _View(session, _expansions(kind, expand), clock.now() if now is None else now)
    row = session.get(entry.table, _key(entry, object_id, "id"))
    if row is None:
        raise NotFound(entry.name, object_id, field="id")
    return entry.render(view, [row])[0]


def _page_size(limit: object) -> int:
    """``limit`` as a caller gave it: untyped callers (JSON, a shell) may pass anything."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"must be an integer between 1 and {MAX_LIMIT} (got {limit!r})", field="limit")
    return limit


def _unix_time(value: object, field: str) -> None:
    """A time bound as a caller gave it (untyped callers may pass anything): seconds, >= 0."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise BadRequest(f"must be a Unix time in seconds (got {value!r})", field=field)


def list_objects(
    session: Session,
    resource: str,
    *,
    customer: str | None = None,
    pending: bool | None = None,
    currency: str | None = None,
    status: str | None = None,
    overdue: bool | None = None,
    subscription: str | None = None,
    invoice: str | None = None,
    type: str | None = None,
    created_gte: int | None = None,
    created_lte: int | None = None,
    limit: int = MAX_LIMIT,
    starting_after: str | None = None,
    ending_before: str | None = None,
    now: int | None = None,
) -> dict[str, Any]:
    """One page of ``resource`` in Stripe's list shape, newest first: ``starting_after`` is
    the last id seen (the page after it, older), ``ending_before`` the first (the page before
    it, newer). Events filter by ``type`` (a type, ``<prefix>.*`` or ``*``) and by
    ``created_gte`` / ``created_lte`` (Unix seconds, inclusive). ``lines`` (an invoice's,
    ``invoice`` required) are listed oldest first, in claim order, as the invoice shows them:
    ``starting_after`` gives the next (newer) page."""
    listing = LISTINGS.get(resource)
    if listing is None:
        raise BadRequest(f"unknown resource {resource!r}", field="resource")
    limit = _page_size(limit)
    given = {
        "customer": customer,
        "pending": pending,
        "currency": currency,
        "status": status,
        "overdue": overdue,
        "subscription": subscription,
        "invoice": invoice,
        "type": type,
        "created_gte": created_gte,
        "created_lte": created_lte,
    }
    for name, value in given.items():
        if value is not None and _FILTER_OF.get(name, name) not in listing.filters:
            raise BadRequest(f"{resource} cannot be filtered by {name}", field=name)
    if status is not None and status not in listing.statuses:
        raise BadRequest(
            f"must be one of {', '.join(sorted(listing.statuses))} (got {status!r})", field="status"
        )
    if currency is not None:
        check_currency(currency)
    _unix_time(created_gte, "created_gte")
    _unix_time(created_lte, "created_lte")

    if listing.per_invoice and invoice is None:
        raise BadRequest(f"{resource} are an invoice's: give the invoice (in_…)", field="invoice")
    if listing.per_invoice and session.get(Invoice, invoice) is None:
        raise NotFound("invoice", str(invoice), field="invoice")

    kind = OBJECTS[listing.kind]
    table: Any = kind.table
    stmt = select(table)
    if customer is not None:
        stmt = stmt.where(table.customer_id == customer)
    if currency is not None:
        stmt = stmt.where(table.currency == currency)
    if pending is not None:
        stmt = stmt.where(table.invoice_id.is_(None) if pending else table.invoice_id.is_not(None))
    if status is not None:
        stmt = stmt.where(table.status == status)
    if overdue is not None:  # marked by the overdue beat job and still open
        marked = (table.status == InvoiceStatus.OPEN) & table.overdue_at.is_not(None)
        stmt = stmt.where(marked if overdue else ~marked)
    if subscription is not None:
        stmt = stmt.where(table.subscription_id == subscription)
    if invoice is not None:
        stmt = stmt.where(table.invoice_id == invoice)
    if type is not None:
        wanted = matching(type)
        stmt = stmt.where(table.type.in_(sorted(wanted))) if len(wanted) < len(EVENT_TYPES) else stmt
    if created_gte is not None:
        stmt = stmt.where(table.created >= created_gte)
    if created_lte is not None:
        stmt = stmt.where(table.created <= created_lte)
    if table is Customer:
        stmt = stmt.where(col(Customer.deleted).is_(False))
    if table is WebhookEndpoint:
        stmt = stmt.where(col(WebhookEndpoint.deleted).is_(False))

    order = [table.created, table.id] if hasattr(table, "created") else [table.id]
    if starting_after is not None and ending_before is not None:
        raise BadRequest("give starting_after or ending_before, not both", field="ending_before")
    ascending = listing.per_invoice  # shown oldest first; every other list newest first
    key = _sort_key(order)
    if starting_after is not None:
        after = _cursor(session, kind, order, starting_after, "starting_after")
        stmt = stmt.where(key > after if ascending else key < after)
    if ending_before is not None:
        before = _cursor(session, kind, order, ending_before, "ending_before")
        stmt = stmt.where(key < before if ascending else key > before)
    backwards = ending_before is not None  # read from the cursor against the shown order
    rows = session.exec(
        stmt.order_by(*(column.asc() if ascending != backwards else column.desc() for column in order)).limit(
            limit + 1
        )
    ).all()
    page = list(reversed(rows[:limit])) if backwards else rows[:limit]
    view = _View(session, frozenset(), clock.now() if now is None else now)
    return {
        "object": "list",
        "data": kind.render(view, page) if page else [],
        "has_more": len(rows) > limit,
        "url": f"/v1/invoices/{invoice}/lines" if listing.per_invoice else f"/v1/{resource}",
    }


def _sort_key(order: list[Any]) -> Any:
    return order[0] if len(order) == 1 else tuple_(*order)


def _cursor(session: Session, kind: _Kind, order: list[Any], raw: str, field: str) -> Any:
    """The sort key of the object a page starts after (or ends before)."""
    key = _key(kind, raw, field)
    if len(order) == 1:
        return key
    anchor: Any = session.get(kind.table, key)
    if anchor is None:
        raise NotFound(kind.name, raw, field=field)
    return tuple_(anchor.created, anchor.id)


_KIND_OF_TABLE: dict[type[SQLModel], _Kind] = {
    kind.table: kind for name, kind in OBJECTS.items() if name != "line_item"
}  # an invoice item's row is rendered as the item, not as a line


def render_rows(session: Session, rows: Sequence[SQLModel], *, now: int) -> list[dict[str, Any]]:
    """Rows of a writing session, in their order, as ``billing get`` would print them once
    the transaction commits: the session is flushed and expired (statements may have changed
    rows behind the ORM), and each kind is read again with one query and rendered as a page."""
    wanted = [(type(row), cast(Any, row).id) for row in rows]  # before expiry: no reload
    session.flush()
    session.expire_all()
    view = _View(session, frozenset(), now)
    groups: defaultdict[type[SQLModel], set[Any]] = defaultdict(set)
    for table, object_id in wanted:
        groups[table].add(object_id)
    rendered: dict[tuple[type[SQLModel], Any], dict[str, Any]] = {}
    for table, ids in groups.items():
        kind, model = _KIND_OF_TABLE[table], cast(Any, table)
        fresh = session.exec(select(model).where(model.id.in_(ids))).all()
        for row, obj in zip(fresh, kind.render(view, fresh), strict=True):
            rendered[(table, row.id)] = obj
    return [rendered[key] for key in wanted]


def customer_balances(session: Session, customer_id: str) -> dict[str, int]:
    """Ledger-signed balance (negative = credit) per currency the customer has ever used."""
    rows = session.exec(
        select(CustomerBalance)
        .where(col(CustomerBalance.customer_id) == customer_id)
        .order_by(col(CustomerBalance.currency))
    ).all()
    if not rows and session.get(Customer, customer_id) is None:
        raise NotFound("customer", customer_id, field="customer")
    return {row.currency: row.balance for row in rows}


def find_customers(
    session: Session,
    *,
    email: str | None = None,
    metadata: dict[str, str] | None = None,
    now: int | None = None,
) -> list[dict[str, Any]]:
    """Live customers with exactly this email and/or all these metadata values, by id."""
    if email is None and not metadata:
        raise BadRequest("give an email or metadata to search by", field="email")
    stmt = select(Customer).where(col(Customer.deleted).is_(False))
    postgres = session.get_bind().dialect.name == "postgresql"
    if email is not None:
        stmt = stmt.where(col(Customer.email) == email)
    for key, value in (metadata or {}).items():
        if not isinstance(value, str):
            raise BadRequest(
                f"metadata values are strings (got {type(value).__name__})", field=f"metadata[{key}]"
            )
        if postgres:  # containment, which the GIN index ix_customers_metadata serves
            stmt = stmt.where(type_coerce(col(Customer.metadata_), JSONB).contains({key: value}))
        else:
            stmt = stmt.where(col(Customer.metadata_)[key].as_string() == value)
    rows = session.exec(stmt.order_by(col(Customer.id))).all()
    if not rows:
        return []
    return _render_customers(_View(session, frozenset(), clock.now() if now is None else now), rows)


def webhook_attempts(session: Session, object_id: str, *, limit: int = MAX_LIMIT) -> dict[str, Any]:
    """The tries of the deliveries of one event (``evt_…``) or to one endpoint (``we_…``),
    newest first: when, which try of which delivery, how it ended (HTTP status, duration,
    error), and where the delivery stands (pending with its next try, succeeded, failed)."""
    limit = _page_size(limit)
    if object_id.startswith("we_"):
        if session.get(WebhookEndpoint, object_id) is None:
            raise NotFound("webhook_endpoint", object_id, field="id")
        where = col(WebhookAttempt.endpoint_id) == object_id
    elif object_id.startswith("evt_"):
        where = col(WebhookAttempt.event_id) == object_id
    else:
        raise BadRequest(f"give a webhook endpoint (we_…) or an event (evt_…), not {object_id!r}", field="id")
    rows = session.exec(
        select(WebhookAttempt, WebhookDelivery)
        .join(WebhookDelivery, col(WebhookDelivery.id) == col(WebhookAttempt.delivery_id))
        .where(where)
        .order_by(col(WebhookAttempt.started_at).desc(), col(WebhookAttempt.id).desc())
        .limit(limit + 1)
    ).all()
    data = [
        {
            "object": "webhook_attempt",
            "id": attempt.id,
            "event": attempt.event_id,
            "webhook_endpoint": attempt.endpoint_id,
            "delivery": attempt.delivery_id,
            "attempt": attempt.number,
            "status": attempt.status,
            "http_status": attempt.http_status,
            "duration_ms": attempt.duration_ms,
            "error": attempt.error,
            "response_excerpt": attempt.response_excerpt,
            "created": attempt.started_at,
            "delivery_status": delivery.status,
            "next_attempt_at": delivery.next_attempt_at if delivery.status == "pending" else None,
        }
        for attempt, delivery in rows[:limit]
    ]
    return {
        "object": "list",
        "data": data,
        "has_more": len(rows) > limit,
        "url": f"/v1/webhook_attempts?of={object_id}",
    }
