"""Invoice preview on SQLite and PostgreSQL: it writes nothing, and the invoice made afterwards
is the one it showed (lines, discounts, tax, credit applied, amount due), case by case.

Bad input to the preview is in the bad-input catalogue (``test_bad_input.PREVIEW_CASES``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, event

from tests.support import (
    adjust,
    all_lines,
    billing_follow_ups,
    call,
    customer,
    get,
    invoice,
    items,
    seat_subscription,
    table_contents,
    tax_rate,
)
from worker import clock
from worker.cli import main
from worker.services.invoices import preview

pytestmark = pytest.mark.usefixtures("database")

NOW = 1_800_000_000

COMPARED = (
    "customer",
    "currency",
    "billing_reason",
    "subscription",
    "collection_method",
    "discounts",
    "subtotal",
    "subtotal_excluding_tax",
    "total_discount_amounts",
    "total_taxes",
    "total_excluding_tax",
    "total",
    "starting_balance",
    "ending_balance",
    "amount_due",
    "amount_remaining",
    "customer_tax_exempt",
    "created",
    "period_start",
    "period_end",
    "test_clock",
)
"""Everything an invoice shows that does not come from finalizing it (number, status, dates)."""


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The worker's clock, set by the test: ``now[0] = ...``."""
    current = [NOW]
    monkeypatch.setattr(clock, "_source", lambda: float(current[0]))
    return current


def assert_made_as_previewed(shown: dict[str, Any], made: dict[str, Any]) -> None:
    """The preview shows every line it would claim; the invoice made shows its first ten, and
    ``billing list lines`` the rest, in the same (claim) order."""
    assert {k: shown[k] for k in COMPARED} == {k: made[k] for k in COMPARED}
    assert shown["lines"]["data"] == all_lines(made["id"])
    assert shown["lines"]["data"][:10] == made["lines"]["data"]
    assert shown["lines"]["total_count"] == made["lines"]["total_count"] > 0
    assert (shown["lines"]["has_more"], made["lines"]["has_more"]) == (
        False,
        made["lines"]["total_count"] > 10,
    )


def discount(cus: str, coupon_id: str, **coupon: Any) -> None:
    call("billing.coupons.create", id=coupon_id, duration="forever", **coupon)
    call("billing.discounts.create", customer=cus, coupon=coupon_id)


def percent_off_and_exclusive_tax() -> str:
    cus = customer("usd")
    vat = tax_rate("20", inclusive=False)
    items(cus, "usd", [1999, 3001], tax_rates=[vat])
    items(cus, "usd", [-500])
    discount(cus, "TEN", percent_off="10")
    return cus


def amount_off_and_inclusive_tax() -> str:
    cus = customer("eur")
    vat = tax_rate("19", inclusive=True)
    items(cus, "eur", [1000, 2000, 3333], tax_rates=[vat])
    discount(cus, "FIVE", amount_off=500, currency="eur")
    return cus


def foreign_coupon_and_credit_in_two_currencies() -> str:
    """A EUR amount-off coupon and CAD credit do nothing to a USD invoice; USD credit does."""
    cus = customer("usd")
    items(cus, "usd", [4000, 1000])
    discount(cus, "EURONLY", amount_off=700, currency="eur")
    adjust(cus, -1500, "usd")
    adjust(cus, -9000, "cad")
    return cus


def credit_covering_everything() -> str:
    cus = customer("usd")
    items(cus, "usd", [1200])
    adjust(cus, -5000)
    return cus


def credit_leaving_less_than_the_minimum_charge() -> str:
    cus = customer("usd")
    items(cus, "usd", [1000])
    adjust(cus, -980)  # 20 left: below USD's 50, carried to the balance instead
    return cus


def exempt_customer_with_inclusive_tax() -> str:
    cus = customer("usd", tax_exempt="exempt")
    vat = tax_rate("10", inclusive=True)
    items(cus, "usd", [10000], tax_rates=[vat])
    return cus


CASES: dict[str, Callable[[], str]] = {
    f.__name__: f
    for f in (
        percent_off_and_exclusive_tax,
        amount_off_and_inclusive_tax,
        foreign_coupon_and_credit_in_two_currencies,
        credit_covering_everything,
        credit_leaving_less_than_the_minimum_charge,
        exempt_customer_with_inclusive_tax,
    )
}


@pytest.mark.parametrize("case", CASES)
def test_the_invoice_made_afterwards_is_the_one_previewed(case: str, now: list[int]) -> None:
    cus = CASES[case]()
    shown = preview(cus)
    made = get(invoice(cus, finalize=True).id)
    assert_made_as_previewed(shown, made)
    assert shown["chain"] == {"remaining_items": 0, "next_invoices": 0}
    assert (shown["object"], shown["status"], shown["number"]) == ("invoice", "draft", None)
    assert shown["id"].startswith("upcoming_in_")


def test_the_figures_of_a_preview(now: list[int]) -> None:
    """§4.1, §4.2, §6 worked through: lines 1999 and 3001 at 20 % exclusive VAT and a -500 line
    (not discountable), 10 % off, 1500 USD of credit."""
    cus = percent_off_and_exclusive_tax()
    adjust(cus, -1500, "usd")
    shown = preview(cus)
    assert [line["amount"] for line in shown["lines"]["data"]] == [1999, 3001, -500]
    assert [line["discount_amounts"] for line in shown["lines"]["data"]] == [
        [{"amount": 200, "discount": "TEN"}],
        [{"amount": 300, "discount": "TEN"}],
        [],
    ]
    assert shown["total_discount_amounts"] == [{"amount": 500, "discount": "TEN"}]
    assert [t["amount"] for t in shown["total_taxes"]] == [360 + 540]  # 1799 and 2701 at 20 %
    assert (shown["subtotal"], shown["total_excluding_tax"], shown["total"]) == (4500, 4000, 4900)
    assert (shown["starting_balance"], shown["ending_balance"], shown["amount_due"]) == (-1500, 0, 3400)


