"""Single-item messages taken together (one transaction) settle exactly what one message would.

What cannot be settled together is left to run alone, where it fails, retries or replays as
its own message; nothing of it is written by the batch.
"""

from __future__ import annotations

from typing import Any

import pytest

from domain.errors import BadRequest, IdempotencyConflict, NotFound
from tasks.contracts import InvoiceItemCreate, parse
from tasks.ids import new_id
from tests.support import call, count, customer, row_counts
from worker.services.registry import run, run_together
from worker.tables import InvoiceItem

pytestmark = pytest.mark.usefixtures("database")

OPERATION = "billing.invoice_items.create"


def message(customer_id: str, **fields: Any) -> dict[str, Any]:
    item_id = new_id("ii")
    return {"id": item_id, "idempotency_key": item_id, "customer": customer_id, "amount": 100, **fields}


def grown(before: dict[str, int], n: int) -> dict[str, int]:
    """Row counts after ``n`` more items, each with its idempotency key and its event."""
    return {
        **before,
        "invoice_items": before["invoice_items"] + n,
        "idempotency_keys": before["idempotency_keys"] + n,
        "events": before["events"] + n,
    }


def together(*payloads: dict[str, Any]) -> list[bool]:
    """Per message, whether the batch settled it."""
    settled = run_together(OPERATION, [parse(InvoiceItemCreate, p) for p in payloads])
    return [outcome is not None for outcome in settled]


def test_good_messages_are_written_in_one_go_each_with_its_key() -> None:
    cus = customer("usd")
    payloads = [message(cus, amount=100 + i) for i in range(5)]
    before = row_counts()

    assert together(*payloads) == [True] * 5

    assert row_counts() == grown(before, 5)
    assert run(OPERATION, payloads[2]).replayed  # each message replays on its own afterwards


def test_what_cannot_be_settled_is_left_alone_and_nothing_of_it_is_written() -> None:
    cus = customer("usd")
    earlier = message(cus)
    call(OPERATION, **earlier)
    taken = message(cus)
    call(OPERATION, **{**taken, "idempotency_key": "another-request"})
    good = message(cus)
    unknown_customer = message("cus_NOPE")
    reused_key = {**message(cus, amount=999), "idempotency_key": earlier["idempotency_key"]}
    before = row_counts()

    settled = together(good, unknown_customer, earlier, reused_key, taken, good)

    # the good one and the replay of an earlier success are settled; the good one's twin runs alone
    assert settled == [True, False, True, False, False, False]
    assert row_counts() == grown(before, 1)
    with pytest.raises(NotFound):
        run(OPERATION, unknown_customer)
    with pytest.raises(IdempotencyConflict):
        run(OPERATION, reused_key)
    with pytest.raises(BadRequest, match="already exists"):
        run(OPERATION, taken)


def test_a_message_twice_in_one_batch_is_written_once_and_its_copy_replays_alone() -> None:
    cus = customer("usd")
    payload = message(cus)

    assert together(payload, payload) == [True, False]

    assert count(InvoiceItem) == 1
    assert run(OPERATION, payload).replayed


def test_a_list_stores_every_field_of_every_item() -> None:
    """PostgreSQL sends a batch as one JSON document whose keys name the columns: each
    field must arrive in its column (and none be dropped as an unknown key)."""
    from tests.support import get

    cus = customer("eur")
    rate = call("billing.tax_rates.create", id=new_id("txr"), idempotency_key=new_id("k"),
                display_name="VAT", percentage="20", inclusive=False).id  # fmt: skip
    first, second = new_id("ii"), new_id("ii")
    run(
        "billing.invoice_items.create_many",
        {
            "idempotency_key": new_id("k"),
            "items": [
                {"id": first, "idempotency_key": first, "customer": cus, "unit_amount": 250, "quantity": 3,
                 "description": "seats", "discountable": False, "period": {"start": 100, "end": 200},
                 "metadata": {"order": "42"}, "tax_rates": [rate]},
                {"id": second, "idempotency_key": second, "customer": cus, "amount": -80},
            ],
        },
    )  # fmt: skip
    one, two = get(first), get(second)
    assert (one["currency"], one["amount"], one["unit_amount"], one["quantity"]) == ("eur", 750, 250, 3)
    assert (one["description"], one["discountable"], one["period"]) == (
        "seats",
        False,
        {"start": 100, "end": 200},
    )
    assert (one["metadata"], [t["id"] if isinstance(t, dict) else t for t in one["tax_rates"]]) == (
        {"order": "42"},
        [rate],
    )
    assert (two["amount"], two["discountable"], two["metadata"], two["description"]) == (-80, False, {}, None)
