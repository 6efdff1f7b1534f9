"""Invoice generation on SQLite and PostgreSQL: the 250 cap, currency filter, the chain."""

from __future__ import annotations

import pytest

from domain.errors import BadRequest, NothingToInvoice
from tasks.ids import derived_id
from tests.support import all_lines, call, count, customer, get, invoice, items, run_chain
from worker.db import read_session
from worker.tables import Invoice, InvoiceItem
from worker.views import get_object

pytestmark = pytest.mark.usefixtures("database")


def test_260_cad_items_make_two_cad_invoices_and_leave_usd_items_pending() -> None:
    cus = customer("cad")
    cad = items(cus, "cad", [100 + i for i in range(260)])
    usd = items(cus, "usd", [700, 800, 900])

    first, second = run_chain(cus, currency="cad", idempotency_key="run-1")

    one, two = get(first), get(second)
    assert one["lines"]["total_count"] == 250
    assert [line["id"] for line in all_lines(first)] == cad[:250]
    assert [line["id"] for line in one["lines"]["data"]] == cad[:10]  # the invoice shows its first ten
    assert one["subtotal"] == sum(100 + i for i in range(250)) == 56125
    assert two["lines"]["total_count"] == 10
    assert [line["id"] for line in two["lines"]["data"]] == cad[250:]
    assert two["subtotal"] == sum(100 + i for i in range(250, 260)) == 3545
    assert second == derived_id("in", "run-1:part2")
    assert {one["currency"], two["currency"]} == {"cad"}
    assert count(InvoiceItem, InvoiceItem.invoice_id.is_(None)) == 3  # type: ignore[union-attr]
    assert all(get(i)["invoice"] is None for i in usd)


def test_exactly_250_items_need_no_follow_up() -> None:
    cus = customer("eur")
    items(cus, "eur", [50] * 250)
    outcome = invoice(cus)
    assert outcome.follow_ups == []
    assert get(outcome.id)["lines"]["total_count"] == 250


def test_items_of_other_currencies_and_customers_are_never_pulled() -> None:
    ada, bea = customer("usd"), customer("usd")
    items(ada, "usd", [1000])
    items(ada, "gbp", [2000])
    items(bea, "usd", [3000])
    inv = get(invoice(ada).id)
    assert (inv["currency"], inv["subtotal"], inv["lines"]["total_count"]) == ("usd", 1000, 1)


def test_nothing_pending_in_that_currency_is_refused() -> None:
    cus = customer("usd")
    items(cus, "eur", [1000])
    with pytest.raises(NothingToInvoice) as error:
        invoice(cus, currency="usd")
    assert error.value.field == "customer"
    assert count(Invoice) == 0


def test_invoice_without_any_currency_is_refused() -> None:
    cus = customer(None)
    with pytest.raises(BadRequest) as error:
        invoice(cus)
    assert error.value.field == "currency"


def test_a_replayed_part_re_asks_for_the_next_part_while_items_remain() -> None:
    cus = customer("cad")
    items(cus, "cad", [10] * 300)
    key = "replay-chain"
    first = invoice(cus, idempotency_key=key, id=derived_id("in", key))
    again = invoice(cus, idempotency_key=key, id=derived_id("in", key))
    assert again.replayed and again.id == first.id
    assert again.follow_ups == first.follow_ups
    assert count(Invoice) == 1


def test_a_chain_redeems_its_named_coupon_once() -> None:
    cus = customer("usd")
    call("billing.coupons.create", id="ONCEONLY", percent_off="10", max_redemptions=1, idempotency_key="c1")
    items(cus, "usd", [1000] * 260)
    first, second = run_chain(cus, discounts=[{"coupon": "ONCEONLY"}], idempotency_key="coupon-chain")
    assert (get(first)["total"], get(second)["total"]) == (225000, 9000)
    with read_session() as session:
        assert get_object(session, "ONCEONLY", kind="coupon")["times_redeemed"] == 1


def test_a_claim_refuses_items_that_are_no_longer_pending() -> None:
    """Every claim holds the customer's lock, so the items one run read as pending are still
    pending when it attaches them; should something change them without that lock, the
    claim rolls back (and the task retries) instead of moving them to a second invoice."""
    from worker.db import UnitOfWork
    from worker.services.invoices.lines import ConcurrentClaim, write_lines

    cus = customer("usd")
    (billed,) = items(cus, "usd", [100])
    taken = invoice(cus).id
    (pending,) = items(cus, "usd", [200])
    with UnitOfWork() as uow, pytest.raises(ConcurrentClaim, match="1 of 2 items"):
        claims = [{"id": billed, "invoice": taken}, {"id": pending, "invoice": taken}]
        write_lines(uow.session, claims, claim=True)
    assert (get(billed)["invoice"], get(pending)["invoice"]) == (taken, None)
