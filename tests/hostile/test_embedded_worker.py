"""Hostile entries on every queue of the embedded (in-process) worker, on Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from celery import Celery

from tasks.client import BillingClient
from tasks.operations import ALL_QUEUES
from tests.hostile.probe import probe
from tests.hostile.shapes import SHAPES
from worker.devtools.embedded import EmbeddedWorker
from worker.settings import get_settings

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def embedded(postgres: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedWorker]:
    from worker.app import create_app

    redis.Redis.from_url(redis_url).flushdb()
    monkeypatch.setenv("BILLING_BROKER_URL", redis_url)
    monkeypatch.setenv("BILLING_BROKER_POLL_INTERVAL_S", "0.1")
    get_settings.cache_clear()
    app: Celery = create_app()
    with EmbeddedWorker(app) as worker:
        yield worker


def test_every_hostile_entry_on_every_queue_is_recorded_and_the_queue_keeps_flowing(
    embedded: EmbeddedWorker, redis_url: str
) -> None:
    client, producer = redis.Redis.from_url(redis_url), BillingClient(broker_url=redis_url).app
    for queue in ALL_QUEUES:
        for shape in SHAPES:
            # in-process, the canary processed behind each entry is the proof of a live consumer
            probe(client, producer, queue, shape, lambda: True)
