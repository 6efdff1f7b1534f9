"""``billing audit`` on SQLite and PostgreSQL: a clean history audits clean, and each
corruption of the books (made directly in SQL, one invariant at a time) is reported by
the right check against the right object."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlmodel import col, select

from tests.support import adjust, call, customer, get, invoice, items, run_chain
from worker.audit import CHECKS, EVENT_CHECKS, Violation, audit
from worker.cli import main
from worker.db import read_session
from worker.settings import get_settings
from worker.tables import Event


@dataclass(frozen=True)
class History:
    usd: str
    """USD customer: credit, coupons, tax, a 260-item chain, credit notes, void."""
    cad: str
    """CAD customer billed in CAD and EUR: debit, a too-small invoice, a negative invoice."""
    adjustment: str
    """A USD adjustment of ``usd`` (not the last of its stream)."""
    chain: tuple[str, str]
    """The two USD invoices of the 260-item chain (250 + 10 lines), finalized."""
    paid_cn_invoice: str
    """Paid USD invoice with a post-payment credit note ``paid_note``."""
    paid_note: str
    open_invoice: str
    """Open USD invoice with a pre-payment credit note and a voided one."""
    voided: str
    """Void USD invoice that had consumed credit."""
    cad_invoice: str
    """Open CAD invoice of ``cad``."""


def build_history() -> History:
    """Every kind of ledger row and invoice state the services produce."""
    vat = call("billing.tax_rates.create", display_name="VAT", percentage="8.25", inclusive=False).id
    gst = call("billing.tax_rates.create", display_name="GST", percentage="10", inclusive=True).id
    call("billing.coupons.create", id="TENOFF", percent_off="10", duration="forever")
    call("billing.coupons.create", id="FIVEUSD", amount_off=500, currency="usd", duration="once")

    usd = customer("usd", email="ada@example.com", name="Ada")
    adjustment = adjust(usd, -5000)
    adjust(usd, 1200)
    call("billing.discounts.create", customer=usd, coupon="TENOFF")
    items(usd, "usd", [100 + i for i in range(260)], tax_rates=[vat])
    chain = run_chain(usd, finalize=True, default_tax_rates=[vat])
    assert len(chain) == 2

    items(usd, "usd", [3000, -250])
    paid = get(invoice(usd, finalize=True, discounts=[{"coupon": "FIVEUSD"}]).id)
    call("billing.invoices.pay", invoice=paid["id"])
    paid_note = call(
        "billing.credit_notes.create", invoice=paid["id"], amount=900, credit_amount=600, refund_amount=300
    ).id
    assert paid_note

    items(usd, "usd", [7000], tax_rates=[gst])
    open_invoice = invoice(usd, finalize=True).id
    assert open_invoice and get(open_invoice)["status"] == "open"
    call("billing.credit_notes.create", invoice=open_invoice, amount=500, reason="order_change")
    undone = call("billing.credit_notes.create", invoice=open_invoice, amount=700).id
    call("billing.credit_notes.void", credit_note=undone)

    items(usd, "usd", [1500])
    written_off = invoice(usd, finalize=True).id
    call("billing.invoices.mark_uncollectible", invoice=written_off)
    adjust(usd, -2500)
    items(usd, "usd", [4000])
    voided = invoice(usd, finalize=True).id
    assert voided
    call("billing.invoices.void", invoice=voided)  # the last row of the USD stream
    items(usd, "usd", [80])
    draft = invoice(usd).id  # stays a draft
    assert get(draft)["status"] == "draft"
    items(usd, "usd", [60])
    deleted = invoice(usd).id
    call("billing.invoices.delete", invoice=deleted)  # its item goes back to pending

    cad = customer("cad", tax_exempt="exempt")
    adjust(cad, 700)
    items(cad, "cad", [10_000], tax_rates=[gst])
    cad_invoice = invoice(cad, finalize=True).id
    assert cad_invoice and get(cad_invoice)["total"] == 9091
    items(cad, "cad", [20])
    small = invoice(cad, finalize=True).id
    assert small and get(small)["status"] == "paid"  # 20 < 50: carried as invoice_too_small
    items(cad, "eur", [1000, -1400])
    negative = invoice(cad, currency="eur", finalize=True).id
    assert negative and get(negative)["ending_balance"] == -400
    items(cad, "eur", [900])  # pending
    adjust(cad, -300, "eur")

    return History(
        usd=usd,
        cad=cad,
        adjustment=adjustment,
        chain=(chain[0], chain[1]),
        paid_cn_invoice=paid["id"],
        paid_note=paid_note,
        open_invoice=open_invoice,
        voided=voided,
        cad_invoice=cad_invoice,
    )


@pytest.fixture
def history(database: str) -> History:
    return build_history()


def found(violations: list[Violation]) -> set[tuple[str, str]]:
    return {(v.check, v.object_id) for v in violations}


def run_audit() -> list[Violation]:
    with read_session() as session:
        return audit(session)


def execute(url: str, sql: str, **params: object) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        assert connection.execute(text(sql), params).rowcount >= 1
    engine.dispose()


def scalar(url: str, sql: str, **params: object) -> object:
    engine = create_engine(url)
    with engine.connect() as connection:
        value = connection.execute(text(sql), params).scalar_one()
    engine.dispose()
    return value


def test_a_clean_history_audits_clean(history: History) -> None:
    assert run_audit() == []
    assert get(history.chain[0])["lines"]["total_count"] == 250


Corruption = Callable[[str, History], set[tuple[str, str]]]


def changed_balance(url: str, h: History) -> set[tuple[str, str]]:
    execute(url, "UPDATE customer_balances SET balance = balance - 1 WHERE customer_id = :c", c=h.usd)
    return {("balance_is_sum_of_ledger", h.usd)}


def changed_ending_balance(url: str, h: History) -> set[tuple[str, str]]:
    execute(
        url,
        "UPDATE balance_transactions SET ending_balance = ending_balance + 5 WHERE id = :t",
        t=h.adjustment,
    )
    return {("ending_balance_running_sum", h.adjustment)}


def deleted_transaction(url: str, h: History) -> set[tuple[str, str]]:
    """A hole in the stream: every later row is off, reported once at the first of them."""
    execute(url, "DELETE FROM balance_transactions WHERE id = :t", t=h.adjustment)
    second = scalar(
        url,
        "SELECT id FROM balance_transactions WHERE customer_id = :c AND currency = 'usd' AND sequence = 2",
        c=h.usd,
    )
    return {
        ("balance_is_sum_of_ledger", h.usd),
        ("ending_balance_running_sum", str(second)),
        ("event_without_effect", event_of("customer.balance_transaction.created", h.adjustment)),
    }


def changed_subtotal(url: str, h: History) -> set[tuple[str, str]]:
    execute(url, "UPDATE invoices SET subtotal = subtotal + 100 WHERE id = :i", i=h.chain[1])
    return {("invoice_lines_total", h.chain[1])}


def changed_total(url: str, h: History) -> set[tuple[str, str]]:
    """Total and amounts moved together: only the pricing identity notices."""
    execute(
        url,
        "UPDATE invoices SET total = total + 1, starting_balance = starting_balance - 1 WHERE id = :i",
        i=h.cad_invoice,
    )
    return {("invoice_lines_total", h.cad_invoice), ("applied_credit_matches_invoice", h.cad_invoice)}


def changed_item_currency(url: str, h: History) -> set[tuple[str, str]]:
    item = str(scalar(url, "SELECT min(id) FROM invoice_items WHERE invoice_id = :i", i=h.chain[0]))
    execute(url, "UPDATE invoice_items SET currency = 'eur' WHERE id = :ii", ii=item)
    return {("item_on_one_invoice", item)}


def credit_note_over_total(url: str, h: History) -> set[tuple[str, str]]:
    """Consistent in itself (split and invoice sums agree) but more than the invoice's total."""
    total = int(str(scalar(url, "SELECT total FROM invoices WHERE id = :i", i=h.paid_cn_invoice)))
    extra = total  # the note had 900; now 900 + total > total
    execute(
        url,
        "UPDATE credit_notes SET amount = amount + :x, refund_amount = refund_amount + :x WHERE id = :n",
        x=extra,
        n=h.paid_note,
    )
    execute(
        url,
        "UPDATE invoices SET post_payment_credit_notes_amount = post_payment_credit_notes_amount + :x"
        " WHERE id = :i",
        x=extra,
        i=h.paid_cn_invoice,
    )
    return {("credit_notes_within_total", h.paid_cn_invoice)}


