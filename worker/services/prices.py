"""Prices: a unit amount per currency and a recurring interval (domain/README.md §8)."""

from __future__ import annotations

from domain.money import check_amount
from tasks.contracts import PriceCreate
from worker.services.base import Outcome, Request
from worker.tables import Price, Product


def create(request: Request, command: PriceCreate) -> Outcome:
    """Prices are immutable once made, so what a period is billed never changes under it."""
    if prior := request.replayed():
        return prior
    request.ensure_new(Price, command.id, resource="price")
    request.get(Product, command.product, resource="product", field="product")
    check_amount(command.unit_amount, "unit_amount", currency=command.currency, minimum=0)
    options = {currency: option.unit_amount for currency, option in (command.currency_options or {}).items()}
    for currency, amount in options.items():
        check_amount(amount, f"currency_options.{currency}.unit_amount", currency=currency, minimum=0)
    row = Price(
        id=command.id,
        product_id=command.product,
        currency=command.currency,
        unit_amount=command.unit_amount,
        currency_options=options or None,
        recurring_interval=command.recurring.interval if command.recurring else None,
        recurring_interval_count=command.recurring.interval_count if command.recurring else None,
        nickname=command.nickname,
        metadata_=command.metadata,
        created=request.now,
    )
    request.session.add(row)
    request.emit("price.created", row)
    return request.done(command.id)
