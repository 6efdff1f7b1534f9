"""Events: written with their effect, in its transaction; the object exactly as ``billing get``
prints it after the change; none for a replay; read back through the list/get machinery."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import col, select

from tasks.contracts import InvoiceItemCreate, parse
from tasks.ids import new_id
from tests.support import call, customer, get
from worker.db import read_session
from worker.services.registry import run, run_together
from worker.tables import Event
from worker.views import list_objects

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


def test_one_event_per_item_of_a_list_and_of_single_item_messages_taken_together() -> None:
    cus = customer("eur")
    batch = [
        {"id": new_id("ii"), "idempotency_key": new_id("req"), "customer": cus, "amount": 100 + i}
        for i in range(3)
    ]
    call("billing.invoice_items.create_many", items=batch, idempotency_key="list-1")
    singles = []
    for amount in (7, 8):
        item_id = new_id("ii")
        singles.append({"id": item_id, "idempotency_key": item_id, "customer": cus, "amount": amount})
    assert all(run_together("billing.invoice_items.create", [parse(InvoiceItemCreate, p) for p in singles]))

    items = events("invoiceitem.created")
    assert [e["data"]["object"] for e in items] == [get(i["id"]) for i in batch + singles]
    assert {e["request"]["id"] for e in items[:3]} == {"list-1"}
    assert [e["request"] for e in items[3:]] == [{"id": s["id"], "idempotency_key": s["id"]} for s in singles]
    assert all(e["data"]["object"]["customer"] == cus for e in items)

    with read_session() as session:
        page = list_objects(session, "events", type="invoiceitem.created", limit=2)
    assert [e["id"] for e in page["data"]] == [e["id"] for e in reversed(items)][:2] and page["has_more"]
