"""Subscriptions on SQLite and PostgreSQL: the first invoice, renewals, coupons across
periods, a currency change, test clocks, and each (subscription, period) billed once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from domain.errors import BadRequest, SubscriptionCurrencyConflict, WrongState
from tasks.ids import derived_id
from tests.support import DOCUMENTS, adjust, all_lines, billing_follow_ups, call, count, customer, get, items
from worker import clock
from worker.audit import audit_database
from worker.db import UnitOfWork, read_session
from worker.services import maintenance
from worker.services.base import FollowUp, Outcome
from worker.services.registry import run
from worker.settings import get_settings
from worker.tables import Invoice, Subscription, SubscriptionPeriod

pytestmark = pytest.mark.usefixtures("database")

MONTH_START = "2026-03-01 10:00:00"


def ts(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def day(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d")


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The worker's clock, set by the test: ``now[0] = ...``."""
    current = [ts(MONTH_START)]
    monkeypatch.setattr(clock, "_source", lambda: float(current[0]))
    return current


def deliver(follow_ups: list[FollowUp]) -> list[Outcome]:
    """Run follow-ups and everything they ask for, as workers would, oldest first."""
    queue, done = [f for f in follow_ups if f.task_name != DOCUMENTS], []
    while queue:
        follow_up = queue.pop(0)
        outcome = run(follow_up.task_name, dict(follow_up.payload))
        done.append(outcome)
        queue.extend(billing_follow_ups(outcome))
    return done


def tick(job: Any) -> list[FollowUp]:
    """One beat tick of a chunked job, as ``BillingTask.sweep`` runs it; returns what it publishes."""
    published, cursor = [], None
    while True:
        with UnitOfWork() as uow:
            follow_ups, cursor = job(uow.session, clock.now(), get_settings(), cursor)
            uow.commit()
        published.extend(follow_ups)
        if cursor is None:
            return published


def product(name: str = "Pro") -> str:
    outcome = call("billing.products.create", name=name)
    assert outcome.id
    return outcome.id


def price(
    unit_amount: int, currency: str = "usd", *, interval: str = "month", name: str = "Pro", **fields: Any
) -> str:
    outcome = call(
        "billing.prices.create",
        product=product(name),
        currency=currency,
        unit_amount=unit_amount,
        recurring={"interval": interval},
        **fields,
    )
    assert outcome.id
    return outcome.id


def subscribe(customer_id: str, *prices: str | tuple[str, int], **fields: Any) -> Outcome:
    lines = [
        {"price": p, "quantity": 1} if isinstance(p, str) else {"price": p[0], "quantity": p[1]}
        for p in prices
    ]
    outcome = call("billing.subscriptions.create", customer=customer_id, items=lines, **fields)
    deliver(outcome.follow_ups)
    return outcome


def invoices_of(customer_id: str) -> list[dict[str, Any]]:
    with read_session() as session:
        ids = list(
            session.execute(
                select(Invoice.id)
                .where(Invoice.customer_id == customer_id)
                .order_by(Invoice.created, Invoice.number)
            ).scalars()
        )
    return [get(i) for i in ids]


def active_currencies(customer_id: str) -> set[str]:
    with read_session() as session:
        return set(
            session.execute(
                select(Subscription.currency).where(
                    Subscription.customer_id == customer_id, Subscription.status == "active"
                )
            ).scalars()
        )


# -- creation -----------------------------------------------------------------------------------


def test_the_first_period_is_invoiced_at_creation(now: list[int]) -> None:
    cus = customer("usd")
    items(cus, "usd", [700])
    pro, seats = price(2000), price(500, name="Seats")
    sub = subscribe(cus, pro, (seats, 3)).id
    assert sub

    (invoice,) = invoices_of(cus)
    assert (invoice["billing_reason"], invoice["subscription"], invoice["status"]) == (
        "subscription_create",
        sub,
        "open",
    )
    assert sorted(line["amount"] for line in invoice["lines"]["data"]) == [700, 1500, 2000]
    assert invoice["total"] == 4200
    periods = {line["amount"]: line["period"] for line in invoice["lines"]["data"]}
    assert periods[2000] == {"start": now[0], "end": ts("2026-04-01 10:00:00")}
    assert periods[700] is None
    view = get(sub)
    assert (view["status"], view["currency"], view["latest_invoice"]) == ("active", "usd", invoice["id"])
    assert (day(view["current_period_start"]), day(view["current_period_end"])) == (
        "2026-03-01",
        "2026-04-01",
    )


