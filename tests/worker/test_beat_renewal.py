"""Real ``celery beat`` + ``celery worker`` on Redis and PostgreSQL: a subscription renews."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tasks.client import BillingClient
from tests.faults.harness import BeatProcess, Cluster
from tests.support import count, get
from worker.devtools.soak import wait_for
from worker.tables import Invoice, Subscription, SubscriptionPeriod, TaskFailure

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

CYCLE = Invoice.billing_reason == "subscription_cycle"


@pytest.fixture
def cluster(postgres: str, redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    redis.Redis.from_url(redis_url).flushdb()
    workers = Cluster(postgres, redis_url, tmp_path, renew_interval_s=1, finalize_drafts_interval_s=1)
    try:
        yield workers
    finally:
        workers.shutdown()
        print(workers.logs())


def test_beat_renews_a_subscription_at_its_period_boundary_once(cluster: Cluster, redis_url: str) -> None:
    cluster.spawn(concurrency=2)
    client = BillingClient(broker_url=redis_url)
    cus = client.create_customer(email="ada@example.com", name="Ada", currency="usd")
    pro = client.create_product(name="Pro")
    daily = client.create_price(product=pro, currency="usd", unit_amount=1200, recurring={"interval": "day"})
    wait_for(
        lambda: _exists(daily), what="the price (created right after its product: retried until it is there)"
    )
    boundary = int(time.time()) + 8  # the first (daily) period ends in 8 seconds
    sub = client.create_subscription(
        customer=cus, items=[{"price": daily, "quantity": 2}], billing_cycle_anchor=boundary - 86_400
    )
    wait_for(lambda: count(Invoice) == 1, what="the subscription_create invoice")
    assert get(sub)["current_period_end"] == boundary

    beats = [BeatProcess(cluster.base_env, cluster.tmp_path, f"beat{i}") for i in range(2)]  # two, on purpose
    try:
        wait_for(lambda: count(Invoice, CYCLE) == 1, timeout=40, what="the renewal after the boundary")
        time.sleep(3)  # more ticks from both beats: nothing more may happen
    finally:
        for beat in beats:
            beat.stop()

    assert count(Invoice, CYCLE) == 1 and count(SubscriptionPeriod) == 2
    view = get(sub)
    assert (view["current_period_start"], view["current_period_end"]) == (boundary, boundary + 86_400)
    cycle = get(view["latest_invoice"])
    assert (cycle["total"], cycle["status"], cycle["auto_advance"]) == (2400, "draft", True)
    assert cycle["lines"]["data"][0]["period"] == {"start": boundary, "end": boundary + 86_400}
    assert count(TaskFailure) == 0 and count(Subscription) == 1


def _exists(price_id: str) -> bool:
    try:
        get(price_id)
    except Exception:
        return False
    return True
