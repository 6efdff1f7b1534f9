"""Credit, coupons, tax, credit notes, lifecycle and idempotency on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from domain.errors import BadRequest, CurrencyLocked, IdempotencyConflict, WrongState
from tests.support import adjust, call, count, customer, get, invoice, items
from worker.audit import audit_database
from worker.tables import BalanceTransaction, Customer, Invoice, InvoiceItem

pytestmark = pytest.mark.usefixtures("database")


def balances(cus: str) -> dict[str, int]:
    return {c: -v for c, v in get(cus, expand=["invoice_credit_balance"])["invoice_credit_balance"].items()}


def ledger(cus: str) -> list[tuple[str, str, int, int]]:
    rows = call_list("balance_transactions", customer=cus)[::-1]  # listed newest first; the ledger's order
    return [(r["type"], r["currency"], r["amount"], r["ending_balance"]) for r in rows]


def call_list(resource: str, **filters: object) -> list[dict]:
    from worker.db import read_session
    from worker.views import list_objects

    with read_session() as session:
        return list_objects(session, resource, **filters)["data"]


def finalized(cus: str, **options: object) -> dict:
    return get(invoice(cus, finalize=True, **options).id)


# -- credit balance (domain/README.md §2, §4.2) -----------------------------------------------------------


def test_same_currency_credit_is_applied_and_other_currencies_untouched() -> None:
    cus = customer("usd")
    adjust(cus, -1000, "usd")
    adjust(cus, -700, "cad")
    items(cus, "usd", [2000, 1000])
    inv = finalized(cus)
    assert (inv["total"], inv["starting_balance"], inv["ending_balance"]) == (3000, -1000, 0)
    assert (inv["amount_due"], inv["amount_remaining"], inv["status"]) == (2000, 2000, "open")
    assert balances(cus) == {"cad": -700}
    assert ledger(cus)[-1] == ("applied_to_invoice", "usd", 1000, 0)


def test_credit_larger_than_invoice_pays_it_and_keeps_the_rest() -> None:
    cus = customer("usd")
    adjust(cus, -5000)
    items(cus, "usd", [3000])
    inv = finalized(cus)
    assert (inv["amount_due"], inv["status"], inv["ending_balance"]) == (0, "paid", -2000)
    assert get(cus)["balance"] == -2000


def test_debit_balance_is_collected_by_the_next_invoice() -> None:
    cus = customer("usd")
    adjust(cus, 500)
    items(cus, "usd", [3000])
    inv = finalized(cus)
    assert (inv["amount_due"], inv["starting_balance"], inv["ending_balance"]) == (3500, 500, 0)
    assert ledger(cus)[-1] == ("applied_to_invoice", "usd", -500, 0)


def test_negative_invoice_becomes_credit() -> None:
    cus = customer("usd")
    items(cus, "usd", [1000, -1334])
    inv = finalized(cus)
    assert (inv["total"], inv["amount_due"], inv["status"], inv["ending_balance"]) == (-334, 0, "paid", -334)
    assert get(cus)["balance"] == -334


def test_amount_below_minimum_charge_is_carried_to_the_next_invoice() -> None:
    cus = customer("usd")
    items(cus, "usd", [30])
    small = finalized(cus)
    assert (small["amount_due"], small["status"], small["ending_balance"]) == (0, "paid", 30)
    assert ledger(cus) == [("invoice_too_small", "usd", 30, 30)]
    items(cus, "usd", [1000])
    nxt = finalized(cus)
    assert (nxt["starting_balance"], nxt["amount_due"]) == (30, 1030)


def test_credit_goes_to_drafts_in_the_order_they_are_finalized() -> None:
    cus = customer("usd")
    adjust(cus, -4000)
    items(cus, "usd", [3000])
    first = invoice(cus).id
    items(cus, "usd", [2000])
    second = invoice(cus).id
    assert get(first)["status"] == get(second)["status"] == "draft"
    call("billing.invoices.finalize", invoice=second)
    call("billing.invoices.finalize", invoice=first)
    a, b = get(first), get(second)
    assert (b["number"].endswith("-0001"), b["amount_due"], b["status"]) == (True, 0, "paid")
    assert (a["number"].endswith("-0002"), a["starting_balance"], a["amount_due"]) == (True, -2000, 1000)
    assert get(cus)["balance"] == 0


def test_void_gives_the_consumed_credit_back_and_uncollectible_does_not() -> None:
    cus = customer("usd")
    adjust(cus, -1000)
    items(cus, "usd", [3000])
    voided = finalized(cus)["id"]
    items(cus, "usd", [3000])
    call("billing.invoices.void", invoice=voided)
    assert get(voided)["status"] == "void"
    assert get(cus)["balance"] == -1000
    assert ledger(cus)[-1] == ("unapplied_from_invoice", "usd", -1000, -1000)
    written_off = finalized(cus)["id"]
    call("billing.invoices.mark_uncollectible", invoice=written_off)
    assert get(written_off)["status"] == "uncollectible"
    assert get(cus)["balance"] == 0


def test_ledger_sequences_and_ending_balances_are_running_sums() -> None:
    cus = customer("eur")
    for amount in (-100, 250, -75):
        adjust(cus, amount)
    assert [row[3] for row in ledger(cus)] == [-100, 150, 75]
    assert get(cus)["balance"] == 75
    assert count(BalanceTransaction) == 3


# -- coupons and tax (domain/README.md §5, §6) -----------------------------------------------------------


def coupon(**params: object) -> str:
    params.setdefault("id", f"C{len(str(params))}{abs(hash(str(params))) % 10**8}")
    outcome = call("billing.coupons.create", **params)
    assert outcome.id
    return outcome.id


def test_amount_off_coupon_applies_only_in_its_currency_and_is_not_consumed_elsewhere() -> None:
    cus = customer("cad")
    off = coupon(amount_off=500, currency="usd", duration="once")
    call("billing.discounts.create", customer=cus, coupon=off)
    items(cus, "cad", [1000, 2000])
    cad = finalized(cus)
    assert (cad["total"], cad["discounts"], cad["total_discount_amounts"]) == (3000, [], [])
    assert get(cus)["discount"]["coupon"]["id"] == off  # not consumed by the CAD invoice
    items(cus, "usd", [1000, 2000])
    usd = finalized(cus, currency="usd")
    assert [line["discount_amounts"] for line in usd["lines"]["data"]] == [
        [{"amount": 166, "discount": off}],
        [{"amount": 334, "discount": off}],
    ]
    assert usd["total"] == 2500
    assert get(cus)["discount"] is None  # a "once" coupon ends with the invoice that used it


def test_percent_off_and_exclusive_tax() -> None:
    cus = customer("usd")
    vat = call("billing.tax_rates.create", display_name="VAT", percentage="5", inclusive=False).id
    tenth = coupon(percent_off="10", duration="forever")
    call("billing.discounts.create", customer=cus, coupon=tenth)
    items(cus, "usd", [500, 1000])
    inv = finalized(cus, default_tax_rates=[vat])
    assert [t["amount"] for line in inv["lines"]["data"] for t in line["tax_amounts"]] == [23, 45]
    assert inv["total_taxes"] == [{"amount": 68, "tax_rate": vat, "taxable_amount": 1350, "inclusive": False}]
    assert (inv["subtotal"], inv["total_excluding_tax"], inv["total"]) == (1500, 1350, 1418)
    assert get(cus)["discount"]["coupon"]["id"] == tenth  # forever: still there


def test_exempt_customer_pays_no_tax_and_inclusive_tax_is_backed_out() -> None:
    cus = customer("usd", tax_exempt="exempt")
    inclusive = call("billing.tax_rates.create", display_name="GST", percentage="10", inclusive=True).id
    items(cus, "usd", [10000], tax_rates=[inclusive])
    assert finalized(cus)["total"] == 9091


@pytest.mark.parametrize(
    ("before", "after", "line_taxes", "total"),
    [("none", "exempt", [0], 9000), ("exempt", "none", [450], 9450), ("none", "reverse", [0], 9000)],
)
def test_a_draft_follows_its_customers_tax_status_until_finalized(
    before: str, after: str, line_taxes: list[int], total: int
) -> None:
    """Taxes are priced when the draft is made; a customer whose tax status changes before
    finalization gets the invoice that status calls for, and the invoice says so."""
    cus = customer("usd", tax_exempt=before)
    vat = call("billing.tax_rates.create", display_name="VAT", percentage="5", inclusive=False).id
    off = coupon(amount_off=1000, currency="usd", duration="forever", name=f"10 off, {before} to {after}")
    items(cus, "usd", [10000], tax_rates=[vat])
    draft = invoice(cus, discounts=[{"coupon": off}]).id
    assert get(draft)["customer_tax_exempt"] == before
    call("billing.customers.update", customer=cus, tax_exempt=after)
    call("billing.invoices.finalize", invoice=draft)
    final = get(draft)
    assert final["customer_tax_exempt"] == after
    (line,) = final["lines"]["data"]
    assert [t["amount"] for t in line["tax_amounts"]] == line_taxes
    assert [d["amount"] for d in line["discount_amounts"]] == [1000]
    assert (final["subtotal"], final["total_excluding_tax"], final["total"]) == (10000, 9000, total)
    assert final["amount_due"] == total
    assert audit_database() == []


# -- credit notes (domain/README.md §7) ------------------------------------------------------------------


def test_credit_note_on_open_invoice_lowers_amount_due_and_pays_it_at_zero() -> None:
    cus = customer("usd")
    items(cus, "usd", [3000])
    inv = finalized(cus)["id"]
    first = call("billing.credit_notes.create", invoice=inv, amount=1000, reason="order_change").id
    after = get(inv)
    assert (after["amount_due"], after["pre_payment_credit_notes_amount"], after["status"]) == (
        2000,
        1000,
        "open",
    )
    assert get(first)["number"] == f"{after['number']}-CN-01"
    call("billing.credit_notes.create", invoice=inv, amount=2000)
    assert (get(inv)["amount_due"], get(inv)["status"]) == (0, "paid")
    with pytest.raises(BadRequest) as error:
        call("billing.credit_notes.create", invoice=inv, amount=1)
    assert error.value.field == "amount"


def test_credit_note_on_paid_invoice_credits_the_balance_in_the_invoice_currency() -> None:
    cus = customer("usd")
    items(cus, "cad", [5000])
    inv = finalized(cus, currency="cad")["id"]
    call("billing.invoices.pay", invoice=inv)
    call("billing.credit_notes.create", invoice=inv, amount=1500, credit_amount=1000, refund_amount=500)
    assert balances(cus) == {"cad": -1000}
    assert get(inv)["post_payment_credit_notes_amount"] == 1500
    with pytest.raises(BadRequest) as error:
        call("billing.credit_notes.create", invoice=inv, amount=1000, credit_amount=900)
    assert error.value.field == "amount"


def test_voiding_a_credit_note_restores_the_amount_due() -> None:
    cus = customer("usd")
    items(cus, "usd", [3000])
    inv = finalized(cus)["id"]
    note = call("billing.credit_notes.create", invoice=inv, amount=1200).id
    call("billing.credit_notes.void", credit_note=note)
    assert (get(inv)["amount_due"], get(inv)["pre_payment_credit_notes_amount"]) == (3000, 0)
    assert get(note)["status"] == "void"
    call("billing.credit_notes.create", invoice=inv, amount=3000)  # the voided note no longer counts


# -- lifecycle ---------------------------------------------------------------------------------


def test_deleting_a_draft_returns_its_items_to_pending() -> None:
    cus = customer("usd")
    ids = items(cus, "usd", [100, 200])
    draft = invoice(cus).id
    call("billing.invoices.delete", invoice=draft)
    assert count(Invoice) == 0
    assert count(InvoiceItem, InvoiceItem.invoice_id.is_(None)) == 2  # type: ignore[union-attr]
    assert get(invoice(cus, finalize=True).id)["lines"]["total_count"] == len(ids)


def test_finalize_twice_is_refused_and_changes_nothing() -> None:
    cus = customer("usd")
    items(cus, "usd", [100])
    inv = invoice(cus).id
    call("billing.invoices.finalize", invoice=inv)
    before = get(inv)
    with pytest.raises(WrongState) as error:
        call("billing.invoices.finalize", invoice=inv)
    assert error.value.field == "invoice"
    assert get(inv) == before
    assert get(cus)["next_invoice_sequence"] == 2


def test_pay_out_of_band_then_paid_is_terminal() -> None:
    cus = customer("usd")
    items(cus, "usd", [4200])
    inv = finalized(cus)["id"]
    call("billing.invoices.pay", invoice=inv)
    paid = get(inv)
    assert (paid["status"], paid["amount_paid"], paid["amount_remaining"], paid["paid_out_of_band"]) == (
        "paid",
        4200,
        0,
        True,
    )
    with pytest.raises(WrongState):
        call("billing.invoices.void", invoice=inv)


def test_send_invoice_gets_a_due_date_from_days_until_due() -> None:
    cus = customer("usd")
    items(cus, "usd", [100])
    inv = finalized(cus, collection_method="send_invoice", days_until_due=30)
    assert inv["due_date"] == inv["status_transitions"]["finalized_at"] + 30 * 86400


def test_finalizing_snapshots_the_customer() -> None:
    cus = customer(
        "eur",
        email="chloe@example.fr",
        name="Chloé",
        tax_id_data=[{"type": "eu_vat", "value": "FR123"}],
        address={"line1": "1 rue", "city": "Paris", "country": "FR"},
    )
    items(cus, "eur", [100])
    inv = invoice(cus).id
    call("billing.customers.update", customer=cus, name="Chloé Martin")
    call("billing.invoices.finalize", invoice=inv)
    snap = get(inv)
    assert (snap["customer_name"], snap["customer_email"]) == ("Chloé Martin", "chloe@example.fr")
    assert snap["customer_tax_ids"] == [{"type": "eu_vat", "value": "FR123"}]
    call("billing.customers.update", customer=cus, name="Someone Else")
    assert get(inv)["customer_name"] == "Chloé Martin"


# -- currency lock and idempotency (domain/README.md §1, §9) ---------------------------------------------


def test_first_invoice_sets_the_default_currency_and_it_is_then_locked() -> None:
    cus = customer(None)
    items(cus, "gbp", [900])
    invoice(cus, currency="gbp")
    assert get(cus)["currency"] == "gbp"
    with pytest.raises(CurrencyLocked) as error:
        call("billing.customers.update", customer=cus, currency="usd")
    assert error.value.field == "currency"
    items(cus, "usd", [900])
    assert get(invoice(cus, currency="usd").id)["currency"] == "usd"  # other currencies still billable
    assert get(cus)["currency"] == "gbp"


def test_same_key_same_parameters_replays_and_other_parameters_conflict() -> None:
    first = call("billing.customers.create", id="cus_K1", idempotency_key="key-1", name="Ada")
    again = call("billing.customers.create", id="cus_K1", idempotency_key="key-1", name="Ada")
    assert (again.id, again.replayed, count(Customer)) == (first.id, True, 1)
    with pytest.raises(IdempotencyConflict) as error:
        call("billing.customers.create", id="cus_K1", idempotency_key="key-1", name="Bea")
    assert error.value.field == "idempotency_key"
    assert get("cus_K1")["name"] == "Ada"


def test_replayed_adjustment_and_item_batch_write_nothing_twice() -> None:
    cus = customer("usd")
    payload = {"id": "cbtxn_R1", "idempotency_key": "adj-1", "customer": cus, "amount": -300}
    call("billing.balance_transactions.create", **payload)
    call("billing.balance_transactions.create", **payload)
    assert get(cus)["balance"] == -300
    batch = [{"id": f"ii_B{i}", "idempotency_key": f"b:{i}", "customer": cus, "amount": 10} for i in range(3)]
    call("billing.invoice_items.create_many", items=batch, idempotency_key="batch-1")
    assert call("billing.invoice_items.create_many", items=batch, idempotency_key="batch-1").replayed
    assert count(InvoiceItem) == 3
