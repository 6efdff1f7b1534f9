"""Tax rates (domain/README.md §6)."""

from __future__ import annotations

from tasks.contracts import TaxRateCreate
from worker.services.base import Outcome, Request
from worker.tables import TaxRateRow


def create(request: Request, command: TaxRateCreate) -> Outcome:
    if prior := request.replayed():
        return prior
    request.ensure_new(TaxRateRow, command.id, resource="tax rate")
    row = TaxRateRow(
        id=command.id,
        display_name=command.display_name,
        percentage=command.percentage,
        inclusive=command.inclusive,
        active=command.active,
        country=command.country,
        jurisdiction=command.jurisdiction,
        description=command.description,
        metadata_=command.metadata,
        created=request.now,
    )
    request.session.add(row)
    request.emit("tax_rate.created", row)
    return request.done(command.id)
