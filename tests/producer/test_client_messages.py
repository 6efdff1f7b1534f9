"""What each ``BillingClient`` method puts on the broker, read back from Redis itself.

The client runs against the project's Redis transport over fakeredis (the seam is in
``conftest.py``: the channel's connection class, nothing above the socket). Each method is
called once with an explicit idempotency key, so the whole message is known in advance:
the task name (the ``task`` header), the Redis list it lands in (its queue, the wire
format ``tasks.operations`` declares), the doorbell token pushed with it, and the body,
decoded by hand as a consumer in another language would (JSON envelope, base64 body,
Celery protocol 2: ``[args, kwargs, embed]`` with no positional arguments). The expected
bodies are written out, not computed by the contracts, so a change in what the client
sends fails here. A call that fails validation raises ``BadRequest`` naming the field and
leaves Redis empty.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fakeredis
import pytest

from domain.errors import BadRequest
from tasks.broker import doorbell
from tasks.client import BillingClient, NewWebhookEndpoint
from tasks.contracts import MAX_ITEMS_PER_BATCH
from tasks.ids import derived_id
from tasks.operations import OPERATIONS, REQUESTS
from tests.producer.wire import decode

DEFAULT, ITEMS, INVOICES = "billing.default", "billing.items", "billing.invoices"
NO_CALLBACKS = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def taken(redis: fakeredis.FakeRedis, queue: str) -> list[tuple[dict[str, Any], Any]]:
    """The queue's messages in the order a consumer takes them (producers LPUSH, consumers RPOP)."""
    return [decode(raw) for raw in reversed(redis.lrange(queue, 0, -1))]


def lists(redis: fakeredis.FakeRedis) -> dict[str, int]:
    return {key.decode(): redis.llen(key) for key in redis.keys("*") if redis.type(key) == b"list"}


@dataclass(frozen=True)
class Sent:
    method: str
    call: Callable[[BillingClient], Any]
    task: str
    queue: str
    kwargs: dict[str, Any]
    returns: Any = None


ITEM_0, ITEM_1 = derived_id("ii", "k-batch:0"), derived_id("ii", "k-batch:1")
SECRET = "whsec_" + "ab" * 32

