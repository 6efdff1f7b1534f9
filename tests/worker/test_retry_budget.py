"""The retry budget is ours: past Celery's default of 3 retries a failure is still recorded."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.support import batched, count, row_counts
from worker.app import app
from worker.db import read_session
from worker.settings import get_settings
from worker.tables import TaskFailure

pytestmark = pytest.mark.usefixtures("database")


@pytest.mark.parametrize("retries", [0, 3, 4, 6])
def test_a_missing_customer_is_retried_then_recorded(retries: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_MISSING_REFERENCE_RETRIES", str(retries))
    get_settings.cache_clear()
    app.loader.import_default_modules()
    before = row_counts()
    result = app.tasks["billing.invoice_items.create_many"].apply(
        kwargs={
            "idempotency_key": "late",
            "items": [
                {
                    "id": "ii_LATE",
                    "idempotency_key": "ii_LATE",
                    "customer": "cus_LATE",
                    "currency": "usd",
                    "amount": 5,
                }
            ],
        }
    )
    assert result.failed()
    assert count(TaskFailure) == 1
    assert row_counts() == {**before, "task_failures": 1, "events": before["events"] + 1}


@pytest.mark.parametrize("retries", [0, 4])
def test_a_single_item_message_taken_in_a_batch_keeps_its_retries(
    retries: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The single-item task runs messages together; one that cannot be settled so runs alone,
    with the same retry budget, and its failure is recorded once (the batch itself succeeds)."""
    monkeypatch.setenv("BILLING_MISSING_REFERENCE_RETRIES", str(retries))
    get_settings.cache_clear()
    app.loader.import_default_modules()
    before = row_counts()
    task = app.tasks["billing.invoice_items.create"]
    kwargs = {
        "id": "ii_LATE",
        "idempotency_key": "late",
        "customer": "cus_LATE",
        "currency": "usd",
        "amount": 5,
    }
    request = batched(task.name, "late-1", kwargs)

    state, _ = task.run_batch([request])["late-1"]  # run alone: its retries are sent, then it fails
    assert state == ("FAILURE" if retries == 0 else "RETRY")

    with read_session() as session:
        failure = session.execute(select(TaskFailure)).scalar_one()
    assert (failure.error_type, failure.error_field, failure.attempts) == ("NotFound", "customer", 1)
    assert row_counts() == {**before, "task_failures": 1, "events": before["events"] + 1}


@pytest.mark.parametrize("retries", [0, 2])
def test_an_invoice_request_with_nothing_pending_is_retried_then_recorded(
    retries: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import worker.tasks.base
    from tests.support import customer
    from worker.services.registry import run

    monkeypatch.setenv("BILLING_NOTHING_PENDING_RETRIES", str(retries))
    get_settings.cache_clear()
    app.loader.import_default_modules()
    attempts: list[str] = []
    monkeypatch.setattr(
        worker.tasks.base,
        "run",
        lambda name, payload, **kw: attempts.append(name) or run(name, payload, **kw),
    )
    cus = customer("usd")
    before = row_counts()
    result = app.tasks["billing.invoices.create"].apply(
        kwargs={"id": "in_EMPTY", "idempotency_key": "empty", "customer": cus}
    )
    assert result.failed() and type(result.result).__name__ == "NothingToInvoice"
    assert len(attempts) == 1 + retries
    assert row_counts() == {**before, "task_failures": 1, "events": before["events"] + 1}


def test_no_retry_waits_longer_than_half_the_visibility_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Longer, and Redis would hand a copy of the waiting retry to another worker."""
    from worker.tasks.base import backoff

    monkeypatch.setenv("BILLING_VISIBILITY_TIMEOUT_S", "4")
    get_settings.cache_clear()
    waits = [backoff(retries, base=1.0, cap=300.0) for retries in range(12) for _ in range(50)]
    assert 1.5 < max(waits) <= 2.0
