"""The reconciler sends a lost follow-up again, but never a copy into a queue that still holds
messages: the first copy may be waiting there (a documents queue thousands deep drains for
hours, and a copy every few minutes would grow it faster than it drains)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tasks.operations import QUEUE_DOCUMENTS, QUEUE_INVOICES
from tests.support import call, customer, items
from worker import clock
from worker.app import app
from worker.db import UnitOfWork
from worker.services.documents import RENDER_TASK
from worker.settings import get_settings
from worker.tables import OutboxMessage

pytestmark = pytest.mark.usefixtures("database")
T0 = 1_800_000_000
RECONCILE = "billing.maintenance.reconcile"


@pytest.fixture
def now() -> Iterator[list[int]]:
    current = [T0]
    previous = clock.set_source(lambda: current[0])
    yield current
    clock.set_source(previous)


@pytest.fixture
def queued() -> Iterator[Any]:
    """A message waiting in billing.invoices (nobody consumes it here), purged at the end."""
    app.loader.import_default_modules()
    with app.connection_for_write() as connection:
        channel: Any = connection.default_channel
        for queue in (QUEUE_INVOICES, QUEUE_DOCUMENTS):
            channel.queue_declare(queue=queue, durable=True, auto_delete=False)
            channel.queue_purge(queue)
        app.send_task("billing.bench.noop", queue=QUEUE_INVOICES, connection=connection)
        assert channel.queue_declare(queue=QUEUE_INVOICES, passive=True).message_count == 1
        yield channel
        for queue in (QUEUE_INVOICES, QUEUE_DOCUMENTS):
            channel.queue_purge(queue)


def test_a_stale_follow_up_goes_again_only_once_its_queue_is_empty(
    now: list[int], queued: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cus = customer("cad")
    items(cus, "cad", [10] * 260)
    call("billing.invoices.create", customer=cus, idempotency_key="stale", finalize=True)
    with UnitOfWork() as uow:  # both follow-ups published, then neither done for too long
        uow.session.execute(OutboxMessage.__table__.update().values(published_at=T0))  # type: ignore[attr-defined]
        uow.commit()
    now[0] = T0 + get_settings().outbox_republish_after_s
    sent: list[tuple[str, str]] = []
    monkeypatch.setattr(app, "send_task", lambda name, **options: sent.append((name, options["queue"])))

    result = app.tasks[RECONCILE].run()

    # the chain's next part: its queue holds a message, which may be it; the document request:
    # its queue is empty, so its message was lost
    assert sent == [(RENDER_TASK, QUEUE_DOCUMENTS)]
    assert result == {"published": 1, "left_queued": 1}

    queued.queue_purge(QUEUE_INVOICES)
    now[0] += get_settings().outbox_republish_after_s
    sent.clear()

    assert app.tasks[RECONCILE].run() == {"published": 2, "left_queued": 0}
    assert sorted(sent) == [(RENDER_TASK, QUEUE_DOCUMENTS), ("billing.invoices.create", QUEUE_INVOICES)]