SENT = [
    Sent(
        "create_customer",
        lambda b: b.create_customer(
            email="ada@example.com",
            name="Ada",
            metadata={"user_id": "42"},
            address={"city": "Montréal", "country": "CA"},
            idempotency_key="k-cus",
        ),
        "billing.customers.create",
        DEFAULT,
        {
            "id": derived_id("cus", "k-cus"),
            "email": "ada@example.com",
            "name": "Ada",
            "metadata": {"user_id": "42"},
            "address": {"city": "Montréal", "country": "CA"},
            "idempotency_key": "k-cus",
        },
        derived_id("cus", "k-cus"),
    ),
    Sent(
        "update_customer",
        lambda b: b.update_customer("cus_1", name="Ada L.", idempotency_key="k-upd"),
        "billing.customers.update",
        DEFAULT,
        {"customer": "cus_1", "name": "Ada L.", "idempotency_key": "k-upd"},
    ),
    Sent(
        "delete_customer",
        lambda b: b.delete_customer("cus_1", idempotency_key="k-del"),
        "billing.customers.delete",
        DEFAULT,
        {"customer": "cus_1", "idempotency_key": "k-del"},
    ),
    Sent(
        "create_invoice_item",
        lambda b: b.create_invoice_item(
            customer="cus_1",
            currency="cad",
            unit_amount=250,
            quantity=3,
            period={"start": 1_700_000_000, "end": 1_702_592_000},
            tax_rates=["txr_1"],
            idempotency_key="k-ii",
        ),
        "billing.invoice_items.create",
        ITEMS,
        {
            "id": derived_id("ii", "k-ii"),
            "customer": "cus_1",
            "currency": "cad",
            "unit_amount": 250,
            "quantity": 3,
            "period": {"start": 1_700_000_000, "end": 1_702_592_000},
            "tax_rates": ["txr_1"],
            "idempotency_key": "k-ii",
        },
        derived_id("ii", "k-ii"),
    ),
    Sent(
        "create_invoice_items",
        lambda b: b.create_invoice_items(
            [
                {"customer": "cus_1", "currency": "cad", "amount": 1500},
                {"customer": "cus_1", "currency": "usd", "amount": -200, "description": "refund"},
            ],
            idempotency_key="k-batch",
        ),
        "billing.invoice_items.create_many",
        ITEMS,
        {
            "items": [
                {
                    "id": ITEM_0,
                    "customer": "cus_1",
                    "currency": "cad",
                    "amount": 1500,
                    "idempotency_key": "k-batch:0",
                },
                {
                    "id": ITEM_1,
                    "customer": "cus_1",
                    "currency": "usd",
                    "amount": -200,
                    "description": "refund",
                    "idempotency_key": "k-batch:1",
                },
            ],
            "idempotency_key": "k-batch",
        },
        [ITEM_0, ITEM_1],
    ),
    Sent(
        "create_invoice",
        lambda b: b.create_invoice(
            customer="cus_1",
            currency="cad",
            collection_method="send_invoice",
            days_until_due=30,
            finalize=True,
            idempotency_key="k-in",
        ),
        "billing.invoices.create",
        INVOICES,
        {
            "id": derived_id("in", "k-in"),
            "customer": "cus_1",
            "currency": "cad",
            "collection_method": "send_invoice",
            "days_until_due": 30,
            "finalize": True,
            "idempotency_key": "k-in",
        },
        derived_id("in", "k-in"),
    ),
    Sent(
        "invoice_pending",
        lambda b: b.invoice_pending("cus_1", currency="usd", idempotency_key="k-run"),
        "billing.invoices.create_for_pending",
        INVOICES,
        {"customer": "cus_1", "currency": "usd", "idempotency_key": "k-run"},
        "k-run",
    ),
    Sent(
        "finalize_invoice",
        lambda b: b.finalize_invoice("in_1", idempotency_key="k-fin"),
        "billing.invoices.finalize",
        DEFAULT,
        {"invoice": "in_1", "idempotency_key": "k-fin"},
    ),
    Sent(
        "void_invoice",
        lambda b: b.void_invoice("in_1", idempotency_key="k-void"),
        "billing.invoices.void",
        DEFAULT,
        {"invoice": "in_1", "idempotency_key": "k-void"},
    ),
    Sent(
        "pay_invoice",
        lambda b: b.pay_invoice("in_1", idempotency_key="k-pay"),
        "billing.invoices.pay",
        DEFAULT,
        {"invoice": "in_1", "paid_out_of_band": True, "idempotency_key": "k-pay"},
    ),
    Sent(
        "mark_uncollectible",
        lambda b: b.mark_uncollectible("in_1", idempotency_key="k-unc"),
        "billing.invoices.mark_uncollectible",
        DEFAULT,
        {"invoice": "in_1", "idempotency_key": "k-unc"},
    ),
    Sent(
        "delete_invoice",
        lambda b: b.delete_invoice("in_1", idempotency_key="k-indel"),
        "billing.invoices.delete",
        DEFAULT,
        {"invoice": "in_1", "idempotency_key": "k-indel"},
    ),
    Sent(
        "create_credit_note",
        lambda b: b.create_credit_note(
            invoice="in_1",
            lines=[{"type": "custom_line_item", "amount": 300, "description": "goodwill"}],
            reason="order_change",
            credit_amount=300,
            idempotency_key="k-cn",
        ),
        "billing.credit_notes.create",
        DEFAULT,
        {
            "id": derived_id("cn", "k-cn"),
            "invoice": "in_1",
            "lines": [{"type": "custom_line_item", "amount": 300, "description": "goodwill"}],
            "reason": "order_change",
            "credit_amount": 300,
            "idempotency_key": "k-cn",
        },
        derived_id("cn", "k-cn"),
    ),
    Sent(
        "void_credit_note",
        lambda b: b.void_credit_note("cn_1", idempotency_key="k-cnv"),
        "billing.credit_notes.void",
        DEFAULT,
        {"credit_note": "cn_1", "idempotency_key": "k-cnv"},
    ),
    Sent(
        "create_balance_transaction",
        lambda b: b.create_balance_transaction(
            customer="cus_1",
            amount=-500,
            currency="cad",
            description="welcome credit",
            idempotency_key="k-bt",
        ),
        "billing.balance_transactions.create",
        DEFAULT,
        {
            "id": derived_id("cbtxn", "k-bt"),
            "customer": "cus_1",
            "amount": -500,
            "currency": "cad",
            "description": "welcome credit",
            "idempotency_key": "k-bt",
        },
        derived_id("cbtxn", "k-bt"),
    ),
    Sent(
        "create_coupon",
        lambda b: b.create_coupon(
            id="SUMMER25", percent_off=25, duration="repeating", duration_in_months=3, idempotency_key="k-co"
        ),
        "billing.coupons.create",
        DEFAULT,
        {
            "id": "SUMMER25",
            "percent_off": "25",
            "duration": "repeating",
            "duration_in_months": 3,
            "idempotency_key": "k-co",
        },
        "SUMMER25",
    ),
    Sent(
        "attach_discount",
        lambda b: b.attach_discount("cus_1", "SUMMER25", idempotency_key="k-di"),
        "billing.discounts.create",
        DEFAULT,
        {"customer": "cus_1", "coupon": "SUMMER25", "idempotency_key": "k-di"},
    ),
    Sent(
        "remove_discount",
        lambda b: b.remove_discount("cus_1", idempotency_key="k-didel"),
        "billing.discounts.delete",
        DEFAULT,
        {"customer": "cus_1", "idempotency_key": "k-didel"},
    ),
    Sent(
        "create_tax_rate",
        lambda b: b.create_tax_rate(
            display_name="GST", percentage=8.25, inclusive=False, country="CA", idempotency_key="k-txr"
        ),
        "billing.tax_rates.create",
        DEFAULT,
        {
            "id": derived_id("txr", "k-txr"),
            "display_name": "GST",
            "percentage": "8.25",
            "inclusive": False,
            "country": "CA",
            "idempotency_key": "k-txr",
        },
        derived_id("txr", "k-txr"),
    ),
    Sent(
        "create_product",
        lambda b: b.create_product(name="Pro plan", idempotency_key="k-prod"),
        "billing.products.create",
        DEFAULT,
        {"id": derived_id("prod", "k-prod"), "name": "Pro plan", "idempotency_key": "k-prod"},
        derived_id("prod", "k-prod"),
    ),
    Sent(
        "create_price",
        lambda b: b.create_price(
            product="prod_1",
            currency="cad",
            unit_amount=2000,
            currency_options={"usd": {"unit_amount": 1500}},
            recurring={"interval": "month"},
            idempotency_key="k-price",
        ),
        "billing.prices.create",
        DEFAULT,
        {
            "id": derived_id("price", "k-price"),
            "product": "prod_1",
            "currency": "cad",
            "unit_amount": 2000,
            "currency_options": {"usd": {"unit_amount": 1500}},
            "recurring": {"interval": "month"},  # interval_count's default is not sent
            "idempotency_key": "k-price",
        },
        derived_id("price", "k-price"),
    ),
    Sent(
        "create_subscription",
        lambda b: b.create_subscription(
            customer="cus_1", items=[{"price": "price_1", "quantity": 2}], idempotency_key="k-sub"
        ),
        "billing.subscriptions.create",
        DEFAULT,
        {
            "id": derived_id("sub", "k-sub"),
            "customer": "cus_1",
            "items": [{"price": "price_1", "quantity": 2}],
            "idempotency_key": "k-sub",
        },
        derived_id("sub", "k-sub"),
    ),
    Sent(
        "cancel_subscription",
        lambda b: b.cancel_subscription("sub_1", at_period_end=True, idempotency_key="k-cancel"),
        "billing.subscriptions.cancel",
        DEFAULT,
        {"subscription": "sub_1", "at_period_end": True, "idempotency_key": "k-cancel"},
    ),
    Sent(
        "change_subscription_currency",
        lambda b: b.change_subscription_currency("cus_1", "usd", idempotency_key="k-ccy"),
        "billing.subscriptions.change_currency",
        DEFAULT,
        {"customer": "cus_1", "currency": "usd", "idempotency_key": "k-ccy"},
    ),
    Sent(
        "create_test_clock",
        lambda b: b.create_test_clock(frozen_time=1_700_000_000, name="March run", idempotency_key="k-clock"),
        "billing.test_clocks.create",
        DEFAULT,
        {
            "id": derived_id("clock", "k-clock"),
            "frozen_time": 1_700_000_000,
            "name": "March run",
            "idempotency_key": "k-clock",
        },
        derived_id("clock", "k-clock"),
    ),
    Sent(
        "advance_test_clock",
        lambda b: b.advance_test_clock("clock_1", 1_702_592_000, idempotency_key="k-adv"),
        "billing.test_clocks.advance",
        DEFAULT,
        {"test_clock": "clock_1", "frozen_time": 1_702_592_000, "idempotency_key": "k-adv"},
    ),
    Sent(
        "create_webhook_endpoint",
        lambda b: b.create_webhook_endpoint(
            url="https://hooks.example.com/billing",
            enabled_events=["invoice.paid", "customer.*"],
            secret=SECRET,
            description="accounting",
            idempotency_key="k-we",
        ),
        "billing.webhook_endpoints.create",
        DEFAULT,
        {
            "url": "https://hooks.example.com/billing",
            "enabled_events": ["invoice.paid", "customer.*"],
            "secret": SECRET,
            "description": "accounting",
            "id": derived_id("we", "k-we"),
            "idempotency_key": "k-we",
        },
        NewWebhookEndpoint(derived_id("we", "k-we"), SECRET, None),  # type: ignore[arg-type]  (sent: not compared)
    ),
    Sent(
        "update_webhook_endpoint",
        lambda b: b.update_webhook_endpoint(
            "we_1", disabled=True, enabled_events=["*"], idempotency_key="k-weu"
        ),
        "billing.webhook_endpoints.update",
        DEFAULT,
        {"disabled": True, "enabled_events": ["*"], "webhook_endpoint": "we_1", "idempotency_key": "k-weu"},
    ),
    Sent(
        "delete_webhook_endpoint",
        lambda b: b.delete_webhook_endpoint("we_1", idempotency_key="k-wed"),
        "billing.webhook_endpoints.delete",
        DEFAULT,
        {"webhook_endpoint": "we_1", "idempotency_key": "k-wed"},
    ),
    Sent(
        "resend_event",
        lambda b: b.resend_event("evt_1", webhook_endpoint="we_1", idempotency_key="k-res"),
        "billing.webhook_endpoints.resend",
        DEFAULT,
        {"event": "evt_1", "webhook_endpoint": "we_1", "idempotency_key": "k-res"},
    ),
]