def test_a_customer_without_currency_takes_the_subscriptions(now: list[int]) -> None:
    cus = customer(None)
    subscribe(cus, price(900, "eur"))
    assert get(cus)["currency"] == "eur"


def test_a_second_subscription_in_another_currency_is_refused_and_writes_nothing(now: list[int]) -> None:
    cus = customer("usd")
    subscribe(cus, price(1000, currency_options={"eur": {"unit_amount": 900}}))
    other = price(800, currency_options={"eur": {"unit_amount": 700}})
    with pytest.raises(SubscriptionCurrencyConflict) as error:
        subscribe(cus, other, currency="eur")
    assert error.value.field == "currency"
    assert count(Subscription) == 1 and count(Invoice) == 1


@pytest.mark.parametrize(
    ("case", "field"),
    [
        ("price-without-currency", "items[1].price"),
        ("one-time-price", "items[0].price"),
        ("intervals-differ", "items[1].price"),
        ("same-price-twice", "items[1].price"),
        ("quantity-overflows", "items[0].quantity"),
        ("future-anchor", "billing_cycle_anchor"),
    ],
)
def test_bad_subscriptions_name_the_field(now: list[int], case: str, field: str) -> None:
    cus = customer("usd")
    usd = price(1000)
    params: dict[str, Any] = {}
    if case == "price-without-currency":
        lines: list[Any] = [price(100, "usd", currency_options={"eur": {"unit_amount": 90}}), usd]
        params["currency"] = "eur"
    elif case == "one-time-price":
        one_time = call("billing.prices.create", product=product(), currency="usd", unit_amount=5).id
        lines = [one_time]
    elif case == "intervals-differ":
        lines = [usd, price(100, interval="year")]
    elif case == "same-price-twice":
        lines = [usd, usd]
    elif case == "quantity-overflows":
        lines = [(price(99_999_999), 2)]
    else:
        lines = [usd]
        params["billing_cycle_anchor"] = now[0] + 60
    with pytest.raises(BadRequest) as error:
        subscribe(cus, *lines, **params)
    assert error.value.field == field
    assert count(Subscription) == 0 and count(Invoice) == 0


# -- renewals on beat ----------------------------------------------------------------------------


def test_beat_twice_and_replayed_ticks_bill_each_period_once(now: list[int]) -> None:
    cus = customer("usd")
    sub = subscribe(cus, price(1500)).id
    now[0] = ts("2026-04-01 10:00:05")

    first = tick(maintenance.renew_subscriptions)
    second = tick(maintenance.renew_subscriptions)  # beat fires again before any worker ran
    assert [f.payload["period_start"] for f in first] == [ts("2026-04-01 10:00:00")]
    assert second == []
    deliver(first)
    deliver(first)  # the same tick's messages delivered again
    now[0] += get_settings().outbox_republish_after_s + 1
    assert tick(maintenance.renew_subscriptions) == []  # nothing due: the period moved on

    with UnitOfWork() as uow:  # idempotency keys purged: the billed period still refuses a second bill
        uow.session.execute(maintenance.delete(maintenance.IdempotencyKey))
        uow.commit()
    assert deliver(first)[0].id == derived_id("in", f"renew:{sub}:{ts('2026-04-01 10:00:00')}")

    cycle = [i for i in invoices_of(cus) if i["billing_reason"] == "subscription_cycle"]
    assert [(i["total"], i["status"]) for i in cycle] == [(1500, "draft")]
    assert count(SubscriptionPeriod) == 2


