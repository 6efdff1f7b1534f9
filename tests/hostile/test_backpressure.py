"""The client bounds each queue: past ``max_queue_depth`` it waits for room, then raises ``QueueFull``."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from tasks.client import BillingClient, QueueFull
from tasks.operations import QUEUE_DEFAULT, QUEUE_ITEMS

pytestmark = pytest.mark.redis


@pytest.fixture
def broker(redis_url: str) -> redis.Redis:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    return client


def test_a_full_queue_refuses_the_call_and_sends_nothing(redis_url: str, broker: redis.Redis) -> None:
    client = BillingClient(broker_url=redis_url, max_queue_depth=5, queue_full_wait_s=0.2)
    for _ in range(5):
        client.create_customer(email="a@example.com")
    started = time.monotonic()
    with pytest.raises(QueueFull, match=r"billing\.default holds 5"):
        client.create_customer(email="a@example.com")
    assert time.monotonic() - started >= 0.2  # it waited for room first
    assert broker.llen(QUEUE_DEFAULT) == 5


def test_a_call_waits_for_the_workers_to_make_room(redis_url: str, broker: redis.Redis) -> None:
    client = BillingClient(broker_url=redis_url, max_queue_depth=3, queue_full_wait_s=5)
    client.create_invoice_items([{"customer": "cus_A", "currency": "usd", "amount": 1}] * 2500)  # 3 messages
    threading.Timer(0.3, lambda: broker.rpop(QUEUE_ITEMS)).start()  # a worker takes one
    started = time.monotonic()
    client.create_invoice_item(customer="cus_A", currency="usd", amount=1)
    assert 0.2 < time.monotonic() - started < 4
    assert broker.llen(QUEUE_ITEMS) == 3


def test_the_bound_comes_from_the_environment_and_is_off_by_default(
    redis_url: str, broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert BillingClient(broker_url=redis_url).max_queue_depth is None
    monkeypatch.setenv("BILLING_MAX_QUEUE_DEPTH", "2")
    monkeypatch.setenv("BILLING_QUEUE_FULL_WAIT_S", "0")
    client = BillingClient(broker_url=redis_url)
    client.create_customer(email="a@example.com")
    client.create_customer(email="b@example.com")
    with pytest.raises(QueueFull):
        client.create_customer(email="c@example.com")


def test_other_queues_are_not_held_back(redis_url: str, broker: redis.Redis) -> None:
    client = BillingClient(broker_url=redis_url, max_queue_depth=1, queue_full_wait_s=0)
    client.create_customer(email="a@example.com")
    client.create_invoice_item(customer="cus_A", currency="usd", amount=1)  # another queue: room
    assert (broker.llen(QUEUE_DEFAULT), broker.llen(QUEUE_ITEMS)) == (1, 1)
