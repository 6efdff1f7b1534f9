"""The producer tier's broker: the project's Redis transport over fakeredis, no server.

The seam is the channel's ``connection_class``. kombu's Redis channel builds every
client from one ``redis.ConnectionPool`` whose connections are of that class (the class
attribute ``kombu.transport.redis.Channel.connection_class``, ``redis.Connection``); the
fixture sets it, on ``tasks.broker.Channel`` only and for one test, to a
``fakeredis.FakeRedisConnection`` bound to a fresh ``FakeServer``. Everything above the
socket stays real: kombu's pools, clients, pipelines and transactions, redis-py's
command encoding and reply parsing, and the transport's own ``EVAL`` of its Lua script
(run by fakeredis through ``lupa``: the ``fakeredis[lua]`` dev dependency). Replacing
``Channel.Client`` or ``_create_client`` instead would swap redis-py's client for
fakeredis's and test less of the real path.

The broker URL (``tests.producer.wire.broker_url``) names a host that cannot resolve, so
a test that escaped the seam would fail to connect rather than touch a real server. Tests
read what the transport wrote with a plain fake client on the same server, as a consumer
in another language would read Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from kombu import pools
from kombu.utils.collections import eqhash

from tasks import broker, fates
from tasks.client import BillingClient
from tests.producer.wire import broker_url


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> fakeredis.FakeServer:
    server = fakeredis.FakeServer()

    class FakeConnection(fakeredis.FakeRedisConnection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, server=server, **kwargs)

    monkeypatch.setattr(broker.Channel, "connection_class", FakeConnection)
    monkeypatch.setattr(fates, "connection_class", FakeConnection)  # the client's fate store
    return server


@pytest.fixture
def fake_redis(fake_server: fakeredis.FakeServer) -> Iterator[fakeredis.FakeRedis]:
    """What the transport wrote, read with a plain client (db 0, as in ``BROKER_URL``)."""
    client = fakeredis.FakeRedis(server=fake_server, db=0)
    yield client
    client.close()


@pytest.fixture
def billing(fake_server: fakeredis.FakeServer) -> Iterator[BillingClient]:
    client = BillingClient(broker_url=broker_url())
    yield client
    connection = client.app.connection_for_write()
    for group in (pools.producers, pools.connections):  # process-wide, keyed by URL
        pool = group.pop(eqhash(connection), None)
        if pool is not None:
            pool.force_close_all()
    connection.release()
    client.app.close()
