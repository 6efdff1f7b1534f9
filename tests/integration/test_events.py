"""Events: written with their effect, in its transaction; the object exactly as ``billing get``
prints it after the change; none for a replay; read back through the list/get machinery."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from domain.errors import IdempotencyConflict
from tasks.contracts import InvoiceCreate, InvoiceItemCreate, parse
from tasks.ids import new_id
from tests.integration.test_subscriptions import deliver, now, price, subscribe, tick, ts
from tests.support import billing_follow_ups, call, customer, get, items
from worker.db import UnitOfWork, read_session
from worker.failures import record_failure
from worker.services import maintenance
from worker.services.invoices import preview
from worker.services.registry import run, run_together
from worker.tables import Event, FailureStatus, TaskFailure
from worker.views import list_objects

__all__ = ["now"]  # the fixture

pytestmark = pytest.mark.usefixtures("database")


def events(*types: str) -> list[dict[str, Any]]:
    """Every event (of these types), oldest first, as ``billing get`` prints it."""
    with read_session() as session:
        stmt = select(Event).order_by(col(Event.created), col(Event.id))
        if types:
            stmt = stmt.where(col(Event.type).in_(types))
        ids = [row.id for row in session.exec(stmt).all()]
    return [get(event_id) for event_id in ids]


def test_customer_created_updated_deleted_carry_the_object_as_billing_get_prints_it() -> None:
    cus = customer("usd", email="ada@example.com", name="Ada", idempotency_key="k-create")
    created = events("customer.created")
    assert len(created) == 1
    event = created[0]
    assert event["object"] == "event" and event["id"].startswith("evt_") and event["livemode"] is False
    assert event["request"] == {"id": "k-create", "idempotency_key": "k-create"}
    assert "previous_attributes" not in event["data"]

    call("billing.customers.update", customer=cus, name="Ada L.", idempotency_key="k-update")
    (updated,) = events("customer.updated")
    assert updated["data"]["object"] == get(cus)
    assert updated["data"]["previous_attributes"] == {"name": "Ada"}
    assert created[0]["data"]["object"] == {**get(cus), "name": "Ada"}

    call("billing.customers.delete", customer=cus)
    (deleted,) = events("customer.deleted")
    assert deleted["data"]["object"] == get(cus) and deleted["data"]["object"]["deleted"] is True
    assert {e["data"]["object"]["id"] for e in events()} == {cus}


def test_a_replayed_request_writes_no_second_event() -> None:
    payload = {"id": new_id("cus"), "idempotency_key": "once", "currency": "usd"}
    run("billing.customers.create", dict(payload))
    assert run("billing.customers.create", dict(payload)).replayed
    assert len(events()) == 1


def test_a_list_is_one_summary_event_and_single_item_messages_taken_together_one_each() -> None:
    cus = customer("eur")
    batch = [
        {"id": new_id("ii"), "idempotency_key": new_id("req"), "customer": cus, "amount": 100 + i}
        for i in range(3)
    ]
    call("billing.invoice_items.create_many", items=batch, idempotency_key="list-1")
    (summary,) = events("invoiceitem.batch_created")
    assert summary["request"] == {"id": "list-1", "idempotency_key": "list-1"}
    assert summary["data"]["object"] == {
        "object": "invoiceitem_batch",
        "id": "list-1",
        "count": 3,
        "items": [item["id"] for item in batch],
        "customers": [cus],
        "customer": cus,
        "created": summary["created"],
    }
    singles = []
    for amount in (7, 8):
        item_id = new_id("ii")
        singles.append({"id": item_id, "idempotency_key": item_id, "customer": cus, "amount": amount})
    assert all(run_together("billing.invoice_items.create", [parse(InvoiceItemCreate, p) for p in singles]))
    call("billing.invoice_items.create", customer=cus, amount=9, idempotency_key="one")

    items = events("invoiceitem.created")
    assert [e["data"]["object"] for e in items] == [get(i["id"]) for i in singles] + [
        get(items[2]["data"]["object"]["id"])
    ]
    assert [e["request"]["id"] for e in items] == [s["id"] for s in singles] + ["one"]
    assert all(e["data"]["object"]["customer"] == cus for e in items)

    with read_session() as session:
        page = list_objects(session, "events", type="invoiceitem.*", limit=2)
        rest = list_objects(session, "events", type="invoiceitem.*", starting_after=page["data"][-1]["id"])
    listed = [e["id"] for e in page["data"] + rest["data"]]
    assert (
        listed == [e["id"] for e in reversed([summary, *items])] and page["has_more"] and not rest["has_more"]
    )


# -- every kind of change: the events of each request, each object as ``billing get`` prints it --


def since(seen: set[str]) -> list[dict[str, Any]]:
    """The events written since ``seen`` (ids, updated), oldest first. Each object that still
    exists is exactly what ``billing get`` prints now: the request's events render it as
    its transaction left it."""
    fresh = [e for e in events() if e["id"] not in seen]
    seen.update(e["id"] for e in fresh)
    for event in fresh:
        obj = event["data"]["object"]
        if event["type"] not in GONE and obj["object"] != "invoiceitem_batch" and obj.get("id"):
            kind = "coupon" if obj["object"] == "coupon" else None  # chosen ids: no prefix
            assert obj == get(obj["id"], kind=kind), event["type"]
    return fresh


GONE = {"invoice.deleted", "customer.discount.deleted", "request.failed", "invoice.upcoming"}
"""Events whose object is no longer there to get (or is not an object of ``billing get``)."""


def types(fresh: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in fresh]


def test_invoices_credit_notes_and_the_ledger(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: set[str] = set()
    cus = customer("usd")
    assert types(since(seen)) == ["customer.created"]
    call("billing.balance_transactions.create", customer=cus, amount=-500)
    assert types(since(seen)) == ["customer.balance_transaction.created"]

    items(cus, "usd", [1000, 2000])
    since(seen)
    inv = call("billing.invoices.create", customer=cus, finalize=True).id
    fresh = since(seen)
    assert types(fresh) == ["invoice.created", "customer.balance_transaction.created", "invoice.finalized"]
    assert (
        fresh[0]["data"]["object"]["id"] == inv and fresh[1]["data"]["object"]["type"] == "applied_to_invoice"
    )

    note = call("billing.credit_notes.create", invoice=inv, amount=300).id
    assert types(since(seen)) == ["credit_note.created"]
    call("billing.credit_notes.void", credit_note=note)
    assert types(since(seen)) == ["credit_note.voided"]

    call("billing.invoices.pay", invoice=inv, paid_out_of_band=True)
    (paid,) = since(seen)
    assert paid["type"] == "invoice.paid" and paid["data"]["object"]["status"] == "paid"
    call("billing.credit_notes.create", invoice=inv, amount=400, credit_amount=400)
    assert types(since(seen)) == ["credit_note.created", "customer.balance_transaction.created"]

    items(cus, "usd", [700])
    since(seen)
    other = call("billing.invoices.create", customer=cus, finalize=True).id
    since(seen)
    call("billing.invoices.void", invoice=other)
    voided = since(seen)  # it consumed the credit note's 4.00: given back
    assert types(voided) == ["invoice.voided", "customer.balance_transaction.created"]
    assert voided[1]["data"]["object"]["amount"] == -400

    items(cus, "usd", [800])
    since(seen)
    third = call("billing.invoices.create", customer=cus, finalize=True).id
    since(seen)
    call("billing.invoices.mark_uncollectible", invoice=third)
    assert types(since(seen)) == ["invoice.marked_uncollectible"]

    items(cus, "usd", [900])
    since(seen)
    draft = call("billing.invoices.create", customer=cus).id
    since(seen)
    shown = get(draft)
    call("billing.invoices.delete", invoice=draft)
    (deleted,) = since(seen)
    assert deleted["type"] == "invoice.deleted" and deleted["data"]["object"] == shown


def test_catalogue_discounts_and_a_once_coupon_used_up() -> None:
    seen: set[str] = set()
    cus = customer("usd")
    since(seen)
    call("billing.tax_rates.create", display_name="VAT", percentage="20", inclusive=False)
    call("billing.products.create", name="Pro")
    assert types(since(seen)) == ["tax_rate.created", "product.created"]
    call("billing.coupons.create", id="ONCE5", amount_off=500, currency="usd", duration="once")
    call("billing.coupons.create", id="TEN", percent_off="10", duration="forever")
    assert types(since(seen)) == ["coupon.created", "coupon.created"]

    call("billing.discounts.create", customer=cus, coupon="TEN")
    (attached,) = since(seen)
    assert attached["type"] == "customer.discount.created"
    assert attached["data"]["object"] == get(cus)["discount"]
    call("billing.discounts.create", customer=cus, coupon="ONCE5")  # replaces TEN
    assert types(since(seen)) == ["customer.discount.deleted", "customer.discount.created"]

    items(cus, "usd", [2000])
    since(seen)
    call("billing.invoices.create", customer=cus, finalize=True)
    assert "customer.discount.deleted" in types(since(seen))  # the once coupon is used up
    assert get(cus)["discount"] is None

    call("billing.discounts.create", customer=cus, coupon="TEN")
    since(seen)
    call("billing.discounts.delete", customer=cus)
    (removed,) = since(seen)
    assert (
        removed["type"] == "customer.discount.deleted" and removed["data"]["object"]["coupon"]["id"] == "TEN"
    )


def test_subscriptions_beat_and_the_upcoming_renewal(now: list[int]) -> None:
    seen: set[str] = set()
    cus = customer("usd")
    pro = price(1500)
    since(seen)
    sub = subscribe(cus, pro, collection_method="send_invoice", days_until_due=7).id
    assert types(since(seen)) == ["customer.subscription.created", "invoice.created", "invoice.finalized"]

    now[0] = ts("2026-03-08 10:00:01")  # past the first invoice's due date
    tick(maintenance.mark_overdue)
    (overdue,) = since(seen)
    assert overdue["type"] == "invoice.overdue" and overdue["data"]["object"]["overdue"] is True
    assert overdue["request"] == {"id": None, "idempotency_key": None}  # beat's, not a producer's

    now[0] = ts("2026-03-29 10:00:00") - 1  # the period ends on 1 April 10:00: 3 days and a second
    tick(maintenance.renew_subscriptions)
    assert since(seen) == []
    now[0] += 1
    tick(maintenance.renew_subscriptions)
    tick(maintenance.renew_subscriptions)  # once per period, however often beat ticks
    (upcoming,) = since(seen)
    assert upcoming["type"] == "invoice.upcoming"
    assert upcoming["data"]["object"] == preview(cus, subscription=sub, now=now[0])  # the renewal's invoice
    assert upcoming["data"]["object"]["billing_reason"] == "subscription_cycle"
    assert upcoming["data"]["object"]["period_end"] == ts("2026-04-01 10:00:00")
    assert upcoming["request"] == {
        "id": None,
        "idempotency_key": f"upcoming:{sub}:{ts('2026-04-01 10:00:00')}",
    }

    first_invoice = get(sub)["latest_invoice"]
    now[0] = ts("2026-04-01 10:00:00")
    deliver(tick(maintenance.renew_subscriptions))
    renewed = since(seen)
    assert get(sub)["latest_invoice"] != first_invoice
    assert types(renewed) == ["invoice.created", "customer.subscription.updated"]
    assert renewed[1]["data"]["previous_attributes"] == {
        "current_period_start": ts("2026-03-01 10:00:00"),
        "current_period_end": ts("2026-04-01 10:00:00"),
        "latest_invoice": first_invoice,
    }
    now[0] += 3600
    deliver(tick(maintenance.finalize_drafts))
    assert types(since(seen)) == ["invoice.finalized"]

    call("billing.subscriptions.cancel", subscription=sub, at_period_end=True)
    (updated,) = since(seen)
    assert updated["data"]["previous_attributes"] == {"cancel_at_period_end": False, "canceled_at": None}
    now[0] = ts("2026-05-01 10:00:00")
    deliver(tick(maintenance.renew_subscriptions))
    (ended,) = since(seen)
    assert (
        ended["type"] == "customer.subscription.deleted" and ended["data"]["object"]["status"] == "canceled"
    )


def test_a_test_clock_is_ready_when_made_and_after_each_advance() -> None:
    seen: set[str] = set()
    test_clock = call("billing.test_clocks.create", frozen_time=ts("2026-01-31 10:00:00")).id
    (ready,) = since(seen)
    assert ready["type"] == "test_helpers.test_clock.ready"
    cus = customer("usd", test_clock=test_clock)
    since(seen)
    subscribe(cus, price(1000), auto_advance=True)
    since(seen)
    call("billing.test_clocks.advance", test_clock=test_clock, frozen_time=ts("2026-02-28 11:00:00"))
    fresh = since(seen)
    assert types(fresh) == [
        "invoice.created",
        "customer.subscription.updated",
        "invoice.finalized",
        "test_helpers.test_clock.ready",
    ]
    assert fresh[-1]["data"]["previous_attributes"] == {"frozen_time": ts("2026-01-31 10:00:00")}


def test_invoices_made_together_and_chains_name_their_own_requests() -> None:
    first, second = customer("usd"), customer("usd")
    items(first, "usd", [100] * 260)
    items(second, "usd", [200])
    seen = {e["id"] for e in events()}
    commands = [
        parse(
            InvoiceCreate,
            {"id": new_id("in"), "customer": c, "idempotency_key": f"inv-{n}", "finalize": True},
        )
        for n, c in enumerate((first, second))
    ]
    settled = run_together("billing.invoices.create", commands)
    assert all(settled)
    fresh = since(seen)
    assert [(e["type"], e["request"]["id"]) for e in fresh] == [
        ("invoice.created", "inv-0"),
        ("invoice.finalized", "inv-0"),
        ("invoice.created", "inv-1"),
        ("invoice.finalized", "inv-1"),
    ]
    big = fresh[1]["data"]["object"]  # 250 lines: its first ten, as `billing get` shows it
    assert big == get(big["id"])
    assert (len(big["lines"]["data"]), big["lines"]["total_count"], big["lines"]["has_more"]) == (
        10,
        250,
        True,
    )
    outcome = settled[0]
    assert outcome is not None
    (part2,) = billing_follow_ups(outcome)
    run(part2.task_name, dict(part2.payload))
    created = since(seen)[0]
    assert created["request"] == {"id": "inv-0:part2", "idempotency_key": "inv-0"}
    assert len(created["data"]["object"]["lines"]["data"]) == 10


def test_a_recorded_failure_is_a_request_failed_event_once_per_failure() -> None:
    cus = customer("usd")
    payload = {"customer": cus, "idempotency_key": "k-1", "name": "x"}
    error = IdempotencyConflict("k-1", "billing.customers.create")
    for _ in range(2):  # the same message failing again while its failure is open: one event
        record_failure(
            task_id="t-1", task_name="billing.customers.update", payload=payload, error=error, retryable=False
        )
    (failed,) = events("request.failed")
    assert failed["request"] == {"id": "k-1", "idempotency_key": "k-1"}
    obj = failed["data"]["object"]
    assert obj["error"] == {
        "type": "idempotency_error",
        "code": "idempotency_key_in_use",
        "field": "idempotency_key",
        "message": error.message,
    }
    assert (obj["task"], obj["task_id"], obj["customer"], obj["idempotency_key"]) == (
        "billing.customers.update",
        "t-1",
        cus,
        "k-1",
    )
    with read_session() as session:
        assert session.exec(select(Event).where(col(Event.type) == "request.failed")).one().customer_id == cus

    with UnitOfWork() as uow:  # an operator resolved it; it fails again: a new failure, a new event
        uow.session.execute(update(TaskFailure).values(status=FailureStatus.RESOLVED))
        uow.commit()
    record_failure(
        task_id="t-1", task_name="billing.customers.update", payload=payload, error=error, retryable=False
    )
    assert len(events("request.failed")) == 2

    hostile = {"idempotency_key": "k\x00" + "x" * 400, "customer": "c" * 100}
    record_failure(
        task_id="t-2", task_name="billing.nope", payload=hostile, error=ValueError("boom"), retryable=False
    )
    last = events("request.failed")[-1]
    assert last["request"] == {"id": None, "idempotency_key": None}
    assert last["data"]["object"]["error"]["type"] == "api_error"


def test_a_currency_change_updates_each_subscription_then_the_boundary_switches_them(now: list[int]) -> None:
    cus = customer("usd")
    first = subscribe(cus, price(1000, currency_options={"eur": {"unit_amount": 900}})).id
    second = subscribe(cus, price(500, currency_options={"eur": {"unit_amount": 450}}, name="Seats")).id
    seen = {e["id"] for e in events()}  # the set-up's events (checked by the tests above)
    call("billing.subscriptions.change_currency", customer=cus, currency="eur")
    changed = since(seen)
    assert [(e["type"], e["data"]["object"]["id"]) for e in changed] == [
        ("customer.subscription.updated", first),
        ("customer.subscription.updated", second),
    ]
    assert all(e["data"]["previous_attributes"] == {"pending_currency": None} for e in changed)
    call("billing.subscriptions.change_currency", customer=cus, currency="eur")  # no change: no event
    assert since(seen) == []

    now[0] = ts("2026-04-01 10:00:00")
    deliver(tick(maintenance.renew_subscriptions))  # two renewals: each event shows its own commit
    switched = [e for e in events("customer.subscription.updated") if e["id"] not in seen]
    # the first renewal switches both (and moves its own period); the second moves its period
    renewed = ["current_period_end", "current_period_start", "latest_invoice"]
    assert [(e["data"]["object"]["id"], sorted(e["data"]["previous_attributes"])) for e in switched] == [
        (second, ["currency", "pending_currency"]),  # the first renewal switches the other one
        (first, sorted(["currency", "pending_currency", *renewed])),  # and its own
        (second, renewed),  # whose own renewal comes next
    ]
    assert all(e["data"]["object"]["currency"] == "eur" for e in switched)
    assert switched[0]["data"]["previous_attributes"] == {"currency": "usd", "pending_currency": "eur"}
