"""Products: what prices are for (domain/README.md §8)."""

from __future__ import annotations

from tasks.contracts import ProductCreate
from worker.services.base import Outcome, Request
from worker.tables import Product


def create(request: Request, command: ProductCreate) -> Outcome:
    if prior := request.replayed():
        return prior
    request.ensure_new(Product, command.id, resource="product")
    row = Product(
        id=command.id,
        name=command.name,
        description=command.description,
        metadata_=command.metadata,
        created=request.now,
    )
    request.session.add(row)
    request.emit("product.created", row)
    return request.done(command.id)
