"""Webhook deliveries under faults, with real worker and beat processes, a private Redis and a real
HTTP receiver on 127.0.0.1 (README: Webhooks). Every scenario ends with every event delivered
(answered 200) and duplicates only where at-least-once forces them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib
from sqlalchemy import select

from tasks.client import BillingClient
from tasks.ids import new_id
from tasks.webhooks import new_signing_secret
from tests.faults.harness import BeatProcess, Cluster, RedisServer, wait_for
from tests.support import call
from worker.db import read_session
from worker.devtools.receiver import Receiver
from worker.settings import get_settings
from worker.tables import Event, WebhookAttempt, WebhookDelivery

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

DELIVER = "billing.webhooks.deliver"


class Rig:
    def __init__(self, cluster: Cluster, redis: RedisServer, tmp_path: Path) -> None:
        self.cluster, self.redis, self.tmp_path = cluster, redis, tmp_path
        self.client = BillingClient(broker_url=redis.url)
        self.beats: list[BeatProcess] = []

    def beat(self) -> None:
        self.beats.append(BeatProcess(self.cluster.base_env, self.tmp_path, f"beat{len(self.beats)}"))

    def endpoint(self, receiver: Receiver) -> str:
        secret = new_signing_secret()
        receiver.secret = secret
        outcome = call(
            "billing.webhook_endpoints.create",
            id=new_id("we"),
            url=receiver.url,
            enabled_events=["customer.created"],
            secret=secret,
        )
        assert outcome.id
        return outcome.id


@pytest.fixture
def rig(postgres: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    monkeypatch.setenv("BILLING_WEBHOOKS_ALLOW_PRIVATE", "true")  # the receiver is on 127.0.0.1
    get_settings.cache_clear()
    redis = RedisServer(tmp_path).start()  # private: the flush test flushes it
    cluster = Cluster(
        postgres,
        redis.url,
        tmp_path,
        visibility_timeout_s=2,
        unacked_restore_interval_s=1,
        outbox_grace_s=1,
        outbox_republish_after_s=3,
        reconcile_interval_s=1,
        webhooks_allow_private="true",
        webhook_timeout_s=1,
        webhook_claim_margin_s=2,
        webhook_retry_schedule_s="[1, 1, 2, 2, 2]",
        webhook_dispatch_interval_s=1,
        webhook_redispatch_after_s=2,
    )
    built = Rig(cluster, redis, tmp_path)
    try:
        yield built
    finally:
        for beat in built.beats:
            beat.stop()
        cluster.shutdown()
        redis.kill()
        print(cluster.logs())


def customer_events() -> set[str]:
    with read_session() as session:
        return set(session.execute(select(Event.id).where(Event.type == "customer.created")).scalars())


def all_delivered(receiver: Receiver, expected: int) -> bool:
    events = customer_events()
    return len(events) == expected and events <= set(receiver.event_ids(answered=200))


def attempts() -> list[WebhookAttempt]:
    with read_session() as session:
        return list(session.execute(select(WebhookAttempt).order_by(WebhookAttempt.id)).scalars())


def assert_books_clean() -> None:
    from worker.audit import audit_database

    assert audit_database() == []


def delivery_statuses() -> list[str]:
    with read_session() as session:
        return sorted(session.execute(select(WebhookDelivery.status)).scalars())


def test_a_receiver_answering_500_then_200_gets_every_event(rig: Rig) -> None:
    with Receiver(answers=[500, 500, 502]) as receiver:
        rig.endpoint(receiver)
        rig.cluster.spawn()
        rig.beat()
        for name in ("Ada", "Bea", "Chloé"):
            rig.client.create_customer(name=name)
        wait_for(lambda: all_delivered(receiver, 3), timeout=60, what="every event delivered")
    assert all(r.verified for r in receiver.received)
    assert sorted(a.http_status for a in attempts()) == [200, 200, 200, 500, 500, 502]
    assert delivery_statuses() == ["succeeded"] * 3
    assert len(receiver.event_ids(answered=200)) == 3  # no duplicate: each 200 was recorded
    assert_books_clean()


def test_a_receiver_slower_than_the_timeout_is_tried_again(rig: Rig) -> None:
    with Receiver(answers=[("sleep", 2.5, 200)]) as receiver:
        rig.endpoint(receiver)
        rig.cluster.spawn()
        rig.beat()
        rig.client.create_customer(name="Slow")
        wait_for(lambda: delivery_statuses() == ["succeeded"], timeout=60, what="the retry to succeed")
        # the first request's handler is still sleeping when the retry succeeds: let it finish
        wait_for(lambda: len(receiver.received) == 2, timeout=10, what="the slow answer to end")
    (event_id,) = customer_events()
    tries = attempts()
    assert [(a.status, a.error) for a in tries] == [("failed", "timed out after 1 s"), ("succeeded", None)]
    # the slow receiver did handle the first request after its sender gave up: the one
    # duplicate at-least-once forces (receivers dedupe on the event id)
    assert receiver.event_ids(answered=200) == [event_id, event_id]
    assert_books_clean()


def test_a_worker_killed_mid_delivery_delivers_once_more_after_a_restart(rig: Rig) -> None:
    with Receiver() as receiver:
        rig.endpoint(receiver)
        worker = rig.cluster.spawn(BILLING_FAILPOINTS=f"{DELIVER}@after_send=kill_worker:once")
        rig.beat()
        rig.client.create_customer(name="Killed")
        worker.wait_dead()  # the receiver answered 200; the worker died before recording it
        assert [a.status for a in attempts()] == ["in_progress"]
        rig.cluster.spawn()
        wait_for(lambda: delivery_statuses() == ["succeeded"], timeout=60, what="the delivery after restart")
    (event_id,) = customer_events()
    assert [a.status for a in attempts()] == ["abandoned", "succeeded"]
    assert receiver.event_ids(answered=200) == [event_id, event_id]  # at least once: sent again
    assert_books_clean()


def test_redis_flushed_with_deliveries_queued_still_delivers_everything(rig: Rig) -> None:
    with Receiver() as receiver:
        rig.endpoint(receiver)
        for name in (
            "Flushed1",
            "Flushed2",
            "Flushed3",
        ):  # no worker yet: made here, published as a worker would
            for follow_up in call("billing.customers.create", name=name).follow_ups:
                rig.client.app.send_task(
                    follow_up.task_name,
                    kwargs=follow_up.payload,
                    queue="billing.webhooks",
                    task_id=follow_up.task_id,
                )
        queued = redis_lib.Redis(port=rig.redis.port)
        assert queued.llen("billing.webhooks") == 3
        queued.flushall()  # a private server: every queued delivery is gone
        rig.cluster.spawn()
        rig.beat()
        wait_for(lambda: all_delivered(receiver, 3), timeout=60, what="every event delivered after the flush")
    assert delivery_statuses() == ["succeeded"] * 3
    assert len(receiver.event_ids(answered=200)) == 3
    assert_books_clean()


def test_a_producer_service_receives_its_invoice_events_signed(rig: Rig) -> None:
    """README: A producer service, end to end: an endpoint made through the client (a request
    through the broker, waited for), items and an invoice enqueued, the invoice request's outcome
    waited for, and the receiving service gets ``invoiceitem.created``, ``invoice.created`` and
    ``invoice.finalized``, each verified."""
    with Receiver() as receiver:
        rig.cluster.spawn()
        endpoint = rig.client.create_webhook_endpoint(
            url=receiver.url, enabled_events=["invoiceitem.created", "invoice.created", "invoice.finalized"]
        )
        receiver.secret = endpoint.secret  # what the receiving service keeps in its settings
        assert endpoint.wait(timeout=30).status == "succeeded"
        customer = rig.client.create_customer(name="Ada", currency="usd")
        items = [rig.client.create_invoice_item(customer=customer, amount=a) for a in (4900, 1200)]
        invoice = rig.client.create_invoice(customer=customer, finalize=True)
        fate = invoice.wait(timeout=60)
        assert (fate.status, fate.ids) == ("succeeded", (invoice,)), fate

        def received_types() -> list[str]:
            return sorted(r.event["type"] for r in receiver.received)

        expected = ["invoice.created", "invoice.finalized", "invoiceitem.created", "invoiceitem.created"]
        wait_for(lambda: received_types() == expected, timeout=60, what="the invoice's events")
    assert all(r.verified and r.answered == 200 for r in receiver.received)
    objects = {r.event["type"]: r.event["data"]["object"] for r in receiver.received}
    assert objects["invoice.finalized"]["id"] == invoice and objects["invoice.finalized"]["status"] == "open"
    assert sorted(
        r.event["data"]["object"]["id"] for r in receiver.received if r.event["type"] == "invoiceitem.created"
    ) == sorted(items)
    assert_books_clean()