def test_missed_ticks_are_caught_up_in_order_each_period_once(now: list[int]) -> None:
    cus = customer("usd")
    subscribe(cus, price(1500), auto_advance=False)
    now[0] = ts("2026-06-15 00:00:00")  # beat was down: April, May and June are due
    published = tick(maintenance.renew_subscriptions)
    assert len(published) == 1  # only the next period; each renewal asks for the one after
    outcomes = deliver(published + published)
    assert sum(1 for o in outcomes if not o.replayed and o.id) == 3
    cycle = [i for i in invoices_of(cus) if i["billing_reason"] == "subscription_cycle"]
    assert [day(i["lines"]["data"][0]["period"]["start"]) for i in cycle] == [
        "2026-04-01",
        "2026-05-01",
        "2026-06-01",
    ]
    assert tick(maintenance.renew_subscriptions) == []


def test_a_period_row_cannot_be_written_twice(now: list[int]) -> None:
    cus = customer("usd")
    sub = subscribe(cus, price(1500)).id
    with pytest.raises(IntegrityError), UnitOfWork() as uow:
        uow.session.add(
            SubscriptionPeriod(
                subscription_id=sub,
                period_start=now[0],
                period_end=now[0] + 1,
                currency="usd",
                billing_reason="subscription_cycle",
            )
        )
        uow.session.flush()


def test_renewals_refuse_periods_that_are_not_next_or_not_due(now: list[int]) -> None:
    cus = customer("usd")
    sub = subscribe(cus, price(1500)).id
    cases = [
        (ts("2026-04-01 10:00:00"), WrongState),  # not due yet
        (ts("2026-02-15 10:00:00"), BadRequest),  # not a boundary
    ]
    for start, error in cases:
        with pytest.raises(error) as caught:
            call("billing.subscriptions.renew", subscription=sub, period_start=start)
        assert caught.value.field == "period_start"
    now[0] = ts("2026-06-15 00:00:00")
    with pytest.raises(WrongState) as skipped:  # April comes first
        call("billing.subscriptions.renew", subscription=sub, period_start=ts("2026-05-01 10:00:00"))
    assert skipped.value.field == "period_start" and "comes first" in skipped.value.message
    assert count(SubscriptionPeriod) == 1


def test_drafts_finalize_an_hour_later_unless_auto_advance_is_off(now: list[int]) -> None:
    auto, manual = customer("usd"), customer("usd")
    subscribe(auto, price(1500))
    subscribe(manual, price(1500), auto_advance=False)
    now[0] = ts("2026-04-01 10:00:00")
    deliver(tick(maintenance.renew_subscriptions))
    now[0] += 3599
    assert tick(maintenance.finalize_drafts) == []
    now[0] += 1
    deliver(tick(maintenance.finalize_drafts) * 2)  # twice: one finalization
    assert [i["status"] for i in invoices_of(auto)] == ["open", "open"]
    assert [i["status"] for i in invoices_of(manual)] == ["open", "draft"]
    assert invoices_of(auto)[1]["number"].endswith("-0002")


def test_send_invoice_past_due_is_marked_overdue(now: list[int]) -> None:
    cus = customer("usd")
    subscribe(cus, price(1500), collection_method="send_invoice", days_until_due=7)
    (invoice,) = invoices_of(cus)
    assert invoice["due_date"] == now[0] + 7 * 86_400
    now[0] += 7 * 86_400
    tick(maintenance.mark_overdue)
    assert get(invoice["id"])["overdue"] is False
    now[0] += 1
    tick(maintenance.mark_overdue)
    assert get(invoice["id"])["overdue"] is True
    with read_session() as session:
        from worker.views import list_objects

        listed = list_objects(session, "invoices", overdue=True)
    assert [i["id"] for i in listed["data"]] == [invoice["id"]]


def test_cancel_at_period_end_ends_at_the_boundary_without_billing(now: list[int]) -> None:
    cus = customer("usd")
    sub = subscribe(cus, price(1500)).id
    call("billing.subscriptions.cancel", subscription=sub, at_period_end=True)
    now[0] = ts("2026-04-01 10:00:00")
    deliver(tick(maintenance.renew_subscriptions))
    view = get(sub)
    assert (view["status"], view["ended_at"], len(invoices_of(cus))) == ("canceled", now[0], 1)
    with pytest.raises(WrongState):
        call("billing.subscriptions.cancel", subscription=sub)