ACTS_ON = {
    "billing.customers.update": "customer",
    "billing.customers.delete": "customer",
    "billing.invoices.finalize": "invoice",
    "billing.invoices.void": "invoice",
    "billing.invoices.pay": "invoice",
    "billing.invoices.mark_uncollectible": "invoice",
    "billing.invoices.delete": "invoice",
    "billing.credit_notes.void": "credit_note",
    "billing.discounts.create": "customer",
    "billing.discounts.delete": "customer",
    "billing.subscriptions.cancel": "subscription",
    "billing.subscriptions.change_currency": "customer",
    "billing.test_clocks.advance": "test_clock",
    "billing.webhook_endpoints.update": "webhook_endpoint",
    "billing.webhook_endpoints.delete": "webhook_endpoint",
    "billing.webhook_endpoints.resend": "event",
}
READERS = {"fate", "wait"}
"""Methods that send nothing: they read a request's fate (tests/producer/test_fates.py)."""


def public_methods() -> set[str]:
    return {
        name for name, value in vars(BillingClient).items() if callable(value) and name[0] != "_"
    } - READERS


def test_every_method_and_every_request_a_producer_may_send_is_covered() -> None:
    assert {case.method for case in SENT} == public_methods()
    # sent by beat and the worker only, never by the client: renewals and documents
    worker_only = {"billing.subscriptions.renew", "billing.documents.render", "billing.documents.email"}
    assert {case.task for case in SENT} == set(REQUESTS) - worker_only


