"""A batch task checks each request alone: one bad request is recorded as itself, and never
holds back (or un-acknowledges) the healthy requests it was taken with."""

from __future__ import annotations

from typing import Any

import pytest
from celery_batches import SimpleRequest

from tasks.ids import new_id
from tests.support import batched, count, customer
from worker.app import app
from worker.tables import InvoiceItem, TaskFailure

pytestmark = pytest.mark.usefixtures("database")

TASK = "billing.invoice_items.create"


def item(customer_id: str) -> SimpleRequest:
    item_id = new_id("ii")
    kwargs = {
        "id": item_id,
        "idempotency_key": item_id,
        "customer": customer_id,
        "currency": "usd",
        "amount": 100,
    }
    return batched(TASK, f"task-{item_id}", kwargs)


def broken(kwargs: Any, args: Any = ()) -> SimpleRequest:
    request = batched(TASK, f"task-{new_id('req')}", {})
    request.kwargs, request.args = kwargs, args
    return request


@pytest.mark.parametrize(
    "bad",
    [lambda: broken([1, 2]), lambda: broken("text"), lambda: broken(None), lambda: broken({}, args=5),
     lambda: broken({"customer": "cus_X", "amount": "NaN"})],
    ids=["kwargs-list", "kwargs-string", "kwargs-null", "args-not-a-list", "invalid-kwargs"],
)  # fmt: skip
def test_one_bad_request_fails_alone_and_its_batch_mates_are_applied(bad: Any) -> None:
    app.loader.import_default_modules()
    cus = customer("usd")
    first, wrong, last = item(cus), bad(), item(cus)

    states = app.tasks[TASK].run_batch([first, wrong, last])

    assert isinstance(states, dict)  # a dict: every request of the batch is acknowledged
    settled = {request.id: states.get(request.id, ("SUCCESS", None))[0] for request in (first, last)}
    assert settled == {first.id: "SUCCESS", last.id: "SUCCESS"}  # as flush reads it
    assert states[wrong.id][0] == "FAILURE"
    assert count(InvoiceItem) == 2
    assert count(TaskFailure, TaskFailure.task_id == wrong.id) == 1
    assert count(TaskFailure) == 1
