"""tasks.broker: a message taken from Redis is never only in the worker's hands.

The decisive test kills the consumer at the worst moment (the reply read, the message
not yet handed to kombu's QoS) and shows kombu's plain transport losing the message
where ours brings it back after the visibility timeout.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue

from tasks.broker import DOORBELL_TOKENS, doorbell

pytestmark = pytest.mark.slow

QUEUE = Queue("broker-test", Exchange("broker-test", type="direct"), routing_key="broker-test")
RELIABLE = "tasks.broker:Transport"
PLAIN = "redis"


class Died(BaseException):
    """Stands in for SIGKILL: raised where the process would vanish."""


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def connect(redis_url: str, transport: str, **options: Any) -> Connection:
    return Connection(redis_url, transport=transport, transport_options={"polling_interval": 0.2, **options})


def publish(connection: Connection, *bodies: dict[str, Any]) -> None:
    producer = Producer(connection.default_channel)
    for body in bodies:
        producer.publish(
            body, exchange=QUEUE.exchange, routing_key=QUEUE.routing_key, declare=[QUEUE], serializer="json"
        )


def consume(connection: Connection, wanted: int, *, timeout: float = 5.0, ack: bool = True) -> list[Any]:
    received: list[Any] = []

    def on_message(body: Any, message: Any) -> None:
        received.append(body)
        if ack:
            message.ack()

    deadline = time.monotonic() + timeout
    with Consumer(connection.default_channel, [QUEUE], callbacks=[on_message]):
        while len(received) < wanted and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                connection.drain_events(timeout=0.5)
    return received


def die_before_qos(connection: Connection) -> None:
    """Make the consumer die after reading a reply, before kombu records the message."""
    channel = connection.default_channel

    def vanish(message: Any, queue: str) -> None:
        raise Died(queue)

    channel.connection._deliver = vanish


def restore_expired(redis_url: str, transport: str) -> None:
    """What any live worker does every unacked_restore_interval, with an expired timeout."""
    with connect(redis_url, transport, visibility_timeout=0) as connection:
        connection.default_channel.qos.restore_visible(num=100, interval=1)


@pytest.mark.parametrize(("transport", "recovered"), [(RELIABLE, True), (PLAIN, False)])
def test_a_consumer_that_dies_right_after_taking_a_message(
    redis_url: str, client: redis.Redis, transport: str, recovered: bool
) -> None:
    with connect(redis_url, transport) as producer:
        publish(producer, {"n": 1})
    with connect(redis_url, transport) as connection:
        die_before_qos(connection)
        with pytest.raises(Died):
            consume(connection, 1)
    assert client.llen(QUEUE.name) == 0, "the message was taken"

    time.sleep(0.01)
    restore_expired(redis_url, transport)
    with connect(redis_url, transport) as connection:
        assert consume(connection, 1, timeout=1.5) == ([{"n": 1}] if recovered else [])
    # kombu's plain transport is the control: it shows the loss this module exists to close
    assert client.hlen("unacked") == 0


def test_the_record_is_the_one_kombu_writes_itself(redis_url: str, client: redis.Redis) -> None:
    """The script writes [payload, exchange, routing_key] like kombu's QoS.append, so
    kombu's restore and ack handle a message the script took exactly as their own."""
    with connect(redis_url, RELIABLE) as producer:
        publish(producer, {"n": 2})
    with connect(redis_url, RELIABLE) as connection:
        die_before_qos(connection)
        with pytest.raises(Died):
            consume(connection, 1)
    ((tag, raw),) = client.hgetall("unacked").items()
    payload, exchange, routing_key = json.loads(raw)
    assert (exchange, routing_key) == ("broker-test", "broker-test")
    assert payload["properties"]["delivery_tag"] == tag.decode()
    body = payload["body"]
    if payload["properties"]["body_encoding"] == "base64":
        body = base64.b64decode(body)
    assert json.loads(body) == {"n": 2}
    assert client.zscore("unacked_index", tag) == pytest.approx(time.time(), abs=5)


