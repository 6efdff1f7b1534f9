"""Transactional outbox, reconciler and purge on SQLite and PostgreSQL (service level)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from tests.support import call, count, customer, get, items
from worker import clock
from worker.db import UnitOfWork, read_session
from worker.failures import record_failure
from worker.services import maintenance
from worker.settings import get_settings
from worker.tables import IdempotencyKey, Invoice, InvoiceItem, OutboxMessage

pytestmark = pytest.mark.usefixtures("database")
T0 = 1_800_000_000


@pytest.fixture(autouse=True)
def frozen_clock() -> Iterator[list[int]]:
    now = [T0]
    previous = clock.set_source(lambda: now[0])
    yield now
    clock.set_source(previous)


def outbox() -> list[OutboxMessage]:
    with read_session() as session:
        return list(session.execute(select(OutboxMessage).order_by(OutboxMessage.created)).scalars())


def reconcile() -> list[str]:
    with UnitOfWork() as uow:
        due = maintenance.reconcile(uow.session, clock.now(), get_settings())
    return [f.key for f in due]


def test_a_chain_follow_up_is_written_with_the_invoice_and_closed_by_its_own_run() -> None:
    cus = customer("cad")
    items(cus, "cad", [10] * 260)
    first = call("billing.invoices.create", customer=cus, idempotency_key="chain")
    (row,) = outbox()
    assert (row.key, row.task_name, row.done_at, row.published_at) == (
        "chain:part2",
        "billing.invoices.create",
        None,
        None,
    )
    assert first.follow_ups[0].task_id == row.task_id
    call(row.task_name, **row.payload)
    (row,) = outbox()
    assert row.done_at == T0 and not row.failed
    replay = call("billing.invoices.create", customer=cus, idempotency_key="chain", id=first.id)
    assert replay.replayed and replay.follow_ups == []  # nothing left to ask for


def test_reconciler_publishes_what_was_never_published_or_was_lost(frozen_clock: list[int]) -> None:
    cus = customer("cad")
    items(cus, "cad", [10] * 260)
    call("billing.invoices.create", customer=cus, idempotency_key="lost")
    settings = get_settings()
    assert reconcile() == []  # within the grace period the task's own publish is expected
    frozen_clock[0] = T0 + settings.outbox_grace_s
    assert reconcile() == ["lost:part2"]
    with UnitOfWork() as uow:  # published now: not again until republish_after
        uow.session.execute(OutboxMessage.__table__.update().values(published_at=frozen_clock[0]))
        uow.commit()
    assert reconcile() == []
    frozen_clock[0] += settings.outbox_republish_after_s
    assert reconcile() == ["lost:part2"]
    row = outbox()[0]
    call(row.task_name, **row.payload)
    assert reconcile() == []
    assert count(Invoice) == 2


def test_a_follow_up_that_fails_for_good_is_closed_not_republished(frozen_clock: list[int]) -> None:
    cus = customer("cad")
    items(cus, "cad", [10] * 260)
    call("billing.invoices.create", customer=cus, idempotency_key="doomed")
    row = outbox()[0]
    record_failure(
        task_id=row.task_id,
        task_name=row.task_name,
        payload=row.payload,
        error=ValueError("x"),
        retryable=False,
    )
    frozen_clock[0] += 10 * get_settings().outbox_republish_after_s
    assert reconcile() == []
    assert outbox()[0].failed


def test_stale_backlogs_are_invoiced_as_drafts_only_when_enabled(
    frozen_clock: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    cus = customer("usd")
    items(cus, "usd", [100] * 3)
    items(cus, "eur", [100])
    frozen_clock[0] += 7 * 86_400
    assert reconcile() == []  # off by default
    monkeypatch.setenv("BILLING_STALE_PENDING_AFTER_S", "3600")
    get_settings.cache_clear()
    keys = reconcile()
    assert sorted(k.rsplit(":", 2)[1] for k in keys) == ["eur", "usd"]
    assert reconcile() == keys  # the same window asks with the same keys: idempotent
    with UnitOfWork() as uow:
        follow_ups = maintenance.reconcile(uow.session, clock.now(), get_settings())
    for follow_up in follow_ups:
        call(follow_up.task_name, **follow_up.payload)
    assert count(InvoiceItem, InvoiceItem.invoice_id.is_(None)) == 0  # type: ignore[union-attr]
    assert sorted(get(i.id)["status"] for i in invoices()) == ["draft", "draft"]


def invoices() -> list[Invoice]:
    with read_session() as session:
        return list(session.execute(select(Invoice)).scalars())


def test_purge_keeps_keys_for_the_retention_and_then_forgets_them(frozen_clock: list[int]) -> None:
    customer("usd")
    retention = get_settings().idempotency_key_retention_s
    assert retention >= 86_400
    frozen_clock[0] += retention - 1
    with UnitOfWork() as uow:
        maintenance.purge(uow.session, clock.now(), get_settings())
        uow.commit()
    assert count(IdempotencyKey) == 1
    frozen_clock[0] += 2
    with UnitOfWork() as uow:
        maintenance.purge(uow.session, clock.now(), get_settings())
        uow.commit()
    assert count(IdempotencyKey) == 0
