"""tasks.broker without a server: the take script, the poll around it, the doorbell, restore.

``tests/worker/test_broker.py`` proves on real Redis what needs real Redis and real
timing: a consumer killed after the take loses nothing where kombu's plain transport
does, the record is the one kombu writes, an idle consumer wakes on a token, tokens are
capped. This module tests the logic behind those, exactly and without waiting, on
fakeredis (the seam is in ``conftest.py``; fakeredis runs the Lua script with ``lupa``):

- the script itself, called with ``EVAL`` as the channel calls it: which key it pops,
  what it records (byte for byte, with the timestamp it was given), and when it records
  nothing (a queue consumed without acks, a message that is not kombu's);
- one poll of the channel (what kombu's event loop does per readable socket: send the
  command, read the reply), driven by hand because the event loop needs a real socket:
  key order, the queue a priority key is delivered as, per-key no-ack flags, and the
  switch between taking and waiting on the doorbells;
- restore after the visibility timeout and ack, with kombu's clock and the script's
  clock set by the test instead of slept through.

No fakeredis gap was met: ``EVAL`` with ``cjson``, ``BRPOP`` with a timeout on a sent
command, pipelines, ``WATCH`` transactions and redis-py's Lua lock all run. One difference
is known: fakeredis's ``cjson.encode`` is Python's JSON, and Redis's escapes ``/`` as
``\\/``, so the byte-exact records here use exchange names without one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from kombu import Connection, Exchange, Producer, Queue
from kombu.transport import redis as kombu_redis

from tasks import broker
from tasks.broker import DOORBELL_TOKENS, REFUSED_KEY, REFUSED_SEQ_KEY, TAKE_SCRIPT, doorbell
from tests.producer.wire import broker_url, decode

TRANSPORT = "tasks.broker:Transport"
NOW = 1_700_000_000.25
SEP = "\x06\x16"  # kombu's separator between a queue's name and its priority


def kombu_message(tag: str, **info: str) -> str:
    """A queue entry shaped as kombu writes it (only the parts the script reads)."""
    return json.dumps({"body": "e30=", "properties": {"delivery_tag": tag, "delivery_info": info}})


def take(
    redis: fakeredis.FakeRedis, *queues: str, no_ack: tuple[str, ...] = (), checked: bool = False
) -> Any:
    """The script as ``Channel._brpop_start`` calls it."""
    flags = ["1" if queue in no_ack else "0" for queue in queues]
    keys = ("unacked", "unacked_index", REFUSED_KEY, REFUSED_SEQ_KEY, *queues)
    return redis.eval(TAKE_SCRIPT, len(keys), *keys, repr(NOW), "1" if checked else "0", *flags)


# -- the script --------------------------------------------------------------------------


def test_the_take_pops_the_oldest_message_and_records_it_in_the_same_step(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    first = kombu_message("tag-1", exchange="billing.default", routing_key="billing.default")
    second = kombu_message("tag-2", exchange="billing.default", routing_key="billing.default")
    fake_redis.lpush("billing.default", first, second)

    assert take(fake_redis, "billing.default") == [b"billing.default", first.encode(), b"tag-1"]
    assert fake_redis.lrange("billing.default", 0, -1) == [second.encode()]
    assert fake_redis.hgetall("unacked") == {
        b"tag-1": f'[{first},"billing.default","billing.default"]'.encode()
    }
    assert fake_redis.zrange("unacked_index", 0, -1, withscores=True) == [(b"tag-1", NOW)]


def test_the_queues_are_tried_in_the_order_given(fake_redis: fakeredis.FakeRedis) -> None:
    fake_redis.lpush("b", kombu_message("tag-b"))
    fake_redis.lpush("c", kombu_message("tag-c"))

    assert take(fake_redis, "a", "b", "c") == [b"b", kombu_message("tag-b").encode(), b"tag-b"]
    assert (fake_redis.llen("b"), fake_redis.llen("c")) == (0, 1)
    assert fake_redis.hkeys("unacked") == [b"tag-b"]


@pytest.mark.parametrize(
    ("holder", "no_ack", "recorded"),
    [("b", ("a",), True), ("b", ("b",), False), ("a", ("a",), False), ("a", ("b",), True)],
    ids=["acked-after-a-no-ack-queue", "no-ack", "no-ack-first", "acked-before-a-no-ack-queue"],
)
def test_a_queue_consumed_without_acks_is_taken_without_a_record(
    fake_redis: fakeredis.FakeRedis, holder: str, no_ack: tuple[str, ...], recorded: bool
) -> None:
    """Each key has its own flag: a no-ack message recorded would be delivered twice, an
    acked one not recorded could be lost."""
    fake_redis.lpush(holder, kombu_message("tag"))

    tag = b"tag" if recorded else b""
    assert take(fake_redis, "a", "b", no_ack=no_ack) == [holder.encode(), kombu_message("tag").encode(), tag]
    assert fake_redis.hkeys("unacked") == ([b"tag"] if recorded else [])
    assert fake_redis.zcard("unacked_index") == (1 if recorded else 0)


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        json.dumps(["a", "list"]),
        json.dumps({"properties": "not an object"}),
        json.dumps({"properties": {"delivery_info": {}}}),
    ],
    ids=["not-json", "a-list", "properties-not-an-object", "no-delivery-tag"],
)
def test_an_entry_that_is_not_kombus_is_handed_on_without_a_record(
    fake_redis: fakeredis.FakeRedis, raw: str
) -> None:
    """The script must not fail after its RPOP (Redis keeps a failed script's writes), so
    an entry it cannot read goes to the consumer as it is, with nothing to restore."""
    fake_redis.lpush("q", raw)

    assert take(fake_redis, "q") == [b"q", raw.encode(), None]
    assert (fake_redis.llen("q"), fake_redis.hlen("unacked"), fake_redis.zcard("unacked_index")) == (0, 0, 0)


@pytest.mark.parametrize(
    "raw",
    ["not json", json.dumps(["a", "list"]), json.dumps({"properties": {"delivery_tag": 7}}), "\xff\x00"],
    ids=["not-json", "a-list", "numeric-delivery-tag", "binary"],
)
def test_a_checked_entry_without_a_delivery_tag_moves_to_the_refused_list(
    fake_redis: fakeredis.FakeRedis, raw: str
) -> None:
    """Nothing could acknowledge it, so nothing may hold it only in memory: it leaves its
    queue for the refused list in the same step, numbered, with its queue and why."""
    fake_redis.lpush("q", raw)

    assert take(fake_redis, "q", checked=True) == [b"q", raw.encode(), None]
    assert (fake_redis.llen("q"), fake_redis.hlen("unacked")) == (0, 0)
    (refused,) = fake_redis.lrange(REFUSED_KEY, 0, -1)
    seq, queue_name, reason, entry = refused.split(b"\n", 3)
    assert (seq, queue_name, entry) == (b"1", b"q", raw.encode())
    assert b"delivery_tag" in reason


def test_a_checked_entry_forging_an_unacked_tag_moves_to_the_refused_list(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    """A second record under one tag would replace the first message's (lost if its worker then
    dies), and the first ack would remove both: the copy is refused, the original untouched."""
    original, forged = kombu_message("tag-1", routing_key="q"), kombu_message("tag-1", routing_key="x")
    fake_redis.lpush("q", original, forged)
    take(fake_redis, "q", checked=True)

    assert take(fake_redis, "q", checked=True) == [b"q", forged.encode(), None]
    assert fake_redis.hgetall("unacked") == {b"tag-1": f'[{original},"","q"]'.encode()}
    (refused,) = fake_redis.lrange(REFUSED_KEY, 0, -1)
    assert refused.split(b"\n", 3)[2:] == [
        b"properties.delivery_tag is the tag of a message still unacknowledged",
        forged.encode(),
    ]
    # Unchecked (kombu's own behaviour), the same entry is taken as it comes.
    fake_redis.lpush("q", forged)
    assert take(fake_redis, "q") == [b"q", forged.encode(), b"tag-1"]


def test_a_message_without_delivery_info_is_recorded_with_empty_routing(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    raw = json.dumps({"body": "e30=", "properties": {"delivery_tag": "tag"}})
    fake_redis.lpush("q", raw)

    take(fake_redis, "q")
    assert fake_redis.hget("unacked", "tag") == f'[{raw},"",""]'.encode()


def test_nothing_to_take_writes_nothing(fake_redis: fakeredis.FakeRedis) -> None:
    assert take(fake_redis, "a", "b") is None
    assert fake_redis.keys("*") == []


# -- one poll of the channel ---------------------------------------------------------------


def queue(name: str, **options: Any) -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name, **options)


A, B = queue("a"), queue("b")


@pytest.fixture
def connection(fake_server: fakeredis.FakeServer) -> Iterator[Connection]:
    options = {"polling_interval": 0.05, "visibility_timeout": 3600}
    with Connection(broker_url(), transport=TRANSPORT, transport_options=options) as connection:
        yield connection


def publish(connection: Connection, target: Queue, body: Any, priority: int = 0) -> None:
    Producer(connection.default_channel).publish(
        body,
        exchange=target.exchange,
        routing_key=target.routing_key,
        declare=[target],
        serializer="json",
        priority=priority,
    )


def poll(connection: Connection) -> bool:
    """One step of kombu's event loop for the channel: send the poll, read its reply.
    Raises ``Empty`` when nothing was delivered."""
    channel = connection.default_channel
    client = channel.client
    if client.connection is None:  # the event loop's registration does this
        client.connection = client.connection_pool.get_connection()
    channel._brpop_start()
    return channel._brpop_read()


def handed_over(
    connection: Connection, *queues: Queue, no_ack: tuple[Queue, ...] = ()
) -> list[tuple[str, Any]]:
    """Consume ``queues``; collect what a poll hands to kombu as (queue, body), stopping
    before kombu's QoS, so Redis shows what the take alone wrote."""
    channel = connection.default_channel
    delivered: list[tuple[str, Any]] = []
    for consumed in queues:
        consumed(channel).declare()
        channel.basic_consume(
            consumed.name, consumed in no_ack, lambda message: None, consumer_tag=consumed.name
        )
    channel.connection._deliver = lambda raw, name: delivered.append((name, decode(json.dumps(raw))[1]))
    return delivered