def test_a_backlog_past_250_is_previewed_part_by_part(now: list[int]) -> None:
    cus = customer("cad")
    billed = items(cus, "cad", [100 + i for i in range(260)])
    items(cus, "usd", [999])  # another currency: neither shown nor counted
    adjust(cus, -5000, "cad")

    first = preview(cus)
    assert [line["id"] for line in first["lines"]["data"]] == billed[:250]  # the oldest, in claim order
    assert first["chain"] == {"remaining_items": 10, "next_invoices": 1}
    assert (first["subtotal"], first["amount_due"]) == (56125, 56125 - 5000)
    outcome = invoice(cus, finalize=True, idempotency_key="backlog")
    assert_made_as_previewed(first, get(outcome.id))

    second = preview(cus)
    assert [line["id"] for line in second["lines"]["data"]] == billed[250:]
    assert second["chain"] == {"remaining_items": 0, "next_invoices": 0}
    (follow_up,) = billing_follow_ups(outcome)
    part2 = call(follow_up.task_name, **{**follow_up.payload, "finalize": True})
    assert part2.id
    assert_made_as_previewed(second, get(part2.id))


def renew_and_finalize(sub: str, now: list[int]) -> dict[str, Any]:
    now[0] = get(sub)["current_period_end"]
    renewal = call("billing.subscriptions.renew", subscription=sub, period_start=now[0])
    assert renewal.id
    call("billing.invoices.finalize", invoice=renewal.id)
    return get(renewal.id)


def test_a_subscription_renewal_is_billed_as_previewed(now: list[int]) -> None:
    cus = customer("usd")
    call("billing.coupons.create", id="Q25", percent_off="25", duration="repeating", duration_in_months=3)
    sub = seat_subscription(cus, coupon="Q25")
    vat = tax_rate("8.875", inclusive=False)
    items(cus, "usd", [1250], tax_rates=[vat])  # pending: swept into the renewal, after the period's lines
    adjust(cus, -2000, "usd")

    shown = preview(cus, subscription=sub)  # a month early: previewed at the period's start

    made = renew_and_finalize(sub, now)
    assert shown["id"] == f"upcoming_{made['id']}"
    assert_made_as_previewed(shown, made)
    assert (shown["billing_reason"], shown["subtotal"], shown["total_discount_amounts"]) == (
        "subscription_cycle",
        6000 + 1250,
        [{"amount": 1500 + 313, "discount": "Q25"}],
    )
    assert (shown["period_start"], shown["period_end"]) == (NOW, now[0])  # looks back one period


def test_a_renewal_after_a_currency_change_is_previewed_in_the_new_currency(now: list[int]) -> None:
    cus = customer("usd")
    sub = seat_subscription(cus)
    call("billing.subscriptions.change_currency", customer=cus, currency="eur")
    items(cus, "eur", [400])
    items(cus, "usd", [300])  # the old currency: not swept

    shown = preview(cus, subscription=sub)

    assert (shown["currency"], shown["subtotal"]) == ("eur", 3 * 1800 + 400)
    assert_made_as_previewed(shown, renew_and_finalize(sub, now))


def test_a_customer_on_a_test_clock_is_previewed_at_the_clock_time(now: list[int]) -> None:
    test_clock = call("billing.test_clocks.create", frozen_time=NOW - 86_400 * 30).id
    cus = customer("usd", test_clock=test_clock)
    items(cus, "usd", [700])
    shown = preview(cus)
    assert (shown["created"], shown["test_clock"]) == (NOW - 86_400 * 30, test_clock)
    assert_made_as_previewed(shown, get(invoice(cus, finalize=True).id))


@pytest.fixture
def statements() -> Iterator[list[str]]:
    """Every SQL statement run meanwhile, on any engine."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    yield seen
    event.remove(Engine, "before_cursor_execute", record)


def test_a_preview_writes_nothing(now: list[int], statements: list[str]) -> None:
    """Every table holds exactly what it held, and every statement the previews ran was a read."""
    cus = percent_off_and_exclusive_tax()
    call("billing.coupons.create", id="ONCE", percent_off="50", duration="once")
    sub = seat_subscription(cus, coupon="ONCE")
    items(cus, "usd", [10] * 300)
    adjust(cus, -900, "usd")
    adjust(cus, -900, "eur")
    items(cus, "eur", [500])
    before = table_contents()
    statements.clear()

    shown = [
        preview(cus),
        preview(cus, currency="eur"),
        preview(cus, subscription=sub),
        preview(cus, subscription=sub, currency="usd"),
    ]

    ran = [s for s in statements if not s.lstrip().upper().startswith(("BEGIN", "ROLLBACK", "SELECT"))]
    assert ran == []
    assert len(statements) > 4
    assert table_contents() == before
    assert [s["chain"]["remaining_items"] for s in shown] == [
        50,
        0,
        51,
        51,
    ]  # 300 pending USD items (+ 1 period line)


def test_billing_preview_prints_the_invoice(now: list[int]) -> None:
    cus = percent_off_and_exclusive_tax()
    result = CliRunner().invoke(main, ["preview", "--customer", cus, "--currency", "usd"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert (shown["customer"], shown["total"], shown["lines"]["total_count"]) == (cus, 4900, 3)
    assert shown == preview(cus)