def test_deleting_the_customer_cancels_its_subscriptions(now: list[int]) -> None:
    cus = customer("usd")
    sub = subscribe(cus, price(1500)).id
    call("billing.customers.delete", customer=cus)
    assert get(sub)["status"] == "canceled"
    now[0] = ts("2026-05-01 10:00:00")
    assert tick(maintenance.renew_subscriptions) == []


# -- a year on a test clock ----------------------------------------------------------------------


def test_a_year_of_monthly_billing_with_a_coupon_and_a_currency_change() -> None:
    """Monthly subscription A (anchored on 31 January: it bills on each month's last day) with
    a 25 % coupon repeating for 3 months, and B (anchored on the 14th) from February; a USD
    item swept in February; a EUR item waiting for the EUR invoices; a change to EUR asked on
    10 June, taking effect for both at B's boundary on 14 June; EUR credit in July."""
    start = ts("2026-01-31 10:00:00")
    test_clock = call("billing.test_clocks.create", frozen_time=start, name="a year").id
    assert test_clock
    cus = customer("usd", test_clock=test_clock)
    adjust(cus, -1000)
    coupon = call(
        "billing.coupons.create",
        id="QUARTER25",
        percent_off=25,
        duration="repeating",
        duration_in_months=3,
        idempotency_key="coupon",
    ).id
    pro = price(2000, currency_options={"eur": {"unit_amount": 1800}})
    seats = price(500, currency_options={"eur": {"unit_amount": 450}}, name="Seats")
    support = price(1000, currency_options={"eur": {"unit_amount": 900}}, name="Support")
    a = subscribe(cus, pro, (seats, 3), coupon=coupon).id

    def advance(to: str) -> None:
        outcome = call("billing.test_clocks.advance", test_clock=test_clock, frozen_time=ts(to))
        deliver(outcome.follow_ups)
        assert len(active_currencies(cus)) == 1, "two active subscriptions in different currencies"

    actions = {
        "2026-02-14 10:00:00": lambda: (subscribe(cus, support), items(cus, "usd", [700])),
        "2026-04-20 10:00:00": lambda: items(cus, "eur", [900]),
        "2026-06-10 10:00:00": lambda: call(
            "billing.subscriptions.change_currency", customer=cus, currency="eur"
        ),
        "2026-07-20 10:00:00": lambda: (adjust(cus, -500, "eur"), adjust(cus, -300, "usd")),
    }
    moments = {
        f"2026-{m:02d}-{d} {t}" for m in range(2, 13) for d, t in (("01", "00:00:00"), ("14", "10:00:00"))
    }
    for moment in [*sorted(moments | set(actions)), "2027-01-01 00:00:00"]:
        advance(moment)
        if moment in actions:
            actions[moment]()
        assert active_currencies(cus) == {"usd" if moment < "2026-06-14 10:00:00" else "eur"}, moment

    b = next(s for s in (get(i["subscription"]) for i in invoices_of(cus)) if s["id"] != a)["id"]
    got = [
        (
            i["number"][-4:],
            "A" if i["subscription"] == a else "B",
            day(i["created"]),
            i["billing_reason"],
            i["currency"],
            i["subtotal"],
            i["total"],
            i["starting_balance"],
            i["amount_due"],
            i["status"],
        )
        for i in invoices_of(cus)
    ]
    create, cycle = "subscription_create", "subscription_cycle"
    assert got == [
        ("0001", "A", "2026-01-31", create, "usd", 3500, 2625, -1000, 1625, "open"),
        ("0002", "B", "2026-02-14", create, "usd", 1000, 1000, 0, 1000, "open"),
        ("0003", "A", "2026-02-28", cycle, "usd", 4200, 3150, 0, 3150, "open"),  # + the 700 item
        ("0004", "B", "2026-03-14", cycle, "usd", 1000, 1000, 0, 1000, "open"),
        ("0005", "A", "2026-03-31", cycle, "usd", 3500, 2625, 0, 2625, "open"),  # coupon's 3rd month
        ("0006", "B", "2026-04-14", cycle, "usd", 1000, 1000, 0, 1000, "open"),
        ("0007", "A", "2026-04-30", cycle, "usd", 3500, 3500, 0, 3500, "open"),  # coupon over
        ("0008", "B", "2026-05-14", cycle, "usd", 1000, 1000, 0, 1000, "open"),
        ("0009", "A", "2026-05-31", cycle, "usd", 3500, 3500, 0, 3500, "open"),
        ("0010", "B", "2026-06-14", cycle, "eur", 1800, 1800, 0, 1800, "open"),  # EUR + the 900 item
        ("0011", "A", "2026-06-30", cycle, "eur", 3150, 3150, 0, 3150, "open"),
        ("0012", "B", "2026-07-14", cycle, "eur", 900, 900, 0, 900, "open"),
        ("0013", "A", "2026-07-31", cycle, "eur", 3150, 3150, -500, 2650, "open"),  # EUR credit
        ("0014", "B", "2026-08-14", cycle, "eur", 900, 900, 0, 900, "open"),
        ("0015", "A", "2026-08-31", cycle, "eur", 3150, 3150, 0, 3150, "open"),
        ("0016", "B", "2026-09-14", cycle, "eur", 900, 900, 0, 900, "open"),
        ("0017", "A", "2026-09-30", cycle, "eur", 3150, 3150, 0, 3150, "open"),
        ("0018", "B", "2026-10-14", cycle, "eur", 900, 900, 0, 900, "open"),
        ("0019", "A", "2026-10-31", cycle, "eur", 3150, 3150, 0, 3150, "open"),
        ("0020", "B", "2026-11-14", cycle, "eur", 900, 900, 0, 900, "open"),
        ("0021", "A", "2026-11-30", cycle, "eur", 3150, 3150, 0, 3150, "open"),
        ("0022", "B", "2026-12-14", cycle, "eur", 900, 900, 0, 900, "open"),
        ("0023", "A", "2026-12-31", cycle, "eur", 3150, 3150, 0, 3150, "open"),
    ]
    assert {get(a)["currency"], get(b)["currency"]} == {"eur"}
    assert get(cus, expand=["invoice_credit_balance"])["invoice_credit_balance"] == {"usd": 300}
    discounted = [i["total_discount_amounts"] for i in invoices_of(cus) if i["subscription"] == a][:4]
    assert discounted == [
        [{"amount": 875, "discount": "QUARTER25"}],
        [{"amount": 1050, "discount": "QUARTER25"}],
        [{"amount": 875, "discount": "QUARTER25"}],
        [],
    ]
    assert audit_database() == []