def test_a_poll_takes_by_priority_then_by_queue_and_names_the_queue(
    connection: Connection, fake_redis: fakeredis.FakeRedis
) -> None:
    delivered = handed_over(connection, A, B)
    publish(connection, A, {"n": "a9"}, priority=9)
    publish(connection, B, {"n": "b0"}, priority=0)
    assert fake_redis.llen(f"a{SEP}9") == 1

    assert poll(connection) and poll(connection)
    assert delivered == [("b", {"n": "b0"}), ("a", {"n": "a9"})]
    assert fake_redis.hlen("unacked") == 2
    with pytest.raises(kombu_redis.Empty):
        poll(connection)


def test_the_no_ack_flags_follow_their_keys_across_priorities(
    connection: Connection, fake_redis: fakeredis.FakeRedis
) -> None:
    """The poll lists every queue at every priority step (a, b, a:3, b:3, ...); the flags
    must line up with that list, up to its last key."""
    delivered = handed_over(connection, A, B, no_ack=(A,))
    publish(connection, A, {"n": "a9"}, priority=9)
    publish(connection, B, {"n": "b9"}, priority=9)

    assert poll(connection) and poll(connection)
    assert delivered == [("a", {"n": "a9"}), ("b", {"n": "b9"})]
    ((_, raw),) = fake_redis.hgetall("unacked").items()
    payload, exchange, routing_key = json.loads(raw)
    assert (decode(json.dumps(payload))[1], exchange, routing_key) == ({"n": "b9"}, "b", "b")


