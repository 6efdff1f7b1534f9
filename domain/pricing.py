"""Pricing an invoice: discounts, then tax, then totals (domain/README.md §4.1, §5, §6).

Rounding, all in one place:
- Amount-off discounts are spread over the discountable lines in proportion to their
  amounts: each share rounded down, the last line takes the remainder so the shares
  sum exactly. If the remainder would exceed what the last line has left, the excess
  moves to the lines before it, last first.
- Percent-off discounts round each line's share half up.
- Tax is computed per line on the discounted amount and rounded half up per line and
  rate, then summed.
A discount never takes a line below zero and never turns the invoice into a credit:
all discounts together stop at the subtotal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from domain.money import round_half_up

HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class TaxRate:
    id: str
    percentage: Decimal
    inclusive: bool = False


@dataclass(frozen=True, slots=True)
class Coupon:
    id: str
    percent_off: Decimal | None = None
    amount_off: int | None = None
    currency: str | None = None
    currency_options: Mapping[str, int] = field(default_factory=dict)

    def amount_off_in(self, currency: str) -> int | None:
        if self.amount_off is None:
            return None
        if currency == self.currency:
            return self.amount_off
        return self.currency_options.get(currency)

    def applies_to(self, currency: str) -> bool:
        """Percent-off applies in any currency; amount-off only in its own (or an option's)."""
        return self.percent_off is not None or self.amount_off_in(currency) is not None


@dataclass(frozen=True, slots=True)
class Line:
    amount: int
    discountable: bool = True
    tax_rates: tuple[TaxRate, ...] | None = None
    """None: the invoice's default rates apply; a tuple (even empty) replaces them."""


@dataclass(frozen=True, slots=True)
class DiscountAmount:
    coupon: str
    amount: int


@dataclass(frozen=True, slots=True)
class TaxAmount:
    tax_rate: str
    amount: int
    taxable_amount: int
    inclusive: bool


@dataclass(frozen=True, slots=True)
class PricedLine:
    amount: int
    discount_amounts: tuple[DiscountAmount, ...]
    tax_amounts: tuple[TaxAmount, ...]

    @property
    def discount_total(self) -> int:
        return sum(d.amount for d in self.discount_amounts)


@dataclass(frozen=True, slots=True)
class PricedInvoice:
    lines: tuple[PricedLine, ...]
    subtotal: int
    total_discount_amounts: tuple[DiscountAmount, ...]
    total_taxes: tuple[TaxAmount, ...]
    total_excluding_tax: int
    total: int

    @property
    def applied_coupons(self) -> tuple[str, ...]:
        return tuple(d.coupon for d in self.total_discount_amounts)


def allocate_proportionally(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` (>= 0) over non-negative ``weights`` by the rule in the module docstring."""
    shares = [0] * len(weights)
    whole = sum(weights)
    if total <= 0 or whole <= 0:
        return shares
    if total > whole:
        raise ValueError(f"cannot allocate {total} over weights summing to {whole}")
    carriers = [i for i, w in enumerate(weights) if w > 0]
    for i in carriers[:-1]:
        shares[i] = total * weights[i] // whole
    last = carriers[-1]
    shares[last] = total - sum(shares)
    excess = shares[last] - weights[last]
    for i in reversed(carriers):
        if excess <= 0:
            break
        if i == last:
            shares[i] -= excess
            continue
        room = weights[i] - shares[i]
        moved = min(room, excess)
        shares[i] += moved
        excess -= moved
    return shares


def _line_discounts(
    lines: Sequence[Line], currency: str, coupons: Sequence[Coupon], subtotal: int
) -> tuple[list[list[DiscountAmount]], list[DiscountAmount]]:
    remaining = [line.amount if line.discountable and line.amount > 0 else 0 for line in lines]
    per_line: list[list[DiscountAmount]] = [[] for _ in lines]
    totals: list[DiscountAmount] = []
    room = max(subtotal, 0)
    for coupon in coupons:
        if not coupon.applies_to(currency):
            continue
        cap = min(sum(remaining), room)
        if coupon.percent_off is not None:
            shares = [round_half_up(r * coupon.percent_off / HUNDRED) for r in remaining]
            if sum(shares) > cap:
                shares = allocate_proportionally(cap, remaining)
        else:
            amount_off = coupon.amount_off_in(currency)
            assert amount_off is not None
            shares = allocate_proportionally(min(amount_off, cap), remaining)
        for i, share in enumerate(shares):
            if share:
                remaining[i] -= share
                per_line[i].append(DiscountAmount(coupon.id, share))
        applied = sum(shares)
        room -= applied
        totals.append(DiscountAmount(coupon.id, applied))
    return per_line, totals


def _line_taxes(amount: int, rates: Sequence[TaxRate], tax_exempt: bool) -> tuple[list[TaxAmount], int, int]:
    """Taxes of one line on its discounted ``amount``.

    Returns (tax amounts, inclusive tax contained in the amount, exclusive tax added).
    For an exempt (or reverse-charge) customer every tax is 0 and inclusive tax is
    backed out of the amount, reported as inclusive tax so the caller can remove it.
    """
    if not rates:  # most lines: no Decimal arithmetic for them
        return [], 0, 0
    inclusive = [r for r in rates if r.inclusive]
    inclusive_pct = sum((r.percentage for r in inclusive), Decimal(0))
    net = Decimal(amount) / (1 + inclusive_pct / HUNDRED)
    inclusive_taxes = {r.id: round_half_up(net * r.percentage / HUNDRED) for r in inclusive}
    contained = sum(inclusive_taxes.values())
    taxable = amount - contained
    out: list[TaxAmount] = []
    added = 0
    for rate in rates:
        if rate.inclusive:
            tax = 0 if tax_exempt else inclusive_taxes[rate.id]
        else:
            tax = 0 if tax_exempt else round_half_up(taxable * rate.percentage / HUNDRED)
            added += tax
        out.append(TaxAmount(rate.id, tax, taxable, rate.inclusive))
    return out, contained, added


def price_invoice(
    lines: Sequence[Line],
    *,
    currency: str,
    coupons: Sequence[Coupon] = (),
    default_tax_rates: Sequence[TaxRate] = (),
    tax_exempt: bool = False,
) -> PricedInvoice:
    """Discounts, then tax, then totals. ``tax_exempt`` is true for ``exempt`` and ``reverse``."""
    subtotal = sum(line.amount for line in lines)
    per_line_discounts, total_discounts = _line_discounts(lines, currency, coupons, subtotal)
    priced: list[PricedLine] = []
    taxes: dict[str, list[int]] = {}
    tax_kind: dict[str, bool] = {}
    contained_total = added_total = 0
    default_rates = tuple(default_tax_rates)
    for line, discounts in zip(lines, per_line_discounts, strict=True):
        discounted = line.amount - sum(d.amount for d in discounts) if discounts else line.amount
        rates = line.tax_rates if line.tax_rates is not None else default_rates
        tax_amounts, contained, added = _line_taxes(discounted, rates, tax_exempt)
        contained_total += contained
        added_total += added
        for t in tax_amounts:
            agg = taxes.setdefault(t.tax_rate, [0, 0])
            agg[0] += t.amount
            agg[1] += t.taxable_amount
            tax_kind[t.tax_rate] = t.inclusive
        priced.append(PricedLine(line.amount, tuple(discounts), tuple(tax_amounts)))
    discount_total = sum(d.amount for d in total_discounts)
    after_discounts = subtotal - discount_total
    total = after_discounts + added_total - (contained_total if tax_exempt else 0)
    return PricedInvoice(
        lines=tuple(priced),
        subtotal=subtotal,
        total_discount_amounts=tuple(total_discounts),
        total_taxes=tuple(TaxAmount(rid, a, t, tax_kind[rid]) for rid, (a, t) in taxes.items()),
        total_excluding_tax=after_discounts - contained_total,
        total=total,
    )