def test_the_clock_command_advances_a_customer_by_months_and_shows_the_invoices() -> None:
    import json

    from click.testing import CliRunner

    from worker.cli import main

    runner = CliRunner()
    made = runner.invoke(main, ["clock", "create", "--frozen-time", "2026-01-31T10:00:00", "--name", "demo"])
    assert made.exit_code == 0, made.output
    test_clock = made.output.strip()
    cus = customer("usd", test_clock=test_clock)
    subscribe(cus, price(1500))

    advanced = runner.invoke(main, ["clock", "advance", test_clock, "--months", "3", "--hours", "1"])

    assert advanced.exit_code == 0, advanced.output
    shown = json.loads(advanced.output)
    assert shown["frozen_time"] == ts("2026-04-30 11:00:00")
    assert [(day(i["created"]), i["number"][-4:], i["total"], i["status"]) for i in shown["invoices"]] == [
        ("2026-02-28", "0002", 1500, "open"),
        ("2026-03-31", "0003", 1500, "open"),
        ("2026-04-30", "0004", 1500, "open"),
    ]
    again = runner.invoke(main, ["clock", "advance", test_clock, "--to", "2026-04-30T10:00:00"])
    assert again.exit_code != 0 and "frozen_time" in str(again.exception or again.output)


@pytest.mark.parametrize("point", ["before_commit", "after_commit"])
def test_a_renewal_that_dies_mid_run_bills_its_period_once_when_delivered_again(
    now: list[int], point: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """The worker dies just before the commit (nothing was written) or just after it (the
    message was not acknowledged): the redelivered renewal bills the period exactly once."""
    from worker.failpoints import FailpointError

    cus = customer("usd")
    subscribe(cus, price(1500))
    now[0] = ts("2026-04-01 10:00:00")
    (request,) = tick(maintenance.renew_subscriptions)
    monkeypatch.setenv("BILLING_FAILPOINTS", f"billing.subscriptions.renew@{point}=raise:once")
    monkeypatch.setenv("BILLING_FAILPOINT_DIR", str(tmp_path))
    with pytest.raises(FailpointError):
        deliver([request])
    assert count(SubscriptionPeriod) == (2 if point == "after_commit" else 1)
    (again,) = deliver([request])
    assert again.replayed is (point == "after_commit")
    cycle = [i for i in invoices_of(cus) if i["billing_reason"] == "subscription_cycle"]
    assert [i["total"] for i in cycle] == [1500]
    assert count(SubscriptionPeriod) == 2


def test_the_audit_finds_two_subscription_currencies_and_a_period_on_a_foreign_invoice(
    now: list[int],
) -> None:
    cus = customer("usd")
    first = subscribe(cus, price(1000, currency_options={"eur": {"unit_amount": 900}})).id
    second = subscribe(cus, price(500)).id
    assert audit_database() == []
    foreign = get(second)["latest_invoice"]
    with UnitOfWork() as uow:
        sub = uow.session.get(Subscription, second)
        assert sub is not None
        sub.currency = "eur"
        period = uow.session.get(SubscriptionPeriod, (first, now[0]))
        assert period is not None
        period.invoice_id = foreign
        uow.commit()
    assert sorted((v.check, v.object_id) for v in audit_database()) == [
        ("billed_period_invoice", f"{first}@{now[0]}"),
        ("one_subscription_currency", cus),
    ]


def test_a_period_invoice_keeps_its_own_lines_and_chains_a_backlog_past_250(now: list[int]) -> None:
    cus = customer("usd")
    items(cus, "usd", [100] * 260)  # older than the subscription's lines
    items(cus, "eur", [100])  # another currency: not swept
    sub = subscribe(cus, price(1500)).id
    first, second = invoices_of(cus)
    assert (first["subscription"], first["lines"]["total_count"], first["total"]) == (
        sub,
        250,
        1500 + 249 * 100,
    )
    assert any(line["amount"] == 1500 for line in all_lines(first["id"]))
    assert (second["billing_reason"], second["lines"]["total_count"], second["total"]) == ("manual", 11, 1100)
    assert second["id"] == derived_id("in", f"renew:{sub}:{now[0]}:part2")
    assert count(Invoice) == 2 and get(cus)["currency"] == "usd"


def test_a_once_discount_is_used_by_one_period_even_when_one_advance_bills_several() -> None:
    """One clock advance renews and finalizes several periods in one transaction; the
    customer's `once` discount, used up by the first finalization, is not priced again."""
    start = ts("2026-01-31 10:00:00")
    test_clock = call("billing.test_clocks.create", frozen_time=start, name="once").id
    assert test_clock
    cus = customer("usd", test_clock=test_clock)
    subscribe(cus, price(1500))
    once = call("billing.coupons.create", id="ONCE5", amount_off=500, currency="usd", duration="once").id
    call("billing.discounts.create", customer=cus, coupon=once)

    outcome = call(
        "billing.test_clocks.advance", test_clock=test_clock, frozen_time=ts("2026-04-30 12:00:00")
    )
    deliver(outcome.follow_ups)

    assert [(day(i["created"]), i["total"], i["status"]) for i in invoices_of(cus)] == [
        ("2026-01-31", 1500, "open"),
        ("2026-02-28", 1000, "open"),
        ("2026-03-31", 1500, "open"),
        ("2026-04-30", 1500, "open"),
    ]
    assert get(cus)["discount"] is None
    assert audit_database() == []
