"""Each request's fate as a producer reads it from Redis (fakeredis, no server): the records the
worker writes, chains followed part by part, a failure never replacing a success, the handle
every client method returns, and a bounded wait."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import fakeredis
import pytest

from tasks.client import BillingClient, Handle, Sent, SentList
from tasks.fates import FATE_PREFIX, Fate, RedisFates, failed, resolve, succeeded

NOT_FOUND = {
    "type": "NotFound",
    "code": "resource_missing",
    "field": "customer",
    "message": "No such customer",
}


@pytest.fixture
def store(fake_redis: fakeredis.FakeRedis) -> RedisFates:
    return RedisFates(fake_redis)


def done(task: str, *ids: str, follow_ups: Sequence[str] = ()) -> dict[str, Any]:
    return succeeded(task, ids, follow_ups, replayed=False, at=1_764_662_400)


def test_records_are_written_together_and_expire(store: RedisFates, fake_redis: fakeredis.FakeRedis) -> None:
    store.put_succeeded([("k1", done("billing.customers.create", "cus_1")), ("k2", done("t", "cus_2"))], 3600)

    assert store.get_many(["k1", "missing", "k2"]) == [
        done("billing.customers.create", "cus_1"), None, done("t", "cus_2"),
    ]  # fmt: skip
    assert 3590 < fake_redis.ttl(FATE_PREFIX + "k1") <= 3600
    assert 3590 < fake_redis.ttl(FATE_PREFIX + "k2") <= 3600


def test_a_failure_never_replaces_a_success(store: RedisFates) -> None:
    """The same key sent again with other parameters fails; the first request's effect stands."""
    store.put_succeeded([("k", done("billing.customers.create", "cus_1"))], 60)
    store.put_failed("k", failed("billing.customers.create", NOT_FOUND, retryable=False, at=1), 60)
    assert resolve(store, ["k"]).status == "succeeded"

    store.put_failed("bad", failed("t", NOT_FOUND, retryable=False, at=1), 60)
    store.put_failed("bad", failed("t", {**NOT_FOUND, "message": "again"}, retryable=False, at=2), 60)
    assert resolve(store, ["bad"]).error == {**NOT_FOUND, "message": "again"}  # a failure replaces a failure
    store.put_succeeded([("bad", done("t", "cus_9"))], 60)  # retried by an operator, and succeeded
    assert resolve(store, ["bad"]).ids == ("cus_9",)


def test_a_chain_succeeds_once_every_part_has(store: RedisFates) -> None:
    task = "billing.invoices.create"
    assert resolve(store, ["run"]) == Fate(key="run", status="pending", requests=1, pending=("run",))

    store.put_succeeded([("run", done(task, "in_1", follow_ups=["run:part2"]))], 60)
    fate = resolve(store, ["run"])
    assert (fate.status, fate.ids, fate.pending, fate.task) == ("pending", ("in_1",), ("run:part2",), task)

    store.put_succeeded([("run:part2", done(task, "in_2", follow_ups=["run:part3"]))], 60)
    store.put_succeeded([("run:part3", done(task, "in_3"))], 60)
    fate = resolve(store, ["run"])
    assert (fate.status, fate.ids, fate.requests, fate.pending) == (
        "succeeded",
        ("in_1", "in_2", "in_3"),
        3,
        (),
    )


def test_a_failed_part_fails_the_chain_and_names_itself(store: RedisFates) -> None:
    task = "billing.invoices.create"
    store.put_succeeded([("run", done(task, "in_1", follow_ups=["run:part2"]))], 60)
    store.put_failed("run:part2", failed(task, NOT_FOUND, retryable=True, at=1), 60)

    fate = resolve(store, ["run"])
    assert (fate.status, fate.ids, fate.error, fate.failed_key) == (
        "failed",
        ("in_1",),
        NOT_FOUND,
        "run:part2",
    )
    assert fate.as_dict()["error"] == NOT_FOUND


def test_an_invoice_pending_run_gathers_every_chain(store: RedisFates) -> None:
    task = "billing.invoices.create"
    store.put_succeeded(
        [
            ("r", done("billing.invoices.create_for_pending", follow_ups=["r:cad", "r:usd"])),
            ("r:cad", done(task, "in_cad1", follow_ups=["r:cad:part2"])),
            ("r:usd", done(task, "in_usd")),
            ("r:cad:part2", done(task, "in_cad2")),
        ],
        60,
    )
    fate = resolve(store, ["r"])
    assert (fate.status, fate.ids, fate.requests) == ("succeeded", ("in_cad1", "in_usd", "in_cad2"), 4)
    assert fate.task == "billing.invoices.create_for_pending"


