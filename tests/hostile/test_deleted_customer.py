"""A request for a deleted customer fails at once: it cannot be on its way, unlike a missing one."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from tasks.ids import new_id
from tests.support import call, customer, items
from worker.app import app
from worker.db import read_session
from worker.tables import TaskFailure

pytestmark = pytest.mark.usefixtures("database")


def _item(cus: str) -> dict[str, Any]:
    return {
        "id": new_id("ii"),
        "idempotency_key": new_id("req"),
        "customer": cus,
        "currency": "usd",
        "amount": 5,
    }


REQUESTS = {
    "invoice": ("billing.invoices.create", lambda cus: {"id": new_id("in"), "customer": cus}),
    "balance": (
        "billing.balance_transactions.create",
        lambda cus: {"id": new_id("cbtxn"), "customer": cus, "amount": -100, "currency": "usd"},
    ),
    "items": ("billing.invoice_items.create_many", lambda cus: {"items": [_item(cus)]}),
}


@pytest.mark.parametrize("request_name", REQUESTS)
def test_a_request_for_a_deleted_customer_is_recorded_without_a_retry(
    request_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app.loader.import_default_modules()
    cus = customer("usd")
    items(cus, "usd", [100])
    call("billing.customers.delete", customer=cus)
    task_name, kwargs_of = REQUESTS[request_name]
    task = app.tasks[task_name]
    retried: list[Any] = []
    monkeypatch.setattr(task, "retry", lambda *a, **kw: retried.append(kw) or RuntimeError("retried"))

    result = task.apply(kwargs={"idempotency_key": new_id("req"), **kwargs_of(cus)})

    assert result.failed() and not retried
    with read_session() as session:
        (failure,) = session.scalars(select(TaskFailure))
    # the same record as before (a NotFound naming the customer), only without the retries
    assert (failure.error_type, failure.error_code, failure.error_field, failure.retryable) == (
        "NotFound", "resource_missing", "items[0].customer" if request_name == "items" else "customer", False,
    )  # fmt: skip
