"""``billing exporter``'s collector on a database (SQLite and PostgreSQL) and a fake Redis, with
its clock in the test's hands: each gauge reads what is there, and a source that cannot be read
is reported down instead of faked."""

from __future__ import annotations

import json
import time
from typing import Any

import fakeredis
import pytest
from sqlalchemy import update

from tests.support import customer, items, run_chain
from worker.db import UnitOfWork
from worker.exporter import BillingCollector
from worker.metrics import BEAT_LAST_SUCCESS_KEY
from worker.settings import get_settings
from worker.tables import InvoiceItem, TaskFailure

pytestmark = pytest.mark.usefixtures("database")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def samples(collector: BillingCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in collector.collect()
        for sample in family.samples
    }


def value(found: dict[Any, float], name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def entry(tag: str, queue: str) -> bytes:
    return json.dumps(
        {"body": "", "properties": {"delivery_tag": tag, "delivery_info": {"routing_key": queue}}}
    ).encode()


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> tuple[BillingCollector, fakeredis.FakeRedis, Clock]:
    monkeypatch.setenv("BILLING_BROKER_URL", "redis://fake:6379/0")
    get_settings.cache_clear()
    clock = Clock(2_000_000_000.0)
    found = BillingCollector(get_settings(), now=clock)
    redis = fakeredis.FakeRedis()
    found._redis = redis
    return found, redis, clock


def test_queue_gauges_read_redis(collector: tuple[BillingCollector, fakeredis.FakeRedis, Clock]) -> None:
    exporter, redis, clock = collector
    redis.lpush("billing.items", entry("a", "billing.items"), entry("b", "billing.items"))
    redis.lpush("billing.items\x06\x163", entry("p", "billing.items"))  # a priority list
    redis.hset("unacked", "u1", json.dumps([{"body": ""}, "billing.invoices", "billing.invoices"]))
    redis.hset("unacked", "u2", json.dumps([{"body": ""}, "billing.invoices", "billing.invoices"]))
    redis.hset("unacked", "u3", "not json")
    redis.zadd("unacked_index", {"u1": clock.now - 42, "u2": clock.now - 5})
    redis.hset(BEAT_LAST_SUCCESS_KEY, "billing.maintenance.purge", repr(clock.now - 60))
    first = samples(exporter)
    assert value(first, "billing_exporter_up", source="redis") == 1.0
    assert value(first, "billing_queue_messages", queue="billing.items") == 3.0
    assert value(first, "billing_queue_messages", queue="billing.default") == 0.0
    assert value(first, "billing_queue_unacked_messages", queue="billing.invoices") == 2.0
    assert value(first, "billing_queue_unacked_messages", queue="") == 1.0
    assert value(first, "billing_unacked_oldest_age_seconds") == 42.0
    assert value(first, "billing_beat_last_success_timestamp_seconds", job="billing.maintenance.purge") == (
        clock.now - 60
    )
    assert value(first, "billing_queue_head_wait_seconds", queue="billing.items") == 0.0

    clock.now += 30  # nobody took "a": it has waited at the head 30 s
    assert value(samples(exporter), "billing_queue_head_wait_seconds", queue="billing.items") == 30.0
    redis.rpop("billing.items")
    clock.now += 10  # "b" is at the head now, seen there just now
    assert value(samples(exporter), "billing_queue_head_wait_seconds", queue="billing.items") == 0.0
    redis.delete("billing.items")
    assert value(samples(exporter), "billing_queue_head_wait_seconds", queue="billing.items") == 0.0


def test_database_gauges_and_finalized_counters(
    collector: tuple[BillingCollector, fakeredis.FakeRedis, Clock],
) -> None:
    exporter, _, clock = collector
    ada, bea = customer("usd"), customer("eur")
    items(ada, "usd", [100, 200, 300])
    items(bea, "eur", [500])
    with UnitOfWork() as uow:  # items made an hour before the exporter's clock
        uow.session.execute(update(InvoiceItem).values(created=int(clock.now) - 3600))
        parked = "message_parked"
        uow.session.add(TaskFailure(task_id="t1", task_name="x", error_type="Parked", error_code=parked,
                                    error_message="parked", first_seen=0, last_seen=0))  # fmt: skip
        uow.session.add(TaskFailure(task_id="t2", task_name="x", error_type="BadRequest", error_message="bad",
                                    first_seen=0, last_seen=0, status="resolved"))  # fmt: skip
        uow.commit()
    primed = samples(exporter)
    assert value(primed, "billing_exporter_up", source="database") == 1.0
    assert value(primed, "billing_pending_invoice_items", currency="usd") == 3.0
    assert value(primed, "billing_pending_invoice_items", currency="eur") == 1.0
    assert value(primed, "billing_pending_invoice_items_oldest_age_seconds", currency="usd") == 3600.0
    assert value(primed, "billing_task_failures", status="open") == 1.0
    assert value(primed, "billing_task_failures", status="resolved") == 1.0
    assert value(primed, "billing_parked_messages") == 1.0
    assert value(primed, "billing_outbox_open_rows") == 0.0
    assert value(primed, "billing_invoices_finalized_total", currency="usd") is None

    clock.now = time.time()  # invoices are stamped with the real clock
    run_chain(ada, currency="usd", finalize=True)
    after = samples(exporter)
    assert value(after, "billing_invoices_finalized_total", currency="usd") == 1.0
    assert value(after, "billing_invoice_lines_finalized_total", currency="usd") == 3.0
    assert value(after, "billing_pending_invoice_items", currency="usd") is None
    again = samples(exporter)  # counted once, however often it is scraped within the window
    assert value(again, "billing_invoices_finalized_total", currency="usd") == 1.0
    assert value(again, "billing_invoice_lines_finalized_total", currency="usd") == 3.0


def test_a_source_that_cannot_be_read_is_reported_down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_BROKER_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    monkeypatch.setenv("BILLING_SCRAPE_TIMEOUT_MS", "500")
    get_settings.cache_clear()
    found = samples(BillingCollector(get_settings()))
    assert value(found, "billing_exporter_up", source="redis") == 0.0
    assert value(found, "billing_exporter_up", source="database") == 1.0
    assert not [name for name, _ in found if name.startswith("billing_queue_")]