@pytest.mark.parametrize("case", SENT, ids=[case.method for case in SENT])
def test_a_method_puts_one_message_on_its_queue(
    billing: BillingClient, fake_redis: fakeredis.FakeRedis, case: Sent
) -> None:
    returned = case.call(billing)
    # an action (returning None before handles) returns the id of the object it acts on
    assert returned == (case.returns if case.returns is not None else case.kwargs[ACTS_ON[case.task]])
    assert returned.idempotency_key == case.kwargs["idempotency_key"]

    assert OPERATIONS[case.task].queue == case.queue
    assert lists(fake_redis) == {case.queue: 1, doorbell(case.queue): 1}
    assert fake_redis.lrange(doorbell(case.queue), 0, -1) == [b"1"]
    ((envelope, body),) = taken(fake_redis, case.queue)
    assert envelope["headers"]["task"] == case.task
    assert envelope["headers"]["id"] == envelope["properties"]["correlation_id"]
    assert envelope["properties"]["delivery_info"] == {"exchange": "", "routing_key": case.queue}
    assert envelope["properties"]["priority"] == 0
    assert body == [[], case.kwargs, NO_CALLBACKS]


def test_a_key_derives_the_same_id_in_every_release(
    billing: BillingClient, fake_redis: fakeredis.FakeRedis
) -> None:
    """A call retried across an upgrade must name the same object: the derivation is wire format."""
    assert billing.create_customer(email="ada@example.com", idempotency_key="k1") == (
        "cus_9JV544RVG7GFR11ZVDPAQX2TD2"
    )
    ((_, (_, kwargs, _)),) = taken(fake_redis, DEFAULT)
    assert kwargs["id"] == "cus_9JV544RVG7GFR11ZVDPAQX2TD2"


