"""Messages the worker refuses before any task runs are recorded, not silently dropped."""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Iterator

import pytest
from kombu import Exchange, Producer

from tests.support import count, row_counts
from worker.devtools.embedded import EmbeddedWorker
from worker.tables import Customer, TaskFailure

pytestmark = [pytest.mark.usefixtures("database"), pytest.mark.slow]


@pytest.fixture
def worker() -> Iterator[EmbeddedWorker]:
    from worker.app import app

    embedded = EmbeddedWorker(app)
    embedded.purge()
    with embedded:
        yield embedded


def send_raw(worker: EmbeddedWorker, task: str, body: bytes, content_type: str) -> str:
    task_id = str(uuid.uuid4())
    with worker.app.connection_for_write() as connection:
        Producer(connection.default_channel).publish(
            body,
            exchange=Exchange("billing.default", type="direct"),
            routing_key="billing.default",
            content_type=content_type,
            content_encoding="binary",
            headers={"lang": "py", "task": task, "id": task_id, "argsrepr": "", "kwargsrepr": ""},
        )
    return task_id


def failure(task_id: str) -> TaskFailure:
    from sqlalchemy import select

    from worker.db import read_session

    with read_session() as session:
        return session.execute(select(TaskFailure).where(TaskFailure.task_id == task_id)).scalar_one()


def test_a_pickled_message_is_refused_and_recorded(worker: EmbeddedWorker) -> None:
    before = row_counts()
    body = pickle.dumps(((), {"id": "cus_PICKLE", "idempotency_key": "k"}, {}))
    task_id = send_raw(worker, "billing.customers.create", body, "application/x-python-serialize")
    worker.wait_idle()
    refused = failure(task_id)
    assert (refused.task_name, refused.error_type, refused.error_code) == (
        "billing.customers.create", "BadRequest", "invalid_request",
    )  # fmt: skip
    assert "application/x-python-serialize" in refused.error_message
    assert row_counts() == {
        **before,
        "task_failures": before["task_failures"] + 1,
        "events": before["events"] + 1,  # request.failed
    }


def test_an_unknown_task_name_is_refused_and_recorded(worker: EmbeddedWorker) -> None:
    body = b'[[], {"customer": "cus_X"}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'
    task_id = send_raw(worker, "billing.invoices.explode", body, "application/json")
    worker.wait_idle()
    refused = failure(task_id)
    assert (refused.task_name, refused.error_type, refused.error_field) == (
        "billing.invoices.explode", "BadRequest", "task",
    )  # fmt: skip
    assert count(TaskFailure) == 1


def test_an_expired_request_is_recorded_not_silently_skipped(worker: EmbeddedWorker) -> None:
    from datetime import UTC, datetime, timedelta

    task_id = str(uuid.uuid4())
    payload = {"id": "cus_EXPIRED", "idempotency_key": "expired", "email": "late@example.com"}
    worker.app.send_task(
        "billing.customers.create",
        kwargs=payload,
        queue="billing.default",
        task_id=task_id,
        expires=datetime.now(UTC) - timedelta(minutes=1),
    )
    worker.wait_idle()
    skipped = failure(task_id)
    assert (skipped.task_name, skipped.error_type, skipped.retryable) == (
        "billing.customers.create", "RequestDropped", True,
    )  # fmt: skip
    assert skipped.payload == payload and "expires time passed" in skipped.error_message
    assert count(Customer) == 0


def test_an_expired_beat_job_is_not_a_failure(worker: EmbeddedWorker) -> None:
    from datetime import UTC, datetime, timedelta

    before = row_counts()
    worker.app.send_task(
        "billing.maintenance.purge",
        queue="billing.recurring",
        expires=datetime.now(UTC) - timedelta(seconds=5),
    )
    worker.wait_idle()
    assert row_counts() == before  # beat asks again at its next tick


def test_a_refused_entry_whose_key_can_be_read_fails_its_request_s_fate() -> None:
    """A hostile entry the transport refused still says what became of the request it names."""
    import base64
    import json

    from tasks.fates import MEMORY, resolve
    from worker.quarantine import record_entry

    key = f"refused-{uuid.uuid4().hex}"
    kwargs = {"id": "cus_REFUSED", "idempotency_key": key, "email": "a@example.com"}
    raw = json.dumps(
        {
            "body": base64.b64encode(json.dumps([[], kwargs, {}]).encode()).decode(),
            "content-type": "application/json",
            "headers": {"task": "billing.customers.create", "id": "refused-task", "timelimit": 7},
            "properties": {},
        }
    ).encode()
    record_entry(b"1\nbilling.default\nheaders.timelimit: must be a pair\n" + raw)

    fate = resolve(MEMORY, [key])  # the broker of the tests' settings: in-process
    assert (fate.status, fate.failed_key) == ("failed", key)
    assert fate.error is not None
    error = (fate.error["type"], fate.error["field"], fate.error["class"])
    assert error == ("invalid_request_error", "message", "BadRequest")
    assert fate.error["message"] == "refused queue entry: headers.timelimit: must be a pair"
    assert count(TaskFailure) == 1
