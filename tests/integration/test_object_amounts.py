"""Stripe's amounts and dates on invoices and credit notes (domain/README.md §4, §4.1, §7), each
with a worked example made through the services, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import call, customer, get, invoice, items, seat_subscription, tax_rate
from worker import clock
from worker.app import app

pytestmark = pytest.mark.usefixtures("database")

NOW = 1_800_000_000
HOUR = 3600

app.loader.import_default_modules()


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    current = [NOW]
    monkeypatch.setattr(clock, "_source", lambda: float(current[0]))
    return current


def coupon(coupon_id: str, **fields: Any) -> str:
    call("billing.coupons.create", id=coupon_id, **fields)
    return coupon_id


def test_subtotal_excluding_tax_takes_the_inclusive_tax_out_of_the_subtotal(now: list[int]) -> None:
    """11000 at 10 % inclusive with 1000 off: 10000 left, of which 909 tax (§6), so
    total_excluding_tax 9091 and subtotal_excluding_tax 9091 + 1000 = 10091."""
    cus = customer("usd")
    items(cus, "usd", [11000], tax_rates=[tax_rate("10", inclusive=True)])
    off = coupon("OFF10", amount_off=1000, currency="usd")
    made = get(invoice(cus, discounts=[{"coupon": off}]).id)
    assert (made["subtotal"], made["total"], made["total_excluding_tax"], made["subtotal_excluding_tax"]) == (
        11000,
        10000,
        9091,
        10091,
    )


def test_without_inclusive_tax_subtotal_excluding_tax_is_the_subtotal(now: list[int]) -> None:
    cus = customer("usd")
    items(cus, "usd", [2000], tax_rates=[tax_rate("5", inclusive=False)])
    made = get(invoice(cus, discounts=[{"coupon": coupon("P10", percent_off="10")}]).id)
    assert (made["subtotal"], made["subtotal_excluding_tax"], made["total_excluding_tax"], made["total"]) == (
        2000,
        2000,
        1800,
        1890,
    )


def test_effective_at_and_automatically_finalizes_at_follow_finalization(now: list[int]) -> None:
    cus = customer("usd")
    items(cus, "usd", [1000])
    auto = invoice(cus, auto_advance=True).id
    items(cus, "usd", [1000])
    manual = invoice(cus).id

    assert (get(auto)["effective_at"], get(auto)["automatically_finalizes_at"]) == (None, NOW + HOUR)
    assert (get(manual)["effective_at"], get(manual)["automatically_finalizes_at"]) == (None, None)

    now[0] = NOW + 2 * HOUR
    call("billing.invoices.finalize", invoice=auto)
    assert (get(auto)["effective_at"], get(auto)["automatically_finalizes_at"]) == (NOW + 2 * HOUR, None)


def test_period_of_manual_first_and_cycle_invoices_and_the_test_clock(now: list[int]) -> None:
    """A manual invoice and a subscription's first are their instant; a cycle invoice looks
    back on the period before the one it bills. All belong to the customer's test clock."""
    month = 31 * 86_400  # the clock starts on 2027-01-15: January has 31 days
    test_clock = call("billing.test_clocks.create", frozen_time=NOW).id
    cus = customer("usd", test_clock=test_clock)
    items(cus, "usd", [700])
    manual = get(invoice(cus).id)
    sub = seat_subscription(cus, quantity=1)
    first = get(get(sub)["latest_invoice"])
    call("billing.test_clocks.advance", test_clock=test_clock, frozen_time=NOW + month)
    cycle = get(get(sub)["latest_invoice"])

    assert (manual["period_start"], manual["period_end"], manual["test_clock"]) == (NOW, NOW, test_clock)
    assert (first["billing_reason"], first["period_start"], first["period_end"]) == (
        "subscription_create",
        NOW,
        NOW,
    )
    assert (cycle["billing_reason"], cycle["period_start"], cycle["period_end"]) == (
        "subscription_cycle",
        NOW,
        NOW + month,
    )
    assert cycle["lines"]["data"][0]["period"] == {"start": NOW + month, "end": NOW + month + 28 * 86_400}
    other = customer("usd")
    items(other, "usd", [100])
    assert get(invoice(other).id)["test_clock"] is None


def test_last_finalization_error_is_the_open_failure_of_finalizing_a_draft(now: list[int]) -> None:
    cus = customer("usd")
    items(cus, "usd", [1000])
    draft = invoice(cus).id
    assert get(draft)["last_finalization_error"] is None
    call("billing.customers.delete", customer=cus)  # a deleted customer's draft cannot be finalized

    result = app.tasks["billing.invoices.finalize"].apply(
        kwargs={"invoice": draft, "idempotency_key": "fin-1"}
    )

    assert result.failed()
    assert get(draft)["last_finalization_error"] == {
        "type": "invalid_request_error",
        "code": "resource_missing",
        "message": result.result.message,
        "param": "invoice",
    }
    assert get(draft)["status"] == "draft"


def test_a_credit_note_carries_its_share_of_discounts_and_taxes(now: list[int]) -> None:
    """2000 with 10 % off and 5 % exclusive tax: total 1890 (§4.1). A note of 630 is a third:
    67 of discount, 30 of tax; all of it lowers the open invoice's amount due."""
    cus = customer("usd")
    vat = tax_rate("5", inclusive=False)
    items(cus, "usd", [2000], tax_rates=[vat])
    inv = invoice(cus, discounts=[{"coupon": coupon("P10", percent_off="10")}], finalize=True).id
    now[0] = NOW + 60
    note = call("billing.credit_notes.create", invoice=inv, amount=630).id
    assert note
    shown = get(note)
    assert {k: shown[k] for k in AMOUNTS} == {
        "amount": 630,
        "subtotal": 667,
        "subtotal_excluding_tax": 667,
        "total": 630,
        "total_excluding_tax": 600,
        "discount_amount": 67,
        "discount_amounts": [{"amount": 67, "discount": "P10"}],
        "total_taxes": [{"amount": 30, "tax_rate": vat, "taxable_amount": 600, "inclusive": False}],
        "pre_payment_amount": 630,
        "post_payment_amount": 0,
        "effective_at": NOW + 60,
    }


def test_a_note_beyond_the_amount_due_splits_into_pre_and_post_payment(now: list[int]) -> None:
    """§7: a 3000 invoice of which credit balance paid 1000; a note of 2500 lowers the 2000 due
    to 0 and gives the other 500 back to the balance."""
    cus = customer("usd")
    call("billing.balance_transactions.create", customer=cus, amount=-1000, currency="usd")
    items(cus, "usd", [3000])
    inv = invoice(cus, finalize=True).id
    note = call("billing.credit_notes.create", invoice=inv, amount=2500).id
    assert note
    shown = get(note)
    assert (shown["pre_payment_amount"], shown["post_payment_amount"], shown["credit_amount"]) == (
        2000,
        500,
        500,
    )
    assert (
        shown["subtotal"],
        shown["total_excluding_tax"],
        shown["discount_amount"],
        shown["total_taxes"],
    ) == (
        2500,
        2500,
        0,
        [],
    )


AMOUNTS = (
    "amount",
    "subtotal",
    "subtotal_excluding_tax",
    "total",
    "total_excluding_tax",
    "discount_amount",
    "discount_amounts",
    "total_taxes",
    "pre_payment_amount",
    "post_payment_amount",
    "effective_at",
)