def credit_note_not_settled(url: str, h: History) -> set[tuple[str, str]]:
    execute(url, "UPDATE credit_notes SET credit_amount = credit_amount + 1 WHERE id = :n", n=h.paid_note)
    return {("credit_note_settlement", h.paid_note)}


def transaction_on_invoice_of_another_currency(url: str, h: History) -> set[tuple[str, str]]:
    execute(
        url, "UPDATE balance_transactions SET invoice_id = :i WHERE id = :t", i=h.cad_invoice, t=h.adjustment
    )
    return {("no_cross_currency_credit", h.adjustment)}


def changed_amount_remaining(url: str, h: History) -> set[tuple[str, str]]:
    execute(
        url, "UPDATE invoices SET amount_remaining = amount_remaining - 1 WHERE id = :i", i=h.open_invoice
    )
    return {("invoice_amounts", h.open_invoice)}


def void_kept_the_credit(url: str, h: History) -> set[tuple[str, str]]:
    """The unapplied row of a void invoice goes, and the balance is made to agree with it."""
    unapplied = "FROM balance_transactions WHERE invoice_id = :i AND type = 'unapplied_from_invoice'"
    amount = int(str(scalar(url, f"SELECT amount {unapplied}", i=h.voided)))
    row = str(scalar(url, f"SELECT id {unapplied}", i=h.voided))
    later = scalar(
        url,
        "SELECT count(*) FROM balance_transactions WHERE customer_id = :c AND currency = 'usd'"
        f" AND sequence > (SELECT sequence {unapplied})",
        c=h.usd,
        i=h.voided,
    )
    assert later == 0, "the history ends the USD stream with the void's row"
    execute(url, f"DELETE {unapplied}", i=h.voided)
    execute(
        url,
        "UPDATE customer_balances SET balance = balance - :a, transaction_count = transaction_count - 1"
        " WHERE customer_id = :c AND currency = 'usd'",
        a=amount,
        c=h.usd,
    )
    return {
        ("applied_credit_matches_invoice", h.voided),
        ("event_without_effect", event_of("customer.balance_transaction.created", row)),
    }


