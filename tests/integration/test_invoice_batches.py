"""Invoice requests taken together (one transaction) make exactly the invoices they would alone.

``create_invoices_together`` settles the common case with one statement per step for the
whole batch; what it cannot settle is left to run alone, and nothing of it is written.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

from domain.errors import NothingToInvoice
from tasks.contracts import InvoiceCreate, parse
from tasks.ids import new_id
from tests.support import adjust, call, count, customer, get, invoice, items, row_counts
from worker import clock
from worker.services.base import FollowUp, Outcome
from worker.services.documents import RENDER_TASK
from worker.services.registry import run, run_together
from worker.tables import Invoice, OutboxMessage

pytestmark = pytest.mark.usefixtures("database")

OPERATION = "billing.invoices.create"
NOW = 1_800_000_000


@pytest.fixture(autouse=True)
def frozen_clock() -> Iterator[None]:
    previous = clock.set_source(lambda: NOW)
    yield
    clock.set_source(previous)


def request(customer_id: str, **options: Any) -> dict[str, Any]:
    return {"id": new_id("in"), "idempotency_key": new_id("req"), "customer": customer_id, **options}


def together(*payloads: dict[str, Any]) -> list[Outcome | None]:
    return run_together(OPERATION, [parse(InvoiceCreate, p) for p in payloads])


def world(rates: dict[str, str]) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Customers that need every part of generation: credit, a percent-off discount, a
    once-only amount-off coupon, tax rates on lines and by default, tax ids, an exempt
    customer paid by credit, a chain (260 items), a draft in a currency named on the
    request of a customer without one, an amount too small to charge."""
    who = {
        "ada": customer(
            "usd", email="ada@example.com", tax_id_data=[{"type": "eu_vat", "value": "DE123456789"}]
        ),
        "bea": customer("eur"),
        "cal": customer("gbp"),
        "dan": customer("usd", tax_exempt="exempt"),
        "eve": customer(None),
        "fay": customer("cad"),
    }
    adjust(who["ada"], -5000)
    call("billing.discounts.create", customer=who["ada"], coupon="TENOFF")
    items(who["ada"], "usd", [100 + i for i in range(40)], tax_rates=[rates["vat"]])
    call("billing.discounts.create", customer=who["bea"], coupon="FIVEEUR")
    items(who["bea"], "eur", [3000, -250])
    items(who["cal"], "gbp", [10 * i for i in range(260)])
    adjust(who["dan"], -100_000)
    items(who["dan"], "usd", [7000], tax_rates=[rates["gst"]])
    items(who["eve"], "jpy", [500, 20])
    items(who["fay"], "cad", [20])
    requests = [
        request(who["ada"], finalize=True, default_tax_rates=[rates["gst"]]),
        request(who["bea"], finalize=True),
        request(who["cal"], finalize=True),
        request(who["dan"], finalize=True),
        request(who["eve"], currency="jpy", description="draft"),
        request(who["fay"], finalize=True),
    ]
    return who, requests


WORLD_OWN = ("id", "invoice", "invoice_item", "number", "invoice_prefix", "url")
"""Fields whose values are a world's own (ids and numbers): compared apart, or not at all."""


def seen(value: Any, names: dict[str, str]) -> Any:
    """A view with this world's ids and invoice numbers replaced by names."""
    if isinstance(value, dict):
        return {k: seen(v, names) for k, v in value.items() if k not in WORLD_OWN}
    if isinstance(value, list):
        return [seen(v, names) for v in value]
    return names.get(value, value) if isinstance(value, str) else value


@pytest.fixture
def rates() -> dict[str, str]:
    call("billing.coupons.create", id="TENOFF", percent_off="10", duration="forever")
    call("billing.coupons.create", id="FIVEEUR", amount_off=500, currency="eur", duration="once")
    return {
        "vat": call("billing.tax_rates.create", display_name="VAT", percentage="8.25", inclusive=False).id,
        "gst": call("billing.tax_rates.create", display_name="GST", percentage="10", inclusive=True).id,
    }  # type: ignore[dict-item]


def chain(outcome: Outcome) -> list[FollowUp]:
    return [f for f in outcome.follow_ups if f.task_name == OPERATION]


def documents(outcome: Outcome) -> list[FollowUp]:
    return [f for f in outcome.follow_ups if f.task_name == RENDER_TASK]


