"""Invoices (README: How invoice generation works). Task ``billing.invoices.<verb>`` runs
the ``<verb>`` re-exported here (``worker.services.registry``):

- ``generation``: an invoice from pending items, its chain, finalization (``create``,
  ``create_for_pending``);
- ``batches``: many ``create`` requests in one transaction (``create_together``);
- ``lifecycle``: ``finalize``, ``void``, ``pay``, ``mark_uncollectible``, ``delete``;
- ``previews``: ``preview``, the invoice creating one would make, written nowhere (not a
  task: a read for the CLI and for services that link the worker package);
- ``lines`` (pending lines read and claimed), ``pricing`` and ``statements`` (the SQL)
  serve them.
"""

from __future__ import annotations

from worker.services.invoices.batches import create_together
from worker.services.invoices.generation import create, create_for_pending
from worker.services.invoices.lifecycle import delete, finalize, mark_uncollectible, pay, void
from worker.services.invoices.previews import preview

__all__ = [
    "create",
    "create_for_pending",
    "create_together",
    "delete",
    "finalize",
    "mark_uncollectible",
    "pay",
    "preview",
    "void",
]
