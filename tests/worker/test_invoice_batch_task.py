"""The invoice task takes requests together: follow-ups are published after the batch's commit,
and a request whose follow-up could not be published runs alone, where its replay sends it."""

from __future__ import annotations

from typing import Any

import pytest
from kombu.exceptions import OperationalError

from tasks.ids import new_id
from tests.support import batched, count, customer, items
from worker.app import app
from worker.services.documents import RENDER_TASK
from worker.tables import Invoice, OutboxMessage

pytestmark = pytest.mark.usefixtures("database")

TASK = "billing.invoices.create"


def message(customer_id: str) -> Any:
    key = new_id("req")
    kwargs = {"id": new_id("in"), "idempotency_key": key, "customer": customer_id, "finalize": True}
    return batched(TASK, f"task-{key}", kwargs)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What the task publishes; the first publication fails as if Redis were down."""
    app.loader.import_default_modules()
    published: list[dict[str, Any]] = []

    def send_task(name: str, **options: Any) -> None:
        if not published and not getattr(send_task, "failed", False):
            send_task.failed = True  # type: ignore[attr-defined]
            raise OperationalError("connection refused")
        published.append({"name": name, **options})

    monkeypatch.setattr(app, "send_task", send_task)
    return published


def test_a_follow_up_refused_by_the_broker_is_sent_by_the_request_run_alone(
    sent: list[dict[str, Any]],
) -> None:
    long, short = customer("usd"), customer("eur")
    items(long, "usd", [100] * 260)
    items(short, "eur", [500])
    task = app.tasks[TASK]

    states = task.run_batch([message(long), message(short)])

    assert {state for state, _ in states.values()} <= {"SUCCESS"}

    assert count(Invoice) == 2  # made once each: the one run alone replayed
    (follow_up,) = [message for message in sent if message["name"] == TASK]
    outbox = count(OutboxMessage, OutboxMessage.task_id == follow_up["task_id"])
    assert (follow_up["name"], follow_up["kwargs"]["part"], outbox) == (TASK, 2, 1)
    published = OutboxMessage.published_at.is_not(None)  # type: ignore[union-attr]
    assert count(OutboxMessage, OutboxMessage.task_name == TASK, published) == 1
    # each finalized invoice's document request is in the outbox too: published with the batch's
    # follow-ups, or (the one the broker refused) left for the reconciler
    assert count(OutboxMessage, OutboxMessage.task_name == RENDER_TASK) == 2
    assert len([message for message in sent if message["name"] == RENDER_TASK]) >= 1


def test_a_batch_writes_its_requests_fates_in_one_round_trip(
    sent: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every request of a batch, those settled together and those run alone (here: the one
    whose follow-up the broker refused), has its fate written by one command at the batch's end."""
    import fakeredis

    from tasks.fates import RedisFates, resolve

    store = RedisFates(fakeredis.FakeRedis())
    writes: list[list[str]] = []
    put = store.put_succeeded

    def counted(records: Any, ttl_s: int) -> None:
        writes.append([key for key, _ in records])
        put(records, ttl_s)

    monkeypatch.setattr(store, "put_succeeded", counted)
    monkeypatch.setattr("worker.fates._store", lambda: store)
    long, short = customer("usd"), customer("eur")
    items(long, "usd", [100] * 260)
    items(short, "eur", [500])
    first, second = message(long), message(short)

    app.tasks[TASK].run_batch([first, second])

    keys = [first.kwargs["idempotency_key"], second.kwargs["idempotency_key"]]
    assert [sorted(write) for write in writes] == [sorted(keys)]
    chain = resolve(store, keys[:1])
    assert (chain.status, chain.ids, chain.pending) == (
        "pending",
        (first.kwargs["id"],),
        (f"{keys[0]}:part2",),
    )
    assert resolve(store, keys[1:]).ids == (second.kwargs["id"],)