def test_an_acked_message_leaves_no_record(redis_url: str, client: redis.Redis) -> None:
    with connect(redis_url, RELIABLE) as connection:
        publish(connection, *({"n": n} for n in range(5)))
        assert consume(connection, 5) == [{"n": n} for n in range(5)]
    assert (client.hlen("unacked"), client.zcard("unacked_index"), client.llen(QUEUE.name)) == (0, 0, 0)


def test_an_unacked_message_is_redelivered_by_kombus_own_restore(redis_url: str, client: redis.Redis) -> None:
    with connect(redis_url, RELIABLE) as connection:
        publish(connection, {"n": 3})
        assert consume(connection, 1, ack=False) == [{"n": 3}]
    # closing the channel restores what it delivered and never acked (kombu's QoS)
    with connect(redis_url, RELIABLE) as connection:
        assert consume(connection, 1) == [{"n": 3}]
    assert client.hlen("unacked") == 0


def test_a_no_ack_consumer_leaves_nothing_to_redeliver(redis_url: str, client: redis.Redis) -> None:
    with connect(redis_url, RELIABLE) as connection:
        publish(connection, {"n": 4})
        received: list[Any] = []
        with Consumer(
            connection.default_channel, [QUEUE], callbacks=[lambda b, m: received.append(b)], no_ack=True
        ):
            connection.drain_events(timeout=2)
    assert received == [{"n": 4}]
    assert client.hlen("unacked") == 0


def test_an_idle_consumer_wakes_on_the_doorbell_not_the_timeout(redis_url: str, client: redis.Redis) -> None:
    """With a 3 s polling interval, a message published to an idle consumer still
    arrives at once: the producer's token ends the consumer's wait."""
    with (
        connect(redis_url, RELIABLE, polling_interval=3) as connection,
        connect(redis_url, RELIABLE) as producer,
    ):
        received: list[Any] = []
        with Consumer(
            connection.default_channel, [QUEUE], callbacks=[lambda b, m: (received.append(b), m.ack())]
        ):
            with pytest.raises(TimeoutError):
                connection.drain_events(timeout=0.3)  # now waiting on the doorbell
            started = time.monotonic()
            publish(producer, {"n": 5})
            connection.drain_events(timeout=2.5)
            while not received:
                connection.drain_events(timeout=2.5)
            waited = time.monotonic() - started
    assert received == [{"n": 5}]
    assert waited < 1.0, f"took {waited:.2f} s: woke on the timeout, not the doorbell"


def test_tokens_are_capped(redis_url: str, client: redis.Redis) -> None:
    with connect(redis_url, RELIABLE) as connection:
        publish(connection, *({"n": n} for n in range(DOORBELL_TOKENS * 3)))
    assert client.llen(doorbell(QUEUE.name)) == DOORBELL_TOKENS
    assert client.llen(QUEUE.name) == DOORBELL_TOKENS * 3


def test_messages_from_a_plain_kombu_producer_are_taken_too(redis_url: str, client: redis.Redis) -> None:
    with connect(redis_url, PLAIN) as producer:
        publish(producer, {"n": 6}, {"n": 7})
    with connect(redis_url, RELIABLE) as connection:
        assert consume(connection, 2) == [{"n": 6}, {"n": 7}]
    assert client.hlen("unacked") == 0


def test_the_billing_client_rings_the_doorbell(redis_url: str, client: redis.Redis) -> None:
    """Producers' messages must wake idle workers at once: ``BillingClient`` sends with this
    transport on Redis (a plain Celery producer would leave an idle worker asleep for up to
    its polling interval), and so does the worker's app for follow-ups and beat."""
    from tasks.client import BillingClient
    from tasks.operations import queue_for
    from worker.app import celery_config

    billing = BillingClient(broker_url=redis_url)
    try:
        billing.create_customer(email="ada@example.com")
    finally:
        billing.app.close()
    queue = queue_for("billing.customers.create")
    assert client.llen(queue) == 1
    assert client.llen(doorbell(queue)) == 1
    assert celery_config(redis_url, 60)["broker_transport"] == RELIABLE
    assert celery_config("memory://localhost/", 60)["broker_transport"] is None
