"""The benchmark's baselines as Celery tasks; imported only by ``billing bench`` workers.

``billing.bench.noop`` is the Celery floor (a task that does nothing, same app settings:
late ack, prefetch 1). ``billing.bench.naive_item`` is the naive design the issue compares
with: one task per item, each inserting its row with a SQLModel add + commit.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from worker.app import app
from worker.db import get_engine
from worker.tables import InvoiceItem


@app.task(name="billing.bench.noop", ignore_result=True, acks_late=True)
def noop(**_: Any) -> None:
    return None


@app.task(name="billing.bench.naive_item", ignore_result=True, acks_late=True)
def naive_item(**row: Any) -> None:
    with Session(get_engine()) as session:
        session.add(InvoiceItem(**row))
        session.commit()