def test_an_empty_poll_waits_on_the_doorbell_and_a_token_ends_the_wait(
    connection: Connection, fake_redis: fakeredis.FakeRedis
) -> None:
    delivered = handed_over(connection, A)
    with pytest.raises(kombu_redis.Empty):
        poll(connection)  # nothing to take: the next poll waits on the doorbell

    publish(connection, A, {"n": 1})
    assert fake_redis.lrange(doorbell("a"), 0, -1) == [b"1"]
    with pytest.raises(kombu_redis.Empty):
        poll(connection)  # the token ends the wait; the message is still queued
    assert (fake_redis.llen(doorbell("a")), fake_redis.llen("a"), delivered) == (0, 1, [])

    assert poll(connection)
    assert delivered == [("a", {"n": 1})]


def test_a_wait_without_a_token_ends_after_the_polling_interval(
    connection: Connection, fake_redis: fakeredis.FakeRedis
) -> None:
    """A message from a producer that rings no doorbell (kombu's plain transport) is taken
    by the first poll after the wait times out."""
    delivered = handed_over(connection, A)
    with pytest.raises(kombu_redis.Empty):
        poll(connection)
    publish(connection, A, {"n": 2})
    fake_redis.delete(doorbell("a"))  # as if sent without a token

    with pytest.raises(kombu_redis.Empty):
        poll(connection)  # BRPOP on the empty doorbell: returns after polling_interval (0.05 s)
    assert poll(connection)
    assert delivered == [("a", {"n": 2})]


# -- producing -------------------------------------------------------------------------------


def test_a_batched_publish_rings_the_doorbell_with_each_message(
    connection: Connection, fake_redis: fakeredis.FakeRedis
) -> None:
    producer = Producer(connection.default_channel)
    with producer.batch():
        for n in range(DOORBELL_TOKENS + 4):
            producer.publish({"n": n}, exchange=A.exchange, routing_key="a", declare=[A], serializer="json")
        assert fake_redis.llen("a") == 0  # still buffered: this is kombu's batch path
    assert fake_redis.llen("a") == DOORBELL_TOKENS + 4
    assert fake_redis.llen(doorbell("a")) == DOORBELL_TOKENS


