"""Pricing an invoice from its lines, coupons and tax rates (``domain.pricing``), and the
reads it needs: tax rates and the customer's discount, each read once per transaction.

Both reads are held in ``session.info``: invoices built one after the other in one
transaction share them, and ``batches`` fills them for all its customers at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from domain.errors import NotFound
from domain.pricing import Coupon, Line, PricedInvoice, TaxRate, price_invoice
from worker.services.base import Request
from worker.services.invoices import statements
from worker.services.invoices.lines import write_lines
from worker.tables import CouponRow, Customer, DiscountRow, Invoice, InvoiceItem, TaxRateRow


def tax_rates(session: Session, ids: set[str]) -> dict[str, TaxRate]:
    """The tax rates with these ids (those that exist), each read once per transaction."""
    held: dict[str, TaxRate] = session.info.setdefault("tax_rates", {})
    missing = ids - held.keys()
    if missing:
        rows = session.execute(select(TaxRateRow).where(col(TaxRateRow.id).in_(missing))).scalars()
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


def customer_discount(request: Request, customer_id: str) -> DiscountRow | None:
    # Asked by pricing and again by finalization: read once per transaction (the customer is locked).
    held: dict[str, DiscountRow | None] = request.session.info.setdefault("discounts", {})
    if customer_id not in held:
        held[customer_id] = request.session.execute(statements.DISCOUNT, {"customer": customer_id}).scalar()
    row = held[customer_id]
    if row is None or (row.end is not None and row.end <= request.now):
        return None
    return row


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
    rates = tax_rates(request.session, set(default_ids) | {r for line in lines for r in line.tax_rates or ()})
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
    _store_totals(invoice, priced, customer)
    return priced


def _store_totals(invoice: Invoice, priced: PricedInvoice, customer: Customer) -> None:
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


def _tax_dict(tax: Any) -> dict[str, Any]:
    return {
        "amount": tax.amount,
        "tax_rate": tax.tax_rate,
        "taxable_amount": tax.taxable_amount,
        "inclusive": tax.inclusive,
    }


def reprice_for_tax_status(request: Request, invoice: Invoice, customer: Customer) -> None:
    """A draft follows its customer's tax status until it is finalized (as Stripe's
    ``customer_tax_exempt``): a draft priced before the customer became exempt, or stopped
    being so, is priced again with the same lines and coupons."""
    if invoice.customer_tax_exempt == customer.tax_exempt:
        return
    lines = request.session.execute(
        select(*statements.PRICED_COLUMNS)
        .where(col(InvoiceItem.invoice_id) == invoice.id)
        .order_by(col(InvoiceItem.created), col(InvoiceItem.id))
    ).all()
    coupons = [row for c in invoice.discounts or () if (row := request.session.get(CouponRow, c)) is not None]
    priced = price(request, invoice, lines, customer, coupons)
    write_lines(request.session, line_amounts(lines, priced, every=True))
