"""What a document shows, read from the database and written for one locale.

``load`` reads everything a document needs in a few queries (the object, its lines, the tax
rates and coupons it names, the customer's preferred locales, the credited invoice) into a
``Source``; ``view`` turns a ``Source`` into the plain values the template lays out, every
amount and date already written for the document's locale. Nothing here renders or writes.

What the documents show (domain/README.md §10): the issuer (settings) and the customer as
snapshotted at finalization (billing address, else shipping), tax IDs of both, number and
dates, the lines (quantity, unit amount, amount, a line's discounts), the discounts and the
tax of each rate (with "Reverse charge" or "Tax exempt" when the customer's tax status says
so), subtotal, total, credit applied from the balance, amount paid and amount due, the
memo (the invoice's description) and the footer. A credit note: its number, the invoice it
credits, its reason, lines and amount, and where the credit went.
"""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from domain.errors import NotFound, WrongState
from domain.invoices import InvoiceStatus
from tasks.ids import object_type
from worker.documents.formatting import Formatter
from worker.documents.i18n import document_locale, translations
from worker.settings import Issuer
from worker.tables import CouponRow, CreditNote, Customer, Invoice, InvoiceItem, TaxRateRow

KINDS = ("invoice", "credit_note")


@dataclass(slots=True)
class Source:
    """Everything one document is made of, read once."""

    kind: str
    invoice: Invoice
    lines: list[InvoiceItem]
    tax_rates: dict[str, TaxRateRow]
    coupons: dict[str, CouponRow]
    preferred_locales: list[str]
    credit_note: CreditNote | None = None
    items: dict[str, InvoiceItem] = field(default_factory=dict)
    """A credit note's invoice lines, by id."""

    @property
    def object_id(self) -> str:
        return self.credit_note.id if self.credit_note else self.invoice.id

    @property
    def created(self) -> int:
        """When the document's object became final: its fixed metadata date."""
        if self.credit_note is not None:
            return self.credit_note.created
        return self.invoice.finalized_at or self.invoice.created


def kind_of(object_id: str, field_name: str = "id") -> str:
    kind = object_type(object_id)
    if kind not in KINDS:
        raise NotFound("invoice or credit note", object_id, field=field_name)
    assert kind is not None
    return kind


def load(session: Session, object_id: str, *, field_name: str = "id") -> Source:
    """The document's ``Source``; ``NotFound`` for an unknown id, ``WrongState`` for a draft."""
    kind = kind_of(object_id, field_name)
    note = None
    if kind == "credit_note":
        note = session.get(CreditNote, object_id)
        if note is None:
            raise NotFound("credit note", object_id, field=field_name)
        invoice = session.get(Invoice, note.invoice_id)
    else:
        invoice = session.get(Invoice, object_id)
    if invoice is None:
        raise NotFound("invoice", object_id, field=field_name)
    if invoice.status == InvoiceStatus.DRAFT or invoice.number is None:
        raise WrongState(
            f"invoice {invoice.id} is a draft; its document is made when it is finalized", field=field_name
        )
    lines = list(
        session.exec(
            select(InvoiceItem)
            .where(col(InvoiceItem.invoice_id) == invoice.id)
            .order_by(col(InvoiceItem.created), col(InvoiceItem.id))
        )
    )
    rate_ids = {t["tax_rate"] for t in invoice.total_taxes or ()}
    rate_ids |= {t["tax_rate"] for line in lines for t in line.tax_amounts or ()}
    coupon_ids = {d["discount"] for d in invoice.total_discount_amounts or ()}
    coupon_ids |= {d["discount"] for line in lines for d in line.discount_amounts or ()}
    rates = {r.id: r for r in session.exec(select(TaxRateRow).where(col(TaxRateRow.id).in_(rate_ids)))}
    coupons = {c.id: c for c in session.exec(select(CouponRow).where(col(CouponRow.id).in_(coupon_ids)))}
    customer = session.get(Customer, invoice.customer_id)
    return Source(
        kind=kind,
        invoice=invoice,
        lines=lines,
        tax_rates=rates,
        coupons=coupons,
        preferred_locales=list(customer.preferred_locales or ()) if customer else [],
        credit_note=note,
        items={line.id: line for line in lines},
    )


