"""Invoice items: pending charges waiting for an invoice of their currency (SPEC §3)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import insert, select

from domain.errors import BadRequest, NotFound
from domain.money import check_amount
from tasks.contracts import InvoiceItemCreate, InvoiceItemsCreate
from worker.services.base import Outcome, Request
from worker.tables import Customer, InvoiceItem, TaxRateRow


def _active_tax_rates(request: Request, ids: set[str]) -> set[str]:
    if not ids:
        return set()
    rows = request.session.execute(
        select(TaxRateRow.id).where(TaxRateRow.id.in_(ids), TaxRateRow.active)  # type: ignore[attr-defined]
    )
    return {row.id for row in rows}


def _rows(request: Request, items: Sequence[InvoiceItemCreate], field_prefix: str) -> list[dict[str, object]]:
    """Validate a batch against the database and build its rows: every check before any write."""
    customer_ids = {item.customer for item in items}
    customers = {
        c.id: c
        for c in request.session.execute(
            select(Customer).where(Customer.id.in_(customer_ids))  # type: ignore[attr-defined]
        ).scalars()
    }
    active_rates = _active_tax_rates(request, {r for item in items for r in item.tax_rates or ()})
    existing = {
        row.id
        for row in request.session.execute(
            select(InvoiceItem.id).where(InvoiceItem.id.in_([item.id for item in items]))  # type: ignore[attr-defined]
        )
    }
    rows: list[dict[str, object]] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        at = f"{field_prefix}[{index}]." if field_prefix else ""
        customer = customers.get(item.customer)
        if customer is None or customer.deleted:
            raise NotFound("customer", item.customer, field=f"{at}customer")
        if item.id in existing or item.id in seen:
            raise BadRequest(f"invoice item {item.id} already exists", field=f"{at}id")
        seen.add(item.id)
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
        rows.append(
            {
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
                "created": request.now,
            }
        )
    return rows


def _insert(request: Request, rows: list[dict[str, object]]) -> None:
    # Core insert by column name: one executemany round trip instead of one ORM object per row.
    request.session.execute(insert(InvoiceItem.__table__), rows)  # type: ignore[attr-defined]


def create_invoice_item(request: Request, command: InvoiceItemCreate) -> Outcome:
    if prior := request.replayed():
        return prior
    _insert(request, _rows(request, [command], ""))
    return request.done(command.id)


def create_invoice_items(request: Request, command: InvoiceItemsCreate) -> Outcome:
    """All items of the batch or none: the first bad one fails the batch and names its index."""
    if prior := request.replayed():
        return prior
    _insert(request, _rows(request, command.items, "items"))
    return request.done(None)