CALLS: list[tuple[Callable[[BillingClient], Any], str, str | None]] = [
    (
        lambda b: b.create_customer(email="a@example.com", idempotency_key="k1"),
        "billing.customers.create",
        "cus",
    ),
    (
        lambda b: b.update_customer("cus_1", name="A", idempotency_key="k2"),
        "billing.customers.update",
        "cus_1",
    ),
    (lambda b: b.delete_customer("cus_1", idempotency_key="k3"), "billing.customers.delete", "cus_1"),
    (lambda b: b.finalize_invoice("in_1", idempotency_key="k4"), "billing.invoices.finalize", "in_1"),
    (lambda b: b.void_invoice("in_1", idempotency_key="k5"), "billing.invoices.void", "in_1"),
    (lambda b: b.pay_invoice("in_1", idempotency_key="k6"), "billing.invoices.pay", "in_1"),
    (
        lambda b: b.mark_uncollectible("in_1", idempotency_key="k7"),
        "billing.invoices.mark_uncollectible",
        "in_1",
    ),
    (lambda b: b.delete_invoice("in_1", idempotency_key="k8"), "billing.invoices.delete", "in_1"),
    (lambda b: b.void_credit_note("cn_1", idempotency_key="k9"), "billing.credit_notes.void", "cn_1"),
    (
        lambda b: b.attach_discount("cus_1", "co_1", idempotency_key="k10"),
        "billing.discounts.create",
        "cus_1",
    ),
    (lambda b: b.remove_discount("cus_1", idempotency_key="k11"), "billing.discounts.delete", "cus_1"),
    (
        lambda b: b.cancel_subscription("sub_1", idempotency_key="k12"),
        "billing.subscriptions.cancel",
        "sub_1",
    ),
    (
        lambda b: b.change_subscription_currency("cus_1", "eur", idempotency_key="k13"),
        "billing.subscriptions.change_currency",
        "cus_1",
    ),
    (
        lambda b: b.advance_test_clock("clock_1", 1_800_000_000, idempotency_key="k14"),
        "billing.test_clocks.advance",
        "clock_1",
    ),
    (
        lambda b: b.create_coupon(id="SUMMER", percent_off=10, duration="once", idempotency_key="k15"),
        "billing.coupons.create",
        "SUMMER",
    ),
    (
        lambda b: b.invoice_pending("cus_1", idempotency_key="k16"),
        "billing.invoices.create_for_pending",
        None,
    ),
]


@pytest.mark.parametrize(("call", "task", "target"), CALLS, ids=[task for _, task, _ in CALLS])
def test_every_method_returns_a_handle_of_its_request(
    billing: BillingClient, call: Callable[[BillingClient], Any], task: str, target: str | None
) -> None:
    sent = call(billing)
    assert isinstance(sent, Sent) and isinstance(sent, str)
    assert (sent.task, sent.keys) == (task, (sent.idempotency_key,))
    if target is None:  # invoice_pending: the run's key, as before
        assert (str(sent), sent.id) == (sent.idempotency_key, None)
    elif target == "cus":
        assert sent.startswith("cus_") and sent.id == sent
    else:
        assert sent == target == sent.id
    assert sent.fate().status == "pending"


def test_a_create_without_a_key_is_found_by_its_id(billing: BillingClient, store: RedisFates) -> None:
    """Without an idempotency key the key is the object's id: a plain id asks about it too."""
    cus = billing.create_customer(email="a@example.com")
    assert cus.idempotency_key == cus.id == cus
    store.put_succeeded([(cus, done("billing.customers.create", cus))], 60)
    assert billing.fate(str(cus)) == cus.fate() == cus.wait(timeout=0)
    assert cus.fate().ids == (cus,)


def test_a_list_call_s_fate_gathers_its_messages(billing: BillingClient, store: RedisFates) -> None:
    listed = billing.create_invoice_items(
        [{"customer": "cus_1", "currency": "usd", "amount": 1} for _ in range(1_500)], idempotency_key="b"
    )
    assert isinstance(listed, SentList) and len(listed) == 1_500 and all(i.startswith("ii_") for i in listed)
    assert (listed.idempotency_key, listed.keys, listed.task) == ("b", ("b", "b:from1000"), listed.task)
    task = "billing.invoice_items.create_many"
    store.put_succeeded([("b", done(task, *listed[:1000]))], 60)
    assert listed.fate().status == "pending"
    store.put_succeeded([("b:from1000", done(task, *listed[1000:]))], 60)
    fate = listed.fate()
    assert (fate.status, fate.ids, fate.key) == ("succeeded", tuple(listed), "b,b:from1000")


class Slow:
    """A store whose record appears on the ``ready``-th read."""

    def __init__(self, ready: int) -> None:
        self.ready, self.reads = ready, 0

    def get_many(self, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        self.reads += 1
        return [done("t", "cus_1") if self.reads >= self.ready else None for _ in keys]

    def put_succeeded(self, records: Sequence[tuple[str, dict[str, Any]]], ttl_s: int) -> None:
        raise AssertionError("producers never write")

    def put_failed(self, key: str, record: dict[str, Any], ttl_s: int) -> None:
        raise AssertionError("producers never write")


def test_wait_reads_again_until_the_fate_is_final(billing: BillingClient) -> None:
    slow = Slow(ready=3)
    client = BillingClient(app=billing.app, fates=slow)
    fate = client.wait("k", timeout=60)
    assert (fate.status, fate.ids, slow.reads) == ("succeeded", ("cus_1",), 3)


def test_wait_is_bounded_and_returns_a_pending_fate(billing: BillingClient) -> None:
    never = Slow(ready=10**9)
    client = BillingClient(app=billing.app, fates=never)
    fate = client.wait("k", timeout=0)
    assert (fate.status, fate.pending, never.reads) == ("pending", ("k",), 1)
    assert isinstance(client.create_customer(email="a@example.com"), Handle)