def _address_lines(address: dict[str, Any] | None) -> list[str]:
    """An address as lines: street, then postal code and city, then state, then country."""
    if not address:
        return []
    city = " ".join(str(address[k]) for k in ("postal_code", "city") if address.get(k))
    parts = [address.get("line1"), address.get("line2"), city, address.get("state"), address.get("country")]
    return [str(part) for part in parts if part]


def _tax_id_lines(tax_ids: list[tuple[str, str]] | list[dict[str, str]] | None) -> list[str]:
    lines = []
    for tax_id in tax_ids or ():
        kind, value = (tax_id["type"], tax_id["value"]) if isinstance(tax_id, dict) else tax_id
        lines.append(f"{kind.split('_', 1)[-1].upper()} {value}")
    return lines


def _logo(path: str) -> str | None:
    """The issuer's logo as a data URI: the HTML stands alone, and rendering reads no URL."""
    if not path:
        return None
    kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return f"data:{kind};base64,{base64.b64encode(Path(path).read_bytes()).decode()}"


def view(source: Source, issuer: Issuer, locale: str | None = None) -> dict[str, Any]:
    """The template's values: every label's locale, every amount and date written for it."""
    locale = locale or document_locale(source.preferred_locales)
    fmt = Formatter(locale)
    gettext = translations(locale).gettext
    invoice = source.invoice
    currency = invoice.currency

    def money(amount: int) -> str:
        return fmt.money(amount, currency)

    customer_address = invoice.customer_address or (invoice.customer_shipping or {}).get("address")
    data: dict[str, Any] = {
        "kind": source.kind,
        "locale": locale,
        "lang": locale,
        "created_iso": _iso(source.created),
        "issuer": {
            "name": issuer.name,
            "address": _address_lines(issuer.address),
            "email": issuer.support_email,
            "tax_ids": _tax_id_lines(issuer.tax_ids),
            "logo": _logo(issuer.logo_file),
        },
        "customer": {
            "name": invoice.customer_name
            or (invoice.customer_shipping or {}).get("name")
            or invoice.customer_email
            or invoice.customer_id,
            "address": _address_lines(customer_address),
            "email": invoice.customer_email,
            "phone": invoice.customer_phone,
            "tax_ids": _tax_id_lines(invoice.customer_tax_ids),
        },
        "invoice_number": invoice.number,
        "currency": currency.upper(),
        "footer": invoice.footer or issuer.footer,
    }
    if source.credit_note is None:
        data.update(_invoice_view(source, fmt, money, gettext))
    else:
        data.update(_credit_note_view(source, source.credit_note, fmt, money, gettext))
    return data