def test_an_expiring_queue_keeps_its_expiry(connection: Connection, fake_redis: fakeredis.FakeRedis) -> None:
    publish(connection, queue("short-lived", expires=30), {"n": 3})
    assert 29_000 < fake_redis.pttl("short-lived") <= 30_000


def test_a_global_key_prefix_is_refused(fake_server: fakeredis.FakeServer) -> None:
    """The script and the doorbells name their keys unprefixed: a prefix would split them
    from kombu's prefixed queues, so it is refused rather than half applied."""
    options = {"global_keyprefix": "billing:"}
    with (
        Connection(broker_url(), transport=TRANSPORT, transport_options=options) as connection,
        pytest.raises(ValueError, match="global_keyprefix"),
    ):
        connection.default_channel  # noqa: B018  (creating the channel is the test)


# -- restore and ack -------------------------------------------------------------------------


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The time the take script records (tasks.broker) and the time kombu restores by."""
    now = [NOW]
    monkeypatch.setattr(broker, "time", lambda: now[0])
    monkeypatch.setattr(kombu_redis, "time", lambda: now[0])
    return now


def restore_visible(connection: Connection) -> None:
    """What a live worker runs every ``unacked_restore_interval``."""
    connection.default_channel.qos.restore_visible(num=10, interval=1)


def test_a_message_taken_and_never_handled_comes_back_after_the_visibility_timeout(
    connection: Connection, fake_redis: fakeredis.FakeRedis, clock: list[float]
) -> None:
    delivered = handed_over(connection, A)  # the consumer then vanishes: kombu never sees it
    publish(connection, A, {"n": "lost?"})
    assert poll(connection)
    assert delivered == [("a", {"n": "lost?"})]
    ((tag, score),) = fake_redis.zrange("unacked_index", 0, -1, withscores=True)
    assert score == NOW
    publish(connection, A, {"n": "later"})

    clock[0] = NOW + 3599
    restore_visible(connection)
    assert (fake_redis.llen("a"), fake_redis.hlen("unacked")) == (1, 1)

    clock[0] = NOW + 3601
    restore_visible(connection)
    assert (fake_redis.hlen("unacked"), fake_redis.zcard("unacked_index")) == (0, 0)
    restored, later = (decode(raw) for raw in reversed(fake_redis.lrange("a", 0, -1)))
    assert restored[1] == {"n": "lost?"} and later[1] == {"n": "later"}  # back first in line
    assert restored[0]["properties"]["delivery_tag"] == tag.decode()
    assert restored[0]["headers"]["redelivered"] is True
    assert restored[0]["properties"]["delivery_info"]["redelivered"] is True


def test_an_acked_message_is_never_restored(
    connection: Connection, fake_redis: fakeredis.FakeRedis, clock: list[float]
) -> None:
    channel = connection.default_channel
    received: list[Any] = []
    A(channel).declare()
    channel.basic_consume("a", False, received.append, consumer_tag="a")
    publish(connection, A, {"n": 4})
    assert poll(connection)
    (message,) = received
    assert fake_redis.hkeys("unacked") == [message.delivery_tag.encode()]

    message.ack()
    assert (fake_redis.hlen("unacked"), fake_redis.zcard("unacked_index")) == (0, 0)
    clock[0] = NOW + 10 * 3600
    restore_visible(connection)
    assert fake_redis.llen("a") == 0


def test_a_taken_message_is_recorded_by_the_take_alone(
    connection: Connection, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kombu's ``QoS.append`` would write the record again, in a transaction that Redis refuses
    under maxmemory: raised in the worker's main process, that refusal stopped the worker with
    the message taken. The take's record stands (its time, not a rewrite's); the consumer only
    remembers the message, and its ack still removes the record."""
    monkeypatch.setattr(broker, "time", lambda: NOW)
    monkeypatch.setattr(kombu_redis, "time", lambda: NOW + 50)
    channel = connection.default_channel
    received: list[Any] = []
    A(channel).declare()
    channel.basic_consume("a", False, received.append, consumer_tag="a")
    publish(connection, A, {"n": 5})
    assert poll(connection)
    (message,) = received
    assert fake_redis.zscore("unacked_index", message.delivery_tag) == NOW
    assert message.delivery_tag in channel.qos._delivered
    assert channel.recorded_tag is None  # only while the entry is handed over

    message.ack()
    assert (fake_redis.hlen("unacked"), fake_redis.zcard("unacked_index")) == (0, 0)