def test_a_long_list_of_items_goes_in_messages_of_1000_in_order(
    billing: BillingClient, fake_redis: fakeredis.FakeRedis
) -> None:
    items = [
        {"customer": "cus_1", "currency": "cad", "amount": n + 1} for n in range(MAX_ITEMS_PER_BATCH + 1)
    ]
    ids = billing.create_invoice_items(items, idempotency_key="big")

    assert ids == [derived_id("ii", f"big:{n}") for n in range(MAX_ITEMS_PER_BATCH + 1)]
    first, second = (kwargs for _, (_, kwargs, _) in taken(fake_redis, ITEMS))
    assert (first["idempotency_key"], second["idempotency_key"]) == ("big", "big:from1000")
    assert [item["amount"] for item in first["items"]] == list(range(1, 1001))
    assert second["items"] == [
        {
            "id": ids[1000],
            "customer": "cus_1",
            "currency": "cad",
            "amount": 1001,
            "idempotency_key": "big:1000",
        }
    ]
    assert fake_redis.llen(doorbell(ITEMS)) == 2


KEYLESS = [
    ("finalize_invoice", lambda b: b.finalize_invoice("in_1"), DEFAULT, r"req_[0-9a-f]{32}", "invoice"),
    (
        "invoice_pending",
        lambda b: b.invoice_pending("cus_1"),
        INVOICES,
        r"run_[0-9a-f]{32}",
        "idempotency_key",
    ),
    ("create_product", lambda b: b.create_product(name="Pro"), DEFAULT, r"prod_[0-9A-HJKMNP-TV-Z]{26}", "id"),
]


@pytest.mark.parametrize(
    ("call", "queue", "key", "returned"), [k[1:] for k in KEYLESS], ids=[k[0] for k in KEYLESS]
)
def test_without_a_key_the_client_makes_one(
    billing: BillingClient,
    fake_redis: fakeredis.FakeRedis,
    call: Callable[[BillingClient], Any],
    queue: str,
    key: str,
    returned: str,
) -> None:
    """An action gets a fresh request key (its handle: the object it acts on, with that key), a
    pending run a fresh run key (returned), and a new object's key is its new id (returned)."""
    result = call(billing)
    ((_, (_, kwargs, _)),) = taken(fake_redis, queue)
    assert re.fullmatch(key, kwargs["idempotency_key"])
    assert (result, result.idempotency_key) == (kwargs[returned], kwargs["idempotency_key"])
    assert kwargs.get("id", kwargs["idempotency_key"]) == kwargs["idempotency_key"]