def test_requests_made_together_make_the_invoices_they_make_alone(rates: dict[str, str]) -> None:
    alone_who, alone_requests = world(rates)
    alone = [run(OPERATION, payload) for payload in alone_requests]
    batch_who, batch_requests = world(rates)

    settled = together(*batch_requests)

    assert all(outcome is not None for outcome in settled)
    for one, other in zip(alone, settled, strict=True):
        assert other is not None and one.id is not None and other.id is not None
        assert [f.key.rpartition(":")[2] for f in chain(other)] == [
            f.key.rpartition(":")[2] for f in chain(one)
        ]  # the chain's next part: asked for by the batch as by the request alone
        assert [f.payload.keys() for f in documents(other)] == [f.payload.keys() for f in documents(one)]
        assert seen(get(other.id), {v: k for k, v in batch_who.items()}) == seen(
            get(one.id), {v: k for k, v in alone_who.items()}
        )
        assert (get(other.id)["number"] or "")[-5:] == (get(one.id)["number"] or "")[-5:]
    for name in alone_who:
        assert seen(get(batch_who[name]), {batch_who[name]: name}) == seen(
            get(alone_who[name]), {alone_who[name]: name}
        )  # balances, the used-up coupon, the default currency
    assert get(settled[0].id)["status"] == "paid"  # type: ignore[union-attr]
    assert get(settled[4].id)["status"] == "draft"  # type: ignore[union-attr]
    # each request replays alone afterwards, with the same result
    assert run(OPERATION, batch_requests[1]) == Outcome(settled[1].id, replayed=True)  # type: ignore[union-attr]


def test_the_chain_s_next_part_is_in_the_outbox_with_the_batch() -> None:
    cus = customer("usd")
    items(cus, "usd", [100] * 260)

    (outcome,) = together(request(cus, finalize=True))

    assert outcome is not None
    (follow_up,) = chain(outcome)
    (document,) = documents(outcome)  # finalized: its document too, in the same outbox
    assert count(OutboxMessage, OutboxMessage.key == document.key) == 1
    assert follow_up.task_id is not None  # the outbox row's, so every publication carries it
    assert count(OutboxMessage, OutboxMessage.key == follow_up.key) == 1
    assert get(run(follow_up.task_name, follow_up.payload).id or "")["lines"]["total_count"] == 10


def test_what_cannot_be_made_together_is_left_alone_and_nothing_of_it_is_written() -> None:
    test_clock = call("billing.test_clocks.create", frozen_time=NOW - 86_400).id
    good, twice, empty = customer("usd"), customer("usd"), customer("usd")
    clocked = customer("usd", test_clock=test_clock)
    deleted = customer("usd")
    for cus in (good, twice, clocked, deleted):
        items(cus, "usd", [1000])
    call("billing.customers.delete", customer=deleted)
    earlier = request(good)
    done_before = run(OPERATION, earlier)
    items(good, "usd", [2000])
    call("billing.customers.update", customer=good, metadata={"k": "v"})
    fresh = request(good)
    before = row_counts()

    settled = together(
        fresh,
        request(twice),
        request(twice),  # a second request for a customer of the batch
        earlier,  # a key seen before: its replay runs alone
        request("cus_NOPE"),
        request(empty),
        request(clocked),
        request(deleted),
        request(twice, discounts=[]),
        request(twice, pending_invoice_items_behavior="exclude"),
    )

    assert [outcome is not None for outcome in settled] == [True, True] + [False] * 8
    assert row_counts()["invoices"] == before["invoices"] + 2
    assert run(OPERATION, earlier) == Outcome(done_before.id, replayed=True)
    with pytest.raises(NothingToInvoice):
        run(OPERATION, request(empty))


def test_a_failing_batch_writes_nothing() -> None:
    one, two, other = customer("usd"), customer("eur"), customer("usd")
    for cus, currency in ((one, "usd"), (two, "eur"), (other, "usd")):
        items(cus, currency, [1000])
    taken = invoice(other).id
    before = row_counts()

    with pytest.raises(IntegrityError):  # the worker then runs each request alone
        together(request(one, finalize=True), request(two, finalize=True, id=taken))

    assert row_counts() == before
    assert count(Invoice, Invoice.customer_id == one) == 0