def event_of(kind: str, object_id: str) -> str:
    """The id of the ``kind`` event of ``object_id``."""
    with read_session() as session:
        rows = session.exec(select(Event).where(col(Event.type) == kind)).all()
    (found,) = [row.id for row in rows if row.data["object"]["id"] == object_id]
    return found


def event_lost(url: str, h: History) -> set[tuple[str, str]]:
    """A change committed without its event: the invoice is paid, no invoice.paid says so."""
    execute(url, "DELETE FROM events WHERE id = :e", e=event_of("invoice.paid", h.paid_cn_invoice))
    return {("effect_without_event", h.paid_cn_invoice)}


def effect_lost(url: str, h: History) -> set[tuple[str, str]]:
    """An event whose change did not happen: the voided invoice is back to open; a list's
    summary names an item that is not there."""
    execute(url, "UPDATE invoices SET voided_at = NULL WHERE id = :i", i=h.voided)
    summary = event_of_list()
    item = get(summary)["data"]["object"]["items"][0]
    execute(url, "UPDATE invoice_items SET id = 'ii_gone' WHERE id = :i", i=item)
    return {
        ("event_without_effect", event_of("invoice.voided", h.voided)),
        ("event_without_effect", summary),
        ("effect_without_event", "ii_gone"),  # and the item under its new id has no event
    }


def event_of_list() -> str:
    with read_session() as session:
        found = session.exec(select(Event.id).where(col(Event.type) == "invoiceitem.batch_created")).first()
    assert found
    return found


CORRUPTIONS = [
    changed_balance,
    changed_ending_balance,
    deleted_transaction,
    changed_subtotal,
    changed_total,
    changed_item_currency,
    credit_note_over_total,
    credit_note_not_settled,
    transaction_on_invoice_of_another_currency,
    changed_amount_remaining,
    void_kept_the_credit,
    event_lost,
    effect_lost,
]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=[c.__name__ for c in CORRUPTIONS])
def test_each_corruption_is_reported_by_its_check(
    database: str, history: History, corrupt: Corruption
) -> None:
    expected = corrupt(database, history)
    violations = run_audit()
    assert found(violations) == expected, [v.detail for v in violations]
    assert all(v.check in {**CHECKS, **EVENT_CHECKS} and v.detail for v in violations)


def test_cli_audit_exits_0_when_clean_and_1_with_a_json_line_per_violation(
    database: str, history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLING_DATABASE_URL", database)
    get_settings.cache_clear()
    runner = CliRunner()

    clean = runner.invoke(main, ["audit"])
    assert clean.exit_code == 0, clean.output
    assert clean.stdout == f"audit: {len(CHECKS) + len(EVENT_CHECKS)} checks, 0 violations\n"

    changed_balance(database, history)
    changed_subtotal(database, history)
    broken = runner.invoke(main, ["audit"])
    assert broken.exit_code == 1, broken.output
    lines = [json.loads(line) for line in broken.stdout.splitlines()]
    assert {(line["check"], line["object_id"]) for line in lines} == {
        ("balance_is_sum_of_ledger", history.usd),
        ("invoice_lines_total", history.chain[1]),
    }
    assert all(set(line) == {"check", "object_id", "detail"} for line in lines)
