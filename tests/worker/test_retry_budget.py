"""The retry budget is ours: past Celery's default of 3 retries a failure is still recorded."""

from __future__ import annotations

import pytest

from tests.support import count, row_counts
from worker.app import app
from worker.settings import get_settings
from worker.tables import TaskFailure

pytestmark = pytest.mark.usefixtures("database")


@pytest.mark.parametrize("retries", [0, 3, 4, 6])
def test_a_missing_customer_is_retried_then_recorded(retries: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_MISSING_REFERENCE_RETRIES", str(retries))
    get_settings.cache_clear()
    app.loader.import_default_modules()
    before = row_counts()
    result = app.tasks["billing.invoice_items.create"].apply(
        kwargs={
            "id": "ii_LATE",
            "idempotency_key": "late",
            "customer": "cus_LATE",
            "currency": "usd",
            "amount": 5,
        }
    )
    assert result.failed()
    assert count(TaskFailure) == 1
    assert row_counts() == {**before, "task_failures": 1}


@pytest.mark.parametrize("retries", [0, 2])
def test_an_invoice_request_with_nothing_pending_is_retried_then_recorded(
    retries: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.base
    from tests.support import customer
    from worker.services.registry import run

    monkeypatch.setenv("BILLING_NOTHING_PENDING_RETRIES", str(retries))
    get_settings.cache_clear()
    app.loader.import_default_modules()
    attempts: list[str] = []
    monkeypatch.setattr(
        tasks.base, "run", lambda name, payload, **kw: attempts.append(name) or run(name, payload, **kw)
    )
    cus = customer("usd")
    before = row_counts()
    result = app.tasks["billing.invoices.create"].apply(
        kwargs={"id": "in_EMPTY", "idempotency_key": "empty", "customer": cus}
    )
    assert result.failed() and type(result.result).__name__ == "NothingToInvoice"
    assert len(attempts) == 1 + retries
    assert row_counts() == {**before, "task_failures": 1}