def test_keyless_items_are_each_their_own_key(
    billing: BillingClient, fake_redis: fakeredis.FakeRedis
) -> None:
    ids = billing.create_invoice_items(
        [{"customer": "cus_1", "currency": "cad", "amount": n} for n in (1, 2)]
    )
    ((_, (_, kwargs, _)),) = taken(fake_redis, ITEMS)
    assert re.fullmatch(r"batch_[0-9a-f]{32}", kwargs["idempotency_key"])
    assert [(item["id"], item["idempotency_key"]) for item in kwargs["items"]] == [(i, i) for i in ids]
    assert ids == sorted(ids) and len(set(ids)) == 2  # "oldest first" is the list's order


REFUSED = [
    ("create_customer", lambda b: b.create_customer(email="not-an-email"), "email"),
    ("update_customer", lambda b: b.update_customer("cus_1", currency="CAD"), "currency"),
    ("delete_customer", lambda b: b.delete_customer("customer_1"), "customer"),
    (
        "create_invoice_item",
        lambda b: b.create_invoice_item(customer="cus_1", currency="cad", amount=10.5),
        "amount",
    ),
    (
        "create_invoice_items",
        lambda b: b.create_invoice_items(
            [
                {"customer": "cus_1", "currency": "cad", "amount": 100},
                {"customer": "cus_1", "currency": "cad", "amount": 1.5},
            ]
        ),
        "items[1].amount",
    ),
    (
        "create_invoice",
        lambda b: b.create_invoice(customer="cus_1", currency="cad", days_until_due=30),
        "days_until_due",
    ),
    (
        "invoice_pending",
        lambda b: b.invoice_pending("cus_1", pending_invoice_items_behavior="later"),
        "pending_invoice_items_behavior",
    ),
    ("finalize_invoice", lambda b: b.finalize_invoice("ii_1"), "invoice"),
    ("void_invoice", lambda b: b.void_invoice(""), "invoice"),
    ("pay_invoice", lambda b: b.pay_invoice("in 1"), "invoice"),
    ("mark_uncollectible", lambda b: b.mark_uncollectible("in_"), "invoice"),
    ("delete_invoice", lambda b: b.delete_invoice("in_1", idempotency_key="k" * 256), "idempotency_key"),
    ("create_credit_note", lambda b: b.create_credit_note(invoice="in_1"), "amount"),
    ("void_credit_note", lambda b: b.void_credit_note("in_1"), "credit_note"),
    (
        "create_balance_transaction",
        lambda b: b.create_balance_transaction(customer="cus_1", amount=0),
        "amount",
    ),
    (
        "create_coupon",
        lambda b: b.create_coupon(percent_off=25, amount_off=500, currency="cad"),
        "percent_off",
    ),
    ("attach_discount", lambda b: b.attach_discount("cus_1", "no such coupon!"), "coupon"),
    ("remove_discount", lambda b: b.remove_discount("cus_"), "customer"),
    (
        "create_tax_rate",
        lambda b: b.create_tax_rate(display_name="GST", percentage=101, inclusive=False),
        "percentage",
    ),
    ("create_product", lambda b: b.create_product(name=""), "name"),
    (
        "create_price",
        lambda b: b.create_price(
            product="prod_1",
            currency="cad",
            unit_amount=100,
            recurring={"interval": "month", "interval_count": 13},
        ),
        "recurring.interval_count",
    ),
    ("create_subscription", lambda b: b.create_subscription(customer="cus_1", items=[]), "items"),
    ("cancel_subscription", lambda b: b.cancel_subscription("sub_1", at_period_end="later"), "at_period_end"),
    ("change_subscription_currency", lambda b: b.change_subscription_currency("cus_1", "US$"), "currency"),
    ("create_test_clock", lambda b: b.create_test_clock(frozen_time=-1), "frozen_time"),
    ("advance_test_clock", lambda b: b.advance_test_clock("clock_1", 1.5), "frozen_time"),
    (
        "create_webhook_endpoint",
        lambda b: b.create_webhook_endpoint(url="https://hooks.example.com", enabled_events=["invoice.sent"]),
        "enabled_events[0]",
    ),
    ("update_webhook_endpoint", lambda b: b.update_webhook_endpoint("we_1", url="ftp://x"), "url"),
    ("delete_webhook_endpoint", lambda b: b.delete_webhook_endpoint("whsec_1"), "webhook_endpoint"),
    ("resend_event", lambda b: b.resend_event("in_1"), "event"),
]