def _iso(timestamp: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tax_note(tax_exempt: str | None, gettext: Callable[[str], str]) -> str | None:
    if tax_exempt == "reverse":
        return gettext("Reverse charge")
    if tax_exempt == "exempt":
        return gettext("Tax exempt")
    return None


def _coupon_label(coupon: CouponRow | None, coupon_id: str, fmt: Formatter) -> str:
    name = (coupon.name if coupon else None) or coupon_id
    if coupon is not None and coupon.percent_off is not None:
        return f"{name} ({fmt.percent(coupon.percent_off)})"
    return name


def _rate_label(rate: TaxRateRow | None, rate_id: str, fmt: Formatter, gettext: Callable[[str], str]) -> str:
    if rate is None:
        return rate_id
    label = f"{rate.display_name} ({fmt.percent(rate.percentage)})"
    return gettext("%(rate)s, included") % {"rate": label} if rate.inclusive else label


def _invoice_view(
    source: Source, fmt: Formatter, money: Callable[[int], str], gettext: Callable[[str], str]
) -> dict[str, Any]:
    invoice = source.invoice
    lines = []
    periods = [
        (line.period_start, line.period_end or line.period_start)
        for line in source.lines
        if line.period_start
    ]
    billed = (min(p[0] for p in periods), max(p[1] for p in periods)) if periods else None
    for line in source.lines:
        discounts = [
            {
                "label": _coupon_label(source.coupons.get(d["discount"]), d["discount"], fmt),
                "amount": money(-d["amount"]),
            }
            for d in line.discount_amounts or ()
            if d["amount"]
        ]
        rates = [source.tax_rates.get(t["tax_rate"]) for t in line.tax_amounts or ()]
        lines.append(
            {
                "description": line.description or "",
                "period": fmt.period(line.period_start, line.period_end),
                "quantity": fmt.number(line.quantity),
                "unit_amount": money(line.unit_amount if line.unit_amount is not None else line.amount),
                "tax": ", ".join(fmt.percent(r.percentage) for r in rates if r is not None),
                "amount": money(line.amount),
                "discounts": discounts,
            }
        )
    applied = (
        (invoice.ending_balance or 0) - invoice.starting_balance if invoice.ending_balance is not None else 0
    )
    taxes = [
        {
            "label": _rate_label(source.tax_rates.get(t["tax_rate"]), t["tax_rate"], fmt, gettext),
            "taxable": money(t.get("taxable_amount", 0)),
            "amount": money(t["amount"]),
        }
        for t in invoice.total_taxes or ()
    ]
    return {
        "title": gettext("Invoice"),
        "number": invoice.number,
        "dates": [
            (gettext("Date of issue"), fmt.date(invoice.finalized_at)),
            *([(gettext("Date due"), fmt.date(invoice.due_date))] if invoice.due_date else []),
            *([(gettext("Billing period"), fmt.period(*billed))] if billed else []),
        ],
        "amount_due_line": gettext("%(amount)s due %(date)s")
        % {"amount": money(invoice.amount_due), "date": fmt.date(invoice.due_date)}
        if invoice.due_date
        else None,
        "lines": lines,
        "subtotal": money(invoice.subtotal),
        "discounts": [
            {
                "label": _coupon_label(source.coupons.get(d["discount"]), d["discount"], fmt),
                "amount": money(-d["amount"]),
            }
            for d in invoice.total_discount_amounts or ()
            if d["amount"]
        ],
        "total_excluding_tax": money(invoice.total_excluding_tax) if taxes else None,
        "taxes": taxes,
        "tax_note": _tax_note(invoice.customer_tax_exempt, gettext),
        "total": money(invoice.total),
        "applied_balance": money(-applied) if applied else None,
        "amount_paid": money(invoice.amount_paid),
        "amount_due": money(invoice.amount_due),
        "memo": invoice.description,
    }


def N_(message: str) -> str:
    """Marks a label for extraction (Babel's ``N_`` keyword); translated where it is shown."""
    return message


REASONS = {
    "duplicate": N_("Duplicate"),
    "fraudulent": N_("Fraudulent"),
    "order_change": N_("Order change"),
    "product_unsatisfactory": N_("Product unsatisfactory"),
}


def _credit_note_view(
    source: Source,
    note: CreditNote,
    fmt: Formatter,
    money: Callable[[int], str],
    gettext: Callable[[str], str],
) -> dict[str, Any]:
    lines: list[dict[str, Any]] = []
    for stored in note.lines or [{"type": "custom_line_item", "amount": note.amount}]:
        item = source.items.get(stored.get("invoice_line_item") or "")
        description = stored.get("description") or (item.description if item else None) or gettext("Credit")
        lines.append(
            {
                "description": description,
                "period": "",
                "quantity": fmt.number(item.quantity) if item else fmt.number(1),
                "unit_amount": money(
                    item.unit_amount if item and item.unit_amount is not None else stored["amount"]
                ),
                "tax": "",
                "amount": money(stored["amount"]),
                "discounts": [],
            }
        )
    settlement = [
        (gettext("Adjustment to invoice amount due"), note.amount_due_reduction),
        (gettext("Credited to customer balance"), note.credit_amount),
        (gettext("Refunded"), note.refund_amount),
        (gettext("Credited outside this system"), note.out_of_band_amount),
    ]
    return {
        "title": gettext("Credit note"),
        "number": note.number,
        "dates": [
            (gettext("Date of issue"), fmt.date(note.created)),
            (gettext("Invoice"), source.invoice.number or ""),
            (gettext("Invoice date"), fmt.date(source.invoice.finalized_at)),
            *([(gettext("Reason"), gettext(REASONS[note.reason]))] if note.reason in REASONS else []),
        ],
        "amount_due_line": None,
        "lines": lines,
        "subtotal": money(note.amount),
        "discounts": [],
        "total_excluding_tax": None,
        "taxes": [],
        "tax_note": _tax_note(source.invoice.customer_tax_exempt, gettext),
        "total": money(note.amount),
        "settlement": [(label, money(amount)) for label, amount in settlement if amount],
        "memo": note.memo,
    }
