"""Routing: the queue of every operation, as ``tasks.operations`` declares it.

Queues are wire format (README: the client's table of task names and queues): a worker
consumes ``ALL_QUEUES``, and a producer in any language sends to the queue named here.
The expected queues are written out, so moving an operation to another queue fails here.
"""

from __future__ import annotations

import pytest

from tasks.broker import UnsupportedBroker, transport_for
from tasks.client import BillingClient
from tasks.operations import (
    ALL_QUEUES,
    BILLING_QUEUES,
    OPERATIONS,
    QUEUE_DEFAULT,
    QUEUE_DOCUMENTS,
    QUEUE_INVOICES,
    QUEUE_ITEMS,
    QUEUE_RECURRING,
    queue_for,
)

NOT_DEFAULT = {
    "billing.invoice_items.create": "billing.items",
    "billing.invoice_items.create_many": "billing.items",
    "billing.invoices.create": "billing.invoices",
    "billing.invoices.create_for_pending": "billing.invoices",
    "billing.subscriptions.renew": "billing.recurring",
    "billing.maintenance.reconcile": "billing.recurring",
    "billing.maintenance.purge": "billing.recurring",
    "billing.maintenance.renew_subscriptions": "billing.recurring",
    "billing.maintenance.finalize_drafts": "billing.recurring",
    "billing.maintenance.mark_overdue": "billing.recurring",
    "billing.documents.render": "billing.documents",
    "billing.documents.email": "billing.documents",
}


def test_the_queues_are_the_four_billing_ones_and_documents() -> None:
    assert BILLING_QUEUES == ("billing.default", "billing.items", "billing.invoices", "billing.recurring")
    assert (QUEUE_DEFAULT, QUEUE_ITEMS, QUEUE_INVOICES, QUEUE_RECURRING) == BILLING_QUEUES
    assert (*BILLING_QUEUES, QUEUE_DOCUMENTS) == ALL_QUEUES == (*BILLING_QUEUES, "billing.documents")
    assert {operation.queue for operation in OPERATIONS.values()} == set(ALL_QUEUES)


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_every_operation_routes_to_its_queue(name: str) -> None:
    assert queue_for(name) == OPERATIONS[name].queue == NOT_DEFAULT.get(name, "billing.default")


def test_the_table_is_keyed_by_its_own_names() -> None:
    assert all(name == operation.name for name, operation in OPERATIONS.items())
    assert set(NOT_DEFAULT) <= set(OPERATIONS)


@pytest.mark.parametrize("name", ["bench.noop", "billing.customers.merge", "", "billing.customers.create "])
def test_a_name_outside_the_table_goes_to_the_default_queue(name: str) -> None:
    assert queue_for(name) == "billing.default"


@pytest.mark.parametrize(
    ("url", "transport"),
    [
        ("redis://localhost:6379/0", "tasks.broker:Transport"),
        ("rediss://cache.example.com:6380/1", "tasks.broker:SecureTransport"),
        ("memory://localhost/", None),
        ("amqp://guest@localhost//", None),
    ],
)
def test_redis_urls_select_the_projects_transport(url: str, transport: str | None) -> None:
    assert transport_for(url) == transport


@pytest.mark.parametrize(
    "url",
    [
        "redis://billing:s3cret@localhost:6379/0",
        "rediss://billing:s3cret@cache.example.com:6380/1?ssl_cert_reqs=required",
    ],
)
def test_the_connection_keeps_the_url_it_was_given(url: str) -> None:
    """The transport is chosen by ``broker_transport``, never by rewriting the URL: what a
    connection reports (Celery's banner, Flower's Broker page) is the URL, password masked."""
    from celery import Celery

    app = Celery("t", broker=url, set_as_current=False)
    app.conf.broker_transport = transport_for(url)
    with app.connection_for_write() as connection:
        assert type(connection.transport).__module__ == "tasks.broker"
        assert connection.as_uri(include_password=True) == url.split("?")[0]
        assert "s3cret" not in connection.as_uri()


@pytest.mark.parametrize("url", ["sentinel://localhost:26379", "sentinel://h1:26379;sentinel://h2:26379"])
def test_a_sentinel_url_is_refused_loudly(url: str) -> None:
    """kombu's Sentinel transport takes a message in two round trips: it would lose the guarantee."""
    with pytest.raises(UnsupportedBroker, match="sentinel"):
        transport_for(url)
    with pytest.raises(UnsupportedBroker):
        BillingClient(broker_url=url)