def test_every_method_has_a_refused_call() -> None:
    assert {method for method, _, _ in REFUSED} == public_methods()


@pytest.mark.parametrize(("method", "call", "field"), REFUSED, ids=[m for m, _, _ in REFUSED])
def test_a_refused_call_names_the_field_and_sends_nothing(
    billing: BillingClient,
    fake_redis: fakeredis.FakeRedis,
    method: str,
    call: Callable[[BillingClient], Any],
    field: str,
) -> None:
    with pytest.raises(BadRequest) as refused:
        call(billing)
    assert refused.value.field == field
    assert fake_redis.keys("*") == []


EMPTY_KEY = [
    ("an action", lambda b: b.finalize_invoice("in_1", idempotency_key="")),
    ("a create", lambda b: b.create_product(name="Pro", idempotency_key="")),
    (
        "a list of items",
        lambda b: b.create_invoice_items([{"customer": "cus_1", "amount": 1}], idempotency_key=""),
    ),
    ("a pending run", lambda b: b.invoice_pending("cus_1", idempotency_key="")),
]


@pytest.mark.parametrize("call", [call for _, call in EMPTY_KEY], ids=[label for label, _ in EMPTY_KEY])
def test_an_empty_idempotency_key_is_refused_not_replaced(
    billing: BillingClient, fake_redis: fakeredis.FakeRedis, call: Callable[[BillingClient], Any]
) -> None:
    """An empty key is a caller's mistake: replacing it with a fresh one would make a retried
    call send new ids (twice the items) where the caller asked for a safe retry."""
    with pytest.raises(BadRequest) as refused:
        call(billing)
    assert refused.value.field == "idempotency_key"
    assert fake_redis.keys("*") == []


def test_the_headers_monitors_show_carry_no_personal_data(
    billing: BillingClient, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flower, task events and Celery's log lines show a message's ``kwargsrepr`` header, never its
    body: made at publish time without the customer's personal data; the body is unchanged."""
    address = {"line1": "1 Main St", "city": "Springfield", "country": "US"}
    billing.create_customer(email="ada@example.com", name="Ada", phone="+1 555 0100", address=address,
                            metadata={"plan": "pro"}, idempotency_key="redact-1")  # fmt: skip
    monkeypatch.setenv("BILLING_REDACT_TASK_ARGS", "false")
    billing.create_customer(email="bob@example.com", idempotency_key="redact-2")
    (first, body), (second, _) = taken(fake_redis, DEFAULT)
    shown = first["headers"]["kwargsrepr"]
    for personal in ("ada@example.com", "Ada'", "555", "Main St"):
        assert personal not in shown
    assert "'email': '[redacted]'" in shown and "'plan': 'pro'" in shown and "redact-1" in shown
    assert (body[1]["email"], body[1]["address"]) == ("ada@example.com", address)
    assert "bob@example.com" in second["headers"]["kwargsrepr"]  # an operator's choice


def test_a_signing_secret_is_sent_once_and_shown_to_no_log_or_monitor(
    billing: BillingClient, fake_redis: fakeredis.FakeRedis
) -> None:
    """The message carries the secret (the worker stores it); what Celery logs and shows monitors
    (Flower) in place of the arguments, ``kwargsrepr``, does not; nor does the returned value's repr."""
    created = billing.create_webhook_endpoint(url="https://hooks.example.com", enabled_events=["*"])
    assert created.secret.startswith("whsec_") and created.secret not in repr(created)
    ((envelope, body),) = taken(fake_redis, DEFAULT)
    assert body[1]["secret"] == created.secret
    assert created.secret not in envelope["headers"]["kwargsrepr"]
    assert "'secret': '[redacted]'" in envelope["headers"]["kwargsrepr"]
